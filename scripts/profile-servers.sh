#!/usr/bin/env bash
# Where a three-node Synod cluster spends its CPU under puts: starts the cluster on fresh data
# (scripts/clusters.sh), warms it up, and while `synod bench` runs the load, either records a
# profile of the three servers or counts their syscalls and context switches per put.
#
#   scripts/profile-servers.sh stat      # per put, summed over the servers: context switches
#                                        # and the syscalls that matter (needs perf)
#   scripts/profile-servers.sh record    # perf record --call-graph dwarf of the servers into
#                                        # $OUT (default /tmp/synod-profile.data); read it with
#                                        # perf report -i $OUT --no-children --sort sym
#   CLIENTS=64 TOTAL=100000 PROTOCOL=multi-paxos SECONDS_RECORDED=6 scripts/profile-servers.sh record
#
# Installs nothing: perf comes with Debian's linux-perf.
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=${1:-stat}
CLIENTS=${CLIENTS:-256}
TOTAL=${TOTAL:-100000}
PROTOCOL=${PROTOCOL:-raft}
OUT=${OUT:-/tmp/synod-profile.data}
case $MODE in
    stat | record) ;;
    *) echo "usage: $0 stat|record" >&2; exit 2 ;;
esac
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 2; }
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh

start_synod "$PROTOCOL"
wait_ready "$SYNOD_ENDPOINTS"
check_running "${SYNOD_PIDS[@]}"
load() {
    $SYNOD bench put --endpoints "$SYNOD_ENDPOINTS" --clients "$CLIENTS" --total "$1" --format json
}
load $((TOTAL / 5)) >/dev/null
pids=$(IFS=,; echo "${SYNOD_PIDS[*]}")
before=$(cpu_seconds "${SYNOD_PIDS[@]}")
case $MODE in
    stat)
        events=context-switches,page-faults
        for call in writev sendto recvfrom write fdatasync futex epoll_wait; do
            events="$events,syscalls:sys_enter_$call"
        done
        perf stat -e "$events" -p "$pids" -o "$WORK/stat.txt" &
        perf_pid=$!
        sleep 0.5
        load "$TOTAL"
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        echo "per put, the three servers together:"
        grep -E '^ +[0-9]' "$WORK/stat.txt" | grep -v 'seconds' |
            awk -v n="$TOTAL" '{gsub(",", "", $1); printf "  %8.3f  %s\n", $1 / n, $2}'
        ;;
    record)
        load "$TOTAL" &
        load_pid=$!
        sleep 1
        perf record -F 499 --call-graph dwarf,16384 -p "$pids" -o "$OUT" \
            -- sleep "${SECONDS_RECORDED:-4}" 2>"$WORK/perf.err"
        wait "$load_pid"
        echo "profile in $OUT"
        ;;
esac
after=$(cpu_seconds "${SYNOD_PIDS[@]}")
echo "server CPU: $(echo "$before $after $TOTAL" | awk '{printf "%.1f", ($2 - $1) * 1e6 / $3}') us per put"
