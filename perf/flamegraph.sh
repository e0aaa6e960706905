#!/usr/bin/env bash
# Flamegraph of the daemon under the end-to-end load (bench/src/bin/fsload.rs).
#
#   perf/flamegraph.sh [OUT.svg]     (make perf)
#
# Starts the release daemon in local mode on temporary dirs, samples it with
# `perf record -e cpu-clock -F 999 -g` (hardware counters are not available in
# these VMs) while fsload runs against its mountpoint, and renders the stacks
# with inferno. Needs root (FUSE mount), linux-perf and inferno.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-perf/out/daemon.svg}
mkdir -p "$(dirname "$out")"
command -v perf >/dev/null || { apt-get install -y -q linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null || cargo install --locked inferno >/dev/null
cargo build --release --locked -p pmxcfs -p pmxcfs-bench --bin pmxcfs --bin fsload

work=$(mktemp -d /tmp/pmxcfs-perf.XXXXXX)
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
    umount -l "$work/mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

${CARGO_TARGET_DIR:-target}/release/pmxcfs -f -l --mountpoint "$work/mnt" --data-dir "$work/data" \
    --run-dir "$work/run" --pid-file "$work/pid" --nodename perf 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 50); do grep -q " $work/mnt fuse" /proc/mounts && break; sleep 0.1; done

perf record -e cpu-clock -F 999 -g -p "$daemon_pid" -o "$work/perf.data" 2>/dev/null &
perf_pid=$!
sleep 0.5
${CARGO_TARGET_DIR:-target}/release/fsload --target "$work/mnt" --files 1000 >"$work/fsload.txt"
kill -INT "$perf_pid"; wait "$perf_pid" || true
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"${out%.svg}.folded"
inferno-flamegraph <"${out%.svg}.folded" >"$out"
cat "$work/fsload.txt"
echo "flamegraph: $out"
