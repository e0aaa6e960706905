//! The one module that talks to corosync: CPG, quorum and cmap, thin and
//! typed over `rust-corosync` (which wraps libcpg, libquorum and libcmap).
//! Nothing else in the workspace names `rust_corosync`.
//!
//! Shape, for every service: a handle type that owns the library handle
//! (finalized on drop), caches its poll fd ([`Cpg::fd`], [`Quorum::fd`]),
//! and turns callbacks into an event queue. The caller polls the fd, calls
//! `dispatch()` (non-blocking, `CS_DISPATCH_ALL`) when it is readable, then
//! drains the events. No callback of the caller ever runs inside libcpg.
//!
//! How callbacks reach the queue: the crate's callbacks are plain `fn`
//! pointers with the library handle as their only context. While
//! `dispatch()` runs, the handle's queue is parked in a thread-local "sink"
//! together with (a non-owning clone of) the handle; the callback pushes into
//! the sink after checking that it is for that handle; afterwards the queue
//! goes back into the handle. So the state is per handle, a handle can move
//! between threads, and nothing global grows. The crate holds a global lock
//! while a callback runs: our callbacks only copy data and push.
//!
//! CPG group names (spec/dfsm.md §1): the C daemon joins with
//! `cpg_name.length = strlen(name) + 1`, the NUL counts, and corosync compares
//! the length before the bytes. rust-corosync 3.2 sets the length to the
//! string's byte length, so [`Cpg::join`] passes the name with an explicit
//! trailing NUL ([`cpg_wire_name`]). Group names in events come back without
//! it (the crate reads them as C strings).
//!
//! Costs: one copy per delivered message (the library's buffer is only valid
//! during the callback) and, for a multicast of more than one slice, one copy
//! into a reused buffer (the crate's `mcast_joined` takes a single slice).
//!
//! Errors: [`CorosyncError`]; [`CorosyncError::is_gone`] means the
//! connection to corosync is dead (corosync exited or was restarted): drop
//! the handle and reconnect with a backoff.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::os::fd::{BorrowedFd, RawFd};

pub use rust_corosync::CsError;
use rust_corosync::{DispatchFlags, NodeId, TrackFlags};
use rust_corosync::{cmap, cpg, quorum};

/// Longest group name [`Cpg::join`] accepts, in bytes without the NUL.
/// libcpg allows 127 + NUL; rust-corosync 3.2 refuses lengths above 127,
/// and ours include the NUL.
pub const CPG_GROUP_NAME_LEN_MAX: usize = 126;

/// The one error type of this module.
#[derive(Debug, thiserror::Error)]
pub enum CorosyncError {
    /// `CS_ERR_TRY_AGAIN`: corosync is busy (flow control, membership
    /// change in progress). The C daemon retries after 100 ms.
    #[error("{op}: corosync asks to try again")]
    TryAgain { op: &'static str },
    /// Any other error code from a library call.
    #[error("{op}: {code}")]
    Call { op: &'static str, code: CsError },
    /// A group name the C daemon could not have joined with.
    #[error("CPG group name {name:?}: {reason}")]
    GroupName { name: String, reason: &'static str },
    /// An operation that needs a joined group, on a handle that has none.
    #[error("{op}: no CPG group joined")]
    NotJoined { op: &'static str },
    /// corosync runs without a quorum provider (`quorum_initialize` returned
    /// `QUORUM_FREE`); the C daemon refuses to go on (quorum.c).
    #[error("corosync has no quorum provider configured")]
    NoQuorumProvider,
    /// A cmap key holds a value of an unexpected type.
    #[error("cmap key {key}: expected {expected}")]
    CmapType { key: String, expected: &'static str },
}

impl CorosyncError {
    fn from_cs(op: &'static str, code: CsError) -> Self {
        match code {
            CsError::CsErrTryAgain => Self::TryAgain { op },
            code => Self::Call { op, code },
        }
    }

    /// The connection to corosync is gone (`CS_ERR_LIBRARY`: the IPC peer
    /// died; `CS_ERR_BAD_HANDLE`: the handle was finalized). Reconnect.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Self::Call {
                code: CsError::CsErrLibrary | CsError::CsErrBadHandle,
                ..
            }
        )
    }

    pub fn is_try_again(&self) -> bool {
        matches!(self, Self::TryAgain { .. })
    }

    /// The corosync error code, if the error came from a library call.
    pub fn code(&self) -> Option<CsError> {
        match self {
            Self::TryAgain { .. } => Some(CsError::CsErrTryAgain),
            Self::Call { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = CorosyncError> = std::result::Result<T, E>;

fn call<T>(op: &'static str, result: rust_corosync::Result<T>) -> Result<T> {
    result.map_err(|code| CorosyncError::from_cs(op, code))
}

/// The name as libcpg must see it: `group` plus a NUL, so that the crate
/// sets `cpg_name.length = strlen(group) + 1` like the C daemon.
pub fn cpg_wire_name(group: &str) -> Result<String> {
    let invalid = |reason| CorosyncError::GroupName {
        name: group.to_owned(),
        reason,
    };
    if group.is_empty() {
        return Err(invalid("empty"));
    }
    if group.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if group.len() > CPG_GROUP_NAME_LEN_MAX {
        return Err(invalid("longer than 126 bytes"));
    }
    let mut wire = String::with_capacity(group.len() + 1);
    wire.push_str(group);
    wire.push('\0');
    Ok(wire)
}

// ---------------------------------------------------------------------------
// CPG

/// Why a member appears in a confchg list (`CPG_REASON_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpgReason {
    Undefined,
    Join,
    Leave,
    NodeDown,
    NodeUp,
    ProcDown,
}

impl From<cpg::Reason> for CpgReason {
    fn from(reason: cpg::Reason) -> Self {
        match reason {
            cpg::Reason::Undefined => Self::Undefined,
            cpg::Reason::Join => Self::Join,
            cpg::Reason::Leave => Self::Leave,
            cpg::Reason::NodeDown => Self::NodeDown,
            cpg::Reason::NodeUp => Self::NodeUp,
            cpg::Reason::ProcDown => Self::ProcDown,
        }
    }
}

/// A group member: the pair (node id, pid) identifies it (spec/dfsm.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpgMember {
    pub node_id: u32,
    pub pid: u32,
    pub reason: CpgReason,
}

impl From<&cpg::Address> for CpgMember {
    fn from(address: &cpg::Address) -> Self {
        Self {
            node_id: address.nodeid.into(),
            pid: address.pid,
            reason: address.reason.into(),
        }
    }
}

fn members(addresses: &[cpg::Address]) -> Vec<CpgMember> {
    addresses.iter().map(CpgMember::from).collect()
}

/// What a CPG dispatch produced, in delivery order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpgEvent {
    /// A message (also our own: CPG delivers it back to the sender).
    Deliver {
        group: String,
        node_id: u32,
        pid: u32,
        payload: Vec<u8>,
    },
    /// A membership change of the group.
    ConfChg {
        group: String,
        members: Vec<CpgMember>,
        left: Vec<CpgMember>,
        joined: Vec<CpgMember>,
    },
}

struct CpgSink {
    handle: cpg::Handle,
    events: VecDeque<CpgEvent>,
}

thread_local! {
    static CPG_SINK: RefCell<Option<CpgSink>> = const { RefCell::new(None) };
    static QUORUM_SINK: RefCell<Option<QuorumSink>> = const { RefCell::new(None) };
}

fn push_cpg_event(handle: &cpg::Handle, event: CpgEvent) {
    CPG_SINK.with(|sink| match sink.try_borrow_mut().as_deref_mut() {
        Ok(Some(sink)) if sink.handle == *handle => sink.events.push_back(event),
        // Cannot happen: cpg_dispatch(h) runs only h's callbacks, on this
        // thread, while the sink for h is parked. Never panic here (we are
        // inside an extern "C" callback).
        _ => tracing::error!("CPG callback outside of its dispatch: event dropped"),
    });
}

fn cpg_deliver(
    handle: &cpg::Handle,
    group: String,
    node_id: NodeId,
    pid: u32,
    message: &[u8],
    _message_len: usize,
) {
    let event = CpgEvent::Deliver {
        group,
        node_id: node_id.into(),
        pid,
        payload: message.to_vec(),
    };
    push_cpg_event(handle, event);
}

fn cpg_confchg(
    handle: &cpg::Handle,
    group: &str,
    member_list: Vec<cpg::Address>,
    left_list: Vec<cpg::Address>,
    joined_list: Vec<cpg::Address>,
) {
    let event = CpgEvent::ConfChg {
        group: group.to_owned(),
        members: members(&member_list),
        left: members(&left_list),
        joined: members(&joined_list),
    };
    push_cpg_event(handle, event);
}

/// A CPG connection that joins (at most) one group, like each of the C
/// daemon's two DFSM handles.
pub struct Cpg {
    handle: cpg::Handle,
    fd: RawFd,
    /// The joined group's name with its trailing NUL.
    wire_name: Option<String>,
    events: VecDeque<CpgEvent>,
    send_buffer: Vec<u8>,
}

impl Cpg {
    /// `cpg_model_initialize` (model v1). Fails with a gone error
    /// (`CS_ERR_LIBRARY`) when corosync does not run in this network
    /// namespace.
    pub fn new() -> Result<Self> {
        let model = cpg::ModelData::ModelV1(cpg::Model1Data {
            flags: cpg::Model1Flags::None,
            deliver_fn: Some(cpg_deliver),
            confchg_fn: Some(cpg_confchg),
            totem_confchg_fn: None,
        });
        let handle = call("cpg_initialize", cpg::initialize(&model, 0))?;
        let fd = call("cpg_fd_get", cpg::fd_get(&handle))?;
        Ok(Self {
            handle,
            fd,
            wire_name: None,
            events: VecDeque::new(),
            send_buffer: Vec::new(),
        })
    }

    /// `cpg_join` with `length = strlen(group) + 1`, as the C daemon.
    /// `TryAgain` is returned as is (the C daemon retries every 100 ms).
    pub fn join(&mut self, group: &str) -> Result<()> {
        assert!(
            self.wire_name.is_none(),
            "Cpg::join: a group is joined already"
        );
        let wire_name = cpg_wire_name(group)?;
        call("cpg_join", cpg::join(&self.handle, &wire_name))?;
        self.wire_name = Some(wire_name);
        Ok(())
    }

    /// `cpg_leave` of the joined group.
    pub fn leave(&mut self) -> Result<()> {
        let wire_name = self
            .wire_name
            .as_deref()
            .ok_or(CorosyncError::NotJoined { op: "cpg_leave" })?;
        call("cpg_leave", cpg::leave(&self.handle, wire_name))?;
        self.wire_name = None;
        Ok(())
    }

    /// `cpg_mcast_joined(CPG_TYPE_AGREED)` of the concatenated slices.
    /// Under flow control this is [`CorosyncError::TryAgain`].
    pub fn mcast_agreed(&mut self, parts: &[IoSlice<'_>]) -> Result<()> {
        const OP: &str = "cpg_mcast_joined";
        let message: &[u8] = match parts {
            [] => &[],
            [single] => single,
            _ => {
                self.send_buffer.clear();
                for part in parts {
                    self.send_buffer.extend_from_slice(part);
                }
                &self.send_buffer
            }
        };
        call(
            OP,
            cpg::mcast_joined(&self.handle, cpg::Guarantee::TypeAgreed, message),
        )
    }

    /// The fd to poll for readability; valid as long as `self`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: libcpg keeps this fd open until cpg_finalize, which only
        // runs when `self.handle` is dropped, after the borrow ends.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// `cpg_dispatch(CS_DISPATCH_ALL)`: runs every pending callback without
    /// blocking and queues their events; read them with [`Cpg::events`].
    /// An error with [`CorosyncError::is_gone`] means corosync died.
    pub fn dispatch(&mut self) -> Result<()> {
        let parked = CpgSink {
            handle: self.handle.clone(),
            events: std::mem::take(&mut self.events),
        };
        let previous = CPG_SINK.with(|sink| sink.replace(Some(parked)));
        assert!(previous.is_none(), "Cpg::dispatch is not reentrant");
        let result = cpg::dispatch(&self.handle, DispatchFlags::All);
        let parked = CPG_SINK.with(|sink| sink.take());
        self.events = parked.expect("the parked CPG sink").events;
        match result {
            Ok(()) | Err(CsError::CsErrTryAgain) => Ok(()),
            Err(code) => Err(CorosyncError::from_cs("cpg_dispatch", code)),
        }
    }

    /// The events queued by [`Cpg::dispatch`], oldest first.
    pub fn events(&mut self) -> std::collections::vec_deque::Drain<'_, CpgEvent> {
        self.events.drain(..)
    }

    /// `cpg_local_get`: this node's id.
    pub fn local_node_id(&self) -> Result<u32> {
        call("cpg_local_get", cpg::local_get(&self.handle)).map(u32::from)
    }

    /// `cpg_membership_get` of the joined group.
    pub fn membership(&self) -> Result<Vec<CpgMember>> {
        const OP: &str = "cpg_membership_get";
        let wire_name = self
            .wire_name
            .as_deref()
            .ok_or(CorosyncError::NotJoined { op: OP })?;
        call(OP, cpg::membership_get(&self.handle, wire_name)).map(|list| members(&list))
    }

    /// `cpg_max_atomic_msgsize_get`: larger messages are fragmented by
    /// libcpg (still delivered whole and in order).
    pub fn max_atomic_message_size(&self) -> Result<u32> {
        call(
            "cpg_max_atomic_msgsize_get",
            cpg::max_atomic_msgsize_get(&self.handle),
        )
    }
}

// ---------------------------------------------------------------------------
// Quorum

/// What a quorum dispatch produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumEvent {
    /// Sent on start of tracking and on every membership change; the C
    /// daemon sets its quorate flag to `quorate` each time.
    Changed { quorate: bool, members: Vec<u32> },
}

struct QuorumSink {
    handle: quorum::Handle,
    events: VecDeque<QuorumEvent>,
}

fn quorum_notification(
    handle: &quorum::Handle,
    quorate: bool,
    _ring_id: quorum::RingId,
    member_list: Vec<NodeId>,
) {
    let event = QuorumEvent::Changed {
        quorate,
        members: member_list.into_iter().map(u32::from).collect(),
    };
    QUORUM_SINK.with(|sink| match sink.try_borrow_mut().as_deref_mut() {
        Ok(Some(sink)) if sink.handle == *handle => sink.events.push_back(event),
        _ => tracing::error!("quorum callback outside of its dispatch: event dropped"),
    });
}

/// A libquorum connection tracking changes (`CS_TRACK_CHANGES`), as the C
/// daemon's quorum.c.
pub struct Quorum {
    handle: quorum::Handle,
    fd: RawFd,
    events: VecDeque<QuorumEvent>,
}

impl Quorum {
    /// `quorum_initialize` + `quorum_trackstart(CS_TRACK_CHANGES)`. Refuses a
    /// corosync without quorum provider, like the C daemon.
    pub fn new() -> Result<Self> {
        let model = quorum::ModelData::ModelV1(quorum::Model1Data {
            flags: quorum::Model1Flags::None,
            quorum_notification_fn: Some(quorum_notification),
            nodelist_notification_fn: None,
        });
        let (handle, quorum_type) = call("quorum_initialize", quorum::initialize(&model, 0))?;
        if matches!(quorum_type, quorum::QuorumType::Free) {
            return Err(CorosyncError::NoQuorumProvider);
        }
        let fd = call("quorum_fd_get", quorum::fd_get(&handle))?;
        call(
            "quorum_trackstart",
            quorum::trackstart(&handle, TrackFlags::Changes),
        )?;
        Ok(Self {
            handle,
            fd,
            events: VecDeque::new(),
        })
    }

    /// The fd to poll for readability; valid as long as `self`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: open until quorum_finalize, which runs when `self.handle`
        // is dropped, after the borrow ends.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// `quorum_dispatch(CS_DISPATCH_ALL)`, non-blocking; events in
    /// [`Quorum::events`].
    pub fn dispatch(&mut self) -> Result<()> {
        let parked = QuorumSink {
            handle: self.handle.clone(),
            events: std::mem::take(&mut self.events),
        };
        let previous = QUORUM_SINK.with(|sink| sink.replace(Some(parked)));
        assert!(previous.is_none(), "Quorum::dispatch is not reentrant");
        let result = quorum::dispatch(&self.handle, DispatchFlags::All);
        let parked = QUORUM_SINK.with(|sink| sink.take());
        self.events = parked.expect("the parked quorum sink").events;
        match result {
            Ok(()) | Err(CsError::CsErrTryAgain) => Ok(()),
            Err(code) => Err(CorosyncError::from_cs("quorum_dispatch", code)),
        }
    }

    /// The events queued by [`Quorum::dispatch`], oldest first.
    pub fn events(&mut self) -> std::collections::vec_deque::Drain<'_, QuorumEvent> {
        self.events.drain(..)
    }

    /// `quorum_getquorate`.
    pub fn quorate(&self) -> Result<bool> {
        call("quorum_getquorate", quorum::getquorate(&self.handle))
    }
}

// ---------------------------------------------------------------------------
// cmap

/// One `nodelist.node.<index>.*` entry, as configured. The C daemon
/// (confdb.c) uses `name`, else `ring0_addr`, as the node name, treats a
/// missing `quorum_votes` as 0, and skips entries without a name or with
/// node id 0: see [`CmapNode::as_cluster_node`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmapNode {
    pub index: u32,
    pub node_id: Option<u32>,
    pub name: Option<String>,
    pub ring0_addr: Option<String>,
    pub quorum_votes: Option<u32>,
}

impl CmapNode {
    /// (node id, name, votes) as the C daemon takes them, or `None` for an
    /// entry it skips.
    pub fn as_cluster_node(&self) -> Option<(u32, &str, u32)> {
        let node_id = self.node_id.filter(|&id| id != 0)?;
        let name = self.name.as_deref().or(self.ring0_addr.as_deref())?;
        Some((node_id, name, self.quorum_votes.unwrap_or(0)))
    }
}

/// A cmap value reduced to what the nodelist needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmapValue {
    Unsigned(u64),
    Signed(i64),
    String(String),
    Other,
}

impl From<&cmap::Data> for CmapValue {
    fn from(data: &cmap::Data) -> Self {
        use cmap::Data;
        match data {
            Data::UInt8(v) => Self::Unsigned((*v).into()),
            Data::UInt16(v) => Self::Unsigned((*v).into()),
            Data::UInt32(v) => Self::Unsigned((*v).into()),
            Data::UInt64(v) => Self::Unsigned(*v),
            Data::Int8(v) => Self::Signed((*v).into()),
            Data::Int16(v) => Self::Signed((*v).into()),
            Data::Int32(v) => Self::Signed((*v).into()),
            Data::Int64(v) => Self::Signed(*v),
            Data::String(v) => Self::String(v.clone()),
            _ => Self::Other,
        }
    }
}

impl CmapValue {
    fn to_u32(&self, key: &str) -> Result<u32> {
        let value = match *self {
            Self::Unsigned(v) => u32::try_from(v).ok(),
            Self::Signed(v) => u32::try_from(v).ok(),
            _ => None,
        };
        value.ok_or_else(|| CorosyncError::CmapType {
            key: key.to_owned(),
            expected: "an unsigned 32-bit number",
        })
    }
}

/// Builds the nodelist from `(key, value)` pairs under `nodelist.node.`, in
/// any order; keys other than the four known ones are ignored.
pub fn parse_nodelist<'a>(
    pairs: impl IntoIterator<Item = (&'a str, CmapValue)>,
) -> Result<Vec<CmapNode>> {
    let mut nodes = BTreeMap::<u32, CmapNode>::new();
    for (key, value) in pairs {
        let Some(rest) = key.strip_prefix("nodelist.node.") else {
            continue;
        };
        let Some((index, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(index) = index.parse::<u32>() else {
            continue;
        };
        let node = nodes.entry(index).or_insert_with(|| CmapNode {
            index,
            ..CmapNode::default()
        });
        let string = |value: CmapValue| match value {
            CmapValue::String(s) => Ok(s),
            _ => Err(CorosyncError::CmapType {
                key: key.to_owned(),
                expected: "a string",
            }),
        };
        match field {
            "nodeid" => node.node_id = Some(value.to_u32(key)?),
            "quorum_votes" => node.quorum_votes = Some(value.to_u32(key)?),
            "name" => node.name = Some(string(value)?),
            "ring0_addr" => node.ring0_addr = Some(string(value)?),
            _ => {}
        }
    }
    Ok(nodes.into_values().collect())
}

/// A read-only libcmap connection (the `icmap` map).
pub struct Cmap {
    handle: cmap::Handle,
}

impl Cmap {
    pub fn new() -> Result<Self> {
        let handle = call("cmap_initialize", cmap::initialize(cmap::Map::Icmap))?;
        Ok(Self { handle })
    }

    fn get(&self, key: &str) -> Result<Option<cmap::Data>> {
        match cmap::get(&self.handle, key) {
            Ok(data) => Ok(Some(data)),
            Err(CsError::CsErrNotExist) => Ok(None),
            Err(code) => Err(CorosyncError::from_cs("cmap_get", code)),
        }
    }

    /// `totem.cluster_name` (required by the C daemon).
    pub fn cluster_name(&self) -> Result<String> {
        const KEY: &str = "totem.cluster_name";
        match self.get(KEY)? {
            Some(cmap::Data::String(name)) => Ok(name),
            None => Err(CorosyncError::Call {
                op: "cmap_get totem.cluster_name",
                code: CsError::CsErrNotExist,
            }),
            Some(_) => Err(CorosyncError::CmapType {
                key: KEY.to_owned(),
                expected: "a string",
            }),
        }
    }

    /// `totem.config_version`, `None` when not configured.
    pub fn config_version(&self) -> Result<Option<u64>> {
        const KEY: &str = "totem.config_version";
        match self.get(KEY)?.as_ref().map(CmapValue::from) {
            None => Ok(None),
            Some(CmapValue::Unsigned(version)) => Ok(Some(version)),
            Some(_) => Err(CorosyncError::CmapType {
                key: KEY.to_owned(),
                expected: "an unsigned number",
            }),
        }
    }

    /// Does quorum come from more than the nodelist's votes: a quorum device
    /// (`quorum.device`) or `quorum.two_node`? Then a group without a
    /// majority of the node votes may still be the quorate side.
    pub fn vote_helper(&self) -> Result<bool> {
        let device = self.get("quorum.device.model")?.is_some()
            || self.get("quorum.device.votes")?.is_some();
        let two_node = matches!(
            self.get("quorum.two_node")?.as_ref().map(CmapValue::from),
            Some(CmapValue::Unsigned(v)) if v != 0
        );
        Ok(device || two_node)
    }

    /// Every `nodelist.node.<index>` entry, by index.
    pub fn nodelist(&self) -> Result<Vec<CmapNode>> {
        let prefix = "nodelist.node.";
        let iter = call(
            "cmap_iter_init",
            cmap::CmapIterStart::new(&self.handle, prefix),
        )?;
        // The crate's iterator finalizes the libcmap iterator at its end,
        // so it is always run to completion.
        let items: Vec<(String, CmapValue)> = iter
            .into_iter()
            .map(|item| (item.key_name().to_owned(), CmapValue::from(item.data())))
            .collect();
        parse_nodelist(
            items
                .iter()
                .map(|(key, value)| (key.as_str(), value.clone())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_have_the_c_daemon_lengths() {
        // spec/dfsm.md §1: length 12 and 15, the NUL included.
        for (group, length) in [("pve_dcdb_v1", 12), ("pve_kvstore_v1", 15)] {
            let wire = cpg_wire_name(group).unwrap();
            assert_eq!(wire.len(), length);
            assert_eq!(wire.len(), group.len() + 1);
            assert_eq!(wire.as_bytes().last(), Some(&0));
            assert_eq!(&wire[..group.len()], group);
        }
    }

    #[test]
    fn wire_names_refuse_what_c_could_not_join() {
        assert!(matches!(
            cpg_wire_name(""),
            Err(CorosyncError::GroupName { .. })
        ));
        assert!(matches!(
            cpg_wire_name("a\0b"),
            Err(CorosyncError::GroupName { .. })
        ));
        let longest = "x".repeat(CPG_GROUP_NAME_LEN_MAX);
        // The crate's limit: at most 127 bytes in the cpg_name, NUL included.
        assert_eq!(cpg_wire_name(&longest).unwrap().len(), 127);
        let too_long = "x".repeat(CPG_GROUP_NAME_LEN_MAX + 1);
        assert!(matches!(
            cpg_wire_name(&too_long),
            Err(CorosyncError::GroupName { .. })
        ));
    }

    #[test]
    fn errors_are_classified() {
        let try_again = CorosyncError::from_cs("cpg_mcast_joined", CsError::CsErrTryAgain);
        assert!(try_again.is_try_again() && !try_again.is_gone());
        assert_eq!(try_again.code(), Some(CsError::CsErrTryAgain));
        for code in [CsError::CsErrLibrary, CsError::CsErrBadHandle] {
            let error = CorosyncError::from_cs("cpg_dispatch", code);
            assert!(error.is_gone() && !error.is_try_again());
        }
        for code in [
            CsError::CsErrNotExist,
            CsError::CsErrAccess,
            CsError::CsErrTooBig,
        ] {
            assert!(!CorosyncError::from_cs("cpg_join", code).is_gone());
        }
        assert_eq!(
            CorosyncError::from_cs("cpg_dispatch", CsError::CsErrLibrary).to_string(),
            "cpg_dispatch: ErrLibrary"
        );
    }

    #[test]
    fn nodelist_follows_confdb_c() {
        let u = CmapValue::Unsigned;
        let s = |v: &str| CmapValue::String(v.to_owned());
        let pairs = vec![
            ("nodelist.node.1.name", s("b")),
            ("nodelist.node.0.nodeid", u(1)),
            ("nodelist.node.0.ring0_addr", s("10.0.0.1")),
            ("nodelist.node.0.name", s("a")),
            ("nodelist.node.0.quorum_votes", u(1)),
            ("nodelist.node.1.nodeid", u(2)),
            ("nodelist.node.1.ring0_addr", s("10.0.0.2")),
            ("nodelist.node.2.ring0_addr", s("10.0.0.3")),
            ("nodelist.node.2.nodeid", u(3)),
            ("nodelist.node.3.name", s("no-id")),
            ("nodelist.node.4.nodeid", u(5)),
            ("nodelist.node.5.name", s("zero")),
            ("nodelist.node.5.nodeid", u(0)),
            ("nodelist.node.0.ring1_addr", s("ignored")),
            ("nodelist.local_node_pos", u(0)),
        ];
        let nodes = parse_nodelist(pairs).unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.index).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        let taken: Vec<_> = nodes.iter().filter_map(CmapNode::as_cluster_node).collect();
        // name wins over ring0_addr, ring0_addr stands in for a missing
        // name, votes default to 0, no name or node id 0: skipped.
        assert_eq!(taken, [(1, "a", 1), (2, "b", 0), (3, "10.0.0.3", 0)]);
    }

    #[test]
    fn nodelist_refuses_wrong_types() {
        let pairs = vec![("nodelist.node.0.nodeid", CmapValue::String("1".into()))];
        assert!(matches!(
            parse_nodelist(pairs),
            Err(CorosyncError::CmapType { .. })
        ));
        let pairs = vec![("nodelist.node.0.name", CmapValue::Unsigned(1))];
        assert!(matches!(
            parse_nodelist(pairs),
            Err(CorosyncError::CmapType { .. })
        ));
        let pairs = vec![("nodelist.node.0.nodeid", CmapValue::Unsigned(1 << 32))];
        assert!(matches!(
            parse_nodelist(pairs),
            Err(CorosyncError::CmapType { .. })
        ));
    }
}
