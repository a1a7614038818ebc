#!/usr/bin/env bash
# Two builds of Synod on this machine, taking turns: what a change bought, measured in one run.
# A shared machine's speed drifts from one hour to the next; rounds that alternate see the
# drift in both builds. Each turn starts a fresh three-node cluster of one build
# (scripts/clusters.sh), runs the rows of scripts/bench-vs-etcd.sh's default load, then one
# client's put next to its floor (`synod bench floor`). The load is driven by this checkout's
# release build, so only the servers differ.
#
#   git worktree add /tmp/before HEAD~1
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p synod)
#   scripts/ab-builds.sh /tmp/before-target/release/synod target/release/synod
#   ROUNDS=3 PROTOCOL=multi-paxos SCALE=2 scripts/ab-builds.sh A B
set -euo pipefail

cd "$(dirname "$0")/.."
if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
    echo "usage: $0 A_BINARY B_BINARY (two synod executables)" >&2
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

ROWS=(
    "put 1 $((1000 * SCALE)) 0 256 100000"
    "put 64 $((20000 * SCALE)) 0 256 100000"
    "put 256 $((40000 * SCALE)) 0 256 100000"
    "get 64 $((20000 * SCALE)) 0 256 100000"
)

echo "A: $BUILD_A"
echo "B: $BUILD_B"
printf "%-5s %-5s %-9s | %9s %7s %7s %7s %8s %5s\n" round build load ops/s p50ms p99ms p999ms "cpu ms" err
for round in $(seq "$ROUNDS"); do
    for build in A B; do
        server=BUILD_$build
        SYNOD=${!server}
        start_synod "$PROTOCOL"
        SYNOD=$CLIENT
        wait_ready "$SYNOD_ENDPOINTS"
        check_running "${SYNOD_PIDS[@]}"
        for row in "${ROWS[@]}"; do
            read -r workload clients total conns size keys <<<"$row"
            read -r ops p50 p99 p999 cpu err <<<"$(warm_and_measure "$workload" "$clients" \
                "$total" "$conns" "$size" "$keys" "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
            printf "%-5s %-5s %-9s | %9.0f %7.2f %7.2f %7.2f %8.3f %5d\n" "$round" "$build" \
                "$workload x$clients" "$ops" "$p50" "$p99" "$p999" "$cpu" "$err"
        done
        out=$($SYNOD bench floor --endpoints "$SYNOD_ENDPOINTS" --total 2000 --dir "$WORK" \
            --format json)
        printf "%-5s %-5s %-9s | put p50 %s ms, floor %s ms (get %s, fdatasync %s, peer %s): %sx\n" \
            "$round" "$build" floor "$(echo "$out" | field put_p50_ms)" \
            "$(echo "$out" | field floor_ms)" "$(echo "$out" | field get_p50_ms)" \
            "$(echo "$out" | field fdatasync_p50_ms)" "$(echo "$out" | field peer_rtt_p50_ms)" \
            "$(echo "$out" | field put_over_floor)"
        stop_synod
    done
done
echo
echo "cpu ms: CPU time (user + system) of the three server processes per operation."
