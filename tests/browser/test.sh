#!/usr/bin/env bash
# Browser interop test: qumo-relay with a generated certificate, headless Chromium
# running @moq/net over WebTransport (certificate pinned by hash), moq-clock on the
# other side. Two scenarios (see run.mjs): moq-clock -> browser, browser -> moq-clock.
#
#   tests/browser/test.sh             # uses $QUMO_RELAY, else builds target/debug/qumo-relay if missing
#   QUMO_RELAY=path/to/qumo-relay tests/browser/test.sh
#   CLOCK_SCHEME=moql tests/browser/test.sh   # moq-clock over raw QUIC instead of WebTransport
#   NETLOG=/tmp/netlog.json tests/browser/test.sh   # Chromium net-log for debugging
#
# Exits 0 when all four scenarios pass (both over WebTransport, then over the
# WebSocket with WebTransport hidden). Bounded: about 150 s at most once installed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${QUMO_CACHE:-$HOME/.cache/qumo}"
MOQ_CLOCK="${MOQ_CLOCK:-$CACHE/bin/moq-clock}"
CLOCK_SCHEME="${CLOCK_SCHEME:-https}"

"$HERE/install.sh"

if [[ ! -x "$MOQ_CLOCK" ]]; then
	echo "test.sh: moq-clock not found at $MOQ_CLOCK (set MOQ_CLOCK)" >&2
	exit 66
fi

RELAY="${QUMO_RELAY:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/qumo-relay}"
if [[ -z "${QUMO_RELAY:-}" && ! -x "$RELAY" ]]; then
	echo "test.sh: building qumo-relay" >&2
	(cd "$ROOT" && cargo build --quiet --bin qumo-relay)
fi
if [[ ! -x "$RELAY" ]]; then
	echo "test.sh: relay binary not found at $RELAY (set QUMO_RELAY)" >&2
	exit 66
fi

WORK="$(mktemp -d /tmp/qumo-browser.XXXXXX)"
RELAY_PID=""
NODE_PID=""
cleanup() {
	local rc=$?
	[[ -n "$NODE_PID" ]] && kill "$NODE_PID" 2>/dev/null || true
	if [[ -n "$RELAY_PID" ]] && kill -0 "$RELAY_PID" 2>/dev/null; then
		kill -TERM "$RELAY_PID" 2>/dev/null || true
		for _ in $(seq 30); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$RELAY_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: the relay picks a free UDP port and logs it. [::] so that both Chromium
# (localhost -> ::1) and moq-clock (either family) reach it.
cat >"$WORK/relay.yaml" <<YAML
server:
  address: "[::]:0"
  shards: 2
tls:
  generate: [localhost]
logging:
  level: info
YAML

: >"$WORK/relay.log"
RUST_LOG="${RELAY_RUST_LOG:-}" "$RELAY" --config "$WORK/relay.yaml" >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!

PORT=""
WSPORT=""
HASH=""
for _ in $(seq 100); do
	if ! kill -0 "$RELAY_PID" 2>/dev/null; then
		echo "FAIL: qumo-relay exited at start-up:" >&2
		cat "$WORK/relay.log" >&2
		exit 1
	fi
	HASH="$(sed -n 's/.*sha256=\([0-9a-f]\{64\}\).*/\1/p' "$WORK/relay.log" | head -n1 || true)"
	PORT="$(sed -n 's/.*qumo-relay listening address=\[::\]:\([0-9]*\).*/\1/p' "$WORK/relay.log" | head -n1 || true)"
	# The TCP listener (certificate hash, WebSocket): with port 0, a port of its own.
	WSPORT="$(sed -n 's/.*serving the certificate hash over HTTP addr=\[::\]:\([0-9]*\).*/\1/p' "$WORK/relay.log" | head -n1 || true)"
	[[ -n "$HASH" && -n "$PORT" && -n "$WSPORT" ]] && break
	sleep 0.1
done
if [[ -z "$HASH" || -z "$PORT" || -z "$WSPORT" ]]; then
	echo "FAIL: no 'sha256=' fingerprint or listening address in the relay log within 10 s:" >&2
	cat "$WORK/relay.log" >&2
	exit 1
fi
echo "test.sh: qumo-relay pid $RELAY_PID on udp [::]:$PORT, tcp [::]:$WSPORT, certificate sha256=$HASH"

NODE_ARGS=(--relay "localhost:$PORT" --hash "$HASH" --moq-clock "$MOQ_CLOCK"
	--clock-url "$CLOCK_SCHEME://localhost:$PORT" --timeout 20 --ws "localhost:$WSPORT")
[[ -n "${NETLOG:-}" ]] && NODE_ARGS+=(--netlog "$NETLOG")
set +e
timeout -k 5 130 node "$HERE/run.mjs" "${NODE_ARGS[@]}" &
NODE_PID=$!
wait "$NODE_PID"
RC=$?
NODE_PID=""
set -e

if [[ $RC -ne 0 ]]; then
	echo "test.sh: FAILED (run.mjs exit $RC); relay log:" >&2
	tail -n 200 "$WORK/relay.log" >&2
	exit 1
fi
# The WebSocket scenarios' sessions, as the relay saw them: one per scenario at least.
WS_SESSIONS="$(grep -c 'session open.*transport="websocket"' "$WORK/relay.log" || true)"
if [[ "$WS_SESSIONS" -lt 2 ]]; then
	echo "test.sh: FAILED: the relay logged $WS_SESSIONS WebSocket sessions, expected 2; relay log:" >&2
	tail -n 200 "$WORK/relay.log" >&2
	exit 1
fi
echo "test.sh: browser interop PASSED ($WS_SESSIONS WebSocket sessions)"
