#!/usr/bin/env bash
# Watchers and leases at scale, Synod next to etcd on this machine (the clusters of
# scripts/clusters.sh): what one granted lease, one keep-alive and one watch event delivered
# cost the three servers in CPU, and how long they take.
#
#   - lease: LEASES leases granted by 64 clients (time to live 600 s: none expires meanwhile);
#   - keep-alive: KEEPALIVES keep-alives of those leases, 64 clients each on a keep-alive
#     stream of its own;
#   - watch: WATCHERS watchers on one prefix (over one watch stream per 1,000 of them), then
#     PUTS puts under it by 4 writers: PUTS x WATCHERS events, each timed from its put to
#     its arrival.
#
# Then each system's memory (the three servers' resident set) holding all of it.
#
#   scripts/bench-watch-lease.sh                     # 100,000 leases, 10,000 watchers
#   LEASES=10000 WATCHERS=1000 scripts/bench-watch-lease.sh
#   PROTOCOLS="raft multi-paxos" scripts/bench-watch-lease.sh
set -euo pipefail

cd "$(dirname "$0")/.."
LEASES=${LEASES:-100000}
KEEPALIVES=${KEEPALIVES:-$((2 * LEASES))}
WATCHERS=${WATCHERS:-10000}
PUTS=${PUTS:-100}
PROTOCOLS=${PROTOCOLS:-raft}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh

# rows ENDPOINTS PID...: the three rows against one system, a line each, then its memory.
rows() {
    local endpoints=$1
    shift
    BENCH_FLAGS="--lease-ttl 600" measure lease 64 "$LEASES" 0 256 100000 "$endpoints" "$@"
    measure keep-alive 64 "$KEEPALIVES" 0 256 100000 "$endpoints" "$@"
    BENCH_FLAGS="--watchers $WATCHERS" measure watch 4 "$PUTS" 0 256 100000 "$endpoints" "$@"
    ps -o rss= -p "$(
        IFS=,
        echo "$*"
    )" | awk '{kib += $1} END {printf "%.0f\n", kib / 1024}'
}

start_etcd
wait_ready "$ETCD_ENDPOINTS"
check_running "${ETCD_PIDS[@]}"
mapfile -t ETCD < <(rows "$ETCD_ENDPOINTS" "${ETCD_PIDS[@]}")
# etcd goes before Synod is measured, so that each has the machine to itself.
stop_etcd

NAMES=("lease x64" "keep-alive x64" "watch x$WATCHERS")
compare_header us
for protocol in $PROTOCOLS; do
    start_synod "$protocol"
    wait_ready "$SYNOD_ENDPOINTS"
    check_running "${SYNOD_PIDS[@]}"
    mapfile -t OURS < <(rows "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")
    stop_synod
    for i in 0 1 2; do
        compare_row "$protocol, ${NAMES[$i]}" "${ETCD[$i]}" "${OURS[$i]}" 1000
    done
    printf "%-26s | %-48s | %-48s | %6.2f\n" "$protocol, memory" "${ETCD[3]} MiB" "${OURS[3]} MiB" \
        "$(echo "${OURS[3]} ${ETCD[3]}" | awk '{print $1 / $2}')"
done
echo
echo "$LEASES leases, $KEEPALIVES keep-alives, $WATCHERS watchers x $PUTS puts = $((WATCHERS * PUTS)) events."
echo "watch: ops/s are events delivered per second, latency from a put's sending to each watcher's event."
echo "cpu us: CPU time (user + system) of the three server processes per operation (per event, for watch)."
echo "memory: the three servers' resident memory, holding every lease and watcher, after the rows."
