//! The daemon: set-up as the C daemon does it (directories, single-instance
//! lock, node name, www-data group, stale mount, daemonizing, pid file,
//! restart flag), then one reactor loop that serves /dev/fuse, signals and
//! the journal's sync timer on this thread.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::control::Control;
use crate::notify::Notifier;
use crate::status_report::{self, DaemonFigures};
use pmxcfs_cpg::status::RrdSink;
use pmxcfs_fsproto::{Channel, Config, IpcService, PmxFs, REQUEST_BUFFER_BYTES};
use pmxcfs_ipc::server::{CONNECTIONS_MAX, NAME_WAIT, Server as IpcServer};
use pmxcfs_reactor::{DAEMON_SIGNALS, Reactor, Signals, Token};
use pmxcfs_rrd::{Writer as RrdWriter, WriterConfig};
use pmxcfs_store::{Durability, Store};

use crate::cli::DaemonOptions;
use crate::cluster::{ClusterLink, TOKEN_CPG_DCDB, TOKEN_CPG_KVSTORE, TOKEN_QUORUM, TOKEN_TICK};
use crate::lock::{DataDirLock, LockError};

/// Requests the kernel may hand us at once (reads posted on /dev/fuse).
const FUSE_READS_IN_FLIGHT: u64 = 4;
// The reads of /dev/fuse carry the tokens 0..FUSE_READS_IN_FLIGHT; every
// other operation a token of its own (below, `cluster`, `control`, the IPC
// server's range).
const _: () = assert!(FUSE_READS_IN_FLIGHT <= 100);
/// In relaxed durability the journal is synced at most this long after a
/// change was acknowledged (what a power loss can take; ARCHITECTURE.md),
/// plus the time the disk takes.
const SYNC_DELAY: Duration = Duration::from_millis(10);
const TOKEN_SIGNAL: Token = Token(100);
const TOKEN_FUSE_POLL: Token = Token(102);
const TOKEN_STOP_DEADLINE: Token = Token(103);
/// Cluster mode with io_uring queues: a queue took a mutating request.
const TOKEN_WAKE: Token = Token(104);
/// systemd's watchdog keep-alive is due.
const TOKEN_WATCHDOG: Token = Token(105);
/// After serving, the loop keeps polling (yielding the CPU between polls)
/// this long before it sleeps. A caller that sends its next request at once
/// (most do: stat after create, write after open) then finds the loop
/// awake: on this kind of VM a sleeping loop on another CPU costs tens of µs
/// of wake-up per request (BENCHMARKS.md). Idle cost: one short burst of
/// polls after the last request of a burst.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(200);
/// Reads of /dev/fuse that fail in a row before the loop gives up (a broken
/// connection would otherwise spin).
const FUSE_READ_ERRORS_MAX: u32 = 100;
/// After SIGTERM the loop waits at most this long for the kernel to return
/// its reads; then it leaves anyway (shutdown is bounded).
const STOP_DEADLINE: Duration = Duration::from_millis(1500);
/// Operations in flight at once: FUSE reads, signals, timers, corosync
/// polls (a few dozen), one poll per IPC connection and the listener, and
/// their cancellations.
const REACTOR_SLOTS: u32 = 128 + 2 * CONNECTIONS_MAX as u32;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("store: {0}")]
    Store(#[from] pmxcfs_store::StoreError),
    #[error("FUSE: {0}")]
    Channel(#[from] pmxcfs_fsproto::ChannelError),
    #[error("event loop: {0}")]
    Reactor(#[from] pmxcfs_reactor::ReactorError),
    #[error("IPC: {0}")]
    Ipc(#[from] pmxcfs_ipc::server::ServerError),
    #[error("migrating the C daemon's config.db: {0}")]
    Migrate(#[from] crate::db_tools::ToolError),
    #[error("{0}")]
    Setup(String),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io { what, path, source }
}

/// The resolved settings.
struct Settings {
    mountpoint: PathBuf,
    data_dir: PathBuf,
    run_dir: PathBuf,
    pid_file: PathBuf,
    nodename: String,
    /// The node's address (`--node-ip`, or looked up as the C daemon does);
    /// used by cluster mode, logged in local mode.
    node_ip: Option<String>,
    www_data_gid: u32,
    lock_timeout_secs: Option<u64>,
    /// The host's corosync.conf (imported into a new tree; kept in sync
    /// with the tree's copy in cluster mode).
    corosync_conf: PathBuf,
    /// libqb IPC service name ("pve2").
    ipc_service: String,
    /// RRD files and rrdcached.
    rrd_dir: PathBuf,
    rrdcached_socket: PathBuf,
}

/// `lookup_node_ip`: the first IPv4 address of `nodename` outside 127/8, else
/// the first IPv6 address other than ::1 (getaddrinfo with AI_V4MAPPED|AI_ALL).
fn lookup_node_ip(nodename: &str) -> Option<String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let name = CString::new(nodename).ok()?;
    // SAFETY: addrinfo is plain data; zero is a valid "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_V4MAPPED | libc::AI_ALL;
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_DGRAM;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid name, hints and out pointer; the list is freed below.
    if unsafe { libc::getaddrinfo(name.as_ptr(), std::ptr::null(), &hints, &mut list) } != 0 {
        return None;
    }
    let mut addresses = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list getaddrinfo returned.
        let info = unsafe { &*cursor };
        if !info.ai_addr.is_null() {
            match info.ai_family {
                libc::AF_INET => {
                    // SAFETY: AF_INET entries carry a sockaddr_in.
                    let addr = unsafe { &*(info.ai_addr as *const libc::sockaddr_in) };
                    addresses.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        addr.sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 => {
                    // SAFETY: AF_INET6 entries carry a sockaddr_in6.
                    let addr = unsafe { &*(info.ai_addr as *const libc::sockaddr_in6) };
                    let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
                    addresses.push(match ip.to_ipv4_mapped() {
                        Some(v4) => IpAddr::V4(v4),
                        None => IpAddr::V6(ip),
                    });
                }
                _ => {}
            }
        }
        cursor = info.ai_next;
    }
    // SAFETY: the list from getaddrinfo, freed once.
    unsafe { libc::freeaddrinfo(list) };
    addresses
        .iter()
        .find(|ip| matches!(ip, IpAddr::V4(v4) if v4.octets()[0] != 127))
        .or_else(|| {
            addresses
                .iter()
                .find(|ip| matches!(ip, IpAddr::V6(v6) if !v6.is_loopback()))
        })
        .map(ToString::to_string)
}

fn nodename_from_uname() -> Result<String, DaemonError> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(DaemonError::Setup("uname failed".into()));
    }
    let bytes: Vec<u8> = uts
        .nodename
        .iter()
        .take_while(|byte| **byte != 0)
        .map(|byte| *byte as u8)
        .collect();
    let name = String::from_utf8_lossy(&bytes);
    Ok(name.split('.').next().unwrap_or_default().to_string())
}

fn www_data_gid() -> Result<u32, DaemonError> {
    let name = c"www-data";
    // SAFETY: a NUL-terminated name; the result is read at once, before any
    // other getgr* call (this thread is the only one).
    let group = unsafe { libc::getgrnam(name.as_ptr()) };
    if group.is_null() {
        return Err(DaemonError::Setup(
            "group www-data does not exist (the C daemon refuses to start too)".into(),
        ));
    }
    // SAFETY: non-null pointer from getgrnam.
    Ok(unsafe { (*group).gr_gid })
}

fn resolve(options: &DaemonOptions) -> Result<Settings, DaemonError> {
    let nodename = match &options.nodename {
        Some(name) => name.to_string_lossy().into_owned(),
        None => nodename_from_uname()?,
    };
    if nodename.is_empty() {
        return Err(DaemonError::Setup("empty node name".into()));
    }
    let lock_timeout_secs = match std::env::var("PMXCFS_LOCK_TIMEOUT_SECS") {
        Ok(value) => Some(value.parse().map_err(|_| {
            DaemonError::Setup(format!("PMXCFS_LOCK_TIMEOUT_SECS={value} is not a number"))
        })?),
        Err(_) => None,
    };
    let or = |value: &Option<PathBuf>, default: &str| {
        value.clone().unwrap_or_else(|| PathBuf::from(default))
    };
    let node_ip = match &options.node_ip {
        Some(ip) => Some(ip.to_string_lossy().into_owned()),
        None => lookup_node_ip(&nodename),
    };
    Ok(Settings {
        node_ip,
        mountpoint: or(&options.mountpoint, "/etc/pve"),
        data_dir: or(&options.data_dir, "/var/lib/pve-cluster"),
        run_dir: or(&options.run_dir, "/run/pve-cluster"),
        pid_file: or(&options.pid_file, "/var/run/pve-cluster.pid"),
        nodename,
        www_data_gid: www_data_gid()?,
        lock_timeout_secs,
        corosync_conf: or(&options.corosync_conf, "/etc/corosync/corosync.conf"),
        ipc_service: options.ipc_service.as_ref().map_or_else(
            || pmxcfs_ipc::proto::SERVICE_NAME.to_owned(),
            |name| name.to_string_lossy().into_owned(),
        ),
        rrd_dir: or(&options.rrd_dir, "/var/lib/rrdcached/db"),
        // rrdtool's `unix:PATH` spelling is taken too.
        rrdcached_socket: {
            let socket = or(&options.rrdcached_socket, "/var/run/rrdcached.sock");
            match socket.to_str().and_then(|text| text.strip_prefix("unix:")) {
                Some(path) => PathBuf::from(path),
                None => socket,
            }
        },
    })
}

fn make_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_error("cannot create", path))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), DaemonError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_error("cannot chown", path))
}

/// A mount left on our mountpoint by a daemon that is gone (killed, crashed)
/// is detached before we mount, whatever state its FUSE connection is in:
/// ENOTCONN (the device was closed), ECONNABORTED (the connection was
/// aborted, as io_uring teardown and our own shutdown do), or one that still
/// looks alive. The C daemon does the same unconditionally (a forced
/// unmount at start). We only get here holding the single-instance lock, so
/// no daemon of this data dir serves it. The mount table is read rather than
/// the mountpoint stat'ed: a stat of a dead mount may fail with any of those
/// errnos, and one of a half-dead mount could block.
fn recover_stale_mount(mountpoint: &Path) -> Result<(), DaemonError> {
    // Mounts can be stacked (a daemon killed while an earlier dead mount was
    // still there): detach until none is left.
    let mut detached = 0;
    while let Some(fstype) = fuse_mount_at(mountpoint) {
        if detached >= STALE_MOUNTS_MAX {
            return Err(DaemonError::Setup(format!(
                "{}: still a {fstype} mount after detaching {detached}",
                mountpoint.display()
            )));
        }
        tracing::warn!(
            mountpoint = %mountpoint.display(),
            %fstype,
            "detaching a mount left by a previous daemon"
        );
        // Clients still waiting on it get ENOTCONN instead of waiting for
        // ever (we hold the instance lock: no daemon serves it).
        abort_fuse_connection(mountpoint);
        let target = CString::new(mountpoint.as_os_str().as_bytes())
            .map_err(|_| DaemonError::Setup("mountpoint contains NUL".into()))?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io_error("cannot detach stale mount", mountpoint)(
                std::io::Error::last_os_error(),
            ));
        }
        detached += 1;
    }
    match std::fs::metadata(mountpoint) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => make_dir(mountpoint, 0o750),
        Err(error) => Err(io_error("cannot stat", mountpoint)(error)),
        Ok(_) => Ok(()),
    }
}

/// Stacked stale mounts detached at most at start.
const STALE_MOUNTS_MAX: u32 = 16;

/// The file system type of the topmost FUSE mount on `mountpoint`, from
/// /proc/self/mountinfo (`None`: no FUSE mount there).
fn fuse_mount_at(mountpoint: &Path) -> Option<String> {
    fuse_mount_of(mountpoint).map(|(fstype, _)| fstype)
}

/// The mountpoint as the mount table spells it: its parent resolved (the
/// mountpoint itself may be a dead mount that cannot be resolved).
fn mount_table_path(mountpoint: &Path) -> Option<PathBuf> {
    match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            Some(std::fs::canonicalize(parent).ok()?.join(name))
        }
        _ => std::fs::canonicalize(mountpoint).ok(),
    }
}

/// `fuse_mount_at` with the mount's connection id.
fn fuse_mount_of(mountpoint: &Path) -> Option<(String, Option<u64>)> {
    let absolute = mount_table_path(mountpoint)?;
    let table = std::fs::read("/proc/self/mountinfo").ok()?;
    mountinfo_fuse_mount(&table, absolute.as_os_str().as_bytes())
}

/// The connection id of the FUSE mount on `mountpoint` as process `pid`
/// sees it (a dead daemon may have mounted in a mount namespace of its own:
/// read through whichever of its threads is left).
fn fuse_connection_of_process(pid: u32, mountpoint: &Path) -> Option<u64> {
    let absolute = mount_table_path(mountpoint)?;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.filter_map(Result::ok).find_map(|task| {
        let table = std::fs::read(task.path().join("mountinfo")).ok()?;
        mountinfo_fuse_mount(&table, absolute.as_os_str().as_bytes())?.1
    })
}

/// Aborts the FUSE connection of the mount on `mountpoint` (what
/// `fusectl`'s abort file does): every request waiting on it fails with
/// ENOTCONN. Only for a mount whose daemon is gone.
fn abort_fuse_connection(mountpoint: &Path) {
    if let Some((_, Some(connection))) = fuse_mount_of(mountpoint) {
        abort_connection(connection, mountpoint);
    }
}

fn abort_connection(connection: u64, mountpoint: &Path) {
    let abort = format!("/sys/fs/fuse/connections/{connection}/abort");
    match std::fs::write(&abort, b"1") {
        Ok(()) => tracing::warn!(
            mountpoint = %mountpoint.display(),
            connection,
            "aborted the FUSE connection of a dead daemon"
        ),
        Err(error) => tracing::debug!(%abort, %error, "no FUSE connection to abort"),
    }
}

/// FUSE's control file system (`/sys/fs/fuse/connections`), where a
/// connection can be aborted: systemd mounts it on a Proxmox VE node
/// (pve-cluster.service runs after it); elsewhere (containers, a network
/// namespace's fresh /sys) it may be missing, and then a dead daemon's
/// clients could not be released. Mounted here when missing.
fn ensure_fusectl() {
    const PATH: &str = "/sys/fs/fuse/connections";
    if !Path::new(PATH).is_dir() {
        return;
    }
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|table| {
        table
            .lines()
            .any(|line| line.split(' ').nth(4) == Some(PATH) && line.contains(" - fusectl "))
    });
    if mounted {
        return;
    }
    let (source, target) = (c"fusectl", c"/sys/fs/fuse/connections");
    // SAFETY: mount(2) with NUL-terminated strings and no data.
    let result = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot mount fusectl; dead connections cannot be aborted"
        );
    }
}

/// The pid holding the flock on `path` (from /proc/locks), if any.
fn flock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(path).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> <start> <end>"
        let (pid, device) = (fields.get(4)?, fields.get(5)?);
        let lock_inode: u64 = device.rsplit(':').next()?.parse().ok()?;
        (fields.get(1) == Some(&"FLOCK") && lock_inode == inode)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

/// A process that has exited but not finished (its main thread is gone).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("State:") && line.contains('Z'))
    })
}

/// The last FUSE mount of `table` (mountinfo format) at `path`.
#[cfg(test)]
fn mountinfo_fuse_type(table: &[u8], path: &[u8]) -> Option<String> {
    mountinfo_fuse_mount(table, path).map(|(fstype, _)| fstype)
}

/// The last FUSE mount of `table` at `path`: its type and the kernel's id
/// of its connection (`/sys/fs/fuse/connections/<id>`, the mount's device
/// number).
fn mountinfo_fuse_mount(table: &[u8], path: &[u8]) -> Option<(String, Option<u64>)> {
    let mut found = None;
    for line in table.split(|byte| *byte == b'\n') {
        let fields: Vec<&[u8]> = line.split(|byte| *byte == b' ').collect();
        let Some(point) = fields.get(4) else {
            continue;
        };
        let Some(dash) = fields.iter().position(|field| *field == b"-") else {
            continue;
        };
        let Some(fstype) = fields.get(dash + 1) else {
            continue;
        };
        if unescape_mountinfo(point) == path && (fstype.starts_with(b"fuse.") || *fstype == b"fuse")
        {
            let connection = fields.get(2).and_then(|device| {
                let device = std::str::from_utf8(device).ok()?;
                let (major, minor) = device.split_once(':')?;
                Some((major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?)
            });
            found = Some((String::from_utf8_lossy(fstype).into_owned(), connection));
        }
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut index = 0;
    while index < field.len() {
        if field[index] == b'\\'
            && let Some(digits) = field.get(index + 1..index + 4)
            && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        {
            out.push(
                digits
                    .iter()
                    .fold(0u8, |value, digit| value.wrapping_mul(8) + (digit - b'0')),
            );
            index += 4;
        } else {
            out.push(field[index]);
            index += 1;
        }
    }
    out
}

/// The C daemon retries its lock 11 times, 1 s apart.
fn single_instance_lock(data_dir: &Path, mountpoint: &Path) -> Result<DataDirLock, DaemonError> {
    let mut attempt = 0;
    loop {
        match DataDirLock::acquire(data_dir) {
            Ok(lock) => return Ok(lock),
            Err(LockError::Held(path)) if attempt < 10 => {
                attempt += 1;
                // A daemon killed while its notifier thread waited in the
                // kernel (an invalidation blocked on a directory lock that
                // a client holds while it waits for that same daemon) cannot
                // finish exiting, and keeps the lock: abort its connection
                // so the client, the thread and the lock are released.
                if let Some(pid) = flock_holder(&path)
                    && is_zombie(pid)
                {
                    tracing::warn!(pid, "the instance lock is held by a dead daemon");
                    match fuse_connection_of_process(pid, mountpoint) {
                        Some(connection) => abort_connection(connection, mountpoint),
                        None => abort_fuse_connection(mountpoint),
                    }
                }
                tracing::info!(path = %path.display(), attempt, "waiting for the instance lock");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn write_pid_file(path: &Path, pid: u32) -> Result<(), DaemonError> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, format!("{pid}\n")).map_err(io_error("cannot write", &temp))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))
        .map_err(io_error("cannot chmod", &temp))?;
    std::fs::rename(&temp, path).map_err(io_error("cannot rename to", path))
}

fn restart_flag(run_dir: &Path) -> PathBuf {
    run_dir.join("cfs-restart-flag")
}

/// Forks; the parent waits until the child says the mount serves, writes
/// the pid file and exits. Returns the pipe end the child reports on.
fn daemonize(pid_file: &Path) -> Result<OwnedFd, DaemonError> {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(DaemonError::Setup("pipe failed".into()));
    }
    // SAFETY: fresh fds owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: this process has a single thread here (nothing spawned yet).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(DaemonError::Setup("fork failed".into()));
    }
    if pid > 0 {
        drop(write_end);
        // The parent only waits: let SIGTERM/SIGINT end it again.
        // SAFETY: an empty-then-filled signal set passed to sigprocmask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in DAEMON_SIGNALS {
                libc::sigaddset(&mut set, signal);
            }
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        let mut byte = [0u8; 1];
        // SAFETY: reading one byte into a valid buffer.
        let read = unsafe { libc::read(read_end.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        if read == 1 && byte[0] == b'1' {
            if let Err(error) = write_pid_file(pid_file, pid as u32) {
                eprintln!("pmxcfs: {error}; stopping the daemon");
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        eprintln!("pmxcfs: the daemon failed to start (see the system log)");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        std::process::exit(1);
    }
    drop(read_end);
    // SAFETY: plain syscall in the child.
    unsafe { libc::setsid() };
    Ok(write_end)
}

fn detach_stdio() {
    let null = c"/dev/null";
    // SAFETY: open/dup2 on valid fds; failures leave stdio as it was.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

/// Large blocks (libqb's 1 MiB receive buffer per IPC connection, big FUSE
/// writes) come from `mmap` and go back to the kernel when freed. glibc's
/// default raises the threshold to the largest block freed so far, after
/// which such blocks come from the heap and stay resident once freed: 200
/// IPC connections opened and closed left 100 MB behind. Setting the value
/// turns that adjustment off.
fn fix_malloc_mmap_threshold() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets an allocator parameter (under glibc's own
    // lock); no pointer is involved.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } != 1 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) refused; memory may stay high after IPC storms");
    }
}

/// The RRD writer as the status tables' sink.
struct RrdFiles(Arc<RrdWriter>);

impl RrdSink for RrdFiles {
    fn update(&self, key: &[u8], value: &[u8]) {
        self.0.submit(key, value);
    }
}

/// How long a stop waits for the RRD write in progress.
const RRD_STOP_WAIT: Duration = Duration::from_millis(500);

pub fn run(options: &DaemonOptions) -> Result<(), DaemonError> {
    let settings = resolve(options)?;
    // SAFETY: plain syscall.
    unsafe { libc::umask(0o027) };
    fix_malloc_mmap_threshold();
    // Signals are blocked before anything else so no thread ever gets them.
    let signals = Signals::new(&DAEMON_SIGNALS)?;
    let ready_pipe = if options.foreground {
        None
    } else {
        Some(daemonize(&settings.pid_file)?)
    };
    make_dir(&settings.data_dir, 0o750)?;
    make_dir(&settings.run_dir, 0o750)?;
    chown(&settings.run_dir, 0, settings.www_data_gid)?;
    ensure_fusectl();
    let _lock = single_instance_lock(&settings.data_dir, &settings.mountpoint)?;
    recover_stale_mount(&settings.mountpoint)?;
    // RRD files are written on their own thread, never on the loop.
    let rrd = Arc::new(
        RrdWriter::spawn(WriterConfig::new(
            settings.rrd_dir.clone(),
            Some(settings.rrdcached_socket.clone()),
        ))
        .map_err(|error| DaemonError::Setup(format!("cannot start the RRD writer: {error}")))?,
    );

    // First start on a node the C daemon ran: its database becomes ours.
    if let Some(summary) = crate::db_tools::migrate_c_database(&settings.data_dir)? {
        tracing::info!(
            entries = summary.entries,
            version = summary.version,
            "migrated the C daemon's {}/{} into the store (the file stays as it was; \
             `pmxcfs export-db` writes one back)",
            settings.data_dir.display(),
            crate::db_tools::C_DATABASE
        );
    }
    let fresh = !settings.data_dir.join("lmdb").join("data.mdb").exists();
    let store: &'static Store = Store::open(&settings.data_dir)?.leak();
    let durability = if options.sync_writes {
        Durability::Strict
    } else {
        Durability::Relaxed
    };
    let (mut session, mut permit) = store.session(durability)?;
    if let Some(timeout) = settings.lock_timeout_secs {
        session.set_lock_timeout_secs(timeout);
    }
    let recovery = session.recovery().clone();
    if recovery.replayed_records > 0 || recovery.dropped_journal_bytes > 0 {
        tracing::warn!(
            replayed = recovery.replayed_records,
            dropped_bytes = recovery.dropped_journal_bytes,
            "recovered from an unclean stop"
        );
    }
    if fresh && !options.local {
        import_host_corosync_conf(&mut session, &mut permit, &settings.corosync_conf)?;
    }
    let has_corosync_conf = matches!(
        session.reader().resolve(b"corosync.conf"),
        Ok(Some(entry)) if entry.meta.kind == pmxcfs_store::Kind::File
    );
    let cluster_mode = !options.local && has_corosync_conf;
    if cluster_mode && settings.node_ip.is_none() {
        drop(session);
        // SAFETY: the only session is gone; nothing else borrowed the store.
        unsafe { Store::reclaim(store) };
        return Err(DaemonError::Setup(format!(
            "unable to resolve node name '{}' to a non-loopback IP address (use --node-ip)",
            settings.nodename
        )));
    }
    let config = Config {
        nodename: settings.nodename.clone(),
        www_data_gid: settings.www_data_gid,
    };
    let fs = if cluster_mode {
        PmxFs::new_cluster(session, permit, config, settings.node_ip.clone())
    } else {
        PmxFs::new(session, permit, config)
    };
    fs.set_node_ip(settings.node_ip.clone());
    fs.set_rrd_sink(Arc::new(RrdFiles(rrd.clone())));
    // Requests are served through per-CPU io_uring queues when the kernel has
    // them (fuse.enable_uring; switched on here as root), else /dev/fuse.
    let uring = !options.no_uring && pmxcfs_fsproto::enable_uring();
    let mut channel = Channel::mount(&settings.mountpoint, fs, uring)?;
    match (&settings.node_ip, cluster_mode) {
        (Some(ip), true) => tracing::info!(
            mountpoint = %settings.mountpoint.display(),
            data_dir = %settings.data_dir.display(),
            nodename = %settings.nodename,
            node_ip = %ip,
            "serving in cluster mode (no quorum until corosync says so)"
        ),
        (Some(ip), false) => tracing::info!(
            mountpoint = %settings.mountpoint.display(),
            data_dir = %settings.data_dir.display(),
            nodename = %settings.nodename,
            node_ip = %ip,
            "serving in local mode"
        ),
        // The C daemon refuses to start here; local mode does not need it.
        (None, _) => tracing::warn!(
            mountpoint = %settings.mountpoint.display(),
            nodename = %settings.nodename,
            "serving in local mode; no non-loopback address found for the node name \
             (cluster mode will need one, or --node-ip)"
        ),
    }
    if options.foreground {
        write_pid_file(&settings.pid_file, std::process::id())?;
    }
    // The IPC service, as C: before the restart flag goes (clients that
    // found it retry their connects until this listens).
    let mut reactor = Reactor::new(REACTOR_SLOTS)?;
    let mut ipc = match IpcServer::start(&settings.ipc_service, settings.www_data_gid, NAME_WAIT) {
        Ok(ipc) => ipc,
        Err(error) => {
            if let Err(unmount) = channel.unmount() {
                tracing::error!(%unmount, "unmount failed");
            }
            if let Ok(fs) = channel.into_fs()
                && fs.close().is_ok()
            {
                // SAFETY: the session is closed and the serving threads are
                // joined: nothing borrows the store.
                unsafe { Store::reclaim(store) };
            }
            return Err(error.into());
        }
    };
    ipc.arm(&mut reactor)?;
    let _ = std::fs::remove_file(restart_flag(&settings.run_dir));
    for index in 0..FUSE_READS_IN_FLIGHT {
        reactor.read(
            channel.fd(),
            Vec::with_capacity(REQUEST_BUFFER_BYTES),
            Token(index),
        )?;
    }
    signals.read(&mut reactor, TOKEN_SIGNAL)?;
    let mut link =
        cluster_mode.then(|| ClusterLink::new(settings.corosync_conf.clone(), &settings.data_dir));
    if let Some(link) = link.as_mut() {
        link.restore_own_writes(&mut channel);
        // C: the tree's corosync.conf is copied to the host once at start.
        link.sync_corosync_conf(&mut channel, true);
        link.tick(&mut reactor, &mut channel);
        if let Some(fd) = channel.wake_fd() {
            reactor.poll_once(fd, libc::POLLIN as u32, TOKEN_WAKE)?;
        }
    }
    reactor.submit()?;
    if let Some(pipe) = ready_pipe {
        // SAFETY: writing one byte from a valid buffer.
        unsafe { libc::write(pipe.as_raw_fd(), b"1".as_ptr().cast(), 1) };
        drop(pipe);
        detach_stdio();
    }

    let stop = Stop {
        run_dir: settings.run_dir.clone(),
        www_data_gid: settings.www_data_gid,
    };
    let mut control = match Control::bind(&settings.run_dir) {
        Ok(control) => Some(control),
        Err(error) => {
            tracing::warn!(%error, "no control socket; `pmxcfs status` will not answer");
            None
        }
    };
    if let Some(control) = control.as_mut() {
        control.arm(&mut reactor)?;
    }
    let mut notifier = Notifier::from_env();
    if let Some(notifier) = notifier.as_mut() {
        notifier.update(|| channel.fs().health());
        if let Some(period) = notifier.watchdog {
            reactor.timer(period, TOKEN_WATCHDOG)?;
        }
    }
    let result = serve(
        &mut reactor,
        &mut channel,
        &signals,
        link.as_mut(),
        &mut ipc,
        &stop,
        Extras {
            control: control.as_mut(),
            notifier: notifier.as_mut(),
            rrd: &rrd,
            started: std::time::Instant::now(),
        },
    );
    if let Some(control) = &control {
        control.remove();
    }
    if let Some(link) = link.as_mut() {
        link.stop(&mut reactor);
    }
    stop.write_restart_flag();
    ipc.stop(&mut reactor);
    drop(reactor);
    rrd.stop(RRD_STOP_WAIT);
    let written = rrd.stats();
    tracing::info!(
        through_rrdcached = written.through_rrdcached,
        direct = written.direct,
        failed = written.failed,
        dropped = written.dropped,
        "RRD writer stopped"
    );
    let fs = channel.into_fs()?;
    fs.close()?;
    // SAFETY: the session was consumed by `close` and every thread that
    // served requests is joined (`into_fs`): nothing borrows the store.
    unsafe { Store::reclaim(store) };
    tracing::info!("stopped cleanly");
    result
}

/// A new tree starts with the host's corosync.conf (C: CREATE, then a
/// truncating WRITE of the whole file, writer 0), which makes it a cluster
/// node.
fn import_host_corosync_conf(
    session: &mut pmxcfs_store::Session<'static>,
    permit: &mut pmxcfs_store::ApplyPermit,
    host: &Path,
) -> Result<(), DaemonError> {
    let data = match std::fs::read(host) {
        Ok(data) => data,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            tracing::warn!(path = %host.display(), %error, "cannot read corosync.conf");
            return Ok(());
        }
    };
    let origin = pmxcfs_store::Origin {
        writer: 0,
        mtime: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as u32),
    };
    let mut writer = session.writer(permit);
    writer.apply(
        &pmxcfs_store::Op::Create {
            path: b"corosync.conf",
        },
        origin,
    )?;
    writer.apply(
        &pmxcfs_store::Op::Write {
            path: b"corosync.conf",
            offset: 0,
            data: &data,
            truncate: true,
        },
        origin,
    )?;
    session.commit()?;
    tracing::info!(path = %host.display(), "imported corosync.conf into the new tree");
    Ok(())
}

/// How the loop waits for its next events: polling first only while that
/// pays. It polls (for up to `POLL_BEFORE_SLEEP`, yielding the CPU between
/// polls) when, the last time it went idle, the next event came within that
/// time: a caller sending its next request at once. After a poll that found
/// nothing (a write waiting for its CPG round trip, an idle daemon) it sleeps
/// at once until an event again follows that quickly. Polling regardless
/// cost the cluster: three daemons polling after every delivery took the two
/// vCPUs corosync needed to pass the token (BENCHMARKS.md).
struct Waiter {
    poll_first: bool,
}

impl Waiter {
    fn wait(
        &mut self,
        reactor: &mut Reactor,
        completions: &mut Vec<pmxcfs_reactor::Completion>,
        timeout: Option<Duration>,
    ) -> Result<(), DaemonError> {
        // With work waiting (a zero timeout) there is nothing to poll for.
        if self.poll_first && timeout != Some(Duration::ZERO) {
            let start = std::time::Instant::now();
            while start.elapsed() < POLL_BEFORE_SLEEP {
                if reactor.wait(completions, Some(Duration::ZERO))? > 0 {
                    return Ok(());
                }
                // SAFETY: plain syscall.
                unsafe { libc::sched_yield() };
            }
        }
        let start = std::time::Instant::now();
        reactor.wait(completions, timeout)?;
        self.poll_first = start.elapsed() < POLL_BEFORE_SLEEP;
        Ok(())
    }
}

/// What a stop leaves for the clients: the restart flag (PVE::IPCC retries
/// its connects for 10 s while it exists), written before the IPC service
/// closes, as the C daemon does.
struct Stop {
    run_dir: PathBuf,
    www_data_gid: u32,
}

impl Stop {
    fn write_restart_flag(&self) {
        let flag = restart_flag(&self.run_dir);
        if std::fs::write(&flag, b"").is_ok() {
            let _ = std::fs::set_permissions(&flag, std::fs::Permissions::from_mode(0o440));
            let _ = chown(&flag, 0, self.www_data_gid);
        }
    }
}

/// What the loop needs besides its event sources.
struct Extras<'a> {
    control: Option<&'a mut Control>,
    notifier: Option<&'a mut Notifier>,
    rrd: &'a RrdWriter,
    started: std::time::Instant,
}

/// Relaxed mode's journal syncs: a thread of their own, woken when the
/// journal goes unsynced (whichever thread committed: the loop, a FUSE
/// io_uring queue or a CPG delivery), syncing SYNC_DELAY later, so that the
/// window a power cut can take stays ~10 ms and a slow disk holds up neither
/// reads nor writes. Strict mode syncs before each reply, by definition.
struct Syncer {
    signal: std::sync::Arc<pmxcfs_store::SyncSignal>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(fs: std::sync::Arc<pmxcfs_fsproto::PmxFs>) -> std::io::Result<Syncer> {
        let signal = fs.sync_signal();
        let waiter = std::sync::Arc::clone(&signal);
        let thread = std::thread::Builder::new()
            .name("pmxcfs-sync".into())
            .spawn(move || {
                while waiter.wait() {
                    // Until everything appended meanwhile is synced too.
                    loop {
                        std::thread::sleep(SYNC_DELAY);
                        let Some(job) = fs.start_sync() else {
                            break; // synced, or the store is poisoned
                        };
                        let result = job.run();
                        if let Err(error) = fs.finish_sync(job, result) {
                            tracing::error!(%error, "journal sync failed");
                            break;
                        }
                        if fs.is_synced() {
                            break;
                        }
                    }
                }
            })?;
        Ok(Syncer {
            signal,
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.signal.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The loop: one thread, everything through the reactor.
fn serve(
    reactor: &mut Reactor,
    channel: &mut Channel,
    signals: &Signals,
    mut link: Option<&mut ClusterLink>,
    ipc: &mut IpcServer,
    stop: &Stop,
    mut extras: Extras<'_>,
) -> Result<(), DaemonError> {
    let mut completions = Vec::new();
    let mut fuse_reads = FUSE_READS_IN_FLIGHT;
    let mut parked_buffers: Vec<Vec<u8>> = Vec::new();
    let mut poll_armed = false;
    let _syncer = Syncer::start(channel.fs_shared()).map_err(|error| {
        DaemonError::Setup(format!("cannot start the journal sync thread: {error}"))
    })?;
    let mut stopping = false;
    let mut read_errors = 0u32;
    let mut waiter = Waiter { poll_first: true };
    while fuse_reads > 0 || poll_armed {
        // libqb's deferred jobs must not wait for the next event.
        let timeout = ipc.has_jobs().then_some(Duration::ZERO);
        waiter.wait(reactor, &mut completions, timeout)?;
        for completion in completions.drain(..) {
            match completion.token {
                TOKEN_SIGNAL => {
                    let buffer = completion.buffer.unwrap_or_default();
                    for info in Signals::decode(&buffer) {
                        match info.signal {
                            libc::SIGHUP => tracing::info!(
                                "SIGHUP: logs go to stderr/syslog, nothing to reopen"
                            ),
                            signal => {
                                if !stopping {
                                    tracing::info!(
                                        signal,
                                        sender = info.sender_pid,
                                        "shutting down"
                                    );
                                    stopping = true;
                                    if let Some(notifier) = extras.notifier.as_deref() {
                                        notifier.stopping();
                                    }
                                    if let Some(link) = link.as_deref_mut() {
                                        link.stop(reactor);
                                    }
                                    stop.write_restart_flag();
                                    if let Err(error) = channel.unmount() {
                                        tracing::error!(%error, "unmount failed");
                                    }
                                    reactor.timer(STOP_DEADLINE, TOKEN_STOP_DEADLINE)?;
                                }
                            }
                        }
                    }
                    if !stopping {
                        signals.read(reactor, TOKEN_SIGNAL)?;
                    }
                }
                TOKEN_CPG_DCDB | TOKEN_CPG_KVSTORE | TOKEN_QUORUM | TOKEN_TICK => {
                    let Some(link) = link.as_deref_mut() else {
                        continue;
                    };
                    if stopping {
                        continue;
                    }
                    match completion.token {
                        TOKEN_CPG_DCDB | TOKEN_CPG_KVSTORE => {
                            link.on_cpg(completion.token, completion.id, reactor, channel)
                        }
                        TOKEN_QUORUM => link.on_quorum(completion.id, reactor, channel),
                        _ => link.on_tick(reactor, channel),
                    }
                }
                TOKEN_WAKE => {
                    if stopping {
                        continue;
                    }
                    if let Some(fd) = channel.wake_fd() {
                        let mut value = [0u8; 8];
                        // SAFETY: reading 8 bytes from our non-blocking eventfd.
                        unsafe { libc::read(fd, value.as_mut_ptr().cast(), 8) };
                        reactor.poll_once(fd, libc::POLLIN as u32, TOKEN_WAKE)?;
                    }
                    if let Some(link) = link.as_deref_mut() {
                        link.after_events(reactor, channel);
                    }
                }
                token if Control::owns(token) => {
                    let Some(control) = extras.control.as_deref_mut() else {
                        continue;
                    };
                    let rrd = extras.rrd;
                    let started = extras.started;
                    let mut answer = |request: &str| {
                        let report = channel.fs().report();
                        let figures = DaemonFigures {
                            pid: std::process::id(),
                            uptime_secs: started.elapsed().as_secs(),
                            ipc_connections: ipc.connections(),
                            ipc_refused: ipc.refused(),
                            rrd: rrd.stats(),
                            rrd_pending: rrd.pending(),
                            invalidations_sent: channel.invalidations_sent(),
                            now_secs: std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |since| since.as_secs()),
                        };
                        match request {
                            "status" => Some(status_report::text(&report, &figures)),
                            "status-json" => {
                                Some(format!("{:#}\n", status_report::json(&report, &figures)))
                            }
                            "metrics" => Some(status_report::metrics(&report, &figures)),
                            _ => None,
                        }
                    };
                    control.complete(completion.token, reactor, &mut answer)?;
                }
                token if IpcServer::owns(token) => {
                    if stopping {
                        continue;
                    }
                    ipc.complete(&completion, &mut IpcService::new(channel.fs()));
                    if let Some(link) = link.as_deref_mut() {
                        link.after_events(reactor, channel);
                    }
                }
                TOKEN_WATCHDOG => {
                    if let Some(notifier) = extras.notifier.as_deref() {
                        notifier.watchdog();
                        if let Some(period) = notifier.watchdog.filter(|_| !stopping) {
                            reactor.timer(period, TOKEN_WATCHDOG)?;
                        }
                    }
                }
                TOKEN_STOP_DEADLINE => {
                    tracing::warn!(reads = fuse_reads, "the kernel kept reads; leaving anyway");
                    return Ok(());
                }
                TOKEN_FUSE_POLL => {
                    poll_armed = false;
                    if stopping {
                        continue;
                    }
                    for buffer in parked_buffers.drain(..) {
                        reactor.read(channel.fd(), buffer, Token(0))?;
                        fuse_reads += 1;
                    }
                }
                token if token.0 < FUSE_READS_IN_FLIGHT => {
                    fuse_reads -= 1;
                    let mut buffer = completion.buffer.unwrap_or_default();
                    let result = completion.result;
                    if result > 0 {
                        read_errors = 0;
                        if let Err(error) = channel.serve(&mut buffer[..result as usize]) {
                            tracing::debug!(%error, "request not answered");
                        }
                        if let Some(link) = link.as_deref_mut() {
                            link.after_events(reactor, channel);
                        }
                    } else if result == -libc::ENODEV || stopping {
                        // Unmounted: stop reading.
                        continue;
                    } else if result == -libc::EAGAIN || result == -libc::EINTR {
                        parked_buffers.push(buffer);
                        if !poll_armed {
                            reactor.poll_once(
                                channel.fd(),
                                libc::POLLIN as u32,
                                TOKEN_FUSE_POLL,
                            )?;
                            poll_armed = true;
                        }
                        continue;
                    } else {
                        tracing::error!(errno = -result, "reading /dev/fuse failed");
                        read_errors += 1;
                        if read_errors >= FUSE_READ_ERRORS_MAX {
                            return Err(DaemonError::Setup(format!(
                                "{read_errors} reads of /dev/fuse failed in a row (errno {})",
                                -result
                            )));
                        }
                    }
                    if !stopping {
                        reactor.read(channel.fd(), buffer, completion.token)?;
                        fuse_reads += 1;
                    }
                }
                token => {
                    // Every operation the loop submits has a token above;
                    // this one is a bug, not a FUSE read.
                    tracing::error!(?token, "completion of an unknown operation, ignored");
                }
            }
        }
        if !stopping {
            if ipc.has_jobs() {
                ipc.run_jobs(&mut IpcService::new(channel.fs()));
                if let Some(link) = link.as_deref_mut() {
                    link.after_events(reactor, channel);
                }
            }
            ipc.arm(reactor)?;
        }
        if let Some(notifier) = extras.notifier.as_deref_mut()
            && !stopping
        {
            notifier.update(|| channel.fs().health());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_polls_only_while_events_follow_quickly() {
        let mut reactor = Reactor::new(8).expect("reactor");
        let mut completions = Vec::new();
        let mut waiter = Waiter { poll_first: true };
        // The next event 20 ms away: the poll finds nothing, the loop
        // sleeps, and does not poll the next time.
        reactor
            .timer(Duration::from_millis(20), Token(1))
            .expect("timer");
        let start = std::time::Instant::now();
        while completions.is_empty() {
            waiter
                .wait(&mut reactor, &mut completions, None)
                .expect("wait");
        }
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(
            !waiter.poll_first,
            "a poll that found nothing keeps polling"
        );
        // An event at once (a zero timeout stands for one): polling pays
        // again (a few tries: a preempted test thread can take 200 µs).
        completions.clear();
        for _ in 0..100 {
            waiter
                .wait(&mut reactor, &mut completions, Some(Duration::ZERO))
                .expect("wait");
            if waiter.poll_first {
                break;
            }
        }
        assert!(
            waiter.poll_first,
            "a quick event does not bring polling back"
        );
    }

    #[test]
    fn loopback_addresses_are_not_the_node_ip() {
        // localhost resolves to 127.0.0.1 and/or ::1 only.
        assert_eq!(lookup_node_ip("localhost"), None);
        assert_eq!(lookup_node_ip("no-such-host.invalid"), None);
    }

    #[test]
    fn stale_fuse_mounts_are_found_in_the_mount_table() {
        let table = b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
            40 22 0:50 / /etc/pve rw,nosuid,nodev,relatime - fuse pmxcfs rw,user_id=0\n\
            41 22 0:51 / /tmp/a\\040b rw - fuse.pmxcfs pmxcfs rw\n\
            42 22 0:52 / /tmp/t rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mountinfo_fuse_type(table, b"/etc/pve").as_deref(),
            Some("fuse")
        );
        assert_eq!(
            mountinfo_fuse_type(table, b"/tmp/a b").as_deref(),
            Some("fuse.pmxcfs")
        );
        assert_eq!(mountinfo_fuse_type(table, b"/tmp/t"), None);
        assert_eq!(mountinfo_fuse_type(table, b"/etc"), None);
        assert_eq!(mountinfo_fuse_type(b"garbage\n\n- -", b"/"), None);
        // The connection id is the device number (fusectl's directory).
        assert_eq!(
            mountinfo_fuse_mount(table, b"/etc/pve"),
            Some(("fuse".to_owned(), Some(50)))
        );
    }
}
