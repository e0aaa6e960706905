#!/bin/sh
# A real corosync cluster of N nodes on one machine, in network namespaces
# (shared/CLUSTER-LAB.md). Root only. Nothing is added to the root network
# namespace: one namespace holds a bridge, one namespace per node holds its
# eth0 (10.99.0.I/24) and its corosync, which runs with a private /run
# (tmpfs in its own mount namespace: the pid lock /run/corosync.pid is
# compiled in). Every name carries a random tag, so parallel or leftover labs
# never collide.
#
#   lab.sh up N DIR        create DIR (must not exist or be empty), N nodes, start and
#                          wait until every corosync is quorate with N votes
#   lab.sh down DIR        kill everything of the lab, delete its namespaces, the
#                          /dev/shm/qb-* files of its corosyncs, and DIR; idempotent,
#                          safe on half-built labs (LAB_KEEP=1 keeps DIR for its logs)
#
# The other commands find the lab through LAB_DIR=DIR:
#   lab.sh exec I CMD...   run CMD in node I's network namespace. Enough to reach its
#                          corosync (abstract unix sockets are per network namespace);
#                          `ip netns exec` also gives CMD its own mount namespace (slave
#                          of the root one), so mounts CMD makes stay private to it.
#   lab.sh ns I            print node I's namespace name
#   lab.sh cut I           take node I's link down at the bridge (partition)
#   lab.sh heal I          bring it back
#   lab.sh kill I          SIGKILL node I's corosync (and wait until it is gone)
#   lab.sh stop I          SIGTERM node I's corosync (clean leave) and wait
#   lab.sh start I         (re)start node I's corosync, wait until its IPC answers
#   lab.sh wait I VOTES    wait until node I is quorate with VOTES total votes
#
# Environment: LAB_TOKEN_MS (totem token, default 1000), LAB_WAIT_S (default 30).
#
# Layout of DIR: tag, nodes, netns (namespaces, one a line, written before each is
# created), authkey, nI/{corosync.conf,corosync.log,corosync.pid,state/},
# corosync-pids (every corosync started, "pid starttime", for the cleanup).
set -eu

LAB_TOKEN_MS=${LAB_TOKEN_MS:-1000}
LAB_WAIT_S=${LAB_WAIT_S:-30}

die() {
    echo "lab.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ "$(id -u)" = 0 ] || die "needs root"

# --- naming ---------------------------------------------------------------

tag() { cat "$DIR/tag"; }
bridge_ns() { echo "lab-$(tag)-br"; }
node_ns() { echo "lab-$(tag)-n$1"; }
bridge_port() { echo "v$(tag)n$1"; } # in the bridge namespace; <= 15 bytes
node_addr() { echo "10.99.0.$1"; }

node_count() { cat "$DIR/nodes"; }

check_node() {
    case $1 in
    '' | *[!0-9]*) die "bad node number: $1" ;;
    esac
    [ "$1" -ge 1 ] && [ "$1" -le "$(node_count)" ] || die "no node $1 in $DIR"
}

need_lab_dir() {
    DIR=${LAB_DIR:-}
    [ -n "$DIR" ] || die "set LAB_DIR to the lab's directory"
    [ -f "$DIR/tag" ] || die "$DIR is not a lab (no tag file)"
}

# Field 22 of /proc/PID/stat (start time): tells a pid from a reused one.
start_time() {
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# Running (not a zombie waiting for its reaper) and the same process.
alive() { # pid starttime
    [ -n "$1" ] || return 1
    stat=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "${stat%% *}" != Z ] && [ "$(echo "$stat" | cut -d' ' -f20)" = "$2" ]
}

# --- set-up ---------------------------------------------------------------

write_config() { # node
    i=$1
    d=$DIR/n$i
    {
        cat <<EOF
totem {
    version: 2
    cluster_name: lab-$(tag)
    config_version: 1
    transport: knet
    crypto_cipher: aes256
    crypto_hash: sha256
    keyfile: $DIR/authkey
    token: $LAB_TOKEN_MS
    token_coefficient: 0
}
nodelist {
EOF
        j=1
        while [ "$j" -le "$(node_count)" ]; do
            cat <<EOF
    node {
        name: node$j
        nodeid: $j
        quorum_votes: 1
        ring0_addr: $(node_addr "$j")
    }
EOF
            j=$((j + 1))
        done
        cat <<EOF
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_stderr: yes
    to_syslog: no
    to_logfile: no
    timestamp: on
}
system {
    state_dir: $d/state
}
EOF
    } >"$d/corosync.conf"
}

start_corosync() { # node
    i=$1
    d=$DIR/n$i
    # ip netns exec, unshare and sh all exec: $! is corosync's pid.
    ip netns exec "$(node_ns "$i")" unshare -m --propagation private \
        sh -c 'mount -t tmpfs -o mode=0755,size=16m tmpfs /run && exec corosync -f -c "$1"' \
        sh "$d/corosync.conf" >>"$d/corosync.log" 2>&1 </dev/null &
    pid=$!
    # The start time is read at once: the pid is ours until we reap it.
    echo "$pid $(start_time "$pid")" >>"$DIR/corosync-pids"
    echo "$pid" >"$d/corosync.pid"
}

corosync_pid() { # node -> "pid starttime" of its running corosync, or nothing
    pid=$(cat "$DIR/n$1/corosync.pid" 2>/dev/null) || return 0
    line=$(grep "^$pid " "$DIR/corosync-pids" | tail -n 1) || return 0
    # shellcheck disable=SC2086
    alive $line && echo "$line"
    return 0
}

wait_ipc() { # node: until its corosync answers on IPC
    deadline=$(($(date +%s) + LAB_WAIT_S))
    until ip netns exec "$(node_ns "$1")" corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1; do
        [ -n "$(corosync_pid "$1")" ] || die "corosync of node $1 exited; log: $DIR/n$1/corosync.log"
        [ "$(date +%s)" -lt "$deadline" ] || die "corosync of node $1 does not answer"
        sleep 0.05
    done
}

wait_quorate() { # node votes
    deadline=$(($(date +%s) + LAB_WAIT_S))
    while :; do
        out=$(ip netns exec "$(node_ns "$1")" corosync-quorumtool -s 2>/dev/null) || true
        if echo "$out" | grep -Eq '^Quorate: +Yes' &&
            echo "$out" | grep -Eq "^Total votes: +$2\$"; then
            return 0
        fi
        [ -n "$(corosync_pid "$1")" ] || die "corosync of node $1 exited; log: $DIR/n$1/corosync.log"
        [ "$(date +%s)" -lt "$deadline" ] || die "node $1 not quorate with $2 votes: $out"
        sleep 0.05
    done
}

up() { # N DIR
    n=$1
    DIR=$2
    case $n in '' | *[!0-9]*) die "bad node count: $n" ;; esac
    [ "$n" -ge 1 ] && [ "$n" -le 99 ] || die "node count must be 1..99"
    if [ -e "$DIR" ]; then
        [ -d "$DIR" ] && [ -z "$(ls -A "$DIR")" ] || die "$DIR exists and is not an empty directory"
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    while :; do
        t=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
        [ -e "/run/netns/lab-$t-br" ] || break
    done
    echo "$t" >"$DIR/tag"
    echo "$n" >"$DIR/nodes"
    : >"$DIR/netns"
    : >"$DIR/corosync-pids"

    br=$(bridge_ns)
    echo "$br" >>"$DIR/netns"
    ip netns add "$br"
    ip -n "$br" link set lo up
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    i=1
    while [ "$i" -le "$n" ]; do
        ns=$(node_ns "$i")
        echo "$ns" >>"$DIR/netns"
        ip netns add "$ns"
        ip -n "$br" link add "$(bridge_port "$i")" type veth peer name eth0 netns "$ns"
        ip -n "$br" link set "$(bridge_port "$i")" master br0 up
        ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        mkdir -p "$DIR/n$i/state"
        i=$((i + 1))
    done

    corosync-keygen -l -k "$DIR/authkey" >/dev/null 2>&1 ||
        head -c 256 /dev/urandom >"$DIR/authkey"
    chmod 0400 "$DIR/authkey"

    i=1
    while [ "$i" -le "$n" ]; do
        write_config "$i"
        start_corosync "$i"
        i=$((i + 1))
    done
    i=1
    while [ "$i" -le "$n" ]; do
        wait_ipc "$i"
        wait_quorate "$i" "$n"
        i=$((i + 1))
    done
    echo "lab $(tag): $n nodes up in $DIR"
}

# --- tear-down ------------------------------------------------------------

down() { # DIR
    DIR=$1
    [ -d "$DIR" ] || return 0
    if [ ! -f "$DIR/tag" ]; then
        [ -z "$(ls -A "$DIR")" ] && rmdir "$DIR" && return 0
        die "$DIR is not a lab (no tag file): left alone"
    fi
    # 1. Every process in the lab's namespaces, and every corosync we
    #    started (by pid and start time, in case it escaped a namespace).
    namespaces=$(grep -E '^lab-[0-9a-f]{6}-(br|n[0-9]+)$' "$DIR/netns" 2>/dev/null || true)
    round=0
    while :; do
        pids=""
        for ns in $namespaces; do
            [ -e "/run/netns/$ns" ] || continue
            pids="$pids $(ip netns pids "$ns" 2>/dev/null || true)"
        done
        while read -r pid st; do
            alive "$pid" "$st" && pids="$pids $pid"
        done <"$DIR/corosync-pids" 2>/dev/null || true
        pids=$(echo $pids)
        [ -n "$pids" ] || break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        round=$((round + 1))
        [ "$round" -lt 200 ] || {
            echo "lab.sh: processes will not die: $pids" >&2
            break
        }
        sleep 0.05
    done
    # 2. The namespaces.
    for ns in $namespaces; do
        [ -e "/run/netns/$ns" ] && ip netns del "$ns" 2>/dev/null || true
    done
    # 3. libqb's shared memory of our (now dead) corosyncs: a killed
    #    corosync leaves its IPC buffers (/dev/shm/qb-<pid>-<client pid>-*)
    #    and every corosync its blackbox (/dev/shm/qb-corosync-<pid>-*).
    while read -r pid st; do
        case $pid in '' | *[!0-9]*) continue ;; esac
        alive "$pid" "$st" && continue
        rm -rf /dev/shm/qb-"$pid"-* /dev/shm/qb-corosync-"$pid"-* 2>/dev/null || true
    done <"$DIR/corosync-pids" 2>/dev/null || true
    # 4. The directory.
    if [ "${LAB_KEEP:-0}" = 1 ]; then
        echo "lab.sh: kept $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}

# --- per-node commands ----------------------------------------------------

kill_node() { # node signal
    line=$(corosync_pid "$1")
    [ -n "$line" ] || die "corosync of node $1 is not running"
    set -- "$1" "$2" $line
    kill "-$2" "$3"
    deadline=$(($(date +%s) + LAB_WAIT_S))
    while alive "$3" "$4"; do
        [ "$(date +%s)" -lt "$deadline" ] || die "corosync of node $1 (pid $3) does not exit"
        sleep 0.02
    done
    rm -f "$DIR/n$1/corosync.pid"
}

[ $# -ge 1 ] || usage
command=$1
shift
case $command in
up)
    [ $# -eq 2 ] || usage
    up "$1" "$2"
    ;;
down)
    [ $# -eq 1 ] || usage
    down "$1"
    ;;
exec)
    [ $# -ge 2 ] || usage
    need_lab_dir
    check_node "$1"
    ns=$(node_ns "$1")
    shift
    exec ip netns exec "$ns" "$@"
    ;;
ns)
    [ $# -eq 1 ] || usage
    need_lab_dir
    check_node "$1"
    node_ns "$1"
    ;;
cut | heal)
    [ $# -eq 1 ] || usage
    need_lab_dir
    check_node "$1"
    state=down
    [ "$command" = heal ] && state=up
    ip -n "$(bridge_ns)" link set "$(bridge_port "$1")" "$state"
    ;;
kill)
    [ $# -eq 1 ] || usage
    need_lab_dir
    check_node "$1"
    kill_node "$1" KILL
    ;;
stop)
    [ $# -eq 1 ] || usage
    need_lab_dir
    check_node "$1"
    kill_node "$1" TERM
    ;;
start)
    [ $# -eq 1 ] || usage
    need_lab_dir
    check_node "$1"
    [ -z "$(corosync_pid "$1")" ] || die "corosync of node $1 runs already"
    start_corosync "$1"
    wait_ipc "$1"
    ;;
wait)
    [ $# -eq 2 ] || usage
    need_lab_dir
    check_node "$1"
    wait_quorate "$1" "$2"
    ;;
*) usage ;;
esac
