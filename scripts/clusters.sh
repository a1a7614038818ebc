# Shared by the scripts that put Synod next to etcd: a three-member etcd and a three-node
# Synod cluster on loopback (fsync on for both), started in a temporary directory and stopped
# with everything in it when the calling script exits. Source it from the repository's root.
#
# THREADS (default: cores / 3, at least 1) is both etcd's GOMAXPROCS and Synod's --threads,
# so that six servers and the load share the machine evenly. SYNOD_BUILD names a synod
# executable to run instead of this checkout's release build (an older build, to compare).

CORES=$(getconf _NPROCESSORS_ONLN)
THREADS=${THREADS:-$((CORES / 3 > 0 ? CORES / 3 : 1))}
# Both systems keep every revision and refuse writes past their space quota (2 GiB by
# default); the large-value loads write more than that, so both get etcd's largest.
QUOTA_BYTES=${QUOTA_BYTES:-8589934592}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/synod-vs-etcd.XXXXXX")
PIDS=()
ETCD_PIDS=()
SYNOD_PIDS=()
ETCD_ENDPOINTS=127.0.0.1:22379,127.0.0.1:22389,127.0.0.1:22399
SYNOD_ENDPOINTS=127.0.0.1:32379,127.0.0.1:32389,127.0.0.1:32399
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v etcd >/dev/null; then
    echo "installing etcd-server (Debian package)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
if [ -n "${SYNOD_BUILD:-}" ]; then
    SYNOD=$SYNOD_BUILD
else
    cargo build --release -q -p synod
    SYNOD=target/release/synod
fi
TICKS=$(getconf CLK_TCK)

# CPU seconds (user + system) the processes used so far.
cpu_seconds() {
    local total=0
    for pid in "$@"; do
        # Fields 14 and 15 of /proc/PID/stat, counted after the command name's parenthesis.
        local ticks
        if [ ! -r "/proc/$pid/stat" ]; then
            echo "server pid $pid is gone" >&2
            exit 1
        fi
        ticks=$(sed -E 's/^.*\) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + ticks))
    done
    echo "$total $TICKS" | awk '{printf "%.3f", $1 / $2}'
}

# put_load ENDPOINTS TOTAL CLIENTS KEYS: one load of 256-byte puts over KEYS keys, its JSON line.
put_load() {
    $SYNOD bench put --endpoints "$1" --total "$2" --clients "$3" --value-size 256 \
        --key-space "$4" --format json 2>/dev/null
}

# One field of bench's JSON line.
field() { sed -E "s/.*\"$1\":([^,}]*).*/\1/"; }

wait_ready() {
    local endpoints=$1
    for _ in $(seq 1 100); do
        if $SYNOD put bench/ready 1 --endpoints "$endpoints" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "the cluster at $endpoints did not come up" >&2
    exit 1
}

start_etcd() {
    local cluster="e1=http://127.0.0.1:22380,e2=http://127.0.0.1:22390,e3=http://127.0.0.1:22400"
    for i in 1 2 3; do
        local client=$((22379 + (i - 1) * 10)) peer=$((22380 + (i - 1) * 10))
        GOMAXPROCS=$THREADS etcd --name "e$i" --data-dir "$WORK/etcd$i" \
            --listen-client-urls "http://127.0.0.1:$client" \
            --advertise-client-urls "http://127.0.0.1:$client" \
            --listen-peer-urls "http://127.0.0.1:$peer" \
            --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token bench --log-level error \
            --quota-backend-bytes "$QUOTA_BYTES" \
            >"$WORK/etcd$i.log" 2>&1 &
        PIDS+=($!)
        ETCD_PIDS+=($!)
    done
}

# start_synod [PROTOCOL]: three Synod nodes running PROTOCOL (default raft), on fresh data,
# each with the flags in SYNOD_FLAGS as well.
start_synod() {
    local protocol=${1:-raft}
    SYNOD_PIDS=()
    for i in 1 2 3; do
        rm -rf "$WORK/synod$i"
        start_synod_member "$i" "$protocol"
    done
}

# start_synod_member ID [PROTOCOL]: (re)starts one member of start_synod's cluster on the data
# it has; its pid replaces the old one in SYNOD_PIDS.
start_synod_member() {
    local i=$1 protocol=${2:-raft}
    local cluster="1=127.0.0.1:32380,2=127.0.0.1:32390,3=127.0.0.1:32400"
    local client=$((32379 + (i - 1) * 10))
    local flags
    read -r -a flags <<<"${SYNOD_FLAGS:-}"
    RUST_LOG=${RUST_LOG:-warn} $SYNOD server --id "$i" --initial-cluster "$cluster" \
        --threads "$THREADS" --listen-client "127.0.0.1:$client" --data-dir "$WORK/synod$i" \
        --protocol "$protocol" --quota-backend-bytes "$QUOTA_BYTES" "${flags[@]}" \
        >>"$WORK/synod$i.log" 2>&1 &
    PIDS+=($!)
    SYNOD_PIDS[i - 1]=$!
}

# stop_pids PID...: stops the processes and waits for them to go.
stop_pids() {
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
}

# Stops the etcd members start_etcd started, and waits for them to go.
stop_etcd() {
    stop_pids "${ETCD_PIDS[@]}"
    ETCD_PIDS=()
}

# Stops the Synod nodes start_synod started, and waits for them to go.
stop_synod() {
    stop_pids "${SYNOD_PIDS[@]}"
    SYNOD_PIDS=()
}

# Every one of the servers must still run: one that could not start (a port already taken,
# say) would leave the load measuring something else.
check_running() {
    for pid in "$@"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "a server (pid $pid) exited; the logs end:" >&2
            tail -n 5 "$WORK"/*.log >&2
            exit 1
        fi
    done
}

# measure WORKLOAD CLIENTS TOTAL CONNS VALUE_SIZE KEYS ENDPOINTS PID...: one `synod bench` row
# against ENDPOINTS (with BENCH_FLAGS, if set, as further flags); prints throughput, p50, p99
# and p99.9 (ms), the CPU of the PIDs per operation counted (ms) and the errors.
measure() {
    local workload=$1 clients=$2 total=$3 conns=$4 size=$5 keys=$6 endpoints=$7
    shift 7
    local before after out flags
    read -r -a flags <<<"${BENCH_FLAGS:-}"
    before=$(cpu_seconds "$@")
    out=$($SYNOD bench "$workload" --endpoints "$endpoints" --clients "$clients" --conns "$conns" \
        --total "$total" --value-size "$size" --key-space "$keys" --format json "${flags[@]}")
    after=$(cpu_seconds "$@")
    local ok
    ok=$(echo "$out" | field ok)
    echo "$(echo "$out" | field throughput) $(echo "$out" | field p50_ms) $(echo "$out" | field p99_ms) $(echo "$out" | field p999_ms) $(echo "$before $after $ok" | awk '{printf "%.6f", ($2 - $1) * 1000 / ($3 > 0 ? $3 : 1)}') $(echo "$out" | field errors)"
}

# warm_and_measure: the same, after a tenth of the load to warm the servers.
warm_and_measure() {
    local workload=$1 clients=$2 total=$3 conns=$4 size=$5 keys=$6 endpoints=$7
    $SYNOD bench "$workload" --endpoints "$endpoints" --clients "$clients" --conns "$conns" \
        --total $((total / 10 + 1)) --value-size "$size" --key-space "$keys" --format json >/dev/null
    measure "$@"
}

# compare_header CPU_UNIT: the head of a table that sets Synod's rows next to etcd's, with CPU
# per operation in CPU_UNIT (ms or us).
compare_header() {
    printf "%-26s | %-48s | %-48s | %s\n" "" "etcd $(etcd --version | awk '/etcd Version/ {print $3}')" "synod $($SYNOD --version | awk '{print $2}')" "synod / etcd"
    printf "%-26s | %9s %7s %7s %7s %8s %5s | %9s %7s %7s %7s %8s %5s | %6s %6s %6s\n" \
        "protocol, load" "ops/s" "p50ms" "p99ms" "p999ms" "cpu $1" "err" "ops/s" "p50ms" "p99ms" "p999ms" "cpu $1" "err" "tput" "p99" "cpu"
}

# compare_row NAME ETCD SYNOD [CPU_SCALE]: one row of that table from two of measure's lines,
# CPU (measured in ms) times CPU_SCALE (1000 for us), and Synod's ratios to etcd.
compare_row() {
    local name=$1 scale=${4:-1}
    local et ep50 ep99 ep999 ecpu eerr st sp50 sp99 sp999 scpu serr
    read -r et ep50 ep99 ep999 ecpu eerr <<<"$2"
    read -r st sp50 sp99 sp999 scpu serr <<<"$3"
    printf "%-26s | %9.0f %7.2f %7.2f %7.2f %8.3f %5d | %9.0f %7.2f %7.2f %7.2f %8.3f %5d | %6.2f %6.2f %6.2f\n" \
        "$name" "$et" "$ep50" "$ep99" "$ep999" "$(echo "$ecpu $scale" | awk '{print $1 * $2}')" "$eerr" \
        "$st" "$sp50" "$sp99" "$sp999" "$(echo "$scpu $scale" | awk '{print $1 * $2}')" "$serr" \
        "$(echo "$st $et" | awk '{print $1 / $2}')" "$(echo "$sp99 $ep99" | awk '{print ($2 > 0 ? $1 / $2 : 0)}')" \
        "$(echo "$scpu $ecpu" | awk '{print ($2 > 0 ? $1 / $2 : 0)}')"
}
