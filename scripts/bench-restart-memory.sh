#!/usr/bin/env bash
# The memory a member holds after it restarts by replaying its whole log, next to the members
# that never stopped: a three-member Raft cluster that never snapshots (--snapshot-every 0,
# so the log keeps every entry), PUTS puts of 256 bytes over as many keys by 256 clients, then
# member 2 killed with kill -9 and started again; each member's resident set before, and WAIT
# seconds after the restart.
#
#   scripts/bench-restart-memory.sh                  # PUTS=400000, WAIT=10
#   SYNOD_BUILD=/tmp/synod-other scripts/bench-restart-memory.sh   # another build (or a
#                                                    # wrapper that sets MIMALLOC_* variables)
set -euo pipefail

cd "$(dirname "$0")/.."
PUTS=${PUTS:-400000}
WAIT=${WAIT:-10}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh

resident() {
    local i
    for i in 1 2 3; do
        echo "  member $i: $(awk '/^(VmRSS|RssAnon):/ {printf "%s %d MB  ", $1, $2 / 1024}' \
            "/proc/${SYNOD_PIDS[i - 1]}/status")"
    done
}

SYNOD_FLAGS="--snapshot-every 0" start_synod raft
wait_ready "$SYNOD_ENDPOINTS"
echo "  fill: $(put_load "$SYNOD_ENDPOINTS" "$PUTS" 256 "$PUTS" | field throughput) puts/s"
sleep 2
echo "before the restart"
resident
kill -9 "${SYNOD_PIDS[1]}"
wait "${SYNOD_PIDS[1]}" 2>/dev/null || true
SYNOD_FLAGS="--snapshot-every 0" start_synod_member 2
sleep "$WAIT"
echo "member 2 restarted by replaying its log, $WAIT s later"
resident
