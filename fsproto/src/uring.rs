//! FUSE over io_uring (Linux ≥ 6.14, `fuse.enable_uring=1`): one queue per
//! CPU, served by a thread pinned to that CPU. The kernel puts a request
//! into the queue of the CPU its caller runs on, so the caller, the kernel
//! and the serving thread stay on one CPU: no cross-CPU wake-up per request,
//! which on this kind of VM costs more than serving it (BENCHMARKS.md).
//!
//! Protocol (linux/fuse.h, 7.42): after INIT (answered on /dev/fuse with
//! `FUSE_OVER_IO_URING`), every queue registers ring entries with
//! `IORING_OP_URING_CMD` (SQE128) `FUSE_IO_URING_CMD_REGISTER`, each with
//! two buffers: a 288-byte header (`in_out`: fuse_in/out_header, `op_in`:
//! the opcode's fixed struct, `ring_ent_in_out`: commit id and payload
//! size) and a payload (names, data; on reply the reply body). A completion
//! means a request is in the entry; `COMMIT_AND_FETCH` answers it and
//! re-arms the entry. Once every queue has an entry the kernel sends all
//! requests but FORGET and INTERRUPT this way; those still come through
//! /dev/fuse, which the daemon keeps reading.
//!
//! Each queue thread runs its own `pmxcfs_reactor::Reactor` (the daemon's
//! io_uring layer): the entries are device commands whose two buffers move
//! into the reactor with each command and come back with its completion,
//! always the same two allocations (the kernel keeps their addresses from
//! REGISTER on). Stopping drops the reactor, which cancels what is armed
//! and never frees a buffer the kernel still holds.
//!
//! Requests are served by the same fuse-backend-rs `Server` as on /dev/fuse:
//! the request is laid out contiguously as on /dev/fuse, and the reply the
//! server writes (to a memfd owned by the queue: the server writes to an
//! fd) is read back and split into header and payload. A mutating request is taken by `PmxFs::intercept_from_queue`
//! instead (`mutation.rs`): in local mode its reply is ready at once; in
//! cluster mode its entry stays with the queue until the loop thread has
//! the DFSM's result, then the loop wakes the queue (its eventfd), which
//! commits the reply. After taking one, a cluster-mode queue wakes the loop
//! (its eventfd) to multicast the message.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::thread::JoinHandle;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader};
use pmxcfs_reactor::{Command, Completion, Reactor, Token};

use crate::error::FsError;
use crate::fs::PmxFs;
use crate::notify_queue::NotifyQueue;
use crate::wire::{InHeader, OutHeader, encode_notification, read_at, reply_error};

pub const ENABLE_PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";
/// `FUSE_OVER_IO_URING` in the INIT reply's `flags2` (bit 41 of the flags).
pub const FLAGS2_OVER_IO_URING: u32 = 1 << (41 - 32);
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
const HEADER_BYTES: usize = 288;
const IN_OUT_BYTES: usize = 128;
const OP_IN_BYTES: usize = 128;
/// Entries per queue: requests one CPU can have in flight here. Cluster
/// mode parks writes in them for a CPG round trip (longer during a sync),
/// and a CPU's requests wait in the kernel while all its entries are
/// parked, reads included: keep it well above the writers one CPU runs.
/// Payload buffers are only touched as far as requests fill them.
const DEPTH: usize = 32;
/// Payload buffer: the largest write (1 MiB) or read reply.
const PAYLOAD_BYTES: usize = 1 << 20;
const REQUEST_BYTES: usize = 40 + OP_IN_BYTES + PAYLOAD_BYTES;
/// Token of the stop poll (entries are tokens 0..DEPTH).
const STOP: Token = Token(u64::MAX);
/// Token of the poll of the queue's wake eventfd.
const WAKE: Token = Token(u64::MAX - 1);
/// The two buffers of an entry, in the order the kernel expects them.
const HEADER: usize = 0;
const PAYLOAD: usize = 1;

/// `fuse_uring_ent_in_out`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct EntInOut {
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}
const _: () = assert!(size_of::<EntInOut>() == 32);
const _: () = assert!(IN_OUT_BYTES + OP_IN_BYTES + size_of::<EntInOut>() == HEADER_BYTES);

/// `fuse_uring_cmd_req` (first 24 bytes of the SQE's 80-byte command).
fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_le_bytes());
    cmd[16..18].copy_from_slice(&qid.to_le_bytes());
    cmd
}

/// Whether the kernel offers the transport (the module parameter is on;
/// root may switch it on). Must be decided before the mount's INIT.
pub fn enable() -> bool {
    match std::fs::read_to_string(ENABLE_PARAMETER) {
        Ok(value) if value.trim() == "Y" || value.trim() == "1" => true,
        Ok(_) => std::fs::write(ENABLE_PARAMETER, b"1").is_ok(),
        Err(_) => false,
    }
}

/// The number of queues the kernel expects: one per possible CPU.
fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|text| {
            text.trim()
                .split(',')
                .filter_map(|range| range.rsplit('-').next()?.parse::<usize>().ok())
                .max()
        })
        .map_or(1, |max| max + 1)
}

/// The running queues; dropping it stops and joins them.
pub struct Queues {
    stop: Arc<AtomicBool>,
    stop_fd: OwnedFd,
    /// One per queue: written when replies for it are ready.
    wake_fds: Vec<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) with valid flags; the fd is owned below.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Adds one to an eventfd (wakes its poller).
pub(crate) fn signal(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writing 8 bytes to an eventfd.
    unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
}

fn drain(fd: RawFd) {
    let mut value = [0u8; 8];
    // SAFETY: reading 8 bytes from a non-blocking eventfd.
    unsafe { libc::read(fd, value.as_mut_ptr().cast(), 8) };
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Queues {
    /// Starts one pinned thread per CPU queue; each registers its entries.
    /// `notifier` takes the kernel cache invalidations the requests queued;
    /// `loop_wake` (cluster mode) is signalled after a request was taken.
    pub fn start(
        fuse_fd: RawFd,
        server: Arc<Server<Arc<PmxFs>>>,
        fs: Arc<PmxFs>,
        notifier: Arc<NotifyQueue>,
        loop_wake: Option<RawFd>,
    ) -> io::Result<Queues> {
        let stop_fd = eventfd()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let queues = possible_cpus();
        let wake_fds = (0..queues)
            .map(|_| eventfd())
            .collect::<io::Result<Vec<_>>>()?;
        for (qid, wake_fd) in wake_fds.iter().enumerate() {
            let wake_raw = wake_fd.as_raw_fd();
            let server = Arc::clone(&server);
            let stop = Arc::clone(&stop);
            let notifier = Arc::clone(&notifier);
            let fs = Arc::clone(&fs);
            let stop_raw = stop_fd.as_raw_fd();
            let thread = std::thread::Builder::new()
                .name(format!("pmxcfs-q{qid}"))
                .spawn(move || {
                    let fds = QueueFds {
                        fuse: fuse_fd,
                        stop: stop_raw,
                        wake: wake_raw,
                        loop_wake,
                    };
                    if let Err(error) = serve_queue(qid as u16, fds, &server, &fs, &stop, &notifier)
                        && !stop.load(Ordering::Relaxed)
                    {
                        tracing::error!(qid, %error, "io_uring queue stopped");
                    }
                })?;
            threads.push(thread);
        }
        tracing::info!(
            queues = threads.len(),
            "FUSE over io_uring: one queue per CPU"
        );
        Ok(Queues {
            stop,
            stop_fd,
            wake_fds,
            threads,
        })
    }

    /// Wakes the queues `qids` (their replies are ready).
    pub fn wake(&self, qids: &[u16]) {
        for qid in qids {
            if let Some(fd) = self.wake_fds.get(usize::from(*qid)) {
                signal(fd.as_raw_fd());
            }
        }
    }

    /// Stops the queues (after the unmount their commands end anyway).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        signal(self.stop_fd.as_raw_fd());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity
    // get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Where the server writes a reply: a memfd (a write never blocks, whatever
/// the reply's size; a pipe would block on a 1 MiB read reply).
fn reply_file() -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a valid name; the fd is owned below.
    let raw = unsafe { libc::memfd_create(c"pmxcfs-reply".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A FUSE ring command (`op`: REGISTER or COMMIT_AND_FETCH) for the entry
/// whose two buffers (header, payload) are `buffers`: the kernel keeps their
/// addresses from REGISTER on, so an entry's buffers are always the same two.
fn command(op: u32, buffers: Vec<Vec<u8>>, commit_id: u64, qid: u16) -> Command {
    Command {
        op,
        data: cmd_req(commit_id, qid),
        buffers,
    }
}

#[derive(Clone, Copy)]
struct QueueFds {
    fuse: RawFd,
    stop: RawFd,
    wake: RawFd,
    loop_wake: Option<RawFd>,
}

fn serve_queue(
    qid: u16,
    fds: QueueFds,
    server: &Server<Arc<PmxFs>>,
    fs: &PmxFs,
    stop: &AtomicBool,
    notifier: &NotifyQueue,
) -> io::Result<()> {
    let fuse_fd = fds.fuse;
    pin_to_cpu(qid as usize);
    // One slot per entry, plus the stop and wake polls.
    let mut reactor = Reactor::new(DEPTH as u32 + 2).map_err(io::Error::other)?;
    let reactor_error = |error: pmxcfs_reactor::ReactorError| io::Error::other(error);
    reactor
        .poll_once(fds.stop, libc::POLLIN as u32, STOP)
        .map_err(reactor_error)?;
    reactor
        .poll_once(fds.wake, libc::POLLIN as u32, WAKE)
        .map_err(reactor_error)?;
    for index in 0..DEPTH {
        // Zeroed allocations: the payload's pages are touched only as far
        // as requests fill them.
        let buffers = vec![vec![0u8; HEADER_BYTES], vec![0u8; PAYLOAD_BYTES]];
        reactor
            .command(
                fuse_fd,
                command(CMD_REGISTER, buffers, 0, qid),
                Token(index as u64),
            )
            .map_err(reactor_error)?;
    }
    let reply_fd = reply_file()?;
    let mut request = vec![0u8; REQUEST_BYTES];
    let mut reply = vec![0u8; PAYLOAD_BYTES + 4096];
    let mut scratch = vec![0u8; PAYLOAD_BYTES + 4096];
    // Requests taken by the mutation path, not answered yet: unique → the
    // entry (its index and buffers, back in our hands until the commit).
    let mut parked: std::collections::HashMap<u64, (u64, Vec<Vec<u8>>)> =
        std::collections::HashMap::new();
    let mut completions: Vec<Completion> = Vec::with_capacity(DEPTH + 2);
    let mut commits: Vec<(u64, u64, Vec<Vec<u8>>)> = Vec::with_capacity(DEPTH);
    let mut live = DEPTH;
    loop {
        // Dropping the reactor on return cancels what is still armed and
        // leaks, never frees, buffers the kernel does not hand back.
        reactor
            .wait(&mut completions, None)
            .map_err(reactor_error)?;
        for completion in completions.drain(..) {
            if completion.token == STOP || stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if completion.token == WAKE {
                drain(fds.wake);
                reactor
                    .poll_once(fds.wake, libc::POLLIN as u32, WAKE)
                    .map_err(reactor_error)?;
                continue;
            }
            let index = completion.token.0;
            if let Some(errno) = completion.errno() {
                // ENOTCONN/ENODEV: unmounted, the normal end.
                if matches!(errno, libc::ENOTCONN | libc::ENODEV | libc::ECANCELED) {
                    tracing::debug!(qid, "io_uring queue ends: connection gone");
                    return Ok(());
                }
                // The kernel refused this entry (EOPNOTSUPP before the ring
                // was ready, ...): it is out of service, the others go on.
                tracing::error!(qid, entry = index, errno, "io_uring entry refused");
                live -= 1;
                if live == 0 {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                continue;
            }
            let mut buffers = completion.buffers;
            if buffers.len() != 2 {
                tracing::error!(qid, entry = index, "io_uring entry without its buffers");
                live -= 1;
                continue;
            }
            let (total, in_header) = rebuild(&buffers, &mut request);
            if fs.intercept_from_queue(&request[..total], qid) {
                parked.insert(in_header.unique, (index, buffers));
                if let Some(fd) = fds.loop_wake {
                    signal(fd);
                }
            } else {
                let commit_id = serve(
                    &mut buffers,
                    server,
                    &mut request[..total],
                    &mut reply,
                    &mut scratch,
                    reply_fd.as_raw_fd(),
                );
                commits.push((index, commit_id, buffers));
            }
        }
        // Replies of parked requests: ready at once in local mode, when the
        // loop woke us in cluster mode.
        if !parked.is_empty() {
            for (unique, bytes) in fs.take_uring_replies(qid) {
                let Some((index, mut buffers)) = parked.remove(&unique) else {
                    continue;
                };
                let commit_id = fill_reply(&mut buffers, &bytes);
                commits.push((index, commit_id, buffers));
            }
        }
        // Invalidations go to the notifier thread (never written here: the
        // kernel may block such a write on a lock held by a caller waiting
        // for this queue).
        for invalidation in fs.take_invalidations() {
            let _ = notifier.push(encode_notification(&invalidation));
        }
        for (index, commit_id, buffers) in commits.drain(..) {
            reactor
                .command(
                    fuse_fd,
                    command(CMD_COMMIT_AND_FETCH, buffers, commit_id, qid),
                    Token(index),
                )
                .map_err(reactor_error)?;
        }
    }
}

/// Lays the request in an entry's `buffers` out as on /dev/fuse in
/// `request`; returns its length and header.
fn rebuild(buffers: &[Vec<u8>], request: &mut [u8]) -> (usize, InHeader) {
    let (header, payload) = (&buffers[HEADER], &buffers[PAYLOAD]);
    let ent: EntInOut = read_at(header, IN_OUT_BYTES + OP_IN_BYTES).unwrap_or_default();
    let in_header: InHeader = read_at(header, 0).unwrap_or_default();
    let payload_len = (ent.payload_sz as usize).min(PAYLOAD_BYTES);
    let op_len = (in_header.len as usize)
        .saturating_sub(size_of::<InHeader>() + payload_len)
        .min(OP_IN_BYTES);
    let total = size_of::<InHeader>() + op_len + payload_len;
    request[..40].copy_from_slice(&header[..40]);
    request[40..40 + op_len].copy_from_slice(&header[IN_OUT_BYTES..IN_OUT_BYTES + op_len]);
    request[40 + op_len..total].copy_from_slice(&payload[..payload_len]);
    // The length the server sees is what it got.
    request[..4].copy_from_slice(&(total as u32).to_le_bytes());
    (total, in_header)
}

/// Serves `request` (rebuilt from an entry's `buffers`) and puts the reply
/// into them; returns the commit id.
fn serve(
    buffers: &mut [Vec<u8>],
    server: &Server<Arc<PmxFs>>,
    request: &mut [u8],
    reply: &mut [u8],
    scratch: &mut [u8],
    reply_fd: RawFd,
) -> u64 {
    let unique = read_at::<InHeader>(request, 0).unwrap_or_default().unique;
    let served = Reader::<()>::from_fuse_buffer(FuseBuf::new(request))
        .map_err(|error| error.to_string())
        .and_then(|reader| {
            let writer =
                FuseDevWriter::<()>::new(reply_fd, scratch).map_err(|error| error.to_string())?;
            server
                .handle_message(reader, writer.into(), None, None)
                .map_err(|error| error.to_string())
        });
    if let Err(error) = served {
        tracing::debug!(%error, "request not answered normally");
    }
    // The reply (if any) is at the start of the memfd; the header says how
    // long it is, its unique tells it from an older reply (uniques are never
    // reused). Two syscalls for the usual reply of less than 4 KiB.
    let first = reply.len().min(4096);
    // SAFETY: pread/lseek on our memfd into our buffer.
    let read = unsafe { libc::pread(reply_fd, reply.as_mut_ptr().cast(), first, 0) };
    let mut length = 0usize;
    if let Some(out) = read_at::<OutHeader>(reply, 0)
        .filter(|out| out.unique == unique && usize::try_from(read).unwrap_or(0) >= 16)
    {
        length = (out.len as usize).min(reply.len());
        if length > first {
            // SAFETY: as above.
            let rest = unsafe {
                libc::pread(
                    reply_fd,
                    reply[first..].as_mut_ptr().cast(),
                    length - first,
                    first as libc::off_t,
                )
            };
            if usize::try_from(rest).unwrap_or(0) != length - first {
                length = 0;
            }
        }
        // SAFETY: as above; the next reply starts at 0 again.
        unsafe { libc::lseek(reply_fd, 0, libc::SEEK_SET) };
    }
    if length < size_of::<OutHeader>() {
        // No reply: answer EIO so the entry comes back.
        return fill_reply(buffers, &reply_error(unique, FsError::Io.errno()));
    }
    fill_reply(buffers, &reply[..length])
}

/// Puts an encoded reply (out header + body) into an entry's `buffers`:
/// header into `in_out`, body into the payload; returns the commit id.
fn fill_reply(buffers: &mut [Vec<u8>], reply: &[u8]) -> u64 {
    let ent: EntInOut = read_at(&buffers[HEADER], IN_OUT_BYTES + OP_IN_BYTES).unwrap_or_default();
    let out: OutHeader = read_at(reply, 0).unwrap_or_default();
    let body = reply
        .len()
        .saturating_sub(size_of::<OutHeader>())
        .min(PAYLOAD_BYTES);
    buffers[PAYLOAD][..body].copy_from_slice(&reply[16..16 + body]);
    buffers[HEADER][..16].copy_from_slice(bytemuck::bytes_of(&out));
    let ent_out = EntInOut {
        payload_sz: body as u32,
        ..ent
    };
    buffers[HEADER][IN_OUT_BYTES + OP_IN_BYTES..].copy_from_slice(bytemuck::bytes_of(&ent_out));
    ent.commit_id
}
