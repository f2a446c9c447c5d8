#!/usr/bin/env bash
# Install the pinned third-party MoQ clients the interop tests run against,
# under $HOME/.cache/qumo so that a warm machine skips them:
#   - moq-clock 0.10.21 (moq-dev, crates.io): raw QUIC and WebTransport
#   - moq-cli 0.14.10, binary `moq` (moq-dev, crates.io): lite-06 on raw QUIC
#   - moq-token-cli 0.5.48, binary `moq-token` (moq-dev, crates.io): the
#     keys and tokens of the auth tests, made as an operator makes them
#   - moq-relay 0.17.10 (moq-dev, crates.io): the origin a qumo edge dials
#     in the upstream interop test
#   - aiomoqt 0.13.3 (PyPI) in a Python 3.12+ venv: IETF draft-14 interop
#   - Chromium + playwright-core + @moq/net 0.3.4: tests/browser/install.sh
# Idempotent; safe to run before every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${QUMO_CACHE:-$HOME/.cache/qumo}"
mkdir -p "$CACHE/bin"

MOQ_CLOCK_VERSION=0.10.21
if ! "$CACHE/bin/moq-clock" --version 2>/dev/null | grep -q "$MOQ_CLOCK_VERSION"; then
    echo "== installing moq-clock $MOQ_CLOCK_VERSION into $CACHE"
    cargo install --locked --root "$CACHE" "moq-clock@$MOQ_CLOCK_VERSION"
else
    echo "== moq-clock $MOQ_CLOCK_VERSION already installed"
fi

# moq-cli's published lock file names a crate version crates.io no longer
# serves, so it cannot be installed --locked: the version is pinned, its
# dependencies resolve at install time. Only the raw-QUIC stack (`noq`) is
# needed; the default iroh/websocket/nvidia features only add build time.
# A debug build: the tests move a few KB, and it compiles much faster.
MOQ_CLI_VERSION=0.14.10
if ! "$CACHE/bin/moq" --version 2>/dev/null | grep -q "$MOQ_CLI_VERSION"; then
    echo "== installing moq-cli $MOQ_CLI_VERSION (binary moq) into $CACHE"
    cargo install --debug --root "$CACHE" "moq-cli@$MOQ_CLI_VERSION" \
        --no-default-features --features noq
else
    echo "== moq-cli $MOQ_CLI_VERSION already installed"
fi

# A debug build (it signs a few tokens per test run), its build directory
# kept under the cache so that a reinstall reuses what it compiled.
MOQ_TOKEN_VERSION=0.5.48
if ! "$CACHE/bin/moq-token" --version 2>/dev/null | grep -q "$MOQ_TOKEN_VERSION"; then
    echo "== installing moq-token-cli $MOQ_TOKEN_VERSION (binary moq-token) into $CACHE"
    CARGO_TARGET_DIR="$CACHE/target" cargo install --locked --debug --root "$CACHE" \
        "moq-token-cli@$MOQ_TOKEN_VERSION"
else
    echo "== moq-token-cli $MOQ_TOKEN_VERSION already installed"
fi

# Like moq-cli, not --locked (its lock file resolves no longer); raw QUIC
# (`noq`) only, a debug build, its build directory shared with moq-token's.
MOQ_RELAY_VERSION=0.17.10
if ! "$CACHE/bin/moq-relay" --version 2>/dev/null | grep -q "$MOQ_RELAY_VERSION"; then
    echo "== installing moq-relay $MOQ_RELAY_VERSION into $CACHE"
    CARGO_TARGET_DIR="$CACHE/target" cargo install --debug --root "$CACHE" \
        "moq-relay@$MOQ_RELAY_VERSION" --no-default-features --features noq
else
    echo "== moq-relay $MOQ_RELAY_VERSION already installed"
fi

# aiomoqt needs Python 3.12 or newer: QUMO_PYTHON if set, else python3.12+
# on PATH, else a pyenv-installed one. Its venv holds exactly the pinned,
# hashed wheels of scripts/aiomoqt-requirements.txt.
AIOMOQT_VERSION=0.13.3
AIOMOQT_VENV="$CACHE/aiomoqt"
aiomoqt_installed() {
    "$AIOMOQT_VENV/bin/python" -c \
        "import importlib.metadata as m, sys; sys.exit(m.version('aiomoqt') != '$AIOMOQT_VERSION')" \
        2>/dev/null
}
python_312_or_newer() {
    local candidates=("${QUMO_PYTHON:-}" python3.14 python3.13 python3.12)
    if command -v pyenv >/dev/null 2>&1; then
        local root
        root="$(pyenv root)"
        candidates+=("$root"/versions/3.1[2-9]*/bin/python3)
    fi
    local python
    for python in "${candidates[@]}"; do
        [[ -n "$python" ]] || continue
        command -v "$python" >/dev/null 2>&1 || continue
        if "$python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$python"
            return 0
        fi
    done
    return 1
}
if ! aiomoqt_installed; then
    echo "== installing aiomoqt $AIOMOQT_VERSION into $AIOMOQT_VENV"
    if ! PYTHON="$(python_312_or_newer)"; then
        echo "aiomoqt $AIOMOQT_VERSION needs Python 3.12 or newer: none found (set QUMO_PYTHON," >&2
        echo "put python3.12 on PATH, or 'pyenv install 3.12')" >&2
        exit 1
    fi
    rm -rf "$AIOMOQT_VENV"
    "$PYTHON" -m venv "$AIOMOQT_VENV"
    "$AIOMOQT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --only-binary :all: -r scripts/aiomoqt-requirements.txt
    aiomoqt_installed
else
    echo "== aiomoqt $AIOMOQT_VERSION already installed"
fi

if [[ -f tests/browser/install.sh ]]; then
    bash tests/browser/install.sh
fi
