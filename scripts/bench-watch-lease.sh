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
for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${ETCD_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
done

NAMES=("lease x64" "keep-alive x64" "watch x$WATCHERS")
printf "%-26s | %-48s | %-48s | %s\n" "" "etcd $(etcd --version | awk '/etcd Version/ {print $3}')" "synod $($SYNOD --version | awk '{print $2}')" "synod / etcd"
printf "%-26s | %9s %7s %7s %7s %8s %5s | %9s %7s %7s %7s %8s %5s | %6s %6s %6s\n" \
    "protocol, load" "ops/s" "p50ms" "p99ms" "p999ms" "cpu us" "err" "ops/s" "p50ms" "p99ms" "p999ms" "cpu us" "err" "tput" "p99" "cpu"
for protocol in $PROTOCOLS; do
    start_synod "$protocol"
    wait_ready "$SYNOD_ENDPOINTS"
    check_running "${SYNOD_PIDS[@]}"
    mapfile -t OURS < <(rows "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")
    stop_synod
    for i in 0 1 2; do
        read -r et ep50 ep99 ep999 ecpu eerr <<<"${ETCD[$i]}"
        read -r st sp50 sp99 sp999 scpu serr <<<"${OURS[$i]}"
        printf "%-26s | %9.0f %7.2f %7.2f %7.2f %8.2f %5d | %9.0f %7.2f %7.2f %7.2f %8.2f %5d | %6.2f %6.2f %6.2f\n" \
            "$protocol, ${NAMES[$i]}" "$et" "$ep50" "$ep99" "$ep999" "$(echo "$ecpu" | awk '{print $1 * 1000}')" "$eerr" \
            "$st" "$sp50" "$sp99" "$sp999" "$(echo "$scpu" | awk '{print $1 * 1000}')" "$serr" \
            "$(echo "$st $et" | awk '{print $1 / $2}')" "$(echo "$sp99 $ep99" | awk '{print ($2 > 0 ? $1 / $2 : 0)}')" \
            "$(echo "$scpu $ecpu" | awk '{print ($2 > 0 ? $1 / $2 : 0)}')"
    done
    printf "%-26s | %-48s | %-48s | %6.2f\n" "$protocol, memory" "${ETCD[3]} MiB" "${OURS[3]} MiB" \
        "$(echo "${OURS[3]} ${ETCD[3]}" | awk '{print $1 / $2}')"
done
echo
echo "$LEASES leases, $KEEPALIVES keep-alives, $WATCHERS watchers x $PUTS puts = $((WATCHERS * PUTS)) events."
echo "watch: ops/s are events delivered per second, latency from a put's sending to each watcher's event."
echo "cpu us: CPU time (user + system) of the three server processes per operation (per event, for watch)."
echo "memory: the three servers' resident memory, holding every lease and watcher, after the rows."
