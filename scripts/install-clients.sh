#!/usr/bin/env bash
# Install the pinned third-party MoQ clients the interop tests run against,
# under $HOME/.cache/qumo so that a warm machine skips them:
#   - moq-clock 0.10.21 (moq-dev, crates.io): raw QUIC and WebTransport
#   - moq-cli 0.14.10, binary `moq` (moq-dev, crates.io): lite-06 on raw QUIC
#   - moq-token-cli 0.5.48, binary `moq-token` (moq-dev, crates.io): the
#     keys and tokens of the auth tests, made as an operator makes them
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

if [[ -f tests/browser/install.sh ]]; then
    bash tests/browser/install.sh
fi
