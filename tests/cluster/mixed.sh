#!/bin/bash
# A MIXED cluster: 3 real corosync nodes (tests/cluster/lab.sh), nodes 1 and 2
# run this repository's Rust pmxcfs, node 3 runs Proxmox's C pmxcfs. Checks that
# the two implementations replicate to each other in both directions, take each
# other's cluster-wide locks, resync each other after restarts (Rust leader -> C,
# C leader -> Rust) and stay converged under concurrent writers. Root only.
#
#   mixed.sh C_PMXCFS_BINARY
#
# The C binary is NOT part of this repository: build src/pmxcfs of Proxmox's
# pve-cluster outside this tree and pass its path. The Rust binary is
# target/debug/pmxcfs (override with RUST_PMXCFS=...; build it with
# `cargo build --bin pmxcfs`); it is copied to the work directory first, so a
# rebuild during the run cannot mix versions across restarts.
#
# Rust node I runs in node I's network namespace on LAB/nI/pmxcfs/{mnt,data,run}
# with LAB/nI/pmxcfs/etc/corosync.conf (the lab's config without its per-node
# `system` section: identical on all nodes). Its mount lives in its private mount
# namespace and is reached as /proc/PID/root/LAB/nI/pmxcfs/mnt.
# The C daemon has fixed paths, so it runs in node 3's network namespace plus a
# private mount and UTS namespace (hostname node3): /run is a tmpfs,
# /var/lib/pve-cluster is a bind mount of LAB/n3/cpmxcfs/data (the database
# outlives the daemon, so restarts resync an existing node), /etc/hosts and
# /etc/corosync/corosync.conf are bind mounts of files in LAB/n3/cpmxcfs (a
# missing mountpoint is created in a tmpfs-backed overlay of its parent; nothing of
# the host's is written). Its mount is /proc/PID/root/etc/pve.
#
# Checks, each with a timeout (MIXED_WAIT_S, default 30 s, polled every 50 ms):
# quorate everywhere; create/rewrite/mkdir/rename/unlink/rmdir on either side seen
# on the others; priv/lock dirs exclusive across implementations (EEXIST); equal
# trees (paths, types, sha256 of every file; root dot-files are per node) and
# equal store rows (inode, parent, version, writer, mtime, type, content of every
# row of the Rust stores (`pmxcfs dump`) and of the C config.db; needs python3);
# C stopped -> writes on Rust -> C restarted catches up; Rust node stopped ->
# writes on C -> catches up (Rust leader); both Rust stopped -> writes on the lone
# C node -> node 2 restarted (C is the sync leader) -> node 1 restarted (Rust node 2
# leads); 3 s of concurrent writers on all nodes, then converged; 2 s idle: no new
# sync round, no errors or warnings in any daemon's log.
# Prints what it checked and a timing summary; exits non-zero on the first failure
# (with the tails of all daemons' logs).
#
# Teardown (also on failure or Ctrl-C): every daemon by pid (SIGTERM, SIGKILL after
# 5 s), then `lab.sh down` (namespaces, corosyncs, lab dir). MIXED_KEEP=1 keeps the
# lab directory with all logs; MIXED_VERBOSE=1 prints every wait and its duration.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[ $# -eq 1 ] || usage
case $1 in -h | --help) usage ;; esac
[ "$(id -u)" = 0 ] || { echo "mixed.sh: needs root" >&2; exit 1; }
[ -f "$1" ] && [ -x "$1" ] || { echo "mixed.sh: $1: not an executable" >&2; exit 1; }
C_PMXCFS=$(readlink -f "$1")

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LAB=$HERE/lab.sh
RUST_PMXCFS=$(readlink -f "${RUST_PMXCFS:-${CARGO_TARGET_DIR:-$REPO/target}/debug/pmxcfs}")
[ -x "$RUST_PMXCFS" ] || { echo "mixed.sh: $RUST_PMXCFS missing: cargo build --bin pmxcfs" >&2; exit 1; }
WAIT_S=${MIXED_WAIT_S:-30}
KEEP=${MIXED_KEEP:-0}
VERBOSE=${MIXED_VERBOSE:-0}
HAVE_PY=0
command -v python3 >/dev/null 2>&1 && python3 -c 'import sqlite3, json, hashlib' 2>/dev/null && HAVE_PY=1
export LC_ALL=C

WORK=$(mktemp -d /tmp/pmxcfs-mixed.XXXXXX)
export LAB_DIR=$WORK/lab
LAB_UP=0
declare -A PID=()     # node -> daemon pid (running), empty when stopped
declare -a TIMINGS=() # "what: ms"
declare -a CONC=()    # concurrent writer subshells
C_NODE=3

now_ms() { date +%s%3N; }
T0=$(now_ms)
say() { printf '[%6.1fs] %s\n' "$(awk -v a="$(now_ms)" -v b="$T0" 'BEGIN { print (a - b) / 1000 }')" "$*"; }
timing() { TIMINGS+=("$(printf '%-66s %7d ms' "$1" "$2")"); }

kind() { [ "$1" = "$C_NODE" ] && echo C || echo Rust; }
node_dir() { if [ "$1" = "$C_NODE" ]; then echo "$LAB_DIR/n$1/cpmxcfs"; else echo "$LAB_DIR/n$1/pmxcfs"; fi; }
log_of() { echo "$(node_dir "$1")/pmxcfs.log"; }

# The node's pmxcfs mount, through its daemon's mount namespace.
mnt() {
    local pid=${PID[$1]:-}
    [ -n "$pid" ] || { echo "/nonexistent/node$1-is-stopped"; return; }
    if [ "$1" = "$C_NODE" ]; then
        echo "/proc/$pid/root/etc/pve"
    else
        echo "/proc/$pid/root$(node_dir "$1")/mnt"
    fi
}

# Running (not a zombie waiting for us).
alive() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "${st%% *}" != Z ]
}

dump_logs() {
    local i
    for i in 1 2 3; do
        [ -s "$(log_of "$i")" ] || continue
        echo "--- node $i ($(kind "$i") pmxcfs) log, last 40 lines: $(log_of "$i")" >&2
        tail -n 40 "$(log_of "$i")" >&2
    done
}

fail() {
    echo "mixed.sh: FAILED: $*" >&2
    dump_logs
    exit 1
}

# Every daemon that should run still does.
check_alive() {
    local i
    for i in "${!PID[@]}"; do
        [ -n "${PID[$i]}" ] || continue
        alive "${PID[$i]}" || fail "node $i ($(kind "$i") pmxcfs, pid ${PID[$i]}) died"
    done
}

# wait_for DESCRIPTION CMD...: until CMD succeeds, every 50 ms, WAIT_S at most.
# Sets WAITED_MS. ON_TIMEOUT=CMD: its output goes into the failure message.
wait_for() {
    local what=$1 start deadline
    shift
    start=$(now_ms)
    deadline=$((start + WAIT_S * 1000))
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] ||
            fail "timed out after ${WAIT_S} s waiting for: $what${ON_TIMEOUT:+ (now: $($ON_TIMEOUT 2>&1))}"
        check_alive
        sleep 0.05
    done
    WAITED_MS=$(($(now_ms) - start))
    [ "$VERBOSE" != 1 ] || say "    ${WAITED_MS} ms: $what"
}

# --- daemons --------------------------------------------------------------

# shellcheck source=tests/cluster/daemons.sh
. "$HERE/daemons.sh"
prepare_rust() { rust_prepare "$1" "$(node_dir "$1")"; }
prepare_c() { c_prepare "$C_NODE" "$(node_dir "$C_NODE")"; }
start_rust() { rust_start "$1" "$(node_dir "$1")" "$RUST_PMXCFS"; }
start_c() { c_start "$C_NODE" "$(node_dir "$C_NODE")" "$C_PMXCFS"; }

# SIGTERM, SIGKILL after 5 s; always reaped. Sets STOP_MS and STOP_HOW.
stop_node() { # node
    local pid=${PID[$1]:-} start i=0
    STOP_HOW=none
    STOP_MS=0
    [ -n "$pid" ] || return 0
    start=$(now_ms)
    STOP_HOW=TERM
    kill -TERM "$pid" 2>/dev/null || true
    while alive "$pid" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    if alive "$pid"; then
        echo "mixed.sh: node $1 ($(kind "$1") pmxcfs, pid $pid) ignored SIGTERM for 5 s: SIGKILL" >&2
        STOP_HOW=KILL
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    PID[$1]=
    STOP_MS=$(($(now_ms) - start))
    echo "=== stopped pid $pid by $STOP_HOW at $(date '+%T.%N')" >>"$(log_of "$1")"
}

cleanup() {
    local status=$? i
    trap - EXIT INT TERM HUP
    set +e
    for i in "${CONC[@]}"; do kill "$i" 2>/dev/null && wait "$i" 2>/dev/null; done
    for i in 1 2 3; do stop_node "$i"; done
    if [ "$LAB_UP" = 1 ] || [ -f "$LAB_DIR/tag" ]; then
        LAB_KEEP=$KEEP "$LAB" down "$LAB_DIR" || status=1
    fi
    if [ "$KEEP" = 1 ]; then
        echo "mixed.sh: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A private copy: a rebuild during the run must not mix versions across restarts.
cp "$RUST_PMXCFS" "$WORK/pmxcfs-rust"
RUST_ORIG=$RUST_PMXCFS
RUST_PMXCFS=$WORK/pmxcfs-rust

# --- file system probes ---------------------------------------------------

quorate() { grep -Eq '"quorate": *1' "$(mnt "$1")/.members"; }

# has NODE REL REFFILE: REL on NODE has exactly REFFILE's content.
has() { cmp -s "$3" "$(mnt "$1")/$2"; }
absent() { [ ! -e "$(mnt "$1")/$2" ] && [ ! -L "$(mnt "$1")/$2" ]; }
is_dir() { [ -d "$(mnt "$1")/$2" ]; }

REF=$WORK/ref
mkdir -p "$REF"
ref() { # NAME CONTENT -> path of a reference file
    printf '%s' "$2" >"$REF/$1"
    echo "$REF/$1"
}

# put NODE REL REFFILE: write REFFILE's content to REL on NODE (fails loudly)
put() {
    cat "$3" >"$(mnt "$1")/$2" || fail "write of $2 on node $1 ($(kind "$1")) failed"
}
# write NODE REL CONTENT (fails loudly)
write() {
    printf '%s' "$3" >"$(mnt "$1")/$2" || fail "write of $2 on node $1 ($(kind "$1")) failed"
}

others() { # node -> the other running nodes
    local i
    for i in 1 2 3; do
        [ "$i" != "$1" ] && [ -n "${PID[$i]:-}" ] && echo "$i"
    done
    return 0
}

# seen_everywhere FROM REL REFFILE: REL with REFFILE's content on every other running node.
seen_everywhere() {
    local i total=0
    for i in $(others "$1"); do
        wait_for "$2 (written on node $1, $(kind "$1")) on node $i ($(kind "$i"))" has "$i" "$2" "$3"
        total=$((total + WAITED_MS))
    done
    WAITED_MS=$total
}
gone_everywhere() { # FROM REL
    local i
    for i in $(others "$1"); do
        wait_for "$2 (removed on node $1, $(kind "$1")) gone on node $i ($(kind "$i"))" absent "$i" "$2"
    done
}
dir_everywhere() { # FROM REL
    local i
    for i in $(others "$1"); do
        wait_for "dir $2 (made on node $1, $(kind "$1")) on node $i ($(kind "$i"))" is_dir "$i" "$2"
    done
}

# Paths and types of the tree (root dot-files are per-node plugins; symlinks
# such as `local` point at the node's own directory) and the sha256 of every file.
manifest() { # node
    local m
    m=$(mnt "$1")
    (
        cd "$m" || exit 1
        find . -path './.*' -prune -o -type d -printf 'd %p\n' | sort
        find . -path './.*' -prune -o -type f -print0 | sort -z | xargs -0r sha256sum
    )
}

trees_equal() {
    local first="" i m
    for i in 1 2 3; do
        [ -n "${PID[$i]:-}" ] || continue
        m=$(manifest "$i") || return 1
        if [ -z "$first" ]; then
            first=$m
        else
            [ "$m" = "$first" ] || return 1
        fi
    done
}

# wait_converged WHAT: equal trees on all running nodes, or fail with the diff.
wait_converged() {
    local start deadline i
    start=$(now_ms)
    deadline=$((start + WAIT_S * 1000))
    until trees_equal; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            for i in 1 2 3; do
                [ -n "${PID[$i]:-}" ] && manifest "$i" >"$WORK/manifest.$i" 2>&1
            done
            echo "mixed.sh: trees differ ($1):" >&2
            for i in 2 3; do
                [ -f "$WORK/manifest.$i" ] && { echo "--- node 1 vs node $i" >&2; diff "$WORK/manifest.1" "$WORK/manifest.$i" | head -n 40 >&2; }
            done
            fail "trees not converged within ${WAIT_S} s ($1)"
        fi
        check_alive
        sleep 0.05
    done
    CONVERGED_AT=$(now_ms)
    WAITED_MS=$((CONVERGED_AT - start))
    local running=""
    for i in 1 2 3; do [ -z "${PID[$i]:-}" ] || running="$running $i"; done
    set -- "$1" $running
    say "  trees equal on nodes ${*:2} ($(manifest "$2" | wc -l) entries) after ${WAITED_MS} ms ($1)"
}

# The sync leaders NODE's log names since NODE's daemon started ("leader is ID/PID",
# the same line in both implementations' logs).
leaders_since_start() {
    awk '/^=== started/ { buf = "" } /leader is/ { buf = buf $0 "\n" } END { printf "%s", buf }' "$(log_of "$1")" |
        grep -Eo 'leader is [0-9]+/[0-9]+' | tr '\n' ',' | sed 's/,$//; s/,/, /g'
}
# wait_for_leader NODE LEADER: NODE's current daemon synced with LEADER's current
# daemon as the leader. Sets LEADER_LINE.
led_by() { leaders_since_start "$1" | grep -Eq "leader is $2/${PID[$2]}(,|\$)"; }
wait_for_leader() {
    ON_TIMEOUT="leaders_since_start $1" wait_for \
        "node $1 ($(kind "$1")) synced with node $2 ($(kind "$2"), pid ${PID[$2]}) as the leader" led_by "$1" "$2"
    LEADER_LINE="node $1's log since its start: $(leaders_since_start "$1"); node $2 is $(kind "$2") pid ${PID[$2]}"
}

# The rows of NODE's store, one a line: inode parent version writer mtime type
# size sha256 name. Rust: `pmxcfs dump`; C: its sqlite config.db (read-only,
# beside the running daemon). Needs python3 (json, sqlite3, hashlib). The type of
# the version row (inode 0) is left out: a resync writes it as 4, the next write
# as 8, in both implementations (docs/store.md).
store_rows() {
    if [ "$1" = "$C_NODE" ]; then
        python3 - "$(node_dir "$1")/data/config.db" <<'PY'
import hashlib, sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=5)
for r in db.execute("SELECT inode, parent, version, writer, mtime, type, name, data FROM tree ORDER BY inode"):
    data = r[7] or b""
    r = list(r)
    if r[0] == 0:
        r[5] = "-"
    print(*r[:6], len(data), hashlib.sha256(data).hexdigest(), r[6])
PY
    else
        "$RUST_PMXCFS" dump --data-dir "$(node_dir "$1")/data" 2>/dev/null | python3 -c '
import json, sys
rows = sorted((json.loads(l) for l in sys.stdin), key=lambda r: r["inode"])
for r in rows:
    if r["inode"] == 0:
        r["type"] = "-"
    print(r["inode"], r["parent"], r["version"], r["writer"], r["mtime"], r["type"], r["size"], r["sha256"], r["name"])
'
    fi
}

stores_equal() {
    local first="" i rows
    for i in 1 2 3; do
        [ -n "${PID[$i]:-}" ] || continue
        rows=$(store_rows "$i") && [ -n "$rows" ] || return 1
        if [ -z "$first" ]; then first=$rows; else [ "$rows" = "$first" ] || return 1; fi
    done
}

# wait_stores_equal WHAT: the databases of all running nodes have the same rows
# (inode numbers, versions, writers, mtimes, contents), or fail with the diff.
wait_stores_equal() {
    local start deadline i running=""
    if [ "$HAVE_PY" != 1 ]; then
        say "  (no python3: store rows not compared)"
        return 0
    fi
    for i in 1 2 3; do [ -z "${PID[$i]:-}" ] || running="$running $i"; done
    start=$(now_ms)
    deadline=$((start + WAIT_S * 1000))
    until stores_equal; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            for i in $running; do store_rows "$i" >"$WORK/rows.$i" 2>&1; done
            set -- "$1" $running
            echo "mixed.sh: store rows differ ($1); columns: inode parent version writer mtime type size sha256 name" >&2
            for i in "${@:3}"; do
                echo "--- node $2 ($(kind "$2")) vs node $i ($(kind "$i"))" >&2
                diff "$WORK/rows.$2" "$WORK/rows.$i" | head -n 40 >&2
            done
            fail "store rows not equal within ${WAIT_S} s ($1)"
        fi
        check_alive
        sleep 0.05
    done
    WAITED_MS=$(($(now_ms) - start))
    set -- "$1" $running
    say "  store rows equal on nodes ${*:2} ($(store_rows "$2" | wc -l) rows: inode, parent, version, writer, mtime, type, content; compared in ${WAITED_MS} ms) ($1)"
}

# mkdir_fails_eexist NODE REL
mkdir_fails_eexist() {
    local out
    if out=$(mkdir "$(mnt "$1")/$2" 2>&1); then
        fail "mkdir $2 on node $1 ($(kind "$1")) succeeded although the lock is held elsewhere"
    fi
    case $out in
    *"File exists"*) ;;
    *) fail "mkdir $2 on node $1 ($(kind "$1")) failed, but not with EEXIST: $out" ;;
    esac
}

wait_started() { # node
    wait_for "node $1 ($(kind "$1") pmxcfs) mounted and quorate" quorate "$1"
}

# --- 0. the lab and the daemons -------------------------------------------

say "lab: 3 corosync nodes in $LAB_DIR"
t=$(now_ms)
LAB_UP=1
"$LAB" up 3 "$LAB_DIR" >/dev/null
timing "lab up (3 corosync nodes quorate)" $(($(now_ms) - t))
prepare_rust 1
prepare_rust 2
prepare_c

say "starting Rust pmxcfs on nodes 1, 2 ($RUST_ORIG) and C pmxcfs on node 3 ($C_PMXCFS)"
t=$(now_ms)
start_rust 1
start_rust 2
start_c

# --- 1. quorate -----------------------------------------------------------
for i in 1 2 3; do
    wait_started "$i"
    say "1. node $i ($(kind "$i")): .members says quorate (pid ${PID[$i]})"
done
timing "1. all 3 daemons mounted and quorate" $(($(now_ms) - t))
online_nodes() { # node -> the node names its .members shows online
    tr -d '\n' <"$(mnt "$1")/.members" | grep -Eo '"node[0-9]+": *\{[^}]*"online": *1' | grep -Eo '^"node[0-9]+' | tr -d '"' | sort | tr '\n' ' '
}
online_is() { [ "$(online_nodes "$1")" = "$2" ]; }
for i in 1 2 3; do
    ON_TIMEOUT="online_nodes $i" wait_for "node $i ($(kind "$i")): node1..node3 online in .members" \
        online_is "$i" "node1 node2 node3 "
done
say "1. every node's .members lists node1..node3 online (the C node counts the members of the kvstore group)"
want=$REF/corosync.conf
cp "$(node_dir 1)/etc/corosync.conf" "$want"
for i in 1 2 3; do
    wait_for "corosync.conf in the tree of node $i" has "$i" corosync.conf "$want"
done
say "1. every tree holds the same imported corosync.conf"
wait_converged "after start"
wait_stores_equal "after start"

# --- 2. replication both ways ---------------------------------------------
t=$(now_ms)
mkdir "$(mnt 1)/mixed" || fail "mkdir mixed on node 1"
dir_everywhere 1 mixed
r=$(ref a "written on rust node 1
")
put 1 mixed/from-r1 "$r"
seen_everywhere 1 mixed/from-r1 "$r"
timing "2. Rust write seen on Rust + C" "$WAITED_MS"
say "2. file written on node 1 (Rust) identical on node 2 (Rust) and node 3 (C) (${WAITED_MS} ms)"

r=$(ref b "written on C node 3
two lines
")
put 3 mixed/from-c "$r"
seen_everywhere 3 mixed/from-c "$r"
timing "2. C write seen on both Rust" "$WAITED_MS"
say "2. file written on node 3 (C) identical on nodes 1 and 2 (Rust) (${WAITED_MS} ms)"

r=$(ref b2 "short")
put 3 mixed/from-r1 "$r"
seen_everywhere 3 mixed/from-r1 "$r"
r=$(ref a2 "rewritten on rust node 2, longer than before ............")
put 2 mixed/from-c "$r"
seen_everywhere 2 mixed/from-c "$r"
say "2. rewrites (shorter on C, longer on Rust) replace the content everywhere"

# mkdir, rename (same dir and across dirs), unlink, rmdir on one node, seen on the others.
tree_ops() { # node tag vmid who others
    local node=$1 tag=$2 vmid=$3 who=$4 others=$5 r
    mkdir "$(mnt "$node")/mixed/dir-$tag" || fail "mkdir on node $node ($who)"
    dir_everywhere "$node" "mixed/dir-$tag"
    r=$(ref "$tag$vmid" "vm config from $who
")
    put "$node" "mixed/dir-$tag/$vmid.conf.tmp" "$r"
    mv "$(mnt "$node")/mixed/dir-$tag/$vmid.conf.tmp" "$(mnt "$node")/mixed/dir-$tag/$vmid.conf" ||
        fail "rename on node $node ($who)"
    seen_everywhere "$node" "mixed/dir-$tag/$vmid.conf" "$r"
    gone_everywhere "$node" "mixed/dir-$tag/$vmid.conf.tmp"
    mv "$(mnt "$node")/mixed/dir-$tag/$vmid.conf" "$(mnt "$node")/mixed/moved-by-$tag.conf" ||
        fail "rename across dirs on node $node ($who)"
    seen_everywhere "$node" "mixed/moved-by-$tag.conf" "$r"
    gone_everywhere "$node" "mixed/dir-$tag/$vmid.conf"
    rm "$(mnt "$node")/mixed/moved-by-$tag.conf" || fail "unlink on node $node ($who)"
    gone_everywhere "$node" "mixed/moved-by-$tag.conf"
    rmdir "$(mnt "$node")/mixed/dir-$tag" || fail "rmdir on node $node ($who)"
    gone_everywhere "$node" "mixed/dir-$tag"
    say "2. mkdir, rename (same dir and across dirs), unlink, rmdir on node $node ($who) replicated to $others"
}
tree_ops 3 c 100 C "nodes 1, 2 (Rust)"
tree_ops 2 r 101 Rust "nodes 1 (Rust), 3 (C)"

# Cluster-wide locks: taken on one implementation, refused on the other at once
# (the mkdirs are ordered by the cluster, no waiting for replication).
[ -d "$(mnt 3)/priv" ] || mkdir "$(mnt 3)/priv" || fail "mkdir priv on node 3 (C)"
[ -d "$(mnt 3)/priv/lock" ] || mkdir "$(mnt 3)/priv/lock" || fail "mkdir priv/lock on node 3 (C)"
dir_everywhere 3 priv/lock
mkdir "$(mnt 3)/priv/lock/x" || fail "lock priv/lock/x on node 3 (C)"
mkdir_fails_eexist 1 priv/lock/x
mkdir_fails_eexist 2 priv/lock/x
say "2. lock priv/lock/x taken on node 3 (C): mkdir on nodes 1, 2 (Rust) fails with EEXIST"
rmdir "$(mnt 3)/priv/lock/x" || fail "unlock (rmdir) on node 3 (C)"
gone_everywhere 3 priv/lock/x
mkdir "$(mnt 2)/priv/lock/x" || fail "lock priv/lock/x on node 2 (Rust) after the C node released it"
mkdir_fails_eexist 3 priv/lock/x
mkdir_fails_eexist 1 priv/lock/x
say "2. lock priv/lock/x taken on node 2 (Rust): mkdir on node 3 (C) and node 1 (Rust) fails with EEXIST"
rmdir "$(mnt 2)/priv/lock/x" || fail "unlock (rmdir) on node 2 (Rust)"
gone_everywhere 2 priv/lock/x
timing "2. replication checks (both ways, locks)" $(($(now_ms) - t))

# --- 3. equal trees -------------------------------------------------------
wait_converged "after the replication checks"
wait_stores_equal "after the replication checks"

# --- 4. restarts and resyncs ----------------------------------------------
# 4a. C down, writes on Rust, C back: a Rust leader resyncs the C node.
t=$(now_ms)
stop_node 3
say "4a. C node 3 stopped by SIG$STOP_HOW in ${STOP_MS} ms"
timing "4a. C pmxcfs stop (SIG$STOP_HOW)" "$STOP_MS"
mkdir "$(mnt 1)/missed" || fail "mkdir missed on node 1 (Rust)"
for k in 1 2 3 4 5; do
    write $(((k % 2) + 1)) "missed/file-$k" "missed write $k while C was down
"
done
write 1 mixed/from-c "rewritten while C was down
"
rm "$(mnt 2)/mixed/from-r1" || fail "unlink on node 2 (Rust) while C was down"
mv "$(mnt 1)/missed/file-5" "$(mnt 1)/missed/file-5-renamed" || fail "rename on node 1 while C was down"
wait_converged "Rust nodes while C is down"
wait_stores_equal "Rust nodes while C is down"
t2=$(now_ms)
start_c
wait_started 3
timing "4a. C pmxcfs restart until quorate" $(($(now_ms) - t2))
wait_for "C node 3 has the writes it missed" has 3 missed/file-5-renamed \
    "$(ref m5 "missed write 5 while C was down
")"
wait_converged "C node 3 resynced from the Rust nodes"
wait_stores_equal "C node 3 resynced from the Rust nodes"
absent 3 mixed/from-r1 || fail "the unlink done while C was down did not reach C"
timing "4a. C restart: resynced from Rust (stop to converged)" $((CONVERGED_AT - t))
wait_for_leader 3 1
say "4a. C node 3 restarted (pid ${PID[3]}) and received 6 missed writes, 1 unlink, 1 rename ($LEADER_LINE)"

# 4b. Rust node 2 down, writes on C, node 2 back: resync by node 1 (Rust) as leader.
t=$(now_ms)
stop_node 2
say "4b. Rust node 2 stopped by SIG$STOP_HOW in ${STOP_MS} ms"
timing "4b. Rust pmxcfs stop (SIG$STOP_HOW)" "$STOP_MS"
mkdir "$(mnt 3)/missed-by-2" || fail "mkdir on node 3 (C) while node 2 was down"
for k in 1 2 3; do write 3 "missed-by-2/file-$k" "C write $k while node 2 was down
"; done
rm "$(mnt 3)/missed/file-1" || fail "unlink on node 3 (C) while node 2 was down"
wait_converged "nodes 1 (Rust) and 3 (C) while node 2 is down"
wait_stores_equal "nodes 1 (Rust) and 3 (C) while node 2 is down"
t2=$(now_ms)
start_rust 2
wait_started 2
timing "4b. Rust pmxcfs restart until quorate" $(($(now_ms) - t2))
wait_converged "Rust node 2 resynced (node 1 and C up)"
wait_stores_equal "Rust node 2 resynced (node 1 and C up)"
absent 2 missed/file-1 || fail "the unlink done while node 2 was down did not reach node 2"
timing "4b. Rust node 2 restart: resynced (stop to converged)" $((CONVERGED_AT - t))
wait_for_leader 2 1
say "4b. Rust node 2 restarted (pid ${PID[2]}) and caught up with 4 writes and 1 unlink done on C ($LEADER_LINE)"

# 4c. Both Rust nodes down, writes on C (corosync keeps quorum). Node 2 back
# first: the C node alone has the newest data, so it leads that sync. Then
# node 1: nodes 2 and 3 are equal and the lower node id leads (the C rule), so
# Rust node 2 leads, with the C node a synced member.
t=$(now_ms)
stop_node 1
stop_node 2
say "4c. Rust nodes 1 and 2 stopped; C node 3 alone (corosync still quorate)"
wait_for "C node 3 quorate and writable alone" quorate 3
mkdir "$(mnt 3)/c-alone" || fail "mkdir on node 3 (C) alone"
for k in 1 2 3; do write 3 "c-alone/file-$k" "C alone write $k
"; done
write 3 mixed/from-c "rewritten on the lone C node
"
rm "$(mnt 3)/missed-by-2/file-3" || fail "unlink on node 3 (C) alone"
mv "$(mnt 3)/missed-by-2/file-2" "$(mnt 3)/c-alone/file-2-moved" || fail "rename on node 3 (C) alone"
t2=$(now_ms)
start_rust 2
wait_started 2
wait_converged "Rust node 2 resynced from the lone C node"
wait_stores_equal "Rust node 2 resynced from the lone C node"
wait_for_leader 2 3
timing "4c. Rust node 2 restart: resynced from C (start to converged)" $((CONVERGED_AT - t2))
say "4c. Rust node 2 restarted (pid ${PID[2]}) and caught up from C node 3 ($LEADER_LINE)"
absent 2 missed-by-2/file-3 || fail "the unlink done on the lone C node did not reach node 2"
t2=$(now_ms)
start_rust 1
wait_started 1
wait_converged "Rust node 1 resynced (node 2 and C up)"
wait_stores_equal "Rust node 1 resynced (node 2 and C up)"
absent 1 missed-by-2/file-3 || fail "the unlink done on the lone C node did not reach node 1"
wait_for_leader 1 2
timing "4c. Rust node 1 restart: resynced from node 2 (start to converged)" $((CONVERGED_AT - t2))
say "4c. Rust node 1 restarted (pid ${PID[1]}) and caught up ($LEADER_LINE)"

# Replication still works both ways after all that.
r=$(ref after "after the restarts
")
put 1 mixed/after-restarts "$r"
seen_everywhere 1 mixed/after-restarts "$r"
r=$(ref after-c "after the restarts, from C
")
put 3 mixed/after-restarts-c "$r"
seen_everywhere 3 mixed/after-restarts-c "$r"
say "4. replication both ways still works after the restarts"

# --- 5. concurrent writers ------------------------------------------------
t=$(now_ms)
mkdir "$(mnt 1)/conc" || fail "mkdir conc on node 1"
dir_everywhere 1 conc
for i in 1 2 3; do mkdir "$(mnt "$i")/conc/n$i" || fail "mkdir conc/n$i on node $i"; done
for i in 1 2 3; do
    (
        m=$(mnt "$i")
        end=$(($(now_ms) + 3000))
        k=0 errors=0
        while [ "$(now_ms)" -lt "$end" ]; do
            { printf 'node %s write %s\n' "$i" "$k" >"$m/conc/n$i/f-$k"; } 2>>"$WORK/conc-errors.$i" ||
                errors=$((errors + 1))
            # every 10th write also rewrites one file per node
            if [ $((k % 10)) -eq 0 ]; then
                { printf 'node %s last %s\n' "$i" "$k" >"$m/conc/n$i/last"; } 2>>"$WORK/conc-errors.$i" ||
                    errors=$((errors + 1))
            fi
            k=$((k + 1))
        done
        echo "$k $errors" >"$WORK/conc-count.$i"
    ) &
    CONC[$i]=$!
done
for i in 1 2 3; do wait "${CONC[$i]}" || fail "concurrent writer on node $i"; done
CONC=()
check_alive
summary=""
for i in 1 2 3; do
    read -r n errors <"$WORK/conc-count.$i"
    [ "$errors" -eq 0 ] || fail "node $i ($(kind "$i")): $errors of $n concurrent writes failed: $(sort -u "$WORK/conc-errors.$i" | head -n 3)"
    summary="$summary node $i ($(kind "$i")): $n files;"
    eval "CONC_N$i=$n"
done
say "5. 3 s of concurrent writes:$summary"
wait_converged "after the concurrent writes"
wait_stores_equal "after the concurrent writes"
for i in 1 2 3; do
    for j in 1 2 3; do
        eval "want=\$CONC_N$j"
        got=$(find "$(mnt "$i")/conc/n$j" -name 'f-*' | wc -l)
        [ "$got" -eq "$want" ] || fail "node $i has $got of node $j's $want concurrent files"
    done
done
timing "5. concurrent writes: 3 s + convergence" $((CONVERGED_AT - t))
say "5. every node holds all $((CONC_N1 + CONC_N2 + CONC_N3)) concurrent files with equal content"

# --- 6. stays converged ----------------------------------------------------
# Idle for 2 s: no new sync round (nobody left or rejoined the DFSM), still
# quorate, trees still equal; no errors in any log.
syncs() { grep -Ec 'starting data sync' "$(log_of "$1")" || true; }
before="$(syncs 1) $(syncs 2) $(syncs 3)"
sleep 2
after="$(syncs 1) $(syncs 2) $(syncs 3)"
[ "$before" = "$after" ] || fail "sync rounds started while idle (per-node counts $before -> $after)"
for i in 1 2 3; do quorate "$i" || fail "node $i no longer quorate at the end"; done
check_alive
trees_equal || fail "trees differ after 2 s idle"
[ "$HAVE_PY" != 1 ] || stores_equal || fail "store rows differ after 2 s idle"
bad=$(grep -HE ' (ERROR|WARN) ' "$(log_of 1)" "$(log_of 2)" || true)
bad_c=$(grep -HEi '\] (crit|err|error|warning):' "$(log_of 3)" || true)
[ -z "$bad$bad_c" ] || fail "errors or warnings in the daemons' logs:
$bad
$bad_c"
say "6. 2 s idle: no sync round, all quorate, trees equal; no ERROR/WARN in the Rust logs, no crit/error/warning in the C log"

echo
echo "mixed.sh: PASSED (Rust $RUST_ORIG on nodes 1, 2; C $C_PMXCFS on node 3)"
echo "timings:"
printf '  %s\n' "${TIMINGS[@]}"
printf '  %-66s %7d ms\n' "total" $(($(now_ms) - T0))
