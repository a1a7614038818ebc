#!/usr/bin/env bash
# etcd's own load check, `etcdctl check perf`, against a three-member etcd and then against a
# three-node Synod cluster on this machine (one system at a time, so they do not share the
# cores), each on a fresh data directory. Prints etcdctl's verdict for both, and the errors
# it saw, if any.
#
#   scripts/check-perf-vs-etcd.sh          # --load=l: 500 clients, 1 KiB values, 60 s
#   LOAD=xl scripts/check-perf-vs-etcd.sh  # 1,000 clients
#
# Installs Debian's etcd-server and etcd-client when missing (needs root and the mirror).
set -euo pipefail

cd "$(dirname "$0")/.."
LOAD=${LOAD:-l}
if ! command -v etcdctl >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-client >/dev/null
fi
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh

# Runs the check against `endpoints`; prints its verdict lines.
check_perf() {
    local endpoints=$1
    ETCDCTL_API=3 etcdctl --endpoints="$endpoints" check perf --load="$LOAD" 2>&1 |
        tr '\r' '\n' | grep -E "PASS|FAIL|Slowest|ERROR|error" || true
}

echo "== etcd $(etcd --version | awk '/etcd Version/ {print $3}'), etcdctl check perf --load=$LOAD"
start_etcd
wait_ready "$ETCD_ENDPOINTS"
check_perf "$ETCD_ENDPOINTS"
check_running "${ETCD_PIDS[@]}"
for pid in "${ETCD_PIDS[@]}"; do kill "$pid"; done

echo "== synod $($SYNOD --version | awk '{print $2}'), etcdctl check perf --load=$LOAD"
start_synod
wait_ready "$SYNOD_ENDPOINTS"
check_perf "$SYNOD_ENDPOINTS"
check_running "${SYNOD_PIDS[@]}"
echo
echo "each server: $THREADS thread(s) (etcd GOMAXPROCS, synod --threads); $CORES cores here."
