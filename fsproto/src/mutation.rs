//! One path for every change of the tree, in both modes.
//!
//! A mutating FUSE request is decoded once into a [`Plan`]: the DCDB
//! operations it asks for (after the rules of `rules.rs`) and what its
//! reply needs. A replicator takes the plan:
//!
//! * local mode ([`Core::apply_local`], here): the quorum gate, then every
//!   op through [`Dcdb::apply_op`], the apply of delivered DCDB messages,
//!   with a journal commit each, and the reply at once;
//! * cluster mode (`cluster.rs`): the quorum gate and the DFSM's write gate,
//!   one DCDB message per op, and the reply once every message was delivered
//!   and applied here through the same [`Dcdb::apply_op`].
//!
//! Either way the reply is built by [`Core::build_reply`] and the paths the
//! ops changed go through [`Core::absorb_changes`] (the `.version`
//! counters, open files a change removed, kernel cache invalidation).
//! fuse-backend-rs serves everything else: reads, and changes of the
//! special files and of removed files that are still open.

use pmxcfs_cpg::dcdb::{Change, RemovedFile};
use pmxcfs_cpg::dfsm::MemberId;
use pmxcfs_store::{EntryRef, Op, Origin};

use crate::clock::now_secs;
use crate::core::{Core, Orphan, special_by_id};
use crate::error::FsError;
use crate::fs::PmxFs;
use std::borrow::Cow;

use crate::plan::{Outcome, Plan, PlanOp, ReplyKind, reply_unique};
use crate::quorum::Proposal;
use crate::replicator::Backend;
use crate::rules::{self, MtimeRequest, SetattrRequest};
use crate::wire::*;

/// The sender and message count local mode's changes are recorded with
/// (no group: nobody else sends).
const LOCAL_SENDER: MemberId = MemberId { node_id: 0, pid: 0 };

impl Core {
    /// Takes a mutating request: `true` if it was taken (answered, parked
    /// or refused; see [`PmxFs::take_replies`]), `false` if the server
    /// should handle it (not a change of the tree).
    pub(crate) fn intercept(&mut self, request: &[u8], queue: Option<u16>) -> bool {
        let Some(header) = read_at::<InHeader>(request, 0) else {
            return false;
        };
        let taken = self.intercept_header(&header, request);
        if taken && let Some(qid) = queue {
            self.replies.uring_origin.insert(header.unique, qid);
        }
        taken
    }

    fn intercept_header(&mut self, header: &InHeader, request: &[u8]) -> bool {
        let Some(plan) = self.plan(header, request) else {
            return false;
        };
        let unique = header.unique;
        match plan {
            Ok(None) => false,
            Ok(Some(plan)) => {
                if let Err(code) = self.start(unique, plan, request) {
                    self.reply_now(unique, code);
                }
                true
            }
            Err(code) => {
                self.reply_now(unique, code);
                true
            }
        }
    }

    /// The plan of a mutating request (`None`: not one of ours).
    #[allow(clippy::type_complexity)]
    pub(crate) fn plan<'r>(
        &mut self,
        header: &InHeader,
        request: &'r [u8],
    ) -> Option<Result<Option<Plan<'r>>, FsError>> {
        let body = size_of::<InHeader>();
        Some(match header.opcode {
            FUSE_WRITE => self.plan_write(header.node_id, request, body),
            FUSE_SETATTR => self.plan_setattr(header.node_id, request, body),
            FUSE_CREATE => self.plan_create(header.node_id, request, body, true),
            FUSE_MKNOD => self.plan_create(header.node_id, request, body, false),
            FUSE_MKDIR => self.plan_mkdir(header.node_id, request, body),
            FUSE_UNLINK | FUSE_RMDIR => self.plan_delete(header.node_id, request, body),
            FUSE_RENAME | FUSE_RENAME2 => {
                self.plan_rename(header.node_id, request, body, header.opcode == FUSE_RENAME2)
            }
            _ => return None,
        })
    }

    pub(crate) fn reply_now(&mut self, unique: u64, error: FsError) {
        self.replies.push(reply_error(unique, error.errno()));
    }

    /// Starts a plan: answered from the tree if it changes nothing, else
    /// past the quorum gate to this mode's replicator.
    pub(crate) fn start(
        &mut self,
        unique: u64,
        plan: Plan<'_>,
        request: &[u8],
    ) -> Result<(), FsError> {
        if plan.ops.is_empty() {
            // Nothing to change (an open of an existing file through
            // CREATE, a chmod to the mode it has): answered from the tree
            // as it is.
            let answer = self.build_reply(unique, Outcome::default(), plan.reply);
            self.replies.push(answer);
            return Ok(());
        }
        self.quorum.check()?;
        match self.backend {
            Backend::Local(_) => self.apply_local(unique, plan),
            Backend::Cluster(_) => self.propose(unique, plan, request),
        }
    }

    /// Local mode: every op of the plan applied at once (stopping at the
    /// first refusal), a journal commit after each, the reply.
    fn apply_local(&mut self, unique: u64, plan: Plan<'_>) -> Result<(), FsError> {
        let Backend::Local(local) = &mut self.backend else {
            return Err(FsError::Io);
        };
        local.writable()?;
        let origin = Origin {
            writer: 0,
            mtime: now_secs(),
        };
        let mut outcome = Outcome::default();
        for (index, op) in plan.ops.iter().enumerate() {
            let proof = self.quorum.check()?;
            let Backend::Local(local) = &mut self.backend else {
                return Err(FsError::Io);
            };
            let count = index as u64 + 1;
            let mut op = op.as_op();
            // An unlock's delete is a change the kernel did not ask for (it
            // asked for a utime): invalidated like another node's.
            let mut unlocked = false;
            if let (Op::Mtime { path, .. }, Some(checksum)) = (op, plan.unlock) {
                // This node decides alone (spec filesystem.md §8): an
                // expired lock is removed instead.
                let (session, permit) = local.dcdb.parts();
                if session.writer(permit).lock_expired(path, checksum) {
                    tracing::info!(path = %String::from_utf8_lossy(path), "removed expired lock");
                    op = Op::Delete { path };
                    unlocked = true;
                }
            }
            let proposal = Proposal::new(op, proof);
            let result = match local
                .dcdb
                .apply_op(proposal.op(), origin, LOCAL_SENDER, count)
            {
                Ok(result) => result,
                Err(error) => {
                    tracing::error!(%error, "the store failed to apply a change");
                    -error.errno()
                }
            };
            // Each op is durable on its own, as each was a request of its
            // own for the C daemon: an op of a plan that failed later stays
            // (and is visible) only once it is in the journal.
            let committed = local.dcdb.parts().0.commit();
            let changes = local.dcdb.drain_changed();
            if let Err(error) = committed {
                // Not durable: the store took it back out of view (or
                // refuses everything); the kernel is told it failed.
                tracing::error!(%error, "the journal failed to take a change");
                return Err(FsError::Store(error));
            }
            // Only a change the kernel asked for and is told succeeded is
            // known to it (a failed rename may have removed its target).
            let known = result >= 0 && !unlocked;
            self.absorb_changes(changes, |_| known);
            outcome.record(result);
            if outcome.error != 0 {
                break;
            }
        }
        let answer = self.build_reply(unique, outcome, plan.reply);
        self.replies.push(answer);
        Ok(())
    }

    /// The paths changes touched (in apply order): their `.version`
    /// counters, the open files they removed, and the kernel's cache of
    /// them unless `known` says the kernel made the change itself and was
    /// told it succeeded.
    pub(crate) fn absorb_changes(&mut self, changes: Vec<Change>, known: impl Fn(&Change) -> bool) {
        for change in changes {
            if let (Some(removed), Some(inode)) = (&change.removed, change.inode_before) {
                self.keep_removed(inode + 1, &change.path, removed.clone());
            }
            let path = &change.path;
            if change.counted {
                self.status.record_change(path);
            }
            self.note_corosync_conf(&change);
            if known(&change) {
                continue;
            }
            // What the path named before the change (it may live elsewhere
            // now, e.g. renamed away in the same batch) and what it names
            // now.
            if let Some(dir) = change.parent_before {
                let name = path.rsplit(|byte| *byte == b'/').next().unwrap_or(path);
                self.invalidations.push(Invalidation::Entry {
                    parent: dir + 1,
                    name: name.to_vec(),
                });
                self.invalidations
                    .push(Invalidation::Inode { node_id: dir + 1 });
            }
            if let Some(inode) = change.inode_before {
                self.invalidations
                    .push(Invalidation::Inode { node_id: inode + 1 });
            }
            self.invalidate_path(path);
        }
    }

    /// Tree node (not special, not an orphan) or pass to the server.
    fn tree_node(&self, node_id: u64) -> bool {
        special_by_id(node_id).is_none() && !self.orphans.contains_key(&node_id)
    }

    fn plan_write<'r>(
        &mut self,
        node_id: u64,
        request: &'r [u8],
        body: usize,
    ) -> Result<Option<Plan<'r>>, FsError> {
        if !self.tree_node(node_id) {
            return Ok(None);
        }
        let write = read_at::<WriteIn>(request, body).ok_or(FsError::Invalid)?;
        let start = body + size_of::<WriteIn>();
        let data = request
            .get(start..start + write.size as usize)
            .ok_or(FsError::Invalid)?;
        let path = self.path_of(node_id).map_err(FsError::from)?;
        if write.offset.saturating_add(data.len() as u64) > pmxcfs_store::MAX_FILE_SIZE as u64 {
            return Err(FsError::TooBig);
        }
        Ok(Some(Plan {
            ops: vec![PlanOp::Write(
                path,
                write.offset,
                Cow::Borrowed(data),
                false,
            )],
            unlock: None,
            reply: ReplyKind::Write { node_id },
        }))
    }

    fn plan_setattr<'r>(
        &mut self,
        node_id: u64,
        request: &'r [u8],
        body: usize,
    ) -> Result<Option<Plan<'r>>, FsError> {
        let attr = read_at::<SetattrIn>(request, body).ok_or(FsError::Invalid)?;
        if !self.tree_node(node_id) {
            return Ok(None);
        }
        let path = self.path_of(node_id).map_err(FsError::from)?;
        let set = |flag: u32| attr.valid & flag != 0;
        let request = SetattrRequest {
            mode: set(FATTR_MODE).then_some(attr.mode),
            uid: set(FATTR_UID).then_some(attr.uid),
            gid: set(FATTR_GID).then_some(attr.gid),
            size: set(FATTR_SIZE).then_some(attr.size),
            mtime: if set(FATTR_MTIME_NOW) {
                Some(MtimeRequest::Now)
            } else if set(FATTR_MTIME) {
                // The kernel's time_t, passed as its 64 bits.
                Some(MtimeRequest::Seconds(attr.mtime as i64))
            } else {
                None
            },
        };
        let www_data_gid = self.config.www_data_gid;
        let quorate = self.quorum.is_quorate();
        let changes = rules::setattr_changes(&path, &request, www_data_gid, now_secs, || {
            // Without quorum the request could not be sent anyway.
            if !quorate {
                return None;
            }
            self.lock_checksum(&path)
        })?;
        let mut ops = Vec::new();
        if let Some(size) = changes.size {
            ops.push(PlanOp::Write(path.clone(), size, Cow::Borrowed(&[]), true));
        }
        if let Some(mtime) = changes.mtime {
            ops.push(PlanOp::Mtime(path, mtime));
        }
        Ok(Some(Plan {
            ops,
            unlock: changes.unlock,
            reply: ReplyKind::Attr { node_id },
        }))
    }

    fn child(&self, parent: u64, name: &[u8]) -> Result<Vec<u8>, FsError> {
        self.refuse_special(parent, name).map_err(FsError::from)?;
        self.child_path(parent, name).map_err(FsError::from)
    }

    fn plan_create<'r>(
        &mut self,
        parent: u64,
        request: &'r [u8],
        body: usize,
        open: bool,
    ) -> Result<Option<Plan<'r>>, FsError> {
        let name_at_offset = if open {
            body + size_of::<CreateIn>()
        } else {
            let mknod = read_at::<MknodIn>(request, body).ok_or(FsError::Invalid)?;
            rules::mknod_allowed(mknod.mode)?;
            body + size_of::<MknodIn>()
        };
        let (name, _) = name_at(request, name_at_offset).ok_or(FsError::Invalid)?;
        let path = self.child(parent, name)?;
        if open {
            let create = read_at::<CreateIn>(request, body).ok_or(FsError::Invalid)?;
            let flags = create.flags as i32;
            // The kernel sends CREATE when its dentry says "no such file"; a
            // change from another node (or a resync) may have created it
            // since. Without O_EXCL that is an open of the existing file
            // (truncated for O_TRUNC), not EEXIST (C answers EEXIST).
            if flags & libc::O_EXCL == 0
                && let Some(entry) = self.reader().resolve(&path).ok().flatten()
            {
                if entry.meta.kind != pmxcfs_store::Kind::File {
                    return Err(FsError::IsDirectory);
                }
                let name = name.to_vec();
                let ops = if flags & libc::O_TRUNC != 0 {
                    vec![PlanOp::Write(path, 0, Cow::Borrowed(&[]), true)]
                } else {
                    Vec::new()
                };
                return Ok(Some(Plan {
                    ops,
                    unlock: None,
                    reply: ReplyKind::Create { parent, name },
                }));
            }
        }
        let name = name.to_vec();
        Ok(Some(Plan {
            ops: vec![PlanOp::Create(path)],
            unlock: None,
            reply: if open {
                ReplyKind::Create { parent, name }
            } else {
                ReplyKind::Entry { parent, name }
            },
        }))
    }

    fn plan_mkdir<'r>(
        &mut self,
        parent: u64,
        request: &'r [u8],
        body: usize,
    ) -> Result<Option<Plan<'r>>, FsError> {
        let (name, _) = name_at(request, body + size_of::<MkdirIn>()).ok_or(FsError::Invalid)?;
        let path = self.child(parent, name)?;
        Ok(Some(Plan {
            ops: vec![PlanOp::Mkdir(path)],
            unlock: None,
            reply: ReplyKind::Entry {
                parent,
                name: name.to_vec(),
            },
        }))
    }

    fn plan_delete<'r>(
        &mut self,
        parent: u64,
        request: &'r [u8],
        body: usize,
    ) -> Result<Option<Plan<'r>>, FsError> {
        let (name, _) = name_at(request, body).ok_or(FsError::Invalid)?;
        let path = self.child(parent, name)?;
        Ok(Some(Plan {
            ops: vec![PlanOp::Delete(path)],
            unlock: None,
            reply: ReplyKind::Empty,
        }))
    }

    fn plan_rename<'r>(
        &mut self,
        olddir: u64,
        request: &'r [u8],
        body: usize,
        rename2: bool,
    ) -> Result<Option<Plan<'r>>, FsError> {
        let (newdir, names) = if rename2 {
            let rename = read_at::<Rename2In>(request, body).ok_or(FsError::Invalid)?;
            rules::rename_flags_allowed(rename.flags)?;
            (rename.newdir, body + size_of::<Rename2In>())
        } else {
            let rename = read_at::<RenameIn>(request, body).ok_or(FsError::Invalid)?;
            (rename.newdir, body + size_of::<RenameIn>())
        };
        let (oldname, next) = name_at(request, names).ok_or(FsError::Invalid)?;
        let (newname, _) = name_at(request, next).ok_or(FsError::Invalid)?;
        let from = self.child(olddir, oldname)?;
        let to = self.child(newdir, newname)?;
        Ok(Some(Plan {
            ops: vec![PlanOp::Rename(from, to.clone())],
            unlock: None,
            reply: ReplyKind::Renamed {
                newdir,
                newname: newname.to_vec(),
                to,
            },
        }))
    }

    /// A file open on this node that a change removed (an unlink or a
    /// rename over it, here or on another node): its handles keep reading
    /// and stat'ing the copy taken before the change, as the C daemon's do
    /// (libfuse's hidden files), instead of failing with ESTALE.
    pub(crate) fn keep_removed(&mut self, node_id: u64, path: &[u8], removed: RemovedFile) {
        if !self.open_counts.contains_key(&node_id) || self.orphans.contains_key(&node_id) {
            return;
        }
        let entry = EntryRef {
            meta: removed.meta,
            flags: 0,
            name: &removed.name,
            data: &removed.data,
        };
        let stat = self.orphan_stat(&entry, path);
        self.keep_orphan(
            node_id,
            Orphan {
                stat,
                data: removed.data,
            },
        );
    }

    /// The reply to request `unique` once its changes are applied.
    pub(crate) fn build_reply(
        &mut self,
        unique: u64,
        outcome: Outcome,
        kind: ReplyKind,
    ) -> Vec<u8> {
        if outcome.error != 0 {
            if let ReplyKind::Write { node_id } | ReplyKind::Attr { node_id } = kind {
                // The kernel may have cached what it tried to write.
                self.invalidations.push(Invalidation::Inode { node_id });
            }
            return reply_error(unique, outcome.error);
        }
        let answer = match kind {
            ReplyKind::Write { .. } => {
                let out = WriteOut {
                    size: outcome.value.max(0) as u32,
                    padding: 0,
                };
                Ok(reply(unique, &[bytemuck::bytes_of(&out)]))
            }
            ReplyKind::Entry { parent, name } => self.lookup(parent, &name).map(|entry| {
                let out = EntryOut::new(
                    entry.inode,
                    &entry.attr,
                    entry.entry_timeout,
                    entry.attr_timeout,
                );
                reply(unique, &[bytemuck::bytes_of(&out)])
            }),
            ReplyKind::Create { parent, name } => self.lookup(parent, &name).map(|entry| {
                self.opened(entry.inode);
                let out = EntryOut::new(
                    entry.inode,
                    &entry.attr,
                    entry.entry_timeout,
                    entry.attr_timeout,
                );
                let open = OpenOut {
                    fh: 0,
                    open_flags: FOPEN_KEEP_CACHE,
                    padding: 0,
                };
                reply(
                    unique,
                    &[bytemuck::bytes_of(&out), bytemuck::bytes_of(&open)],
                )
            }),
            ReplyKind::Renamed {
                newdir,
                newname,
                to,
            } => {
                // Keep the dentry known under the name the kernel now has
                // (a resync must find it).
                if let Ok(Some(moved)) = self.reader().resolve(&to) {
                    self.remember(newdir, &newname, moved.meta.inode + 1);
                }
                Ok(reply(unique, &[]))
            }
            ReplyKind::Empty => Ok(reply(unique, &[])),
            ReplyKind::Attr { node_id } => self.getattr(node_id).map(|(stat, ttl)| {
                let out = AttrOut {
                    attr_valid: ttl.as_secs(),
                    attr_valid_nsec: ttl.subsec_nanos(),
                    dummy: 0,
                    attr: Attr::from_stat(&stat),
                };
                reply(unique, &[bytemuck::bytes_of(&out)])
            }),
        };
        answer.unwrap_or_else(|error| reply_error(unique, FsError::from(error).errno()))
    }
}

/// The taken requests' replies (both modes).
impl PmxFs {
    /// A mutating request: taken (answered, parked or refused; see
    /// [`PmxFs::take_replies`]) or `false` for the normal server path.
    pub fn intercept(&self, request: &[u8]) -> bool {
        self.core().intercept(request, None)
    }

    /// [`PmxFs::intercept`] for a request of io_uring queue `qid`: its
    /// reply comes from [`PmxFs::take_uring_replies`].
    pub(crate) fn intercept_from_queue(&self, request: &[u8], qid: u16) -> bool {
        self.core().intercept(request, Some(qid))
    }

    /// Replies to write to /dev/fuse (answers of taken requests that came
    /// through /dev/fuse).
    pub fn take_replies(&self) -> Vec<Vec<u8>> {
        let mut core = self.core();
        let replies = &mut core.replies;
        if replies.uring_origin.is_empty() {
            return std::mem::take(&mut replies.ready);
        }
        let (queued, dev): (Vec<Vec<u8>>, Vec<Vec<u8>>) = std::mem::take(&mut replies.ready)
            .into_iter()
            .partition(|reply| replies.uring_origin.contains_key(&reply_unique(reply)));
        replies.ready = queued;
        dev
    }

    /// The io_uring queues that have replies waiting.
    pub(crate) fn queues_with_replies(&self) -> Vec<u16> {
        let core = self.core();
        let replies = &core.replies;
        if replies.uring_origin.is_empty() {
            return Vec::new();
        }
        let mut qids: Vec<u16> = replies
            .ready
            .iter()
            .filter_map(|reply| replies.uring_origin.get(&reply_unique(reply)).copied())
            .collect();
        qids.sort_unstable();
        qids.dedup();
        qids
    }

    /// The replies for requests queue `qid` took, with their unique.
    pub(crate) fn take_uring_replies(&self, qid: u16) -> Vec<(u64, Vec<u8>)> {
        let mut core = self.core();
        let replies = &mut core.replies;
        let mut mine = Vec::new();
        let mut rest = Vec::new();
        for reply in std::mem::take(&mut replies.ready) {
            let unique = reply_unique(&reply);
            if replies.uring_origin.get(&unique) == Some(&qid) {
                replies.uring_origin.remove(&unique);
                mine.push((unique, reply));
            } else {
                rest.push(reply);
            }
        }
        replies.ready = rest;
        mine
    }
}
