//! Fault campaign: three real corosync nodes (tests/cluster/lab.sh), one
//! `pmxcfs` each, a writer on every node doing what PVE does for a config
//! (write `NAME.tmp`, rename it over `NAME`) and a model of every
//! acknowledged write. Faults, each with the writers running:
//!
//! * partition and heal one node (also the leader, node 1, and a node that
//!   is still being resynced after a restart);
//! * kill -9 of a daemon and a restart on the same mountpoint;
//! * kill -9 of a corosync and a restart;
//! * a full disk on node 3 (its data dir is a small tmpfs): it answers its
//!   writers ENOSPC and leaves the group, the others go on; once there is
//!   space again it recovers its store when it rejoins, without a restart;
//! * a slow disk on node 2 throughout (every fsync 50 ms longer, an LD_PRELOAD
//!   shim): it and the others keep up (the writers' progress is reported).
//!
//! After every cycle the writers pause, everything is healed and restarted,
//! and the test requires: all stores identical (rows: inode, version,
//! writer, mtime, content), every file at its last acknowledged version or
//! a later attempted one (never older), and no errno a fault does not
//! explain. `make test` runs a short form; `PMXCFS_FAULT_CYCLES=long`
//! (`make fault-long`) the long one: 20 partitions, 20 daemon kills, 10
//! corosync kills, 3 full disks; `PMXCFS_FAULT_SOAK_SECS=1800` (`make soak`)
//! random faults for that long, with each daemon's RSS, open fds and journal
//! size sampled after every cycle (bounded, and reported);
//! `PMXCFS_FAULT_PLAN=full,cut3,...` replays a given sequence. Needs root, FUSE
//! and corosync: fails, never skips.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::node::{Node, wait_converged, wait_for, wait_writable};
use common::slow_sync_shim;

const NODES: u32 = 3;
const FILES: u64 = 20;
/// How long a fault lasts with the writers running.
const FAULT_FOR: Duration = Duration::from_millis(1500);

/// Errnos a fault explains: no quorum or no majority (EACCES), the daemon
/// killed under the call (ENOTCONN, ECONNABORTED; ECANCELED for a request
/// the kernel had queued on the io_uring transport; ENOENT once its
/// /proc/PID/root is gone), a full disk (ENOSPC).
const EXPLAINED: [i32; 6] = [
    libc::EACCES,
    libc::ENOTCONN,
    libc::ECONNABORTED,
    libc::ECANCELED,
    libc::ENOENT,
    libc::ENOSPC,
];
/// The node whose data dir is a small tmpfs.
const SMALL_DISK_NODE: usize = 2;
/// The node whose fsyncs take 50 ms longer (tests/shim/slow_sync.c).
const SLOW_DISK_NODE: usize = 1;

/// A tmpfs mounted for the test, unmounted when dropped (also on failure).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path) -> SmallDisk {
        fs::create_dir_all(at).expect("mountpoint");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs at {}", at.display());
        SmallDisk(at.to_path_buf())
    }

    /// Fills it; returns the filler (remove it to free the space).
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut file = fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[derive(Default)]
struct FileModel {
    acked: u64,
    attempted: u64,
}

struct Writer {
    index: u32,
    mount: Arc<Mutex<PathBuf>>,
    pause: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    /// Writes refused with ENOSPC.
    refused_full: Arc<AtomicU64>,
    model: Arc<Mutex<BTreeMap<u64, FileModel>>>,
    unexpected: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(node: &Node) -> Writer {
        let mut writer = Writer {
            index: node.index,
            mount: Arc::new(Mutex::new(node.path(""))),
            pause: Arc::new(AtomicBool::new(false)),
            idle: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::new(AtomicU64::new(0)),
            refused_full: Arc::new(AtomicU64::new(0)),
            model: Arc::new(Mutex::new(BTreeMap::new())),
            unexpected: Arc::new(Mutex::new(Vec::new())),
            thread: None,
        };
        let (index, mount, pause, idle, stop, acked, model, unexpected) = (
            writer.index,
            writer.mount.clone(),
            writer.pause.clone(),
            writer.idle.clone(),
            writer.stop.clone(),
            writer.acked.clone(),
            writer.model.clone(),
            writer.unexpected.clone(),
        );
        let refused_full = writer.refused_full.clone();
        writer.thread = Some(thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if pause.load(Ordering::Relaxed) {
                    idle.store(true, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                idle.store(false, Ordering::Relaxed);
                let file = k % FILES;
                k += 1;
                let version = {
                    let mut model = model.lock().unwrap();
                    let entry = model.entry(file).or_default();
                    entry.attempted += 1;
                    entry.attempted
                };
                let base = mount.lock().unwrap().join(format!("fc/n{index}"));
                let tmp = base.join(format!("f{file}.tmp.{index}"));
                let content = format!("n{index} f{file} v{version}\n");
                let result = fs::write(&tmp, &content)
                    .and_then(|()| fs::rename(&tmp, base.join(format!("f{file}"))));
                match result {
                    Ok(()) => {
                        model.lock().unwrap().entry(file).or_default().acked = version;
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        let errno = error.raw_os_error().unwrap_or(0);
                        if errno == libc::ENOSPC {
                            refused_full.fetch_add(1, Ordering::Relaxed);
                        }
                        if !EXPLAINED.contains(&errno) {
                            unexpected
                                .lock()
                                .unwrap()
                                .push(format!("node {index} f{file} v{version}: {error}"));
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }));
        writer
    }

    /// Pauses and waits until the writer is between two writes.
    fn pause(&self, nodes: &[Node]) {
        self.idle.store(false, Ordering::Relaxed);
        self.pause.store(true, Ordering::Relaxed);
        wait_for(&format!("writer {} idle", self.index), nodes, || {
            self.idle.load(Ordering::Relaxed)
        });
    }

    fn resume(&self, node: &Node) {
        *self.mount.lock().unwrap() = node.path("");
        self.pause.store(false, Ordering::Relaxed);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.pause.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every file of every writer holds its last acknowledged version or a later
/// attempted one, on every node (the stores are equal already).
#[track_caller]
fn check_model(nodes: &[Node], writers: &[Writer], cycle: &str) {
    for writer in writers {
        let model = writer.model.lock().unwrap();
        for (file, state) in model.iter() {
            let rel = format!("fc/n{}/f{file}", writer.index);
            let now = fs::read_to_string(nodes[0].path(&rel)).ok();
            let version = now.as_deref().and_then(|text| {
                text.trim_end()
                    .rsplit(" v")
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            });
            let ok = match version {
                Some(v) => v >= state.acked && v <= state.attempted,
                None => state.acked == 0,
            };
            assert!(
                ok,
                "after {cycle}: {rel} holds {now:?}, acknowledged v{}, attempted up to v{}",
                state.acked, state.attempted
            );
        }
        let unexpected = writer.unexpected.lock().unwrap();
        assert!(
            unexpected.is_empty(),
            "after {cycle}: errnos no fault explains: {:?}",
            &unexpected[..unexpected.len().min(10)]
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Cut node N from the others, heal it.
    Partition(usize),
    /// Restart node N's daemon, cut it while it resyncs, heal it.
    PartitionDuringResync(usize),
    /// kill -9 node N's daemon, start it again.
    KillDaemon(usize),
    /// kill -9 node N's corosync, start it again.
    KillCorosync(usize),
    /// Fill the small disk, free it again.
    FullDisk,
}

fn campaign(long: bool) -> Vec<Fault> {
    let mut faults = Vec::new();
    let (partitions, kills, corosyncs, full) = if long { (20, 20, 10, 3) } else { (3, 3, 2, 1) };
    for i in 0..partitions {
        // The leader (node 1) every third time; a resync every fourth.
        let node = if i % 3 == 0 { 0 } else { 1 + i % 2 };
        faults.push(if i % 4 == 3 {
            Fault::PartitionDuringResync(node)
        } else {
            Fault::Partition(node)
        });
    }
    for i in 0..kills {
        faults.push(Fault::KillDaemon(i % NODES as usize));
    }
    for i in 0..corosyncs {
        faults.push(Fault::KillCorosync((i + 2) % NODES as usize));
    }
    for _ in 0..full {
        faults.push(Fault::FullDisk);
    }
    // Interleave the kinds.
    let mut mixed = Vec::new();
    let mut kinds: Vec<std::collections::VecDeque<Fault>> = vec![
        faults
            .iter()
            .copied()
            .filter(|f| matches!(f, Fault::Partition(_) | Fault::PartitionDuringResync(_)))
            .collect(),
        faults
            .iter()
            .copied()
            .filter(|f| matches!(f, Fault::KillDaemon(_)))
            .collect(),
        faults
            .iter()
            .copied()
            .filter(|f| matches!(f, Fault::KillCorosync(_)))
            .collect(),
        faults
            .iter()
            .copied()
            .filter(|f| matches!(f, Fault::FullDisk))
            .collect(),
    ];
    while kinds.iter().any(|k| !k.is_empty()) {
        for kind in kinds.iter_mut() {
            if let Some(fault) = kind.pop_front() {
                mixed.push(fault);
            }
        }
    }
    mixed
}

/// `PMXCFS_FAULT_PLAN`: faults to replay, e.g. `full,cut3,kill1,corosync2,resync3`
/// (node numbers from 1), to reproduce a soak's sequence.
fn parse_plan(plan: &str) -> Vec<Fault> {
    plan.split(',')
        .map(|item| {
            let item = item.trim();
            let node = |prefix: &str| -> usize {
                let n: usize = item[prefix.len()..].parse().expect("plan: node number");
                assert!((1..=NODES as usize).contains(&n), "plan: node {n}");
                n - 1
            };
            match item {
                "full" => Fault::FullDisk,
                _ if item.starts_with("cut") => Fault::Partition(node("cut")),
                _ if item.starts_with("resync") => Fault::PartitionDuringResync(node("resync")),
                _ if item.starts_with("kill") => Fault::KillDaemon(node("kill")),
                _ if item.starts_with("corosync") => Fault::KillCorosync(node("corosync")),
                _ => panic!("plan: unknown fault {item:?}"),
            }
        })
        .collect()
}

fn inject(fault: Fault, lab: &Lab, nodes: &mut [Node], writers: &[Writer], disk: &SmallDisk) {
    match fault {
        Fault::FullDisk => {
            let filler = disk.fill();
            // Its writer is refused with ENOSPC, the others go on.
            let full = &writers[SMALL_DISK_NODE];
            let refused_before = full.refused_full.load(Ordering::Relaxed);
            wait_for("a write refused for the full disk", nodes, || {
                full.refused_full.load(Ordering::Relaxed) > refused_before
            });
            let others = || -> u64 {
                writers
                    .iter()
                    .filter(|w| w.index as usize != SMALL_DISK_NODE + 1)
                    .map(|w| w.acked.load(Ordering::Relaxed))
                    .sum()
            };
            let before = others();
            wait_for("the other nodes writing on", nodes, || {
                others() > before + 20
            });
            fs::remove_file(&filler).expect("free the disk");
            // It recovers at its rejoin (6 s after it left): writable again.
            let node = &nodes[SMALL_DISK_NODE];
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match fs::write(node.path("after-full-disk"), b"space again") {
                    Ok(()) => break,
                    Err(error) => {
                        let errno = error.raw_os_error().unwrap_or(0);
                        assert!(
                            errno == libc::ENOSPC || errno == libc::EACCES,
                            "node {} after the disk was freed: {error}",
                            node.index
                        );
                        assert!(
                            Instant::now() < deadline,
                            "node {} not writable 30 s after the disk was freed\n{}",
                            node.index,
                            node.log_tail()
                        );
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        Fault::Partition(n) => {
            lab.run(&["cut", &(n + 1).to_string()]);
            thread::sleep(FAULT_FOR);
            lab.run(&["heal", &(n + 1).to_string()]);
        }
        Fault::PartitionDuringResync(n) => {
            writers[n].pause(nodes);
            nodes[n].stop();
            nodes[n].start(lab);
            writers[n].resume(&nodes[n]);
            // Right after the start: the node is joining and resyncing.
            thread::sleep(Duration::from_millis(30));
            lab.run(&["cut", &(n + 1).to_string()]);
            thread::sleep(FAULT_FOR);
            lab.run(&["heal", &(n + 1).to_string()]);
        }
        Fault::KillDaemon(n) => {
            thread::sleep(FAULT_FOR / 2);
            let mut dead = nodes[n].child.take().expect("running");
            let _ = dead.kill();
            // The new daemon aborts a dead one's connection if a writer
            // keeps it from exiting; start it first, then reap the old one.
            thread::sleep(Duration::from_millis(100));
            nodes[n].start(lab);
            let _ = dead.wait();
            writers[n].resume(&nodes[n]);
            thread::sleep(FAULT_FOR / 2);
        }
        Fault::KillCorosync(n) => {
            lab.run(&["kill", &(n + 1).to_string()]);
            thread::sleep(FAULT_FOR);
            lab.run(&["start", &(n + 1).to_string()]);
        }
    }
}

/// A random fault (soak): splitmix64 over `state`.
fn random_fault(state: &mut u64) -> Fault {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let node = (z >> 8) as usize % NODES as usize;
    match z % 20 {
        0..=5 => Fault::Partition(node),
        6..=7 => Fault::PartitionDuringResync(node),
        8..=13 => Fault::KillDaemon(node),
        14..=17 => Fault::KillCorosync(node),
        _ => Fault::FullDisk,
    }
}

/// (RSS KiB, open fds, journal bytes) of a running node's daemon.
fn footprint(node: &Node) -> (u64, usize, u64) {
    let pid = node.pid();
    let rss = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let journal = fs::metadata(node.dir.join("data/journal")).map_or(0, |m| m.len());
    (rss, fds, journal)
}

#[test]
fn fault_campaign() {
    let long = std::env::var("PMXCFS_FAULT_CYCLES").is_ok_and(|v| v == "long");
    let soak = std::env::var("PMXCFS_FAULT_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (base, keep) = common::lab::temp_base("pmxcfs-faults-");
    let mut lab = Lab::up(NODES, base.path().join("lab"));
    lab.keep = keep;
    let mut nodes: Vec<Node> = (1..=NODES).map(|i| Node::new(&lab, i)).collect();
    // Before the daemon starts: its mount namespace copies this mount.
    let disk = SmallDisk::mount(&nodes[SMALL_DISK_NODE].dir.join("data"));
    // Node 2's disk is slow throughout.
    let shim = slow_sync_shim(base.path());
    nodes[SLOW_DISK_NODE].env = vec![
        ("LD_PRELOAD".into(), shim.display().to_string()),
        ("PMXCFS_TEST_SYNC_DELAY_MS".into(), "50".into()),
    ];
    for node in &mut nodes {
        node.start(&lab);
    }
    wait_writable(&nodes, "up");
    fs::create_dir(nodes[0].path("fc")).expect("mkdir fc");
    for i in 1..=NODES {
        fs::create_dir(nodes[0].path(&format!("fc/n{i}"))).expect("mkdir");
    }
    for node in &nodes {
        wait_for("the writers' dirs everywhere", &nodes, || {
            (1..=NODES).all(|i| node.path(&format!("fc/n{i}")).is_dir())
        });
    }
    let writers: Vec<Writer> = nodes.iter().map(Writer::start).collect();
    let mut faults = match std::env::var("PMXCFS_FAULT_PLAN") {
        Ok(plan) => parse_plan(&plan),
        Err(_) => campaign(long),
    }
    .into_iter();
    let mut seed = 0x5eed_u64;
    let started = Instant::now();
    let mut samples: Vec<Vec<(u64, usize, u64)>> = vec![Vec::new(); NODES as usize];
    let mut cycles = 0usize;
    for cycle in 0.. {
        let fault = match soak {
            Some(limit) if started.elapsed() < limit => random_fault(&mut seed),
            Some(_) => break,
            None => match faults.next() {
                Some(fault) => fault,
                None => break,
            },
        };
        cycles += 1;
        let fault = &fault;
        let before: u64 = writers
            .iter()
            .map(|w| w.acked.load(Ordering::Relaxed))
            .sum();
        inject(*fault, &lab, &mut nodes, &writers, &disk);
        for writer in &writers {
            writer.pause(&nodes);
        }
        // A write through every node: each one accepts writes again.
        wait_writable(&nodes, &format!("after-{cycle}"));
        wait_converged(&nodes);
        let what = format!("cycle {cycle} ({fault:?})");
        check_model(&nodes, &writers, &what);
        let after: u64 = writers
            .iter()
            .map(|w| w.acked.load(Ordering::Relaxed))
            .sum();
        for (node, series) in nodes.iter().zip(samples.iter_mut()) {
            series.push(footprint(node));
        }
        let now: Vec<String> = samples
            .iter()
            .map(|series| {
                let (rss, fds, journal) = series.last().copied().unwrap_or_default();
                format!("{} MiB/{fds} fds/{} KiB", rss / 1024, journal / 1024)
            })
            .collect();
        eprintln!(
            "{what}: {} writes acknowledged during the cycle; {}",
            after - before,
            now.join(", ")
        );
        for (writer, node) in writers.iter().zip(&nodes) {
            writer.resume(node);
        }
    }
    for writer in &writers {
        writer.pause(&nodes);
    }
    let total: u64 = writers
        .iter()
        .map(|w| w.acked.load(Ordering::Relaxed))
        .sum();
    let per_node: Vec<String> = writers
        .iter()
        .map(|w| format!("node {} {}", w.index, w.acked.load(Ordering::Relaxed)))
        .collect();
    eprintln!(
        "{cycles} fault cycles in {:?}: {total} writes acknowledged ({}; node 2's disk slow), none lost",
        started.elapsed(),
        per_node.join(", ")
    );
    // Bounded footprint: RSS, fds and journal never grow past fixed bounds
    // (the journal is folded into LMDB at 32 MiB / 8,192 records).
    for (i, series) in samples.iter().enumerate() {
        let max = |f: fn(&(u64, usize, u64)) -> u64| series.iter().map(f).max().unwrap_or(0);
        let (rss, fds, journal) = (max(|s| s.0), max(|s| s.1 as u64), max(|s| s.2));
        eprintln!(
            "node {}: RSS max {} MiB (last {} MiB), fds max {fds}, journal max {} KiB",
            i + 1,
            rss / 1024,
            series.last().map_or(0, |s| s.0) / 1024,
            journal / 1024
        );
        assert!(rss < 256 << 10, "node {}: RSS {rss} KiB", i + 1);
        assert!(fds < 256, "node {}: {fds} fds", i + 1);
        assert!(
            journal <= 33 << 20,
            "node {}: journal {journal} bytes",
            i + 1
        );
    }
    assert!(total > 0, "the writers made progress");
    drop(writers);
    for node in &mut nodes {
        node.stop();
    }
    drop(disk);
}
