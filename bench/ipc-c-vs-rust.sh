#!/bin/sh
# ipc-c-vs-rust.sh - the IPC service "pve2" of the C pmxcfs and of this Rust pmxcfs
# under the same ipcload run.
#
# usage: bench/ipc-c-vs-rust.sh /path/to/c/pmxcfs [--seconds S] [--reps R] [--json]
#
# Needs root, util-linux (unshare, nsenter), /dev/fuse, overlayfs, libqb. Build first:
#   cargo build --release -p pmxcfs-bench --bin ipcload -p pmxcfs --bin pmxcfs
# (override the binaries with IPCLOAD=... and RUST_PMXCFS=...). The C binary is not
# part of this repository; bench/c-vs-rust.sh says how to get one.
#
# Both daemons run in local mode in one private namespace (bench/c-and-rust-ns.sh);
# ipcload runs the matrix there, C and Rust interleaved: GET_STATUS, GET_CONFIG of a
# 4 KiB file and SET_STATUS with 1 and 16 client processes, and GET_STATUS while a
# tmp-file + rename write loop runs on the same daemon. Output: medians of the
# repetitions, requests/s (p50/p99 µs), Rust/C.

set -eu

usage() {
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
C_PMXCFS=$1
shift
[ "$(id -u)" -eq 0 ] || { echo "ipc-c-vs-rust: must run as root" >&2; exit 1; }
[ -x "$C_PMXCFS" ] && [ -f "$C_PMXCFS" ] || { echo "ipc-c-vs-rust: $C_PMXCFS: not an executable" >&2; exit 1; }
C_PMXCFS=$(readlink -f "$C_PMXCFS")

REPO=$(cd "$(dirname "$0")/.." && pwd)
IPCLOAD=$(readlink -f "${IPCLOAD:-${CARGO_TARGET_DIR:-$REPO/target}/release/ipcload}")
RUST_PMXCFS=$(readlink -f "${RUST_PMXCFS:-${CARGO_TARGET_DIR:-$REPO/target}/release/pmxcfs}")
for b in "$IPCLOAD" "$RUST_PMXCFS"; do
    [ -x "$b" ] || { echo "ipc-c-vs-rust: $b missing; cargo build --release -p pmxcfs-bench --bin ipcload -p pmxcfs --bin pmxcfs" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/ipc-c-vs-rust.XXXXXX)
NAME=ipc-c-vs-rust
. "$REPO/bench/c-and-rust-ns.sh"
ns_up
daemons_up

# The C daemon starts its IPC server after the mount: wait until both answer.
for service in pve2 pve2-rust; do
    i=0
    until in_ns "$IPCLOAD" --service "$service" --op version --seconds 0.05 >/dev/null 2>&1; do
        [ $i -lt 200 ] || { echo "ipc-c-vs-rust: $service does not answer" >&2; exit 1; }
        sleep 0.1
        i=$((i + 1))
    done
done

echo "C: $C_PMXCFS"
echo "Rust: $RUST_PMXCFS"
in_ns "$IPCLOAD" --compare "C=pve2:/etc/pve" --compare "Rust=pve2-rust:$WORK/rust/mnt" "$@" &
EXTRA_PID=$!
wait "$EXTRA_PID"
EXTRA_PID=
