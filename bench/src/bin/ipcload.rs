//! IPC load on a pmxcfs "pve2" service, as PVE's daemons make it: N client
//! processes (one libqb connection each, as each PVE process has) send one
//! operation back to back for a while; every call is timed.
//!
//! ```text
//! ipcload --service pve2 --op get-status --clients 16 --seconds 3
//! ipcload --service pve2 --op get-config --write-load /etc/pve/bench
//! ipcload --compare C=pve2:/etc/pve --compare Rust=pve2-rust:/mnt --reps 3
//! ```
//!
//! Operations: `get-status` (the local node's `kv/ipcload`, set once before),
//! `get-config` (`ipcload-4k.cfg`, a 4 KiB file in the daemon's tree: made
//! by `--compare`, by the caller otherwise), `set-status` (each client its
//! own `kv/ipcload-N`, 100 bytes of JSON), `version` (GET_FS_VERSION).
//! `--write-load DIR` runs PVE's config write (a 4 KiB tmp file renamed over
//! the config) in a loop in DIR during the run, on a thread of the parent
//! process, and reports its rate.
//!
//! Output of a run: one JSON line: requests/s over all clients, p50/p99/max
//! latency in µs (from the merged per-µs histograms of the clients),
//! errors, and the write load's writes/s. Any failed call counts as an
//! error; a run with errors fails, so broken figures are not taken for fast
//! ones.
//!
//! `--compare NAME=SERVICE:MOUNT` (twice or more) runs the whole matrix on
//! each target, interleaved (target after target within a repetition, so
//! a noisy moment hits all of them), `--reps` times: GET_STATUS, GET_CONFIG
//! and SET_STATUS with 1 and 16 clients, and GET_STATUS with 1 client while
//! a write load runs on the same daemon's mount. It prints the medians and
//! the ratio of the last target to the first; `--json` adds every run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pmxcfs_ipc::client::Client;
use pmxcfs_ipc::proto::{Op, payload};

/// Latencies are counted per µs up to this bound; slower calls land in the
/// last bucket (and `max_us` says how slow).
const BUCKETS: usize = 200_000;

struct Options {
    service: String,
    op: String,
    clients: usize,
    seconds: f64,
    write_load: Option<PathBuf>,
    child: Option<usize>,
    compare: Vec<Target>,
    reps: usize,
    json: bool,
}

/// A daemon under `--compare`: its IPC service and its mountpoint.
struct Target {
    name: String,
    service: String,
    mount: PathBuf,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        service: "pve2".into(),
        op: "get-status".into(),
        clients: 1,
        seconds: 3.0,
        write_load: None,
        child: None,
        compare: Vec::new(),
        reps: 3,
        json: false,
    };
    let number = |text: String| text.parse::<usize>().map_err(|e| format!("{text}: {e}"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--json" {
            options.json = true;
            continue;
        }
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--service" => options.service = value,
            "--op" => options.op = value,
            "--clients" => options.clients = number(value)?,
            "--seconds" => {
                options.seconds = value.parse().map_err(|e| format!("{value}: {e}"))?;
            }
            "--write-load" => options.write_load = Some(value.into()),
            "--child" => options.child = Some(number(value)?),
            "--reps" => options.reps = number(value)?.max(1),
            "--compare" => {
                let (name, rest) = value
                    .split_once('=')
                    .ok_or("--compare NAME=SERVICE:MOUNT")?;
                let (service, mount) =
                    rest.split_once(':').ok_or("--compare NAME=SERVICE:MOUNT")?;
                options.compare.push(Target {
                    name: name.into(),
                    service: service.into(),
                    mount: mount.into(),
                });
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    Ok(options)
}

fn request(op: &str, child: usize) -> Result<(Op, Vec<u8>), String> {
    Ok(match op {
        "get-status" => (Op::GetStatus, payload::get_status(b"kv/ipcload", b"")),
        "get-config" => (Op::GetConfig, payload::get_config(b"ipcload-4k.cfg")),
        "set-status" => {
            let name = format!("kv/ipcload-{child}");
            let value = format!("{{\"client\":{child},\"pad\":\"{:>76}\"}}", "");
            (
                Op::SetStatus,
                payload::set_status(name.as_bytes(), Some(value.as_bytes())),
            )
        }
        "version" => (Op::GetFsVersion, Vec::new()),
        other => return Err(format!("unknown --op {other}")),
    })
}

/// A client process: calls until the time is up, then prints
/// `calls errors max_us` and `us count` lines of its histogram.
fn child(options: &Options, index: usize) -> Result<(), String> {
    let (op, payload) = request(&options.op, index)?;
    let mut client = Client::connect(&options.service).map_err(|e| format!("connect: {e}"))?;
    let mut histogram = vec![0u64; BUCKETS];
    let (mut calls, mut errors, mut max_us) = (0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs_f64(options.seconds);
    while Instant::now() < end {
        let start = Instant::now();
        let result = client.call(op.id(), &payload);
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        calls += 1;
        if !matches!(result, Ok(Ok(_))) {
            errors += 1;
        }
        max_us = max_us.max(us);
        histogram[usize::try_from(us).unwrap_or(BUCKETS).min(BUCKETS - 1)] += 1;
    }
    println!("{calls} {errors} {max_us}");
    for (us, count) in histogram.iter().enumerate().filter(|(_, c)| **c > 0) {
        println!("{us} {count}");
    }
    Ok(())
}

/// PVE's config write (tmp file + rename) in a loop until `stop`.
fn write_load(dir: PathBuf, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>) {
    let data = vec![b'w'; 4096];
    let _ = std::fs::create_dir_all(&dir);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let file = dir.join(format!("load-{}.conf", n % 64));
        let tmp = dir.join(format!("load-{}.conf.tmp.{}", n % 64, std::process::id()));
        if std::fs::write(&tmp, &data).is_ok() && std::fs::rename(&tmp, &file).is_ok() {
            writes.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
    }
}

fn percentile(histogram: &[u64], total: u64, fraction: f64) -> usize {
    let rank = ((total as f64) * fraction).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (us, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return us;
        }
    }
    histogram.len()
}

/// What one run measured.
struct Figures {
    requests_per_s: f64,
    p50_us: usize,
    p99_us: usize,
    max_us: u64,
    calls: u64,
    errors: u64,
    failed_clients: usize,
    writes_per_s: Option<f64>,
}

impl Figures {
    fn json(&self, op: &str, clients: usize, target: &str) -> String {
        format!(
            "{{\"target\":\"{target}\",\"op\":\"{op}\",\"clients\":{clients},\"requests_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"calls\":{},\"errors\":{},\"failed_clients\":{},\"writes_per_s\":{}}}",
            self.requests_per_s,
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.calls,
            self.errors,
            self.failed_clients,
            self.writes_per_s
                .map_or("null".into(), |w| format!("{w:.0}")),
        )
    }

    fn ok(&self) -> bool {
        self.errors == 0 && self.failed_clients == 0 && self.calls > 0
    }
}

/// One run: `clients` processes calling `op` for `seconds`.
fn run(
    service: &str,
    op: &str,
    clients: usize,
    seconds: f64,
    write_load_dir: Option<PathBuf>,
) -> Result<Figures, String> {
    // The value GET_STATUS reads.
    if op == "get-status" {
        let mut client = Client::connect(service).map_err(|e| format!("connect: {e}"))?;
        let set = client
            .call(
                Op::SetStatus.id(),
                &payload::set_status(b"kv/ipcload", Some(&[b'v'; 100])),
            )
            .map_err(|e| format!("set: {e}"))?;
        set.map_err(|errno| format!("SET_STATUS kv/ipcload: errno {errno}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let with_load = write_load_dir.is_some();
    let loader = write_load_dir.map(|dir| {
        let (stop, writes) = (stop.clone(), writes.clone());
        std::thread::spawn(move || write_load(dir, stop, writes))
    });
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let started = Instant::now();
    let children: Vec<_> = (0..clients)
        .map(|index| {
            Command::new(&exe)
                .args(["--service", service, "--op", op])
                .args(["--seconds", &seconds.to_string()])
                .args(["--child", &index.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("spawn: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut histogram = vec![0u64; BUCKETS];
    let (mut calls, mut errors, mut max_us, mut failed) = (0u64, 0u64, 0u64, 0usize);
    for mut child in children {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let fields: Vec<u64> = first.split(' ').filter_map(|f| f.parse().ok()).collect();
            if let [c, e, m] = fields[..] {
                calls += c;
                errors += e;
                max_us = max_us.max(m);
            }
            for line in lines.map_while(Result::ok) {
                let mut fields = line.split(' ').filter_map(|f| f.parse::<u64>().ok());
                if let (Some(us), Some(count)) = (fields.next(), fields.next()) {
                    histogram[usize::try_from(us).unwrap_or(0).min(BUCKETS - 1)] += count;
                }
            }
        }
        if !child.wait().is_ok_and(|status| status.success()) {
            failed += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(loader) = loader {
        let _ = loader.join();
    }
    Ok(Figures {
        requests_per_s: calls as f64 / seconds,
        p50_us: percentile(&histogram, calls, 0.50),
        p99_us: percentile(&histogram, calls, 0.99),
        max_us,
        calls,
        errors,
        failed_clients: failed,
        writes_per_s: with_load.then(|| writes.load(Ordering::Relaxed) as f64 / elapsed),
    })
}

/// The `--compare` matrix: (op, clients, with a write load).
const MATRIX: [(&str, usize, bool); 7] = [
    ("get-status", 1, false),
    ("get-status", 16, false),
    ("get-config", 1, false),
    ("get-config", 16, false),
    ("set-status", 1, false),
    ("set-status", 16, false),
    ("get-status", 1, true),
];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn compare(options: &Options) -> Result<bool, String> {
    let targets = &options.compare;
    for target in targets {
        std::fs::write(target.mount.join("ipcload-4k.cfg"), vec![b'c'; 4096])
            .map_err(|e| format!("{}: 4 KiB file: {e}", target.name))?;
    }
    // figures[case][target] over the repetitions.
    let mut figures: Vec<Vec<Vec<Figures>>> = MATRIX
        .iter()
        .map(|_| targets.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut all_ok = true;
    for _ in 0..options.reps {
        for (case, (op, clients, load)) in MATRIX.iter().enumerate() {
            for (index, target) in targets.iter().enumerate() {
                let load_dir = load.then(|| target.mount.join("ipcload-writes"));
                let result = run(&target.service, op, *clients, options.seconds, load_dir)?;
                if options.json {
                    println!("{}", result.json(op, *clients, &target.name));
                }
                if !result.ok() {
                    eprintln!(
                        "ipcload: {} {op} x{clients}: {} errors, {} failed clients",
                        target.name, result.errors, result.failed_clients
                    );
                    all_ok = false;
                }
                figures[case][index].push(result);
            }
        }
    }
    println!(
        "ipcload: medians of {} runs of {} s; requests/s (p50/p99 µs); ratio = {} / {}",
        options.reps,
        options.seconds,
        targets.last().map_or("", |t| &t.name),
        targets.first().map_or("", |t| &t.name)
    );
    let mut header = format!("{:<26}", "case");
    for target in targets {
        header.push_str(&format!(" {:>24}", target.name));
    }
    println!("{header} {:>7}", "ratio");
    for (case, (op, clients, load)) in MATRIX.iter().enumerate() {
        let label = if *load {
            format!("{op} x{clients} +writes")
        } else {
            format!("{op} x{clients}")
        };
        let mut line = format!("{label:<26}");
        let mut rates = Vec::new();
        for runs in &figures[case] {
            let rate = median(&mut runs.iter().map(|f| f.requests_per_s).collect::<Vec<_>>());
            let p50 = median(&mut runs.iter().map(|f| f.p50_us as f64).collect::<Vec<_>>());
            let p99 = median(&mut runs.iter().map(|f| f.p99_us as f64).collect::<Vec<_>>());
            let cell = format!("{rate:.0} ({p50:.0}/{p99:.0})");
            line.push_str(&format!(" {cell:>24}"));
            rates.push(rate);
        }
        let ratio = match (rates.first(), rates.last()) {
            (Some(first), Some(last)) if *first > 0.0 => format!("{:.2}", last / first),
            _ => "-".into(),
        };
        println!("{line} {ratio:>7}");
        if *load {
            let mut writes = format!("{:<26}", "  (writes/s meanwhile)");
            for runs in &figures[case] {
                let rate = median(
                    &mut runs
                        .iter()
                        .map(|f| f.writes_per_s.unwrap_or(0.0))
                        .collect::<Vec<_>>(),
                );
                writes.push_str(&format!(" {:>24}", format!("{rate:.0}")));
            }
            println!("{writes}");
        }
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    let result = parse().and_then(|options| {
        if let Some(index) = options.child {
            return child(&options, index).map(|()| true);
        }
        if !options.compare.is_empty() {
            return compare(&options);
        }
        let figures = run(
            &options.service,
            &options.op,
            options.clients,
            options.seconds,
            options.write_load.clone(),
        )?;
        println!(
            "{}",
            figures.json(&options.op, options.clients, &options.service)
        );
        Ok(figures.ok())
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("ipcload: {error}");
            ExitCode::FAILURE
        }
    }
}
