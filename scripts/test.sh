#!/usr/bin/env bash
# README's test command: install the pinned third-party clients (cached under
# $HOME/.cache/qumo), then run every test: unit, process, interop with
# moq-clock, and the browser test with @moq/net in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-clients.sh

echo "== cargo test"
cargo test --workspace --locked "$@"

if [[ -f tests/browser/test.sh ]]; then
    echo "== browser interop"
    cargo build --locked --bin qumo-relay
    QUMO_RELAY="${CARGO_TARGET_DIR:-target}/debug/qumo-relay" bash tests/browser/test.sh
fi
