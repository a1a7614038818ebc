#!/usr/bin/env bash
# Synod next to etcd on this machine: a three-member etcd and a three-node Synod cluster on
# loopback, both with fsync on, under the same `synod bench` load. Prints one table with
# both systems and the ratio: throughput, p50/p99/p99.9 latency, and the CPU time the three
# server processes used per operation (read from /proc).
#
#   scripts/bench-vs-etcd.sh            # the sizes quoted in docs/benchmarks.md
#   SCALE=4 scripts/bench-vs-etcd.sh    # four times as many requests per row
#   PROTOCOLS=raft scripts/bench-vs-etcd.sh   # Synod on these protocols only (default: all
#                                             # three, each on fresh data, one after another)
#   LOAD=conns scripts/bench-vs-etcd.sh  # puts with one HTTP/2 connection per client, as
#                                        # when many independent clients connect
#   LOAD=large scripts/bench-vs-etcd.sh  # 64 KiB and 1 MiB values, at 1 and 16 clients
#   LOAD="default conns large" ...       # several tables' rows in one run
#
# Six server processes and the load share this machine, so each server gets the same share
# of its cores: THREADS (default: cores / 3, at least 1) is both etcd's GOMAXPROCS and
# Synod's --threads.
#
# Installs Debian's etcd-server when etcd is missing (needs root and the package mirror).
set -euo pipefail

cd "$(dirname "$0")/.."
SCALE=${SCALE:-1}
PROTOCOLS=${PROTOCOLS:-raft multi-paxos basic-paxos}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh

start_etcd
wait_ready "$ETCD_ENDPOINTS"
check_running "${ETCD_PIDS[@]}"

# workload clients total conns value-size key-space (conns 0: one connection per 16
# clients). Large values go to few keys, so the store stays a few hundred MB.
ROWS=()
for load in ${LOAD:-default}; do
    case $load in
        default) ROWS+=(
            "put 1 $((1000 * SCALE)) 0 256 100000"
            "put 16 $((10000 * SCALE)) 0 256 100000"
            "put 64 $((20000 * SCALE)) 0 256 100000"
            "put 256 $((40000 * SCALE)) 0 256 100000"
            "get 64 $((20000 * SCALE)) 0 256 100000"
        ) ;;
        conns) ROWS+=(
            "put 64 $((20000 * SCALE)) 64 256 100000"
            "put 256 $((40000 * SCALE)) 256 256 100000"
        ) ;;
        # Long enough for the servers' memory to reach its steady state: the first few
        # hundred megabytes of large values each land in memory never used before.
        # (Both systems keep every revision: about 1 GB each here. More than that and the
        # six servers outgrow 24 GiB of memory, as etcd stays up while Synod is measured.)
        large) ROWS+=(
            "put 1 $((3000 * SCALE)) 0 65536 1000"
            "put 16 $((5000 * SCALE)) 0 65536 1000"
            "put 1 $((300 * SCALE)) 0 1048576 100"
            "put 16 $((300 * SCALE)) 0 1048576 100"
        ) ;;
        *) echo "LOAD is default, conns or large, not $load" >&2; exit 2 ;;
    esac
done

# etcd first, every row; then each protocol on a fresh Synod cluster, every row, next to it.
# Each row warms up with a tenth of its load, then measures it.
declare -A ETCD_ROWS

# A row's name in the table: the load, with the connections and value size when not the
# default ones.
row_name() {
    local workload=$1 clients=$2 conns=$4 size=$5
    local name="$workload x$clients"
    [ "$conns" != 0 ] && name="$name c$conns"
    if [ "$size" -ge 1048576 ]; then name="$name $((size / 1048576))MiB";
    elif [ "$size" -ge 1024 ]; then name="$name $((size / 1024))KiB"; fi
    echo "$name"
}

for row in "${ROWS[@]}"; do
    read -r workload clients total conns size keys <<<"$row"
    ETCD_ROWS[$row]=$(warm_and_measure "$workload" "$clients" "$total" "$conns" "$size" "$keys" "$ETCD_ENDPOINTS" "${ETCD_PIDS[@]}")
done

compare_header ms
for protocol in $PROTOCOLS; do
    start_synod "$protocol"
    wait_ready "$SYNOD_ENDPOINTS"
    check_running "${SYNOD_PIDS[@]}"
    for row in "${ROWS[@]}"; do
        read -r workload clients total conns size keys <<<"$row"
        compare_row "$protocol, $(row_name "$workload" "$clients" "$total" "$conns" "$size")" \
            "${ETCD_ROWS[$row]}" \
            "$(warm_and_measure "$workload" "$clients" "$total" "$conns" "$size" "$keys" "$SYNOD_ENDPOINTS" "${SYNOD_PIDS[@]}")"
    done
    stop_synod
done
echo
echo "each server: $THREADS thread(s) (etcd GOMAXPROCS, synod --threads); $CORES cores here."
echo "cpu ms: CPU time (user + system) of the three server processes per operation."
echo "ratios: throughput and p99 latency and cpu of Synod over etcd's, in this run."
