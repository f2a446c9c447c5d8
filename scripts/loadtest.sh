#!/usr/bin/env bash
# Load-test a qumo relay with qumo-bench: how many subscribers one relay
# holds for a stream profile, and at what cost.
#
#   scripts/loadtest.sh [--shards N] [--profile NAME] [--subscribers S]
#                       [--duration SECS] [--url URL [--metrics-url URL]]
#                       [--transport quic|ws] [--protocol lite|ietf-14|ietf-22]
#                       [--cluster N] [--ramp] [--json FILE]
#                       [--plot FILE]
#
# Builds release binaries, starts qumo-relay on a free loopback port with a
# generated certificate (or targets --url, a relay already running here or
# on another host; --metrics-url, its admin listener's /metrics, gives its
# CPU, RSS and UDP drops from afar), runs the profile, prints the summary
# and, as its last line:
#
#   RESULT subscribers=S delivered_mbps=X expected_mbps=Y relay_cpu_s_per_gb=Z
#          p50_ms=A p99_ms=B lost_groups=L failed_connections=F rss_kb_per_sub=R
#
# (one line; with --cluster it ends "relays=N inter_relay_bytes_per_delivered_byte=X").
# Bounded in time, and every process it started is stopped on
# exit, Ctrl-C included. Without --url nothing leaves this host.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
Usage: scripts/loadtest.sh [OPTIONS]

Options:
  --shards N          relay shards (threads) to start qumo-relay with (default 1)
  --profile NAME      load profile (default fanout):
                        fanout           1 publisher -> S subscribers, ~1 Mbit/s each
                        audio            64 kbit/s tracks, 10 publishers
                        sd               ~1 Mbit/s tracks, 4 publishers
                        hd               ~4 Mbit/s tracks, 2 publishers
                        many-publishers  100 publishers, one subscriber per track
                        smoke            CI check, ~10 s, 50 subscribers; fails on
                                         any lost group or failed connection
  --subscribers S     subscriber connections (the ramp's first step with --ramp)
  --duration SECS     measured (steady) window per run or ramp step
  --url URL           load a relay already running (moql://HOST:PORT), here
                      or on another host of yours; nothing is started
  --metrics-url URL   with --url: the relay's /metrics (admin.address, e.g.
                      http://HOST:9090/metrics); its CPU seconds, RSS and UDP
                      drops come from there instead of /proc, so the RESULT
                      line is complete for a remote relay
  --transport T       quic (default): clients dial raw QUIC; ws: QMux over a
                      WebSocket to the relay's TCP listener on the same port
                      (ws://HOST:PORT/PATH), publishers and subscribers alike
  --protocol P        lite (default): subscribers speak moq-lite; ietf-14 or
                      ietf-22: they speak IETF moq-transport draft 14 (ALPN
                      moq-00) or draft 22 (ALPN moqt-22), raw QUIC only,
                      while the publishers stay moq-lite, so the run
                      measures the relay's lite -> IETF path
  --cluster N         start N relays (N >= 2) on loopback instead of one: relay
                      1 is the origin, relays 2..N each list it in
                      cluster.peers (a star: every edge dials the first); the
                      publishers use relay 1, the subscribers spread round
                      robin over relays 2..N. The RESULT line adds the UDP
                      bytes on the inter-relay links (both ways, from the
                      relays' qumo_peer_bytes_* figures) per byte the edges
                      sent their subscribers (qumo_accepted_bytes_sent
                      {kind="client"}): about (N-1)/S when each link carries
                      one copy. relay_cpu_s_per_gb and rss_kb_per_sub read na
  --ramp              double the subscriber count until a step loses a group,
                      fails a connection, drops a subscriber or passes the p99
                      budget, then bisect; report the highest count held
  --json FILE         write the results as JSON
  --plot FILE         write latency and relay CPU against subscribers as SVG
  -h, --help          this help

Environment:
  LOADTEST_P99_BUDGET_MS   ramp p99 budget in ms (default 200)
  LOADTEST_BENCH_THREADS   qumo-bench client threads (default: cores - shards, >= 1)
  LOADTEST_TIMEOUT         hard limit for the whole load in seconds
                           (default 300, or 1800 with --ramp)
  LOADTEST_BENCH_ARGS      extra qumo-bench options (see qumo-bench --help)
  LOADTEST_RELAY_BIN       the qumo-relay to start (default target/release/qumo-relay):
                           an older build, to compare two builds under one load

The last line of output is the RESULT line. Exit status: 0 ok, 1 the smoke
profile found loss or a failed connection, 2 the load could not run, 64 bad
usage.
EOF
}

die() {
    echo "loadtest.sh: $*" >&2
    exit 2
}

shards=1
profile=fanout
subscribers=""
duration=""
url=""
metrics_url=""
ramp=0
transport=quic
protocol=lite
cluster=0
json=""
plot=""

while [ $# -gt 0 ]; do
    arg="$1"
    value=""
    case "$arg" in
        --*=*) value="${arg#*=}"; arg="${arg%%=*}" ;;
    esac
    need_value() {
        if [ -z "$value" ]; then
            [ $# -ge 2 ] || { echo "loadtest.sh: $arg needs a value" >&2; exit 64; }
            value="$2"
            shift_extra=1
        fi
    }
    shift_extra=0
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --shards) need_value "$@"; shards="$value" ;;
        --profile) need_value "$@"; profile="$value" ;;
        --subscribers) need_value "$@"; subscribers="$value" ;;
        --duration) need_value "$@"; duration="$value" ;;
        --url) need_value "$@"; url="$value" ;;
        --metrics-url) need_value "$@"; metrics_url="$value" ;;
        --json) need_value "$@"; json="$value" ;;
        --plot) need_value "$@"; plot="$value" ;;
        --transport) need_value "$@"; transport="$value" ;;
        --protocol) need_value "$@"; protocol="$value" ;;
        --cluster) need_value "$@"; cluster="$value" ;;
        --ramp) ramp=1 ;;
        *) echo "loadtest.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
    [ "$shift_extra" = 1 ] && shift
done

case "$shards" in ''|*[!0-9]*) echo "loadtest.sh: --shards wants a number" >&2; exit 64 ;; esac
[ "$shards" -ge 1 ] && [ "$shards" -le 255 ] || { echo "loadtest.sh: --shards 1..255" >&2; exit 64; }
case "$transport" in
    quic|ws) ;;
    *) echo "loadtest.sh: --transport is quic or ws" >&2; exit 64 ;;
esac
case "$protocol" in
    lite|ietf-14|ietf-22) ;;
    *) echo "loadtest.sh: --protocol is lite, ietf-14 or ietf-22" >&2; exit 64 ;;
esac
[ "$protocol" = lite ] || [ "$transport" = quic ] \
    || { echo "loadtest.sh: --protocol $protocol runs on --transport quic only" >&2; exit 64; }
case "$profile" in
    fanout|audio|sd|hd|many-publishers|smoke) ;;
    *) echo "loadtest.sh: unknown profile $profile (see --help)" >&2; exit 64 ;;
esac
if [ -n "$subscribers" ]; then
    case "$subscribers" in *[!0-9]*) echo "loadtest.sh: --subscribers wants a number" >&2; exit 64 ;; esac
fi
if [ -n "$duration" ]; then
    case "$duration" in *[!0-9.]*) echo "loadtest.sh: --duration wants seconds" >&2; exit 64 ;; esac
fi
case "$cluster" in ''|*[!0-9]*) echo "loadtest.sh: --cluster wants a number of relays" >&2; exit 64 ;; esac
if [ "$cluster" != 0 ]; then
    [ "$cluster" -ge 2 ] && [ "$cluster" -le 16 ] || { echo "loadtest.sh: --cluster 2..16" >&2; exit 64; }
    [ -z "$url" ] || { echo "loadtest.sh: --cluster starts its own relays; it excludes --url" >&2; exit 64; }
fi
remote=0
if [ -n "$url" ]; then
    case "$url" in
        moql://127.*|moql://localhost:*|moql://localhost|moql://\[::1\]*) ;;
        moql://?*) remote=1 ;;
        *) echo "loadtest.sh: --url must be a moql://HOST:PORT address" >&2; exit 64 ;;
    esac
fi
if [ -n "$metrics_url" ]; then
    [ -n "$url" ] || { echo "loadtest.sh: --metrics-url needs --url (a relay this script did not start)" >&2; exit 64; }
    case "$metrics_url" in
        http://?*) ;;
        *) echo "loadtest.sh: --metrics-url must be an http:// URL (the relay's admin listener)" >&2; exit 64 ;;
    esac
fi

cores=$(nproc 2>/dev/null || echo 2)
bench_threads="${LOADTEST_BENCH_THREADS:-$(( cores > shards ? cores - shards : 1 ))}"
if [ "$ramp" = 1 ]; then limit="${LOADTEST_TIMEOUT:-1800}"; else limit="${LOADTEST_TIMEOUT:-300}"; fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qumo-loadtest.XXXXXX")
echo "== building release binaries"
if ! cargo build --release --locked -p qumo -p qumo-bench --bins >"$tmp/build.log" 2>&1; then
    cat "$tmp/build.log" >&2
    rm -rf "$tmp"
    die "release build failed"
fi
relay_bin="${LOADTEST_RELAY_BIN:-target/release/qumo-relay}"
bench_bin=target/release/qumo-bench
relay_pid=""
# With --cluster: every relay started, relay 1 first.
cluster_pids=()
bench_pid=""
stop_relay() {
    local pid=$1
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
        kill -INT "$bench_pid" 2>/dev/null || true
        sleep 1
        kill -KILL "$bench_pid" 2>/dev/null || true
    fi
    stop_relay "$relay_pid"
    for pid in "${cluster_pids[@]}"; do
        stop_relay "$pid"
    done
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP and UDP port free on loopback, not among those already taken.
taken=" "
free_port() {
    local candidate
    for _ in $(seq 1 50); do
        candidate=$(( 20000 + RANDOM % 40000 ))
        case "$taken" in *" $candidate "*) continue ;; esac
        if [ -z "$(ss -Hlun "sport = :$candidate" 2>/dev/null)" ] \
            && [ -z "$(ss -Hltn "sport = :$candidate" 2>/dev/null)" ]; then
            taken="$taken$candidate "
            free="$candidate"
            return 0
        fi
    done
    return 1
}

# Every bench client comes from 127.0.0.1: lift the per-address limits that
# protect a public relay, or they, not the relay, would be measured; the
# same for WebSocket upgrades (--transport ws) on the TCP listener.
bench_limits='admission:
  retry: never
  max_handshakes_per_shard: 100000
  max_connections_per_ip: 1000000
  handshakes_per_ip_per_second: 1000000
  handshake_burst_per_ip: 1000000
http:
  max_connections: 65536
  max_connections_per_source: 65536
logging:
  level: info'

# Relay $1 of the cluster on UDP+TCP port $2, admin on $3, dialling the
# relay on port $4 (none for the first).
start_cluster_relay() {
    local i=$1 port=$2 admin=$3 origin=${4:-} peers="[]"
    [ -n "$origin" ] && peers="[\"http://127.0.0.1:$origin\"]"
    cat >"$tmp/relay$i.yaml" <<EOF
server:
  address: "127.0.0.1:$port"
  shards: $shards
tls:
  generate: [localhost]
admin:
  address: "127.0.0.1:$admin"
cluster:
  node: relay$i
  peers: $peers
$bench_limits
EOF
    "$relay_bin" --config "$tmp/relay$i.yaml" >"$tmp/relay$i.log" 2>&1 &
    cluster_pids+=("$!")
}

# The sum of metric $1's samples (those matching the regex $2, if given)
# in the /metrics text on stdin.
metric_sum() {
    awk -v name="$1" -v filter="${2:-}" '
        index($1, name) == 1 && (filter == "" || $1 ~ filter) { s += $2 }
        END { printf "%.0f\n", s }'
}

bench_tls=()
if [ "$cluster" != 0 ]; then
    ports=()
    admins=()
    for _ in $(seq 1 "$cluster"); do
        free_port || die "no free port found"
        ports+=("$free")
        free_port || die "no free port found"
        admins+=("$free")
    done
    echo "== starting $cluster qumo-relays: relay 1 on 127.0.0.1:${ports[0]}, relays 2..$cluster dialling it"
    start_cluster_relay 1 "${ports[0]}" "${admins[0]}"
    for i in $(seq 2 "$cluster"); do
        start_cluster_relay "$i" "${ports[$((i - 1))]}" "${admins[$((i - 1))]}" "${ports[0]}"
    done
    # Every relay up, and every edge's link to relay 1 open.
    for i in $(seq 1 "$cluster"); do
        pid=${cluster_pids[$((i - 1))]}
        want='runtime started'
        [ "$i" -gt 1 ] && want='upstream session open'
        for _ in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || { cat "$tmp/relay$i.log" >&2; die "relay $i exited at start-up"; }
            grep -q "$want" "$tmp/relay$i.log" && break
            sleep 0.1
        done
        grep -q "$want" "$tmp/relay$i.log" || { cat "$tmp/relay$i.log" >&2; die "relay $i: no '$want' in its log"; }
    done
    url="moql://127.0.0.1:${ports[0]}"
    edges=""
    for i in $(seq 2 "$cluster"); do
        edges="$edges${edges:+,}moql://127.0.0.1:${ports[$((i - 1))]}"
    done
    # Each relay has its own generated certificate; all on loopback.
    bench_tls=(--tls-disable-verify --server-name localhost --subscribe-urls "$edges")
elif [ -z "$url" ]; then
    # A port free for UDP (QUIC) and TCP (WebSockets) on loopback.
    port=""
    for _ in $(seq 1 50); do
        candidate=$(( 20000 + RANDOM % 40000 ))
        if [ -z "$(ss -Hlun "sport = :$candidate" 2>/dev/null)" ] &&
            [ -z "$(ss -Hltn "sport = :$candidate" 2>/dev/null)" ]; then
            port=$candidate
            break
        fi
    done
    [ -n "$port" ] || die "no free port found"
    cat >"$tmp/relay.yaml" <<EOF
server:
  address: "127.0.0.1:$port"
  shards: $shards
tls:
  generate: [localhost]
$bench_limits
EOF
    echo "== starting qumo-relay: $shards shard(s) on 127.0.0.1:$port"
    "$relay_bin" --config "$tmp/relay.yaml" >"$tmp/relay.log" 2>&1 &
    relay_pid=$!
    fingerprint=""
    for _ in $(seq 1 100); do
        kill -0 "$relay_pid" 2>/dev/null || { cat "$tmp/relay.log" >&2; die "qumo-relay exited at start-up"; }
        fingerprint=$(grep -o 'sha256=[0-9a-f]\{64\}' "$tmp/relay.log" | head -1 | cut -d= -f2 || true)
        if [ -n "$fingerprint" ] && grep -q 'runtime started' "$tmp/relay.log"; then
            break
        fi
        sleep 0.1
    done
    [ -n "$fingerprint" ] || { cat "$tmp/relay.log" >&2; die "qumo-relay logged no certificate fingerprint"; }
    url="moql://127.0.0.1:$port"
    bench_tls=(--fingerprint "$fingerprint" --server-name localhost --relay-pid "$relay_pid" --relay-shards "$shards")
else
    # A relay someone else started: its certificate is unknown, and its
    # process is sampled if this host shows which one owns the port.
    bench_tls=(--tls-disable-verify)
    [ "$remote" = 1 ] && echo "== loading $url: a relay on another host (make sure it is yours)"
    if [ -n "$metrics_url" ]; then
        # Its own account of CPU, memory and drops, wherever it runs;
        # qumo-bench stops at once if it cannot read them.
        bench_tls+=(--relay-metrics "$metrics_url")
    else
        port="${url##*:}"
        port="${port%%/*}"
        owner=""
        [ "$remote" = 1 ] || owner=$(ss -Hlunp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
        if [ -n "$owner" ]; then
            bench_tls+=(--relay-pid "$owner")
        else
            echo "loadtest.sh: relay CPU and RSS will read na (no local process on UDP port $port; --metrics-url reads them from the relay)" >&2
        fi
    fi
fi

bench_args=(--url "$url" --transport "$transport" --protocol "$protocol" --profile "$profile" --threads "$bench_threads" "${bench_tls[@]}")
[ -n "$subscribers" ] && bench_args+=(--subscribers "$subscribers")
[ -n "$duration" ] && bench_args+=(--duration "$duration")
[ "$ramp" = 1 ] && bench_args+=(--ramp --p99-budget-ms "${LOADTEST_P99_BUDGET_MS:-200}")
[ -n "$json" ] && bench_args+=(--json "$json")
[ -n "$plot" ] && bench_args+=(--plot "$plot")
# shellcheck disable=SC2206
[ -n "${LOADTEST_BENCH_ARGS:-}" ] && bench_args+=(${LOADTEST_BENCH_ARGS})

echo "== qumo-bench ${bench_args[*]}"
set +e
timeout --signal=INT --kill-after=10 "$limit" "$bench_bin" "${bench_args[@]}" >"$tmp/bench.out" &
bench_pid=$!
wait "$bench_pid"
status=$?
bench_pid=""
set -e

result=$(grep '^RESULT ' "$tmp/bench.out" | tail -1 || true)
grep -v '^RESULT ' "$tmp/bench.out" || true

if [ "$cluster" != 0 ]; then
    # Sessions add their bytes once a second: let the last ones land.
    sleep 1.5
    links=0
    delivered=0
    for i in $(seq 1 "$cluster"); do
        if ! kill -0 "${cluster_pids[$((i - 1))]}" 2>/dev/null; then
            echo "loadtest.sh: relay $i died during the load; its log ends:" >&2
            tail -20 "$tmp/relay$i.log" >&2
            status=2
            continue
        fi
        text=$(curl -sf --max-time 10 "http://127.0.0.1:${admins[$((i - 1))]}/metrics" || true)
        sent=$(metric_sum qumo_peer_bytes_sent_total <<<"$text")
        received=$(metric_sum qumo_peer_bytes_received_total <<<"$text")
        to_clients=$(metric_sum qumo_accepted_bytes_sent_total 'kind="client"' <<<"$text")
        echo "== relay $i: link bytes sent $sent, received $received; bytes to clients $to_clients"
        links=$(( links + sent + received ))
        [ "$i" -gt 1 ] && delivered=$(( delivered + to_clients ))
        if grep -Eq ' (ERROR|WARN) ' "$tmp/relay$i.log"; then
            echo "== relay $i warnings and errors (first 10):"
            grep -E ' (ERROR|WARN) ' "$tmp/relay$i.log" | head -10
        fi
    done
    ratio=na
    [ "$delivered" -gt 0 ] && ratio=$(awk -v l="$links" -v d="$delivered" 'BEGIN { printf "%.4f", l / d }')
    [ -n "$result" ] && result="$result relays=$cluster inter_relay_bytes_per_delivered_byte=$ratio"
fi

if [ -n "$relay_pid" ] && ! kill -0 "$relay_pid" 2>/dev/null; then
    echo "loadtest.sh: qumo-relay died during the load; its log ends:" >&2
    tail -20 "$tmp/relay.log" >&2
    status=2
elif [ -n "$relay_pid" ] && grep -Eq ' (ERROR|WARN) ' "$tmp/relay.log"; then
    echo "== relay warnings and errors (first 10):"
    grep -E ' (ERROR|WARN) ' "$tmp/relay.log" | head -10
fi
case "$status" in
    0) ;;
    1) echo "loadtest.sh: FAIL: the $profile profile's checks did not pass" ;;
    124) echo "loadtest.sh: the load ran past its ${limit} s limit"; status=2 ;;
    *) echo "loadtest.sh: qumo-bench exited with status $status"; [ "$status" = 64 ] || status=2 ;;
esac
if [ -z "$result" ]; then
    result="RESULT subscribers=0 delivered_mbps=0.0 expected_mbps=0.0 relay_cpu_s_per_gb=na p50_ms=0.00 p99_ms=0.00 lost_groups=0 failed_connections=0 rss_kb_per_sub=na"
    [ "$status" = 0 ] && status=2
fi
echo "$result"
exit "$status"
