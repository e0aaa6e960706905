//! The daemon's corosync side in cluster mode: one CPG connection per group
//! (`pve_dcdb_v1`, `pve_kvstore_v1`), votequorum and cmap, polled by the
//! reactor and dispatched on the loop thread. Connections that fail or go away are retried with
//! backoff while the file system keeps serving reads (without quorum: no
//! writes). Deliveries and membership changes go to the file system's DFSM;
//! what it wants multicast is sent here, in order.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pmxcfs_cpg::corosync::{Cmap, Cpg, CpgEvent, Quorum, QuorumEvent};
use pmxcfs_cpg::dfsm::Votes;
use pmxcfs_fsproto::{Channel, ClusterInfo, ClusterNode, DfsmMessage, Group, MemberId};
use pmxcfs_reactor::{OperationId, Reactor, Token};

use crate::corosync_conf;

pub const TOKEN_CPG_DCDB: Token = Token(110);
pub const TOKEN_QUORUM: Token = Token(111);
pub const TOKEN_TICK: Token = Token(112);
pub const TOKEN_CPG_KVSTORE: Token = Token(113);

/// Reconnect attempts start this soon and back off to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// After the DFSM left the group, wait this long before joining again (C:
/// the 5 s restart rule of its service loop plus its 1 s tick).
const REJOIN_DELAY: Duration = Duration::from_secs(6);
/// A multicast corosync refuses with TRY_AGAIN is retried this long.
const SEND_RETRY_FOR: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(500);
const TICK_BUSY: Duration = Duration::from_millis(5);
/// The DCDB verify request interval (C: 3600 s).
const VERIFY_EVERY: Duration = Duration::from_secs(3600);
/// A dispatch that delivered at least this many bytes is followed by
/// handing the allocator's free memory back to the system.
const RELEASE_AFTER_BYTES: usize = 8 << 20;

/// A member that left while synced dispatches its group this long at most
/// for the confchg that removes it.
const LEAVE_DISPATCH_FOR: Duration = Duration::from_secs(5);
/// cmap is re-read this often (C tracks keys; a periodic read is enough for
/// `.members`).
const CMAP_EVERY: Duration = Duration::from_secs(5);

struct Pending {
    msg: DfsmMessage,
    bytes: Vec<u8>,
    since: Instant,
}

/// One group's CPG connection.
struct CpgConn {
    group: Group,
    token: Token,
    cpg: Option<Cpg>,
    poll: Option<OperationId>,
    next: Instant,
    backoff: Duration,
    send_queue: VecDeque<Pending>,
    /// The DFSM entered a permanent error mode: no more joins.
    dead: bool,
    /// Left the group but still dispatching until the confchg that removes
    /// us (or this deadline): the others count us as synced until then.
    leaving_until: Option<Instant>,
}

impl CpgConn {
    fn new(group: Group, token: Token) -> CpgConn {
        CpgConn {
            group,
            token,
            cpg: None,
            poll: None,
            next: Instant::now(),
            backoff: BACKOFF_MIN,
            send_queue: VecDeque::new(),
            dead: false,
            leaving_until: None,
        }
    }
}

/// The file in the data dir that keeps the unconfirmed own writes.
const KEPT_FILE: &str = "own-writes";

/// `path` replaced by `bytes` atomically and durably (tmp file, fsync,
/// rename, fsync of the directory).
fn write_synced(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub struct ClusterLink {
    conns: [CpgConn; 2],
    quorum: Option<Quorum>,
    quorum_poll: Option<OperationId>,
    cmap: Option<Cmap>,
    next_quorum: Instant,
    quorum_backoff: Duration,
    next_cmap: Instant,
    next_verify: Instant,
    corosync_conf: PathBuf,
    /// `<data dir>/own-writes`: the unconfirmed own writes (write safety)
    /// kept across a restart.
    kept_file: PathBuf,
    tick_armed: bool,
    failures_logged: bool,
}

impl ClusterLink {
    pub fn new(corosync_conf: PathBuf, data_dir: &std::path::Path) -> ClusterLink {
        let now = Instant::now();
        ClusterLink {
            conns: [
                CpgConn::new(Group::Dcdb, TOKEN_CPG_DCDB),
                CpgConn::new(Group::Kvstore, TOKEN_CPG_KVSTORE),
            ],
            quorum: None,
            quorum_poll: None,
            cmap: None,
            next_quorum: now,
            quorum_backoff: BACKOFF_MIN,
            next_cmap: now,
            next_verify: now + VERIFY_EVERY,
            corosync_conf,
            kept_file: data_dir.join(KEPT_FILE),
            tick_armed: false,
            failures_logged: false,
        }
    }

    fn conn_index(group: Group) -> usize {
        match group {
            Group::Dcdb => 0,
            Group::Kvstore => 1,
        }
    }

    fn arm_tick(&mut self, reactor: &mut Reactor) {
        if !self.tick_armed {
            let after = if self.conns.iter().all(|conn| conn.send_queue.is_empty()) {
                TICK
            } else {
                TICK_BUSY
            };
            if reactor.timer(after, TOKEN_TICK).is_ok() {
                self.tick_armed = true;
            }
        }
    }

    /// Periodic work (and the first connect): reconnects, cmap, verify, send
    /// retries.
    pub fn tick(&mut self, reactor: &mut Reactor, channel: &mut Channel) {
        let now = Instant::now();
        if self.quorum.is_none() && now >= self.next_quorum {
            self.connect_quorum(reactor, channel);
        }
        if now >= self.next_cmap {
            self.next_cmap = now + CMAP_EVERY;
            self.read_cmap(channel);
        }
        for group in Group::ALL {
            let conn = &self.conns[Self::conn_index(group)];
            if conn.cpg.is_none() && !conn.dead && now >= conn.next {
                self.connect_cpg(group, reactor, channel);
            }
        }
        if now >= self.next_verify {
            self.next_verify = now + VERIFY_EVERY;
            channel.replication().request_verify();
        }
        channel.replication().expire_waiting();
        for group in Group::ALL {
            self.finish_leave(group, reactor, channel, true);
        }
        self.after_events(reactor, channel);
    }

    pub fn on_tick(&mut self, reactor: &mut Reactor, channel: &mut Channel) {
        self.tick_armed = false;
        self.tick(reactor, channel);
    }

    fn connect_quorum(&mut self, reactor: &mut Reactor, channel: &mut Channel) {
        match Quorum::new() {
            Ok(quorum) => {
                let quorate = quorum.quorate().unwrap_or(false);
                channel.replication().set_quorate(quorate);
                match reactor.poll_once(quorum.fd().as_raw_fd(), libc::POLLIN as u32, TOKEN_QUORUM)
                {
                    Ok(id) => self.quorum_poll = Some(id),
                    Err(error) => tracing::error!(%error, "cannot poll the quorum fd"),
                }
                tracing::info!(quorate, "quorum service connected");
                self.quorum = Some(quorum);
                self.quorum_backoff = BACKOFF_MIN;
            }
            Err(error) => {
                self.log_failure(&format!("quorum: {error}"));
                self.next_quorum = Instant::now() + self.quorum_backoff;
                self.quorum_backoff = (self.quorum_backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    fn connect_cpg(&mut self, group: Group, reactor: &mut Reactor, channel: &mut Channel) {
        let connected = Cpg::new().and_then(|mut cpg| {
            let node_id = cpg.local_node_id()?;
            channel
                .replication()
                .cpg_connected(group, MemberId::new(node_id, std::process::id()));
            cpg.join(group.name())?;
            Ok((cpg, node_id))
        });
        let index = Self::conn_index(group);
        match connected {
            Ok((cpg, node_id)) => {
                let conn = &mut self.conns[index];
                match reactor.poll_once(cpg.fd().as_raw_fd(), libc::POLLIN as u32, conn.token) {
                    Ok(id) => conn.poll = Some(id),
                    Err(error) => {
                        // Without a poll the group would never be dispatched:
                        // drop the connection (leaves the group) and retry.
                        tracing::error!(%error, "cannot poll the CPG fd; retrying");
                        drop(cpg);
                        self.drop_cpg(group, reactor, channel, BACKOFF_MIN);
                        return;
                    }
                }
                tracing::info!(node_id, group = group.name(), "joined the CPG group");
                conn.cpg = Some(cpg);
                conn.backoff = BACKOFF_MIN;
                self.failures_logged = false;
            }
            Err(error) => {
                self.log_failure(&format!("cpg {}: {error}", group.name()));
                let conn = &mut self.conns[index];
                conn.next = Instant::now() + conn.backoff;
                conn.backoff = (conn.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    fn log_failure(&mut self, what: &str) {
        if self.failures_logged {
            tracing::debug!("corosync not reachable: {what}");
        } else {
            tracing::warn!("corosync not reachable, retrying: {what}");
            self.failures_logged = true;
        }
    }

    fn read_cmap(&mut self, channel: &mut Channel) {
        if self.cmap.is_none() {
            self.cmap = Cmap::new().ok();
        }
        let Some(cmap) = &self.cmap else {
            return;
        };
        let info = (|| {
            let name = cmap.cluster_name()?;
            let config_version = cmap.config_version()?.unwrap_or(0);
            let list = cmap.nodelist()?;
            // Write safety counts corosync's votes: a node without
            // quorum_votes has 1 (corosync's default).
            let votes = (!cmap.vote_helper()?).then(|| {
                Votes::new(list.iter().filter_map(|node| {
                    Some((
                        node.node_id.filter(|&id| id != 0)?,
                        node.quorum_votes.unwrap_or(1),
                    ))
                }))
            });
            let nodes = list
                .iter()
                .filter_map(|node| node.as_cluster_node())
                .map(|(node_id, name, votes)| ClusterNode {
                    name: name.to_owned(),
                    node_id,
                    votes,
                })
                .collect();
            Ok::<_, pmxcfs_cpg::corosync::CorosyncError>((
                ClusterInfo {
                    name,
                    config_version,
                    nodes,
                },
                votes,
            ))
        })();
        match info {
            Ok((info, votes)) => {
                channel.replication().set_cluster_info(Some(info));
                channel.replication().set_write_votes(votes);
            }
            Err(error) => {
                tracing::debug!(%error, "cmap read failed; reconnecting later");
                self.cmap = None;
            }
        }
    }

    /// A CPG fd is readable (`token` names the group).
    pub fn on_cpg(
        &mut self,
        token: Token,
        id: OperationId,
        reactor: &mut Reactor,
        channel: &mut Channel,
    ) {
        let Some(index) = self.conns.iter().position(|conn| conn.token == token) else {
            return;
        };
        let conn = &mut self.conns[index];
        let group = conn.group;
        if conn.poll != Some(id) {
            return; // a poll of a connection that is gone
        }
        conn.poll = None;
        let Some(cpg) = conn.cpg.as_mut() else {
            return;
        };
        let dispatched = cpg.dispatch();
        let events: Vec<CpgEvent> = cpg.events().collect();
        let replication = channel.replication();
        // Consecutive deliveries are applied together (one journal commit),
        // up to the next membership change.
        let mut delivered: Vec<(MemberId, Vec<u8>)> = Vec::new();
        let mut delivered_bytes = 0usize;
        for event in events {
            match event {
                CpgEvent::Deliver {
                    node_id,
                    pid,
                    payload,
                    ..
                } => {
                    delivered_bytes += payload.len();
                    delivered.push((MemberId::new(node_id, pid), payload));
                }
                CpgEvent::ConfChg {
                    members, joined, ..
                } => {
                    replication.cpg_deliver_all(group, &delivered);
                    delivered.clear();
                    let ids = |list: &[pmxcfs_cpg::corosync::CpgMember]| -> Vec<MemberId> {
                        list.iter()
                            .map(|m| MemberId::new(m.node_id, m.pid))
                            .collect()
                    };
                    replication.cpg_confchg(group, &ids(&members), &ids(&joined));
                }
            }
        }
        replication.cpg_deliver_all(group, &delivered);
        drop(delivered);
        if delivered_bytes >= RELEASE_AFTER_BYTES {
            // A resync's updates (the whole tree) or a burst of large
            // writes: what they took is free now, give it back.
            pmxcfs_store::release_free_memory();
        }
        let rearmed = dispatched.is_ok()
            && match reactor.poll_once(cpg.fd().as_raw_fd(), libc::POLLIN as u32, token) {
                Ok(id) => {
                    conn.poll = Some(id);
                    true
                }
                Err(error) => {
                    tracing::error!(%error, "cannot poll the CPG fd");
                    false
                }
            };
        if !rearmed {
            if let Err(error) = dispatched {
                tracing::error!(%error, group = group.name(), "CPG dispatch failed; reconnecting");
            }
            self.drop_cpg(group, reactor, channel, BACKOFF_MIN);
        } else {
            self.finish_leave(group, reactor, channel, false);
        }
        self.after_events(reactor, channel);
    }

    /// A group left while synced is dropped once the confchg that removed
    /// us was applied (the DFSM no longer holds), or at the deadline.
    fn finish_leave(
        &mut self,
        group: Group,
        reactor: &mut Reactor,
        channel: &mut Channel,
        tick: bool,
    ) {
        let conn = &mut self.conns[Self::conn_index(group)];
        let Some(until) = conn.leaving_until else {
            return;
        };
        let expired = tick && Instant::now() >= until;
        if channel.replication().leaving_synced(group) && !expired {
            return;
        }
        if expired {
            tracing::warn!(
                group = group.name(),
                "no confchg after leaving; dropping the connection"
            );
        }
        conn.leaving_until = None;
        self.drop_cpg(group, reactor, channel, REJOIN_DELAY);
    }

    /// The quorum fd is readable.
    pub fn on_quorum(&mut self, id: OperationId, reactor: &mut Reactor, channel: &mut Channel) {
        if self.quorum_poll != Some(id) {
            return;
        }
        self.quorum_poll = None;
        let Some(quorum) = self.quorum.as_mut() else {
            return;
        };
        let dispatched = quorum.dispatch();
        let events: Vec<QuorumEvent> = quorum.events().collect();
        for QuorumEvent::Changed { quorate, .. } in events {
            channel.replication().set_quorate(quorate);
        }
        let rearmed = dispatched.is_ok()
            && match reactor.poll_once(quorum.fd().as_raw_fd(), libc::POLLIN as u32, TOKEN_QUORUM) {
                Ok(id) => {
                    self.quorum_poll = Some(id);
                    true
                }
                Err(_) => false,
            };
        if !rearmed {
            tracing::error!("quorum service lost; no quorum until it is back");
            self.quorum = None;
            channel.replication().set_quorate(false);
            self.next_quorum = Instant::now() + BACKOFF_MIN;
        }
        self.after_events(reactor, channel);
    }

    /// Drops a group's CPG connection: waiting writers fail, the DFSM
    /// starts over, a new connection is tried after `delay`.
    fn drop_cpg(
        &mut self,
        group: Group,
        reactor: &mut Reactor,
        channel: &mut Channel,
        delay: Duration,
    ) {
        let conn = &mut self.conns[Self::conn_index(group)];
        if let Some(id) = conn.poll.take() {
            let _ = reactor.cancel(id);
        }
        conn.cpg = None;
        conn.leaving_until = None;
        let failed: Vec<Pending> = conn.send_queue.drain(..).collect();
        conn.next = Instant::now() + delay;
        for pending in failed {
            channel.replication().send_failed(group, &pending.msg);
        }
        if !channel.replication().cpg_restart(group) {
            tracing::error!(
                group = group.name(),
                "the DFSM is in a permanent error mode; this group's connection stopped"
            );
            self.conns[Self::conn_index(group)].dead = true;
        }
    }

    /// Sends what the DFSM queued, leaves if it asked to, flushes replies
    /// and invalidations, copies corosync.conf if it changed.
    pub fn after_events(&mut self, reactor: &mut Reactor, channel: &mut Channel) {
        // Whatever waits from an earlier TRY_AGAIN goes first (the tick
        // lands here too: a refused message is retried even if nothing new
        // comes).
        for group in Group::ALL {
            self.send_queued(group, channel);
        }
        // Back-pressure: above the bound new writes wait at the gate and
        // status updates are held (fsproto's MAX_SEND_BACKLOG).
        let backlog = self
            .conns
            .iter()
            .flat_map(|conn| conn.send_queue.iter())
            .map(|pending| pending.bytes.len())
            .sum();
        channel.replication().set_send_backlog(backlog);
        loop {
            let outgoing = channel.replication().take_outgoing();
            if outgoing.is_empty() {
                break;
            }
            let now = Instant::now();
            for (group, msg, bytes) in outgoing {
                self.conns[Self::conn_index(group)]
                    .send_queue
                    .push_back(Pending {
                        msg,
                        bytes,
                        since: now,
                    });
            }
            for group in Group::ALL {
                self.send_queued(group, channel);
            }
        }
        for group in Group::ALL {
            if channel.replication().take_leave(group) {
                let holding = channel.replication().leaving_synced(group);
                let conn = &mut self.conns[Self::conn_index(group)];
                if let Some(cpg) = conn.cpg.as_mut() {
                    let _ = cpg.leave();
                    if holding {
                        // Go on applying what the group still counts us
                        // for, until the confchg that removes us.
                        tracing::warn!(
                            group = group.name(),
                            "leaving the CPG group; applying writes until the group has seen us leave"
                        );
                        conn.leaving_until = Some(Instant::now() + LEAVE_DISPATCH_FOR);
                        continue;
                    }
                }
                tracing::warn!(
                    group = group.name(),
                    "left the CPG group; joining again in {REJOIN_DELAY:?}"
                );
                self.drop_cpg(group, reactor, channel, REJOIN_DELAY);
            }
        }
        if let Some(notify) = channel.replication().take_corosync_conf_change() {
            self.sync_corosync_conf(channel, notify);
        }
        self.keep_own_writes(channel);
        channel.flush();
        self.arm_tick(reactor);
    }

    /// Before the groups are joined: the unconfirmed own writes kept before
    /// a restart go back to the DFSM (checked after the first resync within
    /// a majority). A file that does not decode is logged and removed.
    pub fn restore_own_writes(&mut self, channel: &mut Channel) {
        let bytes = match std::fs::read(&self.kept_file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => {
                tracing::warn!(file = %self.kept_file.display(), %error, "cannot read the kept own writes");
                return;
            }
        };
        match channel.replication().restore_kept_writes(&bytes) {
            Ok(count) => tracing::info!(
                count,
                file = %self.kept_file.display(),
                "own writes a majority may lack, kept before the restart"
            ),
            Err(error) => {
                tracing::warn!(file = %self.kept_file.display(), %error, "kept own writes unreadable; removed");
                let _ = std::fs::remove_file(&self.kept_file);
            }
        }
    }

    /// Keeps the unconfirmed own writes on disk when they changed (a
    /// partition, a heal: rare), so that a restart does not forget them:
    /// written to a temporary file, synced, renamed over the old one.
    fn keep_own_writes(&mut self, channel: &mut Channel) {
        let Some(contents) = channel.replication().take_kept_writes() else {
            return;
        };
        let result = match contents {
            None => match std::fs::remove_file(&self.kept_file) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            },
            Some(bytes) => write_synced(&self.kept_file, &bytes),
        };
        if let Err(error) = result {
            tracing::warn!(
                file = %self.kept_file.display(),
                %error,
                "cannot keep the unconfirmed own writes on disk; a restart before the heal would forget them"
            );
        }
    }

    fn send_queued(&mut self, group: Group, channel: &mut Channel) {
        let conn = &mut self.conns[Self::conn_index(group)];
        while let Some(pending) = conn.send_queue.front() {
            let Some(cpg) = conn.cpg.as_mut() else {
                // Not connected: the DFSM learns the send failed.
                if let Some(pending) = conn.send_queue.pop_front() {
                    channel.replication().send_failed(group, &pending.msg);
                }
                continue;
            };
            match cpg.mcast_agreed(&[IoSlice::new(&pending.bytes)]) {
                Ok(()) => {
                    conn.send_queue.pop_front();
                }
                Err(error) if error.is_try_again() && pending.since.elapsed() < SEND_RETRY_FOR => {
                    // Flow control: retried by the (short) tick.
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, group = group.name(), "multicast failed");
                    if let Some(pending) = conn.send_queue.pop_front() {
                        channel.replication().send_failed(group, &pending.msg);
                    }
                    if channel.replication().leave_requested(group) {
                        // The DFSM gave up on this membership (e.g. a failed
                        // UPDATE under write safety): nothing queued behind
                        // the failure may reach the group (an UPDATE_COMPLETE
                        // would let the others count an incomplete member as
                        // synced).
                        while let Some(pending) = conn.send_queue.pop_front() {
                            channel.replication().send_failed(group, &pending.msg);
                        }
                    }
                }
            }
        }
    }

    pub fn sync_corosync_conf(&mut self, channel: &mut Channel, notify: bool) {
        let tree = channel.fs().read_tree_file(b"corosync.conf");
        match corosync_conf::sync(tree.as_deref(), &self.corosync_conf, notify) {
            Ok(corosync_conf::Outcome::Written { reload: true }) => corosync_conf::request_reload(),
            Ok(_) => {}
            Err(error) => tracing::error!(
                %error,
                path = %self.corosync_conf.display(),
                "cannot update the host corosync.conf"
            ),
        }
    }

    /// Shutdown: the groups are left when the connections close.
    pub fn stop(&mut self, reactor: &mut Reactor) {
        for conn in &mut self.conns {
            if let Some(id) = conn.poll.take() {
                let _ = reactor.cancel(id);
            }
            if let Some(cpg) = conn.cpg.as_mut() {
                let _ = cpg.leave();
            }
            conn.cpg = None;
        }
        if let Some(id) = self.quorum_poll.take() {
            let _ = reactor.cancel(id);
        }
        self.quorum = None;
        self.cmap = None;
    }
}
