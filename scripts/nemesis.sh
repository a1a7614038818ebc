#!/usr/bin/env bash
# Synod's real-host nemesis: every member in a network namespace of its own, partitions,
# one-way cuts, packet loss and delay, pauses, kills and clock skew under a checked load
# (`synod nemesis --help` has every flag). Needs root. Builds the release binary first.
#
#   scripts/nemesis.sh --protocol raft --faults partition-leader,kill,pause,netem --time 120
#   scripts/nemesis.sh --protocol all --time 60        # every protocol, one after another
#   scripts/nemesis.sh --long                          # every protocol for 30 minutes, at once
#
# --protocol takes one protocol, a comma-separated list, or `all`. --long runs the protocols
# side by side (each on its own hosts, so they do not share a network), 30 minutes of faults
# each, at a paced load (200 operations a second each) so the histories stay checkable, with
# frequent snapshots; every run's output goes to nemesis-<protocol>.txt under --out (default
# ./nemesis-runs), and the summaries are printed at the end. Other flags go to every run.
set -euo pipefail
cd "$(dirname "$0")/.."

protocols=raft
long=no
out=nemesis-runs
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --protocol) protocols="$2"; shift 2 ;;
        --protocol=*) protocols="${1#*=}"; shift ;;
        --long) long=yes; shift ;;
        --out) out="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ "$protocols" = all ] || { [ "$long" = yes ] && [ "$protocols" = raft ]; }; then
    protocols="raft,multi-paxos,basic-paxos,zab,sync,dns,gossip"
fi
if [ "$(id -u)" != 0 ]; then
    echo "nemesis.sh: the nemesis makes network namespaces and firewall rules; run it as root" >&2
    exit 2
fi

echo "== building synod (release)"
cargo build --release -q -p synod
synod=target/release/synod

failed=0
if [ "$long" = no ]; then
    for protocol in ${protocols//,/ }; do
        echo "== nemesis: $protocol"
        "$synod" nemesis --protocol "$protocol" "${args[@]}" || failed=1
    done
    exit $failed
fi

mkdir -p "$out"
pids=()
for protocol in ${protocols//,/ }; do
    echo "== nemesis: $protocol for 30 minutes, output in $out/nemesis-$protocol.txt"
    "$synod" nemesis --protocol "$protocol" --time 1800 --rate 200 --snapshot-every 5000 \
        "${args[@]}" >"$out/nemesis-$protocol.txt" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
for protocol in ${protocols//,/ }; do
    echo "== $protocol"
    sed -n '/^synod nemesis:/p;/^summary/,$p' "$out/nemesis-$protocol.txt"
done
exit $failed
