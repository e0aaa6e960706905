//! The RRD side of a status cycle, as pvestatd makes it: a burst of
//! SET_STATUS `rrd/` updates (one per guest; 1,000 by default, a 300-guest
//! cluster's 10-s cycle as every node writes them), on each target daemon.
//!
//! For each target and repetition two bursts: the first creates the files
//! (fresh guest ids), the second updates them a minute later. Measured per
//! burst: how long the SET_STATUS calls took (requests/s), how long until
//! every update was written (updates/s the daemon's RRD writing sustains:
//! files created or modified when writing directly, rrdcached's own
//! `UpdatesReceived` count with `--rrdcached`), and the p99 of a FUSE
//! write + read and of an IPC request made meanwhile by another client,
//! against the same probes for a second before the burst.
//!
//! ```text
//! rrdburst --target C=pve2:/etc/pve:/var/lib/rrdcached/db \
//!          --target Rust=pve2-rust:/tmp/mnt:/tmp/rrd [--rrdcached /run/rrdcached.sock] \
//!          [--keys 1000] [--reps 3] [--id-base 100000]
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pmxcfs_ipc::client::Client;
use pmxcfs_ipc::proto::{Op, payload};

struct Target {
    name: String,
    service: String,
    mount: PathBuf,
    rrd_dir: PathBuf,
}

struct Options {
    targets: Vec<Target>,
    keys: u32,
    reps: u32,
    rrdcached: Option<PathBuf>,
    /// First guest id (runs on the same files need new ids).
    id_base: u32,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        targets: Vec::new(),
        keys: 1000,
        reps: 3,
        rrdcached: None,
        id_base: 100_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--target" => {
                let spec = "--target NAME=SERVICE:MOUNT:RRDDIR";
                let (name, rest) = value.split_once('=').ok_or(spec)?;
                let mut parts = rest.splitn(3, ':');
                let (Some(service), Some(mount), Some(rrd_dir)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(spec.into());
                };
                options.targets.push(Target {
                    name: name.into(),
                    service: service.into(),
                    mount: mount.into(),
                    rrd_dir: rrd_dir.into(),
                });
            }
            "--keys" => options.keys = value.parse().map_err(|e| format!("{value}: {e}"))?,
            "--reps" => options.reps = value.parse().map_err(|e| format!("{value}: {e}"))?,
            "--rrdcached" => options.rrdcached = Some(value.into()),
            "--id-base" => options.id_base = value.parse().map_err(|e| format!("{value}: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.targets.is_empty() {
        return Err("at least one --target".into());
    }
    Ok(options)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// rrdcached's `UpdatesReceived`.
fn updates_received(socket: &Path) -> Option<u64> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"STATS\n").ok()?;
    let mut lines = BufReader::new(stream).lines();
    let count: usize = lines.next()?.ok()?.split(' ').next()?.parse().ok()?;
    lines.take(count).map_while(Result::ok).find_map(|line| {
        let (key, value) = line.split_once(": ")?;
        (key == "UpdatesReceived").then(|| value.trim().parse().ok())?
    })
}

/// rrdcached drops what it holds for `file`.
fn forget(socket: &Path, file: &Path) {
    if let Ok(mut stream) = UnixStream::connect(socket) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(format!("FORGET {}\n", file.display()).as_bytes())
            .is_ok()
        {
            let mut answer = String::new();
            let _ = BufReader::new(stream).read_line(&mut answer);
        }
    }
}

/// FUSE write + read and IPC latencies, sampled until `stop`.
fn probe(target: &Target, stop: Arc<AtomicBool>) -> thread::JoinHandle<(Vec<u64>, Vec<u64>)> {
    let file = target.mount.join("rrdburst-probe.conf");
    let service = target.service.clone();
    thread::spawn(move || {
        let (mut fuse, mut ipc) = (Vec::new(), Vec::new());
        let Ok(mut client) = Client::connect(&service) else {
            return (fuse, ipc);
        };
        let request = payload::get_status(b"kv/rrdburst-none", b"");
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let _ = std::fs::write(&file, b"probe\n").and_then(|()| std::fs::read(&file));
            fuse.push(start.elapsed().as_micros() as u64);
            let start = Instant::now();
            let _ = client.call(Op::GetStatus.id(), &request);
            ipc.push(start.elapsed().as_micros() as u64);
            thread::sleep(Duration::from_micros(500));
        }
        (fuse, ipc)
    })
}

fn p99(mut samples: Vec<u64>) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

struct Burst {
    calls_per_s: f64,
    written_per_s: f64,
    fuse_p99_before: u64,
    ipc_p99_before: u64,
    fuse_p99: u64,
    ipc_p99: u64,
}

fn guest_value(time: u64, i: u32) -> String {
    format!(
        "{}:vm{i}:running:0:{time}:4:0.{}:4294967296:{}:34359738368:0:{}:{}:{}:{}",
        1000 + i,
        i % 10,
        1_000_000 + u64::from(i),
        u64::from(i) * 10,
        u64::from(i) * 20,
        u64::from(i) * 30,
        u64::from(i) * 40
    )
}

/// Every file of the burst written: present (first burst) or modified
/// since `since` (later bursts; direct writes), or rrdcached's count.
fn written(options: &Options, target: &Target, ids: &[u32], since: SystemTime, base: u64) -> bool {
    if let Some(socket) = &options.rrdcached {
        return updates_received(socket).is_some_and(|n| n >= base + ids.len() as u64);
    }
    ids.iter().all(|id| {
        std::fs::metadata(target.rrd_dir.join(format!("pve-vm-9.0/{id}")))
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| modified >= since)
    })
}

fn burst(options: &Options, target: &Target, ids: &[u32], time: u64) -> Result<Burst, String> {
    // A second of probes before.
    let stop = Arc::new(AtomicBool::new(false));
    let before = probe(target, stop.clone());
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (fuse_before, ipc_before) = before.join().map_err(|_| "probe panicked")?;

    let base = options
        .rrdcached
        .as_deref()
        .and_then(updates_received)
        .unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let during = probe(target, stop.clone());
    let mut client =
        Client::connect(&target.service).map_err(|e| format!("{}: connect: {e}", target.name))?;
    // File times have coarse granularity: "modified since" starts a bit
    // before the burst.
    let since = SystemTime::now() - Duration::from_millis(20);
    let start = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let key = format!("rrd/pve2.3-vm/{id}");
        let value = guest_value(time, i as u32);
        let reply = client
            .call(
                Op::SetStatus.id(),
                &payload::set_status(key.as_bytes(), Some(value.as_bytes())),
            )
            .map_err(|e| format!("{}: {e}", target.name))?;
        reply.map_err(|errno| format!("{}: SET_STATUS errno {errno}", target.name))?;
    }
    let calls = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !written(options, target, ids, since, base) {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            return Err(format!("{}: updates not written within 120 s", target.name));
        }
        thread::sleep(Duration::from_millis(2));
    }
    let all_written = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (fuse, ipc) = during.join().map_err(|_| "probe panicked")?;
    Ok(Burst {
        calls_per_s: ids.len() as f64 / calls.as_secs_f64(),
        written_per_s: ids.len() as f64 / all_written.as_secs_f64(),
        fuse_p99_before: p99(fuse_before),
        ipc_p99_before: p99(ipc_before),
        fuse_p99: p99(fuse),
        ipc_p99: p99(ipc),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("rrdburst: {error}");
            return ExitCode::from(2);
        }
    };
    // results[phase][target]: phase 0 creates, 1 updates.
    let mut results: Vec<Vec<Vec<Burst>>> = (0..2)
        .map(|_| options.targets.iter().map(|_| Vec::new()).collect())
        .collect();
    let minute = (now() / 60) * 60;
    for rep in 0..options.reps {
        for (index, target) in options.targets.iter().enumerate() {
            // Fresh guest ids per target and repetition.
            let first = options.id_base
                + (rep * options.targets.len() as u32 + index as u32) * options.keys;
            let ids: Vec<u32> = (first..first + options.keys).collect();
            for phase in 0..2u64 {
                match burst(&options, target, &ids, minute - 180 + 60 * phase) {
                    Ok(result) => results[phase as usize][index].push(result),
                    Err(error) => {
                        eprintln!("rrdburst: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            // 1.3 MB a guest file: remove them (rrdcached forgets them
            // first) so repetitions do not fill the disk.
            for id in &ids {
                let file = target.rrd_dir.join(format!("pve-vm-9.0/{id}"));
                if let Some(socket) = &options.rrdcached {
                    forget(socket, &file);
                }
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    println!(
        "rrdburst: {} guest updates a burst, {}; medians of {} repetitions",
        options.keys,
        if options.rrdcached.is_some() {
            "through rrdcached"
        } else {
            "written directly (no rrdcached)"
        },
        options.reps
    );
    println!(
        "{:<8} {:<6} {:>12} {:>12} {:>22} {:>22}",
        "burst", "daemon", "calls/s", "written/s", "FUSE p99 µs before/in", "IPC p99 µs before/in"
    );
    for (phase, label) in ["create", "update"].iter().enumerate() {
        for (index, target) in options.targets.iter().enumerate() {
            let runs = &results[phase][index];
            let m = |f: &dyn Fn(&Burst) -> f64| median(runs.iter().map(f).collect());
            println!(
                "{:<8} {:<6} {:>12.0} {:>12.0} {:>22} {:>22}",
                label,
                target.name,
                m(&|b| b.calls_per_s),
                m(&|b| b.written_per_s),
                format!(
                    "{:.0} / {:.0}",
                    m(&|b| b.fuse_p99_before as f64),
                    m(&|b| b.fuse_p99 as f64)
                ),
                format!(
                    "{:.0} / {:.0}",
                    m(&|b| b.ipc_p99_before as f64),
                    m(&|b| b.ipc_p99 as f64)
                ),
            );
        }
    }
    ExitCode::SUCCESS
}
