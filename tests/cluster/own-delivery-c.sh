#!/bin/bash
# The own-delivery window (tests/own_delivery.rs) against any pmxcfs binary,
# e.g. Proxmox's C daemon, which cannot run under the Rust test's helpers:
#
#   tests/cluster/own-delivery-c.sh C-PMXCFS [ROUNDS]
#
# Three lab nodes (tests/cluster/lab.sh) each run C-PMXCFS with its fixed
# paths (tests/cluster/daemons.sh). Per round: node 3 writes 4 KiB into a
# file through a 400 kbit/s token bucket on its egress; its link is cut the
# moment the write call returns; nodes 1 and 2 write on; heal; the file must
# hold the write on every node. Prints one line per round and the number of
# acknowledged writes lost. Root only; not part of `make test` (it needs a C
# binary built outside the repository).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,/^set -eu/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "own-delivery-c.sh: needs root" >&2; exit 1; }
BIN=$(readlink -f "$1")
ROUNDS=${2:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=$HERE/lab.sh
WORK=$(mktemp -d /tmp/pmxcfs-own-c.XXXXXX)
export LAB_DIR=$WORK/lab
declare -A PID=()
# shellcheck source=daemons.sh
. "$HERE/daemons.sh"

cleanup() {
    exec 2>/dev/null # no job notices for the daemons killed here
    for pid in "${PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    "$LAB" down "$LAB_DIR" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mnt() { echo "/proc/${PID[$1]}/root/etc/pve"; }
wait_for() { # what cmd...
    local what=$1 i
    shift
    for ((i = 0; i < 600; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "timed out waiting for $what" >&2
    exit 1
}
online() { # node count
    python3 - "$(mnt "$1")/.members" "$2" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
n = sum(1 for v in m.get("nodelist", {}).values() if v.get("online") == 1)
sys.exit(0 if n == int(sys.argv[2]) and m["cluster"]["quorate"] == 1 else 1)
EOF
}
same() { # rel
    local a b c
    a=$(md5sum <"$(mnt 1)/$1") b=$(md5sum <"$(mnt 2)/$1") c=$(md5sum <"$(mnt 3)/$1")
    [ "$a" = "$b" ] && [ "$b" = "$c" ]
}

"$LAB" up 3 "$LAB_DIR" >/dev/null
for i in 1 2 3; do
    c_prepare "$i" "$LAB_DIR/n$i/pm"
    c_start "$i" "$LAB_DIR/n$i/pm" "$BIN"
done
for i in 1 2 3; do wait_for "node $i online" online "$i" 3; done

lost=0
for ((round = 0; round < ROUNDS; round++)); do
    rel=own-$round
    wait_for "a write on node 3" sh -c "printf start >'$(mnt 3)/$rel'"
    wait_for "$rel everywhere" same "$rel"
    "$LAB" exec 3 tc qdisc add dev eth0 root tbf rate 400kbit burst 1600 latency 2s
    python3 - "$(mnt 3)/$rel" "$round" "$LAB" <<'EOF'
import os, subprocess, sys, time
data = (f"round {sys.argv[2]}\n".encode() + b"." * 4096)[:4096]
fd = os.open(sys.argv[1], os.O_WRONLY)
t = time.monotonic()
os.write(fd, data)
acked = time.monotonic() - t
subprocess.run([sys.argv[3], "cut", "3"], check=True)
os.close(fd)
print(f"round {sys.argv[2]}: write acknowledged in {acked * 1000:.1f} ms, link cut")
EOF
    "$LAB" exec 3 tc qdisc del dev eth0 root
    wait_for "nodes 1 and 2 alone" online 1 2
    wait_for "a write on node 1" sh -c "printf m >'$(mnt 1)/majority-$round'"
    "$LAB" heal 3
    wait_for "node 3 back" online 1 3
    wait_for "node 3 writable" sh -c "printf m >'$(mnt 3)/back-$round'"
    wait_for "$rel the same everywhere" same "$rel"
    if head -c 5 "$(mnt 1)/$rel" | grep -q round; then
        echo "round $round: the write is there"
    else
        echo "round $round: LOST (now: $(head -c 12 "$(mnt 1)/$rel"))"
        lost=$((lost + 1))
    fi
done
echo "acknowledged writes lost: $lost of $ROUNDS"
