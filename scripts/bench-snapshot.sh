#!/usr/bin/env bash
# The cliff as the data grows, on a three-member Raft cluster (release build, one thread per
# server, fsync on): fill it with PUTS puts of 256-byte values under random keys out of as many,
# then measure LOAD puts by CLIENTS clients
#   - on a cluster that never snapshots (--snapshot-every 0): the baseline;
#   - on one that snapshots every 100,000 entries (the default), so the load crosses several;
#   - while a follower that was down for 2 x PUTS puts comes back and catches up (by a
#     snapshot if the leader's log no longer holds what it lacks; the counts are printed);
# and each member's resident memory per key, and how long a member takes to restart; and etcd's
# memory per key after the same fill (ETCD=0 leaves etcd out).
#
#   scripts/bench-snapshot.sh                    # PUTS=1000000 (about 632,000 distinct keys)
#   PUTS=10000000 LOAD=500000 scripts/bench-snapshot.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PUTS=${PUTS:-1000000}
LOAD=${LOAD:-300000}
CLIENTS=${CLIENTS:-64}
ETCD=${ETCD:-1}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh
# Snapshots taken and installed are counted from the members' logs.
export RUST_LOG=info

ALL=$SYNOD_ENDPOINTS
bench() { put_load "$1" "$2" "$3" "$PUTS"; } # bench ENDPOINTS TOTAL CLIENTS
row() { # row LABEL JSON
    printf '  %-44s %8.0f puts/s  p50 %6.2f  p99 %7.2f  p99.9 %7.2f  max %8.2f ms  errors %s\n' "$1" \
        "$(echo "$2" | field throughput)" "$(echo "$2" | field p50_ms)" "$(echo "$2" | field p99_ms)" \
        "$(echo "$2" | field p999_ms)" "$(echo "$2" | field max_ms)" "$(echo "$2" | field errors)"
}
rss_mb() { ps -o rss= -p "$1" | awk '{printf "%.0f", $1 / 1024}'; }
# Seconds since START until member ID holds COUNT keys of its own (serializable reads): its
# snapshot loaded and its log replayed up to what the cluster committed.
caught_up_after() {
    local id=$1 start=$2 count=$3 client=$((32379 + ($1 - 1) * 10))
    until [ "$($SYNOD get bench/ --prefix --count-only --consistency s \
        --endpoints "127.0.0.1:$client" --dial-timeout-ms 200 2>/dev/null)" = "$count" ]; do
        sleep 0.05
    done
    echo "$start $(date +%s.%N)" | awk '{printf "%.2f", $2 - $1}'
}

fill() { # fill [ENDPOINTS PIDS...]: the fill's row, then each member's memory per key
    local endpoints=${1:-$ALL} out keys i=0
    shift || true
    local pids=("$@")
    [ ${#pids[@]} -gt 0 ] || pids=("${SYNOD_PIDS[@]}")
    wait_ready "$endpoints"
    out=$(bench "$endpoints" "$PUTS" 256)
    row "fill: $PUTS puts, 256 clients" "$out"
    keys=$($SYNOD get bench/ --prefix --count-only --endpoints "$endpoints")
    for pid in "${pids[@]}"; do
        i=$((i + 1))
        echo "  member $i: $(rss_mb "$pid") MB resident," \
            "$(ps -o rss= -p "$pid" | awk -v k="$keys" '{printf "%.0f", $1 * 1024 / k}') bytes per key ($keys keys)"
    done
}

restart_member() { # restart_member ID: kill -9 and restart, timed until it caught up
    local start count
    count=$($SYNOD get bench/ --prefix --count-only --endpoints "$ALL")
    kill -9 "${SYNOD_PIDS[$1 - 1]}"
    wait "${SYNOD_PIDS[$1 - 1]}" 2>/dev/null || true
    start=$(date +%s.%N)
    start_synod_member "$1"
    echo "  member $1 restarted (kill -9) and held all $count keys again after" \
        "$(caught_up_after "$1" "$start" "$count") s"
    resident
}

resident() { # each member's resident memory now (a restarted one's next to the others')
    local line="  resident:" i
    for i in 1 2 3; do line="$line member $i $(rss_mb "${SYNOD_PIDS[$i - 1]}") MB,"; done
    echo "${line%,}"
}

if [ "$ETCD" = 1 ]; then
    echo "== etcd $(etcd --version | awk '/etcd Version/ {print $3}'), the same fill (every revision kept, as Synod)"
    start_etcd
    fill "$ETCD_ENDPOINTS" "${ETCD_PIDS[@]}"
    check_running "${ETCD_PIDS[@]}"
    stop_etcd
    rm -rf "$WORK"/etcd[123]
fi

echo "== no snapshots (--snapshot-every 0)"
SYNOD_FLAGS="--snapshot-every 0" start_synod
fill
row "$LOAD puts, $CLIENTS clients" "$(bench "$ALL" "$LOAD" "$CLIENTS")"
restart_member 2
check_running "${SYNOD_PIDS[@]}"
stop_synod

echo "== snapshots every 100,000 entries"
start_synod
fill
row "$LOAD puts, $CLIENTS clients, snapshots taken" "$(bench "$ALL" "$LOAD" "$CLIENTS")"
restart_member 2
# Member 3 misses enough that the leader's log no longer holds what it lacks: as many puts
# as twice the fill (a snapshot waits for a quarter of the store's bytes in the log).
kill -9 "${SYNOD_PIDS[2]}"
wait "${SYNOD_PIDS[2]}" 2>/dev/null || true
row "$((2 * PUTS)) puts, 256 clients, member 3 down" \
    "$(bench 127.0.0.1:32379,127.0.0.1:32389 $((2 * PUTS)) 256)"
RESTARTED=$(date +%s.%N)
start_synod_member 3
row "$LOAD puts, $CLIENTS clients, member 3 catching up" \
    "$(bench 127.0.0.1:32379,127.0.0.1:32389 "$LOAD" "$CLIENTS")"
COUNT=$($SYNOD get bench/ --prefix --count-only --endpoints "$ALL")
echo "  member 3 held all $COUNT keys again $(caught_up_after 3 "$RESTARTED" "$COUNT") s after it restarted"
resident
for i in 1 2 3; do
    echo "  member $i: $(grep -c "saved a snapshot" "$WORK/synod$i.log") snapshots taken," \
        "$(grep -c "installed a snapshot" "$WORK/synod$i.log") installed from the leader"
done
check_running "${SYNOD_PIDS[@]}"
stop_synod
