#!/usr/bin/env bash
# cluster.sh - replication figures of the Rust pmxcfs in a 3-node cluster: real
# corosync, one network namespace per node (tests/cluster/lab.sh), one daemon per
# node with its own data dir and mountpoint (in the node's private mount namespace,
# reached through /proc/PID/root).
#
# usage: bench/cluster.sh [--writes N] [--files N] [--size B] [--skip-writes]
#   Needs root. Build first: cargo build --release -p pmxcfs -p pmxcfs-bench
#   (PMXCFS_BIN and CLUSTER_BENCH override the binaries; LAB_TOKEN_MS the totem token,
#   default 1000 ms as in the C reference figures).
#
# Prints: time from start to serving (quorate and writable), cluster-bench's write
# latency / visibility / throughput / CPU figures (not with --skip-writes), the time a new
# empty node needs to receive a tree of --files (default 10,000) files of --size bytes
# (default 500), each node's memory then, and the time `pmxcfs dump` takes on that tree.
# Teardown (also on failure): the daemons by pid, then lab.sh down (namespaces,
# corosyncs, /dev/shm leftovers, the directory).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BIN=$(readlink -f "${PMXCFS_BIN:-${CARGO_TARGET_DIR:-target}/release/pmxcfs}")
BENCH=$(readlink -f "${CLUSTER_BENCH:-${CARGO_TARGET_DIR:-target}/release/cluster-bench}")
WRITES=500
FILES=10000
SIZE=500
SKIP_WRITES=0
while [ $# -gt 0 ]; do
    case $1 in
    --writes) WRITES=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --skip-writes) SKIP_WRITES=1; shift ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
    esac
done
for b in "$BIN" "$BENCH"; do
    [ -x "$b" ] || { echo "cluster.sh: $b missing: cargo build --release -p pmxcfs -p pmxcfs-bench" >&2; exit 1; }
done
work=$(mktemp -d /tmp/pmxcfs-cluster-bench.XXXXXX)
lab=$work/lab
declare -A PID
cleanup() {
    for i in "${!PID[@]}"; do kill -TERM "${PID[$i]}" 2>/dev/null || true; done
    for i in "${!PID[@]}"; do wait "${PID[$i]}" 2>/dev/null || true; done
    "$REPO/tests/cluster/lab.sh" down "$lab" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"$REPO/tests/cluster/lab.sh" up 3 "$lab" >/dev/null

now_ms() { date +%s%3N; }
mnt() { echo "/proc/${PID[$1]}/root$lab/n$1/pmxcfs/mnt"; }
start_node() { # i
    local d=$lab/n$1/pmxcfs
    mkdir -p "$d/mnt" "$d/data" "$d/run" "$d/etc"
    sed '/^system {/,$d' "$lab/n$1/corosync.conf" >"$d/etc/corosync.conf"
    LAB_DIR=$lab "$REPO/tests/cluster/lab.sh" exec "$1" "$BIN" -f --mountpoint "$d/mnt" \
        --data-dir "$d/data" --run-dir "$d/run" --pid-file "$d/pid" --nodename "node$1" \
        --node-ip "10.99.0.$1" --corosync-conf "$d/etc/corosync.conf" \
        >>"$d/log" 2>&1 </dev/null &
    PID[$1]=$!
}
wait_writable() { # i
    local deadline=$(($(date +%s) + 60))
    until grep -q '"quorate": 1' "$(mnt "$1")/.members" 2>/dev/null &&
        echo x >"$(mnt "$1")/.probe-$1" 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "node $1 not writable; log:" >&2; tail -20 "$lab/n$1/pmxcfs/log" >&2; exit 1; }
        sleep 0.005
    done
}
stop_node() { # i
    kill -TERM "${PID[$1]}"
    wait "${PID[$1]}" || true
    unset "PID[$1]"
}

t0=$(now_ms)
for i in 1 2 3; do start_node "$i"; done
for i in 1 2 3; do wait_writable "$i"; done
echo "start to serving (3 fresh nodes, quorate and writable): $(($(now_ms) - t0)) ms"
if [ "$SKIP_WRITES" = 0 ]; then
    "$BENCH" --mounts "$(mnt 1),$(mnt 2),$(mnt 3)" --pids "${PID[1]},${PID[2]},${PID[3]}" --writes "$WRITES"
fi

stop_node 3
t0=$(now_ms)
start_node 3
wait_writable 3
echo "restart of a node (same data dir) to serving: $(($(now_ms) - t0)) ms"

"$BENCH" --fill "$(mnt 1)/fill" --files "$FILES" --size "$SIZE"
last=$(printf 'f%05d' $((FILES - 1)))
"$BENCH" --wait "$(mnt 2)/fill/$last" --timeout-s 120
stop_node 3
rm -rf "$lab/n3/pmxcfs/data"
t0=$(now_ms)
start_node 3
"$BENCH" --wait "$(mnt 3)/fill/$last" --timeout-s 300
echo "new empty node: $FILES files of $SIZE B (+ the rest of the tree) received after $(($(now_ms) - t0)) ms from its start"
memory() { # label
    for i in 1 2 3; do
        echo "node $i memory $1: $(grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/${PID[$i]}/status" | tr -s ' \t' ' ' | tr '\n' ' ')"
    done
}
memory "then"
sleep 5
memory "5 s later"
t0=$(now_ms)
rows=$("$BIN" dump --data-dir "$lab/n2/pmxcfs/data" | wc -l)
echo "pmxcfs dump of node 2's live data dir: $rows rows in $(($(now_ms) - t0)) ms"
