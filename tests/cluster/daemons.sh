#!/bin/bash
# Sourced by tests/cluster/mixed.sh and bench/cluster-c-vs-rust.sh: prepare
# and start one pmxcfs (ours or Proxmox's C daemon) on a node of a lab
# (tests/cluster/lab.sh). The caller sets LAB (lab.sh) and LAB_DIR and
# declares the associative array PID (node -> daemon pid).

# Ours: LAB_DIR/nN/... dir with mnt, data, run, etc/corosync.conf (the lab's
# config without its per-node `system` section: identical on all nodes).
rust_prepare() { # node dir
    mkdir -p "$2/mnt" "$2/data" "$2/run" "$2/etc"
    sed '/^system {/,$d' "$LAB_DIR/n$1/corosync.conf" >"$2/etc/corosync.conf"
}

rust_start() { # node dir binary
    # lab.sh and ip netns exec exec: $! is the daemon.
    RUST_LOG=${RUST_LOG:-info} "$LAB" exec "$1" "$3" -f \
        --mountpoint "$2/mnt" --data-dir "$2/data" --run-dir "$2/run" \
        --pid-file "$2/pmxcfs.pid" --nodename "node$1" --node-ip "10.99.0.$1" \
        --corosync-conf "$2/etc/corosync.conf" >>"$2/pmxcfs.log" 2>&1 </dev/null &
    PID[$1]=$!
    echo "=== started pid ${PID[$1]} at $(date '+%T.%N')" >>"$2/pmxcfs.log"
}

# The C daemon has fixed paths: it runs in the node's network namespace plus
# a private mount namespace where /var/lib/pve-cluster is DIR/data, /etc/hosts
# and /etc/corosync/corosync.conf are DIR's, and /run is a tmpfs. Its mount
# is /proc/PID/root/etc/pve.
c_prepare() { # node dir
    mkdir -p "$2/data"
    chmod 0700 "$2/data"
    sed '/^system {/,$d' "$LAB_DIR/n$1/corosync.conf" >"$2/corosync.conf"
    printf '127.0.0.1 localhost\n10.99.0.%s node%s\n' "$1" "$1" >"$2/hosts"
}

c_start() { # node dir binary
    # lab.sh, ip netns exec, unshare (no --fork) and sh all exec: $! is the daemon.
    "$LAB" exec "$1" unshare -m -u --propagation private sh -euc '
        d=$1 bin=$2 name=$3
        # A missing mountpoint: overlay its parent (upper in the private /run).
        ensure() { # path d|f
            [ -e "$1" ] && return 0
            p=$(dirname "$1")
            [ -d "$p" ] || ensure "$p" d
            o=/run/mixed-overlay/$(echo "$p" | tr / _)
            mkdir -p "$o/upper" "$o/work"
            mount -t overlay mixed -o "lowerdir=$p,upperdir=$o/upper,workdir=$o/work" "$p"
            if [ "$2" = d ]; then mkdir "$1"; else : >"$1"; fi
        }
        hostname "$name"
        mount -t tmpfs -o mode=0755 mixed-run /run
        ensure /var/lib/pve-cluster d
        mount --bind "$d/data" /var/lib/pve-cluster
        ensure /etc/pve d
        ensure /etc/hosts f
        mount --bind "$d/hosts" /etc/hosts
        ensure /etc/corosync/corosync.conf f
        mount --bind "$d/corosync.conf" /etc/corosync/corosync.conf
        exec "$bin" -f
    ' sh "$2" "$3" "node$1" >>"$2/pmxcfs.log" 2>&1 </dev/null &
    PID[$1]=$!
    echo "=== started pid ${PID[$1]} at $(date '+%T.%N')" >>"$2/pmxcfs.log"
}
