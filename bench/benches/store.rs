//! Criterion benchmarks of the store: the operations FUSE and the DCDB
//! apply path call, on a tree shaped like /etc/pve.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pmxcfs_bench::{Tree, config_bytes};
use pmxcfs_store::{Durability, Op};

fn create_write(c: &mut Criterion) {
    let mut tree = Tree::new(Durability::Relaxed, 1000);
    let data = config_bytes(500);
    let mut counter = 0u64;
    c.bench_function("store/create+write 500 B (commit each)", |b| {
        b.iter(|| {
            counter += 1;
            let path = format!("nodes/pve1/qemu-server/n{counter}.tmp");
            tree.apply(&Op::Create {
                path: path.as_bytes(),
            });
            tree.apply(&Op::Write {
                path: path.as_bytes(),
                offset: 0,
                data: &data,
                truncate: false,
            });
            tree.commit();
        })
    });
}

fn rewrite(c: &mut Criterion) {
    let mut tree = Tree::new(Durability::Relaxed, 1000);
    let data = config_bytes(500);
    let mut counter = 0u64;
    c.bench_function(
        "store/rewrite 500 B in place (truncate, commit each)",
        |b| {
            b.iter(|| {
                counter += 1;
                let path = format!("nodes/pve1/qemu-server/{}.conf", 100 + counter % 1000);
                tree.apply(&Op::Write {
                    path: path.as_bytes(),
                    offset: 0,
                    data: &data,
                    truncate: true,
                });
                tree.commit();
            })
        },
    );
    c.bench_function(
        "store/atomic rewrite: create tmp, write, rename over",
        |b| {
            b.iter(|| {
                counter += 1;
                let target = format!("nodes/pve1/qemu-server/{}.conf", 100 + counter % 1000);
                let tmp = format!("{target}.tmp.{counter}");
                tree.apply(&Op::Create {
                    path: tmp.as_bytes(),
                });
                tree.apply(&Op::Write {
                    path: tmp.as_bytes(),
                    offset: 0,
                    data: &data,
                    truncate: false,
                });
                tree.apply(&Op::Rename {
                    from: tmp.as_bytes(),
                    to: target.as_bytes(),
                });
                tree.commit();
            })
        },
    );
}

fn read(c: &mut Criterion) {
    let tree = Tree::new(Durability::Relaxed, 1000);
    let mut counter = 0u64;
    c.bench_function("store/resolve path + read 500 B", |b| {
        b.iter(|| {
            counter += 1;
            let path = format!("nodes/pve1/qemu-server/{}.conf", 100 + counter % 1000);
            let reader = tree.reader();
            let entry = reader.resolve(path.as_bytes()).ok().flatten();
            black_box(entry.map(|entry| entry.data.len()))
        })
    });
}

fn index_and_checksum(c: &mut Criterion) {
    let tree = Tree::new(Durability::Relaxed, 10_000);
    c.bench_function("store/index blob over 10,000 entries", |b| {
        b.iter(|| black_box(tree.reader().index().map(|blob| blob.len())))
    });
    c.bench_function("store/whole-tree checksum over 10,000 entries", |b| {
        b.iter(|| black_box(tree.reader().checksum()))
    });
}

fn checkpoint(c: &mut Criterion) {
    c.bench_function("store/checkpoint of 100 rewrites", |b| {
        b.iter_batched_ref(
            || {
                let mut tree = Tree::new(Durability::Relaxed, 1000);
                let data = config_bytes(500);
                for vmid in 100..200u32 {
                    let path = format!("nodes/pve1/qemu-server/{vmid}.conf");
                    tree.apply(&Op::Write {
                        path: path.as_bytes(),
                        offset: 0,
                        data: &data,
                        truncate: true,
                    });
                }
                tree.commit();
                tree
            },
            |tree| tree.checkpoint(),
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(
    benches,
    create_write,
    rewrite,
    read,
    index_and_checksum,
    checkpoint
);
criterion_main!(benches);
