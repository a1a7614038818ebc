#!/usr/bin/env bash
# Two builds of Synod taking turns, as scripts/ab-builds.sh, for what a change does to memory
# and to large values: on a fresh three-node Raft cluster that never snapshots (so the log
# keeps every entry, as between two snapshots), the memory the three members keep per put of
# 1 KiB (their resident sets after 100,000 puts, less before), then the throughput and CPU per
# put of 256-byte and 1 MiB values.
#
#   scripts/ab-memory.sh /tmp/before-target/release/synod target/release/synod
#   ROUNDS=3 scripts/ab-memory.sh A B
set -euo pipefail

cd "$(dirname "$0")/.."
if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
    echo "usage: $0 A_BINARY B_BINARY (two synod executables)" >&2
    exit 2
fi
BUILD_A=$1
BUILD_B=$2
ROUNDS=${ROUNDS:-2}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh
CLIENT=$SYNOD

resident_kib() {
    local total=0
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}

echo "A: $BUILD_A"
echo "B: $BUILD_B"
printf "%-5s %-5s %-14s | %9s %7s %7s %7s %8s %5s\n" round build load ops/s p50ms p99ms p999ms "cpu ms" err
row() {
    read -r ops p50 p99 p999 cpu err <<<"$2"
    printf "%-5s %-5s %-14s | %9.0f %7.2f %7.2f %7.2f %8.3f %5d\n" "$round" "$build" "$1" \
        "$ops" "$p50" "$p99" "$p999" "$cpu" "$err"
}
for round in $(seq "$ROUNDS"); do
    for build in A B; do
        server=BUILD_$build
        SYNOD=${!server}
        SYNOD_FLAGS="--snapshot-every 0" start_synod raft
        SYNOD=$CLIENT
        wait_ready "$SYNOD_ENDPOINTS"
        check_running "${SYNOD_PIDS[@]}"
        $SYNOD bench put --endpoints "$SYNOD_ENDPOINTS" --clients 64 --total 20000 \
            --value-size 1024 --key-space 10000 --format json >/dev/null
        before=$(resident_kib "${SYNOD_PIDS[@]}")
        row "put x64 1KiB" "$(measure put 64 100000 0 1024 10000 "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
        after=$(resident_kib "${SYNOD_PIDS[@]}")
        printf "%-5s %-5s %-14s | %d bytes kept per put, three members\n" "$round" "$build" \
            memory $(((after - before) * 1024 / 100000))
        row "put x64 256B" "$(warm_and_measure put 64 40000 0 256 100000 "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
        row "put x16 1MiB" "$(warm_and_measure put 16 600 0 1048576 100 "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
        stop_synod
    done
done
echo
echo "cpu ms: CPU time (user + system) of the three server processes per operation."
