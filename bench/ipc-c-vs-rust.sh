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

NAME=ipc-c-vs-rust
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/c-and-rust-ns.sh"
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
check_c_binary "$1"
shift
release_binary IPCLOAD ipcload
release_binary RUST_PMXCFS pmxcfs

WORK=$(mktemp -d /tmp/ipc-c-vs-rust.XXXXXX)
ns_up
daemons_up

# The C daemon starts its IPC server after the mount: wait until both answer.
wait_for_ipc "$IPCLOAD" pve2 pve2-rust

echo "C: $C_PMXCFS"
echo "Rust: $RUST_PMXCFS"
in_ns_bg "$IPCLOAD" --compare "C=pve2:/etc/pve" --compare "Rust=pve2-rust:$WORK/rust/mnt" "$@"
wait "$EXTRA_PID"
EXTRA_PID=
