//! `PmxFs`, the file system the FUSE server and the daemon hold: its
//! constructors for both modes, what the daemon asks of it (health, journal
//! sync, invalidations, close), and fuse-backend-rs's `FileSystem` over the
//! `/etc/pve` view of `core.rs` (every FUSE operation with the C daemon's
//! errno, spec/filesystem.md).
//!
//! Changes of the tree do not come here: `mutation.rs` takes them before
//! the server (one path for both modes). This serves reads, and changes of
//! the special files and of removed files that are still open.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{FsOptions, OpenOptions, SetattrValid, stat64, statvfs64};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, ZeroCopyReader, ZeroCopyWriter,
};
use pmxcfs_cpg::dcdb::Dcdb;
use pmxcfs_store::{ApplyPermit, Session, StoreError};

use crate::clock::now_secs;
use crate::core::{Config, Core, Special, special_by_id, store_error};
use crate::error::FsError;
use crate::quorum::QuorumGate;
use crate::replicator::{Backend, Cluster, Local, Replies};
use crate::report::{MemberReport, Report};
use crate::status::Status;
use crate::wire::Invalidation;

/// The file system's state as a service manager sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub cluster: bool,
    pub quorate: bool,
    /// The tree is in sync with the cluster (always in local mode).
    pub synced: bool,
    /// Nodes online (in the status group) and configured.
    pub online: usize,
    pub configured: usize,
}

impl Health {
    /// One line for systemd's STATUS=.
    pub fn text(&self) -> String {
        if !self.cluster {
            return "local mode".into();
        }
        format!(
            "{}, {} of {} nodes online, {}",
            if self.quorate { "quorate" } else { "no quorum" },
            self.online,
            self.configured,
            if self.synced { "synced" } else { "syncing" }
        )
    }
}

/// The file system. All state is behind one mutex: taken by the loop thread,
/// and in local mode with FUSE over io_uring by the per-CPU queue threads
/// (held only for the few µs a request takes; the store session and its
/// open write transaction move between threads, see store/tests/smoke.rs).
pub struct PmxFs {
    pub(crate) core: Mutex<Core>,
}

impl PmxFs {
    /// Local mode: always quorate, changes applied at once.
    pub fn new(session: Session<'static>, permit: ApplyPermit, config: Config) -> PmxFs {
        Self::with_backend(
            Backend::Local(Local::new(Dcdb::owned(session, permit))),
            QuorumGate::local(),
            config,
        )
    }

    /// Cluster mode: not quorate until corosync says so; mutating requests
    /// are intercepted by the channel ([`PmxFs::intercept`]) and answered
    /// after their DCDB message was delivered.
    pub fn new_cluster(
        session: Session<'static>,
        permit: ApplyPermit,
        config: Config,
        node_ip: Option<String>,
    ) -> PmxFs {
        let mut status = Self::new_status(&config);
        let log = status.take_log();
        let cluster = Cluster::new(session, permit, &config.nodename, node_ip, log);
        let mut quorum = QuorumGate::local();
        quorum.set_quorate(false);
        Self::assemble(Backend::Cluster(Box::new(cluster)), quorum, status, config)
    }

    fn new_status(config: &Config) -> Status {
        let mut status = Status::new(&config.nodename, now_secs());
        status.record_reload();
        status
    }

    fn with_backend(backend: Backend, quorum: QuorumGate, config: Config) -> PmxFs {
        let status = Self::new_status(&config);
        Self::assemble(backend, quorum, status, config)
    }

    fn assemble(backend: Backend, quorum: QuorumGate, status: Status, config: Config) -> PmxFs {
        PmxFs {
            core: Mutex::new(Core {
                backend,
                replies: Replies::default(),
                quorum,
                status,
                config,
                invalidations: Vec::new(),
                open_counts: HashMap::new(),
                orphans: HashMap::new(),
                listings: HashMap::new(),
                next_handle: 1,
            }),
        }
    }

    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock aborts the daemon (panic = abort is
        // not set, but the loop does not catch panics), so poisoning cannot
        // be observed by a later request; take the data either way.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the service manager is told (sd_notify READY/STATUS).
    pub fn health(&self) -> Health {
        let core = self.core();
        let quorate = core.quorum.is_quorate();
        match &core.backend {
            Backend::Local(_) => Health {
                cluster: false,
                quorate,
                synced: true,
                online: 1,
                configured: 1,
            },
            Backend::Cluster(cluster) => {
                let (online, configured) = core.status.node_counts();
                Health {
                    cluster: true,
                    quorate,
                    synced: cluster.synced(),
                    online,
                    configured,
                }
            }
        }
    }

    /// Every RRD value stored from now on (local SET_STATUS and, in cluster
    /// mode, other nodes' updates) is also handed to `sink`.
    pub fn set_rrd_sink(&self, sink: std::sync::Arc<dyn pmxcfs_cpg::status::RrdSink>) {
        self.core().tables_mut().set_rrd_sink(sink);
    }

    /// Kernel cache entries to invalidate, collected while serving requests,
    /// each once, in order.
    pub fn take_invalidations(&self) -> Vec<Invalidation> {
        let mut all = std::mem::take(&mut self.core().invalidations);
        if all.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity(all.len());
            all.retain(|invalidation| seen.insert(invalidation.clone()));
        }
        all
    }

    /// `fdatasync`s the journal (the loop's timer); Err poisons the store.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.core().session_mut().sync()
    }

    /// What a background syncer waits on (set when the journal goes
    /// unsynced, from whichever thread committed).
    pub fn sync_signal(&self) -> std::sync::Arc<pmxcfs_store::SyncSignal> {
        self.core().session().sync_signal()
    }

    /// A background journal sync (relaxed mode's timer), `None` when there
    /// is nothing to do or one is out: run it off the serving thread and hand
    /// it back to [`PmxFs::finish_sync`].
    pub fn start_sync(&self) -> Option<pmxcfs_store::SyncJob> {
        self.core().session_mut().sync_job()
    }

    /// The outcome of a [`PmxFs::start_sync`] job; Err poisons the store.
    pub fn finish_sync(
        &self,
        job: pmxcfs_store::SyncJob,
        result: std::io::Result<()>,
    ) -> Result<(), StoreError> {
        self.core().session_mut().sync_done(job, result)
    }

    pub fn is_synced(&self) -> bool {
        self.core().session().is_synced()
    }

    /// Replaces the lock clock (tests).
    pub fn set_lock_clock(&self, clock: impl Fn() -> u64 + Send + 'static) {
        self.core().session_mut().set_clock(clock);
    }

    /// Ends the session: checkpoint to LMDB (clean shutdown).
    pub fn close(self) -> Result<(), StoreError> {
        let core = self
            .core
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let session = match core.backend {
            Backend::Local(local) => match local.dcdb.into_parts() {
                Some((session, _permit)) => session,
                // Dcdb::owned always holds its parts.
                None => unreachable!("local mode's DCDB owns its session"),
            },
            Backend::Cluster(cluster) => cluster.into_session(),
        };
        session.close()
    }
}

impl FileSystem for PmxFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // Big writes (1 MiB per request, the file size limit), parallel
        // directory operations, O_TRUNC folded into open, and symlinks cached
        // by the kernel (their targets never change). No writeback cache: a
        // write must be applied (and replicated) before it returns.
        let wanted = FsOptions::ASYNC_READ
            | FsOptions::INIT_EXT
            | FsOptions::BIG_WRITES
            | FsOptions::MAX_PAGES
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::CACHE_SYMLINKS;
        Ok(capable & wanted)
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.core().lookup(parent, name.to_bytes())
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        self.core().getattr(inode)
    }

    fn setattr(
        &self,
        _ctx: &Context,
        inode: u64,
        attr: stat64,
        _handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        let mut core = self.core();
        core.setattr(inode, &attr, valid)?;
        core.getattr(inode)
    }

    fn readlink(&self, _ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        match special_by_id(inode) {
            Some(special @ Special::Link(_)) => Ok(self.core().special_content(special)),
            _ => Err(io::Error::from(FsError::Invalid)),
        }
    }

    // No mknod, mkdir, unlink, rmdir, rename or create: the mutation path
    // (`mutation.rs`) takes every such request before it gets here.

    fn open(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        let core = self.core();
        if let Some(special) = special_by_id(inode) {
            return match special {
                Special::Virtual(_) => Ok((None, OpenOptions::DIRECT_IO, None)),
                Special::Link(_) => Err(io::Error::from(FsError::Loop)),
            };
        }
        let mut core = core;
        core.getattr(inode)?;
        core.opened(inode);
        // The page cache stays valid across opens: every change of the file
        // either comes through this kernel or is invalidated by us.
        Ok((None, OpenOptions::KEEP_CACHE, None))
    }

    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        self.core().read(inode, size, offset, w)
    }

    fn write(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _delayed_write: bool,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<usize> {
        let mut data = vec![0u8; size as usize];
        r.read_exact(&mut data)?;
        self.core().write(inode, offset, &data)
    }

    // No `flush`: the default ENOSYS makes the kernel stop sending FLUSH on
    // every close (writes are applied before they return; nothing to flush).

    fn fsync(&self, _ctx: &Context, _inode: u64, _datasync: bool, _handle: u64) -> io::Result<()> {
        // Every acknowledged write is already in the journal; fsync asks for
        // stable storage, which the journal sync gives.
        self.core().session_mut().sync().map_err(store_error)
    }

    fn release(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
        _handle: u64,
        _flush: bool,
        _flock_release: bool,
        _lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.core().released(inode);
        Ok(())
    }

    fn statfs(&self, _ctx: &Context, _inode: u64) -> io::Result<statvfs64> {
        self.core().statfs()
    }

    fn opendir(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        let mut core = self.core();
        let (stat, _) = core.getattr(inode)?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(io::Error::from(FsError::NotDirectory));
        }
        let handle = core.next_handle;
        core.next_handle += 1;
        core.listings.insert(handle, Vec::new());
        // The kernel may keep directory listings: it drops them itself when
        // it creates, removes or renames through this mount, and we
        // invalidate the directory for changes it did not make.
        Ok((
            Some(handle),
            OpenOptions::CACHE_DIR | OpenOptions::KEEP_CACHE,
        ))
    }

    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let mut core = self.core();
        // The listing is taken at the first READDIR of a handle (none comes
        // when the kernel answers from its cache) and kept for the rest.
        let taken = core
            .listings
            .get(&handle)
            .is_some_and(|listing| !listing.is_empty());
        if offset == 0 || !taken {
            let listing = core.readdir_entries(inode)?;
            core.listings.insert(handle, listing);
        }
        let Some(entries) = core.listings.get(&handle) else {
            return Err(io::Error::from(FsError::BadHandle));
        };
        for (index, (ino, type_, name)) in entries.iter().enumerate().skip(offset as usize) {
            let added = add_entry(DirEntry {
                ino: *ino,
                offset: index as u64 + 1,
                type_: *type_,
                name,
            })?;
            if added == 0 {
                break;
            }
        }
        Ok(())
    }

    fn fsyncdir(
        &self,
        _ctx: &Context,
        _inode: u64,
        _datasync: bool,
        _handle: u64,
    ) -> io::Result<()> {
        Ok(())
    }

    fn releasedir(&self, _ctx: &Context, _inode: u64, _flags: u32, handle: u64) -> io::Result<()> {
        self.core().listings.remove(&handle);
        Ok(())
    }

    fn access(&self, _ctx: &Context, inode: u64, _mask: u32) -> io::Result<()> {
        // default_permissions: the kernel checks modes; existence only here.
        self.core().getattr(inode).map(|_| ())
    }
}

impl PmxFs {
    /// What `pmxcfs status` shows of the file system side.
    pub fn report(&self) -> Report {
        let core = self.core();
        let session = core.session();
        let global_version = session.reader().root().map_or(0, |root| root.meta.version);
        let store = session.stats();
        let (members, groups, parked, waiting, outgoing) = match &core.backend {
            Backend::Local { .. } => (
                vec![MemberReport {
                    name: core.status.nodename.clone(),
                    node_id: 0,
                    online: true,
                    ip: core.status.node_ip.clone(),
                }],
                Vec::new(),
                0,
                0,
                0,
            ),
            Backend::Cluster(cluster) => (
                core.status.member_reports(),
                cluster.group_reports(),
                cluster.parked_count(),
                cluster.waiting_count(),
                cluster.outgoing_count(),
            ),
        };
        Report {
            nodename: core.status.nodename.clone(),
            cluster: matches!(core.backend, Backend::Cluster(_)),
            quorate: core.quorum.is_quorate(),
            members,
            groups,
            parked,
            waiting,
            outgoing,
            global_version,
            store,
        }
    }
}
