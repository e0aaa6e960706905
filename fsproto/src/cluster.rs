//! Cluster mode of the file system: mutating FUSE requests become DCDB
//! messages, are parked, and are answered when the DFSM reports their
//! result (after CPG delivered and every node applied them in the same
//! order). Other requests are served meanwhile; several writes may be in
//! flight. Changes made by other nodes invalidate the kernel's caches.
//!
//! The DFSMs and the DCDB application (which owns the store session) are
//! held in `replicator.rs` and driven here; the daemon feeds CPG events in
//! ([`Replication::cpg_deliver`], ...) and multicasts what
//! [`Replication::take_outgoing`] returns. This module knows no corosync handle
//! and no file descriptor.

use pmxcfs_cpg::dcdb::Dcdb;
use pmxcfs_cpg::dfsm::{Action, Dfsm, MemberId, Message, Votes, WriteGate};
use pmxcfs_cpg::frame;
use pmxcfs_cpg::kvstore::Kvstore;
use pmxcfs_cpg::wire::{DcdbType, UnlockPayload};

use crate::clock::now_secs;
use crate::core::Core;
use crate::error::FsError;
use crate::fs::PmxFs;
use crate::plan::{Outcome, Plan, PlanOp};
use crate::quorum::Proposal;
use crate::replicator::{
    Backend, Cluster, DELIVERIES_PER_COMMIT, Group, KNOWN_MAX, MAX_HELD_STATUS, MAX_SEND_BACKLOG,
    MAX_WAITING, Parked, WAIT_FOR_GATE, Waiting,
};
use crate::wire::*;

impl Core {
    /// Other nodes' kvstore tables (cluster mode).
    pub(crate) fn kv_remote(
        &self,
    ) -> Option<&std::collections::BTreeMap<u32, pmxcfs_cpg::kvstore::KvTable>> {
        match &self.backend {
            Backend::Cluster(cluster) => Some(cluster.kv.app().remote()),
            Backend::Local { .. } => None,
        }
    }

    /// One line an admin can grep for each change of the tree group's
    /// members (with node names) and of its sync state (with the leader).
    pub(crate) fn log_cluster_changes(&mut self) {
        let Backend::Cluster(cluster) = &mut self.backend else {
            return;
        };
        let status = &self.status;
        let mut members: Vec<u32> = cluster.dfsm.members().map(|(id, _)| id.node_id).collect();
        members.sort_unstable();
        members.dedup();
        if members != cluster.logged_members {
            let names = |ids: &mut dyn Iterator<Item = &u32>| {
                ids.map(|id| status.node_name(*id))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let joined = names(
                &mut members
                    .iter()
                    .filter(|id| !cluster.logged_members.contains(id)),
            );
            let left = names(
                &mut cluster
                    .logged_members
                    .iter()
                    .filter(|id| !members.contains(id)),
            );
            tracing::info!(
                "cluster members: {} (joined: {}; left: {})",
                names(&mut members.iter()),
                if joined.is_empty() { "-" } else { &joined },
                if left.is_empty() { "-" } else { &left }
            );
            cluster.logged_members = members;
        }
        let synced = cluster.synced();
        if synced != cluster.logged_synced {
            if synced {
                tracing::info!(
                    "tree in sync with the cluster (leader {})",
                    status.node_name(cluster.dfsm.lowest_node_id())
                );
            } else {
                tracing::info!("tree syncing with the cluster");
            }
            cluster.logged_synced = synced;
        }
    }

    /// This node's status tables: the kvstore's in cluster mode.
    pub(crate) fn tables(&self) -> &pmxcfs_cpg::status::StatusTables {
        match &self.backend {
            Backend::Cluster(cluster) => cluster.kv.app().tables(),
            Backend::Local { .. } => &self.status.tables,
        }
    }

    pub(crate) fn tables_mut(&mut self) -> &mut pmxcfs_cpg::status::StatusTables {
        match &mut self.backend {
            Backend::Cluster(cluster) => cluster.kv.app_mut().tables_mut(),
            Backend::Local { .. } => &mut self.status.tables,
        }
    }

    /// `.version` with the local and (cluster mode) remote kv tables.
    pub(crate) fn version_text(&self) -> String {
        let vmlist = self.session().vmlist();
        match self.kv_remote() {
            Some(remote) => self
                .status
                .version_text_with(vmlist, self.tables().local(), remote),
            None => self.status.version_text(vmlist),
        }
    }

    /// Multicasts a kvstore message (cluster mode; nothing in local mode),
    /// without waiting for it (C: `dfsm_send_message`).
    pub(crate) fn send_kvstore(&mut self, kind: pmxcfs_cpg::wire::KvstoreType, payload: Vec<u8>) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if cluster.backlogged() {
            match kind {
                pmxcfs_cpg::wire::KvstoreType::Update => {
                    let key = pmxcfs_cpg::wire::KvUpdate::decode(&payload)
                        .ok()
                        .map(|update| update.key.to_vec());
                    match key {
                        Some(key)
                            if cluster.held_status.len() < MAX_HELD_STATUS
                                || cluster.held_status.contains_key(&key) =>
                        {
                            cluster.held_status.insert(key, payload);
                        }
                        _ => tracing::warn!("status update dropped: the send backlog is full"),
                    }
                }
                _ => {
                    if cluster.dropped_log == 0 {
                        tracing::warn!(
                            "cluster log message not multicast: the send backlog is full (the others get it with the next sync)"
                        );
                    }
                    cluster.dropped_log += 1;
                }
            }
            return;
        }
        if let Err(error) = cluster
            .kv
            .send_normal_async(kind as u16, payload, now_secs())
        {
            tracing::debug!(%error, "kvstore message not sent");
        }
        self.pump();
    }

    /// The cluster log: the kvstore's in cluster mode.
    pub(crate) fn cluster_log(&self) -> &pmxcfs_cpg::kvstore::ClusterLog {
        match &self.backend {
            Backend::Cluster(cluster) => cluster.kv.app().log(),
            Backend::Local { .. } => self.status.log(),
        }
    }

    pub(crate) fn cluster_log_mut(&mut self) -> &mut pmxcfs_cpg::kvstore::ClusterLog {
        match &mut self.backend {
            Backend::Cluster(cluster) => cluster.kv.app_mut().log_mut(),
            Backend::Local { .. } => self.status.log_mut(),
        }
    }

    /// `.clusterlog` in cluster mode (the kvstore's merged log).
    pub(crate) fn cluster_log_text(&self) -> Option<String> {
        match &self.backend {
            Backend::Cluster(cluster) => Some(crate::status::Status::clusterlog_text_of(
                cluster.kv.app().log(),
            )),
            Backend::Local { .. } => None,
        }
    }

    fn cluster(&mut self) -> Option<&mut Cluster> {
        match &mut self.backend {
            Backend::Cluster(cluster) => Some(cluster),
            Backend::Local { .. } => None,
        }
    }

    /// A change of corosync.conf is copied to /etc/corosync by the daemon
    /// (cluster mode).
    pub(crate) fn note_corosync_conf(&mut self, change: &pmxcfs_cpg::dcdb::Change) {
        let relative = change.path.strip_prefix(b"/").unwrap_or(&change.path);
        if relative != b"corosync.conf" {
            return;
        }
        if let Some(cluster) = self.cluster() {
            let own = change.sender == cluster.dfsm.local();
            cluster.corosync_conf = Some(cluster.corosync_conf.unwrap_or(false) || own);
        }
    }

    /// A file became open on this node, or no longer is: deletes and
    /// renames over it (this node's or another's) keep a copy for its
    /// handles.
    pub(crate) fn watch_open(&mut self, node_id: u64, open: bool) {
        if let Some(inode) = node_id.checked_sub(1) {
            self.dcdb_mut().watch(inode, open);
        }
    }

    /// The DCDB application, which applies every change: local mode's, or
    /// the tree group's.
    pub(crate) fn dcdb_mut(&mut self) -> &mut Dcdb<'static, 'static> {
        match &mut self.backend {
            Backend::Local(local) => &mut local.dcdb,
            Backend::Cluster(cluster) => cluster.dfsm.app_mut(),
        }
    }

    /// Remembers a dentry handed to the kernel (cluster mode only).
    pub(crate) fn remember(&mut self, parent: u64, name: &[u8], node_id: u64) {
        if let Some(cluster) = self.cluster() {
            if cluster.known.len() >= KNOWN_MAX {
                cluster.known.clear();
            }
            cluster.known.insert(node_id, (parent, name.to_vec()));
        }
    }

    /// Cluster mode's replicator: the plan's messages are sent once the
    /// write gate is open (the request waits for it, within bounds), and the
    /// request is parked until their results arrive.
    pub(crate) fn propose(
        &mut self,
        unique: u64,
        plan: Plan<'_>,
        request: &[u8],
    ) -> Result<(), FsError> {
        if let Some(code) = self.session().poison_errno() {
            // This node's disk failed a write (full?): it takes no writes
            // until the store recovers (at the group's rejoin).
            return Err(FsError::from_errno(code));
        }
        let Some(cluster) = self.cluster() else {
            return Err(FsError::Io);
        };
        let gate = cluster.dfsm.write_gate();
        if gate != WriteGate::Open || !cluster.waiting.is_empty() || cluster.backlogged() {
            if gate == WriteGate::Error {
                return Err(FsError::Denied);
            }
            if cluster.waiting.len() >= MAX_WAITING {
                tracing::warn!(
                    "{MAX_WAITING} writes already wait for the cluster group; refusing with EAGAIN"
                );
                return Err(FsError::Again);
            }
            cluster.waiting.push_back(Waiting {
                unique,
                request: request.to_vec(),
                deadline: std::time::Instant::now() + WAIT_FOR_GATE,
            });
            return Ok(());
        }
        self.send_plan(unique, plan)
    }

    /// A waiting request, now that the gate is open: planned again against
    /// the current tree, then sent (or answered).
    fn resume(&mut self, waiting: Waiting) {
        let unique = waiting.unique;
        if let Some(code) = self.session().poison_errno() {
            // As at the first try (`propose`): this node's disk failed.
            return self.reply_now(unique, FsError::from_errno(code));
        }
        let Some(header) = read_at::<InHeader>(&waiting.request, 0) else {
            return self.reply_now(unique, FsError::Io);
        };
        match self.plan(&header, &waiting.request) {
            Some(Ok(Some(plan))) if plan.ops.is_empty() => {
                // Answered from the tree (`start` does that before any gate).
                if let Err(code) = self.start(unique, plan, &waiting.request) {
                    self.reply_now(unique, code);
                }
            }
            Some(Ok(Some(plan))) => {
                if let Err(code) = self.send_plan(unique, plan) {
                    self.reply_now(unique, code);
                }
            }
            Some(Ok(None)) | None => self.reply_now(unique, FsError::Io),
            Some(Err(code)) => self.reply_now(unique, code),
        }
    }

    /// Sends a plan whose request passed the write gate and parks it until
    /// the results arrive.
    fn send_plan(&mut self, unique: u64, plan: Plan<'_>) -> Result<(), FsError> {
        // An unlock request (spec filesystem.md §8) goes first, without a
        // result (C: async); the lowest node decides, and the MTIME that
        // follows is refused (EACCES).
        let unlock_request = plan.unlock.and_then(|checksum| {
            let path = plan.ops.iter().find_map(|op| match op {
                PlanOp::Mtime(path, _) => Some(path),
                _ => None,
            })?;
            let mut payload = Vec::new();
            (UnlockPayload { checksum, path })
                .encode(&mut payload)
                .ok()
                .map(|()| payload)
        });
        if let Some(payload) = unlock_request
            && let Some(cluster) = self.cluster()
        {
            let _ =
                cluster
                    .dfsm
                    .send_normal_async(DcdbType::UnlockRequest as u16, payload, now_secs());
        }
        // One message at a time: the next op is sent once the previous one
        // succeeded (`finish`), so that a request stops at its first
        // failure in both modes, as C's did (libfuse ran a SETATTR's
        // truncate and utimens one after the other).
        let mut ops = plan.ops.into_iter();
        let Some(first) = ops.next() else {
            return Err(FsError::Io);
        };
        // What waits for the first op's result outlives the request.
        let ops: std::collections::VecDeque<PlanOp<'static>> =
            ops.map(PlanOp::into_owned).collect();
        let count = match self.send_op(&first) {
            Ok(count) => count,
            Err(code) => {
                self.pump();
                return Err(code);
            }
        };
        let Some(cluster) = self.cluster() else {
            return Err(FsError::Io);
        };
        cluster.by_count.insert(count, unique);
        cluster.parked.insert(
            unique,
            Parked {
                outcome: Outcome::default(),
                reply: plan.reply,
                rest: ops,
            },
        );
        self.pump();
        Ok(())
    }

    /// Multicasts one op of a plan, past the quorum gate: its count.
    fn send_op(&mut self, op: &PlanOp<'_>) -> Result<u64, FsError> {
        let proof = self.quorum.check()?;
        let proposal = Proposal::new(op.as_op(), proof);
        let Some(cluster) = self.cluster() else {
            return Err(FsError::Io);
        };
        cluster.send(proposal)
    }

    /// One message's result arrived.
    fn finish(&mut self, count: u64, result: i32) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let Some(unique) = cluster.by_count.remove(&count) else {
            return;
        };
        if result >= 0 {
            cluster.answered_ok.insert(count);
        }
        let Some(parked) = cluster.parked.get_mut(&unique) else {
            return;
        };
        parked.outcome.record(result);
        if parked.outcome.error == 0
            && let Some(next) = parked.rest.pop_front()
        {
            // The next op passes the write gate too: while the group syncs
            // or holds no majority it is refused (EACCES), as a request of
            // its own would be after the wait.
            let gate = cluster.dfsm.write_gate();
            let sent = if gate == WriteGate::Open {
                self.send_op(&next)
            } else {
                tracing::info!(
                    ?gate,
                    "the rest of a request refused: cluster writes closed"
                );
                Err(FsError::Denied)
            };
            match sent {
                Ok(count) => {
                    if let Some(cluster) = self.cluster() {
                        cluster.by_count.insert(count, unique);
                    }
                    return;
                }
                Err(code) => {
                    if let Some(parked) = self
                        .cluster()
                        .and_then(|cluster| cluster.parked.get_mut(&unique))
                    {
                        parked.outcome.record(-code.errno());
                    }
                }
            }
        }
        let Some(cluster) = self.cluster() else {
            return;
        };
        let Some(parked) = cluster.parked.remove(&unique) else {
            return;
        };
        let reply = self.build_reply(unique, parked.outcome, parked.reply);
        self.replies.push(reply);
    }

    /// Sends the waiting requests, oldest first, while the write gate is
    /// open; answers those past their deadline (or all, without quorum)
    /// with EACCES.
    pub(crate) fn retry_waiting(&mut self, now: std::time::Instant) {
        let quorate = self.quorum.is_quorate();
        let Some(cluster) = self.cluster() else {
            return;
        };
        if cluster.retrying {
            return;
        }
        let gate = cluster.dfsm.write_gate();
        if cluster.logged_gate != Some(gate) {
            if gate != WriteGate::Open || cluster.logged_gate.is_some() {
                let why = match gate {
                    WriteGate::Open => "open",
                    WriteGate::Syncing => "closed while the group synchronises",
                    WriteGate::NoMajority => {
                        "closed: the pmxcfs group holds no majority of the configured votes"
                    }
                    WriteGate::Error => "closed: the group is in an error mode",
                };
                tracing::info!("cluster writes {why}");
            }
            cluster.logged_gate = Some(gate);
        }
        cluster.retrying = true;
        loop {
            let Some(cluster) = self.cluster() else {
                return;
            };
            let open =
                quorate && cluster.dfsm.write_gate() == WriteGate::Open && !cluster.backlogged();
            let expired = cluster
                .waiting
                .front()
                .is_some_and(|w| !quorate || w.deadline <= now);
            if !open && !expired {
                break;
            }
            let Some(waiting) = cluster.waiting.pop_front() else {
                break;
            };
            if open {
                self.resume(waiting);
            } else {
                if quorate {
                    tracing::warn!(
                        "a write waited {} s for the cluster group; refusing with EACCES",
                        WAIT_FOR_GATE.as_secs()
                    );
                }
                self.reply_now(waiting.unique, FsError::Denied);
            }
        }
        if let Some(cluster) = self.cluster() {
            cluster.retrying = false;
        }
    }

    /// Processes the DFSM's actions and the application's changes.
    pub(crate) fn pump(&mut self) {
        loop {
            let Some(cluster) = self.cluster() else {
                return;
            };
            let Some(action) = cluster.dfsm.poll_action() else {
                break;
            };
            match action {
                Action::Multicast(msg) => cluster.outgoing.push((Group::Dcdb, msg)),
                Action::Leave => cluster.leave[Group::Dcdb.index()] = true,
                Action::Result { count, result } => self.finish(count, result),
                Action::ModeChanged(mode) => tracing::debug!(?mode, "dcdb mode changed"),
            }
        }
        let Some(cluster) = self.cluster() else {
            return;
        };
        while let Some(action) = cluster.kv.poll_action() {
            match action {
                Action::Multicast(msg) => cluster.outgoing.push((Group::Kvstore, msg)),
                Action::Leave => cluster.leave[Group::Kvstore.index()] = true,
                Action::Result { .. } => {}
                Action::ModeChanged(mode) => tracing::debug!(?mode, "kvstore mode changed"),
            }
        }
        let online = cluster.kv.app_mut().take_online();
        let ips = cluster.kv.app().ips().clone();
        if let Some(online) = online {
            self.status.set_online(&online);
        }
        self.status.set_ips(&ips);
        let Some(cluster) = self.cluster() else {
            return;
        };
        let local = cluster.dfsm.local();
        let changed = cluster.dfsm.app_mut().drain_changed();
        let resynced = cluster.dfsm.app_mut().take_resynced();
        let answered_ok = std::mem::take(&mut cluster.answered_ok);
        // Only a change this kernel made and was told succeeded is known to
        // it; everything else (other nodes, the UNLOCK of an expired lock,
        // an aborted request applied after all, a failed rename that
        // removed its target) is invalidated.
        self.absorb_changes(changed, |change| {
            change.sender == local && answered_ok.contains(&change.count)
        });
        if resynced {
            self.status.record_reload();
            self.invalidate_known(true);
            if let Some(cluster) = self.cluster() {
                cluster.corosync_conf.get_or_insert(false);
            }
        }
        self.retry_waiting(std::time::Instant::now());
    }

    /// Drops the kernel's view of `path`: its dentry, its data and
    /// attributes, and its directory's listing.
    pub(crate) fn invalidate_path(&mut self, path: &[u8]) {
        let (parent, name) = match path.iter().rposition(|byte| *byte == b'/') {
            Some(slash) => (&path[..slash], &path[slash + 1..]),
            None => (&b""[..], path),
        };
        let reader = self.reader();
        let dir = reader
            .resolve(parent)
            .ok()
            .flatten()
            .map(|e| e.meta.inode + 1);
        let target = reader
            .resolve(path)
            .ok()
            .flatten()
            .map(|e| e.meta.inode + 1);
        if let Some(dir) = dir {
            self.invalidations.push(Invalidation::Entry {
                parent: dir,
                name: name.to_vec(),
            });
            self.invalidations
                .push(Invalidation::Inode { node_id: dir });
        }
        if let Some(node_id) = target {
            self.invalidations.push(Invalidation::Inode { node_id });
        }
    }

    /// Drops everything the kernel may hold: after a resync (`entries`:
    /// node ids may now name other files) or a quorum change (modes).
    fn invalidate_known(&mut self, entries: bool) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let known: Vec<(u64, (u64, Vec<u8>))> = if entries {
            cluster.known.drain().collect()
        } else {
            cluster
                .known
                .iter()
                .map(|(node, (parent, _))| (*node, (*parent, Vec::new())))
                .collect()
        };
        for (node_id, (parent, name)) in known {
            if entries {
                self.invalidations
                    .push(Invalidation::Entry { parent, name });
                self.invalidations.push(Invalidation::Inode { node_id });
            } else {
                self.invalidations
                    .push(Invalidation::Attributes { node_id });
            }
        }
        self.invalidations
            .push(Invalidation::Attributes { node_id: 1 });
    }
}

/// The file system's side for the daemon (both modes; in local mode it
/// only answers for the tree and the mode).
impl PmxFs {
    /// Whether this file system runs in cluster mode.
    pub fn is_cluster(&self) -> bool {
        matches!(self.core().backend, Backend::Cluster(_))
    }

    /// After kernel invalidations were dropped at the notifier's bound:
    /// invalidate every entry handed to the kernel (as after a resync).
    pub(crate) fn invalidate_all_known(&self) {
        self.core().invalidate_known(true);
    }

    /// A file's content from the tree (`None`: missing or a directory).
    pub fn read_tree_file(&self, path: &[u8]) -> Option<Vec<u8>> {
        let core = self.core();
        let reader = core.reader();
        let entry = reader.resolve(path).ok().flatten()?;
        (entry.meta.kind == pmxcfs_store::Kind::File).then(|| entry.data.to_vec())
    }

    /// This node's address for `.members`.
    pub fn set_node_ip(&self, ip: Option<String>) {
        self.core().status.node_ip = ip;
    }

    /// The replication the daemon drives: CPG events in, messages out.
    pub fn replication(&self) -> Replication<'_> {
        Replication { fs: self }
    }
}

/// What the daemon's CPG side drives (cluster mode; no-ops in local mode):
/// the DFSMs of both groups and their outgoing queue (`Cluster` in
/// `replicator.rs`, held with the tree under the file system's one lock:
/// the DCDB application owns the store session the view reads through),
/// fed with CPG events and corosync's quorum, votes and backlog.
pub struct Replication<'a> {
    fs: &'a PmxFs,
}

impl Replication<'_> {
    /// Messages to multicast, in order, with their group and bytes.
    pub fn take_outgoing(&self) -> Vec<(Group, Message, Vec<u8>)> {
        let mut core = self.fs.core();
        let Some(cluster) = core.cluster() else {
            return Vec::new();
        };
        std::mem::take(&mut cluster.outgoing)
            .into_iter()
            .filter_map(|(group, msg)| frame::encode_message(&msg).map(|bytes| (group, msg, bytes)))
            .collect()
    }

    /// Runs `dcdb` or `kv` on the group's DFSM, then processes the results.
    fn with_group(
        &self,
        group: Group,
        dcdb: impl FnOnce(&mut Dfsm<Dcdb<'static, 'static>>),
        kv: impl FnOnce(&mut Dfsm<Kvstore>),
    ) {
        let mut core = self.fs.core();
        if let Some(cluster) = core.cluster() {
            match group {
                Group::Dcdb => dcdb(&mut cluster.dfsm),
                Group::Kvstore => kv(&mut cluster.kv),
            }
            core.pump();
            core.log_cluster_changes();
        }
    }

    /// A multicast failed for good.
    pub fn send_failed(&self, group: Group, msg: &Message) {
        let now = now_secs();
        self.with_group(
            group,
            |dfsm| dfsm.on_send_failed(msg, now),
            |dfsm| dfsm.on_send_failed(msg, now),
        );
    }

    /// The group's CPG connection is up: our member id (before joining).
    pub fn cpg_connected(&self, group: Group, local: MemberId) {
        let set = |ok: bool| {
            if !ok {
                tracing::warn!(?group, "member id set outside mode START");
            }
        };
        self.with_group(
            group,
            |dfsm| set(dfsm.set_local(local)),
            |dfsm| set(dfsm.set_local(local)),
        );
    }

    pub fn cpg_confchg(&self, group: Group, members: &[MemberId], joined: &[MemberId]) {
        let now = now_secs();
        self.with_group(
            group,
            |dfsm| dfsm.on_confchg(members, joined, now),
            |dfsm| dfsm.on_confchg(members, joined, now),
        );
    }

    pub fn cpg_deliver(&self, group: Group, sender: MemberId, bytes: &[u8]) {
        let now = now_secs();
        // One decoded message, moved into whichever group it is for.
        let msg = std::cell::Cell::new(Some(frame::decode_message(bytes)));
        self.with_group(
            group,
            |dfsm| {
                if let Some(msg) = msg.take() {
                    dfsm.on_deliver(sender, msg, now);
                }
            },
            |dfsm| {
                if let Some(msg) = msg.take() {
                    dfsm.on_deliver(sender, msg, now);
                }
            },
        );
    }

    /// The messages one CPG dispatch delivered for `group`, in order:
    /// applied under one hold of the file system's lock with one journal
    /// commit per `DELIVERIES_PER_COMMIT` of them, instead of one each. No
    /// other thread sees a change (nor takes a reply) before its commit; if
    /// the commit fails, the replies of the writes it held become EIO and
    /// the tree group is left (the resync brings back what the group
    /// applied).
    pub fn cpg_deliver_all(&self, group: Group, messages: &[(MemberId, Vec<u8>)]) {
        if group != Group::Dcdb {
            for (sender, bytes) in messages {
                self.cpg_deliver(group, *sender, bytes);
            }
            return;
        }
        for chunk in messages.chunks(DELIVERIES_PER_COMMIT) {
            let mut core = self.fs.core();
            let first_reply = core.replies.ready_count();
            if let Some(cluster) = core.cluster() {
                cluster.dfsm.app_mut().set_deferred_commit(true);
            }
            let now = now_secs();
            for (sender, bytes) in chunk {
                if let Some(cluster) = core.cluster() {
                    cluster
                        .dfsm
                        .on_deliver(*sender, frame::decode_message(bytes), now);
                }
                core.pump();
            }
            let Some(cluster) = core.cluster() else {
                return;
            };
            let dcdb = cluster.dfsm.app_mut();
            dcdb.set_deferred_commit(false);
            if let Err(error) = dcdb.commit_deferred() {
                tracing::error!(%error, "commit of delivered DCDB messages failed - leaving");
                cluster.dfsm.fail_application(pmxcfs_cpg::dfsm::AppError {
                    fatal: false,
                    result: -error.errno(),
                });
                // The kernel is told these writes failed: what their replies
                // set up is taken back (a CREATE's open), and every entry
                // it knows is dropped (the resync at the rejoin replaces
                // the tree anyway).
                for node_id in core.replies.fail_since(first_reply, error.errno()) {
                    core.released(node_id);
                }
                core.invalidate_known(true);
                core.pump();
            }
            core.log_cluster_changes();
        }
    }

    /// The group's CPG connection is gone (or we left): waiting writers
    /// fail, the DFSM starts over. `false` if it cannot restart (ERROR
    /// modes).
    pub fn cpg_restart(&self, group: Group) -> bool {
        let now = now_secs();
        if group == Group::Dcdb {
            self.recover_store();
        }
        let mut restarted = false;
        let mut kv_restarted = false;
        self.with_group(
            group,
            |dfsm| restarted = dfsm.restart(now).is_ok(),
            |dfsm| kv_restarted = dfsm.restart(now).is_ok(),
        );
        restarted || kv_restarted
    }

    /// A store that failed to write (a full disk) is tried again before the
    /// tree group rejoins: recovered, the resync brings what the group
    /// applied meanwhile; still failing, the group rejoins anyway and leaves
    /// again at its first write (every REJOIN_DELAY, until the disk takes
    /// writes).
    fn recover_store(&self) {
        let mut core = self.fs.core();
        let session = core.session_mut();
        if !session.is_poisoned() {
            return;
        }
        if let Err(error) = session.recover() {
            tracing::warn!(%error, "the store still cannot write; this node takes no writes");
        }
    }

    /// The group's DFSM left from SYNCED after a failed multicast (write
    /// safety): leave the CPG group but go on dispatching until the confchg
    /// that removes this member (`Dfsm::leaving_synced`).
    pub fn leaving_synced(&self, group: Group) -> bool {
        let mut core = self.fs.core();
        core.cluster().is_some_and(|cluster| match group {
            Group::Dcdb => cluster.dfsm.leaving_synced(),
            Group::Kvstore => cluster.kv.leaving_synced(),
        })
    }

    /// The group's DFSM asked to leave (not consumed, see `take_leave`).
    pub fn leave_requested(&self, group: Group) -> bool {
        let mut core = self.fs.core();
        core.cluster()
            .is_some_and(|cluster| cluster.leave[group.index()])
    }

    /// The group's DFSM asked to leave (since the last call).
    pub fn take_leave(&self, group: Group) -> bool {
        let mut core = self.fs.core();
        core.cluster()
            .map(|cluster| std::mem::take(&mut cluster.leave[group.index()]))
            .unwrap_or(false)
    }

    /// The hourly verify request (only the lowest node id sends it).
    pub fn request_verify(&self) {
        self.with_group(
            Group::Dcdb,
            |dfsm| {
                dfsm.request_verify(now_secs());
            },
            |_| {},
        );
    }

    /// Quorum from corosync: the gate, the DCDB flag, and the modes the
    /// kernel has cached.
    pub fn set_quorate(&self, quorate: bool) {
        let mut core = self.fs.core();
        if core.cluster().is_none() || core.quorum.is_quorate() == quorate {
            return;
        }
        core.quorum.set_quorate(quorate);
        if let Some(cluster) = core.cluster() {
            cluster.dfsm.app_mut().set_quorate(quorate);
        }
        if quorate {
            tracing::info!("node has quorum");
        } else {
            tracing::info!("node lost quorum");
        }
        core.invalidate_known(false);
        core.retry_waiting(std::time::Instant::now());
    }

    /// Write safety for the tree group (`Dfsm::set_write_safety`): the
    /// configured votes, or `None` for the C rule (quorum only).
    pub fn set_write_votes(&self, votes: Option<Votes>) {
        let mut core = self.fs.core();
        let Some(cluster) = core.cluster() else {
            return;
        };
        if cluster.dfsm.write_safety() == votes.as_ref() {
            return;
        }
        match &votes {
            Some(v) => tracing::info!(
                total = v.total(),
                "cluster writes need a majority of the configured votes in the pmxcfs group"
            ),
            None => tracing::info!(
                "cluster writes follow corosync quorum only (vote helper configured)"
            ),
        }
        cluster.dfsm.set_write_safety(votes);
        core.pump();
    }

    /// Bytes in the daemon's CPG send queues: above the bound new writes
    /// wait and status updates are held; below half of it they go again.
    pub fn set_send_backlog(&self, bytes: usize) {
        let mut core = self.fs.core();
        let Some(cluster) = core.cluster() else {
            return;
        };
        if cluster.send_backlog == bytes {
            return;
        }
        cluster.send_backlog = bytes;
        if cluster.backlog() > MAX_SEND_BACKLOG / 2 {
            return;
        }
        let held = std::mem::take(&mut cluster.held_status);
        if cluster.dropped_log > 0 {
            tracing::info!(
                dropped = cluster.dropped_log,
                "send backlog drained; cluster log messages were not multicast meanwhile"
            );
            cluster.dropped_log = 0;
        }
        for (_, payload) in held {
            core.send_kvstore(pmxcfs_cpg::wire::KvstoreType::Update, payload);
        }
        core.retry_waiting(std::time::Instant::now());
    }

    /// Answers requests that waited too long for the write gate.
    pub fn expire_waiting(&self) {
        self.fs.core().retry_waiting(std::time::Instant::now());
    }

    /// `Some(notify)` once after corosync.conf changed in the tree.
    pub fn take_corosync_conf_change(&self) -> Option<bool> {
        let mut core = self.fs.core();
        core.cluster()
            .and_then(|cluster| cluster.corosync_conf.take())
    }

    /// The cluster membership for `.members` (from cmap and CPG).
    pub fn set_cluster_info(&self, info: Option<crate::status::ClusterInfo>) {
        let mut core = self.fs.core();
        if let Some(cluster) = core.cluster() {
            let ids: Vec<u32> = info
                .iter()
                .flat_map(|info| info.nodes.iter().map(|node| node.node_id))
                .collect();
            cluster.kv.app_mut().set_configured(ids);
        }
        core.status.set_cluster_info(info);
    }

    /// The file contents that keep this node's unconfirmed own writes
    /// across a restart ([`pmxcfs_cpg::kept`]), when they changed since the
    /// last call; `Some(None)`: there are none (remove the file).
    pub fn take_kept_writes(&self) -> Option<Option<Vec<u8>>> {
        let mut core = self.fs.core();
        let cluster = core.cluster()?;
        let writes = cluster.dfsm.take_kept_if_changed(&mut cluster.kept_seen)?;
        if writes.is_empty() {
            return Some(None);
        }
        match pmxcfs_cpg::kept::encode(&writes) {
            Ok(bytes) => Some(Some(bytes)),
            Err(error) => {
                tracing::error!(%error, "cannot encode the unconfirmed own writes");
                None
            }
        }
    }

    /// At start: the unconfirmed own writes kept before the restart (the
    /// file [`Replication::take_kept_writes`] gave); their number.
    pub fn restore_kept_writes(&self, bytes: &[u8]) -> Result<usize, pmxcfs_cpg::wire::WireError> {
        let writes = pmxcfs_cpg::kept::decode(bytes)?;
        let count = writes.len();
        let mut core = self.fs.core();
        if let Some(cluster) = core.cluster() {
            cluster.dfsm.restore_kept(writes);
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::reply_unique;
    use pmxcfs_store::ApplyPermit;
    use pmxcfs_testkit::logged;
    use proptest::prelude::*;

    /// A cluster-mode file system on a temporary store; dropping it closes
    /// the store (its LMDB semaphores leave /dev/shm) and removes the dir.
    struct TestFs {
        fs: Option<PmxFs>,
        store: &'static pmxcfs_store::Store,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for TestFs {
        type Target = PmxFs;
        fn deref(&self) -> &PmxFs {
            self.fs.as_ref().expect("present until drop")
        }
    }

    impl Drop for TestFs {
        fn drop(&mut self) {
            drop(self.fs.take());
            // SAFETY: the file system (and its session) is gone.
            unsafe { pmxcfs_store::Store::reclaim(self.store) };
        }
    }

    fn cluster_fs() -> TestFs {
        cluster_fs_as(1)
    }

    fn config(nodename: &str) -> crate::core::Config {
        crate::core::Config {
            nodename: nodename.into(),
            www_data_gid: 33,
        }
    }

    /// The file system `make` builds on a temporary store.
    fn test_fs(make: impl FnOnce(pmxcfs_store::Session<'static>, ApplyPermit) -> PmxFs) -> TestFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = pmxcfs_store::Store::open(dir.path()).expect("store").leak();
        let (session, permit) = store
            .session(pmxcfs_store::Durability::Relaxed)
            .expect("session");
        TestFs {
            fs: Some(make(session, permit)),
            store,
            _dir: dir,
        }
    }

    /// A cluster-mode file system of node `id` (member `id/id`).
    fn cluster_fs_as(id: u32) -> TestFs {
        let fs = test_fs(|session, permit| {
            PmxFs::new_cluster(session, permit, config(&format!("node{id}")), None)
        });
        fs.replication()
            .cpg_connected(Group::Dcdb, MemberId::new(id, id));
        fs.replication()
            .cpg_connected(Group::Kvstore, MemberId::new(id, id));
        fs.replication().set_quorate(true);
        fs
    }

    const MUTATING: [u32; 9] = [
        FUSE_SETATTR,
        FUSE_MKNOD,
        FUSE_MKDIR,
        FUSE_UNLINK,
        FUSE_RMDIR,
        FUSE_RENAME,
        FUSE_WRITE,
        FUSE_CREATE,
        FUSE_RENAME2,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the kernel's request bytes: no panic, and a taken
        /// request is parked (a message to send) or answered at once.
        #[test]
        fn intercept_never_panics(
            op in 0usize..MUTATING.len(),
            node_id in prop_oneof![Just(1u64), 0u64..8, Just(1u64 << 62), any::<u64>()],
            body in proptest::collection::vec(any::<u8>(), 0..300),
            unique in any::<u64>(),
        ) {
            let fs = cluster_fs();
            let request = raw_request(MUTATING[op], unique, node_id, &body);
            if fs.intercept(&request) {
                let replies = fs.take_replies();
                let outgoing = fs.replication().take_outgoing();
                prop_assert!(replies.len() + outgoing.len() >= 1);
                for reply in replies {
                    prop_assert_eq!(reply_unique(&reply), unique);
                }
            }
        }
    }

    /// A local-mode file system on a temporary store.
    fn local_fs() -> TestFs {
        test_fs(|session, permit| PmxFs::new(session, permit, config("node1")))
    }

    /// One mutating request of the mode comparison, on names of a small
    /// pool (two of them `.version`-tracked) in the root or in `ha/`.
    #[derive(Clone, Debug)]
    enum Step {
        Create(bool, usize, bool),
        Mknod(bool, usize),
        Mkdir(bool, usize),
        Unlink(bool, usize),
        Rmdir(bool, usize),
        Rename(bool, usize, bool, usize),
        Write(bool, usize, u64, Vec<u8>),
        Truncate(bool, usize, u64),
        Mtime(bool, usize, u32),
        /// Size and mtime in one request (two changes).
        TruncateAndMtime(bool, usize, u64, u32),
        Chmod(bool, usize, u32),
    }

    const POOL: [&[u8]; 4] = [b"storage.cfg", b"user.cfg", b"ha", b"x"];

    fn step() -> impl Strategy<Value = Step> {
        let name = 0..POOL.len();
        let place = any::<bool>();
        prop_oneof![
            (place.clone(), name.clone(), any::<bool>())
                .prop_map(|(p, n, e)| Step::Create(p, n, e)),
            (place.clone(), name.clone()).prop_map(|(p, n)| Step::Mknod(p, n)),
            (place.clone(), name.clone()).prop_map(|(p, n)| Step::Mkdir(p, n)),
            (place.clone(), name.clone()).prop_map(|(p, n)| Step::Unlink(p, n)),
            (place.clone(), name.clone()).prop_map(|(p, n)| Step::Rmdir(p, n)),
            (place.clone(), name.clone(), place.clone(), name.clone())
                .prop_map(|(p, n, q, m)| Step::Rename(p, n, q, m)),
            (
                place.clone(),
                name.clone(),
                0u64..40,
                proptest::collection::vec(any::<u8>(), 0..24)
            )
                .prop_map(|(p, n, o, d)| Step::Write(p, n, o, d)),
            (place.clone(), name.clone(), 0u64..40).prop_map(|(p, n, s)| Step::Truncate(p, n, s)),
            (place.clone(), name.clone(), any::<u32>()).prop_map(|(p, n, t)| Step::Mtime(p, n, t)),
            (place.clone(), name.clone(), 0u64..40, any::<u32>())
                .prop_map(|(p, n, s, t)| Step::TruncateAndMtime(p, n, s, t)),
            (
                place,
                name,
                prop_oneof![Just(0o640u32), Just(0o600), Just(0o755)]
            )
                .prop_map(|(p, n, m)| Step::Chmod(p, n, m)),
        ]
    }

    /// Node id of `ha` (or of the root) in `fs`, and of a name under it.
    fn node_of(fs: &TestFs, in_ha: bool, name: Option<&[u8]>) -> u64 {
        let mut core = fs.core();
        let dir = if in_ha {
            core.lookup(1, b"ha")
                .map_or(u64::MAX >> 2, |entry| entry.inode)
        } else {
            1
        };
        match name {
            None => dir,
            Some(name) => core
                .lookup(dir, name)
                .map_or(u64::MAX >> 2, |entry| entry.inode),
        }
    }

    /// The reply's errno to `step` in `fs`.
    fn run_step(fs: &TestFs, step: &Step) -> i32 {
        let name = |n: usize| POOL[n];
        let setattr = |p: bool, n: usize, attr: SetattrIn| {
            let node = node_of(fs, p, Some(name(n)));
            errno_of(&call(fs, FUSE_SETATTR, node, bytemuck::bytes_of(&attr)))
        };
        match step.clone() {
            Step::Create(p, n, excl) => {
                let create = CreateIn {
                    flags: (libc::O_CREAT | libc::O_WRONLY | if excl { libc::O_EXCL } else { 0 })
                        as u32,
                    mode: libc::S_IFREG | 0o644,
                    ..CreateIn::default()
                };
                let dir = node_of(fs, p, None);
                let reply = call(fs, FUSE_CREATE, dir, &with_name(&create, &[name(n)]));
                let errno = errno_of(&reply);
                if errno == 0 {
                    // The handle the create opened.
                    fs.core()
                        .released(read_at::<EntryOut>(&reply, 16).expect("entry").node_id);
                }
                errno
            }
            Step::Mknod(p, n) => {
                let mknod = MknodIn {
                    mode: libc::S_IFREG | 0o644,
                    ..MknodIn::default()
                };
                let dir = node_of(fs, p, None);
                errno_of(&call(fs, FUSE_MKNOD, dir, &with_name(&mknod, &[name(n)])))
            }
            Step::Mkdir(p, n) => {
                let dir = node_of(fs, p, None);
                errno_of(&call(
                    fs,
                    FUSE_MKDIR,
                    dir,
                    &with_name(&MkdirIn::default(), &[name(n)]),
                ))
            }
            Step::Unlink(p, n) | Step::Rmdir(p, n) => {
                let opcode = if matches!(step, Step::Unlink(..)) {
                    FUSE_UNLINK
                } else {
                    FUSE_RMDIR
                };
                let dir = node_of(fs, p, None);
                let mut body = name(n).to_vec();
                body.push(0);
                errno_of(&call(fs, opcode, dir, &body))
            }
            Step::Rename(p, n, q, m) => {
                let (from, to) = (node_of(fs, p, None), node_of(fs, q, None));
                let body = with_name(&RenameIn { newdir: to }, &[name(n), name(m)]);
                errno_of(&call(fs, FUSE_RENAME, from, &body))
            }
            Step::Write(p, n, offset, data) => {
                let node = node_of(fs, p, Some(name(n)));
                errno_of(&call(fs, FUSE_WRITE, node, &write_body(offset, &data)))
            }
            Step::Truncate(p, n, size) => setattr(
                p,
                n,
                SetattrIn {
                    valid: FATTR_SIZE,
                    size,
                    ..SetattrIn::default()
                },
            ),
            Step::Mtime(p, n, mtime) => setattr(
                p,
                n,
                SetattrIn {
                    valid: FATTR_MTIME,
                    mtime: u64::from(mtime),
                    ..SetattrIn::default()
                },
            ),
            Step::TruncateAndMtime(p, n, size, mtime) => setattr(
                p,
                n,
                SetattrIn {
                    valid: FATTR_SIZE | FATTR_MTIME,
                    size,
                    mtime: u64::from(mtime),
                    ..SetattrIn::default()
                },
            ),
            Step::Chmod(p, n, mode) => setattr(
                p,
                n,
                SetattrIn {
                    valid: FATTR_MODE,
                    mode: libc::S_IFREG | mode,
                    ..SetattrIn::default()
                },
            ),
        }
    }

    /// Every entry of the tree: path, kind, data, inode, version, mtime.
    fn tree_of(fs: &TestFs) -> Vec<(Vec<u8>, bool, Vec<u8>, u64, u64, u32)> {
        fn walk(
            reader: &pmxcfs_store::Reader<'_>,
            inode: u64,
            prefix: &[u8],
            out: &mut Vec<(Vec<u8>, bool, Vec<u8>, u64, u64, u32)>,
        ) {
            let mut children = Vec::new();
            reader
                .for_each_child(inode, |child| {
                    let mut path = prefix.to_vec();
                    path.extend_from_slice(child.name);
                    children.push((path, child.meta.kind, child.data.to_vec(), child.meta));
                    true
                })
                .expect("children");
            for (path, kind, data, meta) in children {
                let dir = kind == pmxcfs_store::Kind::Dir;
                out.push((
                    path.clone(),
                    dir,
                    data,
                    meta.inode,
                    meta.version,
                    meta.mtime,
                ));
                if dir {
                    let mut prefix = path;
                    prefix.push(b'/');
                    walk(reader, meta.inode, &prefix, out);
                }
            }
        }
        let core = fs.core();
        let mut out = Vec::new();
        walk(&core.reader(), 0, b"", &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Local mode applies at once what cluster mode applies on
        /// delivery, through the same plan and the same apply: for any
        /// sequence of changes both answer each with the same errno and
        /// end with the same tree and the same `.version` counters.
        #[test]
        fn local_and_cluster_mode_answer_and_change_alike(
            steps in proptest::collection::vec(step(), 1..24),
        ) {
            let local = local_fs();
            let cluster = cluster_fs();
            let me = MemberId::new(1, 1);
            cluster.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
            for (index, step) in steps.iter().enumerate() {
                let (a, b) = (run_step(&local, step), run_step(&cluster, step));
                prop_assert_eq!(a, b, "step {} {:?}", index, step);
            }
            let strip = |tree: Vec<(Vec<u8>, bool, Vec<u8>, u64, u64, u32)>| {
                // The mtime is each mode's clock (a message's time in cluster
                // mode) unless a step set it.
                tree.into_iter()
                    .map(|(path, dir, data, inode, version, _)| (path, dir, data, inode, version))
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(strip(tree_of(&local)), strip(tree_of(&cluster)));
            let counters = |fs: &TestFs| *fs.core().status.counters();
            prop_assert_eq!(counters(&local), counters(&cluster));
        }
    }

    /// The bytes of a FUSE request as the kernel sends it: the in header
    /// (its length included), then `body`.
    fn raw_request(opcode: u32, unique: u64, node_id: u64, body: &[u8]) -> Vec<u8> {
        let header = InHeader {
            len: (size_of::<InHeader>() + body.len()) as u32,
            opcode,
            unique,
            node_id,
            ..InHeader::default()
        };
        let mut request = bytemuck::bytes_of(&header).to_vec();
        request.extend_from_slice(body);
        request
    }

    /// A one-member group: every message the file system multicasts comes
    /// back to it. Sends `body` as request `opcode` on `node_id`, loops the
    /// messages and returns the reply.
    fn call(fs: &TestFs, opcode: u32, node_id: u64, body: &[u8]) -> Vec<u8> {
        try_call(fs, opcode, node_id, body).unwrap_or_else(|| panic!("opcode {opcode} taken"))
    }

    /// [`call`], or `None` if cluster mode does not take the request (it is
    /// served like in local mode).
    fn try_call(fs: &TestFs, opcode: u32, node_id: u64, body: &[u8]) -> Option<Vec<u8>> {
        static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
        let unique = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = raw_request(opcode, unique, node_id, body);
        if !fs.intercept(&request) {
            return None;
        }
        let me = MemberId::new(1, 1);
        loop {
            let outgoing = fs.replication().take_outgoing();
            if outgoing.is_empty() {
                break;
            }
            for (group, _, bytes) in outgoing {
                fs.replication().cpg_deliver(group, me, &bytes);
            }
        }
        let replies = fs.take_replies();
        assert_eq!(replies.len(), 1, "opcode {opcode}: one reply");
        assert_eq!(reply_unique(&replies[0]), unique);
        Some(replies[0].clone())
    }

    /// A WRITE request's body: `data` at `offset`.
    fn write_body(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut body = bytemuck::bytes_of(&WriteIn {
            offset,
            size: data.len() as u32,
            ..WriteIn::default()
        })
        .to_vec();
        body.extend_from_slice(data);
        body
    }

    /// [`call`] for a request that makes an entry: its node id.
    fn created(fs: &TestFs, opcode: u32, parent: u64, body: &[u8]) -> u64 {
        let reply = call(fs, opcode, parent, body);
        assert_eq!(errno_of(&reply), 0, "opcode {opcode}");
        read_at::<EntryOut>(&reply, 16).expect("entry").node_id
    }

    fn errno_of(reply: &[u8]) -> i32 {
        -read_at::<OutHeader>(reply, 0).expect("header").error
    }

    fn with_name<T: bytemuck::Pod>(fixed: &T, names: &[&[u8]]) -> Vec<u8> {
        let mut body = bytemuck::bytes_of(fixed).to_vec();
        for name in names {
            body.extend_from_slice(name);
            body.push(0);
        }
        body
    }

    /// Every mutation of cluster mode travels as a DCDB message and comes
    /// back applied: each field of the message matters (a write's offset
    /// and truncation, a rename's target, an mtime), and the errnos are the
    /// local ones.
    #[test]
    fn every_mutation_round_trips_through_the_group() {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        let mtime_of = |path: &[u8]| {
            let core = fs.core();
            let reader = core.reader();
            reader.resolve(path).expect("read").map(|e| e.meta.mtime)
        };
        // CREATE, then WRITEs at two offsets.
        let reply = call(
            &fs,
            FUSE_CREATE,
            1,
            &with_name(&CreateIn::default(), &[b"a"]),
        );
        assert_eq!(errno_of(&reply), 0);
        let file = read_at::<EntryOut>(&reply, 16).expect("entry").node_id;
        let write = |offset: u64, data: &[u8]| {
            let body = write_body(offset, data);
            let reply = call(&fs, FUSE_WRITE, file, &body);
            assert_eq!(errno_of(&reply), 0);
            read_at::<WriteOut>(&reply, 16).expect("write_out").size
        };
        assert_eq!(write(0, b"hello"), 5);
        assert_eq!(write(3, b"XY"), 2);
        assert_eq!(fs.read_tree_file(b"a").as_deref(), Some(&b"helXY"[..]));
        // SETATTR: a truncation, an mtime.
        let setattr =
            |attr: SetattrIn| errno_of(&call(&fs, FUSE_SETATTR, file, bytemuck::bytes_of(&attr)));
        assert_eq!(
            setattr(SetattrIn {
                valid: FATTR_SIZE,
                size: 2,
                ..SetattrIn::default()
            }),
            0
        );
        assert_eq!(fs.read_tree_file(b"a").as_deref(), Some(&b"he"[..]));
        assert_eq!(
            setattr(SetattrIn {
                valid: FATTR_MTIME,
                mtime: 1_234_567,
                ..SetattrIn::default()
            }),
            0
        );
        assert_eq!(mtime_of(b"a"), Some(1_234_567));
        // MKDIR, RENAME into it under another name, UNLINK, RMDIR.
        let reply = call(&fs, FUSE_MKDIR, 1, &with_name(&MkdirIn::default(), &[b"d"]));
        assert_eq!(errno_of(&reply), 0);
        let dir = read_at::<EntryOut>(&reply, 16).expect("entry").node_id;
        let reply = call(&fs, FUSE_MKDIR, 1, &with_name(&MkdirIn::default(), &[b"d"]));
        assert_eq!(errno_of(&reply), libc::EEXIST);
        let rename = RenameIn { newdir: dir };
        let reply = call(&fs, FUSE_RENAME, 1, &with_name(&rename, &[b"a", b"b"]));
        assert_eq!(errno_of(&reply), 0);
        assert_eq!(fs.read_tree_file(b"a"), None);
        assert_eq!(fs.read_tree_file(b"d/b").as_deref(), Some(&b"he"[..]));
        let reply = call(&fs, FUSE_RENAME, 1, &with_name(&rename, &[b"gone", b"c"]));
        assert_eq!(errno_of(&reply), libc::ENOENT);
        assert_eq!(errno_of(&call(&fs, FUSE_RMDIR, 1, b"d\0")), libc::ENOTEMPTY);
        assert_eq!(errno_of(&call(&fs, FUSE_UNLINK, dir, b"b\0")), 0);
        assert_eq!(fs.read_tree_file(b"d/b"), None);
        assert_eq!(errno_of(&call(&fs, FUSE_RMDIR, 1, b"d\0")), 0);
        assert_eq!(mtime_of(b"d"), None);
    }

    /// SETATTR in cluster mode: only a size or an mtime makes it a cluster
    /// write; with it, the mode must be the path's fixed one (0640, 0600
    /// under priv), the owner root and the group www-data (else EPERM), the
    /// size at most the file size limit (else EFBIG). An mtime of 0 on a
    /// lock directory is an unlock request and is itself refused (EACCES).
    #[test]
    fn setattr_rules_in_cluster_mode() {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        let create = |parent: u64, name: &[u8]| {
            created(
                &fs,
                FUSE_CREATE,
                parent,
                &with_name(&CreateIn::default(), &[name]),
            )
        };
        let mkdir = |parent: u64, name: &[u8]| {
            created(
                &fs,
                FUSE_MKDIR,
                parent,
                &with_name(&MkdirIn::default(), &[name]),
            )
        };
        let file = create(1, b"f");
        let priv_dir = mkdir(1, b"priv");
        let private = create(priv_dir, b"p");
        let write = |node: u64, data: &[u8]| {
            let body = write_body(0, data);
            assert_eq!(errno_of(&call(&fs, FUSE_WRITE, node, &body)), 0);
        };
        write(file, b"0123456789");
        write(private, b"0123456789");
        let setattr = |node: u64, attr: SetattrIn| {
            try_call(&fs, FUSE_SETATTR, node, bytemuck::bytes_of(&attr)).map(|r| errno_of(&r))
        };
        let size = |size: u64, valid: u32| SetattrIn {
            valid: FATTR_SIZE | valid,
            size,
            mode: libc::S_IFREG | 0o640,
            uid: 0,
            gid: 33,
            ..SetattrIn::default()
        };
        // Mode, owner or group alone: checked, answered from the tree at
        // once, no message.
        for valid in [FATTR_MODE, FATTR_UID, FATTR_GID] {
            let attr = SetattrIn {
                valid,
                mode: 0o640,
                gid: 33,
                ..SetattrIn::default()
            };
            let request = raw_request(FUSE_SETATTR, 77, file, bytemuck::bytes_of(&attr));
            assert!(fs.intercept(&request));
            assert!(
                fs.replication().take_outgoing().is_empty(),
                "valid {valid:#x}: no message"
            );
            assert_eq!(errors(&fs.take_replies()), vec![0], "valid {valid:#x}");
        }
        let wrong_owner = SetattrIn {
            valid: FATTR_UID,
            uid: 1,
            ..SetattrIn::default()
        };
        assert_eq!(setattr(file, wrong_owner), Some(libc::EPERM));
        let text = |path: &[u8]| fs.read_tree_file(path).map(|d| d.len());
        assert_eq!(setattr(file, size(9, FATTR_MODE)), Some(0));
        assert_eq!(text(b"f"), Some(9));
        let wrong_mode = SetattrIn {
            mode: libc::S_IFREG | 0o644,
            ..size(8, FATTR_MODE)
        };
        assert_eq!(setattr(file, wrong_mode), Some(libc::EPERM));
        assert_eq!(
            setattr(private, size(8, FATTR_MODE)),
            Some(libc::EPERM),
            "0640 under priv"
        );
        let private_mode = SetattrIn {
            mode: libc::S_IFREG | 0o600,
            ..size(8, FATTR_MODE)
        };
        assert_eq!(setattr(private, private_mode), Some(0));
        assert_eq!(text(b"priv/p"), Some(8));
        assert_eq!(setattr(file, size(8, FATTR_UID)), Some(0));
        let other_owner = SetattrIn {
            uid: 1,
            ..size(7, FATTR_UID)
        };
        assert_eq!(setattr(file, other_owner), Some(libc::EPERM));
        assert_eq!(setattr(file, size(7, FATTR_GID)), Some(0));
        let other_group = SetattrIn {
            gid: 0,
            ..size(6, FATTR_GID)
        };
        assert_eq!(setattr(file, other_group), Some(libc::EPERM));
        assert_eq!(text(b"f"), Some(7), "refusals change nothing");
        let max = pmxcfs_store::MAX_FILE_SIZE as u64;
        assert_eq!(setattr(file, size(max + 1, 0)), Some(libc::EFBIG));
        assert_eq!(setattr(file, size(max, 0)), Some(0));
        assert_eq!(text(b"f"), Some(pmxcfs_store::MAX_FILE_SIZE));
        // MTIME_NOW: the daemon's clock.
        let before = now_secs();
        let now = SetattrIn {
            valid: FATTR_MTIME | FATTR_MTIME_NOW,
            mtime: 5,
            ..SetattrIn::default()
        };
        assert_eq!(setattr(file, now), Some(0));
        let mtime = {
            let core = fs.core();
            let reader = core.reader();
            reader.resolve(b"f").expect("read").expect("f").meta.mtime
        };
        assert!(
            mtime >= before && mtime <= now_secs(),
            "{mtime} vs {before}"
        );
        // An mtime of 0 on a lock directory asks for an unlock: refused.
        let lock = mkdir(mkdir(priv_dir, b"lock"), b"l");
        let unlock = SetattrIn {
            valid: FATTR_MTIME,
            mtime: 0,
            ..SetattrIn::default()
        };
        assert_eq!(setattr(lock, unlock), Some(libc::EACCES));
        {
            let core = fs.core();
            assert!(
                core.reader()
                    .resolve(b"priv/lock/l")
                    .expect("read")
                    .is_some()
            );
        }
        let mtime_of = |path: &[u8]| {
            let core = fs.core();
            let reader = core.reader();
            reader
                .resolve(path)
                .expect("read")
                .expect("entry")
                .meta
                .mtime
        };
        // Any other (newer) mtime of a lock directory is an mtime (it
        // renews the lock); an mtime of 0 on a file is an mtime, not an
        // unlock request.
        let at = |mtime: u64| SetattrIn {
            valid: FATTR_MTIME,
            mtime,
            ..SetattrIn::default()
        };
        let renewed = u64::from(now_secs()) + 100;
        {
            // One message, the MTIME (no unlock request before it).
            let request = raw_request(FUSE_SETATTR, 77, lock, bytemuck::bytes_of(&at(renewed)));
            assert!(fs.intercept(&request));
            let sent = fs.replication().take_outgoing();
            let subtypes: Vec<u16> = sent
                .iter()
                .filter_map(|(_, msg, _)| match &msg.body {
                    pmxcfs_cpg::dfsm::MessageBody::Normal { subtype, .. } => Some(*subtype),
                    _ => None,
                })
                .collect();
            assert_eq!(subtypes, vec![DcdbType::Mtime as u16]);
            for (group, _, bytes) in sent {
                fs.replication().cpg_deliver(group, me, &bytes);
            }
            assert_eq!(errors(&fs.take_replies()), vec![0]);
        }
        assert_eq!(u64::from(mtime_of(b"priv/lock/l")), renewed);
        assert_eq!(setattr(file, at(0)), Some(0));
        assert_eq!(mtime_of(b"f"), 0);
        // An mtime leaves the size alone; a size alone needs no mode.
        assert_eq!(text(b"f"), Some(pmxcfs_store::MAX_FILE_SIZE));
        let size_only = SetattrIn {
            valid: FATTR_SIZE,
            size: 3,
            ..SetattrIn::default()
        };
        assert_eq!(setattr(file, size_only), Some(0));
        // Owner and group fields count only when the request sets them.
        let other_ids = SetattrIn {
            uid: 5,
            gid: 7,
            ..size_only
        };
        assert_eq!(setattr(file, other_ids), Some(0));
        assert_eq!(text(b"f"), Some(3));
        assert_ne!(mtime_of(b"f"), 0, "the truncation's time, no mtime of 0");
    }

    /// MKNOD (regular files only), CREATE on an existing name (O_TRUNC,
    /// O_EXCL, a directory), the write size limit at its boundary and
    /// RENAME2's flags, in cluster mode.
    #[test]
    fn create_variants_write_limit_and_rename2() {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        let mknod = |name: &[u8], mode: u32| {
            let fixed = MknodIn {
                mode,
                ..MknodIn::default()
            };
            errno_of(&call(&fs, FUSE_MKNOD, 1, &with_name(&fixed, &[name])))
        };
        assert_eq!(mknod(b"m", libc::S_IFREG | 0o640), 0);
        assert_eq!(fs.read_tree_file(b"m").as_deref(), Some(&b""[..]));
        assert_eq!(mknod(b"fifo", libc::S_IFIFO | 0o640), libc::ENOSYS);
        let create = |name: &[u8], flags: i32| {
            let fixed = CreateIn {
                flags: flags as u32,
                ..CreateIn::default()
            };
            let reply = call(&fs, FUSE_CREATE, 1, &with_name(&fixed, &[name]));
            (
                errno_of(&reply),
                read_at::<EntryOut>(&reply, 16).map(|e| e.node_id),
            )
        };
        let (errno, node) = create(b"c", libc::O_WRONLY);
        assert_eq!(errno, 0);
        let node = node.expect("entry");
        let write = |offset: u64, data: &[u8]| {
            let body = write_body(offset, data);
            errno_of(&call(&fs, FUSE_WRITE, node, &body))
        };
        assert_eq!(write(0, b"keep"), 0);
        assert_eq!(
            create(b"c", libc::O_WRONLY).0,
            0,
            "an existing file is opened"
        );
        assert_eq!(fs.read_tree_file(b"c").as_deref(), Some(&b"keep"[..]));
        assert_eq!(create(b"c", libc::O_WRONLY | libc::O_EXCL).0, libc::EEXIST);
        assert_eq!(create(b"c", libc::O_WRONLY | libc::O_TRUNC).0, 0);
        assert_eq!(fs.read_tree_file(b"c").as_deref(), Some(&b""[..]));
        assert_eq!(
            errno_of(&call(
                &fs,
                FUSE_MKDIR,
                1,
                &with_name(&MkdirIn::default(), &[b"dir"])
            )),
            0
        );
        assert_eq!(create(b"dir", libc::O_WRONLY).0, libc::EISDIR);
        // The last byte of the limit may be written, not one more.
        let max = pmxcfs_store::MAX_FILE_SIZE as u64;
        assert_eq!(write(max - 2, b"ok"), 0);
        assert_eq!(write(max - 1, b"no"), libc::EFBIG);
        assert_eq!(fs.read_tree_file(b"c").map(|d| d.len()), Some(max as usize));
        // RENAME2: flags (RENAME_NOREPLACE, ...) are refused; none is a rename.
        let rename2 = |flags: u32, from: &[u8], to: &[u8]| {
            let fixed = Rename2In {
                newdir: 1,
                flags,
                ..Rename2In::default()
            };
            errno_of(&call(&fs, FUSE_RENAME2, 1, &with_name(&fixed, &[from, to])))
        };
        assert_eq!(rename2(1, b"m", b"n"), libc::EINVAL);
        assert_eq!(rename2(0, b"m", b"n"), 0);
        assert_eq!(fs.read_tree_file(b"n").as_deref(), Some(&b""[..]));
        assert_eq!(fs.read_tree_file(b"m"), None);
    }

    #[test]
    fn a_create_is_parked_then_answered_with_entry_and_open() {
        let fs = cluster_fs();
        let request = raw_request(
            FUSE_CREATE,
            77,
            1,
            &with_name(&CreateIn::default(), &[b"a.cfg"]),
        );
        assert!(fs.intercept(&request));
        assert!(fs.take_replies().is_empty(), "parked until delivered");
        let outgoing = fs.replication().take_outgoing();
        assert_eq!(outgoing.len(), 1);
        let (group, _, bytes) = &outgoing[0];
        assert_eq!(*group, Group::Dcdb);
        // A single-member group: the confchg makes us synced, the delivery
        // applies it and answers the parked request.
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        fs.replication().cpg_deliver(Group::Dcdb, me, bytes);
        let replies = fs.take_replies();
        assert_eq!(replies.len(), 1);
        let reply = &replies[0];
        let out: OutHeader = read_at(reply, 0).expect("header");
        assert_eq!((out.error, out.unique), (0, 77));
        assert_eq!(reply.len(), 16 + 128 + 16, "entry_out + open_out");
        let entry: EntryOut = read_at(reply, 16).expect("entry");
        assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFREG);
        assert!(fs.read_tree_file(b"a.cfg").is_some());
    }

    #[test]
    fn writes_without_quorum_are_refused_before_anything_is_sent() {
        let fs = cluster_fs();
        fs.replication().set_quorate(false);
        let request = raw_request(FUSE_MKDIR, 5, 1, &with_name(&MkdirIn::default(), &[b"d"]));
        assert!(fs.intercept(&request));
        assert!(fs.replication().take_outgoing().is_empty());
        let replies = fs.take_replies();
        let out: OutHeader = read_at(&replies[0], 0).expect("header");
        assert_eq!(out.error, -libc::EACCES);
    }

    fn mkdir_request(unique: u64, name: &str) -> Vec<u8> {
        raw_request(
            FUSE_MKDIR,
            unique,
            1,
            &with_name(&MkdirIn::default(), &[name.as_bytes()]),
        )
    }

    fn errors(replies: &[Vec<u8>]) -> Vec<i32> {
        replies
            .iter()
            .map(|reply| read_at::<OutHeader>(reply, 0).expect("header").error)
            .collect()
    }

    /// Write safety: while the group is not synchronised the request waits
    /// (nothing sent, no answer); the waiting list is bounded (EAGAIN
    /// beyond); losing quorum answers every waiting request with EACCES.
    #[test]
    fn writes_wait_for_the_gate_within_a_bound() {
        let fs = cluster_fs();
        fs.replication()
            .set_write_votes(Some(Votes::new([(1, 1), (2, 1), (3, 1)])));
        for unique in 0..MAX_WAITING as u64 {
            assert!(fs.intercept(&mkdir_request(unique, &format!("d{unique}"))));
        }
        assert!(
            fs.replication().take_outgoing().is_empty(),
            "nothing is sent"
        );
        assert!(fs.take_replies().is_empty(), "nobody is answered");
        assert_eq!(fs.report().waiting, MAX_WAITING);
        assert!(fs.intercept(&mkdir_request(99_999, "one-too-many")));
        assert_eq!(errors(&fs.take_replies()), vec![-libc::EAGAIN]);
        fs.replication().set_quorate(false);
        let replies = fs.take_replies();
        assert_eq!(replies.len(), MAX_WAITING);
        assert!(errors(&replies).iter().all(|&e| e == -libc::EACCES));
        assert_eq!(fs.report().waiting, 0);
    }

    /// A lone member of a three-vote cluster: the gate stays closed, the
    /// request waits and gets EACCES after WAIT_FOR_GATE.
    #[test]
    fn a_group_without_majority_refuses_after_the_wait() {
        let fs = cluster_fs();
        fs.replication()
            .set_write_votes(Some(Votes::new([(1, 1), (2, 1), (3, 1)])));
        fs.replication()
            .cpg_confchg(Group::Dcdb, &[MemberId::new(1, 1)], &[MemberId::new(1, 1)]);
        assert!(fs.intercept(&mkdir_request(7, "alone")));
        assert!(fs.take_replies().is_empty());
        fs.core()
            .retry_waiting(std::time::Instant::now() + WAIT_FOR_GATE / 2);
        assert!(fs.take_replies().is_empty(), "still waiting");
        fs.core().retry_waiting(
            std::time::Instant::now() + WAIT_FOR_GATE + std::time::Duration::from_secs(1),
        );
        assert_eq!(errors(&fs.take_replies()), vec![-libc::EACCES]);
        assert!(fs.replication().take_outgoing().is_empty(), "never sent");
        // Without write safety (a vote helper configured): C's rule.
        fs.replication().set_write_votes(None);
        assert!(fs.intercept(&mkdir_request(8, "alone")));
        assert_eq!(fs.replication().take_outgoing().len(), 1);
    }

    /// Back-pressure: with the send queues over their bound, writes wait and
    /// status updates are held (the latest per key); both go when it drains.
    #[test]
    fn a_full_send_backlog_holds_writes_and_status_updates() {
        let fs = cluster_fs();
        fs.replication().set_send_backlog(MAX_SEND_BACKLOG + 1);
        assert!(fs.intercept(&mkdir_request(3, "later")));
        {
            let mut core = fs.core();
            for value in [b"1".as_slice(), b"2", b"3"] {
                let payload = Kvstore::update_message(b"kv/test", value).expect("payload");
                core.send_kvstore(pmxcfs_cpg::wire::KvstoreType::Update, payload);
            }
        }
        assert!(fs.replication().take_outgoing().is_empty());
        assert_eq!(fs.report().waiting, 1);
        fs.replication().set_send_backlog(0);
        let outgoing = fs.replication().take_outgoing();
        let groups: Vec<Group> = outgoing.iter().map(|(group, _, _)| *group).collect();
        assert_eq!(
            groups,
            vec![Group::Kvstore, Group::Dcdb],
            "one status update (the latest), one write"
        );
        let pmxcfs_cpg::dfsm::MessageBody::Normal { payload, .. } = &outgoing[0].1.body else {
            panic!("a NORMAL kvstore message");
        };
        assert_eq!(
            pmxcfs_cpg::wire::KvUpdate::decode(payload)
                .expect("update")
                .value,
            b"3"
        );
    }

    /// The held status updates are bounded by distinct keys: at the bound a
    /// new key is dropped, a held one still takes its latest value; the
    /// backlog counts from one byte above the bound, and releases at half.
    #[test]
    fn held_status_updates_are_bounded_by_keys() {
        let fs = cluster_fs();
        let update = |key: &str, value: &[u8]| {
            let payload = Kvstore::update_message(key.as_bytes(), value).expect("payload");
            fs.core()
                .send_kvstore(pmxcfs_cpg::wire::KvstoreType::Update, payload);
        };
        fs.replication().set_send_backlog(MAX_SEND_BACKLOG);
        update("kv/at-the-bound", b"sent");
        assert_eq!(
            fs.replication().take_outgoing().len(),
            1,
            "not above the bound: sent"
        );
        fs.replication().set_send_backlog(MAX_SEND_BACKLOG + 1);
        for i in 0..MAX_HELD_STATUS {
            update(&format!("kv/{i}"), b"old");
        }
        update("kv/one-too-many", b"dropped");
        update("kv/0", b"new");
        assert!(fs.replication().take_outgoing().is_empty(), "held");
        fs.replication().set_send_backlog(MAX_SEND_BACKLOG / 2 + 1);
        assert!(
            fs.replication().take_outgoing().is_empty(),
            "still above half"
        );
        fs.replication().set_send_backlog(MAX_SEND_BACKLOG / 2);
        let outgoing = fs.replication().take_outgoing();
        assert_eq!(outgoing.len(), MAX_HELD_STATUS, "one message per held key");
        let mut values = std::collections::BTreeMap::new();
        for (_, msg, _) in &outgoing {
            let pmxcfs_cpg::dfsm::MessageBody::Normal { payload, .. } = &msg.body else {
                panic!("NORMAL");
            };
            let update = pmxcfs_cpg::wire::KvUpdate::decode(payload).expect("update");
            values.insert(update.key.to_vec(), update.value.to_vec());
        }
        assert_eq!(
            values.get(&b"kv/0"[..]).map(Vec::as_slice),
            Some(&b"new"[..])
        );
        assert_eq!(
            values.get(&b"kv/1"[..]).map(Vec::as_slice),
            Some(&b"old"[..])
        );
        assert!(!values.contains_key(&b"kv/one-too-many"[..]));
    }

    /// What `pmxcfs status` shows of cluster mode, through its states.
    #[test]
    fn the_report_follows_the_groups() {
        let fs = cluster_fs();
        let report = fs.report();
        assert!(report.cluster && report.quorate);
        let names: Vec<&str> = report.groups.iter().map(|g| g.name).collect();
        assert_eq!(names, vec!["pve_dcdb_v1", "pve_kvstore_v1"]);
        assert_eq!(report.groups[0].mode, "start");
        assert_eq!((report.parked, report.waiting, report.outgoing), (0, 0, 0));
        // Without write safety (C's rule) a write is sent at once: parked
        // until its delivery, its message outgoing until the daemon takes it.
        assert!(fs.intercept(&mkdir_request(3, "sent")));
        let report = fs.report();
        assert_eq!((report.waiting, report.parked, report.outgoing), (0, 1, 1));
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        let report = fs.report();
        let dcdb = &report.groups[0];
        assert_eq!(dcdb.mode, "synced");
        assert_eq!(
            (dcdb.members, dcdb.synced_members, dcdb.leader_node_id),
            (1, 1, 1)
        );
        assert_eq!(deliver_own(&fs), 1);
        let report = fs.report();
        assert_eq!((report.parked, report.outgoing), (0, 0));
        assert!(report.global_version > 0);
    }

    /// Two nodes' kvstore groups: node 2's status update reaches node 1's
    /// remote tables and its `.version`.
    #[test]
    fn a_remote_status_update_reaches_version_and_remote_tables() {
        let one = cluster_fs_as(1);
        let two = cluster_fs_as(2);
        let members = [MemberId::new(1, 1), MemberId::new(2, 2)];
        let nodes = [(&one, members[0]), (&two, members[1])];
        let pump = || deliver_all(&nodes);
        for (fs, _) in nodes {
            for group in Group::ALL {
                fs.replication().cpg_confchg(group, &members, &members);
            }
            fs.replication()
                .set_cluster_info(Some(crate::status::ClusterInfo {
                    name: "lab".into(),
                    config_version: 1,
                    nodes: (1..=2)
                        .map(|id| crate::status::ClusterNode {
                            name: format!("node{id}"),
                            node_id: id,
                            votes: 1,
                        })
                        .collect(),
                }));
        }
        pump();
        let payload = Kvstore::update_message(b"kv/x", b"1\0").expect("payload");
        two.core()
            .send_kvstore(pmxcfs_cpg::wire::KvstoreType::Update, payload);
        pump();
        let core = one.core();
        let remote = core.kv_remote().expect("cluster mode has remote tables");
        assert!(
            remote
                .get(&2)
                .is_some_and(|table| table.contains_key(&b"kv/x"[..]))
        );
        let text = core.version_text();
        assert!(text.contains("\"node2\": {\n\"kv/x\": "), "{text}");
    }

    /// A resync may have changed anything: every dentry the kernel was
    /// handed (lookups) is invalidated with its inode, the root's
    /// attributes too, and the record of them starts over; a dentry is
    /// remembered under the node id the kernel knows.
    #[test]
    fn a_resync_invalidates_every_dentry_the_kernel_was_given() {
        let one = cluster_fs_as(1);
        let two = cluster_fs_as(2);
        let (m1, m2) = (MemberId::new(1, 1), MemberId::new(2, 2));
        one.replication().cpg_confchg(Group::Dcdb, &[m1], &[m1]);
        two.replication().cpg_confchg(Group::Dcdb, &[m2], &[m2]);
        deliver_all(&[(&one, m1)]);
        deliver_all(&[(&two, m2)]);
        // A request of `fs` in a group of `nodes`: the new entry's node id.
        let make = |nodes: &[(&TestFs, MemberId)], opcode: u32, parent: u64, name: &[u8]| {
            let body = if opcode == FUSE_MKDIR {
                with_name(&MkdirIn::default(), &[name])
            } else {
                with_name(&CreateIn::default(), &[name])
            };
            entry_node(&request_ok(nodes, nodes[0].0, opcode, parent, &body)).expect("entry")
        };
        let dir = make(&[(&two, m2)], FUSE_MKDIR, 1, b"d");
        let file = make(&[(&two, m2)], FUSE_CREATE, dir, b"f");
        for name in [&b"x"[..], b"y", b"z"] {
            make(&[(&one, m1)], FUSE_CREATE, 1, name);
        }
        {
            let mut core = two.core();
            assert_eq!(core.lookup(1, b"d").expect("d").inode, dir);
            assert_eq!(core.lookup(dir, b"f").expect("f").inode, file);
        }
        // Node 2 renames d/f to d/g itself: the kernel knows the file under
        // its new name now, and so does the record.
        request_ok(
            &[(&two, m2)],
            &two,
            FUSE_RENAME,
            dir,
            &with_name(&RenameIn { newdir: dir }, &[b"f", b"g"]),
        );
        two.take_invalidations();
        // Node 1's tree is newer: node 2 takes it in the resync.
        let both = [m1, m2];
        one.replication().cpg_confchg(Group::Dcdb, &both, &[m2]);
        two.replication().cpg_confchg(Group::Dcdb, &both, &[m1]);
        deliver_all(&[(&one, m1), (&two, m2)]);
        let seen = two.take_invalidations();
        for expected in [
            Invalidation::Entry {
                parent: 1,
                name: b"d".to_vec(),
            },
            Invalidation::Inode { node_id: dir },
            Invalidation::Entry {
                parent: dir,
                name: b"g".to_vec(),
            },
            Invalidation::Inode { node_id: file },
            Invalidation::Attributes { node_id: 1 },
        ] {
            assert!(seen.contains(&expected), "{expected:?} not in {seen:?}");
        }
        let old_name = Invalidation::Entry {
            parent: dir,
            name: b"f".to_vec(),
        };
        assert!(!seen.contains(&old_name), "{seen:?}");
        assert!(two.core().lookup(1, b"x").is_ok(), "node 1's tree");
        assert!(one.take_invalidations().iter().all(|i| !matches!(
            i,
            Invalidation::Entry { name, .. } if name == b"f"
        )));
        // What was invalidated is forgotten: the next resync invalidates
        // only what the kernel was handed since (here: "x").
        two.take_invalidations();
        two.replication().cpg_confchg(Group::Dcdb, &[m2], &[]);
        one.replication().cpg_confchg(Group::Dcdb, &[m1], &[]);
        deliver_all(&[(&one, m1)]);
        deliver_all(&[(&two, m2)]);
        make(&[(&one, m1)], FUSE_CREATE, 1, b"w");
        two.take_invalidations();
        one.replication().cpg_confchg(Group::Dcdb, &both, &[m2]);
        two.replication().cpg_confchg(Group::Dcdb, &both, &[m1]);
        deliver_all(&[(&one, m1), (&two, m2)]);
        let seen = two.take_invalidations();
        let entries: Vec<&[u8]> = seen
            .iter()
            .filter_map(|i| match i {
                Invalidation::Entry { name, .. } => Some(&name[..]),
                _ => None,
            })
            .collect();
        assert_eq!(entries, vec![&b"x"[..]], "{seen:?}");
    }

    /// Another node's change in a subdirectory invalidates exactly what
    /// names the path: the dentry under the directory's node id, the
    /// directory's listing, the file's pages and attributes (node ids are
    /// store inodes + 1 everywhere).
    #[test]
    fn a_remote_change_in_a_subdirectory_invalidates_its_node_ids() {
        let (one, two, members) = synced_pair();
        let nodes = [(&one, members[0]), (&two, members[1])];
        let request = |fs: &TestFs, opcode: u32, node_id: u64, body: &[u8]| {
            entry_node(&request_ok(&nodes, fs, opcode, node_id, body))
        };
        let dir = request(
            &two,
            FUSE_MKDIR,
            1,
            &with_name(&MkdirIn::default(), &[b"d"]),
        )
        .expect("dir");
        // Another entry in between: no two node ids here differ by one.
        request(
            &two,
            FUSE_CREATE,
            dir,
            &with_name(&CreateIn::default(), &[b"e"]),
        );
        let file = request(
            &two,
            FUSE_CREATE,
            dir,
            &with_name(&CreateIn::default(), &[b"f"]),
        )
        .expect("file");
        assert!(file > dir + 1);
        one.take_invalidations();
        request(&two, FUSE_WRITE, file, &write_body(0, b"data"));
        let mut seen = one.take_invalidations();
        seen.sort_by_key(|i| format!("{i:?}"));
        seen.dedup();
        let mut expected = vec![
            Invalidation::Entry {
                parent: dir,
                name: b"f".to_vec(),
            },
            Invalidation::Inode { node_id: dir },
            Invalidation::Inode { node_id: file },
        ];
        expected.sort_by_key(|i| format!("{i:?}"));
        assert_eq!(seen, expected);
        request(&two, FUSE_UNLINK, dir, &with_name(&(), &[b"f"]));
        let seen = one.take_invalidations();
        for expected in &expected {
            assert!(seen.contains(expected), "{expected:?} not in {seen:?}");
        }
    }

    /// A file open on node 1 that node 2 renames another file over, or
    /// deletes: node 1's handles keep the version they opened (size, data,
    /// no link), as with a local change, instead of ESTALE; a file nobody
    /// holds open is gone (ESTALE makes the kernel look it up again), and
    /// the copy goes with the last handle.
    #[test]
    fn a_file_open_here_that_another_node_removes_keeps_serving_its_handles() {
        let (one, two, members) = synced_pair();
        let nodes = [(&one, members[0]), (&two, members[1])];
        let request = |opcode: u32, node_id: u64, body: &[u8]| {
            entry_node(&request_ok(&nodes, &two, opcode, node_id, body))
        };
        let file = |name: &[u8], data: &[u8]| {
            let node =
                request(FUSE_CREATE, 1, &with_name(&CreateIn::default(), &[name])).expect("entry");
            request(FUSE_WRITE, node, &write_body(0, data));
            node
        };
        let conf = file(b"vm.conf", b"old version");
        let tmp = file(b"vm.conf.tmp", b"new");
        let other = file(b"other.conf", b"other");
        let gone = file(b"unopened.conf", b"x");
        one.core().opened(conf);
        one.core().opened(conf);
        one.core().opened(other);
        request(
            FUSE_RENAME,
            1,
            &with_name(&RenameIn { newdir: 1 }, &[b"vm.conf.tmp", b"vm.conf"]),
        );
        request(FUSE_UNLINK, 1, &with_name(&(), &[b"other.conf"]));
        request(FUSE_UNLINK, 1, &with_name(&(), &[b"unopened.conf"]));
        let mut core = one.core();
        for (node, data) in [(conf, &b"old version"[..]), (other, b"other")] {
            let (stat, _) = core.getattr(node).expect("an open handle's file");
            assert_eq!((stat.st_size, stat.st_nlink), (data.len() as i64, 0));
            assert_eq!(stat.st_mode & libc::S_IFMT, libc::S_IFREG);
            assert_eq!(core.orphans.get(&node).map(|o| &o.data[..]), Some(data));
        }
        assert_eq!(
            core.getattr(gone).map(|_| ()).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ESTALE))
        );
        assert_eq!(core.getattr(tmp).expect("renamed").0.st_size, 3);
        core.released(conf);
        assert!(core.getattr(conf).is_ok(), "one handle left");
        core.released(conf);
        assert_eq!(
            core.getattr(conf).map(|_| ()).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ESTALE)),
            "the last handle took the copy"
        );
        assert!(!core.orphans.contains_key(&conf));
    }

    /// A remote change invalidates what the kernel of this node may cache:
    /// the name's entry in its directory, the directory's listing and the
    /// inode (before and after); this node's own answered changes invalidate
    /// nothing (its kernel made them).
    #[test]
    fn remote_changes_invalidate_the_kernel_caches_own_ones_do_not() {
        let (one, two, members) = synced_pair();
        let nodes = [(&one, members[0]), (&two, members[1])];
        for (fs, _) in nodes {
            fs.take_invalidations();
        }
        let request = |fs: &TestFs, opcode: u32, node_id: u64, body: &[u8]| {
            request_ok(&nodes, fs, opcode, node_id, body)
        };
        // Node 2 creates "a": node 1 forgets its (negative) entry of "a" and
        // the root's listing; node 2 invalidates nothing.
        let reply = request(
            &two,
            FUSE_CREATE,
            1,
            &with_name(&CreateIn::default(), &[b"a"]),
        );
        let node = read_at::<EntryOut>(&reply, 16).expect("entry").node_id;
        let seen = one.take_invalidations();
        assert!(
            seen.contains(&Invalidation::Entry {
                parent: 1,
                name: b"a".to_vec()
            }),
            "{seen:?}"
        );
        assert!(
            seen.contains(&Invalidation::Inode { node_id: 1 }),
            "{seen:?}"
        );
        assert_eq!(two.take_invalidations(), vec![], "own answered change");
        // Node 2 writes it: node 1 drops its attributes and pages.
        let body = write_body(0, b"hi");
        request(&two, FUSE_WRITE, node, &body);
        let seen = one.take_invalidations();
        assert!(
            seen.contains(&Invalidation::Inode { node_id: node }),
            "{seen:?}"
        );
        assert_eq!(two.take_invalidations(), vec![]);
    }

    /// A one-member group (member 1/1, synced) with the file `f`: the file
    /// system, the member and the file's node id.
    fn one_member_with_file() -> (TestFs, MemberId, u64) {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        let reply = call(
            &fs,
            FUSE_CREATE,
            1,
            &with_name(&CreateIn::default(), &[b"f"]),
        );
        let node = read_at::<EntryOut>(&reply, 16).expect("entry").node_id;
        (fs, me, node)
    }

    /// The messages of one CPG dispatch are applied with one journal write;
    /// delivered one by one, each has its own.
    #[test]
    fn the_deliveries_of_one_dispatch_share_one_journal_write() {
        let (fs, me, node) = one_member_with_file();
        let journal_writes = |fs: &TestFs| fs.core().session().stats().journal_writes;
        let send_writes = |first_unique: u64| -> Vec<(MemberId, Vec<u8>)> {
            for unique in first_unique..first_unique + 3 {
                let body = write_body(unique * 10, b"0123456789");
                assert!(fs.intercept(&raw_request(FUSE_WRITE, unique, node, &body)));
            }
            let outgoing = fs.replication().take_outgoing();
            assert_eq!(outgoing.len(), 3);
            outgoing
                .into_iter()
                .map(|(_, _, bytes)| (me, bytes))
                .collect()
        };
        let before = journal_writes(&fs);
        fs.replication()
            .cpg_deliver_all(Group::Dcdb, &send_writes(100));
        assert_eq!(errors(&fs.take_replies()), vec![0, 0, 0]);
        assert_eq!(
            journal_writes(&fs),
            before + 1,
            "one write for the dispatch"
        );
        let before = journal_writes(&fs);
        for (sender, bytes) in send_writes(200) {
            fs.replication().cpg_deliver(Group::Dcdb, sender, &bytes);
        }
        assert_eq!(errors(&fs.take_replies()), vec![0, 0, 0]);
        assert_eq!(journal_writes(&fs), before + 3, "one write per delivery");
        let data = fs.read_tree_file(b"f").expect("f");
        assert_eq!(data.len(), 2030);
        assert_eq!(&data[1000..1010], b"0123456789");
    }

    /// The second message of a request passes the write gate too: closed
    /// by the time the first one's result arrives, the request is refused
    /// (EACCES) and nothing more is sent.
    #[test]
    fn the_rest_of_a_request_waits_for_no_closed_gate() {
        for gate_open in [true, false] {
            let (fs, _me, node) = one_member_with_file();
            let attr = SetattrIn {
                valid: FATTR_SIZE | FATTR_MTIME,
                size: 0,
                mtime: 77,
                ..SetattrIn::default()
            };
            let request = raw_request(FUSE_SETATTR, 5, node, bytemuck::bytes_of(&attr));
            assert!(fs.intercept(&request));
            assert_eq!(fs.replication().take_outgoing().len(), 1, "the truncate");
            if !gate_open {
                // Three configured votes, one member: no majority.
                fs.replication()
                    .set_write_votes(Some(Votes::new([(1, 1), (2, 1), (3, 1)])));
            }
            {
                let mut core = fs.core();
                let count = *core
                    .cluster()
                    .and_then(|cluster| cluster.by_count.keys().next())
                    .expect("the truncate's count");
                // The truncate's result: success (as the pump hands it on).
                core.finish(count, 0);
                core.pump();
            }
            let outgoing = fs.replication().take_outgoing();
            let replies = fs.take_replies();
            if gate_open {
                assert_eq!(outgoing.len(), 1, "the mtime goes out");
                assert!(replies.is_empty());
            } else {
                assert!(outgoing.is_empty(), "no mtime while the gate is closed");
                assert_eq!(errors(&replies), vec![-libc::EACCES]);
            }
        }
    }

    /// In local mode a failed rename that removed its target (the C quirk)
    /// is invalidated: the kernel was told it failed, so it still holds
    /// the target's entry.
    #[test]
    fn a_failed_rename_that_removed_its_target_is_invalidated_in_local_mode() {
        let fs = local_fs();
        let dir = |parent: u64, name: &[u8]| {
            created(
                &fs,
                FUSE_MKDIR,
                parent,
                &with_name(&MkdirIn::default(), &[name]),
            )
        };
        let a = dir(1, b"a");
        dir(a, b"x");
        let b = dir(1, b"b");
        fs.take_invalidations();
        let reply = call(
            &fs,
            FUSE_RENAME,
            1,
            &with_name(&RenameIn { newdir: 1 }, &[b"a", b"b"]),
        );
        assert_eq!(errno_of(&reply), libc::ENOTEMPTY);
        let gone = fs.core().reader().resolve(b"b").expect("read").is_none();
        assert!(gone, "the quirk removed the target");
        let invalidations = fs.take_invalidations();
        assert!(
            invalidations.contains(&Invalidation::Entry {
                parent: 1,
                name: b"b".to_vec()
            }),
            "{invalidations:?}"
        );
        assert!(invalidations.contains(&Invalidation::Inode { node_id: b }));
    }

    /// Replies whose changes did not reach the disk answer the errno.
    #[test]
    fn replies_after_a_failed_commit_become_errors() {
        let mut replies = crate::replicator::Replies::default();
        replies.push(reply(1, &[]));
        let mark = replies.ready_count();
        replies.push(reply(2, &[&[7u8; 16][..]]));
        replies.push(reply_error(3, libc::EEXIST));
        let entry = EntryOut {
            node_id: 42,
            ..EntryOut::default()
        };
        let create = reply(
            4,
            &[
                bytemuck::bytes_of(&entry),
                bytemuck::bytes_of(&OpenOut::default()),
            ],
        );
        replies.push(create);
        assert_eq!(
            replies.fail_since(mark, libc::EIO),
            vec![42],
            "the CREATE's open"
        );
        let ready = replies.take_ready();
        assert_eq!(
            ready.iter().map(|r| reply_unique(r)).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(errors(&ready), vec![0, -libc::EIO, -libc::EIO, -libc::EIO]);
    }

    /// A request of several messages (a truncation with an mtime) is
    /// answered once, after the last of them.
    #[test]
    fn a_request_of_two_messages_sends_one_after_the_other_and_is_answered_after_both() {
        let (fs, me, node) = one_member_with_file();
        let attr = SetattrIn {
            valid: FATTR_SIZE | FATTR_MTIME,
            size: 0,
            mtime: 77,
            ..SetattrIn::default()
        };
        let request = raw_request(FUSE_SETATTR, 5, node, bytemuck::bytes_of(&attr));
        assert!(fs.intercept(&request));
        let outgoing = fs.replication().take_outgoing();
        assert_eq!(outgoing.len(), 1, "the truncate first");
        fs.replication()
            .cpg_deliver(Group::Dcdb, me, &outgoing[0].2);
        assert!(fs.take_replies().is_empty(), "one message still pending");
        let outgoing = fs.replication().take_outgoing();
        assert_eq!(outgoing.len(), 1, "the mtime once the truncate succeeded");
        fs.replication()
            .cpg_deliver(Group::Dcdb, me, &outgoing[0].2);
        assert_eq!(errors(&fs.take_replies()), vec![0]);
        assert!(fs.replication().take_outgoing().is_empty());
        let core = fs.core();
        let entry = core.reader().resolve(b"f").expect("read").expect("f");
        assert_eq!((entry.data.len(), entry.meta.mtime), (0, 77));
    }

    /// A group that left is restarted (mode START, joined again by the
    /// daemon); each group on its own.
    #[test]
    fn a_group_that_left_restarts() {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        let other = MemberId::new(2, 2);
        for group in Group::ALL {
            fs.replication().cpg_confchg(group, &[me], &[me]);
            fs.replication().cpg_confchg(group, &[other], &[other]);
        }
        let modes = |fs: &TestFs| -> Vec<String> {
            fs.report().groups.iter().map(|g| g.mode.clone()).collect()
        };
        assert_eq!(modes(&fs), vec!["leave", "leave"]);
        // The daemon sees the request (twice), then takes it (once).
        for group in Group::ALL {
            assert!(fs.replication().leave_requested(group), "{group:?}");
            assert!(fs.replication().leave_requested(group), "not consumed");
            assert!(fs.replication().take_leave(group), "{group:?}");
            assert!(!fs.replication().take_leave(group), "taken");
            assert!(!fs.replication().leave_requested(group));
            assert!(
                !fs.replication().leaving_synced(group),
                "it left from START, not SYNCED"
            );
        }
        assert!(fs.replication().cpg_restart(Group::Kvstore));
        assert_eq!(modes(&fs), vec!["leave", "start"]);
        assert!(fs.replication().cpg_restart(Group::Dcdb));
        assert_eq!(modes(&fs), vec!["start", "start"]);
    }

    /// Which requests cluster mode takes: a write or a size change of a
    /// tree file; not those of a special file or of an orphan (served from
    /// its copy); one naming a node that is gone is answered ESTALE (the
    /// kernel looks the name up again).
    #[test]
    fn writes_to_special_files_and_orphans_are_not_cluster_writes() {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        deliver_own(&fs);
        let (members, _) = crate::core::special_by_name(b".members").expect(".members");
        let body = write_body(0, b"x");
        assert!(try_call(&fs, FUSE_WRITE, members, &body).is_none());
        let file = created(
            &fs,
            FUSE_CREATE,
            1,
            &with_name(&CreateIn::default(), &[b"f"]),
        );
        assert!(try_call(&fs, FUSE_WRITE, file, &body).is_some());
        let gone = file + 1000;
        let size = SetattrIn {
            valid: FATTR_SIZE,
            ..SetattrIn::default()
        };
        for (opcode, body) in [
            (FUSE_WRITE, body.clone()),
            (FUSE_SETATTR, bytemuck::bytes_of(&size).to_vec()),
        ] {
            let reply = call(&fs, opcode, gone, &body);
            assert_eq!(errno_of(&reply), libc::ESTALE, "opcode {opcode}");
        }
        // Open here (CREATE opens), then unlinked: an orphan.
        assert_eq!(errno_of(&call(&fs, FUSE_UNLINK, 1, b"f\0")), 0);
        assert!(fs.core().orphans.contains_key(&file));
        assert!(try_call(&fs, FUSE_WRITE, file, &body).is_none());
        assert!(try_call(&fs, FUSE_SETATTR, file, bytemuck::bytes_of(&size)).is_none());
    }

    /// The hourly verify request goes out on the tree's group from the
    /// lowest synced node; quorum changes drop the attributes (modes) the
    /// kernel has cached, a repeated quorum report nothing; after dropped
    /// invalidations every dentry the kernel knows is invalidated.
    #[test]
    fn verify_requests_quorum_changes_and_invalidating_everything() {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        deliver_own(&fs);
        fs.replication().request_verify();
        let sent: Vec<(Group, u16)> = fs
            .replication()
            .take_outgoing()
            .iter()
            .map(|(group, msg, _)| (*group, msg.msg_type()))
            .collect();
        assert_eq!(
            sent,
            vec![(Group::Dcdb, pmxcfs_cpg::dfsm::msg_type::VERIFY_REQUEST)]
        );
        let file = created(
            &fs,
            FUSE_CREATE,
            1,
            &with_name(&CreateIn::default(), &[b"f"]),
        );
        assert_eq!(fs.core().lookup(1, b"f").expect("f").inode, file);
        fs.take_invalidations();
        fs.replication().set_quorate(true);
        assert_eq!(fs.take_invalidations(), vec![], "no change");
        fs.replication().set_quorate(false);
        let seen = fs.take_invalidations();
        assert!(
            seen.contains(&Invalidation::Attributes { node_id: file }),
            "{seen:?}"
        );
        assert!(
            seen.contains(&Invalidation::Attributes { node_id: 1 }),
            "{seen:?}"
        );
        assert!(
            !seen.iter().any(|i| matches!(i, Invalidation::Entry { .. })),
            "modes only: {seen:?}"
        );
        fs.invalidate_all_known();
        let seen = fs.take_invalidations();
        assert!(
            seen.contains(&Invalidation::Entry {
                parent: 1,
                name: b"f".to_vec()
            }),
            "{seen:?}"
        );
        assert!(
            seen.contains(&Invalidation::Inode { node_id: file }),
            "{seen:?}"
        );
    }

    /// Cluster log messages the send backlog had no room for are counted:
    /// one warning when the first is dropped, and one line with their
    /// number when the backlog drains (none when nothing was dropped).
    #[test]
    fn log_messages_dropped_at_the_backlog_bound_are_reported_once() {
        let fs = cluster_fs();
        let log = logged(|| {
            fs.replication().set_send_backlog(MAX_SEND_BACKLOG + 1);
            for _ in 0..3 {
                fs.core()
                    .send_kvstore(pmxcfs_cpg::wire::KvstoreType::Log, vec![0; 8]);
            }
        });
        let warning = "cluster log message not multicast: the send backlog is full";
        assert_eq!(log.matches(warning).count(), 1, "{log}");
        assert!(fs.replication().take_outgoing().is_empty());
        let log = logged(|| fs.replication().set_send_backlog(0));
        assert!(
            log.contains("dropped=3") && log.contains("send backlog drained"),
            "{log}"
        );
        let log = logged(|| {
            fs.replication().set_send_backlog(MAX_SEND_BACKLOG + 1);
            fs.replication().set_send_backlog(0);
        });
        assert!(
            !log.contains("send backlog drained"),
            "nothing dropped: {log}"
        );
    }

    /// A multicast that failed for good: the parked writer gets an error
    /// at once; a failed state message of a synced member under write
    /// safety makes it leave from SYNCED (the daemon goes on dispatching);
    /// setting the member id outside mode START is logged.
    #[test]
    fn failed_multicasts_and_a_late_member_id() {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        fs.replication().set_write_votes(Some(Votes::new([(1, 1)])));
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        deliver_own(&fs);
        assert!(fs.intercept(&mkdir_request(31, "d")));
        let sent = fs.replication().take_outgoing();
        assert_eq!(sent.len(), 1);
        fs.replication().send_failed(sent[0].0, &sent[0].1);
        let replies = fs.take_replies();
        assert_eq!(replies.len(), 1, "answered at once");
        assert_ne!(errno_of(&replies[0]), 0);
        assert!(!fs.replication().leaving_synced(Group::Dcdb));
        let log = logged(|| fs.replication().cpg_connected(Group::Dcdb, me));
        assert!(log.contains("member id set outside mode START"), "{log}");
        let state = Message {
            protocol_version: 1,
            time: 0,
            body: pmxcfs_cpg::dfsm::MessageBody::State {
                epoch: pmxcfs_cpg::dfsm::Epoch::default(),
                blob: vec![1],
            },
        };
        fs.replication().send_failed(Group::Dcdb, &state);
        assert!(fs.replication().leaving_synced(Group::Dcdb));
        assert!(!fs.replication().leaving_synced(Group::Kvstore));
        assert!(fs.replication().take_leave(Group::Dcdb));
        let fresh = cluster_fs();
        let log = logged(|| fresh.replication().cpg_connected(Group::Dcdb, me));
        assert!(!log.contains("outside mode START"), "{log}");
    }

    /// The node's address for `.members`, and the mode.
    #[test]
    fn node_address_and_mode() {
        let fs = cluster_fs();
        fs.set_node_ip(Some("10.1.2.3".into()));
        assert_eq!(fs.core().status.node_ip.as_deref(), Some("10.1.2.3"));
        assert!(fs.is_cluster());
        assert!(!local_fs().is_cluster());
    }

    /// Status updates held while the send backlog is over its bound go out
    /// once it is down to half of it, not before.
    #[test]
    fn held_status_goes_out_once_the_backlog_is_down_to_half() {
        let fs = cluster_fs();
        fs.replication().set_send_backlog(MAX_SEND_BACKLOG + 1);
        let payload = Kvstore::update_message(b"kv/x", b"1").expect("payload");
        fs.core()
            .send_kvstore(pmxcfs_cpg::wire::KvstoreType::Update, payload);
        assert!(fs.replication().take_outgoing().is_empty(), "held");
        fs.replication().set_send_backlog(MAX_SEND_BACKLOG / 2 + 1);
        assert!(
            fs.replication().take_outgoing().is_empty(),
            "still above half"
        );
        fs.replication().set_send_backlog(MAX_SEND_BACKLOG / 2);
        let groups: Vec<Group> = fs
            .replication()
            .take_outgoing()
            .iter()
            .map(|(g, _, _)| *g)
            .collect();
        assert_eq!(groups, vec![Group::Kvstore]);
    }

    /// The lines an admin greps for when the membership or the sync state
    /// changes (each once; node names once the nodelist is known, ids here),
    /// and the health a service manager is told (synced or not).
    #[test]
    fn membership_and_sync_changes_are_logged_once_and_shown_in_the_health() {
        let one = cluster_fs_as(1);
        let two = cluster_fs_as(2);
        let (m1, m2) = (MemberId::new(1, 1), MemberId::new(2, 2));
        assert!(!one.health().synced, "not synced before the first sync");
        assert!(one.health().cluster);
        let log = logged(|| {
            one.replication().cpg_confchg(Group::Dcdb, &[m1], &[m1]);
            deliver_all(&[(&one, m1)]);
        });
        assert!(one.health().synced);
        assert!(
            log.contains("cluster members: node id 1 (joined: node id 1; left: -)"),
            "{log}"
        );
        assert!(
            log.contains("tree in sync with the cluster (leader node id 1)"),
            "{log}"
        );
        assert!(
            !log.contains("cluster writes"),
            "the first open gate is no news: {log}"
        );
        let log = logged(|| {
            one.replication().cpg_confchg(Group::Dcdb, &[m1, m2], &[m2]);
            two.replication()
                .cpg_confchg(Group::Dcdb, &[m1, m2], &[m1, m2]);
            assert!(!one.health().synced, "syncing with node 2");
            deliver_all(&[(&one, m1), (&two, m2)]);
        });
        assert!(one.health().synced);
        let members = "cluster members: node id 1, node id 2 (joined: node id 2; left: -)";
        assert_eq!(log.matches(members).count(), 1, "{log}");
        // Node 1 was synced, goes syncing, and synced again; node 2 (in
        // the same log) was never synced before.
        assert_eq!(
            log.matches("tree syncing with the cluster").count(),
            1,
            "{log}"
        );
        assert_eq!(
            log.matches("tree in sync with the cluster").count(),
            2,
            "{log}"
        );
        let log = logged(|| {
            one.replication().cpg_confchg(Group::Dcdb, &[m1], &[]);
            deliver_all(&[(&one, m1)]);
        });
        assert!(
            log.contains("cluster members: node id 1 (joined: -; left: node id 2)"),
            "{log}"
        );
        // Write safety with three configured nodes: node 1 alone holds no
        // majority; node 2 back, the gate opens again. Each change once.
        let log = logged(|| {
            let votes = Votes::new([(1, 1), (2, 1), (3, 1)]);
            one.replication().set_write_votes(Some(votes.clone()));
            two.replication().set_write_votes(Some(votes));
            one.replication().expire_waiting();
            one.replication().expire_waiting();
        });
        let closed = "cluster writes closed: the pmxcfs group holds no majority";
        assert_eq!(log.matches(closed).count(), 1, "{log}");
        let log = logged(|| {
            one.replication().cpg_confchg(Group::Dcdb, &[m1, m2], &[m2]);
            two.replication()
                .cpg_confchg(Group::Dcdb, &[m1, m2], &[m1, m2]);
            deliver_all(&[(&one, m1), (&two, m2)]);
            one.replication().expire_waiting();
        });
        assert!(log.contains("cluster writes open"), "{log}");
    }

    /// Replies go back the way their request came: each io_uring queue
    /// gets the answers of its own requests (with their unique), /dev/fuse
    /// the rest; the daemon learns which queues to wake.
    #[test]
    fn replies_go_back_to_the_queue_their_request_came_from() {
        let fs = cluster_fs();
        assert!(fs.is_cluster());
        fs.replication()
            .cpg_confchg(Group::Dcdb, &[MemberId::new(1, 1)], &[MemberId::new(1, 1)]);
        deliver_own(&fs);
        assert!(fs.intercept_from_queue(&mkdir_request(11, "q0"), 0));
        assert!(fs.intercept_from_queue(&mkdir_request(12, "q1"), 1));
        assert!(fs.intercept_from_queue(&mkdir_request(13, "q1b"), 1));
        assert!(fs.intercept(&mkdir_request(14, "dev")));
        assert_eq!(
            fs.queues_with_replies(),
            Vec::<u16>::new(),
            "nothing applied yet"
        );
        deliver_own(&fs);
        assert_eq!(fs.queues_with_replies(), vec![0, 1]);
        let dev = fs.take_replies();
        assert_eq!(
            dev.iter().map(|r| reply_unique(r)).collect::<Vec<_>>(),
            vec![14]
        );
        assert_eq!(fs.queues_with_replies(), vec![0, 1], "queue replies stay");
        let q1 = fs.take_uring_replies(1);
        assert_eq!(q1.iter().map(|(u, _)| *u).collect::<Vec<_>>(), vec![12, 13]);
        for (unique, reply) in &q1 {
            assert_eq!(reply_unique(reply), *unique);
            assert_eq!(errno_of(reply), 0);
        }
        assert_eq!(fs.queues_with_replies(), vec![0]);
        assert!(fs.take_uring_replies(1).is_empty());
        let q0 = fs.take_uring_replies(0);
        assert_eq!(q0.iter().map(|(u, _)| *u).collect::<Vec<_>>(), vec![11]);
        assert_eq!(fs.queues_with_replies(), Vec::<u16>::new());
        assert!(fs.take_replies().is_empty());
    }

    /// A change of corosync.conf in the tree is reported once (the daemon
    /// then writes it to the host): `true` when this node made it (it
    /// notifies corosync), `false` for another node's.
    #[test]
    fn a_corosync_conf_change_is_reported_once_with_its_origin() {
        let (one, two, members) = synced_pair();
        let nodes = [(&one, members[0]), (&two, members[1])];
        for (fs, _) in nodes {
            fs.replication().take_corosync_conf_change();
        }
        assert!(one.intercept(&create_request(21, "corosync.conf", libc::O_RDWR)));
        deliver_all(&nodes);
        assert_eq!(one.replication().take_corosync_conf_change(), Some(true));
        assert_eq!(one.replication().take_corosync_conf_change(), None, "once");
        assert_eq!(two.replication().take_corosync_conf_change(), Some(false));
        assert!(two.intercept(&create_request(22, "other.conf", libc::O_RDWR)));
        deliver_all(&nodes);
        assert_eq!(one.replication().take_corosync_conf_change(), None);
        assert_eq!(two.replication().take_corosync_conf_change(), None);
    }

    /// The send backlog counts the messages not yet taken by the daemon
    /// too: a write's message pushes it over the bound, and a status
    /// update is then held.
    #[test]
    fn outgoing_messages_count_in_the_send_backlog() {
        // 100 bytes below the bound: a short name's message (48 bytes of
        // headers and its payload) stays under it, a long name's goes over.
        for (name, held) in [("a", false), (&"long-name-".repeat(8)[..], true)] {
            let fs = cluster_fs();
            fs.replication().set_send_backlog(MAX_SEND_BACKLOG - 100);
            assert!(fs.intercept(&mkdir_request(3, name)));
            let payload = Kvstore::update_message(b"kv/x", b"1").expect("payload");
            fs.core()
                .send_kvstore(pmxcfs_cpg::wire::KvstoreType::Update, payload);
            let groups: Vec<Group> = fs
                .replication()
                .take_outgoing()
                .iter()
                .map(|(g, _, _)| *g)
                .collect();
            if held {
                assert_eq!(groups, vec![Group::Dcdb], "the status update is held");
            } else {
                assert_eq!(groups, vec![Group::Dcdb, Group::Kvstore], "{name}");
            }
        }
    }

    /// A CPG among `nodes`: every message any of them multicasts reaches
    /// all of them, until none is left.
    fn deliver_all(nodes: &[(&TestFs, MemberId)]) {
        loop {
            let mut sent = Vec::new();
            for (fs, me) in nodes {
                for (group, _, bytes) in fs.replication().take_outgoing() {
                    sent.push((group, *me, bytes));
                }
            }
            if sent.is_empty() {
                return;
            }
            for (group, sender, bytes) in sent {
                for (fs, _) in nodes {
                    fs.replication().cpg_deliver(group, sender, &bytes);
                }
            }
        }
    }

    /// Nodes 1 and 2 in one synced tree group.
    fn synced_pair() -> (TestFs, TestFs, [MemberId; 2]) {
        let one = cluster_fs_as(1);
        let two = cluster_fs_as(2);
        let members = [MemberId::new(1, 1), MemberId::new(2, 2)];
        for fs in [&one, &two] {
            fs.replication()
                .cpg_confchg(Group::Dcdb, &members, &members);
        }
        deliver_all(&[(&one, members[0]), (&two, members[1])]);
        (one, two, members)
    }

    /// A request of `fs` in the group `nodes` (every message delivered to
    /// all): its one reply, which must succeed.
    fn request_ok(
        nodes: &[(&TestFs, MemberId)],
        fs: &TestFs,
        opcode: u32,
        node_id: u64,
        body: &[u8],
    ) -> Vec<u8> {
        let request = raw_request(opcode, 9, node_id, body);
        assert!(fs.intercept(&request), "opcode {opcode} taken");
        deliver_all(nodes);
        let replies = fs.take_replies();
        assert_eq!(errors(&replies), vec![0], "opcode {opcode}");
        replies[0].clone()
    }

    /// The node id of an entry reply.
    fn entry_node(reply: &[u8]) -> Option<u64> {
        read_at::<EntryOut>(reply, 16).map(|entry| entry.node_id)
    }

    fn create_request(unique: u64, name: &str, flags: i32) -> Vec<u8> {
        let create = CreateIn {
            flags: flags as u32,
            ..CreateIn::default()
        };
        raw_request(
            FUSE_CREATE,
            unique,
            1,
            &with_name(&create, &[name.as_bytes()]),
        )
    }

    /// Delivers everything the node multicast back to it (a one-member group).
    fn deliver_own(fs: &PmxFs) -> usize {
        let outgoing = fs.replication().take_outgoing();
        for (group, _, bytes) in &outgoing {
            fs.replication()
                .cpg_deliver(*group, MemberId::new(1, 1), bytes);
        }
        outgoing.len()
    }

    /// The kernel sends CREATE when its dentry says the name is free; if a
    /// remote change (or a resync) created it meanwhile, an open without
    /// O_EXCL opens it (truncated for O_TRUNC) instead of failing with
    /// EEXIST; with O_EXCL it is EEXIST.
    #[test]
    fn create_of_an_existing_file_without_o_excl_opens_it() {
        let fs = cluster_fs();
        let me = MemberId::new(1, 1);
        fs.replication().cpg_confchg(Group::Dcdb, &[me], &[me]);
        assert!(fs.intercept(&create_request(1, "a.cfg", libc::O_WRONLY)));
        assert_eq!(deliver_own(&fs), 1);
        let replies = fs.take_replies();
        assert_eq!(errors(&replies), vec![0]);
        let node_id = read_at::<EntryOut>(&replies[0], 16).expect("entry").node_id;
        // Content, so that a truncation shows.
        let write = raw_request(FUSE_WRITE, 9, node_id, &write_body(0, b"content"));
        assert!(fs.intercept(&write));
        assert_eq!(deliver_own(&fs), 1);
        assert_eq!(errors(&fs.take_replies()), vec![0]);
        // Without O_EXCL: answered at once from the tree, nothing sent.
        assert!(fs.intercept(&create_request(2, "a.cfg", libc::O_WRONLY)));
        assert_eq!(fs.replication().take_outgoing().len(), 0);
        let replies = fs.take_replies();
        assert_eq!(errors(&replies), vec![0]);
        assert_eq!(replies[0].len(), 16 + 128 + 16, "entry_out + open_out");
        assert_eq!(
            fs.read_tree_file(b"a.cfg").as_deref(),
            Some(&b"content"[..])
        );
        // O_TRUNC: one truncating write.
        assert!(fs.intercept(&create_request(3, "a.cfg", libc::O_WRONLY | libc::O_TRUNC)));
        assert_eq!(deliver_own(&fs), 1);
        assert_eq!(errors(&fs.take_replies()), vec![0]);
        assert_eq!(fs.read_tree_file(b"a.cfg").as_deref(), Some(&b""[..]));
        // O_EXCL: EEXIST, as ever.
        assert!(fs.intercept(&create_request(
            4,
            "a.cfg",
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL
        )));
        deliver_own(&fs);
        assert_eq!(errors(&fs.take_replies()), vec![-libc::EEXIST]);
    }
}
