//! The DCDB application of the DFSM (dcdb.c, spec/dfsm.md §9): the
//! replicated file tree on top of the store.
//!
//! [`Dcdb`] implements [`Application`]: delivered NORMAL messages become
//! store operations (§9.3), the state blob is the memdb index (§9.5,
//! memdb.md §6), the leader is chosen and its updates generated as in
//! memdb.md §8, and a resync is committed with
//! [`Writer::apply_resync`](pmxcfs_store::Writer::apply_resync) (memdb.md §7).
//!
//! Not done here (the daemon's business): the corosync.conf sync after a
//! write/rename of `corosync.conf` or a resync (filesystem.md §9), cache
//! invalidation (the caller drains [`Dcdb::drain_changed`]) and the quorum
//! flag ([`Dcdb::set_quorate`]).

use std::collections::BTreeSet;

use pmxcfs_store::{
    ApplyPermit, EntryRef, Kind, Op, Origin, ROOT_INODE, Row, Session, StoreError, VERSION_ROW_NAME,
};

use crate::dfsm::{AppError, Application, Ctx, Footprint, MemberId, StateDecision};
use crate::wire::{
    DcdbPayload, DcdbType, EntryType, IndexView, UnlockPayload, UpdateEntry, decode_dcdb,
};

/// A path a delivered message changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The member whose message it was.
    pub sender: MemberId,
    /// That message's count (per sender).
    pub count: u64,
    /// The path, as in the message.
    pub path: Vec<u8>,
    /// Store inode of the path's directory before the change (if it
    /// resolved): its listing and the dentry of the name are stale.
    pub parent_before: Option<u64>,
    /// Store inode the path named before the change (if any): its data and
    /// attributes are stale, wherever it lives afterwards.
    pub inode_before: Option<u64>,
    /// The file the path named before the change, if it was watched
    /// ([`Dcdb::watch`]: open on this node) and the change may remove it
    /// (a delete, the target of a rename): its handles keep reading it.
    pub removed: Option<RemovedFile>,
    /// Whether C counts it in the path's `.version` counter
    /// (`record_memdb_change`): every change made but a mkdir.
    pub counted: bool,
}

/// A watched file as it was before a change that may remove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedFile {
    pub meta: pmxcfs_store::Meta,
    pub name: Vec<u8>,
    pub data: Vec<u8>,
}

fn change(
    sender: MemberId,
    count: u64,
    path: &[u8],
    (parent_before, inode_before): (Option<u64>, Option<u64>),
) -> Change {
    Change {
        sender,
        count,
        path: path.to_vec(),
        parent_before,
        inode_before,
        removed: None,
        counted: true,
    }
}

/// The store session the application writes through: borrowed (tests,
/// replays) or owned (the daemon keeps the DFSM for its whole life).
/// One per process: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Held<'a, 's> {
    Borrowed {
        session: &'a mut Session<'s>,
        permit: &'a mut ApplyPermit,
    },
    Owned {
        session: Session<'s>,
        permit: ApplyPermit,
    },
}

/// The DCDB callbacks over one store session (the apply path: it holds the
/// session's [`ApplyPermit`]).
pub struct Dcdb<'a, 's> {
    held: Held<'a, 's>,
    quorate: bool,
    /// Paths changed by delivered messages (for cache invalidation and the
    /// `.version` counters).
    changed: Vec<Change>,
    /// Set by a resync commit: the whole tree may have changed.
    resynced: bool,
    /// The leader's index of the current state exchange.
    leader_index: Option<Vec<u8>>,
    /// Our own index as sent in the current state exchange.
    local_index: Option<Vec<u8>>,
    /// UPDATE entries received in the current state exchange.
    updates: Vec<Row>,
    /// Store inodes of the files open on this node ([`Dcdb::watch`]).
    watched: std::collections::HashSet<u64>,
    /// Delivered messages are applied without a journal commit of their
    /// own; [`Dcdb::commit_deferred`] commits them together.
    defer_commit: bool,
    /// Messages applied since the last commit (with `defer_commit`).
    uncommitted: bool,
}

impl std::fmt::Debug for Dcdb<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dcdb")
            .field("quorate", &self.quorate)
            .field("changed", &self.changed.len())
            .field("updates", &self.updates.len())
            .finish_non_exhaustive()
    }
}

impl<'a, 's> Dcdb<'a, 's> {
    /// A DCDB application on `session`; starts not quorate (as C before the
    /// first quorum notification).
    pub fn new(session: &'a mut Session<'s>, permit: &'a mut ApplyPermit) -> Self {
        Self::with(Held::Borrowed { session, permit })
    }

    fn with(held: Held<'a, 's>) -> Self {
        Self {
            held,
            quorate: false,
            changed: Vec::new(),
            resynced: false,
            leader_index: None,
            local_index: None,
            updates: Vec::new(),
            watched: std::collections::HashSet::new(),
            defer_commit: false,
            uncommitted: false,
        }
    }

    /// A DCDB application that owns its session (the daemon's).
    pub fn owned(session: Session<'s>, permit: ApplyPermit) -> Dcdb<'static, 's> {
        Dcdb::with(Held::Owned { session, permit })
    }

    /// The owned session back (`None` for a borrowed one).
    pub fn into_parts(self) -> Option<(Session<'s>, ApplyPermit)> {
        match self.held {
            Held::Owned { session, permit } => Some((session, permit)),
            Held::Borrowed { .. } => None,
        }
    }

    /// The session and the apply permit (the writer of this application).
    pub fn parts(&mut self) -> (&mut Session<'s>, &mut ApplyPermit) {
        match &mut self.held {
            Held::Borrowed { session, permit } => (session, permit),
            Held::Owned { session, permit } => (session, permit),
        }
    }

    fn writer(&mut self) -> pmxcfs_store::Writer<'_, 's> {
        let (session, permit) = self.parts();
        session.writer(permit)
    }

    fn session_mut(&mut self) -> &mut Session<'s> {
        self.parts().0
    }

    /// Sets the quorum flag: NORMAL messages delivered while not quorate make
    /// the DFSM leave (spec/dfsm.md §9.3 step 2).
    pub fn set_quorate(&mut self, quorate: bool) {
        self.quorate = quorate;
    }

    pub fn is_quorate(&self) -> bool {
        self.quorate
    }

    /// The store session (reads).
    pub fn session(&self) -> &Session<'s> {
        match &self.held {
            Held::Borrowed { session, .. } => session,
            Held::Owned { session, .. } => session,
        }
    }

    /// Marks the file with store inode `inode` as open on this node (or no
    /// longer): a delivered delete or rename over it then keeps a copy in
    /// its [`Change::removed`], so that the open handles are not left
    /// naming a file that no longer exists.
    pub fn watch(&mut self, inode: u64, open: bool) {
        if open {
            self.watched.insert(inode);
        } else {
            self.watched.remove(&inode);
        }
    }

    /// A copy of the file with store inode `inode` (what a path named
    /// before the change) if it is watched.
    fn copy_if_watched(&self, inode: Option<u64>) -> Option<RemovedFile> {
        let inode = inode.filter(|inode| self.watched.contains(inode))?;
        let reader = self.session().reader();
        let entry = reader.entry(inode).ok().flatten()?;
        (entry.meta.kind == pmxcfs_store::Kind::File).then(|| RemovedFile {
            meta: entry.meta,
            name: entry.name.to_vec(),
            data: entry.data.to_vec(),
        })
    }

    /// From now on, delivered messages are applied without committing each
    /// (`true`), until [`Dcdb::commit_deferred`] commits them together: the
    /// caller holds every effect of them (replies included) until then. With
    /// `false` each delivery commits on its own again.
    pub fn set_deferred_commit(&mut self, defer: bool) {
        self.defer_commit = defer;
    }

    /// Commits the messages applied since [`Dcdb::set_deferred_commit`]
    /// (one journal write for all of them); nothing to do if none were.
    pub fn commit_deferred(&mut self) -> Result<(), StoreError> {
        if !std::mem::take(&mut self.uncommitted) {
            return Ok(());
        }
        self.session_mut().commit()
    }

    /// Takes the paths changed since the last call, in apply order (a rename
    /// gives both paths, also when it failed: the C quirk may have removed
    /// its target).
    pub fn drain_changed(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changed)
    }

    /// Whether a resync replaced the tree since the last call (then every
    /// cached path is stale, not only [`Dcdb::drain_changed`]'s).
    pub fn take_resynced(&mut self) -> bool {
        std::mem::take(&mut self.resynced)
    }

    /// The store inodes of `path`'s directory and of `path` itself, as they
    /// are before a change (for the caller's cache invalidation).
    fn resolve_before(&self, path: &[u8]) -> (Option<u64>, Option<u64>) {
        let reader = self.session().reader();
        let parent = match path.iter().rposition(|byte| *byte == b'/') {
            Some(slash) => &path[..slash],
            None => &b""[..],
        };
        let inode_of = |p: &[u8]| reader.resolve(p).ok().flatten().map(|e| e.meta.inode);
        (inode_of(parent), inode_of(path))
    }

    /// Store failure while applying: a refusal is the writer's result, any
    /// other failure is this node's: the DFSM leaves (C switches to its
    /// permanent ERROR mode, §9.3 step 6, and needs a restart). The daemon
    /// recovers the store (`Session::recover`, once the disk takes writes
    /// again) before the DFSM rejoins, and the resync brings what the group
    /// applied meanwhile.
    fn store_result(error: &StoreError) -> Result<i32, AppError> {
        if error.is_refusal() {
            Ok(-error.errno())
        } else {
            tracing::error!(%error, "database failure while applying a DCDB message - leaving");
            Err(AppError {
                fatal: false,
                result: -error.errno(),
            })
        }
    }

    fn apply_fuse(
        &mut self,
        kind: DcdbType,
        fuse: &crate::wire::FusePayload<'_>,
        origin: Origin,
        sender: MemberId,
        count: u64,
    ) -> Result<i32, AppError> {
        let path = fuse.path;
        let op = match kind {
            DcdbType::Write => Op::Write {
                path,
                offset: u64::from(fuse.offset),
                data: fuse.data,
                truncate: fuse.flags != 0,
            },
            DcdbType::Mkdir => Op::Mkdir { path },
            DcdbType::Delete => Op::Delete { path },
            DcdbType::Rename => {
                let Some(to) = fuse.to else {
                    tracing::error!("RENAME without a target - leaving");
                    return Err(AppError::LEAVE);
                };
                Op::Rename { from: path, to }
            }
            DcdbType::Create => Op::Create { path },
            DcdbType::Mtime => Op::Mtime {
                path,
                mtime: fuse.offset,
            },
            DcdbType::UnlockRequest | DcdbType::Unlock => return Err(AppError::LEAVE),
        };
        self.apply_op(&op, origin, sender, count)
            .or_else(|error| Self::store_result(&error))
    }

    /// Applies one change made by `origin`: the one apply of every tree
    /// change, a delivered DCDB message's (cluster mode) and a request's in
    /// local mode. The change is in the open transaction (the caller
    /// commits); the paths it touched are kept for
    /// [`Dcdb::drain_changed`] as (`sender`, `count`). A refusal is the
    /// result (a negative errno); Err is a failure of the store (this
    /// node's disk), which the caller reports.
    pub fn apply_op(
        &mut self,
        op: &Op<'_>,
        origin: Origin,
        sender: MemberId,
        count: u64,
    ) -> Result<i32, StoreError> {
        let (path, to) = match *op {
            Op::Rename { from, to } => (from, Some(to)),
            Op::Create { path }
            | Op::Mkdir { path }
            | Op::Delete { path }
            | Op::Write { path, .. }
            | Op::Mtime { path, .. } => (path, None),
        };
        let before_from = self.resolve_before(path);
        let before_to = to.map_or((None, None), |to| self.resolve_before(to));
        let removed = match op {
            Op::Delete { .. } => self.copy_if_watched(before_from.1),
            Op::Rename { .. } => self.copy_if_watched(before_to.1),
            _ => None,
        };
        let result = match self.writer().apply(op, origin) {
            Ok(count) => i32::try_from(count).unwrap_or(i32::MAX),
            Err(error) if error.is_refusal() => -error.errno(),
            Err(error) => return Err(error),
        };
        if result >= 0 || to.is_some() {
            // C's `.version` counters: every change made but a mkdir; a
            // failed rename counts when it removed its target (the C
            // quirk), as C records the rename before that failure.
            let counted = match (op, to) {
                (Op::Mkdir { .. }, _) => false,
                (_, Some(to)) if result < 0 => {
                    before_to.1.is_some() && self.resolve_before(to).1.is_none()
                }
                _ => true,
            };
            let mut from_change = change(sender, count, path, before_from);
            from_change.counted = counted;
            match to {
                Some(to) => {
                    self.changed.push(from_change);
                    let mut to_change = change(sender, count, to, before_to);
                    to_change.counted = counted;
                    to_change.removed = removed;
                    self.changed.push(to_change);
                }
                None => {
                    from_change.removed = removed;
                    self.changed.push(from_change);
                }
            }
        }
        Ok(result)
    }

    fn apply_unlock(
        &mut self,
        ctx: &mut Ctx<'_>,
        kind: DcdbType,
        unlock: &UnlockPayload<'_>,
        origin: Origin,
        sender: MemberId,
        count: u64,
    ) -> Result<i32, AppError> {
        let before_unlock = self.resolve_before(unlock.path);
        let mut writer = self.writer();
        if kind == DcdbType::UnlockRequest {
            if !ctx.lowest_node_id_is_local() {
                return Ok(0);
            }
            let current = match writer.lock_checksum(unlock.path) {
                Ok(current) => current,
                Err(error) => return Self::store_result(&error),
            };
            if current == Some(unlock.checksum) && writer.lock_expired(unlock.path, unlock.checksum)
            {
                tracing::info!(
                    "got unlock request for expired lock {} - sending unlock",
                    String::from_utf8_lossy(unlock.path)
                );
                let mut payload = Vec::new();
                if unlock.encode(&mut payload).is_err() {
                    return Err(AppError::LEAVE);
                }
                ctx.send_normal(DcdbType::Unlock as u16, payload);
            }
            return Ok(0);
        }
        match writer.unlock(unlock.path, unlock.checksum, origin) {
            Ok(deleted) => {
                if deleted {
                    self.changed
                        .push(change(sender, count, unlock.path, before_unlock));
                }
                Ok(0)
            }
            Err(error) => Self::store_result(&error),
        }
    }

    /// The UPDATE payloads the leader sends (memdb.md §8): for every other
    /// member's index, the master entries whose record differs from the
    /// first slave record with inode ≥ the master inode (or that have none);
    /// each inode once, in master order.
    fn create_updates(
        &self,
        master: &IndexView<'_>,
        states: &[(MemberId, IndexView<'_>)],
    ) -> Result<Vec<Vec<u8>>, AppError> {
        let mut wanted = BTreeSet::new();
        for (_, slave) in states {
            let mut j = 0;
            for (i, entry) in master.entries().enumerate() {
                while j < slave.len() && slave.entry(j).is_some_and(|e| e.inode < entry.inode) {
                    j += 1;
                }
                // The 40-byte records (inode + digest) compared as a whole.
                if slave.entry(j) != Some(entry) {
                    wanted.insert((i, entry.inode));
                }
            }
        }
        let reader = self.session().reader();
        let mut updates = Vec::with_capacity(wanted.len());
        for (_, inode) in wanted {
            let entry = match reader.entry(inode) {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    tracing::error!("inode {inode:#x} of our index is missing - leaving");
                    return Err(AppError::LEAVE);
                }
                Err(error) => {
                    tracing::error!(%error, "reading inode {inode:#x} for an update");
                    return Err(AppError::LEAVE);
                }
            };
            let mut payload = Vec::new();
            if update_entry(&entry).encode(&mut payload).is_err() {
                tracing::error!("inode {inode:#x} cannot be encoded as an update");
                return Err(AppError::LEAVE);
            }
            updates.push(payload);
        }
        Ok(updates)
    }
}

/// The §9.6 UPDATE entry of a stored entry (the root: type 4, empty name,
/// the global version/writer/mtime; directories without data).
fn update_entry<'e>(entry: &EntryRef<'e>) -> UpdateEntry<'e> {
    let root = entry.meta.inode == ROOT_INODE;
    let dir = root || entry.meta.kind == Kind::Dir;
    UpdateEntry {
        parent: if root { 0 } else { entry.meta.parent },
        inode: entry.meta.inode,
        version: entry.meta.version,
        writer: entry.meta.writer,
        mtime: entry.meta.mtime,
        entry_type: if dir { EntryType::Dir } else { EntryType::File },
        name: if root { b"" } else { entry.name },
        data: if dir { b"" } else { entry.data },
    }
}

/// The row a received UPDATE entry becomes (memdb.md §7 step 3).
fn row_of_update(entry: &UpdateEntry<'_>) -> Row {
    let root = entry.inode == ROOT_INODE;
    Row {
        inode: entry.inode,
        parent: entry.parent,
        version: entry.version,
        writer: entry.writer,
        mtime: entry.mtime,
        kind: entry.entry_type as u8,
        name: if root {
            VERSION_ROW_NAME.to_vec()
        } else {
            entry.name.to_vec()
        },
        data: (!root && !entry.data.is_empty()).then(|| entry.data.to_vec()),
    }
}

fn fmt_member(id: MemberId) -> String {
    format!("{}/{}", id.node_id, id.pid)
}

impl Application for Dcdb<'_, '_> {
    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        subtype: u16,
        time: u32,
        payload: &[u8],
    ) -> Result<i32, AppError> {
        let (kind, decoded) = decode_dcdb(subtype, payload).map_err(|error| {
            tracing::error!(%error, "malformed DCDB message type {subtype} - leaving");
            AppError::LEAVE
        })?;
        if !self.quorate {
            tracing::error!("received write while not quorate - trigger resync");
            return Err(AppError::LEAVE);
        }
        let origin = Origin {
            writer: sender.node_id,
            mtime: time,
        };
        let count = ctx.message_count().unwrap_or(0);
        let result = match decoded {
            DcdbPayload::Fuse(fuse) => self.apply_fuse(kind, &fuse, origin, sender, count)?,
            DcdbPayload::Unlock(unlock) => {
                self.apply_unlock(ctx, kind, &unlock, origin, sender, count)?
            }
        };
        if self.session().is_poisoned() {
            tracing::error!("database errors flag set - leaving");
            return Err(AppError {
                fatal: false,
                result,
            });
        }
        if self.defer_commit {
            self.uncommitted = true;
        } else if let Err(error) = self.session_mut().commit() {
            tracing::error!(%error, "commit of a DCDB message failed - leaving");
            return Err(AppError {
                fatal: false,
                result: -error.errno(),
            });
        }
        Ok(result)
    }

    fn get_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>, AppError> {
        self.session().reader().index().map_err(|error| {
            tracing::error!(%error, "cannot encode the memdb index");
            AppError::LEAVE
        })
    }

    fn process_state_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        states: &[(MemberId, &[u8])],
    ) -> Result<StateDecision, AppError> {
        let mut views = Vec::with_capacity(states.len());
        for (member, blob) in states {
            match IndexView::decode(blob) {
                Ok(view) => views.push((*member, view)),
                Err(error) => {
                    tracing::error!(%error, "bad state from {}", fmt_member(*member));
                    return Err(AppError::LEAVE);
                }
            }
        }
        let Some(leader) = choose_leader(&views) else {
            return Err(AppError::LEAVE);
        };
        let (leader_id, master) = views[leader];
        tracing::info!("leader is {}", fmt_member(leader_id));
        let synced: Vec<bool> = views
            .iter()
            .map(|(_, view)| view.as_bytes() == master.as_bytes())
            .collect();
        let synced_names: Vec<String> = views
            .iter()
            .zip(&synced)
            .filter(|(_, s)| **s)
            .map(|((id, _), _)| fmt_member(*id))
            .collect();
        tracing::info!("synced members: {}", synced_names.join(", "));

        self.leader_index = Some(master.as_bytes().to_vec());
        let local = ctx.local();
        self.local_index = views
            .iter()
            .find(|(id, _)| *id == local)
            .map(|(_, view)| view.as_bytes().to_vec());
        let updates = if leader_id == local {
            Some(self.create_updates(&master, &views)?)
        } else {
            None
        };
        Ok(StateDecision { synced, updates })
    }

    fn process_update(
        &mut self,
        _ctx: &mut Ctx<'_>,
        sender: MemberId,
        payload: &[u8],
    ) -> Result<(), AppError> {
        let entry = UpdateEntry::decode(payload).map_err(|error| {
            tracing::error!(%error, "bad update from {}", fmt_member(sender));
            AppError::LEAVE
        })?;
        self.updates.push(row_of_update(&entry));
        Ok(())
    }

    fn commit(&mut self, _ctx: &mut Ctx<'_>) -> Result<(), AppError> {
        let Some(master) = self.leader_index.clone() else {
            tracing::error!("commit without a leader index");
            return Err(AppError::LEAVE);
        };
        // The rows are in the tree now (or the member leaves): their memory,
        // the size of the whole tree on a new node, and what LMDB's dirty
        // pages of the new tree took go back to the system at once.
        let updates = std::mem::take(&mut self.updates);
        let result = self.writer().apply_resync(&master, &updates);
        drop(updates);
        pmxcfs_store::release_free_memory();
        match result {
            Ok(()) => {
                self.resynced = true;
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "applying the resync failed");
                Err(AppError::LEAVE)
            }
        }
    }

    fn cleanup(&mut self) {
        self.updates = Vec::new();
        self.leader_index = None;
        self.local_index = None;
    }

    fn checksum(&mut self) -> Option<Result<[u8; 32], AppError>> {
        Some(self.session().reader().checksum().map_err(|error| {
            tracing::error!(%error, "cannot compute the database checksum");
            AppError::LEAVE
        }))
    }

    /// The paths a file operation changes (a rename: both), each with a
    /// fingerprint of its kind and content (and its mtime for an MTIME).
    /// Locks are not kept (UNLOCK, UNLOCK_REQUEST, and any change of a lock
    /// directory under `priv/lock/`): a lock taken before a partition and
    /// expired and removed by the majority meanwhile would otherwise come
    /// back at the heal and block its guest for another lock lifetime; a
    /// lost lock is what the C daemon gives too.
    fn write_footprint(&mut self, subtype: u16, payload: &[u8]) -> Option<Footprint> {
        let (kind, paths) = changed_paths(subtype, payload)?;
        let with_mtime = kind == DcdbType::Mtime;
        let reader = self.session().reader();
        let state = |path: &[u8]| {
            let entry = reader.resolve(path).ok().flatten()?;
            let mut crc = crc32c::crc32c(&[entry.meta.kind as u8]);
            crc = crc32c::crc32c_append(crc, entry.data);
            if with_mtime {
                crc = crc32c::crc32c_append(crc, &entry.meta.mtime.to_le_bytes());
            }
            Some((u64::from(crc) << 32) | (entry.data.len() as u64 & 0xFFFF_FFFF))
        };
        Some(
            paths
                .into_iter()
                .map(|path| (path.to_vec(), state(path)))
                .collect(),
        )
    }

    fn write_keys(&mut self, subtype: u16, payload: &[u8]) -> Option<Vec<Vec<u8>>> {
        let (_, paths) = changed_paths(subtype, payload)?;
        Some(paths.into_iter().map(<[u8]>::to_vec).collect())
    }
}

/// The paths a DCDB write changes (its path; a rename's target too), for
/// the own-write check: `None` for what is not a file-system write and for
/// lock directories (an expired lock must never come back).
fn changed_paths(subtype: u16, payload: &[u8]) -> Option<(DcdbType, Vec<&[u8]>)> {
    let (kind, DcdbPayload::Fuse(fuse)) = decode_dcdb(subtype, payload).ok()? else {
        return None;
    };
    let lock = |path: &[u8]| pmxcfs_store::path::is_lockdir(path);
    if lock(fuse.path) || fuse.to.is_some_and(lock) {
        return None;
    }
    let mut paths = vec![fuse.path];
    if let Some(to) = fuse.to.filter(|_| kind == DcdbType::Rename) {
        paths.push(to);
    }
    Some((kind, paths))
}

/// The leader of a state exchange (memdb.md §8): the first member, replaced
/// by each later one with a higher version, or the same version and a newer
/// mtime (every member computes the same, C nodes included). `None` without
/// states.
fn choose_leader(views: &[(MemberId, IndexView<'_>)]) -> Option<usize> {
    let mut leader = (!views.is_empty()).then_some(0)?;
    for (i, (_, view)) in views.iter().enumerate().skip(1) {
        let best = &views[leader].1;
        if view.version() > best.version()
            || view.version() == best.version() && view.mtime() > best.mtime()
        {
            leader = i;
        }
    }
    Some(leader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{IndexEntry, UpdateEntry, encode_index};
    use pmxcfs_store::{Durability, Op, Store};

    /// A DCDB application owning the session of a fresh store (leaked: it
    /// has to outlive that session); the directory goes with the guard.
    fn fresh_app() -> (tempfile::TempDir, Dcdb<'static, 'static>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store").leak();
        let (session, permit) = store.session(Durability::Relaxed).expect("session");
        (dir, Dcdb::owned(session, permit))
    }

    const ORIGIN: Origin = Origin {
        writer: 1,
        mtime: 1_700_000_000,
    };

    fn view_of(blob: &[u8]) -> IndexView<'_> {
        IndexView::decode(blob).expect("index decodes")
    }

    /// The leader sends, per other member, exactly the entries whose record
    /// differs from that member's (or that it lacks), each inode once, in
    /// index order; nothing for a member that is in sync, and nothing for
    /// its own index.
    #[test]
    fn the_leader_sends_exactly_what_each_member_lacks() {
        let (_dir, mut app) = fresh_app();
        for op in [
            Op::Mkdir { path: b"nodes" },
            Op::Create { path: b"nodes/a" },
            Op::Create { path: b"nodes/b" },
            Op::Create { path: b"nodes/c" },
        ] {
            app.writer().apply(&op, ORIGIN).expect("apply");
        }
        let master_blob = app.session().reader().index().expect("index");
        let master = view_of(&master_blob);
        let entries: Vec<IndexEntry> = master.entries().collect();
        assert!(entries.len() >= 5, "root, nodes, a, b, c");
        // Member 2: one record changed, one missing; member 3: in sync.
        let mut changed = entries.clone();
        changed[2].digest[0] ^= 1;
        let missing = changed.remove(4);
        let mut slave_blob = Vec::new();
        encode_index(1, 0, 0, 0, &changed, &mut slave_blob).expect("encodes");
        let member = |node_id| MemberId { node_id, pid: 100 };
        let states = [
            (member(1), view_of(&master_blob)),
            (member(2), view_of(&slave_blob)),
            (member(3), view_of(&master_blob)),
        ];
        let updates = app.create_updates(&master, &states).expect("updates");
        let inodes: Vec<u64> = updates
            .iter()
            .map(|payload| UpdateEntry::decode(payload).expect("update").inode)
            .collect();
        assert_eq!(inodes, [entries[2].inode, missing.inode]);
        // In sync everywhere: nothing to send.
        let in_sync = [
            (member(1), view_of(&master_blob)),
            (member(3), view_of(&master_blob)),
        ];
        assert!(
            app.create_updates(&master, &in_sync)
                .expect("none")
                .is_empty()
        );
    }

    /// A refusal is the writer's result; any other store failure leaves the
    /// group and still hands the writer its errno (negative, as results are:
    /// -ENOENT = -2, -EIO = -5).
    #[test]
    fn store_failures_leave_and_refusals_are_results() {
        assert_eq!(Dcdb::store_result(&StoreError::NotFound), Ok(-2));
        assert_eq!(
            Dcdb::store_result(&StoreError::Poisoned),
            Err(AppError {
                fatal: false,
                result: -5
            })
        );
    }

    /// VERIFY compares what `checksum` gives: the store's whole-tree
    /// checksum, which any change moves.
    #[test]
    fn the_verify_checksum_is_the_trees() {
        let (_dir, mut app) = fresh_app();
        let mut sums = Vec::new();
        for op in [
            Op::Mkdir { path: b"nodes" },
            Op::Create { path: b"nodes/a" },
        ] {
            let sum = app.checksum().expect("offered").expect("computed");
            assert_eq!(sum, app.session().reader().checksum().expect("checksum"));
            sums.push(sum);
            app.writer().apply(&op, ORIGIN).expect("apply");
        }
        sums.push(app.checksum().expect("offered").expect("computed"));
        assert!(sums[0] != sums[1] && sums[1] != sums[2], "{sums:x?}");
    }

    /// The own-write check's footprint: the paths a file operation
    /// changes with their kind and content (and mtime for MTIME); locks
    /// are not kept.
    #[test]
    fn a_footprint_is_the_state_of_the_paths_a_message_changes() {
        let (_dir, mut app) = fresh_app();
        let payload = |path: &[u8], to: Option<&[u8]>, data: &[u8], offset: u32| {
            let mut out = Vec::new();
            crate::wire::FusePayload {
                offset,
                flags: 0,
                path,
                to,
                data,
            }
            .encode(&mut out)
            .expect("encodes");
            out
        };
        let write = payload(b"a", None, b"x", 0);
        let rename = payload(b"a", Some(b"b"), b"", 0);
        let mtime = payload(b"a", None, b"", 7);
        let print = |app: &mut Dcdb<'_, '_>, kind: DcdbType, payload: &[u8]| {
            app.write_footprint(kind as u16, payload).expect("kept")
        };
        assert_eq!(
            print(&mut app, DcdbType::Write, &write),
            vec![(b"a".to_vec(), None)]
        );
        app.writer()
            .apply(&Op::Create { path: b"a" }, ORIGIN)
            .expect("create");
        let empty = print(&mut app, DcdbType::Write, &write);
        let writing = Op::Write {
            path: b"a",
            offset: 0,
            data: b"x",
            truncate: false,
        };
        app.writer().apply(&writing, ORIGIN).expect("write");
        let written = print(&mut app, DcdbType::Write, &write);
        assert!(empty[0].1.is_some() && written[0].1.is_some() && empty != written);
        // Same content, another inode and version: the same footprint.
        app.writer().apply(&writing, ORIGIN).expect("write again");
        assert_eq!(print(&mut app, DcdbType::Write, &write), written);
        // A rename: both paths.
        let both = print(&mut app, DcdbType::Rename, &rename);
        assert_eq!(
            both,
            vec![(b"a".to_vec(), written[0].1), (b"b".to_vec(), None)]
        );
        // The mtime counts for MTIME only.
        let before = print(&mut app, DcdbType::Mtime, &mtime);
        let later = Origin {
            mtime: ORIGIN.mtime + 5,
            ..ORIGIN
        };
        app.writer()
            .apply(
                &Op::Mtime {
                    path: b"a",
                    mtime: 7,
                },
                later,
            )
            .expect("mtime");
        assert_ne!(print(&mut app, DcdbType::Mtime, &mtime), before);
        assert_eq!(print(&mut app, DcdbType::Write, &write), written);
        // A directory is not an empty file.
        app.writer()
            .apply(&Op::Mkdir { path: b"d" }, ORIGIN)
            .expect("mkdir");
        app.writer()
            .apply(&Op::Create { path: b"f" }, ORIGIN)
            .expect("create");
        let dir_print = print(&mut app, DcdbType::Mkdir, &payload(b"d", None, b"", 0));
        let file_print = print(&mut app, DcdbType::Create, &payload(b"f", None, b"", 0));
        assert_ne!(dir_print[0].1, file_print[0].1);
        // Locks are not kept; nor is garbage.
        let mut unlock = Vec::new();
        UnlockPayload {
            checksum: [0; 32],
            path: b"priv/lock/x",
        }
        .encode(&mut unlock)
        .expect("encodes");
        assert_eq!(app.write_footprint(DcdbType::Unlock as u16, &unlock), None);
        let lock_dir = payload(b"priv/lock/x", None, b"", 0);
        assert_eq!(app.write_footprint(DcdbType::Mkdir as u16, &lock_dir), None);
        let into_lock = payload(b"d", Some(b"priv/lock/y"), b"", 0);
        assert_eq!(
            app.write_footprint(DcdbType::Rename as u16, &into_lock),
            None
        );
        assert_eq!(app.write_footprint(DcdbType::Write as u16, b"\x01"), None);
        // The keys another member's write changes: the same paths, without
        // their states (what lets the DFSM skip its walk of the kept writes).
        let keys = |app: &mut Dcdb<'_, '_>, kind: DcdbType, payload: &[u8]| {
            app.write_keys(kind as u16, payload)
        };
        assert_eq!(
            keys(&mut app, DcdbType::Write, &write),
            Some(vec![b"a".to_vec()])
        );
        assert_eq!(
            keys(&mut app, DcdbType::Rename, &rename),
            Some(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(keys(&mut app, DcdbType::Unlock, &unlock), None);
        assert_eq!(keys(&mut app, DcdbType::Mkdir, &lock_dir), None);
        assert_eq!(keys(&mut app, DcdbType::Rename, &into_lock), None);
        assert_eq!(keys(&mut app, DcdbType::Write, b"\x01"), None);
    }

    /// A rename that fails may still have changed the tree (C removes the
    /// target before it finds the source directory not empty): the other
    /// nodes' kernels must hear of both paths. Another failed write changed
    /// nothing and is not reported.
    #[test]
    fn a_failed_rename_that_removed_its_target_is_a_change() {
        let (_dir, mut app) = fresh_app();
        for op in [
            Op::Mkdir { path: b"s" },
            Op::Create { path: b"s/child" },
            Op::Create { path: b"t" },
        ] {
            app.writer().apply(&op, ORIGIN).expect("set up");
        }
        let fuse = |path: &'static [u8], to: Option<&'static [u8]>| crate::wire::FusePayload {
            offset: 0,
            flags: 0,
            path,
            to,
            data: b"",
        };
        let sender = MemberId::new(2, 20);
        let result = app
            .apply_fuse(DcdbType::Rename, &fuse(b"s", Some(b"t")), ORIGIN, sender, 5)
            .expect("a refusal is a result");
        assert!(result < 0, "{result}");
        assert!(
            app.session()
                .reader()
                .resolve(b"t")
                .expect("read")
                .is_none()
        );
        let changes: Vec<(Vec<u8>, bool)> = app
            .drain_changed()
            .into_iter()
            .map(|c| (c.path, c.counted))
            .collect();
        assert_eq!(
            changes,
            vec![(b"s".to_vec(), true), (b"t".to_vec(), true)],
            "C counts both sides: it records the rename before the failure"
        );
        // A failed rename that removed nothing: changes for the caches,
        // not counted (C refused it before recording).
        app.writer()
            .apply(&Op::Mkdir { path: b"u" }, ORIGIN)
            .expect("set up");
        app.writer()
            .apply(&Op::Create { path: b"u/child" }, ORIGIN)
            .expect("set up");
        let result = app
            .apply_fuse(DcdbType::Rename, &fuse(b"s", Some(b"u")), ORIGIN, sender, 7)
            .expect("a refusal is a result");
        assert!(result < 0, "{result}");
        let counted: Vec<bool> = app.drain_changed().into_iter().map(|c| c.counted).collect();
        assert_eq!(counted, vec![false, false]);
        // A mkdir changes the tree but no `.version` counter (as in C).
        let result = app
            .apply_fuse(DcdbType::Mkdir, &fuse(b"v", None), ORIGIN, sender, 8)
            .expect("applied");
        assert!(result >= 0);
        let counted: Vec<bool> = app.drain_changed().into_iter().map(|c| c.counted).collect();
        assert_eq!(counted, vec![false]);
        let result = app
            .apply_fuse(
                DcdbType::Create,
                &fuse(b"missing/x", None),
                ORIGIN,
                sender,
                6,
            )
            .expect("a refusal is a result");
        assert!(result < 0, "{result}");
        assert!(
            app.drain_changed().is_empty(),
            "a failed create changed nothing"
        );
    }

    /// The quorum flag as set; what the log and `Debug` say of members and
    /// of the application.
    #[test]
    fn quorum_flag_member_names_and_debug() {
        let (_dir, mut app) = fresh_app();
        for quorate in [true, false] {
            app.set_quorate(quorate);
            assert_eq!(app.is_quorate(), quorate);
        }
        assert_eq!(fmt_member(MemberId::new(3, 4711)), "3/4711");
        let debug = format!("{app:?}");
        assert!(debug.contains("quorate: false"), "{debug}");
        let (session, _permit) = app.into_parts().expect("it owned its session");
        assert!(!session.is_poisoned());
    }

    #[test]
    fn the_leader_is_the_newest_state_and_the_first_among_equals() {
        let blob = |version, mtime| {
            let mut out = Vec::new();
            encode_index(version, 0, 0, mtime, &[], &mut out).expect("encodes");
            out
        };
        let pick = |states: &[(u64, u32)]| {
            let blobs: Vec<Vec<u8>> = states.iter().map(|&(v, m)| blob(v, m)).collect();
            let views: Vec<(MemberId, IndexView<'_>)> = blobs
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let node_id = u32::try_from(i).expect("small") + 1;
                    (MemberId { node_id, pid: 1 }, view_of(b))
                })
                .collect();
            choose_leader(&views)
        };
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[(5, 10)]), Some(0));
        // A higher version wins whatever the mtime.
        assert_eq!(pick(&[(5, 10), (6, 1), (4, 99)]), Some(1));
        // The same version: the newer mtime.
        assert_eq!(pick(&[(5, 10), (5, 11), (5, 9)]), Some(1));
        // Equal states: the first member stays the leader.
        assert_eq!(pick(&[(5, 10), (5, 10), (5, 10)]), Some(0));
        assert_eq!(pick(&[(5, 10), (7, 3), (7, 3)]), Some(1));
    }
}
