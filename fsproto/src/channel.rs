//! The mount and the request path between /dev/fuse buffers and `PmxFs`.
//!
//! The reactor reads raw requests from the /dev/fuse fd into owned buffers;
//! `Channel::serve` gives a mutating request to the mutation path
//! (`PmxFs::intercept`; its reply is written by `Channel::flush`) and any
//! other to fuse-backend-rs's `Server`, which calls `PmxFs` and writes the
//! reply to the fd before returning. Kernel cache invalidations collected
//! meanwhile go to the notifier thread after the reply.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::notify_queue::{MAX_PENDING, NotifyQueue, Push};

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, FuseSession, Reader};

use crate::fs::PmxFs;
use crate::uring::{FLAGS2_OVER_IO_URING, Queues};
use crate::wire::{InHeader, encode_notification, read_at};

const FUSE_INIT: u32 = 26;
/// `fuse_init_in.flags2` after the 40-byte in header.
const INIT_IN_FLAGS2: usize = 40 + 16;
/// `fuse_init_out.flags2` after the 16-byte out header.
const INIT_OUT_FLAGS2: usize = 16 + 32;

/// Size of one request buffer: the largest request (a 1 MiB write) plus the
/// FUSE headers.
pub const REQUEST_BUFFER_BYTES: usize = (1 << 20) + 4096;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("mount of {mountpoint}: {reason}")]
    Mount { mountpoint: String, reason: String },
    #[error("unmount: {0}")]
    Unmount(String),
    #[error("FUSE request: {0}")]
    Request(String),
}

pub struct Channel {
    session: FuseSession,
    server: Arc<Server<Arc<PmxFs>>>,
    fs: Arc<PmxFs>,
    /// Our own duplicate of the /dev/fuse fd: `FuseSession::umount` closes
    /// the session's, and requests may still be answered after that.
    fuse_fd: OwnedFd,
    fd: RawFd,
    reply_buffer: Vec<u8>,
    /// Kernel cache invalidations are written by a thread of their own: the
    /// kernel may block such a write on an inode lock held by a process that
    /// waits for a request this loop has yet to serve.
    notifier: Arc<NotifyQueue>,
    /// Invalidations the kernel took (written by the notifier thread).
    invalidations_sent: Arc<AtomicU64>,
    /// The kernel's id of this FUSE connection (for /sys/fs/fuse/connections).
    connection: Option<u64>,
    /// FUSE over io_uring wanted (offered at INIT, queues started after it).
    uring: bool,
    queues: Option<Queues>,
    /// Cluster mode with queues: signalled by a queue that took a request
    /// (the loop then multicasts; see `Channel::wake_fd`).
    loop_wake: Option<OwnedFd>,
}

/// Finds the FUSE connection id of the mount at `mountpoint` in
/// /proc/self/mountinfo (stat-ing the mountpoint would send us a request we
/// cannot answer yet). The id is the kernel's dev_t: major << 20 | minor.
fn connection_id(mountpoint: &Path) -> Option<u64> {
    let mountpoint = mountpoint.canonicalize().ok()?;
    let wanted = mountpoint.to_str()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().position(|field| *field == "-")?;
        let fstype = fields.get(separator + 1)?;
        let (major, minor) = fields.get(2)?.split_once(':')?;
        (fields.get(4)? == &wanted && fstype.starts_with("fuse"))
            .then(|| Some((major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?))
            .flatten()
    })
}

/// fuse-backend-rs mounts with `noatime`; the C daemon's mount has the
/// kernel default `relatime` (statfs flag 0x1000, not 0x400). Atime flags
/// belong to the mount, so a bind remount changes them alone.
fn set_relatime(mountpoint: &Path) {
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let flags =
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RELATIME;
    // SAFETY: mount(2) with a valid path and no data.
    let result = unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if result != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "mount stays noatime (the C daemon's is relatime)"
        );
    }
}

impl Channel {
    /// Kernel cache invalidations written so far.
    pub fn invalidations_sent(&self) -> u64 {
        self.invalidations_sent.load(Ordering::Relaxed)
    }

    /// Mounts `fs` at `mountpoint` (default_permissions, allow_other).
    /// With `uring`, requests are served by per-CPU io_uring queues once the
    /// kernel accepted the transport at INIT (see `uring.rs`), else all
    /// through this channel.
    pub fn mount(mountpoint: &Path, fs: PmxFs, uring: bool) -> Result<Channel, ChannelError> {
        let mount_error = |reason: String| ChannelError::Mount {
            mountpoint: mountpoint.display().to_string(),
            reason,
        };
        let mut session = FuseSession::new(mountpoint, "pmxcfs", "", false)
            .map_err(|error| mount_error(error.to_string()))?;
        session
            .mount()
            .map_err(|error| mount_error(error.to_string()))?;
        set_relatime(mountpoint);
        let session_fd = session
            .get_fuse_file()
            .map(|file| file.as_raw_fd())
            .ok_or_else(|| mount_error("no /dev/fuse file after mount".into()))?;
        // SAFETY: dup of a valid fd; the new fd is owned by `fuse_fd`.
        let duplicate = unsafe { libc::fcntl(session_fd, libc::F_DUPFD_CLOEXEC, 0) };
        if duplicate < 0 {
            return Err(mount_error(format!(
                "dup of /dev/fuse: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: a fresh fd owned by nothing else.
        let fuse_fd = unsafe { OwnedFd::from_raw_fd(duplicate) };
        let fd = fuse_fd.as_raw_fd();
        let invalidations_sent = Arc::new(AtomicU64::new(0));
        let notifier = spawn_notifier(fd, invalidations_sent.clone())?;
        let fs = Arc::new(fs);
        let connection = connection_id(mountpoint);
        let cluster = fs.is_cluster();
        let loop_wake = if cluster && uring {
            // SAFETY: eventfd(2); the fd is owned below.
            let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if raw < 0 {
                return Err(mount_error(format!(
                    "eventfd: {}",
                    std::io::Error::last_os_error()
                )));
            }
            // SAFETY: a fresh fd.
            Some(unsafe { OwnedFd::from_raw_fd(raw) })
        } else {
            None
        };
        Ok(Channel {
            uring,
            queues: None,
            loop_wake,
            connection,
            fuse_fd,
            notifier,
            invalidations_sent,
            session,
            server: Arc::new(Server::new(Arc::clone(&fs))),
            fs,
            fd,
            reply_buffer: vec![0u8; REQUEST_BUFFER_BYTES],
        })
    }

    /// Cluster mode with io_uring queues: an eventfd a queue signals after it
    /// took a mutating request; the loop polls it and then multicasts
    /// (`after_events`). Read it empty before polling again.
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.loop_wake.as_ref().map(|fd| fd.as_raw_fd())
    }

    /// The /dev/fuse fd (non-blocking) the reactor reads requests from.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn fs(&self) -> &PmxFs {
        &self.fs
    }

    /// The replication the daemon drives (CPG events in, messages out).
    pub fn replication(&self) -> crate::cluster::Replication<'_> {
        self.fs.replication()
    }

    /// The file system for another thread (drop it before `into_fs`).
    pub fn fs_shared(&self) -> Arc<PmxFs> {
        Arc::clone(&self.fs)
    }

    /// Serves one request read from /dev/fuse (`request` = the bytes read).
    pub fn serve(&mut self, request: &mut [u8]) -> Result<(), ChannelError> {
        if self.fs.intercept(request) {
            self.flush();
            return Ok(());
        }
        if self.uring
            && self.queues.is_none()
            && read_at::<InHeader>(request, 0).is_some_and(|h| h.opcode == FUSE_INIT)
        {
            return self.init_with_uring(request);
        }
        let reader = Reader::<()>::from_fuse_buffer(FuseBuf::new(request))
            .map_err(|error| ChannelError::Request(error.to_string()))?;
        let writer = FuseDevWriter::new(self.fd, &mut self.reply_buffer)
            .map_err(|error| ChannelError::Request(error.to_string()))?;
        let result = self
            .server
            .handle_message(reader, writer.into(), None, None);
        self.flush();
        match result {
            Ok(_) => Ok(()),
            // The kernel may have dropped the request (interrupted caller):
            // the reply write fails with ENOENT, which is not our problem.
            Err(error) => Err(ChannelError::Request(error.to_string())),
        }
    }

    /// INIT offering FUSE over io_uring: the server's reply is taken from a
    /// pipe, `FUSE_OVER_IO_URING` added when the kernel offered it, and the
    /// queues started once the kernel has the reply.
    fn init_with_uring(&mut self, request: &mut [u8]) -> Result<(), ChannelError> {
        let offered = read_at::<u32>(request, INIT_IN_FLAGS2)
            .is_some_and(|flags2| flags2 & FLAGS2_OVER_IO_URING != 0);
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds that are owned below.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(ChannelError::Request(format!(
                "pipe: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: fresh fds.
        let (pipe_read, pipe_write) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let reader = Reader::<()>::from_fuse_buffer(FuseBuf::new(request))
            .map_err(|error| ChannelError::Request(error.to_string()))?;
        let writer = FuseDevWriter::new(pipe_write.as_raw_fd(), &mut self.reply_buffer)
            .map_err(|error| ChannelError::Request(error.to_string()))?;
        self.server
            .handle_message(reader, writer.into(), None, None)
            .map_err(|error| ChannelError::Request(error.to_string()))?;
        drop(pipe_write);
        let mut reply = vec![0u8; 4096];
        // SAFETY: reading into our buffer from our pipe (the writer is closed).
        let length = unsafe {
            libc::read(
                pipe_read.as_raw_fd(),
                reply.as_mut_ptr().cast(),
                reply.len(),
            )
        };
        let length = usize::try_from(length).unwrap_or(0);
        reply.truncate(length);
        let accepted =
            offered && reply.len() >= INIT_OUT_FLAGS2 + 4 && read_at::<i32>(&reply, 4) == Some(0);
        if accepted {
            let flags2 =
                read_at::<u32>(&reply, INIT_OUT_FLAGS2).unwrap_or(0) | FLAGS2_OVER_IO_URING;
            reply[INIT_OUT_FLAGS2..INIT_OUT_FLAGS2 + 4].copy_from_slice(&flags2.to_le_bytes());
        }
        // SAFETY: writing the reply to our /dev/fuse fd.
        let written = unsafe { libc::write(self.fd, reply.as_ptr().cast(), reply.len()) };
        if written < 0 {
            return Err(ChannelError::Request(format!(
                "INIT reply: {}",
                std::io::Error::last_os_error()
            )));
        }
        if accepted {
            match Queues::start(
                self.fd,
                Arc::clone(&self.server),
                Arc::clone(&self.fs),
                Arc::clone(&self.notifier),
                self.loop_wake.as_ref().map(|fd| fd.as_raw_fd()),
            ) {
                Ok(queues) => self.queues = Some(queues),
                Err(error) => tracing::error!(%error, "io_uring queues not started"),
            }
        } else {
            tracing::info!(
                offered,
                "FUSE over io_uring not used; serving /dev/fuse only"
            );
        }
        Ok(())
    }

    /// Writes the answers of parked requests that completed and hands the
    /// kernel invalidations to the notifier (after every request and every
    /// batch of CPG events).
    pub fn flush(&mut self) {
        if let Some(queues) = &self.queues {
            let qids = self.fs.queues_with_replies();
            if !qids.is_empty() {
                queues.wake(&qids);
            }
        }
        for reply in self.fs.take_replies() {
            // SAFETY: writing a valid buffer to our /dev/fuse fd.
            let written = unsafe { libc::write(self.fd, reply.as_ptr().cast(), reply.len()) };
            if written < 0 {
                // ENOENT: the caller was interrupted and the kernel dropped
                // the request; the change itself is applied everywhere.
                tracing::debug!(error = %std::io::Error::last_os_error(), "reply not delivered");
            }
        }
        self.flush_invalidations();
    }

    fn flush_invalidations(&mut self) {
        if self.notifier.take_overflow() {
            tracing::warn!(
                dropped = self.notifier.dropped(),
                "kernel invalidations were dropped at the queue bound; invalidating every entry the kernel knows"
            );
            self.fs.invalidate_all_known();
        }
        for invalidation in self.fs.take_invalidations() {
            match self.notifier.push(encode_notification(&invalidation)) {
                Push::Queued | Push::Coalesced => {}
                Push::Dropped => tracing::debug!(?invalidation, "invalidation queue full"),
                Push::Closed => tracing::warn!(?invalidation, "the notifier thread is gone"),
            }
        }
    }

    /// Unmounts (lazily) and aborts the connection, so that processes that
    /// still hold files open get ENOTCONN instead of waiting for a daemon that
    /// is leaving, and pending reads of the fd end with ENODEV.
    pub fn unmount(&mut self) -> Result<(), ChannelError> {
        let result = self
            .session
            .umount()
            .map_err(|error| ChannelError::Unmount(error.to_string()));
        if let Some(connection) = self.connection {
            let abort = format!("/sys/fs/fuse/connections/{connection}/abort");
            if let Err(error) = std::fs::write(&abort, b"1") {
                tracing::debug!(%abort, %error, "cannot abort the FUSE connection");
            }
        }
        result
    }

    /// Ends the channel and returns the file system (to close the store).
    pub fn into_fs(self) -> Result<PmxFs, ChannelError> {
        let Channel {
            session,
            server,
            fs,
            notifier,
            fuse_fd,
            queues,
            ..
        } = self;
        notifier.close();
        drop(queues);
        drop(server);
        drop(session);
        drop(fuse_fd);
        Arc::into_inner(fs).ok_or_else(|| ChannelError::Request("file system still shared".into()))
    }
}

/// The thread that writes notifications to /dev/fuse. It ends when the
/// channel closes the queue (after writing what it holds); a write the kernel
/// never finishes (connection already gone) ends with the process.
fn spawn_notifier(fd: RawFd, sent: Arc<AtomicU64>) -> Result<Arc<NotifyQueue>, ChannelError> {
    let queue = Arc::new(NotifyQueue::new(MAX_PENDING));
    let receiver = Arc::clone(&queue);
    std::thread::Builder::new()
        .name("pmxcfs-notify".into())
        .spawn(move || {
            while let Some(message) = receiver.pop() {
                // SAFETY: writing a valid buffer to the /dev/fuse fd, which the
                // channel keeps open while it can send to this thread.
                let written = unsafe { libc::write(fd, message.as_ptr().cast(), message.len()) };
                if written < 0 {
                    // ENOENT: the kernel had nothing cached for it.
                    tracing::debug!(error = %std::io::Error::last_os_error(), "invalidation not delivered");
                } else {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .map_err(|error| ChannelError::Mount {
            mountpoint: String::new(),
            reason: format!("cannot start the notifier thread: {error}"),
        })?;
    Ok(queue)
}
