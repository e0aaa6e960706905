//! Bytes written to storage per small change, for the durability modes and
//! commit patterns the daemon uses. Prints a table (see BENCHMARKS.md).
//!
//! Counted with /proc/self/io `write_bytes`, which counts every page this
//! process dirties (4 KiB each, once per dirtying) — what the device gets.

use pmxcfs_bench::{Tree, config_bytes, process_write_bytes};
use pmxcfs_store::{CheckpointLimits, Durability, Op};

const CHANGES: u64 = 4000;

/// One measured workload: `ops_per_change` FUSE-level ops make one change.
struct Workload {
    name: &'static str,
    durability: Durability,
    /// Commit after this many changes (1 = every change acknowledged alone).
    group: u64,
    /// Relaxed mode: sync after this many commits (the daemon's timer).
    sync_every: u64,
    /// Checkpoint every commit (what an LMDB-only store would do).
    lmdb_per_commit: bool,
    atomic_rewrite: bool,
}

fn run(workload: &Workload) -> (f64, f64) {
    let mut tree = Tree::new(workload.durability, 200);
    if workload.lmdb_per_commit {
        tree.session.set_checkpoint_limits(CheckpointLimits {
            records_max: 1,
            journal_bytes_max: 1,
        });
    }
    let data = config_bytes(500);
    let before = process_write_bytes();
    let mut commits = 0u64;
    for change in 0..CHANGES {
        let target = format!("nodes/pve1/qemu-server/{}.conf", 100 + change % 200);
        if workload.atomic_rewrite {
            let tmp = format!("{target}.tmp.{change}");
            // Through FUSE each of the three ops is acknowledged on its own.
            tree.apply(&Op::Create {
                path: tmp.as_bytes(),
            });
            tree.commit();
            tree.apply(&Op::Write {
                path: tmp.as_bytes(),
                offset: 0,
                data: &data,
                truncate: false,
            });
            tree.commit();
            tree.apply(&Op::Rename {
                from: tmp.as_bytes(),
                to: target.as_bytes(),
            });
        } else {
            tree.apply(&Op::Write {
                path: target.as_bytes(),
                offset: 0,
                data: &data,
                truncate: true,
            });
        }
        if (change + 1).is_multiple_of(workload.group) {
            tree.commit();
            commits += 1;
            if workload.durability == Durability::Relaxed
                && commits.is_multiple_of(workload.sync_every)
            {
                tree.sync();
            }
        }
    }
    tree.commit();
    tree.sync();
    let journal_bytes = process_write_bytes() - before;
    tree.checkpoint();
    let total = process_write_bytes() - before;
    (
        journal_bytes as f64 / CHANGES as f64,
        total as f64 / CHANGES as f64,
    )
}

fn main() {
    let workloads = [
        Workload {
            name: "rewrite 500 B, strict, 1 change per commit",
            durability: Durability::Strict,
            group: 1,
            sync_every: 1,
            lmdb_per_commit: false,
            atomic_rewrite: false,
        },
        Workload {
            name: "rewrite 500 B, strict, 8 changes per commit",
            durability: Durability::Strict,
            group: 8,
            sync_every: 1,
            lmdb_per_commit: false,
            atomic_rewrite: false,
        },
        Workload {
            name: "rewrite 500 B, relaxed, sync every 10 commits",
            durability: Durability::Relaxed,
            group: 1,
            sync_every: 10,
            lmdb_per_commit: false,
            atomic_rewrite: false,
        },
        Workload {
            name: "atomic rewrite (create, write, rename), strict",
            durability: Durability::Strict,
            group: 1,
            sync_every: 1,
            lmdb_per_commit: false,
            atomic_rewrite: true,
        },
        Workload {
            name: "atomic rewrite, relaxed, sync every 10 commits",
            durability: Durability::Relaxed,
            group: 1,
            sync_every: 10,
            lmdb_per_commit: false,
            atomic_rewrite: true,
        },
        Workload {
            name: "rewrite 500 B, LMDB commit per change (no journal)",
            durability: Durability::Strict,
            group: 1,
            sync_every: 1,
            lmdb_per_commit: true,
            atomic_rewrite: false,
        },
    ];
    println!("{CHANGES} changes each; bytes per change (journal only / incl. final checkpoint)");
    for workload in &workloads {
        let (journal, total) = run(workload);
        println!("{:<55} {:>8.0} B {:>8.0} B", workload.name, journal, total);
    }
}
