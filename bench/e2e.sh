#!/usr/bin/env bash
# fsload against the release daemon (local mode) and a tmpfs, in one run.
# Needs root. Build first: cargo build --release -p pmxcfs -p pmxcfs-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/pmxcfs-e2e.XXXXXX)
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
    umount -l "$work/mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
${PMXCFS_BIN:-${CARGO_TARGET_DIR:-target}/release/pmxcfs} -f -l --mountpoint "$work/mnt" --data-dir "$work/data" \
    --run-dir "$work/run" --pid-file "$work/pid" --nodename bench 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 50); do grep -q " $work/mnt fuse" /proc/mounts && break; sleep 0.1; done
${CARGO_TARGET_DIR:-target}/release/fsload --target "$work/mnt" --mount-tmpfs "$work/tmpfs" "$@"
