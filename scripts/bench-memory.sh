#!/usr/bin/env bash
# One `synod bench put` load on a fresh three-member Synod cluster, with each member's
# resident memory read once a second: prints the load's figures, then each member's peak RSS.
#
#   scripts/bench-memory.sh multi-paxos 256 40960 256     # PROTOCOL CLIENTS TOTAL VALUE_BYTES
#   scripts/bench-memory.sh raft 256 1024 1000000         # values near the request limit
set -euo pipefail

cd "$(dirname "$0")/.."
PROTOCOL=${1:-raft}
CLIENTS=${2:-256}
TOTAL=${3:-40960}
VALUE_BYTES=${4:-256}
# shellcheck source=scripts/clusters.sh
source scripts/clusters.sh

start_synod "$PROTOCOL"
ENDPOINTS=127.0.0.1:32379,127.0.0.1:32389,127.0.0.1:32399
wait_ready "$ENDPOINTS"
(
    while true; do
        ps -o rss= -p "${SYNOD_PIDS[@]}" | tr '\n' ' ' >>"$WORK/rss"
        echo >>"$WORK/rss"
        sleep 1
    done
) &
SAMPLER=$!
$SYNOD bench put --endpoints "$ENDPOINTS" --clients "$CLIENTS" --total "$TOTAL" \
    --value-size "$VALUE_BYTES" --key-space 100000 || echo "the load reported errors"
kill "$SAMPLER"
awk '{ for (i = 1; i <= NF; i++) if ($i > peak[i]) peak[i] = $i }
     END { printf "peak RSS per member (MB):"; for (i = 1; i <= 3; i++) printf " %d", peak[i] / 1024; print "" }' "$WORK/rss"
check_running "${SYNOD_PIDS[@]}"
stop_synod
