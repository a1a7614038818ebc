#!/usr/bin/env bash
# One client's put next to its floor, for etcd and for Synod in one run: `synod bench floor`
# against each system's three-member cluster (scripts/clusters.sh), timing fdatasync in the
# directory their data is in. The floor is a serializable get's round trip to the leader,
# plus one fdatasync, plus one loopback round trip; see crates/synod/src/commands/bench/floor.rs.
# (Both systems' data, and the fdatasync probe, are in a directory under $TMPDIR or /tmp: on a
# machine where that is tmpfs, point TMPDIR at the disk.)
#
#   scripts/bench-floor.sh                 # 2,000 samples of each piece
#   SAMPLES=10000 scripts/bench-floor.sh
#   PROTOCOLS="raft multi-paxos" scripts/bench-floor.sh
set -euo pipefail

cd "$(dirname "$0")/.."
SAMPLES=${SAMPLES:-2000}
PROTOCOLS=${PROTOCOLS:-raft}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh

floor() {
    local endpoints=$1
    $SYNOD bench floor --endpoints "$endpoints" --total "$SAMPLES" --dir "$WORK"
}

start_etcd
wait_ready "$ETCD_ENDPOINTS"
check_running "${ETCD_PIDS[@]}"
echo "== etcd $(etcd --version | awk '/etcd Version/ {print $3}')"
floor "$ETCD_ENDPOINTS"
# etcd goes, and is gone, before Synod is measured on the same disk.
stop_etcd

for protocol in $PROTOCOLS; do
    start_synod "$protocol"
    wait_ready "$SYNOD_ENDPOINTS"
    check_running "${SYNOD_PIDS[@]}"
    echo
    echo "== synod $($SYNOD --version | awk '{print $2}'), $protocol"
    floor "$SYNOD_ENDPOINTS"
    stop_synod
done
