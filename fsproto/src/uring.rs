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
//! Requests are served by the same fuse-backend-rs `Server` as on /dev/fuse:
//! the request is laid out contiguously as on /dev/fuse, and the reply the
//! server writes (to a pipe owned by the queue) is split back into header
//! and payload. A mutating request is taken by `PmxFs::intercept_from_queue`
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
use io_uring::{IoUring, cqueue, opcode, squeue, types};

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
/// user_data of the stop poll.
const STOP: u64 = u64::MAX;
/// user_data of the poll of the queue's wake eventfd.
const WAKE: u64 = u64::MAX - 1;

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

struct Entry {
    header: Box<[u8; HEADER_BYTES]>,
    payload: Vec<u8>,
    iov: Box<[libc::iovec; 2]>,
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

/// A URING_CMD SQE on /dev/fuse with the two buffers of `entry`.
fn command(fuse_fd: RawFd, op: u32, entry: &Entry, commit_id: u64, qid: u16) -> squeue::Entry128 {
    let sqe = opcode::UringCmd80::new(types::Fd(fuse_fd), op)
        .cmd(cmd_req(commit_id, qid))
        .addr(Some(entry.iov.as_ptr() as u64))
        .build();
    // The crate has no setter for `len` (the iovec count, 2): set it in the
    // raw SQE (offset 24 of io_uring_sqe).
    // SAFETY: Entry128 is a repr(C) 128-byte plain-data SQE.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[24..28].copy_from_slice(&2u32.to_le_bytes());
    // SAFETY: the same bytes back.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
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
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> =
        IoUring::builder().build((DEPTH * 2 + 2) as u32)?;
    let mut entries: Vec<Entry> = (0..DEPTH)
        .map(|_| {
            let mut header = Box::new([0u8; HEADER_BYTES]);
            let mut payload = vec![0u8; PAYLOAD_BYTES];
            let iov = Box::new([
                libc::iovec {
                    iov_base: header.as_mut_ptr().cast(),
                    iov_len: HEADER_BYTES,
                },
                libc::iovec {
                    iov_base: payload.as_mut_ptr().cast(),
                    iov_len: PAYLOAD_BYTES,
                },
            ]);
            Entry {
                header,
                payload,
                iov,
            }
        })
        .collect();
    let reply_fd = reply_file()?;
    let mut request = vec![0u8; REQUEST_BYTES];
    let mut reply = vec![0u8; PAYLOAD_BYTES + 4096];
    let mut scratch = vec![0u8; PAYLOAD_BYTES + 4096];
    let stop_poll = opcode::PollAdd::new(types::Fd(fds.stop), libc::POLLIN as u32)
        .build()
        .user_data(STOP);
    let wake_poll = || {
        opcode::PollAdd::new(types::Fd(fds.wake), libc::POLLIN as u32)
            .build()
            .user_data(WAKE)
    };
    // Requests taken by the mutation path, not answered yet: unique → entry.
    let mut parked: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    // SAFETY: the buffers of every SQE (iovecs, headers, payloads) live in
    // `entries`, which outlives the ring (dropped after it, below).
    unsafe {
        let mut sq = ring.submission();
        let _ = sq.push(&stop_poll.into());
        let _ = sq.push(&wake_poll().into());
        for (index, entry) in entries.iter().enumerate() {
            let sqe = command(fuse_fd, CMD_REGISTER, entry, 0, qid).user_data(index as u64);
            sq.push(&sqe)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
    }
    ring.submit()?;
    let mut ready = Vec::with_capacity(DEPTH);
    let mut live = entries.len();
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
            Err(error) => return Err(error),
        }
        ready.clear();
        for cqe in ring.completion() {
            ready.push((cqe.user_data(), cqe.result()));
        }
        for &(user_data, result) in &ready {
            if user_data == STOP || stop.load(Ordering::Relaxed) {
                // Commands may still be armed: the kernel could write into
                // their buffers until the ring is torn down, so the buffers
                // are leaked, never freed under it (once per queue, at exit).
                std::mem::forget(entries);
                return Ok(());
            }
            if result < 0 {
                // ENOTCONN/ENODEV: unmounted, the normal end.
                if matches!(-result, libc::ENOTCONN | libc::ENODEV | libc::ECANCELED) {
                    tracing::debug!(qid, "io_uring queue ends: connection gone");
                    std::mem::forget(entries);
                    return Ok(());
                }
                // The kernel refused this entry (EOPNOTSUPP before the ring
                // was ready, ...): it is out of service, the others go on.
                tracing::error!(
                    qid,
                    entry = user_data,
                    errno = -result,
                    "io_uring entry refused"
                );
                live -= 1;
                if live == 0 {
                    std::mem::forget(entries);
                    return Err(io::Error::from_raw_os_error(-result));
                }
                continue;
            }
            let mut commits: Vec<(usize, u64)> = Vec::new();
            if user_data == WAKE {
                drain(fds.wake);
                // SAFETY: the poll has no buffer.
                unsafe {
                    ring.submission()
                        .push(&wake_poll().into())
                        .map_err(|_| io::Error::other("submission queue full"))?;
                }
            } else {
                let index = user_data as usize;
                let Some(entry) = entries.get_mut(index) else {
                    continue;
                };
                let (total, in_header) = rebuild(entry, &mut request);
                if fs.intercept_from_queue(&request[..total], qid) {
                    parked.insert(in_header.unique, index);
                    if let Some(fd) = fds.loop_wake {
                        signal(fd);
                    }
                } else {
                    let commit_id = serve(
                        entry,
                        server,
                        &mut request[..total],
                        &mut reply,
                        &mut scratch,
                        reply_fd.as_raw_fd(),
                    );
                    commits.push((index, commit_id));
                }
            }
            // Replies of parked requests (the loop woke us, or an immediate
            // refusal of the request just taken).
            if !parked.is_empty() {
                for (unique, bytes) in fs.take_uring_replies(qid) {
                    let Some(index) = parked.remove(&unique) else {
                        continue;
                    };
                    if let Some(entry) = entries.get_mut(index) {
                        let commit_id = fill_reply(entry, &bytes);
                        commits.push((index, commit_id));
                    }
                }
            }
            // Invalidations go to the notifier thread (never written here:
            // the kernel may block such a write on a lock held by a caller
            // waiting for this queue).
            for invalidation in fs.take_invalidations() {
                let _ = notifier.push(encode_notification(&invalidation));
            }
            for (index, commit_id) in commits {
                let Some(entry) = entries.get(index) else {
                    continue;
                };
                let sqe = command(fuse_fd, CMD_COMMIT_AND_FETCH, entry, commit_id, qid)
                    .user_data(index as u64);
                // SAFETY: as above.
                unsafe {
                    ring.submission()
                        .push(&sqe)
                        .map_err(|_| io::Error::other("submission queue full"))?;
                }
            }
        }
    }
}

/// Lays the request of `entry` out as on /dev/fuse in `request`; returns
/// its length and header.
fn rebuild(entry: &Entry, request: &mut [u8]) -> (usize, InHeader) {
    let ent: EntInOut = read_at(&entry.header[..], IN_OUT_BYTES + OP_IN_BYTES).unwrap_or_default();
    let in_header: InHeader = read_at(&entry.header[..], 0).unwrap_or_default();
    let payload_len = (ent.payload_sz as usize).min(PAYLOAD_BYTES);
    let op_len = (in_header.len as usize)
        .saturating_sub(size_of::<InHeader>() + payload_len)
        .min(OP_IN_BYTES);
    let total = size_of::<InHeader>() + op_len + payload_len;
    request[..40].copy_from_slice(&entry.header[..40]);
    request[40..40 + op_len].copy_from_slice(&entry.header[IN_OUT_BYTES..IN_OUT_BYTES + op_len]);
    request[40 + op_len..total].copy_from_slice(&entry.payload[..payload_len]);
    // The length the server sees is what it got.
    request[..4].copy_from_slice(&(total as u32).to_le_bytes());
    (total, in_header)
}

/// Serves `request` (rebuilt from `entry`) and puts the reply into
/// `entry`; returns the commit id.
fn serve(
    entry: &mut Entry,
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
        return fill_reply(entry, &reply_error(unique, FsError::Io.errno()));
    }
    fill_reply(entry, &reply[..length])
}

/// Puts an encoded reply (out header + body) into `entry`: header into
/// `in_out`, body into the payload; returns the commit id.
fn fill_reply(entry: &mut Entry, reply: &[u8]) -> u64 {
    let ent: EntInOut = read_at(&entry.header[..], IN_OUT_BYTES + OP_IN_BYTES).unwrap_or_default();
    let out: OutHeader = read_at(reply, 0).unwrap_or_default();
    let body = reply
        .len()
        .saturating_sub(size_of::<OutHeader>())
        .min(PAYLOAD_BYTES);
    entry.payload[..body].copy_from_slice(&reply[16..16 + body]);
    entry.header[..16].copy_from_slice(bytemuck::bytes_of(&out));
    let ent_out = EntInOut {
        payload_sz: body as u32,
        ..ent
    };
    entry.header[IN_OUT_BYTES + OP_IN_BYTES..].copy_from_slice(bytemuck::bytes_of(&ent_out));
    ent.commit_id
}
