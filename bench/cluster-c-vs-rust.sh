#!/usr/bin/env bash
# cluster-c-vs-rust.sh - the write patterns Proxmox VE uses in a cluster, against
# Proxmox's C pmxcfs and ours in the same lab and the same run: 3 real corosync
# nodes in network namespaces (tests/cluster/lab.sh), the same token; ROUNDS rounds,
# each starting 3 fresh C daemons, running `cluster-bench --pve`, stopping them, then
# the same with 3 of ours (fresh data dirs).
#
# usage: bench/cluster-c-vs-rust.sh C_PMXCFS [--writes N] [--rounds R] [--tree FILES:BYTES]
#   Needs root. C_PMXCFS: a C pmxcfs built outside this repository (src/pmxcfs of
#   Proxmox's pve-cluster). Build ours first: cargo build --release -p pmxcfs -p pmxcfs-bench
#   (PMXCFS_BIN and CLUSTER_BENCH override the binaries; LAB_TOKEN_MS the token).
#
# Prints each run's figures (cluster-bench --pve: atomic config write with readers on
# nodes 2 and 3, new file, cfs_lock mkdir/rmdir, atomic writes/s) and the medians.
# With --tree (--rounds 0 for it alone): per implementation, node 1 fills FILES files of
# BYTES bytes, then node 3 starts again on an empty data dir; prints the fill rate, the
# time until node 3 has the whole tree, and each daemon's memory then.
# Teardown (also on failure): daemons by pid, then lab.sh down.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
[ $# -ge 1 ] || { sed -n '2,19p' "$0" >&2; exit 2; }
C_BIN=$(readlink -f "$1")
shift
BIN=$(readlink -f "${PMXCFS_BIN:-${CARGO_TARGET_DIR:-target}/release/pmxcfs}")
BENCH=$(readlink -f "${CLUSTER_BENCH:-${CARGO_TARGET_DIR:-target}/release/cluster-bench}")
WRITES=300
ROUNDS=3
TREE=
while [ $# -gt 0 ]; do
    case $1 in
    --tree) TREE=$2; shift 2 ;;
    --writes) WRITES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) sed -n '2,19p' "$0" >&2; exit 2 ;;
    esac
done
for b in "$C_BIN" "$BIN" "$BENCH"; do
    [ -x "$b" ] || { echo "cluster-c-vs-rust.sh: $b missing" >&2; exit 1; }
done
work=$(mktemp -d /tmp/pmxcfs-cluster-cvr.XXXXXX)
LAB=$REPO/tests/cluster/lab.sh
export LAB_DIR=$work/lab
declare -A PID=()
# shellcheck source=tests/cluster/daemons.sh
. "$REPO/tests/cluster/daemons.sh"
running() { # pid: exists and is no zombie
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ]
}
stop_all() { # TERM, then KILL what has not exited after 10 s (a C daemon can hang there)
    local i t
    for i in "${!PID[@]}"; do kill -TERM "${PID[$i]}" 2>/dev/null || true; done
    for i in "${!PID[@]}"; do
        t=0
        while running "${PID[$i]}" && [ $t -lt 100 ]; do sleep 0.1; t=$((t + 1)); done
        if running "${PID[$i]}"; then
            echo "node $i: pid ${PID[$i]} ignored TERM for 10 s, killed" >&2
            kill -KILL "${PID[$i]}" 2>/dev/null || true
        fi
        wait "${PID[$i]}" 2>/dev/null || true
    done
    PID=()
}
cleanup() {
    stop_all
    "$LAB" down "$LAB_DIR" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"$LAB" up 3 "$LAB_DIR" >/dev/null

quorate() { # mount
    grep -q '"quorate": 1' "$1/.members" 2>/dev/null
}

mount_of() { # impl node dir
    if [ "$1" = C ]; then
        echo "/proc/${PID[$2]}/root/etc/pve"
    else
        echo "/proc/${PID[$2]}/root$3/mnt"
    fi
}
start_node() { # impl node dir
    if [ "$1" = C ]; then
        c_prepare "$2" "$3"
        c_start "$2" "$3" "$C_BIN"
    else
        rust_prepare "$2" "$3"
        rust_start "$2" "$3" "$BIN"
    fi
}
wait_quorate() { # mount node dir impl
    local t=0
    until quorate "$1"; do
        t=$((t + 1))
        [ $t -lt 600 ] || { echo "$4 node $2 not quorate" >&2; tail -20 "$3/pmxcfs.log" >&2; exit 1; }
        sleep 0.05
    done
}
# Starts the three daemons of IMPL on dirs TAG; sets mounts[] and pids[].
start_cluster() { # impl tag
    local impl=$1 i dir
    mounts=() pids=()
    for i in 1 2 3; do start_node "$impl" "$i" "$LAB_DIR/n$i/$impl-$2"; done
    for i in 1 2 3; do
        dir=$LAB_DIR/n$i/$impl-$2
        mounts+=("$(mount_of "$impl" "$i" "$dir")")
        pids+=("${PID[$i]}")
        wait_quorate "${mounts[-1]}" "$i" "$dir" "$impl"
    done
    # Every node writable (the group synchronised).
    for i in 0 1 2; do
        local t=0
        until echo ok 2>/dev/null >"${mounts[$i]}/ready-$i"; do
            t=$((t + 1))
            [ $t -lt 600 ] || { echo "$impl node $((i + 1)) not writable" >&2; exit 1; }
            sleep 0.05
        done
    done
}

run() { # impl round
    local impl=$1 round=$2
    start_cluster "$impl" "$round"
    echo "--- $impl, round $round"
    "$BENCH" --pve --writes "$WRITES" --mounts "$(IFS=,; echo "${mounts[*]}")" \
        --pids "$(IFS=,; echo "${pids[*]}")" | tee "$work/$impl-$round.txt"
    stop_all
}

memory() { # impl label
    local i
    for i in 1 2 3; do
        echo "$1 node $i memory $2: $(grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/${PID[$i]}/status" | tr -s ' \t' ' ' | tr '\n' ' ')"
    done
}

# A tree of FILES x BYTES filled on node 1, then received by an emptied node 3.
tree() { # impl
    local impl=$1 files=${TREE%%:*} size=${TREE##*:} dir3 last t0 t
    start_cluster "$impl" tree
    echo "--- $impl, a tree of $files files of $size B"
    "$BENCH" --fill "${mounts[0]}/fill" --files "$files" --size "$size"
    last=$(printf 'f%05d' $((files - 1)))
    "$BENCH" --wait "${mounts[1]}/fill/$last" --timeout-s 600 >/dev/null
    memory "$impl" "after the fill"
    dir3=$LAB_DIR/n3/$impl-tree
    kill -TERM "${PID[3]}"
    t=0
    while running "${PID[3]}" && [ $t -lt 100 ]; do sleep 0.1; t=$((t + 1)); done
    running "${PID[3]}" && kill -KILL "${PID[3]}"
    wait "${PID[3]}" 2>/dev/null || true
    rm -rf "$dir3/data"
    t0=$(date +%s%3N)
    start_node "$impl" 3 "$dir3"
    "$BENCH" --wait "$(mount_of "$impl" 3 "$dir3")/fill/$last" --timeout-s 600 >/dev/null
    echo "$impl new empty node: the tree received after $(($(date +%s%3N) - t0)) ms from its start"
    sleep 1
    memory "$impl" "1 s later"
    stop_all
}

for round in $(seq 1 "$ROUNDS"); do
    run C "$round"
    run Rust "$round"
done
if [ -n "$TREE" ]; then
    tree C
    tree Rust
fi
[ "$ROUNDS" -gt 0 ] || exit 0

# Medians over the rounds: "name p50 p99" per latency line, writes/s lines.
echo
echo "=== medians over $ROUNDS rounds (C | ours)"
python3 - "$work" "$ROUNDS" <<'PY'
import re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def parse(path):
    out = {}
    for line in open(path):
        m = re.match(r"(.+?)\s+n=\d+\s+p50=\s*([\d.]+) µs\s+p99=\s*([\d.]+) µs", line)
        if m:
            out[m.group(1).strip()] = (float(m.group(2)), float(m.group(3)))
            continue
        m = re.match(r"(.+?)\s+([\d.]+) writes/s", line)
        if m:
            out[m.group(1).strip()] = (float(m.group(2)),)
            continue
        m = re.match(r"(.+?)\s+(\d+) reads failed", line)
        if m:
            out[m.group(1).strip()] = (float(m.group(2)), "reads failed")
    return out
runs = {impl: [parse(f"{work}/{impl}-{r}.txt") for r in range(1, rounds + 1)] for impl in ("C", "Rust")}
for key in runs["C"][0]:
    def med(impl, i):
        return statistics.median(r[key][i] for r in runs[impl] if key in r)
    if runs["C"][0][key][-1] == "reads failed":
        print(f"{key:<30} {med('C', 0):9.0f} | {med('Rust', 0):9.0f} reads failed")
    elif len(runs["C"][0][key]) == 2:
        c50, r50, c99, r99 = med("C", 0), med("Rust", 0), med("C", 1), med("Rust", 1)
        print(f"{key:<30} p50 {c50:9.0f} | {r50:9.0f} µs  (C/ours {c50 / max(r50, 1):4.2f})   p99 {c99:9.0f} | {r99:9.0f} µs")
    else:
        c, r = med("C", 0), med("Rust", 0)
        print(f"{key:<30} {c:9.0f} | {r:9.0f} writes/s  (ours/C {r / max(c, 1):4.2f})")
PY
