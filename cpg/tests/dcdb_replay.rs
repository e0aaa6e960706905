//! Replays the captured C DCDB streams (tests/vectors/dcdb, copied from the
//! C daemon captures) through a `Dfsm<Dcdb>` on a real store: the
//! node's confchgs and every message it delivered in group pve_dcdb_v1, in
//! manifest order, with the node's own client writes proposed where it
//! multicast them. Every multicast the DFSM asks for must equal what the C
//! node multicast (UPDATEs as a set: C sends them in hash-table order), the
//! local writers' results must match the client results, and the store must
//! end with the node's final tree.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pmxcfs_cpg::dcdb::Dcdb;
use pmxcfs_cpg::dfsm::{self, Action, Dfsm, MemberId, MessageBody};
use pmxcfs_cpg::frame;
use pmxcfs_cpg::wire::{self, MessageType};
use pmxcfs_store::{Durability, Op, Origin, Reader, Row, Store, VERSION_ROW_NAME};
use serde_json::Value;
use sha2::{Digest, Sha256};

const GROUP: &str = "pve_dcdb_v1";

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

fn num(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

/// One manifest event of the replayed node's DCDB group.
enum Event {
    Confchg {
        members: Vec<MemberId>,
        joined: Vec<MemberId>,
        now: u32,
    },
    Deliver {
        file: String,
        sender: MemberId,
        bytes: Vec<u8>,
        now: u32,
    },
    Mcast {
        file: String,
        bytes: Vec<u8>,
        operation: String,
        result: String,
    },
}

/// `1/20104/0,2/20272/0` → member ids (the third field is the reason).
fn parse_members(list: &str) -> Vec<MemberId> {
    list.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let mut fields = item.split('/');
            let mut next = || fields.next().expect("field").parse::<u32>().expect("id");
            MemberId::new(next(), next())
        })
        .collect()
}

fn info_field<'i>(info: &'i str, key: &str) -> &'i str {
    info.split(';')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} in {info:?}"))
}

/// The manifest's events of `node` in group pve_dcdb_v1, plus the node's
/// member id.
fn events_of(node: u64) -> (MemberId, Vec<Event>) {
    let manifest = read_json("manifest.json");
    let info = manifest["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .find(|info| info["node"] == node)
        .expect("node in the manifest");
    let local = MemberId::new(
        num(&info["nodeid"], "nodeid") as u32,
        num(&info["pid"], "pid") as u32,
    );
    let mut events = Vec::new();
    for message in manifest["messages"].as_array().expect("messages") {
        if message["group"] != GROUP || message["capturing_node"] != node {
            continue;
        }
        let now = (num(&message["capture_time_ns"], "capture_time_ns") / 1_000_000_000) as u32;
        let read = |message: &Value| -> (String, Vec<u8>) {
            let file = message["file"].as_str().expect("file").to_owned();
            let bytes = std::fs::read(dcdb_dir().join(&file))
                .unwrap_or_else(|error| panic!("{file}: {error}"));
            assert_eq!(
                hex(&Sha256::digest(&bytes)),
                message["sha256"].as_str().expect("sha256"),
                "{file}"
            );
            (file, bytes)
        };
        match message["direction"].as_str().expect("direction") {
            "confchg" => {
                let info = message["info"].as_str().expect("info");
                events.push(Event::Confchg {
                    members: parse_members(info_field(info, "members")),
                    joined: parse_members(info_field(info, "joined")),
                    now,
                });
            }
            "deliver" => {
                let (file, bytes) = read(message);
                let sender = MemberId::new(
                    num(&message["sender_nodeid"], "sender_nodeid") as u32,
                    num(&message["sender_pid"], "sender_pid") as u32,
                );
                events.push(Event::Deliver {
                    file,
                    sender,
                    bytes,
                    now,
                });
            }
            "mcast" => {
                let (file, bytes) = read(message);
                events.push(Event::Mcast {
                    file,
                    bytes,
                    operation: message["fs_operation"].as_str().unwrap_or("").to_owned(),
                    result: message["fs_operation_result"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                });
            }
            _ => {}
        }
    }
    assert!(!events.is_empty(), "no events of node {node}");
    (local, events)
}

/// The library's byte adapter (`frame`), checked here against the C
/// bytes: every captured message decodes to a well-formed DFSM message.
fn to_dfsm(bytes: &[u8], file: &str) -> dfsm::Message {
    let msg = frame::decode_message(bytes);
    assert!(
        !matches!(msg.body, MessageBody::Malformed(_)),
        "{file}: malformed: {:?}",
        msg.body
    );
    msg
}

/// The bytes the daemon multicasts for a `Multicast` action.
fn encode(msg: &dfsm::Message) -> Vec<u8> {
    frame::encode_message(msg).unwrap_or_else(|| panic!("unexpected multicast {msg:?}"))
}

fn msg_type(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[0], bytes[1]])
}

/// `final-tree-n*.json` (sqlite3 -json: size null = NULL data) as rows.
fn final_tree(name: &str) -> Vec<Row> {
    read_json(name)
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| Row {
            inode: num(&row["inode"], "inode"),
            parent: num(&row["parent"], "parent"),
            version: num(&row["version"], "version"),
            writer: num(&row["writer"], "writer") as u32,
            mtime: num(&row["mtime"], "mtime") as u32,
            kind: num(&row["type"], "type") as u8,
            name: row["name"].as_str().expect("name").as_bytes().to_vec(),
            data: (!row["size"].is_null())
                .then(|| unhex(row["data_hex"].as_str().expect("data_hex"))),
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
    rows.sort_by_key(|row| row.inode);
    rows
}

/// The UPDATE entries node 1 multicast, as rows (memdb.md §7).
fn captured_update_rows() -> Vec<Row> {
    let (_, events) = events_of(1);
    events
        .iter()
        .filter_map(|event| match event {
            Event::Mcast { bytes, .. } if msg_type(bytes) == MessageType::Update as u16 => {
                let entry = wire::UpdateEntry::decode(&bytes[wire::STATE_HEADER_BYTES..])
                    .expect("update entry");
                Some(Row {
                    inode: entry.inode,
                    parent: entry.parent,
                    version: entry.version,
                    writer: entry.writer,
                    mtime: entry.mtime,
                    kind: entry.entry_type as u8,
                    name: if entry.inode == 0 {
                        VERSION_ROW_NAME.to_vec()
                    } else {
                        entry.name.to_vec()
                    },
                    data: (entry.inode != 0 && !entry.data.is_empty()).then(|| entry.data.to_vec()),
                })
            }
            _ => None,
        })
        .collect()
}

fn captured_state(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .find_map(|event| match event {
            Event::Mcast { bytes, .. } if msg_type(bytes) == MessageType::State as u16 => {
                Some(bytes[wire::STATE_HEADER_BYTES..].to_vec())
            }
            _ => None,
        })
        .expect("a captured STATE")
}

/// The store as the C node was before joining.
fn initial_store(node: u64, events: &[Event]) -> (tempfile::TempDir, Store) {
    let corosync = captured_update_rows()
        .into_iter()
        .find(|row| row.name == b"corosync.conf")
        .expect("corosync.conf in the UPDATEs");
    let data = corosync.data.clone().expect("corosync.conf data");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    if node == 1 {
        // n1 started alone on a fresh db and imported corosync.conf (CREATE
        // and WRITE, writer 0): the root holds the write's version and mtime
        // (see store/tests/c_vectors.rs `n1_initial_rows`).
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
        store.import_rows(&[root, corosync]).expect("import");
    } else {
        // n2: a fresh db, corosync.conf created and written (writer 0) at
        // the time its STATE header shows.
        let state = captured_state(events);
        let mtime = u32::from_le_bytes(state[20..24].try_into().expect("4 bytes"));
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let origin = Origin { writer: 0, mtime };
        let mut writer = session.writer(&mut permit);
        let path = &b"corosync.conf"[..];
        writer.apply(&Op::Create { path }, origin).expect("create");
        let write = Op::Write {
            path,
            offset: 0,
            data: &data,
            truncate: false,
        };
        writer.apply(&write, origin).expect("write");
        session.commit().expect("commit");
        session.close().expect("close");
    }
    (dir, store)
}

/// What a replay produced.
struct Outcome {
    /// (captured, produced) multicasts compared in order, UPDATEs apart.
    compared: usize,
    captured_updates: Vec<Vec<u8>>,
    produced_updates: Vec<Vec<u8>>,
    results_checked: usize,
    rows: Vec<Row>,
    /// Tree changes whose before-state (the caller's invalidations) was
    /// checked, and among them: (path existed, parent below the root,
    /// path new).
    changes_checked: usize,
    change_kinds: (usize, usize, usize),
    /// Resyncs committed (`take_resynced`).
    resyncs: usize,
}

/// The store inodes of `path`'s directory and of `path` before a change,
/// resolved here from the tree (what a `Change` must report).
fn before_state(reader: &Reader<'_>, path: &[u8]) -> (Option<u64>, Option<u64>) {
    let parent = path
        .iter()
        .rposition(|byte| *byte == b'/')
        .map_or(&b""[..], |slash| &path[..slash]);
    let inode = |p: &[u8]| reader.resolve(p).ok().flatten().map(|e| e.meta.inode);
    (inode(parent), inode(path))
}

fn replay(node: u64) -> Outcome {
    let (local, events) = events_of(node);
    let (_dir, store) = initial_store(node, &events);
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let clock = Arc::new(AtomicU64::new(0));
    let session_clock = Arc::clone(&clock);
    session.set_clock(move || session_clock.load(Ordering::Relaxed));
    let mut app = Dcdb::new(&mut session, &mut permit);
    app.set_quorate(true);
    let mut dfsm = Dfsm::new(local, wire::DCDB_PROTOCOL_VERSION, app);

    let mut produced: std::collections::VecDeque<Vec<u8>> = Default::default();
    let mut captured_updates = Vec::new();
    let mut produced_updates = Vec::new();
    let mut results: BTreeMap<u64, i32> = BTreeMap::new();
    // (count, subtype, data size, operation, client result) of our writes.
    let mut writes: Vec<(u64, u16, usize, String, String)> = Vec::new();
    let mut compared = 0;
    let mut changes_checked = 0;
    let mut change_kinds = (0, 0, 0);
    let mut resyncs = 0;
    let drain = |dfsm: &mut Dfsm<Dcdb<'_, '_>>,
                 produced: &mut std::collections::VecDeque<Vec<u8>>,
                 produced_updates: &mut Vec<Vec<u8>>,
                 results: &mut BTreeMap<u64, i32>| {
        for action in dfsm.drain_actions().collect::<Vec<_>>() {
            match action {
                Action::Multicast(msg) => {
                    let bytes = encode(&msg);
                    if msg_type(&bytes) == MessageType::Update as u16 {
                        produced_updates.push(bytes);
                    } else {
                        produced.push_back(bytes);
                    }
                }
                Action::Result { count, result } => {
                    assert!(results.insert(count, result).is_none(), "two results");
                }
                Action::Leave => panic!("node {node}: the DFSM left"),
                Action::ModeChanged(mode) => assert!(!mode.is_error(), "mode {mode:?}"),
            }
        }
    };
    for event in &events {
        match event {
            Event::Confchg {
                members,
                joined,
                now,
            } => {
                clock.store(u64::from(*now), Ordering::Relaxed);
                dfsm.on_confchg(members, joined, *now);
            }
            Event::Deliver {
                file,
                sender,
                bytes,
                now,
            } => {
                clock.store(u64::from(*now), Ordering::Relaxed);
                let msg = to_dfsm(bytes, file);
                // What the tree held for the path of a write, before it.
                let before = match &msg.body {
                    MessageBody::Normal {
                        subtype: 1..=6,
                        payload,
                        ..
                    } => wire::FusePayload::decode(payload).ok().map(|fuse| {
                        let reader = dfsm.app().session().reader();
                        (fuse.path.to_vec(), before_state(&reader, fuse.path))
                    }),
                    _ => None,
                };
                dfsm.on_deliver(*sender, msg, *now);
                if dfsm.app_mut().take_resynced() {
                    resyncs += 1;
                    assert!(!dfsm.app_mut().take_resynced(), "taken twice");
                }
                for change in dfsm.app_mut().drain_changed() {
                    if let Some((path, state)) = &before
                        && change.sender == *sender
                        && change.path == *path
                    {
                        assert_eq!(
                            (change.parent_before, change.inode_before),
                            *state,
                            "node {node}: change of {}",
                            String::from_utf8_lossy(path)
                        );
                        changes_checked += 1;
                        change_kinds.0 += usize::from(state.1.is_some());
                        change_kinds.1 +=
                            usize::from(state.0.is_some_and(|p| p != pmxcfs_store::ROOT_INODE));
                        change_kinds.2 += usize::from(state.1.is_none());
                    }
                }
            }
            Event::Mcast {
                file,
                bytes,
                operation,
                result,
            } => {
                if msg_type(bytes) == MessageType::Update as u16 {
                    captured_updates.push(bytes.clone());
                    continue;
                }
                let msg = to_dfsm(bytes, file);
                if let MessageBody::Normal {
                    subtype, payload, ..
                } = &msg.body
                {
                    // A client write of this node: propose it as C did
                    // (UNLOCK_REQUEST without a result slot; UNLOCK comes
                    // from the DFSM itself).
                    let size = wire::FusePayload::decode(payload).map_or(0, |f| f.data.len());
                    match subtype {
                        1..=6 => {
                            let count = dfsm
                                .send_normal(*subtype, payload.clone(), msg.time)
                                .expect("send");
                            writes.push((count, *subtype, size, operation.clone(), result.clone()));
                        }
                        7 => {
                            dfsm.send_normal_async(*subtype, payload.clone(), msg.time)
                                .expect("send");
                        }
                        _ => {}
                    }
                }
                drain(
                    &mut dfsm,
                    &mut produced,
                    &mut produced_updates,
                    &mut results,
                );
                let ours = produced
                    .pop_front()
                    .unwrap_or_else(|| panic!("node {node}: {file} was not produced"));
                assert_eq!(hex(&ours), hex(bytes), "node {node}: {file}");
                compared += 1;
                continue;
            }
        }
        drain(
            &mut dfsm,
            &mut produced,
            &mut produced_updates,
            &mut results,
        );
    }
    drain(
        &mut dfsm,
        &mut produced,
        &mut produced_updates,
        &mut results,
    );
    assert!(
        produced.is_empty(),
        "node {node}: multicasts C did not send: {:?}",
        produced.iter().map(|b| hex(b)).collect::<Vec<_>>()
    );

    // Client results: "OK op" → every write succeeded (WRITE: its size);
    // "ERR op errno …" → the op's last write failed with -errno.
    let mut results_checked = 0;
    for (i, (count, subtype, size, operation, result)) in writes.iter().enumerate() {
        let last = writes.get(i + 1).is_none_or(|next| next.3 != *operation);
        let words: Vec<&str> = result.split_whitespace().collect();
        let expected = match words.as_slice() {
            ["ERR", _, errno, ..] if last => -errno.parse::<i32>().expect("errno"),
            ["OK", ..] | ["ERR", ..] if *subtype == 1 => *size as i32,
            ["OK", ..] | ["ERR", ..] => 0,
            _ => panic!("client result {result:?}"),
        };
        assert_eq!(
            results.get(count),
            Some(&expected),
            "node {node}: result of write {count} ({operation}, client saw {result:?})"
        );
        results_checked += 1;
    }
    let rows = rows_of(&dfsm.app().session().reader());
    eprintln!(
        "node {node}: {compared} multicasts compared, {} UPDATEs, {results_checked} results, {} rows, {changes_checked} changes {change_kinds:?}, {resyncs} resyncs, mode {:?}",
        produced_updates.len(),
        rows.len(),
        dfsm.mode()
    );
    drop(dfsm);
    Outcome {
        compared,
        captured_updates,
        produced_updates,
        results_checked,
        rows,
        changes_checked,
        change_kinds,
        resyncs,
    }
}

fn assert_rows(actual: &[Row], expected: &[Row], node: u64) {
    let mut expected = expected.to_vec();
    expected.sort_by_key(|row| row.inode);
    let show = |rows: &[Row]| {
        rows.iter()
            .map(|r| {
                format!(
                    "{} parent {} v {} w {} mtime {} type {} {:?} data {:?}",
                    r.inode,
                    r.parent,
                    r.version,
                    r.writer,
                    r.mtime,
                    r.kind,
                    String::from_utf8_lossy(&r.name),
                    r.data.as_deref().map(hex)
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(show(actual), show(&expected), "node {node}: final tree");
}

/// The replays change existing files, files below directories and new
/// files: each kind's before-state was checked at least once.
fn assert_kinds(outcome: &Outcome) {
    let (existing, nested, new) = outcome.change_kinds;
    assert!(
        outcome.changes_checked > 0 && existing > 0 && nested > 0 && new > 0,
        "changes checked {} {:?}",
        outcome.changes_checked,
        outcome.change_kinds
    );
}

#[test]
fn node2_replay_matches_its_multicasts_results_and_final_tree() {
    let outcome = replay(2);
    // STATE, and the CREATE and WRITE of n2-create-write.
    assert!(outcome.compared >= 3, "compared {}", outcome.compared);
    assert!(outcome.produced_updates.is_empty() && outcome.captured_updates.is_empty());
    assert_eq!(outcome.results_checked, 2);
    assert_rows(&outcome.rows, &final_tree("final-tree-n2.json"), 2);
    // Node 2 joined late: the leader's resync once, then every write.
    assert_eq!(outcome.resyncs, 1);
    assert_kinds(&outcome);
}

#[test]
fn node1_replay_is_the_leader_and_sends_the_captured_updates() {
    let mut outcome = replay(1);
    assert!(!outcome.captured_updates.is_empty());
    outcome.captured_updates.sort();
    outcome.produced_updates.sort();
    let show = |updates: &[Vec<u8>]| updates.iter().map(|b| hex(b)).collect::<Vec<_>>();
    assert_eq!(
        show(&outcome.produced_updates),
        show(&outcome.captured_updates),
        "node 1: UPDATEs"
    );
    assert!(outcome.results_checked > 10, "{}", outcome.results_checked);
    assert_rows(&outcome.rows, &final_tree("final-tree-n1.json"), 1);
    // The leader commits no resync of its own.
    assert_eq!(outcome.resyncs, 0);
    assert_kinds(&outcome);
}
