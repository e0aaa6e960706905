//! cluster-bench: replication figures of a running 3-node pmxcfs cluster
//! (bench/cluster.sh starts one in network namespaces and calls this).
//!
//! usage: cluster-bench --mounts M1,M2,M3 --pids P1,P2,P3 [--writes N] [--pve]
//!        cluster-bench --fill DIR --files N [--size B]  (N files of B bytes, default 500; 16 writers)
//!        cluster-bench --wait FILE --timeout-s S (until FILE is readable)
//!
//! Phases (all on 500-byte contents):
//! * latency: N sequential `pwrite`s on node 1 (one DCDB WRITE each): the
//!   call's p50/p99, and from its return until nodes 2 and 3 read the new
//!   content (p50/p99);
//! * rewrite: N `open(O_TRUNC) + write + close` on node 1 (truncate and
//!   write: two messages, what `file_set_contents`-style tools do);
//! * one sequential writer for 3 s: writes/s, and CPU per write of every
//!   daemon (utime+stime from /proc/PID/stat);
//! * 8 writers on node 1 (pipelining), and one and four writers on each
//!   node at once: total writes/s.
//!
//! With `--pve` instead, the patterns Proxmox VE uses, each with a reader
//! polling the file every 200 µs (open, read, close, as pveproxy does) on
//! nodes 2 and 3:
//! * atomic config write (`PVE::Tools::file_set_contents`): create
//!   `NAME.tmp.PID` (O_WRONLY|O_CREAT), write, close, rename over `NAME`;
//!   p50/p99 of the whole call and of the time until each reader sees it;
//! * new file: open(O_CREAT|O_TRUNC), write, close, on a new name each time;
//! * cfs_lock: mkdir `priv/lock/NAME` (visible on the others: stat polled),
//!   rmdir;
//! * atomic writes for 3 s with one writer, and with one writer per node
//!   (own file each): writes/s.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: cluster-bench --mounts M1,M2,M3 --pids P1,P2,P3 [--writes N] [--pve]\n\
         \x20      cluster-bench --fill DIR --files N [--size B]\n\
         \x20      cluster-bench --wait FILE --timeout-s S"
    );
    std::process::exit(2);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    println!(
        "{name:<28} n={:<6} p50={:>9.1} µs  p99={:>9.1} µs",
        samples.len(),
        micros(percentile(samples, 0.5)),
        micros(percentile(samples, 0.99))
    );
}

/// utime + stime of a process in µs.
fn cpu_micros(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |at| &stat[at + 1..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after the name: state is index 0; utime is field 14 (index 11).
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf is a plain query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz * 1e6
}

fn content(tag: &str, k: usize) -> Vec<u8> {
    let mut data = format!("{tag} {k}\n").into_bytes();
    data.resize(500, b'.');
    data
}

/// Writes for `duration` with `threads` writers per mount; total count.
fn throughput(mounts: &[PathBuf], threads: usize, duration: Duration, tag: &str) -> usize {
    thread::scope(|scope| {
        let mut handles = Vec::new();
        for (m, mount) in mounts.iter().enumerate() {
            for t in 0..threads {
                let path = mount.join(format!("bench/{tag}-n{m}-t{t}"));
                handles.push(scope.spawn(move || {
                    let file = OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                        .expect("open");
                    let until = Instant::now() + duration;
                    let mut count = 0;
                    while Instant::now() < until {
                        file.write_all_at(&content(tag, count), 0).expect("write");
                        count += 1;
                    }
                    count
                }));
            }
        }
        handles.into_iter().map(|h| h.join().expect("writer")).sum()
    })
}

fn fill(dir: &Path, files: usize, size: usize) {
    fs::create_dir_all(dir).expect("fill dir");
    let start = Instant::now();
    let writers = 16;
    thread::scope(|scope| {
        for w in 0..writers {
            scope.spawn(move || {
                let mut k = w;
                while k < files {
                    let mut data = content("fill", k);
                    data.resize(size, b'.');
                    fs::write(dir.join(format!("f{k:05}")), data).expect("fill");
                    k += writers;
                }
            });
        }
    });
    let elapsed = start.elapsed();
    println!(
        "fill: {files} files of {size} B in {:.2} s ({:.0} creates/s with {writers} writers)",
        elapsed.as_secs_f64(),
        files as f64 / elapsed.as_secs_f64()
    );
}

/// What a polling reader saw.
struct Polled {
    /// For each new version (the number after the tag) the instant it was
    /// first read.
    seen: Vec<(usize, Instant)>,
    /// How long each read (open, fstat, read, close) took ...
    reads: Vec<Duration>,
    /// ... and each read that gave a new version, and its open call.
    first_reads: Vec<Duration>,
    first_opens: Vec<Duration>,
    /// Reads that failed, by error.
    failed: std::collections::BTreeMap<String, usize>,
}

/// Polls `path` until `stop`, as pveproxy reads a config.
fn poll_versions(path: &Path, stop: &std::sync::atomic::AtomicBool) -> Polled {
    let mut polled = Polled {
        seen: Vec::new(),
        reads: Vec::new(),
        first_reads: Vec::new(),
        first_opens: Vec::new(),
        failed: Default::default(),
    };
    let mut last = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let start = Instant::now();
        let mut opened = Duration::ZERO;
        // fs::read's calls: open, fstat (the size), read to the end, close.
        let result = fs::File::open(path).and_then(|mut file| {
            opened = start.elapsed();
            let size = file.metadata()?.len();
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            std::io::Read::read_to_end(&mut file, &mut data)?;
            Ok(data)
        });
        let took = start.elapsed();
        polled.reads.push(took);
        match result {
            Ok(data) => {
                if let Some(k) = std::str::from_utf8(&data[..data.len().min(40)])
                    .ok()
                    .and_then(|text| text.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<usize>().ok())
                    && last != Some(k)
                {
                    last = Some(k);
                    polled.seen.push((k, Instant::now()));
                    polled.first_reads.push(took);
                    polled.first_opens.push(opened);
                }
            }
            Err(error) => *polled.failed.entry(error.to_string()).or_default() += 1,
        }
        // A reader, not a spinner: pveproxy and pvestatd read between other
        // work; spinning would only measure who gets the 2 CPUs.
        thread::sleep(Duration::from_micros(200));
    }
    polled
}

/// Each version's visibility: reader's first sight minus the writer's return
/// (0 if the reader saw it first).
fn visibility(returned: &[Instant], seen: &[(usize, Instant)]) -> Vec<Duration> {
    seen.iter()
        .filter_map(|(k, at)| returned.get(*k).map(|r| at.saturating_duration_since(*r)))
        .collect()
}

/// `file_set_contents`: tmp file, write, close, rename over.
fn atomic_write(dir: &Path, name: &str, data: &[u8]) {
    let tmp = dir.join(format!("{name}.tmp.{}", std::process::id()));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&tmp)
            .expect("create tmp");
        std::io::Write::write_all(&mut file, data).expect("write tmp");
    }
    fs::rename(&tmp, dir.join(name)).expect("rename over");
}

fn pve_patterns(mounts: &[PathBuf], writes: usize) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = mounts[0].join("bench");
    // Atomic config writes with readers on nodes 2 and 3.
    atomic_write(&dir, "vm.conf", &content("atomic", 0));
    for mount in &mounts[1..] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::metadata(mount.join("bench/vm.conf")).is_err() {
            assert!(Instant::now() < deadline, "vm.conf not replicated");
            thread::sleep(Duration::from_millis(1));
        }
    }
    let stop = AtomicBool::new(false);
    let (calls, returned, polled) = thread::scope(|scope| {
        let readers: Vec<_> = mounts[1..]
            .iter()
            .map(|m| {
                let path = m.join("bench/vm.conf");
                let stop = &stop;
                scope.spawn(move || poll_versions(&path, stop))
            })
            .collect();
        let mut calls = Vec::new();
        let mut returned = vec![Instant::now()];
        for k in 1..=writes {
            let start = Instant::now();
            atomic_write(&dir, "vm.conf", &content("atomic", k));
            let end = Instant::now();
            calls.push(end - start);
            returned.push(end);
            // Paced like a config change, not a flood: the readers see each.
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let polled: Vec<Polled> = readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect();
        (calls, returned, polled)
    });
    let mut calls = calls;
    report("atomic write call", &mut calls);
    for (i, mut polled) in polled.into_iter().enumerate() {
        let node = i + 2;
        let mut vis = visibility(&returned, &polled.seen);
        let missed = writes + 1 - polled.seen.len().min(writes + 1);
        report(&format!("atomic visible on node {node}"), &mut vis);
        if missed > 0 {
            println!("  (node {node}: {missed} versions not seen between polls)");
        }
        report(&format!("reader's read on node {node}"), &mut polled.reads);
        report(
            &format!("read of a new version, node {node}"),
            &mut polled.first_reads,
        );
        report(
            &format!("  its open call, node {node}"),
            &mut polled.first_opens,
        );
        let failed: usize = polled.failed.values().sum();
        println!("reads failed on node {node}        {failed} reads failed");
        for (error, count) in &polled.failed {
            println!("  ({count} x {error})");
        }
    }
    // New files.
    let mut create = Vec::new();
    for k in 0..writes {
        let start = Instant::now();
        fs::write(dir.join(format!("new-{k}")), content("new", k)).expect("create");
        create.push(start.elapsed());
    }
    report("new file (create+write)", &mut create);
    // cfs_lock: mkdir, seen by the others, rmdir.
    let lock_dir = mounts[0].join("priv/lock");
    let _ = fs::create_dir_all(&lock_dir);
    let (mut mkdir, mut rmdir, mut seen2) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..writes.min(200) {
        let name = format!("bench-{k}");
        let start = Instant::now();
        fs::create_dir(lock_dir.join(&name)).expect("mkdir lock");
        let made = Instant::now();
        mkdir.push(made - start);
        let other = mounts[1].join("priv/lock").join(&name);
        let deadline = made + Duration::from_secs(10);
        while fs::metadata(&other).is_err() {
            assert!(Instant::now() < deadline, "lock not visible");
        }
        seen2.push(made.elapsed());
        let start = Instant::now();
        fs::remove_dir(lock_dir.join(&name)).expect("rmdir lock");
        rmdir.push(start.elapsed());
    }
    report("cfs_lock mkdir", &mut mkdir);
    report("cfs_lock visible on node 2", &mut seen2);
    report("cfs_lock rmdir", &mut rmdir);
    // Throughput of atomic writes.
    let window = Duration::from_secs(3);
    for (label, nodes) in [
        ("one atomic writer on node 1", 1),
        ("one atomic writer per node", 3),
    ] {
        let count: usize = thread::scope(|scope| {
            let handles: Vec<_> = mounts[..nodes]
                .iter()
                .enumerate()
                .map(|(m, mount)| {
                    let dir = mount.join("bench");
                    scope.spawn(move || {
                        let until = Instant::now() + window;
                        let mut count = 0;
                        while Instant::now() < until {
                            atomic_write(&dir, &format!("thr-{m}.conf"), &content("thr", count));
                            count += 1;
                        }
                        count
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("writer")).sum()
        });
        println!(
            "{label:<28} {:>8.0} writes/s",
            count as f64 / window.as_secs_f64()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(dir) = value("--fill") {
        let files = value("--files")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let size = value("--size").and_then(|v| v.parse().ok()).unwrap_or(500);
        fill(Path::new(&dir), files, size);
        return;
    }
    if let Some(file) = value("--wait") {
        let timeout = value("--timeout-s")
            .and_then(|v| v.parse().ok())
            .unwrap_or(120);
        let deadline = Instant::now() + Duration::from_secs(timeout);
        while fs::metadata(&file).is_err() {
            if Instant::now() > deadline {
                eprintln!("cluster-bench: {file} did not appear");
                std::process::exit(1);
            }
            thread::sleep(Duration::from_millis(5));
        }
        return;
    }
    let Some(mounts) = value("--mounts") else {
        usage()
    };
    let Some(pids) = value("--pids") else { usage() };
    let mounts: Vec<PathBuf> = mounts.split(',').map(PathBuf::from).collect();
    let pids: Vec<u32> = pids.split(',').filter_map(|p| p.parse().ok()).collect();
    if mounts.len() != 3 || pids.len() != 3 {
        usage();
    }
    let writes: usize = value("--writes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let _ = fs::create_dir(mounts[0].join("bench"));
    for mount in &mounts[1..] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mount.join("bench").is_dir() {
            assert!(Instant::now() < deadline, "bench dir not replicated");
            thread::sleep(Duration::from_millis(1));
        }
    }

    if args.iter().any(|a| a == "--pve") {
        pve_patterns(&mounts, writes);
        return;
    }

    // Latency of one write and of its visibility on the other nodes.
    let target = mounts[0].join("bench/latency");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&target)
        .expect("open latency file");
    let others: Vec<PathBuf> = mounts[1..]
        .iter()
        .map(|m| m.join("bench/latency"))
        .collect();
    let (mut call, mut seen2, mut seen3) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..writes {
        let data = content("latency", k);
        let start = Instant::now();
        file.write_all_at(&data, 0).expect("write");
        let returned = Instant::now();
        call.push(returned - start);
        let mut pending = [true, true];
        let deadline = returned + Duration::from_secs(10);
        while pending.iter().any(|p| *p) {
            for (i, path) in others.iter().enumerate() {
                if pending[i] && fs::read(path).is_ok_and(|seen| seen == data) {
                    pending[i] = false;
                    let visible = returned.elapsed();
                    if i == 0 {
                        seen2.push(visible);
                    } else {
                        seen3.push(visible);
                    }
                }
            }
            assert!(Instant::now() < deadline, "write {k} not visible");
        }
    }
    report("write call (pwrite)", &mut call);
    report("visible on node 2", &mut seen2);
    report("visible on node 3", &mut seen3);

    let mut rewrite = Vec::new();
    for k in 0..writes {
        let start = Instant::now();
        fs::write(mounts[0].join("bench/rewrite"), content("rewrite", k)).expect("rewrite");
        rewrite.push(start.elapsed());
    }
    report("rewrite (trunc+write)", &mut rewrite);

    let window = Duration::from_secs(3);
    let before: Vec<f64> = pids.iter().map(|p| cpu_micros(*p)).collect();
    let count = throughput(&mounts[..1], 1, window, "seq");
    let after: Vec<f64> = pids.iter().map(|p| cpu_micros(*p)).collect();
    println!(
        "one writer on node 1          {:>8.0} writes/s",
        count as f64 / window.as_secs_f64()
    );
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        println!(
            "  CPU per replicated write, node {}: {:.1} µs",
            i + 1,
            (a - b) / count.max(1) as f64
        );
    }
    let count = throughput(&mounts[..1], 8, window, "pipe");
    println!(
        "8 writers on node 1           {:>8.0} writes/s",
        count as f64 / window.as_secs_f64()
    );
    let count = throughput(&mounts, 1, window, "all1");
    println!(
        "1 writer on each node         {:>8.0} writes/s in total",
        count as f64 / window.as_secs_f64()
    );
    let count = throughput(&mounts, 4, window, "all4");
    println!(
        "4 writers on each node        {:>8.0} writes/s in total",
        count as f64 / window.as_secs_f64()
    );
}
