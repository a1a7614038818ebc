#!/usr/bin/env bash
# A follower's catch-up by snapshot, in phases: a three-member Raft cluster filled with PUTS
# puts, member 3 down for 2 x PUTS more, then restarted while 64 clients put in 30 windows of
# 10,000; each window's throughput and latency, the busiest threads (top -H), and the
# follower's snapshot log lines with their times.
#
#   scripts/bench-catchup.sh
#   SYNOD_BUILD=/abs/path/to/synod PUTS=500000 scripts/bench-catchup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PUTS=${PUTS:-1000000}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh
export RUST_LOG=info
ALL=$SYNOD_ENDPOINTS
bench() { put_load "$1" "$2" "$3" "$PUTS"; } # bench ENDPOINTS TOTAL CLIENTS
start_synod
wait_ready "$ALL"
bench "$ALL" "$PUTS" 256 >/dev/null
echo filled
kill -9 "${SYNOD_PIDS[2]}"; wait "${SYNOD_PIDS[2]}" 2>/dev/null || true
# A leader killed here fails the requests in flight then: counted, not fatal.
bench 127.0.0.1:32379,127.0.0.1:32389 $((2 * PUTS)) 256 | cut -c1-200 || true
T0=$(date +%s.%N)
echo "restart at $T0"
start_synod_member 3
for w in $(seq 1 30); do
  s=$(date +%s.%N)
  out=$(bench 127.0.0.1:32379,127.0.0.1:32389 10000 64 || true)
  echo "window $w t=$(echo "$s $T0" | awk '{printf "%.1f", $1-$2}') $(echo "$out" | sed -E 's/.*"throughput":([^,]*).*"p50_ms":([^,]*).*"p99_ms":([^,]*),"p999_ms":([^,]*).*/tput \1 p50 \2 p99 \3 p999 \4/')"
  top -b -n1 -H -w 200 | awk 'NR>7 && $9>5 {print "   ", $9, $12}' | head -6
done
grep -E 'loading a snapshot|installed a snapshot|saved a snapshot' "$WORK/synod3.log" | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-160
grep -E 'snapshot' "$WORK/synod1.log" "$WORK/synod2.log" | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-160 | tail -8
