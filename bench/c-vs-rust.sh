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
# What it does: both daemons in local mode in one private namespace
# (bench/c-and-rust-ns.sh says how), and fsload in it with three targets: [1] the C
# mount, [2] the Rust mount, [3] a tmpfs.
# Output: a table per phase (ops/s of each target, Rust/C ratio, p50s); with --json,
# fsload's raw JSON lines. Set KEEP_JSON=FILE to keep the raw JSON of a table run.
# Teardown (also on failure or Ctrl-C): both daemons by pid, their mounts, the
# namespace holder, the temporary directory.

set -eu

NAME=c-vs-rust
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/c-and-rust-ns.sh"
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
check_c_binary "$1"
shift
release_binary FSLOAD fsload
release_binary RUST_PMXCFS pmxcfs

JSON=0
for a in "$@"; do [ "$a" = --json ] && JSON=1; done

WORK=$(mktemp -d /tmp/c-vs-rust.XXXXXX)
ns_up
daemons_up

set -- --target /etc/pve --target "$WORK/rust/mnt" --mount-tmpfs "$WORK/fsload-tmpfs" "$@"
if [ $JSON -eq 1 ]; then
    in_ns_bg "$FSLOAD" "$@"
    wait "$EXTRA_PID"
    EXTRA_PID=
    exit 0
fi
in_ns_bg "$FSLOAD" "$@" --json >"$WORK/fsload.json"
wait "$EXTRA_PID"
EXTRA_PID=
[ -z "${KEEP_JSON:-}" ] || cp "$WORK/fsload.json" "$KEEP_JSON"

echo "C: $C_PMXCFS"
echo "Rust: $RUST_PMXCFS"
# Memory of both daemons after the run (the tree fsload left: its last phase deletes the
# small files, the big ones stay): resident now and at the peak.
mem() { # pid
    awk '/^VmHWM|^VmRSS|^RssAnon|^RssFile/ { printf "%s %.0f MiB  ", $1, $2 / 1024 }' "/proc/$1/status" 2>/dev/null
}
echo "daemon memory: C $(mem "$C_PID")| Rust $(mem "$R_PID")"
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
