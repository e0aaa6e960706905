//! Where the changes of the tree go, and the state each way keeps: local
//! mode applies them at once ([`Local`]); cluster mode sends them through
//! the DFSM of the tree group and applies them on delivery ([`Cluster`]:
//! both DFSMs, parked and waiting requests, the send backlog). The logic
//! that drives them is in `mutation.rs` (both modes) and `cluster.rs`;
//! this module holds their state and what needs nothing else.

use std::collections::HashMap;

use pmxcfs_cpg::dcdb::Dcdb;
use pmxcfs_cpg::dfsm::{Dfsm, MemberId, Message};
use pmxcfs_cpg::kvstore::{ClusterLog, Kvstore};
use pmxcfs_cpg::wire::{DCDB_PROTOCOL_VERSION, DcdbType, FusePayload, KVSTORE_PROTOCOL_VERSION};
use pmxcfs_store::{ApplyPermit, Op, Session};

use crate::clock::now_secs;
use crate::error::FsError;
use crate::plan::{Outcome, PlanOp, ReplyKind, reply_unique};
use crate::quorum::Proposal;
use crate::wire::{EntryOut, OpenOut, OutHeader, read_at, reply_error};

/// The replicator of changes: local mode applies them at once, cluster
/// mode by the DFSM on delivery (`mutation.rs`); in both the DCDB
/// application owns the session.
/// One per process: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    Local(Local),
    Cluster(Box<Cluster>),
}

/// Local mode's replicator: the tree's apply path without a group.
pub(crate) struct Local {
    /// The DCDB application, never joined to a group: its
    /// [`Dcdb::apply_op`] is the apply of both modes.
    pub(crate) dcdb: Dcdb<'static, 'static>,
    /// When a store that failed to write may be tried again.
    pub(crate) recover_after: Option<std::time::Instant>,
}

impl Local {
    pub(crate) fn new(dcdb: Dcdb<'static, 'static>) -> Local {
        Local {
            dcdb,
            recover_after: None,
        }
    }

    /// A store that failed a write (a full disk) refuses every change with
    /// the failure's errno; it is tried again at most once a second.
    pub(crate) fn writable(&mut self) -> Result<(), FsError> {
        let session = self.dcdb.parts().0;
        if !session.is_poisoned() {
            return Ok(());
        }
        let now = std::time::Instant::now();
        if self.recover_after.is_none_or(|at| now >= at) {
            self.recover_after = Some(now + std::time::Duration::from_secs(1));
            if let Err(error) = session.recover() {
                tracing::debug!(%error, "the store still cannot write");
            }
        }
        match session.poison_errno() {
            Some(code) => Err(FsError::from_errno(code)),
            None => Ok(()),
        }
    }
}

/// The node id a successful CREATE reply (entry and open) opened.
fn created_and_opened(reply: &[u8]) -> Option<u64> {
    let header = read_at::<OutHeader>(reply, 0)?;
    let create_len = size_of::<OutHeader>() + size_of::<EntryOut>() + size_of::<OpenOut>();
    (header.error == 0 && reply.len() == create_len)
        .then(|| read_at::<EntryOut>(reply, size_of::<OutHeader>()).map(|entry| entry.node_id))
        .flatten()
}

/// Taken requests' replies, and which io_uring queue each came from.
#[derive(Default)]
pub(crate) struct Replies {
    pub(crate) ready: Vec<Vec<u8>>,
    /// FUSE uniques of taken requests that came through an io_uring queue
    /// (its index): their replies are committed by that queue.
    pub(crate) uring_origin: HashMap<u64, u16>,
}

impl Replies {
    pub(crate) fn push(&mut self, reply: Vec<u8>) {
        self.ready.push(reply);
    }

    /// Every reply ready (tests).
    #[cfg(test)]
    pub(crate) fn take_ready(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.ready)
    }

    /// Replies ready now (a mark for [`Replies::fail_since`]).
    pub(crate) fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// The replies made ready since `mark` answer `errno` instead (their
    /// changes did not reach the disk). Returns the node ids the CREATE
    /// replies among them opened (the kernel will not release them).
    pub(crate) fn fail_since(&mut self, mark: usize, errno: i32) -> Vec<u64> {
        let mut opened = Vec::new();
        for reply in self.ready.iter_mut().skip(mark) {
            if let Some(node_id) = created_and_opened(reply) {
                opened.push(node_id);
            }
            *reply = reply_error(reply_unique(reply), errno);
        }
        opened
    }
}

/// The two CPG groups of a node, each with its DFSM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// `pve_dcdb_v1`: the replicated tree.
    Dcdb,
    /// `pve_kvstore_v1`: status, node IPs, cluster log, "online".
    Kvstore,
}

impl Group {
    pub const ALL: [Group; 2] = [Group::Dcdb, Group::Kvstore];

    /// The CPG group name (joined with its NUL, as the C daemon does).
    pub fn name(self) -> &'static str {
        match self {
            Group::Dcdb => "pve_dcdb_v1",
            Group::Kvstore => "pve_kvstore_v1",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// At most this many (node id → name) pairs are remembered for the
/// invalidation after a resync; at the bound the record starts over (what
/// it held is then not invalidated by a resync: the kernel's entries expire
/// after their 10 s TTL).
pub(crate) const KNOWN_MAX: usize = 1 << 20;

/// A request whose first message is sent: answered once its last one has
/// its result, or at its first failure.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) outcome: Outcome,
    pub(crate) reply: ReplyKind,
    /// Ops not sent yet, in order: each goes out after the previous one
    /// succeeded.
    pub(crate) rest: std::collections::VecDeque<PlanOp<'static>>,
}

/// The DCDB message of an operation (spec/filesystem.md §6.3).
fn encode_op(op: &Op<'_>) -> Result<(DcdbType, Vec<u8>), FsError> {
    let plain = |path| FusePayload {
        offset: 0,
        flags: 0,
        path,
        to: None,
        data: &[],
    };
    let (kind, payload) = match *op {
        Op::Create { path } => (DcdbType::Create, plain(path)),
        Op::Mkdir { path } => (DcdbType::Mkdir, plain(path)),
        Op::Delete { path } => (DcdbType::Delete, plain(path)),
        Op::Rename { from, to } => (
            DcdbType::Rename,
            FusePayload {
                to: Some(to),
                ..plain(from)
            },
        ),
        Op::Write {
            path,
            offset,
            data,
            truncate,
        } => (
            DcdbType::Write,
            FusePayload {
                // Beyond 4 GiB is beyond the 1 MiB limit anyway.
                offset: u32::try_from(offset).map_err(|_| FsError::TooBig)?,
                flags: u32::from(truncate),
                data,
                ..plain(path)
            },
        ),
        Op::Mtime { path, mtime } => (
            DcdbType::Mtime,
            FusePayload {
                offset: mtime,
                ..plain(path)
            },
        ),
    };
    let mut out = Vec::with_capacity(32 + payload.path.len() + payload.data.len());
    payload.encode(&mut out).map_err(|_| FsError::Invalid)?;
    Ok((kind, out))
}

/// Requests that wait for the write gate ([`Dfsm::write_gate`]) at most.
/// More get EAGAIN at once.
pub(crate) const MAX_WAITING: usize = 1024;
/// How long a request waits for the write gate before it gets EACCES.
pub(crate) const WAIT_FOR_GATE: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes waiting to be multicast (the link's send queues plus what the
/// DFSMs emitted) above which new writes wait at the gate and status updates
/// are held back (corosync's flow control, or a stuck corosync).
pub(crate) const MAX_SEND_BACKLOG: usize = 32 << 20;
/// Distinct status keys held back while the send backlog is full at most.
pub(crate) const MAX_HELD_STATUS: usize = 4096;
/// Delivered DCDB messages of one dispatch applied under one lock hold and
/// committed together at most (readers wait for the lock meanwhile).
pub(crate) const DELIVERIES_PER_COMMIT: usize = 64;

/// Approximate bytes of a message on the wire (payload plus headers).
pub(crate) fn message_size(msg: &Message) -> usize {
    use pmxcfs_cpg::dfsm::MessageBody;
    48 + match &msg.body {
        MessageBody::Normal { payload, .. } | MessageBody::Update { payload, .. } => payload.len(),
        MessageBody::State { blob, .. } => blob.len(),
        _ => 0,
    }
}

/// A request parked before sending: the group is synchronising or holds no
/// majority of the votes. Its raw bytes are kept: it is planned again when
/// the gate opens, against the tree as it is then (a resync may have
/// changed what it names).
pub(crate) struct Waiting {
    pub(crate) unique: u64,
    pub(crate) request: Vec<u8>,
    pub(crate) deadline: std::time::Instant,
}

pub(crate) struct Cluster {
    /// [`Dfsm::take_kept_if_changed`]'s mark of what the daemon last kept.
    pub(crate) kept_seen: u64,
    pub(crate) dfsm: Dfsm<Dcdb<'static, 'static>>,
    pub(crate) kv: Dfsm<Kvstore>,
    pub(crate) parked: HashMap<u64, Parked>,
    pub(crate) by_count: HashMap<u64, u64>,
    pub(crate) outgoing: Vec<(Group, Message)>,
    pub(crate) leave: [bool; 2],
    /// Node ids handed to the kernel with the (parent, name) they were
    /// looked up under: what a resync must invalidate.
    pub(crate) known: HashMap<u64, (u64, Vec<u8>)>,
    /// corosync.conf changed: `Some(notify)` (notify = the change came from
    /// this node), for the daemon's copy to /etc/corosync.
    pub(crate) corosync_conf: Option<bool>,
    /// Counts of own messages whose parked request got a success result in
    /// this pump: their changes were made through this kernel, which knows.
    pub(crate) answered_ok: std::collections::HashSet<u64>,
    /// The tree group's members and sync state last logged.
    pub(crate) logged_members: Vec<u32>,
    pub(crate) logged_synced: bool,
    /// Requests waiting for the write gate, oldest first.
    pub(crate) waiting: std::collections::VecDeque<Waiting>,
    /// The gate's last state, for one log line per change.
    pub(crate) logged_gate: Option<pmxcfs_cpg::dfsm::WriteGate>,
    /// `retry_waiting` is running (it re-enters through `pump`).
    pub(crate) retrying: bool,
    /// Bytes in the link's send queues (told by the daemon).
    pub(crate) send_backlog: usize,
    /// Status updates held back while the backlog is full: the latest
    /// payload per key (sent when it drains).
    pub(crate) held_status: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    /// Cluster log messages not multicast because the backlog was full
    /// (they reach the others with the next kvstore sync).
    pub(crate) dropped_log: u64,
}

impl Cluster {
    pub(crate) fn new(
        session: Session<'static>,
        permit: ApplyPermit,
        nodename: &str,
        node_ip: Option<String>,
        log: ClusterLog,
    ) -> Cluster {
        let dcdb = Dcdb::owned(session, permit);
        let local = MemberId::new(0, std::process::id());
        let kvstore = Kvstore::new(nodename, node_ip, log);
        Cluster {
            dfsm: Dfsm::new(local, DCDB_PROTOCOL_VERSION, dcdb),
            kv: Dfsm::new(local, KVSTORE_PROTOCOL_VERSION, kvstore),
            parked: HashMap::new(),
            by_count: HashMap::new(),
            outgoing: Vec::new(),
            leave: [false; 2],
            known: HashMap::new(),
            corosync_conf: None,
            kept_seen: 0,
            answered_ok: std::collections::HashSet::new(),
            logged_members: Vec::new(),
            logged_synced: false,
            waiting: std::collections::VecDeque::new(),
            logged_gate: None,
            retrying: false,
            send_backlog: 0,
            held_status: std::collections::BTreeMap::new(),
            dropped_log: 0,
        }
    }

    /// Bytes waiting to be multicast.
    pub(crate) fn backlog(&self) -> usize {
        self.send_backlog
            + self
                .outgoing
                .iter()
                .map(|(_, msg)| message_size(msg))
                .sum::<usize>()
    }

    pub(crate) fn backlogged(&self) -> bool {
        self.backlog() > MAX_SEND_BACKLOG
    }

    pub(crate) fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn session(&self) -> &Session<'static> {
        self.dfsm.app().session()
    }

    /// The tree's DFSM is in sync with the group (mode SYNCED).
    pub(crate) fn synced(&self) -> bool {
        self.dfsm.mode() == pmxcfs_cpg::dfsm::Mode::Synced
    }

    pub(crate) fn parked_count(&self) -> usize {
        self.parked.len()
    }

    pub(crate) fn outgoing_count(&self) -> usize {
        self.outgoing.len()
    }

    /// Both DFSM groups as `pmxcfs status` shows them.
    pub(crate) fn group_reports(&self) -> Vec<crate::report::GroupReport> {
        fn report<A: pmxcfs_cpg::dfsm::Application>(
            name: &'static str,
            dfsm: &Dfsm<A>,
        ) -> crate::report::GroupReport {
            let epoch = dfsm.sync_epoch();
            crate::report::GroupReport {
                name,
                mode: format!("{:?}", dfsm.mode()).to_lowercase(),
                epoch: epoch.epoch,
                epoch_node_id: epoch.node_id,
                members: dfsm.members().count(),
                synced_members: dfsm.members().filter(|(_, synced)| *synced).count(),
                leader_node_id: dfsm.lowest_node_id(),
                queued: dfsm.queued().len(),
                sync_queued: dfsm.sync_queued().len(),
            }
        }
        vec![
            report(Group::Dcdb.name(), &self.dfsm),
            report(Group::Kvstore.name(), &self.kv),
        ]
    }

    pub(crate) fn parts(&mut self) -> (&mut Session<'static>, &mut ApplyPermit) {
        self.dfsm.app_mut().parts()
    }

    pub(crate) fn into_session(self) -> Session<'static> {
        let Cluster {
            mut dfsm, mut kv, ..
        } = self;
        dfsm.shutdown();
        kv.shutdown();
        match dfsm.into_app().into_parts() {
            Some((session, _permit)) => session,
            // Dcdb::owned always holds its parts.
            None => unreachable!("the cluster's DCDB owns its session"),
        }
    }

    /// Multicasts one proposal; only a value that passed the quorum gate
    /// can be sent.
    pub(crate) fn send(&mut self, proposal: Proposal<'_>) -> Result<u64, FsError> {
        let (kind, payload) = encode_op(proposal.op())?;
        self.dfsm
            .send_normal(kind as u16, payload, now_secs())
            .map_err(|_| FsError::Denied)
    }
}
