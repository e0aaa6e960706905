//! The store against the bytes of the C daemon (pve-cluster 9.1.6), from
//! `tests/vectors/dcdb/` (see its README): the leader's UPDATEs must import
//! to the leader's STATE index byte for byte, the lock checksums carried in
//! UNLOCK_REQUEST/UNLOCK must be the checksums of the replayed lock dirs,
//! replaying each node's delivered DCDB stream must end in that node's final
//! `tree` table, and every apply must return what the C client saw.
//!
//! The DFSM/CPG codec is a separate crate that does not exist yet. Until it
//! does, module `wire` below is a minimal test-local parser of the few
//! layouts these tests need (spec/dfsm.md §2, §9.2, §9.4, §9.6 and the index
//! of spec/memdb.md §6). It is no codec: it decodes only, checks only what
//! the tests rely on, and is to be replaced by the real crate's decoder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pmxcfs_store::{Durability, Op, Origin, Reader, Row, Store, VERSION_ROW_NAME};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Test-local decoders of the DFSM/DCDB wire layouts. Every decoder returns
/// `None` on malformed or short input and never panics.
mod wire {
    pub const NORMAL_HEADER_BYTES: usize = 24;
    pub const STATE_HEADER_BYTES: usize = 32;
    const FUSE_FIXED_BYTES: usize = 20;
    const UNLOCK_CHECKSUM_BYTES: usize = 32;
    const UPDATE_FIXED_BYTES: usize = 41;
    const INDEX_HEADER_BYTES: usize = 32;
    const INDEX_ENTRY_BYTES: usize = 40;

    /// DFSM message types (spec/dfsm.md §3).
    pub const TYPE_NORMAL: u16 = 0;
    pub const TYPE_STATE: u16 = 2;
    pub const TYPE_UPDATE: u16 = 3;
    const TYPE_LAST_STATE: u16 = 6;

    /// DCDB NORMAL subtypes (spec/dfsm.md §9.1).
    pub const WRITE: u16 = 1;
    pub const MKDIR: u16 = 2;
    pub const DELETE: u16 = 3;
    pub const RENAME: u16 = 4;
    pub const CREATE: u16 = 5;
    pub const MTIME: u16 = 6;
    pub const UNLOCK_REQUEST: u16 = 7;
    pub const UNLOCK: u16 = 8;

    fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
        bytes.get(at..at.checked_add(N)?)?.try_into().ok()
    }

    fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
        array(bytes, at).map(u16::from_le_bytes)
    }

    fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
        array(bytes, at).map(u32::from_le_bytes)
    }

    fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
        array(bytes, at).map(u64::from_le_bytes)
    }

    /// A NUL-terminated field: the bytes before the first NUL (what the C
    /// receiver's string functions see). `None` if the last byte is not NUL.
    fn c_string(field: &[u8]) -> Option<&[u8]> {
        if field.last() != Some(&0) {
            return None;
        }
        let end = field.iter().position(|byte| *byte == 0)?;
        Some(&field[..end])
    }

    /// Base header (§2.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct BaseHeader {
        pub message_type: u16,
        pub subtype: u16,
        pub protocol_version: u32,
        pub time: u32,
        pub reserved: u32,
    }

    /// Epoch of a state header (§2.3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Epoch {
        pub epoch: u32,
        pub time: u32,
        pub node_id: u32,
        pub pid: u32,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Message<'a> {
        /// Type 0, 24-byte header (§2.2).
        Normal {
            base: BaseHeader,
            count: u64,
            payload: &'a [u8],
        },
        /// Types 1..6, 32-byte header (§2.3).
        State {
            base: BaseHeader,
            epoch: Epoch,
            payload: &'a [u8],
        },
    }

    pub fn decode_message(bytes: &[u8]) -> Option<Message<'_>> {
        let base = BaseHeader {
            message_type: u16_at(bytes, 0)?,
            subtype: u16_at(bytes, 2)?,
            protocol_version: u32_at(bytes, 4)?,
            time: u32_at(bytes, 8)?,
            reserved: u32_at(bytes, 12)?,
        };
        match base.message_type {
            TYPE_NORMAL => Some(Message::Normal {
                base,
                count: u64_at(bytes, 16)?,
                payload: bytes.get(NORMAL_HEADER_BYTES..)?,
            }),
            1..=TYPE_LAST_STATE => Some(Message::State {
                base,
                epoch: Epoch {
                    epoch: u32_at(bytes, 16)?,
                    time: u32_at(bytes, 20)?,
                    node_id: u32_at(bytes, 24)?,
                    pid: u32_at(bytes, 28)?,
                },
                payload: bytes.get(STATE_HEADER_BYTES..)?,
            }),
            _ => None,
        }
    }

    /// The "fuse" payload of subtypes 1..6 (§9.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Fuse<'a> {
        pub size: u32,
        pub offset: u32,
        pub path_len: u32,
        pub to_len: u32,
        pub flags: u32,
        pub path: &'a [u8],
        pub to: Option<&'a [u8]>,
        pub data: &'a [u8],
    }

    /// Requires total = 20 + size + pathlen + tolen and NUL-terminated
    /// strings, as the C receiver does; additionally refuses a missing path
    /// (which the C receiver would dereference).
    pub fn decode_fuse(payload: &[u8]) -> Option<Fuse<'_>> {
        let size = u32_at(payload, 0)?;
        let offset = u32_at(payload, 4)?;
        let path_len = u32_at(payload, 8)?;
        let to_len = u32_at(payload, 12)?;
        let flags = u32_at(payload, 16)?;
        let size_bytes = usize::try_from(size).ok()?;
        let path_bytes = usize::try_from(path_len).ok()?;
        let to_bytes = usize::try_from(to_len).ok()?;
        let total = FUSE_FIXED_BYTES
            .checked_add(size_bytes)?
            .checked_add(path_bytes)?
            .checked_add(to_bytes)?;
        if payload.len() != total || path_bytes == 0 {
            return None;
        }
        let rest = &payload[FUSE_FIXED_BYTES..];
        let (path_field, rest) = rest.split_at(path_bytes);
        let (to_field, data) = rest.split_at(to_bytes);
        let to = match to_bytes {
            0 => None,
            _ => Some(c_string(to_field)?),
        };
        Some(Fuse {
            size,
            offset,
            path_len,
            to_len,
            flags,
            path: c_string(path_field)?,
            to,
            data,
        })
    }

    /// The payload of UNLOCK_REQUEST and UNLOCK (§9.4).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Unlock<'a> {
        pub checksum: [u8; 32],
        pub path: &'a [u8],
    }

    pub fn decode_unlock(payload: &[u8]) -> Option<Unlock<'_>> {
        if payload.len() <= UNLOCK_CHECKSUM_BYTES {
            return None;
        }
        Some(Unlock {
            checksum: array(payload, 0)?,
            path: c_string(&payload[UNLOCK_CHECKSUM_BYTES..])?,
        })
    }

    /// One tree entry of a DCDB UPDATE (§9.6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct UpdateEntry<'a> {
        pub parent: u64,
        pub inode: u64,
        pub version: u64,
        pub writer: u32,
        pub mtime: u32,
        pub size: u32,
        pub name_len: u32,
        pub kind: u8,
        pub name: &'a [u8],
        pub data: &'a [u8],
    }

    pub fn decode_update(payload: &[u8]) -> Option<UpdateEntry<'_>> {
        let size = u32_at(payload, 32)?;
        let name_len = u32_at(payload, 36)?;
        let kind = *payload.get(40)?;
        if kind != 4 && kind != 8 || name_len == 0 {
            return None;
        }
        let name_bytes = usize::try_from(name_len).ok()?;
        let rest = payload.get(UPDATE_FIXED_BYTES..)?;
        if rest.len() != name_bytes.checked_add(usize::try_from(size).ok()?)? {
            return None;
        }
        let (name_field, data) = rest.split_at(name_bytes);
        Some(UpdateEntry {
            parent: u64_at(payload, 0)?,
            inode: u64_at(payload, 8)?,
            version: u64_at(payload, 16)?,
            writer: u32_at(payload, 24)?,
            mtime: u32_at(payload, 28)?,
            size,
            name_len,
            kind,
            name: c_string(name_field)?,
            data,
        })
    }

    /// The (inode, digest) pairs of a memdb index (memdb.md §6), with its
    /// length rules (`bytes` = length = 32 + 40 × size).
    pub fn decode_index(blob: &[u8]) -> Option<Vec<(u64, [u8; 32])>> {
        let count = usize::try_from(u32_at(blob, 24)?).ok()?;
        let bytes = usize::try_from(u32_at(blob, 28)?).ok()?;
        let expected = INDEX_HEADER_BYTES.checked_add(count.checked_mul(INDEX_ENTRY_BYTES)?)?;
        if bytes != blob.len() || bytes != expected {
            return None;
        }
        (0..count)
            .map(|index| {
                let at = INDEX_HEADER_BYTES + index * INDEX_ENTRY_BYTES;
                Some((u64_at(blob, at)?, array(blob, at + 8)?))
            })
            .collect()
    }
}

use wire::Message;

// ---- the vectors ----------------------------------------------------------

const DCDB_GROUP: &str = "pve_dcdb_v1";
const LEADER_NODE_ID: u32 = 1;
/// "sent all (13) updates" in pmxcfs-n1-notices.log.
const LEADER_UPDATE_COUNT: usize = 13;

fn dcdb_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/dcdb"
    ))
}

fn read_json(name: &str) -> Value {
    let path = dcdb_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One captured DCDB payload and what the manifest says about it.
struct Vector {
    file: String,
    direction: String,
    capturing_node: u32,
    sender_node_id: u32,
    fs_operation: String,
    fs_operation_node: u32,
    fs_operation_result: String,
    decoded: Value,
    bytes: Vec<u8>,
}

impl Vector {
    fn message(&self) -> Message<'_> {
        wire::decode_message(&self.bytes)
            .unwrap_or_else(|| panic!("{}: header does not decode", self.file))
    }

    fn header_type(&self) -> u64 {
        self.decoded["header"]["type"]
            .as_u64()
            .expect("header type")
    }
}

fn number(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

fn node_number(value: &Value, what: &str) -> u32 {
    u32::try_from(number(value, what)).expect("node id fits u32")
}

/// Every DCDB-group payload of the capture, in capture order (file order).
fn dcdb_vectors() -> Vec<Vector> {
    let manifest = read_json("manifest.json");
    let mut vectors: Vec<Vector> = manifest["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|message| message["group"] == DCDB_GROUP && message["file"].is_string())
        .map(|message| {
            let file = message["file"].as_str().expect("file").to_owned();
            let path = dcdb_dir().join(&file);
            let bytes =
                std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            assert_eq!(
                bytes.len() as u64,
                number(&message["length"], "length"),
                "{file}"
            );
            assert_eq!(
                hex(&Sha256::digest(&bytes)),
                message["sha256"].as_str().expect("sha256"),
                "{file}"
            );
            Vector {
                direction: message["direction"].as_str().expect("direction").to_owned(),
                capturing_node: node_number(&message["capturing_node"], "capturing_node"),
                sender_node_id: node_number(&message["sender_nodeid"], "sender_nodeid"),
                fs_operation: message["fs_operation"].as_str().unwrap_or("").to_owned(),
                fs_operation_node: node_number(&message["fs_operation_node"], "fs_operation_node"),
                fs_operation_result: message["fs_operation_result"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                decoded: message["decoded"].clone(),
                bytes,
                file,
            }
        })
        .collect();
    vectors.sort_by(|a, b| a.file.cmp(&b.file));
    assert!(!vectors.is_empty(), "no DCDB vectors in the manifest");
    vectors
}

/// The UPDATE payloads the leader multicast during n2's join.
fn leader_updates(vectors: &[Vector]) -> Vec<&Vector> {
    let updates: Vec<&Vector> = vectors
        .iter()
        .filter(|vector| {
            vector.direction == "mcast"
                && vector.capturing_node == LEADER_NODE_ID
                && vector.header_type() == u64::from(wire::TYPE_UPDATE)
        })
        .collect();
    assert_eq!(updates.len(), LEADER_UPDATE_COUNT);
    updates
}

/// The STATE (memdb index) `node` multicast in the sync.
fn state_sent_by(vectors: &[Vector], node: u32) -> &[u8] {
    let states: Vec<&Vector> = vectors
        .iter()
        .filter(|vector| {
            vector.direction == "mcast"
                && vector.capturing_node == node
                && vector.header_type() == u64::from(wire::TYPE_STATE)
        })
        .collect();
    assert_eq!(states.len(), 1, "one STATE from node {node}");
    match states[0].message() {
        Message::State { payload, .. } => payload,
        Message::Normal { .. } => panic!("{}: not a state message", states[0].file),
    }
}

/// The NORMAL messages delivered on `node`, in delivery order.
fn normal_deliveries(vectors: &[Vector], node: u32) -> Vec<&Vector> {
    vectors
        .iter()
        .filter(|vector| {
            vector.direction == "deliver"
                && vector.capturing_node == node
                && vector.header_type() == u64::from(wire::TYPE_NORMAL)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// The row a resync writes for one UPDATE entry (memdb.md §7 step 3): the
/// root becomes the `__version__` row with the type it was sent with, and
/// an entry without data is stored as NULL.
fn row_of_update(entry: &wire::UpdateEntry<'_>) -> Row {
    let root = entry.inode == 0;
    Row {
        inode: entry.inode,
        parent: entry.parent,
        version: entry.version,
        writer: entry.writer,
        mtime: entry.mtime,
        kind: entry.kind,
        name: if root {
            VERSION_ROW_NAME.to_vec()
        } else {
            entry.name.to_vec()
        },
        data: (!root && entry.size > 0).then(|| entry.data.to_vec()),
    }
}

fn decode_update(vector: &Vector) -> wire::UpdateEntry<'_> {
    match vector.message() {
        Message::State { payload, .. } => wire::decode_update(payload)
            .unwrap_or_else(|| panic!("{}: UPDATE entry does not decode", vector.file)),
        Message::Normal { .. } => panic!("{}: not a state message", vector.file),
    }
}

/// The tree right after n2's sync: the leader's UPDATEs as rows.
fn synced_rows(vectors: &[Vector]) -> Vec<Row> {
    leader_updates(vectors)
        .into_iter()
        .map(|vector| row_of_update(&decode_update(vector)))
        .collect()
}

/// n1's tree before its setup. n1 started alone on a fresh db and imported
/// corosync.conf with two local ops (CREATE = version 2 = inode 2, WRITE =
/// version 3; writer 0), so the root held version 3, writer 0 and the
/// write's mtime. corosync.conf was not changed afterwards: its UPDATE in
/// the sync carries exactly that row. (Checked by the n1 replay: after the
/// setup its index equals n1's STATE byte for byte.)
fn n1_initial_rows(vectors: &[Vector]) -> Vec<Row> {
    let corosync = synced_rows(vectors)
        .into_iter()
        .find(|row| row.name == b"corosync.conf")
        .expect("corosync.conf in the UPDATEs");
    assert_eq!(
        (corosync.inode, corosync.version, corosync.writer),
        (2, 3, 0)
    );
    let root = Row {
        inode: 0,
        parent: 0,
        version: corosync.version,
        writer: 0,
        mtime: corosync.mtime,
        kind: 8,
        name: VERSION_ROW_NAME.to_vec(),
        data: None,
    };
    vec![root, corosync]
}

/// `final-tree-n*.json` as rows. The dump is `sqlite3 -json` with
/// `length(data)` as `size`: NULL data has size null, an empty blob size 0;
/// both have `data_hex` "".
fn final_tree(name: &str) -> Vec<Row> {
    read_json(name)
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            let data_hex = row["data_hex"].as_str().expect("data_hex");
            let data = match &row["size"] {
                Value::Null => {
                    assert_eq!(data_hex, "", "NULL data with a hex dump");
                    None
                }
                size => {
                    let data = unhex(data_hex).expect("data_hex is hex");
                    assert_eq!(data.len() as u64, number(size, "size"));
                    Some(data)
                }
            };
            Row {
                inode: number(&row["inode"], "inode"),
                parent: number(&row["parent"], "parent"),
                version: number(&row["version"], "version"),
                writer: node_number(&row["writer"], "writer"),
                mtime: u32::try_from(number(&row["mtime"], "mtime")).expect("mtime fits u32"),
                kind: u8::try_from(number(&row["type"], "type")).expect("type fits u8"),
                name: row["name"].as_str().expect("name").as_bytes().to_vec(),
                data,
            }
        })
        .collect()
}

fn rows_of(reader: &Reader<'_>) -> Vec<Row> {
    let mut rows = Vec::new();
    reader
        .for_each_entry(|entry| {
            rows.push(Reader::row_of(&entry));
            Ok(())
        })
        .expect("for_each_entry");
    rows
}

fn assert_rows_equal(actual: &[Row], expected: &[Row], context: &str) {
    let by_inode = |rows: &[Row]| -> BTreeMap<u64, Row> {
        rows.iter().map(|row| (row.inode, row.clone())).collect()
    };
    let (actual, expected) = (by_inode(actual), by_inode(expected));
    let mut mismatches = Vec::new();
    for inode in actual.keys().chain(expected.keys()) {
        if actual.get(inode) != expected.get(inode) && !mismatches.contains(inode) {
            mismatches.push(*inode);
        }
    }
    let show = |row: Option<&Row>| match row {
        None => "absent".to_owned(),
        Some(row) => format!(
            "parent {} version {} writer {} mtime {} type {} name {:?} data {}",
            row.parent,
            row.version,
            row.writer,
            row.mtime,
            row.kind,
            String::from_utf8_lossy(&row.name),
            row.data.as_deref().map_or("NULL".to_owned(), hex),
        ),
    };
    for inode in &mismatches {
        eprintln!(
            "{context}: inode {inode}\n  store:    {}\n  expected: {}",
            show(actual.get(inode)),
            show(expected.get(inode))
        );
    }
    assert!(
        mismatches.is_empty(),
        "{context}: rows differ at inodes {mismatches:?}"
    );
}

// ---- replay -----------------------------------------------------------------

/// What applying one delivered message returned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Subtypes 1..6: the byte count, or the errno.
    Fuse(Result<u32, i32>),
    /// UNLOCK_REQUEST: the checksum of the lock dir now (None if it is not
    /// an existing lock dir) and whether this node considers it expired.
    UnlockRequest {
        current: Option<[u8; 32]>,
        expired: bool,
    },
    /// UNLOCK: whether the lock dir was deleted.
    Unlock(Result<bool, i32>),
}

struct Step<'v> {
    vector: &'v Vector,
    subtype: u16,
    /// The byte count a successful WRITE returns (the payload size).
    write_bytes: u32,
    /// The checksum an UNLOCK_REQUEST/UNLOCK carried.
    carried: Option<[u8; 32]>,
    path: Vec<u8>,
    outcome: Outcome,
    /// `Reader::index()` after the message.
    index_after: Vec<u8>,
}

struct Replayed<'v> {
    dir: tempfile::TempDir,
    steps: Vec<Step<'v>>,
    rows: Vec<Row>,
}

/// Imports `initial` into a fresh store and applies `messages` as the
/// DCDB deliver callback would (spec/dfsm.md §9.3): writer = sender node id,
/// mtime = header time (MTIME: the offset field). The lock clock follows the
/// header time. The session is dropped without a checkpoint at the end, so
/// the changes after the import live in the journal only.
fn replay<'v>(initial: &[Row], messages: &[&'v Vector]) -> Replayed<'v> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.import_rows(initial).expect("import");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let clock = Arc::new(AtomicU64::new(0));
    let session_clock = Arc::clone(&clock);
    session.set_clock(move || session_clock.load(Ordering::Relaxed));
    let mut steps = Vec::new();
    for &vector in messages {
        let Message::Normal { base, payload, .. } = vector.message() else {
            panic!("{}: not a NORMAL message", vector.file);
        };
        clock.store(u64::from(base.time), Ordering::Relaxed);
        let origin = Origin {
            writer: vector.sender_node_id,
            mtime: base.time,
        };
        let mut writer = session.writer(&mut permit);
        let (outcome, path, write_bytes, carried) = match base.subtype {
            wire::WRITE..=wire::MTIME => {
                let fuse = wire::decode_fuse(payload)
                    .unwrap_or_else(|| panic!("{}: fuse payload does not decode", vector.file));
                let path = fuse.path;
                let op = match base.subtype {
                    wire::WRITE => Op::Write {
                        path,
                        offset: u64::from(fuse.offset),
                        data: fuse.data,
                        truncate: fuse.flags != 0,
                    },
                    wire::MKDIR => Op::Mkdir { path },
                    wire::DELETE => Op::Delete { path },
                    wire::RENAME => Op::Rename {
                        from: path,
                        to: fuse.to.expect("RENAME carries a target"),
                    },
                    wire::CREATE => Op::Create { path },
                    _ => Op::Mtime {
                        path,
                        mtime: fuse.offset,
                    },
                };
                let result = writer.apply(&op, origin).map_err(|error| error.errno());
                (Outcome::Fuse(result), path, fuse.size, None)
            }
            wire::UNLOCK_REQUEST => {
                let unlock = wire::decode_unlock(payload)
                    .unwrap_or_else(|| panic!("{}: unlock payload does not decode", vector.file));
                let current = writer.lock_checksum(unlock.path).expect("lock_checksum");
                let expired = current == Some(unlock.checksum)
                    && writer.lock_expired(unlock.path, unlock.checksum);
                let outcome = Outcome::UnlockRequest { current, expired };
                (outcome, unlock.path, 0, Some(unlock.checksum))
            }
            wire::UNLOCK => {
                let unlock = wire::decode_unlock(payload)
                    .unwrap_or_else(|| panic!("{}: unlock payload does not decode", vector.file));
                let result = writer
                    .unlock(unlock.path, unlock.checksum, origin)
                    .map_err(|error| error.errno());
                (
                    Outcome::Unlock(result),
                    unlock.path,
                    0,
                    Some(unlock.checksum),
                )
            }
            other => panic!("{}: DCDB subtype {other}", vector.file),
        };
        session.commit().expect("commit");
        steps.push(Step {
            vector,
            subtype: base.subtype,
            write_bytes,
            carried,
            path: path.to_vec(),
            outcome,
            index_after: session.reader().index().expect("index"),
        });
    }
    let rows = rows_of(&session.reader());
    drop(session);
    drop(store);
    Replayed { dir, steps, rows }
}

/// Checks every fuse apply against the result the C client saw for the
/// operation it belongs to (manifest `fs_operation_result`):
/// * "OK <op>": every message of the op succeeded; a WRITE returned its size.
/// * "ERR <op> <errno> <text>": the last fuse message of the op failed with
///   that errno (CREATE then WRITE for EFBIG, UNLOCK_REQUEST then MTIME for
///   EACCES); the ones before it succeeded.
///
/// Only messages sent by the node that ran the client op count (node 1's
/// asynchronous UNLOCK is no client message). Apply is deterministic, so
/// the check holds on every member, not only on the originating one; with
/// `origin_only` it is restricted to the ops the replayed node originated.
fn check_client_results(steps: &[Step<'_>], node: u32, origin_only: bool) -> usize {
    let mut checked = 0;
    let mut runs: Vec<(&str, &str, Vec<&Step<'_>>)> = Vec::new();
    for step in steps {
        let vector = step.vector;
        if vector.sender_node_id != vector.fs_operation_node
            || origin_only && vector.sender_node_id != node
            || !matches!(step.outcome, Outcome::Fuse(_))
        {
            continue;
        }
        match runs.last_mut() {
            Some((operation, _, run)) if *operation == vector.fs_operation => run.push(step),
            _ => runs.push((
                &vector.fs_operation,
                &vector.fs_operation_result,
                vec![step],
            )),
        }
    }
    for (operation, client_result, run) in runs {
        let words: Vec<&str> = client_result.split_whitespace().collect();
        let failing_errno = match words.as_slice() {
            ["OK", op, ..] if op == &operation => None,
            ["ERR", op, errno, ..] if op == &operation => {
                Some(errno.parse::<i32>().expect("errno number"))
            }
            _ => panic!("{operation}: client result {client_result:?} not understood"),
        };
        for (position, step) in run.iter().enumerate() {
            let last = position + 1 == run.len();
            let expected = match failing_errno {
                Some(errno) if last => Err(errno),
                _ if step.subtype == wire::WRITE => Ok(step.write_bytes),
                _ => Ok(0),
            };
            assert_eq!(
                step.outcome,
                Outcome::Fuse(expected),
                "{} (op {operation}, client saw {client_result:?})",
                step.vector.file
            );
            checked += 1;
        }
    }
    checked
}

/// UNLOCK_REQUEST: the lock dir exists with exactly the carried checksum,
/// and this node's lock table calls it expired exactly when node 1 (the
/// lowest node id) answered with an UNLOCK. UNLOCK: the lock dir went away.
fn check_unlocks(steps: &[Step<'_>]) -> (usize, usize) {
    let mut requests = 0;
    let mut unlocks = 0;
    for (position, step) in steps.iter().enumerate() {
        let file = &step.vector.file;
        match &step.outcome {
            Outcome::UnlockRequest { current, expired } => {
                assert_eq!(
                    current.map(|checksum| hex(&checksum)),
                    step.carried.map(|checksum| hex(&checksum)),
                    "{file}: lock checksum of {}",
                    String::from_utf8_lossy(&step.path)
                );
                let answered = steps[position + 1..].iter().any(|later| {
                    later.subtype == wire::UNLOCK
                        && later.path == step.path
                        && later.carried == step.carried
                });
                assert_eq!(*expired, answered, "{file}: lock_expired");
                requests += 1;
            }
            Outcome::Unlock(result) => {
                assert_eq!(*result, Ok(true), "{file}: unlock");
                unlocks += 1;
            }
            Outcome::Fuse(_) => {}
        }
    }
    (requests, unlocks)
}

// ---- tests ------------------------------------------------------------------

#[test]
fn leader_updates_import_to_the_leader_state_index() {
    let vectors = dcdb_vectors();
    let state = state_sent_by(&vectors, LEADER_NODE_ID);
    let digests: BTreeMap<u64, [u8; 32]> = wire::decode_index(state)
        .expect("the leader's STATE is an index")
        .into_iter()
        .collect();
    let updates = leader_updates(&vectors);
    let rows = synced_rows(&vectors);
    assert_eq!(digests.len(), rows.len(), "one UPDATE per index entry");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let summary = store.import_rows(&rows).expect("import");
    assert_eq!(summary.entries, rows.len() as u64);
    let snapshot = store.snapshot().expect("snapshot");
    let reader = snapshot.reader();
    let index = reader.index().expect("index");
    assert_eq!(
        hex(&index),
        hex(state),
        "the imported UPDATEs must give the leader's index byte for byte"
    );

    for (vector, row) in updates.iter().zip(&rows) {
        let file = &vector.file;
        let payload = &vector.decoded["payload"];
        let entry = reader
            .entry(row.inode)
            .expect("entry")
            .unwrap_or_else(|| panic!("{file}: inode {} not imported", row.inode));
        let digest = hex(&entry.index_digest());
        assert_eq!(digest, hex(&digests[&row.inode]), "{file}: digest vs STATE");
        assert_eq!(
            digest, payload["computed_index_digest"],
            "{file}: manifest digest"
        );
        assert_eq!(
            hex(&entry.checksum()),
            payload["computed_entry_csum"],
            "{file}: entry checksum"
        );
        assert_eq!(&Reader::row_of(&entry), row, "{file}: row round trip");
    }
}

/// n2 joined with a fresh db into which it had imported corosync.conf
/// (local CREATE and WRITE, writer 0, at the time its index header shows).
/// The same two ops on a fresh store give n2's STATE byte for byte.
#[test]
fn a_fresh_store_with_corosync_conf_gives_the_joiners_state_and_resyncs_to_the_leader() {
    let vectors = dcdb_vectors();
    let state = state_sent_by(&vectors, 2);
    let mtime = u32::from_le_bytes(state[20..24].try_into().expect("4 bytes"));
    let corosync = synced_rows(&vectors)
        .into_iter()
        .find(|row| row.name == b"corosync.conf")
        .expect("corosync.conf in the UPDATEs");
    let data = corosync.data.as_deref().expect("corosync.conf has data");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let origin = Origin { writer: 0, mtime };
    let mut writer = session.writer(&mut permit);
    let path = &b"corosync.conf"[..];
    assert_eq!(
        writer.apply(&Op::Create { path }, origin).expect("create"),
        0
    );
    let write = Op::Write {
        path,
        offset: 0,
        data,
        truncate: false,
    };
    assert_eq!(
        writer.apply(&write, origin).expect("write") as usize,
        data.len()
    );
    session.commit().expect("commit");
    assert_eq!(hex(&session.reader().index().expect("index")), hex(state));

    // Then the join's resync: node 2 applies the 13 UPDATEs of the leader and
    // must end with exactly the leader's STATE index (memdb.md §7).
    let leader_index = state_sent_by(&vectors, 1);
    let updates = synced_rows(&vectors);
    session
        .writer(&mut permit)
        .apply_resync(leader_index, &updates)
        .expect("resync to the leader's tree");
    assert_eq!(
        hex(&session.reader().index().expect("index")),
        hex(leader_index)
    );
    let mut expected = updates.clone();
    expected.sort_by_key(|row| row.inode);
    assert_rows_equal(&rows_of(&session.reader()), &expected, "after the resync");
}

#[test]
fn unlock_messages_carry_the_checksums_of_the_replayed_lock_dirs() {
    let vectors = dcdb_vectors();
    let replayed = replay(&synced_rows(&vectors), &normal_deliveries(&vectors, 2));
    let (requests, unlocks) = check_unlocks(&replayed.steps);
    assert_eq!(
        (requests, unlocks),
        (2, 1),
        "UNLOCK_REQUEST a and b, UNLOCK b"
    );
}

#[test]
fn n2_replay_ends_in_the_final_tree_and_survives_a_reopen() {
    let vectors = dcdb_vectors();
    let replayed = replay(&synced_rows(&vectors), &normal_deliveries(&vectors, 2));
    let expected = final_tree("final-tree-n2.json");
    assert_rows_equal(&replayed.rows, &expected, "n2 replay");
    // n2's own CREATE and WRITE; with node 1's, every fuse message after the sync.
    assert_eq!(check_client_results(&replayed.steps, 2, true), 2);
    assert_eq!(check_client_results(&replayed.steps, 2, false), 27);

    // The session was dropped without a checkpoint: reopening replays the
    // journal of the whole stream onto the imported tree.
    let store = Store::open(replayed.dir.path()).expect("reopen");
    let (session, _permit) = store.session(Durability::Relaxed).expect("session");
    assert!(session.recovery().replayed_records > 0);
    assert_rows_equal(&rows_of(&session.reader()), &expected, "n2 after reopen");
}

#[test]
fn n1_replay_reproduces_its_state_the_client_results_and_the_final_tree() {
    let vectors = dcdb_vectors();
    let replayed = replay(&n1_initial_rows(&vectors), &normal_deliveries(&vectors, 1));

    // The setup ran before n2 joined; after it n1's index is the STATE it
    // sent in the sync.
    let setup = replayed
        .steps
        .iter()
        .rposition(|step| step.vector.fs_operation == "setup")
        .expect("setup messages");
    assert_eq!(
        hex(&replayed.steps[setup].index_after),
        hex(state_sent_by(&vectors, LEADER_NODE_ID)),
        "n1's index after the setup vs its STATE"
    );

    // 14 setup messages and 25 later ones from n1; plus n2's CREATE and WRITE.
    assert_eq!(check_client_results(&replayed.steps, 1, true), 39);
    assert_eq!(check_client_results(&replayed.steps, 1, false), 41);
    let (requests, unlocks) = check_unlocks(&replayed.steps);
    assert_eq!((requests, unlocks), (2, 1));
    assert_rows_equal(
        &replayed.rows,
        &final_tree("final-tree-n1.json"),
        "n1 replay",
    );
}

#[test]
fn both_nodes_compute_the_same_results_for_the_same_messages() {
    let vectors = dcdb_vectors();
    let n1 = replay(&n1_initial_rows(&vectors), &normal_deliveries(&vectors, 1));
    let n2 = replay(&synced_rows(&vectors), &normal_deliveries(&vectors, 2));
    let key = |step: &Step<'_>| match step.vector.message() {
        Message::Normal { count, .. } => (step.vector.sender_node_id, count),
        Message::State { .. } => unreachable!("replay takes NORMAL messages only"),
    };
    let n1_outcomes: BTreeMap<(u32, u64), (&Outcome, &[u8])> = n1
        .steps
        .iter()
        .map(|step| (key(step), (&step.outcome, step.index_after.as_slice())))
        .collect();
    let mut compared = 0;
    for step in &n2.steps {
        let (outcome, index) = n1_outcomes
            .get(&key(step))
            .unwrap_or_else(|| panic!("{}: not delivered on n1", step.vector.file));
        assert_eq!(&step.outcome, *outcome, "{}", step.vector.file);
        assert_eq!(hex(&step.index_after), hex(index), "{}", step.vector.file);
        compared += 1;
    }
    assert_eq!(compared, n2.steps.len());
}

/// The test-local parser agrees with the manifest's decoding of every DCDB
/// payload, and refuses every truncation instead of panicking.
#[test]
fn wire_decoders_match_the_manifest_and_refuse_truncations() {
    for vector in dcdb_vectors() {
        let file = &vector.file;
        let header = &vector.decoded["header"];
        let message = vector.message();
        let (base, payload) = match message {
            Message::Normal {
                base,
                count,
                payload,
            } => {
                assert_eq!(count, number(&header["count"], "count"), "{file}");
                (base, payload)
            }
            Message::State {
                base,
                epoch,
                payload,
            } => {
                let expected = &header["epoch"];
                assert_eq!(
                    [epoch.epoch, epoch.time, epoch.node_id, epoch.pid].map(u64::from),
                    ["epoch", "time", "nodeid", "pid"].map(|key| number(&expected[key], key)),
                    "{file}"
                );
                (base, payload)
            }
        };
        assert_eq!(
            [
                u64::from(base.message_type),
                u64::from(base.subtype),
                u64::from(base.protocol_version),
                u64::from(base.time),
                u64::from(base.reserved),
            ],
            ["type", "subtype", "protocol_version", "time", "reserved"]
                .map(|key| number(&header[key], key)),
            "{file}"
        );
        let header_bytes = match message {
            Message::Normal { .. } => wire::NORMAL_HEADER_BYTES,
            Message::State { .. } => wire::STATE_HEADER_BYTES,
        };
        for cut in 0..header_bytes {
            assert_eq!(
                wire::decode_message(&vector.bytes[..cut]),
                None,
                "{file} cut {cut}"
            );
        }

        let expected = &vector.decoded["payload"];
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let decoded_fields: Option<Vec<(&str, Value)>> = match (base.message_type, base.subtype) {
            (wire::TYPE_NORMAL, wire::WRITE..=wire::MTIME) => {
                let fuse = wire::decode_fuse(payload).expect("fuse payload");
                Some(vec![
                    ("size", fuse.size.into()),
                    ("offset", fuse.offset.into()),
                    ("pathlen", fuse.path_len.into()),
                    ("tolen", fuse.to_len.into()),
                    ("flags", fuse.flags.into()),
                    ("path", text(fuse.path).into()),
                    ("to", fuse.to.map(text).into()),
                    ("data_sha256", hex(&Sha256::digest(fuse.data)).into()),
                ])
            }
            (wire::TYPE_NORMAL, wire::UNLOCK_REQUEST | wire::UNLOCK) => {
                let unlock = wire::decode_unlock(payload).expect("unlock payload");
                Some(vec![
                    ("checksum", hex(&unlock.checksum).into()),
                    ("path", text(unlock.path).into()),
                ])
            }
            (wire::TYPE_UPDATE, _) => {
                let entry = wire::decode_update(payload).expect("update payload");
                Some(vec![
                    ("parent", entry.parent.into()),
                    ("inode", entry.inode.into()),
                    ("version", entry.version.into()),
                    ("writer", entry.writer.into()),
                    ("mtime", entry.mtime.into()),
                    ("size", entry.size.into()),
                    ("namelen", entry.name_len.into()),
                    ("type", entry.kind.into()),
                    ("name", text(entry.name).into()),
                    ("data_sha256", hex(&Sha256::digest(entry.data)).into()),
                ])
            }
            (wire::TYPE_STATE, _) => {
                let index = wire::decode_index(payload).expect("index");
                assert_eq!(index.len() as u64, number(&expected["size"], "size"));
                None
            }
            _ => {
                assert!(payload.is_empty(), "{file}: unexpected payload");
                None
            }
        };
        let Some(fields) = decoded_fields else {
            continue;
        };
        for (key, value) in fields {
            assert_eq!(value, expected[key], "{file}: {key}");
        }
        for cut in 0..payload.len() {
            let short = &payload[..cut];
            let refused = match (base.message_type, base.subtype) {
                (wire::TYPE_UPDATE, _) => wire::decode_update(short).is_none(),
                (_, wire::UNLOCK_REQUEST | wire::UNLOCK) => wire::decode_unlock(short).is_none(),
                _ => wire::decode_fuse(short).is_none(),
            };
            assert!(refused, "{file}: payload cut at {cut} decodes");
        }
    }
}
