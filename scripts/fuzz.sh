#!/usr/bin/env bash
# Fuzz every moq-lite decoder for a bounded time with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# Needs a nightly toolchain (libFuzzer's sanitizer flags are nightly-only);
# installs cargo-fuzz under $HOME/.cache/qumo on first use. Crashes land in
# fuzz/artifacts/<target>/ and make the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
cache="$HOME/.cache/qumo"
cargo_fuzz_version="0.13.1"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: a nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 2
fi
if [ ! -x "$cache/bin/cargo-fuzz" ]; then
    cargo install --locked --root "$cache" --version "$cargo_fuzz_version" cargo-fuzz
fi
export PATH="$cache/bin:$PATH"

for target in control data setup; do
    echo "== fuzzing $target for ${seconds}s"
    cargo +nightly fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
echo "fuzz.sh: no crashes in $((seconds * 3))s of fuzzing"
