//! Harness for black-box tests of the FUSE daemon: start the real
//! `pmxcfs` binary on temporary directories, wait for its mount, stop it,
//! and always tear it down (also when an assertion fails). Plus thin
//! wrappers for the syscalls `std` does not offer.
//!
//! Processes are only ever signalled by the pid this harness started (or
//! read from the daemon's own pid file).

#![allow(dead_code)]

pub mod battery;
pub mod lab;
pub mod node;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pmxcfs");
pub const NODE_IP: &str = "192.0.2.1";
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Drop` and `stop` wait for the daemon after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

static NODE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// gid of group `www-data` (the daemon reports it on every object).
pub fn www_data_gid() -> u32 {
    static GID: OnceLock<u32> = OnceLock::new();
    *GID.get_or_init(|| {
        let name = CString::new("www-data").expect("no NUL");
        // SAFETY: getgrnam is called once (OnceLock), with a valid C string;
        // the result is read before any other getgr* call could reuse it.
        let group = unsafe { libc::getgrnam(name.as_ptr()) };
        assert!(!group.is_null(), "group www-data is missing on this host");
        // SAFETY: non-null pointer returned by getgrnam.
        unsafe { (*group).gr_gid }
    })
}

/// uid of user `www-data` (65534 if there is none: only the group matters).
pub fn www_data_uid() -> u32 {
    static UID: OnceLock<u32> = OnceLock::new();
    *UID.get_or_init(|| {
        let name = CString::new("www-data").expect("no NUL");
        // SAFETY: getpwnam is called once (OnceLock), with a valid C string.
        let user = unsafe { libc::getpwnam(name.as_ptr()) };
        if user.is_null() {
            65534
        } else {
            // SAFETY: non-null pointer returned by getpwnam.
            unsafe { (*user).pw_uid }
        }
    })
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

enum Process {
    /// Started with `-f`: our child.
    Foreground(Child),
    /// Daemonized: not our child, known by the pid file.
    Detached(i32),
}

impl Process {
    fn pid(&self) -> i32 {
        match self {
            Process::Foreground(child) => child.id() as i32,
            Process::Detached(pid) => *pid,
        }
    }

    /// `Some(status)` once the process is gone (status `None` for a detached
    /// process, whose exit status we cannot collect).
    fn try_exited(&mut self) -> Option<Option<ExitStatus>> {
        match self {
            Process::Foreground(child) => match child.try_wait() {
                Ok(Some(status)) => Some(Some(status)),
                Ok(None) => None,
                Err(_) => Some(None),
            },
            Process::Detached(pid) => {
                if pid_alive(*pid) {
                    None
                } else {
                    Some(None)
                }
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with the pid of the process this harness started.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits up to `timeout`; `Some(status)` if the process is gone.
    fn wait_timeout(&mut self, timeout: Duration) -> Option<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Alive = `/proc/<pid>` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the last ')' (the command name may contain any byte).
    match stat.rfind(')') {
        Some(at) => !matches!(stat[at + 1..].trim_start().chars().next(), Some('Z' | 'X')),
        None => false,
    }
}

/// The result of `Daemon::stop`.
#[derive(Debug)]
pub struct Stopped {
    /// The daemon is gone.
    pub exited: bool,
    /// Exit status (foreground daemons only).
    pub status: Option<ExitStatus>,
    /// Time from sending the signal until the process was gone.
    pub elapsed: Duration,
}

/// One daemon instance with its own directories. Can be stopped and
/// started again on the same directories. Dropping it stops the daemon
/// (SIGTERM, then SIGKILL), lazily unmounts a leftover mount and removes
/// the directories.
pub struct Daemon {
    dir: Option<tempfile::TempDir>,
    pub base: PathBuf,
    pub mountpoint: PathBuf,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub pid_file: PathBuf,
    pub log: PathBuf,
    pub nodename: String,
    /// `--rrd-dir` and `--rrdcached-socket` (by default a socket nobody
    /// listens on: files are written directly).
    pub rrd_dir: PathBuf,
    pub rrdcached_socket: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    process: Option<Process>,
}

impl Daemon {
    /// Fresh directories (the mountpoint is not created: the daemon must
    /// create it) and a fresh node name; nothing is started.
    pub fn new() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("pmxcfs-fuse-")
            .tempdir()
            .expect("tempdir");
        let base = dir.path().canonicalize().expect("canonical tempdir");
        let data_dir = base.join("data");
        let run_dir = base.join("run");
        std::fs::create_dir(&data_dir).expect("data dir");
        std::fs::create_dir(&run_dir).expect("run dir");
        let number = NODE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let (rrd_dir, rrdcached_socket) = (base.join("rrd"), base.join("rrdcached.sock"));
        Daemon {
            dir: Some(dir),
            mountpoint: base.join("mnt"),
            pid_file: base.join("pmxcfs.pid"),
            log: base.join("daemon.log"),
            data_dir,
            run_dir,
            base,
            nodename: format!("pvetest{number}"),
            rrd_dir,
            rrdcached_socket,
            env: Vec::new(),
            args: Vec::new(),
            process: None,
        }
    }

    /// An extra daemon argument for every later start.
    pub fn arg(mut self, arg: &str) -> Daemon {
        self.args.push(arg.to_owned());
        self
    }

    /// An environment variable for every later start.
    pub fn env(mut self, key: &str, value: &str) -> Daemon {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `new()` + `start()`.
    pub fn started() -> Daemon {
        let mut daemon = Daemon::new();
        daemon.start();
        daemon
    }

    /// The daemon's libqb IPC service name: test daemons share the network
    /// namespace (abstract sockets), so each gets its own.
    pub fn ipc_service(&self) -> String {
        format!("pve2-t{}-{}", std::process::id(), self.nodename)
    }

    /// A path inside the mount (`rel` without leading `/`).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn pid(&self) -> i32 {
        self.process.as_ref().expect("daemon running").pid()
    }

    fn command(&self, foreground: bool) -> Command {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let mut command = Command::new(BIN);
        if foreground {
            command.arg("-f");
        }
        command
            .arg("-l")
            .arg("--mountpoint")
            .arg(&self.mountpoint)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--pid-file")
            .arg(&self.pid_file)
            .arg("--nodename")
            .arg(&self.nodename)
            .arg("--node-ip")
            .arg(NODE_IP)
            .arg("--ipc-service")
            .arg(self.ipc_service())
            .arg("--rrd-dir")
            .arg(&self.rrd_dir)
            .arg("--rrdcached-socket")
            .arg(&self.rrdcached_socket)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Starts `pmxcfs -f -l ...` and waits until the mount serves.
    #[track_caller]
    pub fn start(&mut self) {
        assert!(self.process.is_none(), "daemon already running");
        let child = self.command(true).spawn().expect("spawn pmxcfs");
        self.process = Some(Process::Foreground(child));
        self.wait_ready();
    }

    /// Starts `pmxcfs -l ...` without `-f`; returns the parent's exit
    /// status. On success the daemon's pid is taken from the pid file.
    #[track_caller]
    pub fn start_daemonized(&mut self) -> ExitStatus {
        assert!(self.process.is_none(), "daemon already running");
        let mut parent = Process::Foreground(self.command(false).spawn().expect("spawn pmxcfs"));
        let Some(status) = parent.wait_timeout(READY_TIMEOUT) else {
            parent.signal(libc::SIGKILL);
            parent.wait_timeout(STOP_TIMEOUT);
            self.adopt_pid_file();
            panic!(
                "daemonizing parent did not exit within {READY_TIMEOUT:?}\n{}",
                self.log_tail()
            );
        };
        let status = status.expect("parent status");
        self.adopt_pid_file();
        status
    }

    fn adopt_pid_file(&mut self) {
        if let Some(pid) = self.read_pid_file()
            && pid_alive(pid)
        {
            self.process = Some(Process::Detached(pid));
        }
    }

    /// The pid in the pid file, if it holds exactly `"<pid>\n"`.
    pub fn read_pid_file(&self) -> Option<i32> {
        let text = std::fs::read_to_string(&self.pid_file).ok()?;
        text.strip_suffix('\n')?.parse().ok()
    }

    #[track_caller]
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let process = self.process.as_mut().expect("started");
            if let Some(status) = process.try_exited() {
                self.process = None;
                panic!(
                    "pmxcfs exited ({status:?}) before its mount served\n{}",
                    self.log_tail()
                );
            }
            if self.is_mounted() && self.serves(deadline) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not served by a fuse mount within {READY_TIMEOUT:?}\n{}",
                    self.mountpoint.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/proc/self/mountinfo` lists the mountpoint with a fuse file system
    /// (a stale mount of a dead daemon counts too).
    pub fn is_mounted(&self) -> bool {
        is_fuse_mounted(&self.mountpoint)
    }

    /// statfs on the mountpoint answers with the FUSE magic (a stale mount
    /// gives ENOTCONN). Runs in a helper thread so a hung daemon cannot
    /// hang the test beyond `deadline`.
    pub fn serves(&self, deadline: Instant) -> bool {
        let path = self.mountpoint.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(statfs(&path));
        });
        let wait = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(wait.max(Duration::from_millis(100))) {
            Ok(Ok(st)) => st.f_type == libc::FUSE_SUPER_MAGIC,
            _ => false,
        }
    }

    /// Sends `signal` and waits up to 5 s for the daemon to be gone.
    pub fn stop(&mut self, signal: i32) -> Stopped {
        let process = self.process.as_mut().expect("daemon running");
        let start = Instant::now();
        process.signal(signal);
        match process.wait_timeout(STOP_TIMEOUT) {
            Some(status) => {
                let elapsed = start.elapsed();
                self.process = None;
                Stopped {
                    exited: true,
                    status,
                    elapsed,
                }
            }
            None => Stopped {
                exited: false,
                status: None,
                elapsed: start.elapsed(),
            },
        }
    }

    /// SIGTERM; asserts exit status 0 within 2 s and the mount gone.
    #[track_caller]
    pub fn stop_clean(&mut self) {
        let stopped = self.stop(libc::SIGTERM);
        assert!(
            stopped.exited,
            "pmxcfs still running {:?} after SIGTERM\n{}",
            stopped.elapsed,
            self.log_tail()
        );
        if let Some(status) = stopped.status {
            assert!(
                status.success(),
                "pmxcfs exited with {status} after SIGTERM\n{}",
                self.log_tail()
            );
        }
        assert!(
            stopped.elapsed < Duration::from_secs(2),
            "pmxcfs needed {:?} to exit after SIGTERM",
            stopped.elapsed
        );
        assert!(
            !self.is_mounted(),
            "{} still mounted after pmxcfs exited",
            self.mountpoint.display()
        );
    }

    /// SIGKILL and reap; the mount stays behind (stale).
    pub fn kill9(&mut self) {
        let stopped = self.stop(libc::SIGKILL);
        assert!(stopped.exited, "pmxcfs survived SIGKILL");
    }

    /// SIGKILL and a new daemon started at once, without waiting for the
    /// old one to be gone (as `kill -9 PID; pmxcfs` by an operator): the new
    /// one meets the mount while the kernel still tears the old connection
    /// down. The old process is reaped after the new one was spawned.
    #[track_caller]
    pub fn kill9_and_restart_at_once(&mut self) {
        let mut old = self.process.take().expect("daemon running");
        old.signal(libc::SIGKILL);
        let child = self.command(true).spawn().expect("spawn pmxcfs");
        self.process = Some(Process::Foreground(child));
        assert!(
            old.wait_timeout(STOP_TIMEOUT).is_some(),
            "pmxcfs survived SIGKILL"
        );
        self.wait_ready();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "--- daemon log (last lines) ---\n{}",
            lines[start..].join("\n")
        )
    }

    /// `pmxcfs dump --data-dir D` as path → row (paths relative, no
    /// leading `/`; the root row is "").
    #[track_caller]
    pub fn dump(&self) -> BTreeMap<String, Value> {
        dump_tree(&self.data_dir)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        if let Some(mut process) = self.process.take() {
            process.signal(libc::SIGTERM);
            if process.wait_timeout(STOP_TIMEOUT).is_none() {
                process.signal(libc::SIGKILL);
                process.wait_timeout(STOP_TIMEOUT);
            }
        }
        for _ in 0..4 {
            if !self.is_mounted() {
                break;
            }
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Never delete through a mount we could not remove: keep the dirs.
        if self.is_mounted()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("left {} behind: still mounted", kept.display());
        }
    }
}

pub fn is_fuse_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = escape_mount_path(mountpoint);
    info.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        let mount = left.split(' ').nth(4);
        let fstype = right.split(' ').next().unwrap_or("");
        mount == Some(wanted.as_str()) && (fstype == "fuse" || fstype.starts_with("fuse."))
    })
}

/// mountinfo's octal escapes of space, tab, newline and backslash.
fn escape_mount_path(path: &Path) -> String {
    let mut out = String::new();
    for &byte in path.as_os_str().as_bytes() {
        match byte {
            b' ' | b'\t' | b'\n' | b'\\' => out.push_str(&format!("\\{byte:03o}")),
            _ => out.push(char::from(byte)),
        }
    }
    out
}

/// Rows of `pmxcfs dump --data-dir D`, keyed by their path.
#[track_caller]
pub fn dump_tree(data_dir: &Path) -> BTreeMap<String, Value> {
    let output = Command::new(BIN)
        .arg("dump")
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pmxcfs dump");
    assert!(
        output.status.success(),
        "pmxcfs dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("dump is UTF-8");
    let rows: BTreeMap<u64, Value> = text
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("dump line is JSON");
            (row["inode"].as_u64().expect("inode"), row)
        })
        .collect();
    let mut tree = BTreeMap::new();
    for (&inode, row) in &rows {
        let mut parts = Vec::new();
        let mut current = inode;
        let mut steps = 0;
        while current != 0 {
            let entry = &rows[&current];
            parts.push(entry["name"].as_str().expect("name").to_owned());
            current = entry["parent"].as_u64().expect("parent");
            steps += 1;
            assert!(steps < 1000, "dump: parent loop at inode {inode}");
        }
        parts.reverse();
        tree.insert(parts.join("/"), row.clone());
    }
    tree
}

// ---------------------------------------------------------------------------
// Syscall wrappers and assertions

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// utimensat with explicit atime/mtime seconds (nanoseconds 0).
pub fn utime(path: &Path, atime: i64, mtime: i64) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: atime as libc::time_t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ];
    let path = cpath(path);
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) })
}

pub fn mknod(path: &Path, mode: libc::mode_t) -> io::Result<()> {
    let path = cpath(path);
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(path.as_ptr(), mode, 0) })
}

pub fn mkfifo(path: &Path, mode: libc::mode_t) -> io::Result<()> {
    let path = cpath(path);
    // SAFETY: valid C string.
    check(unsafe { libc::mkfifo(path.as_ptr(), mode) })
}

pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let from = cpath(from);
    let to = cpath(to);
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    })
}

pub fn flock(file: &std::fs::File, operation: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open file descriptor.
    check(unsafe { libc::flock(file.as_raw_fd(), operation) })
}

/// posix_fallocate (returns the error number instead of setting errno).
pub fn posix_fallocate(file: &std::fs::File, offset: i64, len: i64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open file descriptor.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, len) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

pub fn statfs(path: &Path) -> io::Result<libc::statfs> {
    let path = cpath(path);
    // SAFETY: zeroed plain C struct, filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a pointer to a statfs struct.
    check(unsafe { libc::statfs(path.as_ptr(), &mut st) })?;
    Ok(st)
}

/// statx with AT_STATX_FORCE_SYNC: forces a GETATTR to the daemon, which
/// regenerates a virtual file's content (filesystem.md §5).
pub fn statx_sync(path: &Path) -> io::Result<libc::statx> {
    let path = cpath(path);
    // SAFETY: zeroed plain C struct, filled by the kernel.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a pointer to a statx struct.
    check(unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_STATX_FORCE_SYNC | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut st,
        )
    })?;
    Ok(st)
}

/// Forced GETATTR, then read: a fresh view of a (virtual) file.
pub fn read_fresh(path: &Path) -> io::Result<Vec<u8>> {
    statx_sync(path)?;
    std::fs::read(path)
}

#[track_caller]
pub fn read_fresh_string(path: &Path) -> String {
    let bytes = match read_fresh(path) {
        Ok(bytes) => bytes,
        Err(error) => panic!("read {}: {error}", path.display()),
    };
    String::from_utf8(bytes).expect("UTF-8 content")
}

pub fn lgetxattr(path: &Path, name: &str) -> io::Result<usize> {
    let path = cpath(path);
    let name = CString::new(name).expect("no NUL");
    let mut buffer = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the given length.
    let ret = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let path = cpath(path);
    let name = CString::new(name).expect("no NUL");
    // SAFETY: valid C strings and a value buffer of the given length.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Asserts that `result` failed with exactly `errno`.
#[track_caller]
pub fn assert_errno<T: Debug>(result: io::Result<T>, errno: i32, what: &str) {
    let expected = io::Error::from_raw_os_error(errno);
    match result {
        Ok(value) => panic!("{what}: expected error \"{expected}\", got success {value:?}"),
        Err(error) => assert_eq!(
            error.raw_os_error(),
            Some(errno),
            "{what}: expected \"{expected}\", got \"{error}\""
        ),
    }
}

/// Unwraps with the operation and path in the message.
#[track_caller]
pub fn ok<T>(result: io::Result<T>, what: &str) -> T {
    // A match, not unwrap_or_else: a closure would hide the caller's line.
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: unexpected error \"{error}\""),
    }
}

/// Builds tests/shim/slow_sync.c (an LD_PRELOAD slow disk) into `dir`.
pub fn slow_sync_shim(dir: &Path) -> PathBuf {
    let out = dir.join("slow_sync.so");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/shim/slow_sync.c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("cc (build-essential)");
    assert!(status.success(), "building the slow-sync shim");
    out
}
