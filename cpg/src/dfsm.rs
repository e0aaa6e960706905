//! The DFSM replication state machine of the C daemon (dfsm.c), sans-IO.
//!
//! Spec: spec/dfsm.md §3–§8 (modes, confchg and epochs, delivery rules,
//! queues, synchronous results, lifecycle). The machine is deterministic: it
//! owns no threads, sockets or clocks. The caller feeds it
//!
//! * [`Dfsm::on_confchg`] for every CPG configuration change,
//! * [`Dfsm::on_deliver`] for every delivered CPG message (already decoded
//!   into a [`Message`]; the byte adapter lives elsewhere),
//! * [`Dfsm::send_normal`] / [`Dfsm::send_normal_async`] for local proposals,
//! * [`Dfsm::request_verify`] from the verify timer,
//! * [`Dfsm::restart`] when re-initialising after a LEAVE,
//! * [`Dfsm::on_send_failed`] when a multicast it asked for failed,
//!
//! each with the current wall-clock seconds (`now`, `time(NULL)` truncated to
//! u32 as in the C headers). After every input the caller drains the
//! [`Action`]s ([`Dfsm::poll_action`]) and executes them **in order and before
//! feeding the next input**: C sends synchronously inside its callbacks, so
//! a multicast must enter the CPG total order before anything this process
//! does in reaction to a later event.
//!
//! The application side (DCDB, kvstore) implements [`Application`]; its
//! callbacks get a [`Ctx`] through which they may send asynchronous NORMAL
//! messages (kvstore updates, DCDB unlock messages), exactly as the C
//! callbacks call `dfsm_send_message`.
//!
//! Deliberate differences from C, all local to this node (see also the notes
//! at the items):
//! * VERIFY_REQUEST / VERIFY received in START_SYNC or UPDATE mode are
//!   ignored. C logs "ignore verify message while not synced" and then falls
//!   through into its leave path (spec §6.2 "C quirk"); that only makes the
//!   local node rejoin, nobody else can observe the difference.
//! * Entering ERROR or VERSION_ERROR fails all waiting writers at once
//!   (C leaves them blocked until the process exits, spec §7.4).
//! * [`Dfsm::send_normal`] refuses in an error mode (C would multicast if the
//!   CPG handle is still joined and keep the writer blocked until the restart,
//!   which ends in the same `-EACCES`).
//! * Send failures are reported back asynchronously through
//!   [`Dfsm::on_send_failed`], so e.g. a failed SYNC_START still ran the
//!   application's confchg callback (C skips it).
//!
//! Protocol properties kept from C on purpose (a Rust node must order and
//! apply exactly like the C nodes in its group); found and reproduced by
//! `tests/dfsm_sim.rs` (`c_quirk_*` tests), see its module docs:
//! * a NORMAL message of a member that is not synced yet, delivered between
//!   the last STATE and UPDATE_COMPLETE, is applied in CPG order by the
//!   SYNCED members but after queue 2 by the updating ones: SYNCED members of
//!   one configuration can diverge (until a VERIFY round or a resync), and a
//!   join before UPDATE_COMPLETE makes the SYNCED members apply it twice;
//! * queue 2 is discarded by every confchg, and the resync leader's state
//!   replaces the others' wholesale (highest version, then mtime): writes
//!   acknowledged on one branch of a forked history (queue-2 discard, or a
//!   quorate partition whose group lacks the holders) are lost at the merge.
//!
//! [`Dfsm::set_write_safety`] closes both for groups of our nodes without a
//! byte of difference on the wire (a synced member holds what the updating
//! members hold, writes need a majority of the configured votes, a member
//! that leaves on its own keeps applying until its confchg); off by default,
//! i.e. the C behaviour above.

use std::collections::{BTreeSet, VecDeque};

#[cfg(test)]
mod tests;

/// DFSM message type values (base header `type`, spec §3).
pub mod msg_type {
    /// Application message.
    pub const NORMAL: u16 = 0;
    /// Start of a state exchange, sent by the lowest node id.
    pub const SYNC_START: u16 = 1;
    /// A member's state blob.
    pub const STATE: u16 = 2;
    /// One update from the leader.
    pub const UPDATE: u16 = 3;
    /// End of the leader's updates.
    pub const UPDATE_COMPLETE: u16 = 4;
    /// Checksum round request (payload: csum_id).
    pub const VERIFY_REQUEST: u16 = 5;
    /// The requester's checksum (payload: csum_id, 32 checksum bytes).
    pub const VERIFY: u16 = 6;
}

/// `-EACCES`: the answer of a local writer whose message was not processed
/// (the DFSM was re-initialised, shut down or broke down first, a local
/// message with a higher count was delivered first, or the send failed).
pub const RESULT_ABORTED: i32 = -13;

/// `-EPERM`: the result slot value the DFSM pre-sets before the application
/// callback runs; a callback failing without a result leaves it there.
pub const RESULT_UNSET: i32 = -1;

/// Queue 1 + queue 2 hold at most this many messages ...
pub const MAX_QUEUED_MESSAGES: usize = 65_536;
/// ... or about this many bytes; at the bound the member leaves and resyncs.
pub const MAX_QUEUED_BYTES: usize = 256 << 20;

/// Write safety keeps this node's own applied writes this long (seconds of
/// the DFSM clock) for the own-delivery check ([`Application::write_footprint`]):
/// far longer than corosync takes to report a partition (token + consensus
/// timeouts, a few seconds).
pub const OWN_WRITES_KEPT_SECS: u32 = 60;
/// ... and at most this many of them, or about this many payload bytes (the
/// oldest go first, logged).
pub const OWN_WRITES_KEPT: usize = 1024;
pub const OWN_WRITES_KEPT_BYTES: usize = 32 << 20;

/// What a NORMAL message changes, as the application sees it: one (key,
/// fingerprint of its state; `None` = absent) per thing the message touches
/// ([`Application::write_footprint`]).
pub type Footprint = Vec<(Vec<u8>, Option<u64>)>;

/// An own write a majority may lack, as kept across a restart
/// ([`Dfsm::take_kept_if_changed`], [`Dfsm::restore_kept`], the file format
/// in [`crate::kept`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptWrite {
    pub subtype: u16,
    pub payload: Vec<u8>,
    pub before: Footprint,
    pub after: Footprint,
}

/// A write of this node that it applied and acknowledged, with its
/// footprint before and after: kept until a configuration change shows a
/// majority holds it (write safety, the own-delivery window).
#[derive(Clone, Debug)]
struct OwnWrite {
    time: u32,
    subtype: u16,
    payload: Vec<u8>,
    before: Footprint,
    after: Footprint,
}

/// A CPG member: node id and process id.
///
/// The order (node id, then pid) is the member table order of the C daemon
/// (`dfsm_sync_info_compare`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    /// Corosync node id.
    pub node_id: u32,
    /// Process id of the member on that node.
    pub pid: u32,
}

impl MemberId {
    /// Builds a member id.
    pub const fn new(node_id: u32, pid: u32) -> Self {
        Self { node_id, pid }
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.node_id, self.pid)
    }
}

/// A synchronisation epoch (state header bytes 16..32). Compared as a whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Epoch {
    /// Per-process counter of the creator, incremented on every confchg.
    pub epoch: u32,
    /// Creator's wall clock at the confchg.
    pub time: u32,
    /// Creator node id.
    pub node_id: u32,
    /// Creator pid.
    pub pid: u32,
}

/// The DFSM mode (spec §4). Values ≥ 128 are error modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Initialised/joined, no configuration seen yet.
    Start = 0,
    /// Configuration changed, state exchange in progress.
    StartSync = 1,
    /// In sync; NORMAL messages are applied immediately.
    Synced = 2,
    /// State exchange done, waiting for the leader's updates.
    Update = 3,
    /// Leave the group and rejoin later (restartable).
    Leave = 253,
    /// Saw a newer protocol version (permanent).
    VersionError = 254,
    /// Serious internal error (permanent).
    Error = 255,
}

impl Mode {
    /// The numeric value used by the C daemon.
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// Error modes are LEAVE, VERSION_ERROR and ERROR.
    pub const fn is_error(self) -> bool {
        self.value() >= 128
    }

    /// LEAVE can be restarted; VERSION_ERROR and ERROR cannot.
    pub const fn is_restartable(self) -> bool {
        !matches!(self, Mode::VersionError | Mode::Error)
    }
}

/// A decoded DFSM message: the base header fields every message has, plus
/// the type-specific part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Base header `protocol_version` (1 DCDB, 0 kvstore).
    pub protocol_version: u32,
    /// Base header `time`: the sender's wall clock when it built the message.
    pub time: u32,
    /// Type-specific part.
    pub body: MessageBody,
}

/// The type-specific part of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Type 0: application message.
    Normal {
        /// Application message type.
        subtype: u16,
        /// Per-sender message counter (spec §7.4).
        count: u64,
        /// Bytes after the 24-byte header.
        payload: Vec<u8>,
    },
    /// Type 1.
    SyncStart {
        /// Epoch of the lowest node, adopted by everybody.
        epoch: Epoch,
    },
    /// Type 2.
    State {
        /// Epoch of the state exchange.
        epoch: Epoch,
        /// The sender's application state.
        blob: Vec<u8>,
    },
    /// Type 3.
    Update {
        /// Epoch of the state exchange.
        epoch: Epoch,
        /// One application update.
        payload: Vec<u8>,
    },
    /// Type 4.
    UpdateComplete {
        /// Epoch of the state exchange.
        epoch: Epoch,
    },
    /// Type 5 with exactly 8 payload bytes.
    VerifyRequest {
        /// Epoch of the current configuration.
        epoch: Epoch,
        /// Verification round id.
        csum_id: u64,
    },
    /// Type 6 with exactly 40 payload bytes.
    Verify {
        /// Epoch of the current configuration.
        epoch: Epoch,
        /// Verification round id.
        csum_id: u64,
        /// The requester's checksum.
        checksum: [u8; 32],
    },
    /// Bytes the decoder could not turn into one of the above; the DFSM reacts
    /// exactly as C does to such a message.
    Malformed(Malformed),
}

/// How a received message was malformed (see [`MessageBody::Malformed`]).
///
/// Mapping for the byte adapter: fewer than 16 bytes → [`Malformed::Runt`]
/// (its `protocol_version`/`time` are ignored); type 0 with fewer than 24
/// bytes, or any other type with fewer than 32 bytes →
/// [`Malformed::ShortHeader`]; a complete 32-byte state header with an
/// unknown type (≥ 7), or VERIFY_REQUEST/VERIFY whose payload is not exactly
/// 8/40 bytes → [`Malformed::BadState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than the 16-byte base header.
    Runt,
    /// Shorter than the header its type needs.
    ShortHeader {
        /// Base header `type`.
        msg_type: u16,
    },
    /// Complete state header, unusable type or payload.
    BadState {
        /// Base header `type`.
        msg_type: u16,
        /// State header epoch.
        epoch: Epoch,
    },
}

impl Message {
    /// The base header `type` value.
    pub fn msg_type(&self) -> u16 {
        self.body.msg_type()
    }

    /// The state header epoch, for state messages.
    pub fn epoch(&self) -> Option<Epoch> {
        self.body.epoch()
    }
}

impl MessageBody {
    /// The base header `type` value (`u16::MAX` for [`Malformed::Runt`]).
    pub fn msg_type(&self) -> u16 {
        match self {
            MessageBody::Normal { .. } => msg_type::NORMAL,
            MessageBody::SyncStart { .. } => msg_type::SYNC_START,
            MessageBody::State { .. } => msg_type::STATE,
            MessageBody::Update { .. } => msg_type::UPDATE,
            MessageBody::UpdateComplete { .. } => msg_type::UPDATE_COMPLETE,
            MessageBody::VerifyRequest { .. } => msg_type::VERIFY_REQUEST,
            MessageBody::Verify { .. } => msg_type::VERIFY,
            MessageBody::Malformed(Malformed::Runt) => u16::MAX,
            MessageBody::Malformed(
                Malformed::ShortHeader { msg_type } | Malformed::BadState { msg_type, .. },
            ) => *msg_type,
        }
    }

    /// The state header epoch, for state messages.
    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            MessageBody::SyncStart { epoch }
            | MessageBody::State { epoch, .. }
            | MessageBody::Update { epoch, .. }
            | MessageBody::UpdateComplete { epoch }
            | MessageBody::VerifyRequest { epoch, .. }
            | MessageBody::Verify { epoch, .. }
            | MessageBody::Malformed(Malformed::BadState { epoch, .. }) => Some(*epoch),
            _ => None,
        }
    }
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Encode and `cpg_mcast_joined(CPG_TYPE_AGREED)` this message. On
    /// failure call [`Dfsm::on_send_failed`].
    Multicast(Message),
    /// The DFSM entered an error mode: leave the CPG group (`cpg_leave`).
    /// LEAVE is restartable ([`Dfsm::restart`], C waits at least 6 s).
    Leave,
    /// Answer for the local writer of message `count` (registered by
    /// [`Dfsm::send_normal`]): the application result when the message was
    /// processed (the pre-set [`RESULT_UNSET`] if the callback failed without
    /// one), [`RESULT_ABORTED`] when it was not.
    Result {
        /// Message counter of the write.
        count: u64,
        /// Result for the writer.
        result: i32,
    },
    /// The mode changed (only emitted on actual changes).
    ModeChanged(Mode),
}

/// Failure reported by an application callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppError {
    /// Switch to the permanent ERROR mode instead of LEAVE (C:
    /// `dfsm_set_errormode`, e.g. after a database failure).
    pub fatal: bool,
    /// Only for [`Application::deliver`] of a local message: the result the
    /// writer gets (C: whatever the callback stored in its result slot before
    /// failing; [`RESULT_UNSET`] if nothing).
    pub result: i32,
}

impl AppError {
    /// Leave the group (restartable), writer result [`RESULT_UNSET`].
    pub const LEAVE: AppError = AppError {
        fatal: false,
        result: RESULT_UNSET,
    };
    /// Permanent ERROR mode, writer result [`RESULT_UNSET`].
    pub const FATAL: AppError = AppError {
        fatal: true,
        result: RESULT_UNSET,
    };
}

/// Outcome of [`Application::process_state_update`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDecision {
    /// Synced flag per member, in the order of the members passed in.
    pub synced: Vec<bool>,
    /// `Some` if this node is the leader: the DFSM multicasts one UPDATE per
    /// element and then UPDATE_COMPLETE (sent even when the list is empty).
    /// `None`: send nothing (non-leaders, kvstore).
    pub updates: Option<Vec<Vec<u8>>>,
}

/// The application callbacks (dfsm.h `dfsm_callbacks_t`).
pub trait Application {
    /// A NORMAL message delivered in SYNCED mode (live or from a queue).
    /// `Ok(result)`: the result for the writer (the originating node);
    /// `Err`: the DFSM leaves (or enters ERROR if `fatal`).
    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        subtype: u16,
        time: u32,
        payload: &[u8],
    ) -> Result<i32, AppError>;

    /// The local state blob for a STATE message; empty or `Err` → LEAVE.
    fn get_state(&mut self, ctx: &mut Ctx<'_>) -> Result<Vec<u8>, AppError>;

    /// All members' states arrived (sorted by node id, pid). Decide who is
    /// synced; the leader returns its updates.
    fn process_state_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        states: &[(MemberId, &[u8])],
    ) -> Result<StateDecision, AppError>;

    /// One UPDATE (mode UPDATE).
    fn process_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        payload: &[u8],
    ) -> Result<(), AppError>;

    /// UPDATE_COMPLETE in mode UPDATE: apply the collected updates.
    fn commit(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AppError>;

    /// Free per-round data (called when sync resources are released after
    /// [`Application::process_state_update`] ran).
    fn cleanup(&mut self) {}

    /// Whole-state checksum for VERIFY. `None` if the application has no
    /// checksum (kvstore): VERIFY_REQUEST/VERIFY are then ignored.
    fn checksum(&mut self) -> Option<Result<[u8; 32], AppError>> {
        None
    }

    /// The DFSM entered SYNCED.
    fn synced(&mut self, _ctx: &mut Ctx<'_>) {}

    /// Write safety's own-delivery check: the current state of what the
    /// NORMAL message (`subtype`, `payload`) changes, in an order that
    /// depends only on the message. `None`: not a write to keep (the DFSM
    /// then never re-sends it). Called before and after an own write is
    /// applied, and again after a resync that may have erased it.
    fn write_footprint(&mut self, _subtype: u16, _payload: &[u8]) -> Option<Footprint> {
        None
    }

    /// The keys of [`Application::write_footprint`] without their state
    /// (called for every write of another member applied while own writes
    /// are kept, so it should not read the state).
    fn write_keys(&mut self, subtype: u16, payload: &[u8]) -> Option<Vec<Vec<u8>>> {
        self.write_footprint(subtype, payload)
            .map(|footprint| footprint.into_iter().map(|(key, _)| key).collect())
    }

    /// A configuration change was processed (not called when the DFSM
    /// ignored it or left, spec §5 step 10).
    fn confchg(&mut self, _ctx: &mut Ctx<'_>, _members: &[MemberId]) {}
}

/// The configured votes of the cluster's nodes (corosync.conf nodelist),
/// for [`Dfsm::set_write_safety`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Votes {
    /// (node id, votes), one entry per configured node.
    nodes: Vec<(u32, u32)>,
    total: u64,
}

impl Votes {
    /// From the nodelist: (node id, quorum votes). Duplicate node ids count
    /// once (the first entry).
    pub fn new(nodes: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let mut list: Vec<(u32, u32)> = Vec::new();
        for (id, v) in nodes {
            if !list.iter().any(|&(x, _)| x == id) {
                list.push((id, v));
            }
        }
        let total = list.iter().map(|&(_, v)| u64::from(v)).sum();
        Self { nodes: list, total }
    }

    /// Sum of all configured votes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Do the distinct nodes among `node_ids` hold more than half of the
    /// configured votes? (Node ids not in the nodelist have no votes.)
    pub fn majority(&self, node_ids: impl IntoIterator<Item = u32>) -> bool {
        let mut seen: Vec<u32> = Vec::new();
        let mut sum = 0u64;
        for id in node_ids {
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            if let Some(&(_, v)) = self.nodes.iter().find(|&&(x, _)| x == id) {
                sum += u64::from(v);
            }
        }
        sum * 2 > self.total
    }
}

/// May a local writer send now ([`Dfsm::write_gate`])?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteGate {
    /// Send.
    Open,
    /// Wait: this member is not SYNCED, or a member of the configuration is
    /// still being synchronised.
    Syncing,
    /// Wait: the group's members hold no majority of the configured votes.
    NoMajority,
    /// Refuse: the DFSM is in an error mode.
    Error,
}

/// What application callbacks may do with the DFSM.
pub struct Ctx<'a> {
    core: &'a mut Core,
}

impl Ctx<'_> {
    /// The local member.
    pub fn local(&self) -> MemberId {
        self.core.local
    }

    /// The `now` of the input being processed.
    pub fn now(&self) -> u32 {
        self.core.now
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.core.mode
    }

    /// `dfsm_lowest_nodeid`: the local node has the lowest node id of the
    /// current configuration.
    pub fn lowest_node_id_is_local(&self) -> bool {
        self.core.lowest_node_id != 0 && self.core.lowest_node_id == self.core.local.node_id
    }

    /// The count of the NORMAL message being delivered (in
    /// [`Application::deliver`]), `None` elsewhere.
    pub fn message_count(&self) -> Option<u64> {
        self.core.delivering
    }

    /// Multicasts an asynchronous NORMAL message (no result slot) and returns
    /// its count.
    pub fn send_normal(&mut self, subtype: u16, payload: Vec<u8>) -> u64 {
        self.core.send_normal(subtype, payload, false)
    }
}

/// Why [`Dfsm::send_normal`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The DFSM is in an error mode; the writer gets `-EACCES`.
    #[error("dfsm is in error mode {0:?}")]
    ErrorMode(Mode),
}

/// Why [`Dfsm::restart`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    /// ERROR and VERSION_ERROR are permanent for the process lifetime.
    #[error("dfsm is not restartable (mode {0:?})")]
    NotRestartable(Mode),
}

/// A NORMAL message held in one of the two queues (spec §7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    /// CPG sender.
    pub sender: MemberId,
    /// Message counter from the NORMAL header.
    pub count: u64,
    /// The whole message (resent unchanged, spec §5 step 8).
    pub msg: Message,
}

#[derive(Clone, Debug)]
struct MemberInfo {
    id: MemberId,
    synced: bool,
    state: Option<Vec<u8>>,
}

/// Everything except the application, so that callbacks can borrow it.
#[derive(Debug)]
struct Core {
    local: MemberId,
    protocol_version: u32,
    now: u32,
    mode: Mode,
    /// Member table, sorted by (node_id, pid). `None` before the first confchg.
    /// Like C it survives restarts; only a confchg rebuilds it.
    members: Option<Vec<MemberInfo>>,
    lowest_node_id: u32,
    local_epoch_counter: u32,
    sync_epoch: Epoch,
    /// Queue 1, sorted by count (stable: after equal counts).
    queue: Vec<QueuedMessage>,
    /// Queue 2, arrival order.
    sync_queue: Vec<QueuedMessage>,
    /// The application has per-round data (C: `sync_info->data`).
    app_sync_data: bool,
    msgcount: u64,
    msgcount_rcvd: u64,
    /// Result slots of waiting local writers.
    waiters: BTreeSet<u64>,
    /// Counts re-multicast by the last resend (a failure of those → LEAVE).
    resent: BTreeSet<u64>,
    csum: [u8; 32],
    csum_epoch: Epoch,
    csum_id: u64,
    csum_counter: u64,
    actions: VecDeque<Action>,
    /// The count of the NORMAL message being delivered to the application.
    delivering: Option<u64>,
    /// Write safety (Rust nodes only, [`Dfsm::set_write_safety`]).
    safety: Option<Votes>,
    /// LEAVE entered from SYNCED because a multicast of ours failed (write
    /// safety): until the next confchg the others still count this member
    /// as synced, so it goes on applying NORMAL messages.
    leaving_synced: bool,
    /// Bound of queue 1 + queue 2: (messages, bytes).
    queue_limits: (usize, usize),
    /// Own writes applied in this configuration (write safety), oldest
    /// first, and their payload bytes.
    own_recent: VecDeque<OwnWrite>,
    own_recent_bytes: usize,
    /// Own writes a majority may lack (a configuration change left this node
    /// without a majority, or it rejoined): checked against the tree after
    /// the next resync within a majority, re-sent if it lacks them.
    own_unconfirmed: Vec<OwnWrite>,
    /// Own writes sent again (message count), until we process the message:
    /// if it is dropped instead, they are unconfirmed again.
    own_resent: Vec<(u64, OwnWrite)>,
    /// A superset of the keys of `own_recent` and `own_unconfirmed`: a
    /// write of another member that changes none of them supersedes none of
    /// ours, found without a walk of up to [`OWN_WRITES_KEPT`] writes per
    /// delivery. Rebuilt from the lists when it outgrows them.
    own_keys: std::collections::HashSet<Vec<u8>>,
    /// Counts the changes of `own_unconfirmed` and `own_resent` (what a
    /// restart must keep: [`Dfsm::take_kept_if_changed`]).
    kept_changes: u64,
    /// The DFSM restarted: the next configuration proves nothing about the
    /// writes of the last one.
    rejoining: bool,
}

impl Core {
    fn lookup(&self, id: MemberId) -> Option<&MemberInfo> {
        let members = self.members.as_ref()?;
        members
            .binary_search_by(|m| m.id.cmp(&id))
            .ok()
            .map(|i| &members[i])
    }

    fn send_normal(&mut self, subtype: u16, payload: Vec<u8>, wait: bool) -> u64 {
        self.msgcount += 1;
        let count = self.msgcount;
        if wait {
            self.waiters.insert(count);
        }
        let msg = Message {
            protocol_version: self.protocol_version,
            time: self.now,
            body: MessageBody::Normal {
                subtype,
                count,
                payload,
            },
        };
        self.actions.push_back(Action::Multicast(msg));
        count
    }

    fn state_message(&self, body: MessageBody) -> Message {
        Message {
            protocol_version: self.protocol_version,
            time: self.now,
            body,
        }
    }

    fn multicast_state(&mut self, body: MessageBody) {
        let msg = self.state_message(body);
        self.actions.push_back(Action::Multicast(msg));
    }

    /// `dfsm_record_local_result`: a local NORMAL message was processed.
    /// Every waiter with a count ≤ `count` is released; only the slot of
    /// `count` itself counts as processed.
    fn record_local_result(&mut self, count: u64, result: i32) {
        if self.waiters.remove(&count) {
            self.actions.push_back(Action::Result { count, result });
        }
        self.msgcount_rcvd = count;
        self.release_waiters_upto(count);
    }

    fn release_waiters_upto(&mut self, upto: u64) {
        while let Some(&first) = self.waiters.first() {
            if first > upto {
                break;
            }
            self.waiters.remove(&first);
            self.actions.push_back(Action::Result {
                count: first,
                result: RESULT_ABORTED,
            });
        }
    }

    /// Keeps an own write that was just applied (write safety).
    fn remember_own(&mut self, write: OwnWrite) {
        while let Some(first) = self.own_recent.front() {
            let expired = write.time.saturating_sub(first.time) > OWN_WRITES_KEPT_SECS;
            let full = self.own_recent.len() >= OWN_WRITES_KEPT
                || self.own_recent_bytes + write.payload.len() > OWN_WRITES_KEPT_BYTES;
            if !expired && !full {
                break;
            }
            if full && !expired {
                // Harmless unless a partition follows within the bound: only
                // writes delivered between a cut and its confchg matter, and
                // after a cut nothing more is delivered.
                tracing::debug!(
                    kept = self.own_recent.len(),
                    "own-write check: bound reached, the oldest write is no longer kept"
                );
            }
            if let Some(first) = self.own_recent.pop_front() {
                self.own_recent_bytes -= first.payload.len();
            }
        }
        self.own_recent_bytes += write.payload.len();
        self.keep_keys(&write);
        self.own_recent.push_back(write);
        self.trim_own_keys();
    }

    /// Adds `write`'s keys to the superset of kept keys.
    fn keep_keys(&mut self, write: &OwnWrite) {
        for (key, _) in write.after.iter().chain(&write.before) {
            if !self.own_keys.contains(key) {
                self.own_keys.insert(key.clone());
            }
        }
    }

    /// Rebuilds the superset of kept keys from the lists once it holds more
    /// than twice what they could (each write has at most 2 keys), so it
    /// stays bounded while writes come and go (amortized O(1) per write).
    fn trim_own_keys(&mut self) {
        let kept = self.own_recent.len() + self.own_unconfirmed.len();
        if self.own_keys.len() <= 4 * kept + 64 {
            return;
        }
        let mut keys = std::mem::take(&mut self.own_keys);
        keys.clear();
        for write in self.own_recent.iter().chain(&self.own_unconfirmed) {
            for (key, _) in write.after.iter().chain(&write.before) {
                if !keys.contains(key) {
                    keys.insert(key.clone());
                }
            }
        }
        self.own_keys = keys;
    }

    /// Our message `count` will not be applied: if it re-sent an own write,
    /// that write is unconfirmed again (after the recent ones, which it
    /// follows: it was sent after they were applied or found held).
    fn resend_dropped(&mut self, count: u64) {
        let Some(at) = self.own_resent.iter().position(|(c, _)| *c == count) else {
            return;
        };
        let (_, write) = self.own_resent.remove(at);
        self.kept_changes += 1;
        tracing::warn!(
            count,
            "a re-sent own write was not applied: checked again later"
        );
        self.own_recent_bytes = 0;
        self.own_unconfirmed.extend(self.own_recent.drain(..));
        self.keep_keys(&write);
        self.own_unconfirmed.push(write);
        self.bound_unconfirmed();
    }

    /// The unconfirmed writes have the bounds of the recent ones (several
    /// partitions in a row without a resync within a majority add up): the
    /// oldest go first, logged; they are no longer checked nor re-sent.
    fn bound_unconfirmed(&mut self) {
        let mut bytes: usize = self.own_unconfirmed.iter().map(|w| w.payload.len()).sum();
        let mut dropped = 0;
        while self.own_unconfirmed.len() - dropped > OWN_WRITES_KEPT
            || bytes > OWN_WRITES_KEPT_BYTES
        {
            bytes -= self.own_unconfirmed[dropped].payload.len();
            dropped += 1;
        }
        if dropped > 0 {
            self.own_unconfirmed.drain(..dropped);
            tracing::warn!(
                dropped,
                "own-write check: bound of unconfirmed writes reached, the oldest are no longer checked"
            );
        }
    }

    /// Are own writes kept (recent or unconfirmed)?
    fn keeps_own_writes(&self) -> bool {
        !self.own_recent.is_empty() || !self.own_unconfirmed.is_empty()
    }

    /// A write that changed `changed` was applied after our kept writes
    /// (another member's: `recent` too; our own: only the unconfirmed
    /// ones, the recent ones are a chain `held_prefix` follows): those that
    /// changed any of these keys are dropped, superseded by it. Otherwise
    /// the check would compare an ambiguous state: the later write may have
    /// put a key back to the state before ours (a delete after our create),
    /// which looks as if ours never arrived, and re-sending ours would undo
    /// the later write. (Any member that got the later write got ours
    /// before it, agreed order; if the majority lacks both, the later one
    /// still supersedes ours.)
    fn forget_overwritten_own(&mut self, changed: &[Vec<u8>], recent: bool) {
        if !changed.iter().any(|key| self.own_keys.contains(key)) {
            return;
        }
        let touches = |write: &OwnWrite| {
            write
                .after
                .iter()
                .chain(&write.before)
                .any(|(key, _)| changed.contains(key))
        };
        if recent {
            let kept = self.own_recent.len();
            self.own_recent.retain(|write| !touches(write));
            if self.own_recent.len() != kept {
                self.own_recent_bytes = self.own_recent.iter().map(|w| w.payload.len()).sum();
            }
        }
        let unconfirmed = self.own_unconfirmed.len();
        self.own_unconfirmed.retain(|write| !touches(write));
        if self.own_unconfirmed.len() != unconfirmed {
            self.kept_changes += 1;
        }
        if !self.keeps_own_writes() {
            self.own_keys.clear();
        }
    }

    /// A configuration change (we are a member): virtual synchrony says the
    /// members that moved with us into it delivered what we delivered. If
    /// they hold a majority and nobody joined, our recent writes are safe;
    /// otherwise they are checked after the next resync within a majority.
    fn settle_own_writes(&mut self, nobody_joined: bool) {
        let rejoining = std::mem::take(&mut self.rejoining);
        if self.own_recent.is_empty() {
            return;
        }
        if nobody_joined && !rejoining && self.config_majority() {
            self.own_recent.clear();
            if self.own_unconfirmed.is_empty() {
                self.own_keys.clear();
            }
        } else {
            tracing::info!(
                writes = self.own_recent.len(),
                "own writes of the last configuration: checked after the next resync within a majority"
            );
            self.own_unconfirmed.extend(self.own_recent.drain(..));
            self.bound_unconfirmed();
            self.kept_changes += 1;
        }
        self.own_recent_bytes = 0;
    }

    /// Do the members of the configuration hold a majority of the votes
    /// (true without write safety)?
    fn config_majority(&self) -> bool {
        match &self.safety {
            None => true,
            Some(votes) => votes.majority(self.members.iter().flatten().map(|m| m.id.node_id)),
        }
    }

    /// Do the synced members hold a majority of the votes (true without
    /// write safety)?
    fn synced_majority(&self) -> bool {
        match &self.safety {
            None => true,
            Some(votes) => votes.majority(
                self.members
                    .iter()
                    .flatten()
                    .filter(|m| m.synced)
                    .map(|m| m.id.node_id),
            ),
        }
    }

    /// Queue 2 is dropped by a confchg. On a SYNCED member with write
    /// safety it holds the messages delivered while the synced members were
    /// a minority, which nobody applied: their local writers learn that now.
    fn drop_sync_queue(&mut self) {
        let queue = std::mem::take(&mut self.sync_queue);
        if self.mode != Mode::Synced {
            return;
        }
        for qm in queue {
            if qm.sender == self.local {
                self.resend_dropped(qm.count);
            }
            if qm.sender == self.local && self.waiters.remove(&qm.count) {
                tracing::warn!(
                    "write {} was not applied: the membership changed before a majority was synchronised",
                    qm.count
                );
                self.actions.push_back(Action::Result {
                    count: qm.count,
                    result: RESULT_ABORTED,
                });
            }
        }
    }

    /// Are queue 1 and 2 at their bound ([`Dfsm::set_queue_limits`])? The
    /// byte count is summed every 64 messages (and at the message bound).
    fn queues_full(&self) -> bool {
        let count = self.queue.len() + self.sync_queue.len();
        if count >= self.queue_limits.0 {
            return true;
        }
        if count % 64 != 63 {
            return false;
        }
        let bytes: usize = self
            .queue
            .iter()
            .chain(&self.sync_queue)
            .map(|qm| match &qm.msg.body {
                MessageBody::Normal { payload, .. } => payload.len() + 64,
                _ => 64,
            })
            .sum();
        bytes >= self.queue_limits.1
    }

    /// `dfsm_send_sync_message_abort`.
    fn abort_waiters(&mut self) {
        self.msgcount_rcvd = self.msgcount;
        self.release_waiters_upto(u64::MAX);
    }

    /// Queue a NORMAL message received while not SYNCED (`dfsm_queue_add_message`).
    /// `false` if the sender is not a member. Queue 1 is kept sorted by count
    /// with a new message after equal counts, which is where GLib's
    /// `g_sequence_insert_sorted` puts it (its search continues past equal
    /// elements). C compares with the u64 difference truncated to `int`, which
    /// only differs for counts 2^31 or more apart.
    fn queue_add(&mut self, qm: QueuedMessage) -> bool {
        let Some(sender_synced) = self.lookup(qm.sender).map(|m| m.synced) else {
            return false;
        };
        if self.mode == Mode::Update && sender_synced {
            self.sync_queue.push(qm);
        } else {
            let pos = self.queue.partition_point(|q| q.count <= qm.count);
            self.queue.insert(pos, qm);
        }
        true
    }
}

/// The DFSM of one CPG group (one per DCDB / kvstore).
pub struct Dfsm<A: Application> {
    app: A,
    core: Core,
}

impl<A: Application> std::fmt::Debug for Dfsm<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dfsm")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl<A: Application> Dfsm<A> {
    /// A DFSM in mode START for the member `local` (own node id from
    /// `cpg_local_get`, own pid).
    pub fn new(local: MemberId, protocol_version: u32, app: A) -> Self {
        Self {
            app,
            core: Core {
                local,
                protocol_version,
                now: 0,
                mode: Mode::Start,
                members: None,
                lowest_node_id: 0,
                local_epoch_counter: 0,
                sync_epoch: Epoch::default(),
                queue: Vec::new(),
                sync_queue: Vec::new(),
                app_sync_data: false,
                msgcount: 0,
                msgcount_rcvd: 0,
                waiters: BTreeSet::new(),
                resent: BTreeSet::new(),
                csum: [0; 32],
                csum_epoch: Epoch::default(),
                csum_id: 0,
                csum_counter: 0,
                actions: VecDeque::new(),
                delivering: None,
                safety: None,
                leaving_synced: false,
                queue_limits: (MAX_QUEUED_MESSAGES, MAX_QUEUED_BYTES),
                own_recent: VecDeque::new(),
                own_recent_bytes: 0,
                own_unconfirmed: Vec::new(),
                own_keys: std::collections::HashSet::new(),
                kept_changes: 0,
                own_resent: Vec::new(),
                rejoining: false,
            },
        }
    }

    /// Sets the local member (its node id is known once the CPG connection
    /// is up). Only in mode START, before the first configuration.
    pub fn set_local(&mut self, local: MemberId) -> bool {
        if self.core.mode != Mode::Start {
            return false;
        }
        self.core.local = local;
        true
    }

    // ----- accessors -------------------------------------------------------

    /// The local member.
    pub fn local(&self) -> MemberId {
        self.core.local
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.core.mode
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The application, mutably (e.g. to update quorum information).
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// Consumes the DFSM, returning the application.
    pub fn into_app(self) -> A {
        self.app
    }

    /// The member table (sorted) with the synced flags.
    pub fn members(&self) -> impl Iterator<Item = (MemberId, bool)> + '_ {
        self.core.members.iter().flatten().map(|m| (m.id, m.synced))
    }

    /// The synced flag of `member`, `None` if it is not in the member table.
    pub fn member_synced(&self, member: MemberId) -> Option<bool> {
        self.core.lookup(member).map(|m| m.synced)
    }

    /// Lowest node id of the last configuration (0 before the first).
    pub fn lowest_node_id(&self) -> u32 {
        self.core.lowest_node_id
    }

    /// `dfsm_lowest_nodeid`.
    pub fn lowest_node_id_is_local(&self) -> bool {
        self.core.lowest_node_id != 0 && self.core.lowest_node_id == self.core.local.node_id
    }

    /// The epoch state messages are currently sent with and accepted in.
    pub fn sync_epoch(&self) -> Epoch {
        self.core.sync_epoch
    }

    /// Queue 1 (NORMAL messages waiting for their sender to be synced).
    pub fn queued(&self) -> &[QueuedMessage] {
        &self.core.queue
    }

    /// Queue 2 (messages of synced senders held while in UPDATE mode).
    pub fn sync_queued(&self) -> &[QueuedMessage] {
        &self.core.sync_queue
    }

    /// Counts of local writers still waiting for their result.
    pub fn waiting(&self) -> impl Iterator<Item = u64> + '_ {
        self.core.waiters.iter().copied()
    }

    /// Counter of the last NORMAL message sent.
    pub fn msgcount(&self) -> u64 {
        self.core.msgcount
    }

    /// Next pending action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.core.actions.pop_front()
    }

    /// All pending actions, in order.
    pub fn drain_actions(&mut self) -> impl Iterator<Item = Action> + '_ {
        self.core.actions.drain(..)
    }

    /// Switches on write safety (`Some`: the configured votes) or off
    /// (`None`, the C behaviour). Nothing on the wire changes; with it this
    /// member
    ///
    /// * queues a NORMAL message of a sender that is not synced yet (instead
    ///   of applying it at once in SYNCED mode), so it is applied after the
    ///   updates, in the same order as on the updating members;
    /// * holds (in queue 2, as the updating members do) the NORMAL messages
    ///   of synced senders delivered while the synced members hold no
    ///   majority of the votes, and applies them after UPDATE_COMPLETE in
    ///   the updating members' order; a confchg drops them everywhere (the
    ///   local writer gets [`RESULT_ABORTED`]) — so nothing is applied by a
    ///   minority only and a higher version always means a majority's history;
    /// * leaves (and resyncs) instead of applying a NORMAL message delivered
    ///   in a configuration whose members hold no majority of the votes;
    /// * tells local writers when to wait ([`Dfsm::write_gate`]).
    pub fn set_write_safety(&mut self, votes: Option<Votes>) {
        self.core.safety = votes;
    }

    /// LEAVE entered from SYNCED after a failed multicast (write safety):
    /// the caller should leave the CPG group but go on dispatching until the
    /// confchg that removes this member, which this DFSM still applies
    /// writes for (the others count it as synced until then).
    pub fn leaving_synced(&self) -> bool {
        self.core.leaving_synced
    }

    /// Bounds of queue 1 + queue 2 (messages, bytes); at the bound the
    /// member leaves and resyncs. Defaults: [`MAX_QUEUED_MESSAGES`],
    /// [`MAX_QUEUED_BYTES`].
    pub fn set_queue_limits(&mut self, messages: usize, bytes: usize) {
        self.core.queue_limits = (messages.max(1), bytes);
    }

    /// Whether write safety is on.
    pub fn write_safety(&self) -> Option<&Votes> {
        self.core.safety.as_ref()
    }

    /// May a local writer send now? Without write safety only an error mode
    /// closes the gate (the C rule; quorum is the caller's business).
    pub fn write_gate(&self) -> WriteGate {
        let core = &self.core;
        if core.mode.is_error() {
            return WriteGate::Error;
        }
        if core.safety.is_none() {
            return WriteGate::Open;
        }
        if core.mode != Mode::Synced || core.members.iter().flatten().any(|m| !m.synced) {
            return WriteGate::Syncing;
        }
        if !core.config_majority() {
            return WriteGate::NoMajority;
        }
        WriteGate::Open
    }

    // ----- inputs ----------------------------------------------------------

    /// Local proposal with a result slot (`dfsm_send_message_sync`): returns
    /// its count; an [`Action::Result`] for that count follows eventually.
    pub fn send_normal(
        &mut self,
        subtype: u16,
        payload: Vec<u8>,
        now: u32,
    ) -> Result<u64, SendError> {
        self.send(subtype, payload, now, true)
    }

    /// Asynchronous proposal without a result slot (`dfsm_send_message`,
    /// kvstore and DCDB unlock messages).
    pub fn send_normal_async(
        &mut self,
        subtype: u16,
        payload: Vec<u8>,
        now: u32,
    ) -> Result<u64, SendError> {
        self.send(subtype, payload, now, false)
    }

    fn send(
        &mut self,
        subtype: u16,
        payload: Vec<u8>,
        now: u32,
        wait: bool,
    ) -> Result<u64, SendError> {
        self.core.now = now;
        if self.core.mode.is_error() {
            return Err(SendError::ErrorMode(self.core.mode));
        }
        Ok(self.core.send_normal(subtype, payload, wait))
    }

    /// Verify timer (`dfsm_verify_request`): multicasts a VERIFY_REQUEST if
    /// this node has the lowest node id, is SYNCED and the previous round
    /// completed. Returns whether it did.
    pub fn request_verify(&mut self, now: u32) -> bool {
        self.core.now = now;
        if !self.lowest_node_id_is_local() || self.core.mode != Mode::Synced {
            return false;
        }
        if self.core.csum_counter != self.core.csum_id {
            tracing::info!(
                "delay verify request {:016X}",
                self.core.csum_counter.wrapping_add(1)
            );
            return false;
        }
        self.core.csum_counter += 1;
        let body = MessageBody::VerifyRequest {
            epoch: self.core.sync_epoch,
            csum_id: self.core.csum_counter,
        };
        self.core.multicast_state(body);
        true
    }

    /// Re-initialisation after a LEAVE, or after the CPG connection was lost
    /// (`dfsm_initialize`): queue 1 dropped, all waiters fail, mode START.
    /// The caller joins the group again afterwards.
    pub fn restart(&mut self, now: u32) -> Result<(), RestartError> {
        self.core.now = now;
        if !self.core.mode.is_restartable() {
            return Err(RestartError::NotRestartable(self.core.mode));
        }
        self.core.queue.clear();
        // Nothing sent before the leave is delivered after it.
        let resent: Vec<u64> = self.core.own_resent.iter().map(|(c, _)| *c).collect();
        for count in resent {
            self.core.resend_dropped(count);
        }
        self.core.leaving_synced = false;
        self.core.rejoining = true;
        self.core.abort_waiters();
        self.set_mode(Mode::Start);
        Ok(())
    }

    /// The own writes a majority may lack (unconfirmed, or re-sent and not
    /// yet processed), if they changed since `seen` was last updated: what
    /// the caller keeps on disk so that a restart does not forget them.
    pub fn take_kept_if_changed(&self, seen: &mut u64) -> Option<Vec<KeptWrite>> {
        if *seen == self.core.kept_changes {
            return None;
        }
        *seen = self.core.kept_changes;
        let kept = |write: &OwnWrite| KeptWrite {
            subtype: write.subtype,
            payload: write.payload.clone(),
            before: write.before.clone(),
            after: write.after.clone(),
        };
        Some(
            self.core
                .own_unconfirmed
                .iter()
                .chain(self.core.own_resent.iter().map(|(_, write)| write))
                .map(kept)
                .collect(),
        )
    }

    /// After a restart of the daemon: the own writes kept before it
    /// ([`Dfsm::take_kept_if_changed`]) are unconfirmed, checked after the
    /// first resync within a majority as if there had been no restart.
    pub fn restore_kept(&mut self, writes: Vec<KeptWrite>) {
        if writes.is_empty() {
            return;
        }
        tracing::info!(
            writes = writes.len(),
            "own writes kept before the restart: checked after the first resync within a majority"
        );
        for write in writes {
            let write = OwnWrite {
                time: self.core.now,
                subtype: write.subtype,
                payload: write.payload,
                before: write.before,
                after: write.after,
            };
            self.core.keep_keys(&write);
            self.core.own_unconfirmed.push(write);
        }
        self.core.rejoining = true;
    }

    /// Shutdown (`dfsm_finalize`): all waiters fail.
    pub fn shutdown(&mut self) {
        self.core.abort_waiters();
    }

    /// `dfsm_set_errormode`: permanent ERROR (e.g. the database broke).
    pub fn set_error_mode(&mut self) {
        self.set_mode(Mode::Error);
    }

    /// A multicast this DFSM asked for failed (after the caller's retries).
    ///
    /// NORMAL: the writer of a first send gets [`RESULT_ABORTED`] (C removes
    /// the slot and returns `-EACCES`); a failed resend of queue 1 → LEAVE.
    /// UPDATE and VERIFY_REQUEST failures are only logged (as in C). Every
    /// other state message → LEAVE.
    pub fn on_send_failed(&mut self, msg: &Message, now: u32) {
        self.core.now = now;
        let was_synced = self.core.mode == Mode::Synced;
        self.on_send_failed_inner(msg);
        if self.core.safety.is_some() && was_synced && self.core.mode == Mode::Leave {
            self.core.leaving_synced = true;
        }
    }

    fn on_send_failed_inner(&mut self, msg: &Message) {
        match &msg.body {
            MessageBody::Normal { count, .. } => {
                self.core.resend_dropped(*count);
                if self.core.resent.contains(count) {
                    tracing::error!("dfsm_resend_queue failed");
                    self.leave();
                } else if self.core.waiters.remove(count) {
                    self.core.actions.push_back(Action::Result {
                        count: *count,
                        result: RESULT_ABORTED,
                    });
                }
            }
            MessageBody::Update { .. } if self.core.safety.is_some() => {
                // The updating members would commit an incomplete state and
                // leave, while the others count them as synced: end the
                // round instead (the rest of it is not sent; the members
                // resync when this member has left).
                tracing::error!("sending update failed - leaving to restart the synchronisation");
                self.core.actions.retain(|action| {
                    !matches!(
                        action,
                        Action::Multicast(Message {
                            body: MessageBody::Update { .. } | MessageBody::UpdateComplete { .. },
                            ..
                        })
                    )
                });
                self.leave();
            }
            MessageBody::Update { .. } => tracing::error!("sending update failed"),
            MessageBody::VerifyRequest { .. } => {
                tracing::error!("failed to send VERIFY_REQUEST message")
            }
            MessageBody::Verify { .. } if self.core.safety.is_some() => {
                // C leaves; but a synced member that leaves on its own is
                // still counted as synced by the others until its confchg,
                // so it would miss writes they count it for. Nobody waits
                // for this message: the round is just not verified.
                tracing::error!("failed to send VERIFY message - round skipped");
            }
            MessageBody::Malformed(_) => {}
            _ => {
                tracing::error!("failed to send state message type {}", msg.msg_type());
                self.leave();
            }
        }
    }

    /// CPG configuration change (`dfsm_cpg_confchg_callback`, spec §5).
    /// `joined` only matters for being non-empty.
    pub fn on_confchg(&mut self, members: &[MemberId], joined: &[MemberId], now: u32) {
        self.core.now = now;
        let local = self.core.local;

        self.core.local_epoch_counter = self.core.local_epoch_counter.wrapping_add(1);
        self.core.sync_epoch = Epoch {
            epoch: self.core.local_epoch_counter,
            time: now,
            node_id: local.node_id,
            pid: local.pid,
        };
        self.core.csum_id = self.core.csum_counter;
        self.core.csum_epoch = Epoch::default();
        self.core.drop_sync_queue();
        self.core.resent.clear();
        self.core.leaving_synced = false;

        let mode = self.core.mode;
        if mode.is_error() {
            return;
        }

        let lowest = members.iter().map(|m| m.node_id).min().unwrap_or(0);
        let we_are_member = members.contains(&local);
        if we_are_member || mode != Mode::Start {
            tracing::info!("members: {}", join_members(members));
        }
        self.core.lowest_node_id = lowest;
        self.release_sync_resources(Some(members));

        if !we_are_member {
            if mode == Mode::Start {
                return;
            }
            tracing::info!("we ({local}) left the process group");
            self.set_mode(Mode::Leave);
            return;
        }
        self.core.settle_own_writes(joined.is_empty());

        if members.len() > 1 {
            if !joined.is_empty() && !self.core.queue.is_empty() {
                tracing::info!(
                    "queue not empty - resending {} messages",
                    self.core.queue.len()
                );
                let queue = std::mem::take(&mut self.core.queue);
                for qm in queue.into_iter().filter(|qm| qm.sender == local) {
                    self.core.resent.insert(qm.count);
                    self.core.actions.push_back(Action::Multicast(qm.msg));
                }
            }
            self.set_mode(Mode::StartSync);
            if lowest == local.node_id {
                let epoch = self.core.sync_epoch;
                self.core.multicast_state(MessageBody::SyncStart { epoch });
            }
        } else {
            self.set_mode(Mode::Synced);
            if let Some(me) = self.local_info_mut() {
                me.synced = true;
            }
            if !self.deliver_queue() {
                self.set_mode(Mode::Leave);
                return;
            }
            self.check_own_writes();
        }

        let member_list: Vec<MemberId> = members.to_vec();
        self.app.confchg(
            &mut Ctx {
                core: &mut self.core,
            },
            &member_list,
        );
    }

    /// A delivered CPG message (`dfsm_cpg_deliver_callback`, spec §6).
    pub fn on_deliver(&mut self, sender: MemberId, msg: Message, now: u32) {
        self.core.now = now;
        self.deliver(sender, msg);
    }

    // ----- internals -------------------------------------------------------

    fn local_info_mut(&mut self) -> Option<&mut MemberInfo> {
        let local = self.core.local;
        self.core
            .members
            .as_mut()?
            .iter_mut()
            .find(|m| m.id == local)
    }

    /// `dfsm_set_mode` (spec §4).
    fn set_mode(&mut self, new: Mode) {
        let old = self.core.mode;
        if old == new {
            return;
        }
        if new.is_error() && old.is_error() && new.value() < old.value() {
            return;
        }
        self.core.mode = new;
        self.core.actions.push_back(Action::ModeChanged(new));
        match new {
            Mode::Start => tracing::info!("start cluster connection"),
            Mode::StartSync => tracing::info!("starting data synchronisation"),
            Mode::Synced => {
                tracing::info!("all data is up to date");
                self.app.synced(&mut Ctx {
                    core: &mut self.core,
                });
            }
            Mode::Update => tracing::info!("waiting for updates from leader"),
            Mode::Leave => tracing::error!("leaving CPG group"),
            Mode::Error => tracing::error!("serious internal error - stop cluster connection"),
            Mode::VersionError => {
                tracing::error!("detected newer protocol - please update this node")
            }
        }
        if new.is_error() && !old.is_error() {
            self.core.actions.push_back(Action::Leave);
        }
        if !new.is_restartable() {
            self.core.abort_waiters();
        }
    }

    /// The application failed outside a callback (a commit it deferred):
    /// the member leaves as after a failed callback (the error mode too for
    /// a fatal error).
    pub fn fail_application(&mut self, err: AppError) {
        self.app_failed(err);
    }

    /// The deliver callback's `leave:` label.
    fn leave(&mut self) {
        self.set_mode(Mode::Leave);
        self.release_sync_resources(None);
    }

    fn app_failed(&mut self, err: AppError) {
        self.core.leaving_synced = false;
        if err.fatal {
            self.set_mode(Mode::Error);
        }
        self.leave();
    }

    /// `dfsm_release_sync_resources`: application cleanup, per-member states
    /// dropped; with a member list also the member table rebuilt.
    fn release_sync_resources(&mut self, rebuild: Option<&[MemberId]>) {
        if self.core.members.is_some() {
            if self.core.app_sync_data {
                self.core.app_sync_data = false;
                self.app.cleanup();
            }
            for m in self.core.members.iter_mut().flatten() {
                m.state = None;
            }
        }
        if let Some(list) = rebuild {
            let mut table: Vec<MemberInfo> = list
                .iter()
                .map(|&id| MemberInfo {
                    id,
                    synced: false,
                    state: None,
                })
                .collect();
            table.sort_by_key(|m| m.id);
            self.core.members = Some(table);
        }
    }

    fn deliver(&mut self, sender: MemberId, msg: Message) {
        let mode = self.core.mode;
        if mode.is_error() {
            if self.core.leaving_synced
                && mode == Mode::Leave
                && matches!(msg.body, MessageBody::Normal { .. })
            {
                self.deliver_normal(sender, msg);
            }
            return;
        }
        if self.core.members.is_none() {
            tracing::error!("no dfsm_sync_info - internal error");
            self.leave();
            return;
        }
        if matches!(msg.body, MessageBody::Malformed(Malformed::Runt)) {
            tracing::error!("received short message");
            self.leave();
            return;
        }
        if msg.protocol_version > self.core.protocol_version {
            tracing::error!(
                "received message with protocol version {}",
                msg.protocol_version
            );
            self.set_mode(Mode::VersionError);
            return;
        }
        if msg.protocol_version < self.core.protocol_version {
            tracing::info!(
                "ignore message with wrong protocol version {}",
                msg.protocol_version
            );
            return;
        }
        match msg.body {
            MessageBody::Normal { .. } => self.deliver_normal(sender, msg),
            MessageBody::Malformed(Malformed::ShortHeader { msg_type }) => {
                tracing::error!("received short message (type = {msg_type})");
                self.leave();
            }
            _ => self.deliver_state(sender, msg),
        }
    }

    fn deliver_normal(&mut self, sender: MemberId, msg: Message) {
        let MessageBody::Normal { subtype, count, .. } = msg.body else {
            return;
        };
        let synced = self.core.mode == Mode::Synced || self.core.leaving_synced;
        let safety = self.core.safety.is_some();
        if synced && !self.core.config_majority() {
            // Only with write safety: nobody in this configuration applies
            // it (the writer learns that at once); the resync after the
            // rejoin brings whatever a majority decided.
            tracing::error!(
                "write from {sender} delivered while the group holds no majority of the votes - leaving to resync"
            );
            if sender == self.core.local {
                self.core.resend_dropped(count);
                if self.core.waiters.remove(&count) {
                    self.core.actions.push_back(Action::Result {
                        count,
                        result: RESULT_ABORTED,
                    });
                }
                self.core.msgcount_rcvd = count;
                self.core.release_waiters_upto(count);
            }
            self.leave();
            return;
        }
        let sender_synced = self.core.lookup(sender).map(|m| m.synced);
        let hold = synced && safety && sender_synced == Some(true) && !self.core.synced_majority();
        let queue = !synced || (safety && sender_synced == Some(false));
        if (hold || queue) && self.core.queues_full() {
            // Bounded memory: the group sends faster than this member can
            // catch up. Leaving drops the queues (no local writer was
            // answered for them); the resync brings the group's state.
            tracing::error!(
                queued = self.core.queue.len() + self.core.sync_queue.len(),
                "message queues full while synchronising - leaving to resync"
            );
            self.leave();
            return;
        }
        if hold {
            // Held like the updating members hold it (queue 2).
            self.core
                .sync_queue
                .push(QueuedMessage { sender, count, msg });
            return;
        }
        if queue {
            if !self.core.queue_add(QueuedMessage { sender, count, msg }) {
                tracing::error!("dfsm_node_info_lookup failed");
                self.leave();
            }
            return;
        }
        let MessageBody::Normal { payload, .. } = &msg.body else {
            return;
        };
        // Write safety: an own write is kept with its footprint until a
        // majority is known to hold it.
        let own = sender == self.core.local && safety;
        let before = if own {
            self.app.write_footprint(subtype, payload)
        } else {
            None
        };
        let foreign = safety && !own && self.core.keeps_own_writes();
        if sender == self.core.local {
            // A re-sent write is processed: kept again below if applied.
            let resent = self.core.own_resent.len();
            self.core.own_resent.retain(|(c, _)| *c != count);
            if self.core.own_resent.len() != resent {
                self.core.kept_changes += 1;
            }
        }
        self.core.delivering = Some(count);
        let res = self.app.deliver(
            &mut Ctx {
                core: &mut self.core,
            },
            sender,
            subtype,
            msg.time,
            payload,
        );
        self.core.delivering = None;
        let result = match res {
            Ok(r) => r,
            Err(e) => e.result,
        };
        if let Some(before) = before
            && result >= 0
            && res.is_ok()
            && let Some(after) = self.app.write_footprint(subtype, payload)
            && let MessageBody::Normal { payload, .. } = msg.body
        {
            // Our own later write supersedes unconfirmed ones of the same
            // keys (the recent ones form a chain the check follows).
            let keys: Vec<Vec<u8>> = after.iter().map(|(key, _)| key.clone()).collect();
            self.core.forget_overwritten_own(&keys, false);
            self.core.remember_own(OwnWrite {
                time: self.core.now,
                subtype,
                payload,
                before,
                after,
            });
        } else if foreign
            && result >= 0
            && res.is_ok()
            && let MessageBody::Normal { payload, .. } = &msg.body
            && let Some(changed) = self.app.write_keys(subtype, payload)
        {
            self.core.forget_overwritten_own(&changed, true);
        }
        if sender == self.core.local {
            self.core.record_local_result(count, result);
        }
        if let Err(e) = res {
            self.app_failed(e);
        }
    }

    fn deliver_state(&mut self, sender: MemberId, msg: Message) {
        let Some(epoch) = msg.epoch() else {
            return;
        };
        let ty = msg.msg_type();
        if ty != msg_type::SYNC_START && epoch != self.core.sync_epoch {
            tracing::debug!("ignore message (type {ty}) with wrong epoch {epoch:?}");
            return;
        }
        match self.core.mode {
            Mode::Synced => self.deliver_state_synced(sender, msg.body),
            Mode::StartSync => match msg.body {
                MessageBody::SyncStart { epoch } => self.on_sync_start(sender, epoch),
                MessageBody::State { blob, .. } => self.on_state(sender, blob),
                body => self.not_handled(body),
            },
            Mode::Update => match msg.body {
                MessageBody::Update { payload, .. } => {
                    if let Err(e) = self.app.process_update(
                        &mut Ctx {
                            core: &mut self.core,
                        },
                        sender,
                        &payload,
                    ) {
                        self.app_failed(e);
                    }
                }
                MessageBody::UpdateComplete { .. } => self.on_update_complete(),
                body => self.not_handled(body),
            },
            Mode::Start | Mode::Leave | Mode::VersionError | Mode::Error => {
                tracing::error!("internal error - unknown mode {:?}", self.core.mode);
                self.leave();
            }
        }
    }

    /// State message types a START_SYNC/UPDATE member does not handle.
    fn not_handled(&mut self, body: MessageBody) {
        let ty = body.msg_type();
        if ty == msg_type::VERIFY_REQUEST || ty == msg_type::VERIFY {
            // C logs this and then leaves (spec §6.2 "C quirk"); ignoring only
            // spares the local node a rejoin.
            tracing::debug!("ignore verify message {ty} while not synced");
        } else {
            tracing::error!("received unknown state message type (type = {ty})");
            self.leave();
        }
    }

    fn deliver_state_synced(&mut self, sender: MemberId, body: MessageBody) {
        match body {
            MessageBody::UpdateComplete { .. } => {
                for m in self.core.members.iter_mut().flatten() {
                    m.synced = true;
                }
                if !self.deliver_sync_queue() || !self.deliver_queue() {
                    self.leave();
                }
            }
            MessageBody::VerifyRequest { epoch, csum_id } => {
                let Some(res) = self.app.checksum() else {
                    return;
                };
                let csum = match res {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("unable to compute data checksum");
                        self.app_failed(e);
                        return;
                    }
                };
                self.core.csum = csum;
                self.core.csum_epoch = epoch;
                self.core.csum_id = csum_id;
                if sender == self.core.local {
                    let body = MessageBody::Verify {
                        epoch: self.core.sync_epoch,
                        csum_id,
                        checksum: csum,
                    };
                    self.core.multicast_state(body);
                }
            }
            MessageBody::Verify {
                epoch,
                csum_id,
                checksum,
            } => {
                // Nodes without a checksum callback never store a checksum
                // epoch, so the comparison below is skipped for them.
                if self.core.csum_id == csum_id && self.core.csum_epoch == epoch {
                    if checksum != self.core.csum {
                        tracing::error!("wrong checksum - restarting");
                        self.leave();
                    } else {
                        tracing::info!("data verification successful");
                    }
                } else {
                    tracing::info!("skip verification - no checksum saved");
                }
            }
            MessageBody::Malformed(Malformed::BadState { msg_type: ty, .. })
                if ty == msg_type::VERIFY_REQUEST =>
            {
                tracing::error!("received verify request with wrong length from {sender}");
                self.leave();
            }
            MessageBody::Malformed(Malformed::BadState { msg_type: ty, .. })
                if ty == msg_type::VERIFY =>
            {
                if self.app.checksum().is_some() {
                    tracing::error!("received verify message with wrong length");
                    self.leave();
                }
            }
            _ => tracing::debug!("ignore state sync message"),
        }
    }

    fn on_sync_start(&mut self, sender: MemberId, epoch: Epoch) {
        if sender.node_id != self.core.lowest_node_id {
            tracing::error!("ignore sync request from wrong member {sender}");
        }
        tracing::info!("received sync request (epoch {epoch:?})");
        self.core.sync_epoch = epoch;
        self.release_sync_resources(None);
        let state = self.app.get_state(&mut Ctx {
            core: &mut self.core,
        });
        match state {
            Ok(blob) if !blob.is_empty() => {
                let epoch = self.core.sync_epoch;
                self.core
                    .multicast_state(MessageBody::State { epoch, blob });
            }
            Ok(_) => {
                tracing::error!("dfsm_get_state_fn failed");
                self.leave();
            }
            Err(e) => {
                tracing::error!("dfsm_get_state_fn failed");
                self.app_failed(e);
            }
        }
    }

    fn on_state(&mut self, sender: MemberId, blob: Vec<u8>) {
        let Some(members) = self.core.members.as_mut() else {
            return;
        };
        let Some(info) = members.iter_mut().find(|m| m.id == sender) else {
            tracing::error!("received state for non-member {sender}");
            self.leave();
            return;
        };
        if info.state.is_some() {
            tracing::error!("received duplicate state for member {sender}");
            self.leave();
            return;
        }
        info.state = Some(blob);
        if members.iter().any(|m| m.state.is_none()) {
            return;
        }
        tracing::info!("received all states");

        // Move the states out while the application (which may send through
        // the Ctx) looks at them; they are put back afterwards.
        let mut states: Vec<(MemberId, Vec<u8>)> = members
            .iter_mut()
            .map(|m| (m.id, m.state.take().unwrap_or_default()))
            .collect();
        self.core.app_sync_data = true;
        let views: Vec<(MemberId, &[u8])> =
            states.iter().map(|(id, s)| (*id, s.as_slice())).collect();
        let res = self.app.process_state_update(
            &mut Ctx {
                core: &mut self.core,
            },
            &views,
        );
        drop(views);
        if let Some(members) = self.core.members.as_mut() {
            for (m, (_, s)) in members.iter_mut().zip(states.iter_mut()) {
                m.state = Some(std::mem::take(s));
            }
        }
        let decision = match res {
            Ok(d) => d,
            Err(e) => {
                self.app_failed(e);
                return;
            }
        };
        let member_count = self.core.members.as_ref().map_or(0, Vec::len);
        if decision.synced.len() != member_count {
            tracing::error!(
                "process_state_update returned {} flags",
                decision.synced.len()
            );
            self.leave();
            return;
        }
        for (m, synced) in self.core.members.iter_mut().flatten().zip(&decision.synced) {
            if *synced {
                m.synced = true;
            }
        }
        if let Some(updates) = decision.updates {
            let epoch = self.core.sync_epoch;
            for payload in updates {
                self.core
                    .multicast_state(MessageBody::Update { epoch, payload });
            }
            self.core
                .multicast_state(MessageBody::UpdateComplete { epoch });
        }
        let local_synced = self.member_synced(self.core.local).unwrap_or(false);
        if local_synced {
            self.set_mode(Mode::Synced);
            self.release_sync_resources(None);
        } else {
            self.set_mode(Mode::Update);
        }
        if !self.deliver_queue() {
            self.leave();
            return;
        }
        if local_synced {
            self.check_own_writes();
        }
    }

    fn on_update_complete(&mut self) {
        if let Err(e) = self.app.commit(&mut Ctx {
            core: &mut self.core,
        }) {
            self.app_failed(e);
            return;
        }
        for m in self.core.members.iter_mut().flatten() {
            m.synced = true;
        }
        self.set_mode(Mode::Synced);
        if !self.deliver_sync_queue() || !self.deliver_queue() {
            self.leave();
            return;
        }
        self.release_sync_resources(None);
        self.check_own_writes();
    }

    /// After a resync within a majority: which of the own writes a
    /// configuration change left unconfirmed does the tree the group agreed
    /// on lack? The majority got a prefix of them (one sender's messages
    /// are delivered in order), so the last `k` for which the tree looks as
    /// after writes 1..=k (every path a later write changes is as write k
    /// left it; for k = all, the last write's paths are as it left them) is
    /// where the majority's copy ends: the writes after it are multicast
    /// again, in order. If no `k` fits, the majority changed those paths
    /// since, which supersedes them (as if they had come first).
    fn check_own_writes(&mut self) {
        if self.core.own_unconfirmed.is_empty()
            || self.core.mode != Mode::Synced
            || !self.core.config_majority()
        {
            return;
        }
        let writes = std::mem::take(&mut self.core.own_unconfirmed);
        self.core.kept_changes += 1;
        let mut tree: std::collections::HashMap<Vec<u8>, Option<u64>> =
            std::collections::HashMap::new();
        for write in &writes {
            for (key, state) in self
                .app
                .write_footprint(write.subtype, &write.payload)
                .unwrap_or_default()
            {
                tree.insert(key, state);
            }
        }
        // Writes of keys the majority changed since are superseded; the
        // others are checked without them.
        let changed = superseded_own(&writes, &tree);
        let all = writes.len();
        let writes: Vec<OwnWrite> = writes
            .into_iter()
            .zip(&changed)
            .filter_map(|(write, changed)| (!changed).then_some(write))
            .collect();
        let prefix = held_prefix(&writes, &tree);
        let lacked = prefix.map_or(0, |k| writes.len() - k);
        let superseded = all - writes.len() + if prefix.is_none() { writes.len() } else { 0 };
        let mut writes = writes.into_iter();
        // The tree holds these, but the others may not have adopted it yet
        // (we lead the resync and its updates are on their way): they count
        // as applied now, in this configuration, before the recent ones.
        let held: Vec<OwnWrite> = writes.by_ref().take(prefix.unwrap_or(0)).collect();
        for mut write in held.into_iter().rev() {
            write.time = self.core.now;
            self.core.own_recent_bytes += write.payload.len();
            self.core.keep_keys(&write);
            self.core.own_recent.push_front(write);
        }
        for write in writes.skip(if prefix.is_some() { 0 } else { usize::MAX }) {
            let count = self
                .core
                .send_normal(write.subtype, write.payload.clone(), false);
            self.core.own_resent.push((count, write));
        }
        if lacked + superseded > 0 {
            tracing::warn!(
                lacked,
                superseded,
                "own writes the majority lacked after a partition: re-sent (superseded: the majority changed their paths since)"
            );
        } else {
            tracing::info!("own writes of the last configuration: all held by the majority");
        }
    }

    /// `dfsm_deliver_queue` (spec §7.2).
    fn deliver_queue(&mut self) -> bool {
        let mut i = 0;
        while i < self.core.queue.len() {
            let sender = self.core.queue[i].sender;
            let Some(synced) = self.core.lookup(sender).map(|m| m.synced) else {
                tracing::info!("remove message from non-member {sender}");
                self.core.queue.remove(i);
                continue;
            };
            match self.core.mode {
                Mode::Synced => {
                    if synced {
                        let qm = self.core.queue.remove(i);
                        self.deliver(qm.sender, qm.msg);
                    } else {
                        i += 1;
                    }
                }
                Mode::Update => {
                    if synced {
                        let qm = self.core.queue.remove(i);
                        self.core.sync_queue.push(qm);
                    } else {
                        i += 1;
                    }
                }
                _ => return false,
            }
        }
        true
    }

    /// `dfsm_deliver_sync_queue` (spec §7.3): the whole queue is consumed.
    fn deliver_sync_queue(&mut self) -> bool {
        let queue = std::mem::take(&mut self.core.sync_queue);
        let mut ok = true;
        for qm in queue {
            if ok && self.core.mode == Mode::Synced {
                self.deliver(qm.sender, qm.msg);
            } else {
                ok = false;
            }
        }
        ok
    }
}

/// Which of `writes` (oldest first) the majority superseded: those of a key
/// whose state in `tree` is none the writes could have left (before the
/// first of them, or after one), and with them every write of a key one of
/// those changed (the chain of an atomic write: create, write, rename).
/// The others do not touch these keys, so the prefix rule holds for them
/// alone ([`held_prefix`]).
fn superseded_own(
    writes: &[OwnWrite],
    tree: &std::collections::HashMap<Vec<u8>, Option<u64>>,
) -> Vec<bool> {
    use std::collections::{HashMap, HashSet};
    let now = |key: &[u8]| tree.get(key).copied().flatten();
    let mut states: HashMap<&[u8], HashSet<Option<u64>>> = HashMap::new();
    for write in writes {
        for (key, state) in &write.before {
            states.entry(key.as_slice()).or_insert_with(|| {
                let mut first = HashSet::new();
                first.insert(*state);
                first
            });
        }
        for (key, state) in &write.after {
            states.entry(key.as_slice()).or_default().insert(*state);
        }
    }
    let mut keys: HashSet<&[u8]> = states
        .iter()
        .filter(|(key, states)| !states.contains(&now(key)))
        .map(|(key, _)| *key)
        .collect();
    let mut superseded = vec![false; writes.len()];
    loop {
        let mut more = false;
        for (i, write) in writes.iter().enumerate() {
            let touched = write.before.iter().chain(&write.after);
            if !superseded[i]
                && touched
                    .clone()
                    .any(|(key, _)| keys.contains(key.as_slice()))
            {
                superseded[i] = true;
                more = true;
                keys.extend(touched.map(|(key, _)| key.as_slice()));
            }
        }
        if !more {
            return superseded;
        }
    }
}

/// How many of `writes` (oldest first) the state `tree` holds: the largest
/// `k` such that every key written after write `k` is as the writes up to
/// `k` left it (before the first write of it, if none did), and for `k` =
/// all, the last write's keys are as it left them. `None`: no `k` fits.
/// A key of an earlier write may have been changed since, except that a
/// write whose keys are all still as before it, where no earlier own write
/// put them, is not held unless a later write visibly is (a key of it as it
/// left it, not as before it): `k` is at most its index (else a lacked
/// write of another key than the later ones would pass for held).
fn held_prefix(
    writes: &[OwnWrite],
    tree: &std::collections::HashMap<Vec<u8>, Option<u64>>,
) -> Option<usize> {
    use std::collections::HashMap;
    let now = |key: &[u8]| tree.get(key).copied().flatten();
    let last = writes.last()?;
    if last.after.iter().all(|(key, state)| now(key) == *state) {
        return Some(writes.len());
    }
    // Per key: its state before the first write of it, and (index, state
    // after) of every write of it.
    let mut first_before: HashMap<&[u8], Option<u64>> = HashMap::new();
    let mut afters: HashMap<&[u8], Vec<(usize, Option<u64>)>> = HashMap::new();
    for (i, write) in writes.iter().enumerate() {
        for (key, state) in &write.before {
            first_before.entry(key.as_slice()).or_insert(*state);
        }
        for (key, state) in &write.after {
            afters.entry(key.as_slice()).or_default().push((i, *state));
        }
    }
    // The state of `key` after writes[..k].
    let expected = |key: &[u8], k: usize| -> Option<u64> {
        let list = afters.get(key).map_or(&[][..], Vec::as_slice);
        match list.partition_point(|(i, _)| *i < k) {
            0 => first_before.get(key).copied().flatten(),
            p => list[p - 1].1,
        }
    };
    // The last write that visibly happened here, and the first after it
    // that visibly did not.
    let held = writes.iter().enumerate().rev().find_map(|(j, write)| {
        write
            .after
            .iter()
            .any(|(key, _)| {
                now(key) == expected(key, j + 1) && expected(key, j + 1) != expected(key, j)
            })
            .then_some(j)
    });
    let own_before = |key: &[u8], j: usize| {
        afters
            .get(key)
            .is_some_and(|list| list.first().is_some_and(|(i, _)| *i < j))
    };
    let lacked = writes
        .iter()
        .enumerate()
        .skip(held.map_or(0, |h| h + 1))
        .find(|(j, write)| {
            write.after != write.before
                && write
                    .before
                    .iter()
                    .all(|(key, state)| !own_before(key, *j) && now(key) == *state)
        })
        .map_or(writes.len(), |(j, _)| j);
    let mut later: Vec<&[u8]> = Vec::new();
    for k in (0..writes.len()).rev() {
        for (key, _) in &writes[k].before {
            if !later.contains(&key.as_slice()) {
                later.push(key);
            }
        }
        if k <= lacked && later.iter().all(|key| now(key) == expected(key, k)) {
            return Some(k);
        }
    }
    None
}

fn join_members(members: &[MemberId]) -> String {
    members
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
