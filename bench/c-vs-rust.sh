#!/bin/sh
# c-vs-rust.sh - the C pmxcfs, this Rust pmxcfs and a tmpfs under the same fsload run.
#
# usage: bench/c-vs-rust.sh /path/to/c/pmxcfs [fsload options...]
#   e.g. bench/c-vs-rust.sh /tmp/pmxcfs-c --files 1000
#
# Needs root, util-linux (unshare, nsenter), /dev/fuse, and overlayfs (or an existing
# /etc/pve to mount over). Build the Rust side first:
#   cargo build --release -p pmxcfs-bench --bin fsload -p pmxcfs --bin pmxcfs
# (override the binaries with FSLOAD=... and RUST_PMXCFS=...).
#
# The C binary is NOT part of this repository and this script neither builds nor
# fetches it. Obtain one yourself: build src/pmxcfs of Proxmox's public pve-cluster
# repository (git.proxmox.com, mirrored on GitHub as proxmox/pve-cluster) with its
# Debian build dependencies (FUSE 2, glib, sqlite3, rrd, libqb, corosync libraries),
# outside this tree, and pass the resulting `pmxcfs` binary's path.
#
# What it does: `pmxcfs -l -f` (C) has fixed paths (/etc/pve, /var/lib/pve-cluster,
# /run/pve-cluster, /var/run/pve-cluster.pid), so everything runs in a private mount
# namespace held by a `sleep` process: /etc is an overlay (writes, such as the /etc/pve
# mountpoint and an /etc/hosts line giving the node name a non-loopback address, land
# in a tmpfs), /var/lib and /run are tmpfs. Nothing of the host's is used or changed.
# The C daemon also gets the holder's private network namespace, so its libqb IPC
# server ("pve2", abstract sockets) cannot meet a host's pmxcfs.
# The Rust daemon runs in the same mount namespace on temporary directories, and so does
# fsload, with three targets: [1] the C mount, [2] the Rust mount, [3] a tmpfs.
# Output: a table per phase (ops/s of each target, Rust/C ratio, p50s); with --json,
# fsload's raw JSON lines. Set KEEP_JSON=FILE to keep the raw JSON of a table run.
# Teardown (also on failure or Ctrl-C): both daemons by pid, their mounts, the
# namespace holder, the temporary directory.

set -eu

usage() {
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
C_PMXCFS=$1
shift
[ "$(id -u)" -eq 0 ] || { echo "c-vs-rust: must run as root" >&2; exit 1; }
[ -x "$C_PMXCFS" ] && [ -f "$C_PMXCFS" ] || { echo "c-vs-rust: $C_PMXCFS: not an executable" >&2; exit 1; }
C_PMXCFS=$(readlink -f "$C_PMXCFS")

REPO=$(cd "$(dirname "$0")/.." && pwd)
FSLOAD=$(readlink -f "${FSLOAD:-${CARGO_TARGET_DIR:-$REPO/target}/release/fsload}")
RUST_PMXCFS=$(readlink -f "${RUST_PMXCFS:-${CARGO_TARGET_DIR:-$REPO/target}/release/pmxcfs}")
for b in "$FSLOAD" "$RUST_PMXCFS"; do
    [ -x "$b" ] || { echo "c-vs-rust: $b missing; cargo build --release -p pmxcfs-bench --bin fsload -p pmxcfs --bin pmxcfs" >&2; exit 1; }
done

JSON=0
for a in "$@"; do [ "$a" = --json ] && JSON=1; done

WORK=$(mktemp -d /tmp/c-vs-rust.XXXXXX)
HOLDER= C_PID= R_PID= FS_PID=

in_ns() { nsenter -t "$HOLDER" -m -- "$@"; }

# The fuse mounts of the namespace, read from the host through the holder.
ns_mounted() { grep -q " $1 fuse" "/proc/$HOLDER/mounts" 2>/dev/null; }

stop() { # pid name: TERM, up to 10 s, then KILL; always reaped
    [ -n "$1" ] || return 0
    kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
    kill -TERM "$1" 2>/dev/null || true
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then
        echo "c-vs-rust: $2 (pid $1) ignored SIGTERM, killing it" >&2
        kill -KILL "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}

cleanup() {
    status=$?
    trap - EXIT INT TERM HUP
    set +e
    stop "$FS_PID" fsload
    stop "$R_PID" "Rust pmxcfs"
    stop "$C_PID" "C pmxcfs"
    if [ -n "$HOLDER" ] && kill -0 "$HOLDER" 2>/dev/null; then
        # Daemons stopped by SIGTERM unmount themselves; detach whatever a killed one left.
        for m in "$WORK/fsload-tmpfs" "$WORK/rust/mnt" /etc/pve; do
            grep -q " $m " "/proc/$HOLDER/mounts" 2>/dev/null && in_ns umount -l "$m" 2>/dev/null
        done
        # The namespace (and every mount in it) goes with its last process.
        kill "$HOLDER" 2>/dev/null
        wait "$HOLDER" 2>/dev/null
    fi
    if [ $status -ne 0 ]; then
        for log in "$WORK/c.log" "$WORK/rust.log"; do
            [ -s "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
        done
    fi
    rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

wait_for_mount() { # pid mountpoint name
    i=0
    until ns_mounted "$2" && in_ns test -r "$2/.version"; do
        kill -0 "$1" 2>/dev/null || { echo "c-vs-rust: $3 exited during startup" >&2; exit 1; }
        [ $i -lt 200 ] || { echo "c-vs-rust: $3 did not mount $2 within 20 s" >&2; exit 1; }
        sleep 0.1
        i=$((i + 1))
    done
}

# The namespace and its private /etc, /var/lib, /run.
unshare -m -n --propagation private sleep 2147483647 &
HOLDER=$!
i=0
until [ "$(readlink "/proc/$HOLDER/ns/mnt" 2>/dev/null)" != "$(readlink /proc/self/ns/mnt)" ]; do
    kill -0 "$HOLDER" 2>/dev/null && [ $i -lt 100 ] || { echo "c-vs-rust: unshare failed" >&2; exit 1; }
    sleep 0.05
    i=$((i + 1))
done
mkdir -p "$WORK/rust/mnt" "$WORK/rust/data" "$WORK/rust/run" "$WORK/fsload-tmpfs"
NODE=$(uname -n)
in_ns sh -euc '
    mount -t tmpfs -o mode=0755 c-vs-rust /run
    mkdir -p /run/c-vs-rust-etc/upper /run/c-vs-rust-etc/work
    if ! mount -t overlay c-vs-rust \
            -o lowerdir=/etc,upperdir=/run/c-vs-rust-etc/upper,workdir=/run/c-vs-rust-etc/work /etc; then
        # No overlayfs: only possible if /etc/pve exists already (cover it with a tmpfs).
        [ -d /etc/pve ] || { echo "c-vs-rust: no overlayfs and no /etc/pve to mount over" >&2; exit 1; }
        mount -t tmpfs -o mode=0750 c-vs-rust /etc/pve
        cp /etc/hosts /run/c-vs-rust-hosts
        mount --bind /run/c-vs-rust-hosts /etc/hosts
    fi
    mount -t tmpfs -o mode=0755 c-vs-rust /var/lib
    mkdir -p /etc/pve
    # The C daemon wants the node name to resolve to a non-loopback address.
    hosts=$(grep -vw -- "$1" /etc/hosts || true)
    printf "%s\n192.0.2.1 %s\n" "$hosts" "$1" > /etc/hosts
' c-vs-rust "$NODE"

nsenter -t "$HOLDER" -m -n -- "$C_PMXCFS" -l -f >"$WORK/c.log" 2>&1 &
C_PID=$!
nsenter -t "$HOLDER" -m -- "$RUST_PMXCFS" -f -l --mountpoint "$WORK/rust/mnt" \
    --data-dir "$WORK/rust/data" --run-dir "$WORK/rust/run" \
    --pid-file "$WORK/rust/pmxcfs.pid" --nodename bench >"$WORK/rust.log" 2>&1 &
R_PID=$!
wait_for_mount "$C_PID" /etc/pve "C pmxcfs"
wait_for_mount "$R_PID" "$WORK/rust/mnt" "Rust pmxcfs"

set -- --target /etc/pve --target "$WORK/rust/mnt" --mount-tmpfs "$WORK/fsload-tmpfs" "$@"
if [ $JSON -eq 1 ]; then
    nsenter -t "$HOLDER" -m -- "$FSLOAD" "$@" &
    FS_PID=$!
    wait "$FS_PID"
    FS_PID=
    exit 0
fi
nsenter -t "$HOLDER" -m -- "$FSLOAD" "$@" --json >"$WORK/fsload.json" &
FS_PID=$!
wait "$FS_PID"
FS_PID=
[ -z "${KEEP_JSON:-}" ] || cp "$WORK/fsload.json" "$KEEP_JSON"

echo "C: $C_PMXCFS"
echo "Rust: $RUST_PMXCFS"
awk '
    function field(line, key,    s) {
        s = line
        if (!sub(".*\"" key "\":", "", s)) return ""
        sub("[,}].*", "", s)
        gsub("\"", "", s)
        return s
    }
    function rate(x) { return x == "null" || x == "" ? "-" : sprintf("%.0f", x) }
    function us(x) { return x == "null" || x == "" ? "-" : sprintf("%.1f", x) }
    /"target":/ {
        t = field($0, "target"); p = field($0, "phase")
        if (!(p in seen)) { seen[p] = 1; order[++n] = p }
        ops[p, t] = field($0, "ops_per_s"); p50[p, t] = field($0, "p50_us")
        if (field($0, "truncated") == "true") trunc[p, t] = "*"
        files = field($0, "files"); size = field($0, "size"); big = field($0, "big_files")
    }
    END {
        printf "fsload: %s files x %s B, %s x 512 KiB; ops/s (p50 us); * = cut by the phase budget\n", files, size, big
        printf "%-10s %18s %18s %18s %7s\n", "phase", "C", "Rust", "tmpfs", "Rust/C"
        for (i = 1; i <= n; i++) {
            p = order[i]
            r = (ops[p, 1] + 0 > 0 && ops[p, 2] != "null") ? sprintf("%.2f", ops[p, 2] / ops[p, 1]) : "-"
            printf "%-10s", p
            for (t = 1; t <= 3; t++)
                printf " %18s", rate(ops[p, t]) trunc[p, t] " (" us(p50[p, t]) ")"
            printf " %7s\n", r
        }
    }
' "$WORK/fsload.json"
