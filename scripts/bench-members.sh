#!/usr/bin/env bash
# Where a replicated put's CPU goes, by member and by thread: the same build and load on one
# member alone, then on three members with the clients spread over them (a follower forwards
# its writes to the leader) and with every client at the leader. Per put, for each member:
# its event loop's CPU (gRPC, peers, the engine, the apply) and its disk thread's (the log's
# writes and fdatasync). ROUNDS rounds, one after another.
#
#   scripts/bench-members.sh                      # 64 clients, 100,000 puts, 2 rounds
#   CLIENTS=256 TOTAL=200000 ROUNDS=1 PROTOCOL=multi-paxos scripts/bench-members.sh
#
set -euo pipefail

cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-64}
TOTAL=${TOTAL:-100000}
ROUNDS=${ROUNDS:-2}
PROTOCOL=${PROTOCOL:-raft}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh

# CPU ticks of one process's threads: "DISK REST" (the disk thread is named synod-disk).
thread_ticks() {
    local disk=0 rest=0 task comm ticks
    for task in /proc/"$1"/task/*; do
        comm=$(cat "$task/comm" 2>/dev/null) || continue
        ticks=$(sed -E 's/^.*\) //' "$task/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
        if [ "$comm" = synod-disk ]; then disk=$((disk + ticks)); else rest=$((rest + ticks)); fi
    done
    echo "$disk $rest"
}

# run_members N: starts N members on fresh data, warms them, and measures each shape.
run_members() {
    local n=$1 cluster="" endpoints="" pids=() i
    for i in $(seq 1 "$n"); do
        cluster="$cluster${cluster:+,}$i=127.0.0.1:$((42380 + i * 10))"
        endpoints="$endpoints${endpoints:+,}127.0.0.1:$((42379 + i * 10))"
    done
    for i in $(seq 1 "$n"); do
        RUST_LOG=warn $SYNOD server --id "$i" --initial-cluster "$cluster" --threads "$THREADS" \
            --listen-client "127.0.0.1:$((42379 + i * 10))" --data-dir "$WORK/members$n-$i" \
            --protocol "$PROTOCOL" --quota-backend-bytes "$QUOTA_BYTES" \
            >>"$WORK/members$n-$i.log" 2>&1 &
        PIDS+=($!)
        pids+=($!)
    done
    wait_ready "$endpoints"
    put_load "$endpoints" $((TOTAL / 5)) "$CLIENTS" 10000 >/dev/null
    local shapes=("spread" "$endpoints")
    if [ "$n" -gt 1 ]; then
        local leader
        # `synod status` says "(this one)" on the line of the endpoint that leads.
        leader=$($SYNOD status --endpoints "$endpoints" | awk -F, '/this one/ {print $1; exit}')
        shapes+=("leader" "$leader")
    fi
    local s
    for ((s = 0; s < ${#shapes[@]}; s += 2)); do
        local name=${shapes[s]} eps=${shapes[s + 1]} before=() after=() out
        for i in "${!pids[@]}"; do before[i]=$(thread_ticks "${pids[i]}"); done
        out=$(put_load "$eps" "$TOTAL" "$CLIENTS" 10000)
        for i in "${!pids[@]}"; do after[i]=$(thread_ticks "${pids[i]}"); done
        local line total_us=0
        line=$(printf "%-9s %-7s %8.0f puts/s |" "$n member" "$name" "$(echo "$out" | field throughput)")
        for i in "${!pids[@]}"; do
            read -r d0 r0 <<<"${before[i]}"
            read -r d1 r1 <<<"${after[i]}"
            local loop_us=$(((r1 - r0) * 1000000 / TICKS / TOTAL))
            local disk_us=$(((d1 - d0) * 1000000 / TICKS / TOTAL))
            total_us=$((total_us + loop_us + disk_us))
            line="$line m$((i + 1)) $loop_us+$disk_us"
        done
        echo "$line | $total_us us per put"
    done
    stop_pids "${pids[@]}"
}

echo "$PROTOCOL, $CLIENTS clients, $TOTAL puts of 256 bytes over 10,000 keys; per member: event loop + disk thread, us of CPU per put"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    run_members 1
    run_members 3
done
