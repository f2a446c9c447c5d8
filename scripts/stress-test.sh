#!/usr/bin/env bash
# The whole suite (scripts/test.sh) N times in a row while stress-ng keeps
# CPUs busy, as on a loaded CI box: a test that passes here does not depend
# on timing. Prints each run's result and duration, then a summary line;
# exits 0 only if every run passed.
#
#   scripts/stress-test.sh        # 5 runs
#   scripts/stress-test.sh 2      # 2 runs
#   STRESS_CPUS=4 scripts/stress-test.sh   # load workers (default 2)
#
# Each run's output is kept under $STRESS_LOG_DIR (default: a new
# /tmp/qumo-stress.XXXXXX). The load stops when the script ends, however it
# ends.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-5}"
CPUS="${STRESS_CPUS:-2}"
if ! [[ "$RUNS" =~ ^[1-9][0-9]*$ && "$CPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [RUNS]   (RUNS and STRESS_CPUS: positive integers)" >&2
    exit 64
fi

if ! command -v stress-ng >/dev/null; then
    echo "== installing stress-ng"
    sudo=()
    [[ "$(id -u)" -ne 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq stress-ng
fi

LOGS="${STRESS_LOG_DIR:-$(mktemp -d /tmp/qumo-stress.XXXXXX)}"
mkdir -p "$LOGS"

# Build (and install the clients) before the load starts: the runs are
# about the tests, not about how slowly the compiler goes under load.
echo "== building the suite before loading the machine"
bash scripts/install-clients.sh >"$LOGS/build.log" 2>&1 &&
    cargo test --workspace --locked --no-run >>"$LOGS/build.log" 2>&1 &&
    cargo build --locked --bin qumo-relay >>"$LOGS/build.log" 2>&1 || {
    echo "stress-test: the build failed; see $LOGS/build.log" >&2
    tail -n 30 "$LOGS/build.log" >&2
    exit 1
}

STRESS_PID=""
stop_load() {
    if [[ -n "$STRESS_PID" ]]; then
        kill -TERM "$STRESS_PID" 2>/dev/null || true
        wait "$STRESS_PID" 2>/dev/null || true
        STRESS_PID=""
    fi
}
trap stop_load EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stress-ng --cpu "$CPUS" --quiet &
STRESS_PID=$!
echo "== stress-ng --cpu $CPUS (pid $STRESS_PID); $RUNS runs of scripts/test.sh; logs in $LOGS"

passed=0
results=()
for run in $(seq 1 "$RUNS"); do
    log="$LOGS/run-$run.log"
    start=$(date +%s)
    set +e
    bash scripts/test.sh >"$log" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - start))
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        results+=("pass ${took}s")
        echo "run $run/$RUNS: PASS in ${took}s"
    else
        results+=("FAIL ${took}s")
        echo "run $run/$RUNS: FAIL (exit $rc) in ${took}s; log: $log"
        # The failing tests, as cargo and the browser test name them.
        grep -E '^test .* FAILED$|^---- .* stdout ----$|^FAIL: |test.sh: FAILED' "$log" |
            sed 's/^/    /' | sort -u || true
    fi
done

stop_load
echo "stress-test: $passed/$RUNS runs passed under stress-ng --cpu $CPUS ($(
    IFS=,
    echo "${results[*]}"
)); logs in $LOGS"
[[ $passed -eq $RUNS ]]
