//! The status/kvstore application of the DFSM (group `pve_kvstore_v1`,
//! spec/dfsm.md §10, spec/status.md §2, §5): the cluster log (its ring is
//! the state blob, merged on every membership change), the per-node
//! key/value tables and node IPs, and which nodes have a pmxcfs in the
//! group (`.members` "online").
//!
//! There is no leader and no UPDATE phase: every member is synced after the
//! state exchange. Own NORMAL messages are ignored on delivery (the local
//! copy was updated when sending).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::dfsm::{AppError, Application, Ctx, MemberId, StateDecision};
use crate::status::{self, StatusTables};
use crate::wire::{
    CLOG_BASE_BYTES, CLOG_DEFAULT_BYTES, CLOG_MAX_ENTRY_BYTES, ClogEntry, ClogState, KvUpdate,
    KvstoreType, clog_digest,
};

/// Bytes of ring a merge may fill (C: size − header − one max entry).
const MERGE_BUDGET: u64 =
    CLOG_DEFAULT_BYTES as u64 - CLOG_BASE_BYTES as u64 - CLOG_MAX_ENTRY_BYTES as u64;
/// Longest node/ident/tag string stored (C: 254 characters + NUL).
const STRING_MAX: usize = 254;

/// One cluster log entry (dfsm.md §10.3), owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub uid: u32,
    pub time: u32,
    pub node_digest: u64,
    pub ident_digest: u64,
    pub pid: u32,
    pub priority: u8,
    pub node: Vec<u8>,
    pub ident: Vec<u8>,
    pub tag: Vec<u8>,
    pub message: Vec<u8>,
}

impl LogEntry {
    /// An owned copy of a decoded entry.
    pub fn from_wire(entry: &ClogEntry<'_>) -> LogEntry {
        LogEntry {
            uid: entry.uid,
            time: entry.time,
            node_digest: entry.node_digest,
            ident_digest: entry.ident_digest,
            pid: entry.pid,
            priority: entry.priority,
            node: entry.node.to_vec(),
            ident: entry.ident.to_vec(),
            tag: entry.tag.to_vec(),
            message: entry.message.to_vec(),
        }
    }

    fn as_wire(&self) -> ClogEntry<'_> {
        ClogEntry {
            prev: 0,
            next: 0,
            uid: self.uid,
            time: self.time,
            node_digest: self.node_digest,
            ident_digest: self.ident_digest,
            pid: self.pid,
            priority: self.priority,
            node: &self.node,
            ident: &self.ident,
            tag: &self.tag,
            message: &self.message,
        }
    }

    /// The bytes the entry takes in the ring.
    fn ring_bytes(&self) -> u64 {
        self.as_wire().size().next_multiple_of(8)
    }

    /// The LOG message payload.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.as_wire().encode(&mut out).ok()?;
        Some(out)
    }
}

/// `clog_entry_sort_fn` (dfsm.md §10.4): time, then the low 32 bits of the
/// node digest difference (0 = equal), then uid.
pub fn log_order(a: &LogEntry, b: &LogEntry) -> Ordering {
    if a.time != b.time {
        return (a.time.wrapping_sub(b.time) as i32).cmp(&0);
    }
    if a.node_digest != b.node_digest {
        let low = a.node_digest.wrapping_sub(b.node_digest) as u32 as i32;
        return low.cmp(&0);
    }
    (a.uid.wrapping_sub(b.uid) as i32).cmp(&0)
}

/// `utf8_to_ascii(quotequote = true)` (dfsm.md §10.6) into at most
/// `limit − 2` bytes.
pub fn utf8_to_ascii(input: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if limit <= 10 {
        return out;
    }
    let room = |out: &Vec<u8>| out.len() < limit - 7;
    match std::str::from_utf8(input) {
        Ok(text) => {
            for c in text.chars() {
                if !room(&out) {
                    break;
                }
                let code = c as u32;
                match code {
                    0x22 => out.extend_from_slice(b"\\\""),
                    0..=31 | 127 => out.extend_from_slice(format!("#{code:03}").as_bytes()),
                    32..=126 => out.push(code as u8),
                    128..=65535 => out.extend_from_slice(format!("\\u{code:04x}").as_bytes()),
                    _ => {}
                }
            }
        }
        Err(_) => {
            for &byte in input {
                if !room(&out) {
                    break;
                }
                match byte {
                    b'"' => out.extend_from_slice(b"\\\""),
                    0..=31 => out.extend_from_slice(format!("#0{byte:02}").as_bytes()),
                    32..=126 => out.push(byte),
                    _ => out.push(b'?'),
                }
            }
        }
    }
    out
}

/// What a local cluster log entry is made of (`clog_pack`'s arguments).
#[derive(Clone, Copy, Debug)]
pub struct LogRecord<'a> {
    pub node: &'a str,
    pub ident: &'a str,
    pub tag: &'a str,
    pub pid: u32,
    pub priority: u8,
    pub time: u32,
    pub message: &'a str,
}

pub use crate::status::KvTable;

/// The cluster log: entries oldest first, bounded by the 128 KiB ring, with
/// the per-node duplicate suppression of logger.c.
#[derive(Debug, Default)]
pub struct ClusterLog {
    entries: Vec<LogEntry>,
    bytes: u64,
    /// Per node digest: the newest (time, uid) inserted.
    newest: HashMap<u64, (u32, u32)>,
    uid: u32,
}

fn truncated(text: &[u8]) -> Vec<u8> {
    text[..text.len().min(STRING_MAX)].to_vec()
}

impl ClusterLog {
    pub fn new() -> ClusterLog {
        ClusterLog::default()
    }

    /// Builds a local entry (`clog_pack`): a fresh uid, the message escaped.
    /// `None` for a priority above 7.
    pub fn pack(&mut self, record: &LogRecord<'_>) -> Option<LogEntry> {
        let LogRecord {
            node,
            ident,
            tag,
            pid,
            priority,
            time,
            message,
        } = *record;
        if priority >= 8 {
            return None;
        }
        self.uid = self.uid.wrapping_add(1);
        let node_b = truncated(node.as_bytes());
        let ident_b = truncated(ident.as_bytes());
        let tag_b = truncated(tag.as_bytes());
        let fixed = 44 + node_b.len() + ident_b.len() + tag_b.len() + 3;
        // Keep the whole entry (with the NUL and the 4 trailing bytes)
        // within 4096: cut the text instead of clipping its NUL as C does.
        let mut text = utf8_to_ascii(message.as_bytes(), CLOG_MAX_ENTRY_BYTES - fixed);
        text.truncate(CLOG_MAX_ENTRY_BYTES - fixed - 5);
        Some(LogEntry {
            uid: self.uid,
            time,
            node_digest: clog_digest(node.as_bytes()),
            ident_digest: clog_digest(ident.as_bytes()),
            pid,
            priority,
            node: node_b,
            ident: ident_b,
            tag: tag_b,
            message: text,
        })
    }

    /// Inserts with the duplicate check (`dedup_lookup`); false if dropped.
    /// An entry larger than 4096 bytes is dropped (a C ring cannot hold it).
    pub fn insert(&mut self, entry: LogEntry) -> bool {
        if entry.as_wire().size() > CLOG_MAX_ENTRY_BYTES as u64 {
            tracing::debug!("cluster log entry larger than 4096 bytes dropped");
            return false;
        }
        let newer = match self.newest.get(&entry.node_digest) {
            None => true,
            Some(&(time, uid)) => entry.time > time || (entry.time == time && entry.uid > uid),
        };
        if !newer {
            tracing::debug!("ignore insert of duplicate cluster log");
            return false;
        }
        self.newest
            .insert(entry.node_digest, (entry.time, entry.uid));
        self.bytes += entry.ring_bytes();
        self.entries.push(entry);
        while self.bytes > MERGE_BUDGET && !self.entries.is_empty() {
            let old = self.entries.remove(0);
            self.bytes -= old.ring_bytes();
        }
        true
    }

    pub fn entries(&self) -> &[LogEntry] {
        &self.entries
    }

    /// The state blob: the compact sorted ring (131072 bytes; an empty log
    /// is sent unsorted: size field, cpos 0, zeros).
    pub fn state_blob(&self) -> Vec<u8> {
        let mut sorted = self.sorted();
        let mut out = Vec::with_capacity(CLOG_DEFAULT_BYTES as usize);
        loop {
            let wire: Vec<ClogEntry<'_>> = sorted.iter().map(LogEntry::as_wire).collect();
            out.clear();
            if ClogState::encode_compact(CLOG_DEFAULT_BYTES, &wire, &mut out).is_ok() {
                return out;
            }
            // Cannot happen within the budget; drop the oldest and retry.
            if sorted.is_empty() {
                let mut empty = vec![0u8; CLOG_DEFAULT_BYTES as usize];
                empty[..4].copy_from_slice(&CLOG_DEFAULT_BYTES.to_le_bytes());
                return empty;
            }
            sorted.remove(0);
        }
    }

    /// Entries in the ring sort order, equal ones (comparator) once: the
    /// newest-to-oldest walk keeps the one visited last.
    fn sorted(&self) -> Vec<LogEntry> {
        let mut kept: Vec<LogEntry> = Vec::with_capacity(self.entries.len());
        for entry in self.entries.iter().rev() {
            match kept.binary_search_by(|probe| log_order(probe, entry)) {
                Ok(at) => kept[at] = entry.clone(),
                Err(at) => kept.insert(at, entry.clone()),
            }
        }
        kept
    }

    /// `clusterlog_merge` (dfsm.md §10.7): `logs` are the members' logs
    /// (newest first each), the local one included.
    pub fn merge(&mut self, logs: &[Vec<LogEntry>]) {
        let mut positions = vec![0usize; logs.len()];
        let mut selected: Vec<LogEntry> = Vec::new();
        let mut accounted = 0u64;
        loop {
            let mut best: Option<(usize, &LogEntry)> = None;
            for (index, log) in logs.iter().enumerate() {
                if let Some(entry) = log.get(positions[index])
                    && entry.time != 0
                    && best.is_none_or(|(_, b)| entry.time > b.time)
                {
                    best = Some((index, entry));
                }
            }
            let Some((index, entry)) = best else {
                break;
            };
            if !selected
                .iter()
                .any(|s| log_order(s, entry) == Ordering::Equal)
            {
                accounted += entry.ring_bytes();
                selected.push(entry.clone());
            }
            positions[index] += 1;
            if accounted >= MERGE_BUDGET {
                break;
            }
        }
        // Per node, the first entry selected (the newest) seeds the
        // duplicate check, as C rebuilds it.
        self.newest.clear();
        for entry in &selected {
            self.newest
                .entry(entry.node_digest)
                .or_insert((entry.time, entry.uid));
        }
        selected.sort_by(log_order);
        self.bytes = selected.iter().map(LogEntry::ring_bytes).sum();
        self.entries = selected;
    }

    /// `clog_dump_json` of the newest `max` entries (spec/status.md §5.4).
    pub fn dump_json(&self, max: usize) -> String {
        self.dump_json_of(max, None)
    }

    /// [`ClusterLog::dump_json`] of the entries whose user (ident) is
    /// `user` (compared by digest, as C), or of all for `None`.
    pub fn dump_json_of(&self, max: usize, user: Option<&[u8]>) -> String {
        let digest = user.map(clog_digest);
        let mut out = String::from("{\n\"data\": [\n");
        let mut first = true;
        for entry in self
            .entries
            .iter()
            .rev()
            .filter(|entry| digest.is_none_or(|digest| entry.ident_digest == digest))
            .take(max)
        {
            if !first {
                out.push_str(",\n");
            }
            first = false;
            let s = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            out.push_str(&format!(
                "{{\"uid\": {}, \"time\": {}, \"pri\": {}, \"tag\": \"{}\", \"pid\": {}, \
                 \"node\": \"{}\", \"user\": \"{}\", \"msg\": \"{}\"}}",
                entry.uid,
                entry.time,
                entry.priority,
                s(&entry.tag),
                entry.pid,
                s(&entry.node),
                s(&entry.ident),
                s(&entry.message)
            ));
        }
        if !first {
            out.push('\n');
        }
        out.push_str("]\n}\n");
        out
    }
}

/// The entries of a received state blob, newest first (`None`: unusable).
fn log_of_state(blob: &[u8]) -> Option<Vec<LogEntry>> {
    let state = ClogState::decode(blob).ok()?;
    let mut entries = Vec::new();
    for item in state.entries() {
        let (_, entry) = item.ok()?;
        entries.push(LogEntry::from_wire(&entry));
    }
    Some(entries)
}

/// The kvstore application.
#[derive(Debug)]
pub struct Kvstore {
    nodename: String,
    /// This node's status tables (local key/values, every node's RRD
    /// values, the node IP).
    tables: StatusTables,
    log: ClusterLog,
    /// Generic key/value tables of other nodes: node id → key → (value,
    /// version).
    remote: BTreeMap<u32, KvTable>,
    /// `nodeip` of other nodes.
    ips: BTreeMap<u32, String>,
    /// Node ids configured in corosync (remote updates of others are
    /// ignored, as C does).
    configured: BTreeSet<u32>,
    /// Node ids with a member in the group.
    online: Vec<u32>,
    online_changed: bool,
}

impl Kvstore {
    pub fn new(nodename: &str, node_ip: Option<String>, log: ClusterLog) -> Kvstore {
        Kvstore {
            nodename: nodename.to_owned(),
            tables: StatusTables::new(node_ip),
            log,
            remote: BTreeMap::new(),
            ips: BTreeMap::new(),
            configured: BTreeSet::new(),
            online: Vec::new(),
            online_changed: false,
        }
    }

    pub fn log(&self) -> &ClusterLog {
        &self.log
    }

    pub fn log_mut(&mut self) -> &mut ClusterLog {
        &mut self.log
    }

    pub fn tables(&self) -> &StatusTables {
        &self.tables
    }

    pub fn tables_mut(&mut self) -> &mut StatusTables {
        &mut self.tables
    }

    /// The kvstore UPDATE payload of `key` = `value` (None: key too long).
    pub fn update_message(key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        Self::update_payload(key, value)
    }

    /// The node ids corosync's nodelist has (from cmap).
    pub fn set_configured(&mut self, node_ids: impl IntoIterator<Item = u32>) {
        self.configured = node_ids.into_iter().collect();
        self.remote.retain(|id, _| self.configured.contains(id));
    }

    /// Other nodes' IPs (`nodeip` updates).
    pub fn ips(&self) -> &BTreeMap<u32, String> {
        &self.ips
    }

    /// Other nodes' generic key/value tables.
    pub fn remote(&self) -> &BTreeMap<u32, KvTable> {
        &self.remote
    }

    /// `Some(node ids)` once after the group membership changed.
    pub fn take_online(&mut self) -> Option<Vec<u32>> {
        std::mem::take(&mut self.online_changed).then(|| self.online.clone())
    }

    fn update_payload(key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(256 + value.len());
        KvUpdate { key, value }.encode(&mut out).ok()?;
        Some(out)
    }

    fn remote_set(&mut self, node_id: u32, key: &[u8], value: &[u8], now: u32) {
        if !self.configured.contains(&node_id) {
            tracing::debug!(node_id, "kvstore update from a node not in the nodelist");
            return;
        }
        let table = self.remote.entry(node_id).or_default();
        if let Some(ip) = status::remote_update(&mut self.tables, table, key, value, now) {
            self.ips.insert(node_id, ip);
        }
        if self.remote.get(&node_id).is_some_and(BTreeMap::is_empty) {
            self.remote.remove(&node_id);
        }
    }
}

impl Application for Kvstore {
    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        subtype: u16,
        _time: u32,
        payload: &[u8],
    ) -> Result<i32, AppError> {
        if sender == ctx.local() {
            return Ok(0);
        }
        match KvstoreType::try_from(subtype) {
            Ok(KvstoreType::Update) => match KvUpdate::decode(payload) {
                Ok(update) => {
                    // RRD values are timed by their arrival here (C: time(NULL)).
                    let now = ctx.now();
                    self.remote_set(sender.node_id, update.key, update.value, now)
                }
                Err(error) => tracing::error!(%error, "bad kvstore UPDATE"),
            },
            Ok(KvstoreType::Log) => match ClogEntry::decode(payload) {
                Ok(entry) => {
                    self.log.insert(LogEntry::from_wire(&entry));
                }
                Err(error) => tracing::error!(%error, "bad cluster log entry"),
            },
            _ => tracing::error!(subtype, "unknown kvstore message type"),
        }
        Ok(0)
    }

    fn get_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>, AppError> {
        Ok(self.log.state_blob())
    }

    fn process_state_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        states: &[(MemberId, &[u8])],
    ) -> Result<StateDecision, AppError> {
        let local = ctx.local();
        let logs: Vec<Vec<LogEntry>> = states
            .iter()
            .map(|(member, blob)| {
                if *member == local {
                    self.log.entries().iter().rev().cloned().collect()
                } else {
                    log_of_state(blob).unwrap_or_else(|| {
                        tracing::warn!(%member, "unusable cluster log state ignored");
                        Vec::new()
                    })
                }
            })
            .collect();
        if logs.len() >= 2 {
            self.log.merge(&logs);
        }
        // Every member re-sends its generic table (not RRD, not nodeip).
        for (key, (value, _)) in self.tables.local() {
            if let Some(payload) = Self::update_payload(key, value) {
                ctx.send_normal(KvstoreType::Update as u16, payload);
            }
        }
        Ok(StateDecision {
            synced: vec![true; states.len()],
            updates: None,
        })
    }

    fn process_update(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _sender: MemberId,
        _payload: &[u8],
    ) -> Result<(), AppError> {
        Ok(())
    }

    fn commit(&mut self, _ctx: &mut Ctx<'_>) -> Result<(), AppError> {
        Ok(())
    }

    fn synced(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(ip) = self.tables.node_ip() {
            let mut value = ip.as_bytes().to_vec();
            value.push(0);
            if let Some(payload) = Self::update_payload(b"nodeip", &value) {
                ctx.send_normal(KvstoreType::Update as u16, payload);
            }
        }
    }

    fn confchg(&mut self, _ctx: &mut Ctx<'_>, members: &[MemberId]) {
        let mut online: Vec<u32> = members.iter().map(|m| m.node_id).collect();
        online.sort_unstable();
        online.dedup();
        self.online = online;
        self.online_changed = true;
        tracing::debug!(nodename = %self.nodename, "kvstore membership changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, time: u32, uid: u32) -> LogEntry {
        LogEntry {
            uid,
            time,
            node_digest: clog_digest(node.as_bytes()),
            ident_digest: clog_digest(b"root"),
            pid: 1,
            priority: 6,
            node: node.as_bytes().to_vec(),
            ident: b"root".to_vec(),
            tag: b"cluster".to_vec(),
            message: format!("m{time}-{uid}").into_bytes(),
        }
    }

    #[test]
    fn escaping_as_utf8_to_ascii() {
        assert_eq!(utf8_to_ascii(b"a\"b\nc", 100), b"a\\\"b#010c");
        assert_eq!(utf8_to_ascii("é€".as_bytes(), 100), b"\\u00e9\\u20ac");
        assert_eq!(utf8_to_ascii("x😀y".as_bytes(), 100), b"xy");
        assert_eq!(utf8_to_ascii(b"a\xffb\x01", 100), b"a?b#001");
        assert_eq!(utf8_to_ascii(b"abc", 10), b"");
        assert!(utf8_to_ascii(&[b'x'; 100], 20).len() <= 18);
    }

    #[test]
    fn duplicates_are_dropped_per_node() {
        let mut log = ClusterLog::new();
        assert!(log.insert(entry("a", 10, 1)));
        assert!(!log.insert(entry("a", 10, 1)));
        assert!(!log.insert(entry("a", 9, 5)));
        assert!(log.insert(entry("a", 10, 2)));
        assert!(log.insert(entry("b", 1, 1)));
        assert_eq!(log.entries().len(), 3);
    }

    #[test]
    fn state_blob_round_trips_sorted() {
        let mut log = ClusterLog::new();
        log.insert(entry("b", 20, 1));
        log.insert(entry("a", 10, 1));
        log.insert(entry("a", 30, 2));
        let blob = log.state_blob();
        assert_eq!(blob.len(), CLOG_DEFAULT_BYTES as usize);
        let newest_first = log_of_state(&blob).expect("decodes");
        let times: Vec<u32> = newest_first.iter().map(|e| e.time).collect();
        assert_eq!(times, [30, 20, 10]);
        let empty = ClusterLog::new().state_blob();
        assert_eq!(&empty[..8], &[0, 0, 2, 0, 0, 0, 0, 0]);
        assert!(log_of_state(&empty).expect("empty decodes").is_empty());
    }

    #[test]
    fn merge_takes_the_union_newest_first_without_duplicates() {
        let mut log = ClusterLog::new();
        log.insert(entry("a", 10, 1));
        log.insert(entry("a", 12, 2));
        let local: Vec<LogEntry> = log.entries().iter().rev().cloned().collect();
        // Newest first, as a state walk yields them.
        let remote = vec![entry("b", 11, 1), entry("a", 10, 1)];
        log.merge(&[local, remote]);
        let times: Vec<(u32, u32)> = log.entries().iter().map(|e| (e.time, e.uid)).collect();
        assert_eq!(times, [(10, 1), (11, 1), (12, 2)]);
        // Duplicate suppression rebuilt from the merged entries.
        assert!(!log.insert(entry("a", 12, 2)));
        assert!(log.insert(entry("b", 11, 2)));
    }

    #[test]
    fn packed_entries_stay_within_the_limit() {
        let mut log = ClusterLog::new();
        let long = "\u{1}".repeat(5000);
        let record = |priority, message| LogRecord {
            node: "node1",
            ident: "root@pam",
            tag: "tag",
            pid: 1,
            priority,
            time: 1,
            message,
        };
        let packed = log.pack(&record(6, &long)).expect("priority ok");
        assert!(packed.as_wire().size() <= CLOG_MAX_ENTRY_BYTES as u64);
        let bytes = packed.encode().expect("encodes");
        assert_eq!(ClogEntry::decode(&bytes).map(|e| e.uid), Ok(1));
        assert!(log.pack(&record(8, "x")).is_none());
    }
}
