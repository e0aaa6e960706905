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

usage() {
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
C_PMXCFS=$1
shift
[ "$(id -u)" -eq 0 ] || { echo "rrd-c-vs-rust: must run as root" >&2; exit 1; }
[ -x "$C_PMXCFS" ] && [ -f "$C_PMXCFS" ] || { echo "rrd-c-vs-rust: $C_PMXCFS: not an executable" >&2; exit 1; }
command -v rrdcached >/dev/null || { echo "rrd-c-vs-rust: rrdcached missing" >&2; exit 1; }
C_PMXCFS=$(readlink -f "$C_PMXCFS")

REPO=$(cd "$(dirname "$0")/.." && pwd)
RRDBURST=$(readlink -f "${RRDBURST:-${CARGO_TARGET_DIR:-$REPO/target}/release/rrdburst}")
IPCLOAD=$(readlink -f "${IPCLOAD:-${CARGO_TARGET_DIR:-$REPO/target}/release/ipcload}")
RUST_PMXCFS=$(readlink -f "${RUST_PMXCFS:-${CARGO_TARGET_DIR:-$REPO/target}/release/pmxcfs}")
for b in "$RRDBURST" "$IPCLOAD" "$RUST_PMXCFS"; do
    [ -x "$b" ] || { echo "rrd-c-vs-rust: $b missing; cargo build --release -p pmxcfs-bench --bin rrdburst --bin ipcload -p pmxcfs --bin pmxcfs" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/rrd-c-vs-rust.XXXXXX)
NAME=rrd-c-vs-rust
RUST_EXTRA_ARGS="--rrd-dir /var/lib/rrdcached/rust --rrdcached-socket /run/rrdcached.sock"
. "$REPO/bench/c-and-rust-ns.sh"
ns_up
in_ns mkdir -p /var/lib/rrdcached/db /var/lib/rrdcached/rust
daemons_up
for service in pve2 pve2-rust; do
    i=0
    until in_ns "$IPCLOAD" --service "$service" --op version --seconds 0.05 >/dev/null 2>&1; do
        [ $i -lt 200 ] || { echo "rrd-c-vs-rust: $service does not answer" >&2; exit 1; }
        sleep 0.1
        i=$((i + 1))
    done
done

echo "C: $C_PMXCFS"
echo "Rust: $RUST_PMXCFS"
TARGETS="--target C=pve2:/etc/pve:/var/lib/rrdcached/db --target Rust=pve2-rust:$WORK/rust/mnt:/var/lib/rrdcached/rust"
# shellcheck disable=SC2086
in_ns "$RRDBURST" $TARGETS "$@"

in_ns mkdir -p /run/rrdcached-journal
# In the foreground, so the cleanup stops it whatever happens.
in_ns rrdcached -g -l unix:/run/rrdcached.sock -b /var/lib/rrdcached -F -p /run/rrdcached.pid \
    -j /run/rrdcached-journal -w 300 >/dev/null 2>&1 &
EXTRA_PID=$!
in_ns sh -c 'i=0; until [ -S /run/rrdcached.sock ]; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done'
# Our writer tries rrdcached again 10 s after it last found it missing.
sleep 11
# shellcheck disable=SC2086
in_ns "$RRDBURST" $TARGETS --rrdcached /run/rrdcached.sock --id-base 500000 "$@"
