# c-and-rust-ns.sh - sourced by the same-run scripts (c-vs-rust.sh, ipc-c-vs-rust.sh):
# the C pmxcfs and this Rust pmxcfs, both in local mode, in one private mount and
# network namespace held by a `sleep` process.
#
# `pmxcfs -l -f` (C) has fixed paths (/etc/pve, /var/lib/pve-cluster, /run/pve-cluster,
# /var/run/pve-cluster.pid), so in the namespace /etc is an overlay (writes, such as the
# /etc/pve mountpoint and an /etc/hosts line giving the node name a non-loopback
# address, land in a tmpfs), /var/lib and /run are tmpfs. Nothing of the host's is used
# or changed. The private network namespace keeps both IPC servers (libqb, abstract
# sockets: C on "pve2", Rust on "pve2-rust") away from a host's pmxcfs.
# The Rust daemon runs on $WORK/rust/{mnt,data,run}.
#
# The caller sets NAME (for messages) and REPO, sources this file, then sets C_PMXCFS
# (check_c_binary), RUST_PMXCFS (release_binary) and WORK (a fresh temporary directory),
# optionally RUST_EXTRA_ARGS (more options of the Rust daemon), and calls ns_up and
# daemons_up; `cleanup` (trapped on EXIT) stops the
# daemons and $EXTRA_PID (a load generator), detaches what a killed daemon left, ends the
# namespace and removes $WORK.

HOLDER= C_PID= R_PID= EXTRA_PID=

usage() { # lines 2-5 of the script's header
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# check_c_binary PATH: root, and PATH an executable; sets C_PMXCFS.
check_c_binary() {
    [ "$(id -u)" -eq 0 ] || { echo "$NAME: must run as root" >&2; exit 1; }
    [ -x "$1" ] && [ -f "$1" ] || { echo "$NAME: $1: not an executable" >&2; exit 1; }
    C_PMXCFS=$(readlink -f "$1")
}

# release_binary VAR NAME: $VAR if set, else this repository's release build of NAME.
release_binary() {
    eval "value=\${$1:-}"
    [ -n "$value" ] || value="${CARGO_TARGET_DIR:-$REPO/target}/release/$2"
    value=$(readlink -f "$value")
    [ -x "$value" ] || {
        echo "$NAME: $value missing; cargo build --release -p pmxcfs -p pmxcfs-bench" >&2
        exit 1
    }
    eval "$1=\$value"
}

# wait_for_ipc IPCLOAD SERVICE...: until each service answers (the C daemon starts its IPC
# server after the mount).
wait_for_ipc() {
    load=$1
    shift
    for service in "$@"; do
        i=0
        until in_ns "$load" --service "$service" --op version --seconds 0.05 >/dev/null 2>&1; do
            [ $i -lt 200 ] || { echo "$NAME: $service does not answer" >&2; exit 1; }
            sleep 0.1
            i=$((i + 1))
        done
    done
}

in_ns() { nsenter -t "$HOLDER" -m -n -- "$@"; }

# in_ns_bg CMD...: CMD in the background as EXTRA_PID, which the cleanup stops (nsenter
# execs CMD, so the pid is CMD's own; `in_ns CMD &` would give a subshell's).
in_ns_bg() {
    nsenter -t "$HOLDER" -m -n -- "$@" &
    EXTRA_PID=$!
}

# The fuse mounts of the namespace, read from the host through the holder.
ns_mounted() { grep -q " $1 fuse" "/proc/$HOLDER/mounts" 2>/dev/null; }

stop() { # pid name: TERM, up to 10 s, then KILL; always reaped
    [ -n "$1" ] || return 0
    kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
    kill -TERM "$1" 2>/dev/null || true
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then
        echo "$NAME: $2 (pid $1) ignored SIGTERM, killing it" >&2
        kill -KILL "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}

cleanup() {
    status=$?
    trap - EXIT INT TERM HUP
    set +e
    stop "$EXTRA_PID" "load generator"
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

wait_for_mount() { # pid mountpoint name
    i=0
    until ns_mounted "$2" && in_ns test -r "$2/.version"; do
        kill -0 "$1" 2>/dev/null || { echo "$NAME: $3 exited during startup" >&2; exit 1; }
        [ $i -lt 200 ] || { echo "$NAME: $3 did not mount $2 within 20 s" >&2; exit 1; }
        sleep 0.1
        i=$((i + 1))
    done
}

# The namespace and its private /etc, /var/lib, /run.
ns_up() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    unshare -m -n --propagation private sleep 2147483647 &
    HOLDER=$!
    i=0
    until [ "$(readlink "/proc/$HOLDER/ns/mnt" 2>/dev/null)" != "$(readlink /proc/self/ns/mnt)" ]; do
        kill -0 "$HOLDER" 2>/dev/null && [ $i -lt 100 ] || { echo "$NAME: unshare failed" >&2; exit 1; }
        sleep 0.05
        i=$((i + 1))
    done
    mkdir -p "$WORK/rust/mnt" "$WORK/rust/data" "$WORK/rust/run" "$WORK/fsload-tmpfs"
    in_ns ip link set lo up
    in_ns sh -euc '
        mount -t tmpfs -o mode=0755 c-and-rust /run
        mkdir -p /run/c-and-rust-etc/upper /run/c-and-rust-etc/work
        if ! mount -t overlay c-and-rust \
                -o lowerdir=/etc,upperdir=/run/c-and-rust-etc/upper,workdir=/run/c-and-rust-etc/work /etc; then
            # No overlayfs: only possible if /etc/pve exists already (cover it with a tmpfs).
            [ -d /etc/pve ] || { echo "no overlayfs and no /etc/pve to mount over" >&2; exit 1; }
            mount -t tmpfs -o mode=0750 c-and-rust /etc/pve
            cp /etc/hosts /run/c-and-rust-hosts
            mount --bind /run/c-and-rust-hosts /etc/hosts
        fi
        mount -t tmpfs -o mode=0755 c-and-rust /var/lib
        mkdir -p /etc/pve
        # The C daemon wants the node name to resolve to a non-loopback address.
        hosts=$(grep -vw -- "$1" /etc/hosts || true)
        printf "%s\n192.0.2.1 %s\n" "$hosts" "$1" > /etc/hosts
    ' c-and-rust "$(uname -n)"
}

daemons_up() {
    nsenter -t "$HOLDER" -m -n -- "$C_PMXCFS" -l -f >"$WORK/c.log" 2>&1 &
    C_PID=$!
    nsenter -t "$HOLDER" -m -n -- "$RUST_PMXCFS" -f -l --mountpoint "$WORK/rust/mnt" \
        --data-dir "$WORK/rust/data" --run-dir "$WORK/rust/run" \
        --pid-file "$WORK/rust/pmxcfs.pid" --nodename bench --ipc-service pve2-rust \
        ${RUST_EXTRA_ARGS:-} >"$WORK/rust.log" 2>&1 &
    R_PID=$!
    wait_for_mount "$C_PID" /etc/pve "C pmxcfs"
    wait_for_mount "$R_PID" "$WORK/rust/mnt" "Rust pmxcfs"
}
