//! The mount and the request path between /dev/fuse buffers and `PmxFs`.
//!
//! The reactor reads raw requests from the /dev/fuse fd into owned buffers;
//! `Channel::serve` hands one buffer to fuse-backend-rs's `Server`, which
//! calls `PmxFs` and writes the reply to the fd before returning. Kernel cache
//! invalidations collected meanwhile are written after the reply.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, FuseSession, Reader};

use crate::fs::{Invalidation, PmxFs};

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
    server: Server<Arc<PmxFs>>,
    fs: Arc<PmxFs>,
    fd: RawFd,
    reply_buffer: Vec<u8>,
    /// The kernel's id of this FUSE connection (for /sys/fs/fuse/connections).
    connection: Option<u64>,
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

impl Channel {
    /// Mounts `fs` at `mountpoint` (default_permissions, allow_other).
    pub fn mount(mountpoint: &Path, fs: PmxFs) -> Result<Channel, ChannelError> {
        let mount_error = |reason: String| ChannelError::Mount {
            mountpoint: mountpoint.display().to_string(),
            reason,
        };
        let mut session = FuseSession::new(mountpoint, "pmxcfs", "", false)
            .map_err(|error| mount_error(error.to_string()))?;
        session
            .mount()
            .map_err(|error| mount_error(error.to_string()))?;
        let fd = session
            .get_fuse_file()
            .map(|file| file.as_raw_fd())
            .ok_or_else(|| mount_error("no /dev/fuse file after mount".into()))?;
        let fs = Arc::new(fs);
        let connection = connection_id(mountpoint);
        Ok(Channel {
            connection,
            session,
            server: Server::new(Arc::clone(&fs)),
            fs,
            fd,
            reply_buffer: vec![0u8; REQUEST_BUFFER_BYTES],
        })
    }

    /// The /dev/fuse fd (non-blocking) the reactor reads requests from.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn fs(&self) -> &PmxFs {
        &self.fs
    }

    /// Serves one request read from /dev/fuse (`request` = the bytes read).
    pub fn serve(&mut self, request: &mut [u8]) -> Result<(), ChannelError> {
        let reader = Reader::<()>::from_fuse_buffer(FuseBuf::new(request))
            .map_err(|error| ChannelError::Request(error.to_string()))?;
        let writer = FuseDevWriter::new(self.fd, &mut self.reply_buffer)
            .map_err(|error| ChannelError::Request(error.to_string()))?;
        let result = self
            .server
            .handle_message(reader, writer.into(), None, None);
        self.flush_invalidations();
        match result {
            Ok(_) => Ok(()),
            // The kernel may have dropped the request (interrupted caller):
            // the reply write fails with ENOENT, which is not our problem.
            Err(error) => Err(ChannelError::Request(error.to_string())),
        }
    }

    fn flush_invalidations(&mut self) {
        for invalidation in self.fs.take_invalidations() {
            let Ok(writer) = FuseDevWriter::<()>::new(self.fd, &mut self.reply_buffer) else {
                continue;
            };
            let result = match &invalidation {
                Invalidation::Entry { parent, name } => {
                    match std::ffi::CString::new(name.clone()) {
                        Ok(name) => self.server.notify_inval_entry(writer, *parent, &name),
                        Err(_) => continue,
                    }
                }
                Invalidation::Inode { node_id } => {
                    self.server.notify_inval_inode(writer, *node_id, 0, 0)
                }
            };
            if let Err(error) = result {
                // ENOENT: the kernel does not know the entry (nothing cached).
                tracing::debug!(?invalidation, %error, "invalidation not delivered");
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
            ..
        } = self;
        drop(server);
        drop(session);
        Arc::into_inner(fs).ok_or_else(|| ChannelError::Request("file system still shared".into()))
    }
}
