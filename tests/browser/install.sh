#!/usr/bin/env bash
# Installs what tests/browser/ needs:
#   - headless Chromium: the Debian package `chromium`, only if it is not on PATH;
#   - under $HOME/.cache/qumo/node: playwright-core, @moq/net and esbuild at the
#     versions in tests/browser/package.json, every transitive dependency pinned by
#     tests/browser/package-lock.json (`npm ci`);
#   - $HOME/.cache/qumo/node/moq-net-<version>.js: @moq/net bundled by esbuild into
#     one classic script that sets `window.Moq` (the package is ESM with bare imports
#     of @moq/qmux, @moq/signals, async-mutex and bowser, so a page cannot load it as is).
# Idempotent: a stamp named after the lockfile's hash skips npm when nothing changed,
# so a warm run only checks and exits.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${QUMO_CACHE:-$HOME/.cache/qumo}"
NODE_DIR="$CACHE/node"
MOQ_NET="$(sed -n 's/.*"@moq\/net": *"\([^"]*\)".*/\1/p' "$HERE/package.json")"
BUNDLE="$NODE_DIR/moq-net-$MOQ_NET.js"

apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	if [[ -z "${APT_UPDATED:-}" ]]; then
		apt-get update -qq
		APT_UPDATED=1
	fi
	apt-get install -y -qq "$@" >/dev/null
}

if ! command -v chromium >/dev/null 2>&1; then
	echo "install.sh: installing chromium (apt)" >&2
	apt_install chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "install.sh: installing nodejs and npm (apt)" >&2
	apt_install nodejs npm
fi

LOCK_HASH="$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-16)"
STAMP="$NODE_DIR/.installed-$LOCK_HASH"
if [[ -f "$STAMP" && -f "$BUNDLE" ]]; then
	exit 0
fi

echo "install.sh: npm ci in $NODE_DIR (@moq/net $MOQ_NET, playwright-core, esbuild pinned by tests/browser/package-lock.json)" >&2
mkdir -p "$NODE_DIR"
rm -f "$NODE_DIR"/.installed-*
cp "$HERE/package.json" "$HERE/package-lock.json" "$NODE_DIR/"
(cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)

echo 'export * from "@moq/net";' >"$NODE_DIR/moq-net-entry.mjs"
(cd "$NODE_DIR" && ./node_modules/.bin/esbuild moq-net-entry.mjs --bundle --format=iife \
	--global-name=Moq --target=es2022 --log-level=warning --outfile="$BUNDLE.tmp")
mv "$BUNDLE.tmp" "$BUNDLE"
touch "$STAMP"
echo "install.sh: done" >&2
