#!/usr/bin/env bash
# Two builds of Synod on this machine, taking turns: what a change bought, measured in one run.
# A shared machine's speed drifts from one hour to the next; rounds that alternate see the
# drift in both builds. Each turn starts a fresh three-node cluster of one build
# (scripts/clusters.sh) and runs one of two loads; the load is driven by this checkout's
# release build, so only the servers differ.
#
#   LOAD=default  the rows of scripts/bench-vs-etcd.sh's default load, then one client's put
#                 next to its floor (`synod bench floor`)
#   LOAD=memory   on a cluster that never snapshots (so the log keeps every entry, as between
#                 two snapshots): the memory the three members keep per put of 1 KiB (their
#                 resident sets after 100,000 puts, less before), then 256-byte and 1 MiB puts
#
#   git worktree add /tmp/before HEAD~1
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p synod)
#   scripts/ab-builds.sh /tmp/before-target/release/synod target/release/synod
#   ROUNDS=3 PROTOCOL=multi-paxos SCALE=2 scripts/ab-builds.sh A B
#   LOAD=memory scripts/ab-builds.sh A B
set -euo pipefail

cd "$(dirname "$0")/.."
LOAD=${LOAD:-default}
if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ] || { [ "$LOAD" != default ] && [ "$LOAD" != memory ]; }; then
    echo "usage: [LOAD=default|memory] $0 A_BINARY B_BINARY (two synod executables)" >&2
    exit 2
fi
BUILD_A=$1
BUILD_B=$2
ROUNDS=${ROUNDS:-2}
PROTOCOL=${PROTOCOL:-raft}
SCALE=${SCALE:-1}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh
CLIENT=$SYNOD

row() { # row LABEL "OPS P50 P99 P999 CPU ERR" (what `measure` prints)
    local ops p50 p99 p999 cpu err
    read -r ops p50 p99 p999 cpu err <<<"$2"
    printf "%-5s %-5s %-14s | %9.0f %7.2f %7.2f %7.2f %8.3f %5d\n" "$round" "$build" "$1" \
        "$ops" "$p50" "$p99" "$p999" "$cpu" "$err"
}

turn_default() {
    local row workload clients total conns size keys out
    for row in "put 1 $((1000 * SCALE)) 0 256 100000" "put 64 $((20000 * SCALE)) 0 256 100000" \
        "put 256 $((40000 * SCALE)) 0 256 100000" "get 64 $((20000 * SCALE)) 0 256 100000"; do
        read -r workload clients total conns size keys <<<"$row"
        row "$workload x$clients" "$(warm_and_measure "$workload" "$clients" "$total" "$conns" \
            "$size" "$keys" "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
    done
    out=$($SYNOD bench floor --endpoints "$SYNOD_ENDPOINTS" --total 2000 --dir "$WORK" \
        --format json)
    printf "%-5s %-5s %-14s | put p50 %s ms, floor %s ms (get %s, fdatasync %s, peer %s): %sx\n" \
        "$round" "$build" floor "$(echo "$out" | field put_p50_ms)" \
        "$(echo "$out" | field floor_ms)" "$(echo "$out" | field get_p50_ms)" \
        "$(echo "$out" | field fdatasync_p50_ms)" "$(echo "$out" | field peer_rtt_p50_ms)" \
        "$(echo "$out" | field put_over_floor)"
}

resident_kib() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}

turn_memory() {
    local before after
    $SYNOD bench put --endpoints "$SYNOD_ENDPOINTS" --clients 64 --total 20000 \
        --value-size 1024 --key-space 10000 --format json >/dev/null
    before=$(resident_kib "${SYNOD_PIDS[@]}")
    row "put x64 1KiB" "$(measure put 64 100000 0 1024 10000 "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
    after=$(resident_kib "${SYNOD_PIDS[@]}")
    printf "%-5s %-5s %-14s | %d bytes kept per put, three members\n" "$round" "$build" \
        memory $(((after - before) * 1024 / 100000))
    row "put x64 256B" "$(warm_and_measure put 64 40000 0 256 100000 "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
    row "put x16 1MiB" "$(warm_and_measure put 16 600 0 1048576 100 "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
}

FLAGS=""
[ "$LOAD" = memory ] && FLAGS="--snapshot-every 0"
echo "A: $BUILD_A"
echo "B: $BUILD_B"
printf "%-5s %-5s %-14s | %9s %7s %7s %7s %8s %5s\n" round build load ops/s p50ms p99ms p999ms "cpu ms" err
for round in $(seq "$ROUNDS"); do
    for build in A B; do
        server=BUILD_$build
        SYNOD=${!server}
        SYNOD_FLAGS=$FLAGS start_synod "$PROTOCOL"
        SYNOD=$CLIENT
        wait_ready "$SYNOD_ENDPOINTS"
        check_running "${SYNOD_PIDS[@]}"
        "turn_$LOAD"
        stop_synod
    done
done
echo
echo "cpu ms: CPU time (user + system) of the three server processes per operation."
