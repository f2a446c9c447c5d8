#!/usr/bin/env bash
# Fuzz the relay for a bounded time:
#
#   scripts/fuzz.sh [SECONDS] [all|session|codec]      (default: 60 all)
#
# session: the session fuzzer (tests/session_fuzz.rs) drives whole sessions,
#   raw QUIC and WebTransport, against the relay in-process for SECONDS, from
#   a random first seed (QUMO_FUZZ_START to choose it). Stable toolchain; a
#   debug build, so arithmetic overflow panics too. A failure prints the
#   seed to replay with QUMO_FUZZ_SEED=N.
# codec: every moq-lite and IETF draft-14 decoder under cargo-fuzz (libFuzzer), SECONDS per
#   target. Needs a nightly toolchain (libFuzzer's sanitizer flags are
#   nightly-only); installs cargo-fuzz under $HOME/.cache/qumo on first use.
#   Crashes land in fuzz/artifacts/<target>/.
#
# Exits non-zero on any finding, or when the codec part cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
what="${2:-all}"
cache="$HOME/.cache/qumo"
cargo_fuzz_version="0.13.1"

case "$what" in
    all | session | codec) ;;
    *)
        echo "usage: scripts/fuzz.sh [SECONDS] [all|session|codec]" >&2
        exit 64
        ;;
esac

if [ "$what" != codec ]; then
    # Far from the fixed seeds CI runs (1..=24).
    start="${QUMO_FUZZ_START:-$(((RANDOM << 15 | RANDOM) + 1000))}"
    echo "== session fuzzer for ${seconds}s from seed $start"
    QUMO_FUZZ_START="$start" QUMO_FUZZ_CASES=1 QUMO_FUZZ_SECONDS="$seconds" \
        cargo test --locked --test session_fuzz fuzzed_sessions -- --nocapture
fi

if [ "$what" != session ]; then
    if ! rustup toolchain list | grep -q '^nightly'; then
        echo "fuzz.sh: the codec targets need a nightly toolchain (rustup toolchain install nightly)" >&2
        exit 2
    fi
    if [ ! -x "$cache/bin/cargo-fuzz" ]; then
        cargo install --locked --root "$cache" --version "$cargo_fuzz_version" cargo-fuzz
    fi
    export PATH="$cache/bin:$PATH"
    for target in control data setup ietf_control ietf_data ietf_draft22; do
        echo "== fuzzing $target for ${seconds}s"
        cargo +nightly fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
    done
fi
echo "fuzz.sh: no findings ($what, ${seconds}s each)"
