#!/bin/sh
# rrd-c-vs-rust.sh - RRD updates (pvestatd's SET_STATUS rrd/ bursts) on the C pmxcfs and on
# this Rust pmxcfs in the same run: without rrdcached, then with one rrdcached for both.
#
# usage: bench/rrd-c-vs-rust.sh /path/to/c/pmxcfs [--keys N] [--reps R]
#
# Needs root, util-linux, /dev/fuse, overlayfs, rrdcached. Build first:
#   cargo build --release -p pmxcfs-bench --bin rrdburst --bin ipcload -p pmxcfs --bin pmxcfs
# (override with RRDBURST=..., IPCLOAD=... and RUST_PMXCFS=...). The C binary is not part of this
# repository; bench/c-vs-rust.sh says how to get one.
#
# Both daemons run in local mode in one private namespace (bench/c-and-rust-ns.sh); the C
# daemon writes its files to /var/lib/rrdcached/db, ours to /var/lib/rrdcached/rust (the same
# tmpfs);
# both use /run/rrdcached.sock when the second half starts rrdcached there. rrdburst says
# what it measures.

set -eu

NAME=rrd-c-vs-rust
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/c-and-rust-ns.sh"
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
check_c_binary "$1"
shift
command -v rrdcached >/dev/null || { echo "$NAME: rrdcached missing" >&2; exit 1; }
release_binary RRDBURST rrdburst
release_binary IPCLOAD ipcload
release_binary RUST_PMXCFS pmxcfs

WORK=$(mktemp -d /tmp/rrd-c-vs-rust.XXXXXX)
RUST_EXTRA_ARGS="--rrd-dir /var/lib/rrdcached/rust --rrdcached-socket /run/rrdcached.sock"
ns_up
in_ns mkdir -p /var/lib/rrdcached/db /var/lib/rrdcached/rust
daemons_up
wait_for_ipc "$IPCLOAD" pve2 pve2-rust

echo "C: $C_PMXCFS"
echo "Rust: $RUST_PMXCFS"
TARGETS="--target C=pve2:/etc/pve:/var/lib/rrdcached/db --target Rust=pve2-rust:$WORK/rust/mnt:/var/lib/rrdcached/rust"
# shellcheck disable=SC2086
in_ns "$RRDBURST" $TARGETS "$@"

in_ns mkdir -p /run/rrdcached-journal
# In the foreground, so the cleanup stops it whatever happens.
in_ns_bg rrdcached -g -l unix:/run/rrdcached.sock -b /var/lib/rrdcached -F -p /run/rrdcached.pid \
    -j /run/rrdcached-journal -w 300 >/dev/null 2>&1
in_ns sh -c 'i=0; until [ -S /run/rrdcached.sock ]; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done'
# Our writer tries rrdcached again 10 s after it last found it missing.
sleep 11
# shellcheck disable=SC2086
in_ns "$RRDBURST" $TARGETS --rrdcached /run/rrdcached.sock --id-base 500000 "$@"
