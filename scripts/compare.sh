#!/usr/bin/env bash
# Compare qumo with moq-relay 0.17.10 on this machine, the way a user would:
# the same qumo-bench load (moq-lite over raw QUIC) against each relay in
# interleaved rounds (qumo, moq-relay, qumo, moq-relay, ...), so that a noisy
# or shared machine affects both alike.
#
#   scripts/compare.sh [--profiles "fanout audio hd"] [--subscribers "500 1000"]
#                      [--rounds N] [--shards N] [--duration SECS]
#                      [--baseline QUMO_RELAY_BINARY]
#
# moq-relay is the io-uring feature build, installed once, pinned, under
# $HOME/.cache/qumo/moq-relay-io-uring (the plain build install-clients.sh
# puts in $HOME/.cache/qumo/bin stays as it is), and runs with
# `--runtime-workers N --runtime-io-uring`, N being qumo's shard count.
# Each run is one scripts/loadtest.sh run (its RESULT line gives relay CPU
# seconds per delivered GB, RSS per subscriber, p50/p99). Prints one line per
# run, a table of the means per load, and per load:
#
#   RATIO profile=P subscribers=S cpu_per_gb=X rss_per_sub=Y p99=Z
#
# each qumo / moq-relay (lower is better for qumo); with --baseline, an
# older qumo-relay build runs in every round too (qumo-base), with its own
# RATIO lines (build=qumo-base), so a change is measured against the build
# before it and against moq-relay in one run. Not part of CI: it takes
# minutes and a release build of both relays.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
Usage: scripts/compare.sh [OPTIONS]

Options:
  --profiles "P ..."     qumo-bench profiles (default "fanout audio hd")
  --subscribers "S ..."  subscriber counts (default "500 1000")
  --rounds N             rounds per load and relay, interleaved (default 2)
  --shards N             qumo shards = moq-relay io_uring workers (default 2)
  --duration SECS        measured window per run (default: the profile's)
  --baseline BIN         also run this qumo-relay binary (an older build) in
                         every round, as qumo-base
  -h, --help             this help

Environment:
  QUMO_CACHE              install root (default $HOME/.cache/qumo)
  QUMO_MOQ_RELAY_URING    use this moq-relay binary instead of installing one
  LOADTEST_BENCH_THREADS  qumo-bench threads, the same for both relays
                          (default: cores - shards, at least 1)

Exit status: 0 every run gave a RESULT, 2 a run or the install failed,
64 bad usage.
EOF
}

profiles="fanout audio hd"
subscriber_counts="500 1000"
rounds=2
shards=2
duration=""
baseline=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --profiles) profiles="${2:?--profiles needs a value}"; shift ;;
        --subscribers) subscriber_counts="${2:?--subscribers needs a value}"; shift ;;
        --rounds) rounds="${2:?--rounds needs a value}"; shift ;;
        --shards) shards="${2:?--shards needs a value}"; shift ;;
        --duration) duration="${2:?--duration needs a value}"; shift ;;
        --baseline) baseline="${2:?--baseline needs a value}"; shift ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done
if [ -n "$baseline" ] && [ ! -x "$baseline" ]; then
    echo "compare.sh: --baseline $baseline is not an executable" >&2
    exit 64
fi
for n in "$rounds" "$shards" $subscriber_counts; do
    case "$n" in ''|*[!0-9]*) echo "compare.sh: $n is not a number" >&2; exit 64 ;; esac
done

CACHE="${QUMO_CACHE:-$HOME/.cache/qumo}"
MOQ_RELAY_VERSION=0.17.10
moq_relay="${QUMO_MOQ_RELAY_URING:-$CACHE/moq-relay-io-uring/bin/moq-relay}"
if [ -z "${QUMO_MOQ_RELAY_URING:-}" ] \
    && ! "$moq_relay" --version 2>/dev/null | grep -q "$MOQ_RELAY_VERSION"; then
    # A release build (this is a speed comparison), not --locked (its lock
    # file names a crate no longer served), raw QUIC plus the io_uring
    # workers; the build directory is the one install-clients.sh shares.
    echo "== installing moq-relay $MOQ_RELAY_VERSION (io-uring) into $CACHE/moq-relay-io-uring"
    CARGO_TARGET_DIR="$CACHE/target" cargo install --root "$CACHE/moq-relay-io-uring" \
        "moq-relay@$MOQ_RELAY_VERSION" --no-default-features --features noq,io-uring \
        || { echo "compare.sh: moq-relay install failed" >&2; exit 2; }
fi

cores=$(nproc 2>/dev/null || echo 2)
export LOADTEST_BENCH_THREADS="${LOADTEST_BENCH_THREADS:-$(( cores > shards ? cores - shards : 1 ))}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qumo-compare.XXXXXX")
moq_pid=""
stop_moq_relay() {
    if [ -n "$moq_pid" ] && kill -0 "$moq_pid" 2>/dev/null; then
        kill -TERM "$moq_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$moq_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$moq_pid" 2>/dev/null || true
        wait "$moq_pid" 2>/dev/null || true
    fi
    moq_pid=""
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_moq_relay
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# moq-relay's workers cannot generate a certificate each; give them one.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 \
    || { echo "compare.sh: openssl could not make a test certificate" >&2; exit 2; }

free_port() {
    local candidate
    for _ in $(seq 1 50); do
        candidate=$(( 20000 + RANDOM % 40000 ))
        if [ -z "$(ss -Hlun "sport = :$candidate" 2>/dev/null)" ]; then
            echo "$candidate"
            return
        fi
    done
    echo "compare.sh: no free UDP port found" >&2
    exit 2
}

load_args() {
    local profile=$1 subs=$2
    echo "--profile $profile --subscribers $subs${duration:+ --duration $duration}"
}

# One qumo run: loadtest.sh starts and stops the relay itself ($3: the
# binary, empty for this tree's release build).
run_qumo() {
    # shellcheck disable=SC2046
    LOADTEST_RELAY_BIN="${3:-target/release/qumo-relay}" \
        scripts/loadtest.sh --shards "$shards" $(load_args "$1" "$2") >"$tmp/run.out" 2>&1 || true
}

# One moq-relay run: a fresh process per run, so its RSS is this load's.
run_moq_relay() {
    local port
    port=$(free_port)
    "$moq_relay" --listen "127.0.0.1:$port" \
        --listen-tls-cert "$tmp/cert.pem" --listen-tls-key "$tmp/key.pem" \
        --auth-public "**" --runtime-workers "$shards" --runtime-io-uring \
        >"$tmp/moq-relay.log" 2>&1 &
    moq_pid=$!
    for _ in $(seq 1 100); do
        kill -0 "$moq_pid" 2>/dev/null || break
        [ -n "$(ss -Hlunp "sport = :$port" 2>/dev/null)" ] && break
        sleep 0.1
    done
    if ! kill -0 "$moq_pid" 2>/dev/null; then
        tail -20 "$tmp/moq-relay.log" >&2
        echo "compare.sh: moq-relay exited at start-up" >&2
        exit 2
    fi
    # shellcheck disable=SC2046
    scripts/loadtest.sh --url "moql://127.0.0.1:$port" $(load_args "$1" "$2") \
        >"$tmp/run.out" 2>&1 || true
    stop_moq_relay
}

field() { # field NAME < RESULT line
    tr ' ' '\n' | sed -n "s/^$1=//p"
}

results="$tmp/results"
: >"$results"
echo "== machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r)"
echo "== qumo: $shards shards; moq-relay $MOQ_RELAY_VERSION: --runtime-workers $shards --runtime-io-uring; qumo-bench: $LOADTEST_BENCH_THREADS thread(s)"
printf '%-8s %6s %-10s %5s %9s %8s %8s %9s %6s %6s %7s\n' \
    profile subs relay round cpu_s/GB p50_ms p99_ms rss_KB/sub lost failed deliv%
for profile in $profiles; do
    for subs in $subscriber_counts; do
        for round in $(seq 1 "$rounds"); do
            for relay in qumo ${baseline:+qumo-base} moq-relay; do
                case "$relay" in
                    qumo) run_qumo "$profile" "$subs" ;;
                    qumo-base) run_qumo "$profile" "$subs" "$baseline" ;;
                    moq-relay) run_moq_relay "$profile" "$subs" ;;
                esac
                line=$(grep '^RESULT ' "$tmp/run.out" | tail -1 || true)
                if [ -z "$line" ]; then
                    tail -30 "$tmp/run.out" >&2
                    echo "compare.sh: $relay gave no RESULT for $profile/$subs" >&2
                    exit 2
                fi
                cpu=$(field relay_cpu_s_per_gb <<<"$line")
                p50=$(field p50_ms <<<"$line")
                p99=$(field p99_ms <<<"$line")
                rss=$(field rss_kb_per_sub <<<"$line")
                lost=$(field lost_groups <<<"$line")
                failed=$(field failed_connections <<<"$line")
                delivered=$(field delivered_mbps <<<"$line")
                expected=$(field expected_mbps <<<"$line")
                share=$(awk -v d="$delivered" -v e="$expected" 'BEGIN { if (e > 0) printf "%.1f", 100 * d / e; else print "na" }')
                printf '%-8s %6s %-10s %5s %9s %8s %8s %9s %6s %6s %7s\n' \
                    "$profile" "$subs" "$relay" "$round" "$cpu" "$p50" "$p99" "$rss" "$lost" "$failed" "$share"
                echo "$profile $subs $relay $cpu $p50 $p99 $rss $lost $failed $share" >>"$results"
            done
        done
    done
done

# Means over the rounds; the frame size gives relay CPU per delivered frame.
echo
echo "== means over $rounds round(s)"
awk '
    function frame_bytes(p) { return p == "audio" ? 160 : p == "hd" ? 16000 : p == "fanout" ? 4200 : p == "sd" ? 4000 : 0 }
    {
        k = $1 " " $2 " " $3
        if (!(k in n)) order[++keys] = k
        n[k]++; cpu[k] += $4; p50[k] += $5; p99[k] += $6; rss[k] += $7; lost[k] += $8; failed[k] += $9; share[k] += $10
    }
    END {
        printf "%-8s %6s %-10s %9s %9s %8s %8s %9s %6s %6s %7s\n", "profile", "subs", "relay", "cpu_s/GB", "us/frame", "p50_ms", "p99_ms", "rss_KB/sub", "lost", "failed", "deliv%"
        for (i = 1; i <= keys; i++) {
            k = order[i]; split(k, f, " "); m = n[k]
            us = frame_bytes(f[1]) ? sprintf("%.2f", cpu[k] / m * frame_bytes(f[1]) / 1000) : "na"
            printf "%-8s %6s %-10s %9.2f %9s %8.1f %8.1f %9.1f %6d %6d %7.1f\n", f[1], f[2], f[3], cpu[k] / m, us, p50[k] / m, p99[k] / m, rss[k] / m, lost[k], failed[k], share[k] / m
            mean_cpu[k] = cpu[k] / m; mean_rss[k] = rss[k] / m; mean_p99[k] = p99[k] / m
        }
        print ""
        for (i = 1; i <= keys; i++) {
            k = order[i]; split(k, f, " ")
            if (f[3] == "moq-relay") continue
            o = f[1] " " f[2] " moq-relay"
            if (!(o in n)) continue
            printf "RATIO profile=%s subscribers=%s cpu_per_gb=%s rss_per_sub=%s p99=%s%s\n", f[1], f[2], \
                ratio(mean_cpu[k], mean_cpu[o]), ratio(mean_rss[k], mean_rss[o]), ratio(mean_p99[k], mean_p99[o]), \
                f[3] == "qumo" ? "" : " build=" f[3]
        }
    }
    function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "na" }
' "$results"
