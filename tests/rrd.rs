//! RRD files (spec/status.md §4) written by the daemon for `rrd/` status
//! keys, through a real rrdcached started here on a temporary socket and
//! directory, directly when it is gone, and with a hung rrdcached that
//! must not touch FUSE or IPC latency.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Daemon;
use pmxcfs_ipc::client::Client;
use pmxcfs_ipc::proto::{Op, payload};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn set_rrd(client: &mut Client, key: &str, value: &str) {
    let reply = client
        .call(
            Op::SetStatus.id(),
            &payload::set_status(format!("rrd/{key}").as_bytes(), Some(value.as_bytes())),
        )
        .expect("IPC transport");
    assert_eq!(reply, Ok(Vec::new()), "SET_STATUS rrd/{key}");
}

#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn rrdtool(args: &[&str]) -> String {
    let output = Command::new("rrdtool")
        .args(args)
        .output()
        .expect("rrdtool (Debian package rrdtool)");
    assert!(
        output.status.success(),
        "rrdtool {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A real rrdcached on a socket and base directory of our own; killed on drop.
struct Rrdcached {
    child: Child,
    socket: PathBuf,
}

impl Rrdcached {
    fn start(base: &Path, dir: &Path) -> Rrdcached {
        let socket = base.join("rrdcached.sock");
        fs::create_dir_all(dir).expect("rrd dir");
        let child = Command::new("rrdcached")
            .arg("-g")
            .arg("-B")
            .arg("-b")
            .arg(dir)
            .arg("-l")
            .arg(format!("unix:{}", socket.display()))
            .arg("-p")
            .arg(base.join("rrdcached.pid"))
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rrdcached (Debian package rrdcached)");
        wait_for("rrdcached's socket", || socket.exists());
        Rrdcached { child, socket }
    }

    fn daemon_arg(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Rrdcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rrdtool lastupdate` of a file: the timestamp and the values.
fn last_update(file: &Path, daemon: Option<&str>) -> String {
    let path = file.to_string_lossy();
    let mut args = vec!["lastupdate"];
    if let Some(daemon) = daemon {
        args.extend(["--daemon", daemon]);
    }
    args.push(&path);
    rrdtool(&args)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn rrd_files_through_rrdcached_and_without_it() {
    let mut daemon = Daemon::new();
    let rrd_dir = daemon.base.join("rrd");
    let mut rrdcached = Rrdcached::start(&daemon.base, &rrd_dir);
    daemon.rrd_dir = rrd_dir.clone();
    daemon.rrdcached_socket = rrdcached.socket.clone();
    daemon.start();
    let mut client = Client::connect(&daemon.ipc_service()).expect("connect");

    // Three updates a minute apart, every key format of the spec.
    let t0 = (now() / 60) * 60 - 300;
    let node_old = |t: u64| format!("3600:1:{t}:0.5:4:0.25:0.01:8000:4000:2000:0:100:50:1000:2000");
    let node_new = |t: u64| format!("3600:1:{t}{}", ":7".repeat(19));
    let vm_old = |t: u64| format!("60:vm:running:0:{t}:2:0.5:2048:1024:100:50:1:2:3:4");
    let vm_new = |t: u64| format!("60:vm:running:0:{t}{}", ":3".repeat(17));
    let storage = |t: u64| format!("{t}:1000:250");
    let keys: [(&str, &dyn Fn(u64) -> String); 7] = [
        ("pve2-node/nodeA", &node_old),
        ("pve-node-9.0/nodeB", &node_new),
        ("pve2.3-vm/100", &vm_old),
        ("pve-vm-9.0/101", &vm_new),
        ("pve2-storage/nodeA/local", &storage),
        ("pve-storage-9.0/nodeA/nfs", &storage),
        ("pve-storage-42/nodeB/ceph", &storage),
    ];
    for step in 0..3 {
        for (key, value) in &keys {
            set_rrd(&mut client, key, &value(t0 + 60 * step));
        }
    }
    // Keys no file belongs to are stored and dumped, but not written.
    set_rrd(&mut client, "pve2-node/../escape", &storage(t0));
    set_rrd(&mut client, "something/else", &storage(t0));

    // All 21 went through rrdcached (its own count).
    wait_for("rrdcached to receive 21 updates", || {
        rrdcached_stat(&rrdcached.socket, "UpdatesReceived") == Some(21)
    });

    let files = [
        ("pve-node-9.0/nodeA", 19),
        ("pve-node-9.0/nodeB", 19),
        ("pve-vm-9.0/100", 17),
        ("pve-vm-9.0/101", 17),
        ("pve-storage-9.0/nodeA/local", 2),
        ("pve-storage-9.0/nodeA/nfs", 2),
        ("pve-storage-9.0/nodeB/ceph", 2),
    ];
    let last = t0 + 120;
    for (file, columns) in files {
        let path = rrd_dir.join(file);
        wait_for(&format!("{file} updated at {last}"), || {
            path.exists()
                && last_update(&path, Some(&rrdcached.daemon_arg()))
                    .starts_with(&format!("{last}:"))
        });
        // The C daemon's layout.
        let info = rrdtool(&["info", &path.to_string_lossy()]);
        assert!(info.contains("step = 60\n"), "{file}: {info}");
        assert_eq!(
            info.matches(".minimal_heartbeat = 120").count(),
            columns,
            "{file}"
        );
        assert_eq!(
            info.matches(".min = 0.0000000000e+00").count(),
            columns,
            "{file}"
        );
        assert_eq!(info.matches(".max = NaN").count(), columns, "{file}");
        for (index, (cf, steps, rows)) in [
            ("AVERAGE", 1, 1440),
            ("AVERAGE", 30, 1440),
            ("AVERAGE", 360, 1440),
            ("AVERAGE", 10080, 570),
            ("MAX", 1, 1440),
            ("MAX", 30, 1440),
            ("MAX", 360, 1440),
            ("MAX", 10080, 570),
        ]
        .iter()
        .enumerate()
        {
            for line in [
                format!("rra[{index}].cf = \"{cf}\""),
                format!("rra[{index}].pdp_per_row = {steps}"),
                format!("rra[{index}].rows = {rows}"),
                format!("rra[{index}].xff = 5.0000000000e-01"),
            ] {
                assert!(info.contains(&line), "{file}: no {line}");
            }
        }
        assert!(!info.contains("rra[8]"), "{file}: 8 archives");
        let mode = fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{file}");
        let dir_mode = fs::metadata(path.parent().expect("dir"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o750, "{file}'s directory");
    }
    assert!(info_has(
        &rrd_dir.join("pve-node-9.0/nodeA"),
        "ds[netin].type = \"DERIVE\""
    ));
    assert!(info_has(
        &rrd_dir.join("pve-vm-9.0/100"),
        "ds[diskwrite].type = \"DERIVE\""
    ));
    assert!(info_has(
        &rrd_dir.join("pve-node-9.0/nodeA"),
        "ds[loadavg].type = \"GAUGE\""
    ));
    assert!(
        !rrd_dir.join("escape").exists()
            && !rrd_dir.join("pve-node-9.0/..").join("escape").exists()
    );

    let storage_file = rrd_dir.join("pve-storage-9.0/nodeA/local");
    // Old formats padded: the node's new columns are unknown; fetch has
    // the values sent.
    assert_eq!(
        last_update(
            &rrd_dir.join("pve-node-9.0/nodeA"),
            Some(&rrdcached.daemon_arg())
        ),
        format!("{last}: 0.5 4 0.25 0.01 8000 4000 2000 0 100 50 1000 2000 U U U U U U U")
    );
    let fetched = rrdtool(&[
        "fetch",
        "--daemon",
        &rrdcached.daemon_arg(),
        &storage_file.to_string_lossy(),
        "AVERAGE",
        "-r",
        "60",
        "-s",
        &(t0 + 60).to_string(),
        "-e",
        &last.to_string(),
    ]);
    assert!(
        fetched.contains(&format!("{last}: 1.0000000000e+03 2.5000000000e+02")),
        "{fetched}"
    );

    // rrdcached gone (it writes what it had on the way out): the next
    // updates go to the files directly.
    rrdcached.stop();
    let later = last + 60;
    for (key, value) in &keys {
        set_rrd(&mut client, key, &value(later));
    }
    for (file, _) in files {
        let path = rrd_dir.join(file);
        wait_for(&format!("{file} written directly"), || {
            last_update(&path, None).starts_with(&format!("{later}:"))
        });
    }
    drop(client);
    daemon.stop_clean();
}

/// A counter of rrdcached's STATS answer.
fn rrdcached_stat(socket: &Path, name: &str) -> Option<u64> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.write_all(b"STATS\n").ok()?;
    let mut lines = BufReader::new(stream).lines();
    let count: usize = lines.next()?.ok()?.split(' ').next()?.parse().ok()?;
    lines.take(count).map_while(Result::ok).find_map(|line| {
        let (key, value) = line.split_once(": ")?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

fn info_has(path: &Path, line: &str) -> bool {
    rrdtool(&["info", &path.to_string_lossy()]).contains(line)
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// FUSE write + read and an IPC request, timed, `rounds` times, while
/// `updates` RRD keys are sent on another connection.
fn latencies(daemon: &Daemon, rounds: usize, tag: &str) -> (Duration, Duration) {
    let service = daemon.ipc_service();
    let tag = tag.to_owned();
    let sender = thread::spawn(move || {
        let mut client = Client::connect(&service).expect("connect");
        let t = now();
        for i in 0..1000 {
            set_rrd(
                &mut client,
                &format!("pve2-storage/node{}/s{tag}{}", i % 10, i / 10),
                &format!("{t}:1000:{i}"),
            );
        }
    });
    let mut client = Client::connect(&daemon.ipc_service()).expect("connect");
    let (mut fuse, mut ipc) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let start = Instant::now();
        let path = daemon.path(&format!("lat-{}.conf", round % 16));
        fs::write(&path, format!("round {round}\n")).expect("write");
        fs::read(&path).expect("read");
        fuse.push(start.elapsed());
        let start = Instant::now();
        let reply = client
            .call(Op::GetStatus.id(), &payload::get_status(b"kv/none", b""))
            .expect("IPC transport");
        assert_eq!(reply, Err(libc::ENOENT));
        ipc.push(start.elapsed());
    }
    sender.join().expect("sender");
    (p99(fuse), p99(ipc))
}

/// rrdcached accepts and never answers (the C daemon froze /etc/pve on
/// this): FUSE and IPC keep their latency, the files are written directly
/// once the 1 s timeout passed, and the daemon stops promptly.
#[test]
fn a_hung_rrdcached_touches_neither_fuse_nor_ipc() {
    let mut daemon = Daemon::new();
    let hung_socket = daemon.base.join("hung.sock");
    let listener = UnixListener::bind(&hung_socket).expect("bind");
    let accepting = thread::spawn(move || {
        let mut held = Vec::new();
        // Accept (and hold) until the test connects once more at the end.
        while let Ok((stream, _)) = listener.accept() {
            held.push(stream);
            if held.len() >= 8 {
                break;
            }
        }
    });
    daemon.rrdcached_socket = hung_socket.clone();
    daemon.start();

    let (fuse_before, ipc_before) = latencies(&daemon, 300, "a");
    let started = Instant::now();
    // Another burst: the writer meets the hung socket, times out, goes
    // direct; meanwhile FUSE and IPC are measured again.
    let (fuse_during, ipc_during) = latencies(&daemon, 300, "b");
    eprintln!(
        "p99 without / with a hung rrdcached: FUSE write+read {fuse_before:?} / {fuse_during:?}, IPC {ipc_before:?} / {ipc_during:?} ({:?})",
        started.elapsed()
    );
    let bound = Duration::from_millis(200);
    assert!(
        fuse_during < bound,
        "FUSE p99 {fuse_during:?} with a hung rrdcached"
    );
    assert!(
        ipc_during < bound,
        "IPC p99 {ipc_during:?} with a hung rrdcached"
    );
    // The files are written anyway (directly).
    let file = daemon.rrd_dir.join("pve-storage-9.0/node9/sb99");
    wait_for("the last burst's file", || file.exists());
    let log = fs::read_to_string(&daemon.log).expect("log");
    assert!(log.contains("rrdcached unusable"), "{log}");

    daemon.stop_clean();
    for _ in 0..8 {
        let _ = std::os::unix::net::UnixStream::connect(&hung_socket);
    }
    let _ = accepting.join();
}
