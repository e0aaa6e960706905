//! Differential tests: `pmxcfs-store` against the independent reference
//! model in `model/mod.rs` (written from spec/memdb.md and
//! spec/filesystem.md, not from the store's implementation).
//!
//! * property tests over random op sequences on a small name alphabet
//!   (plain apply; with commits and simulated crashes; with frequent
//!   checkpoints), comparing every result and periodically the index blob,
//!   the VERIFY checksum, all rows and the guest list;
//! * deterministic tests for each errno rule of filesystem.md §6.3 / §10,
//!   the vmid rule (§6.4) and the lock rules (§8).
//!
//! `PROPTEST_CASES` overrides the default of 64 cases per property.

#[path = "model/mod.rs"]
mod model;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use model::{
    EACCES, EEXIST, EFBIG, ENOENT, ENOTDIR, ENOTEMPTY, MOp, Model, ModelRow, UNDEFINED,
    entry_checksum,
};
use pmxcfs_store::{
    ApplyPermit, CheckpointLimits, Durability, LOCK_TIMEOUT_SECS, Op, Origin, Reader, Session,
    Store,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const MIB: u64 = 1024 * 1024;
const T0: u32 = 1_700_000_000;

/// Open divergence D2 (`divergence_rename_to_forbidden_name_hides_parent_errors`):
/// the store refuses a rename to a new name "", "." or ".." before it
/// checks the target's parent, where the C daemon answers ENOENT / ENOTDIR.
/// While true the property tests run the model in the store's order so
/// they keep looking for other differences; set it to false once fixed.
const ACCEPT_KNOWN_RENAME_NAME_ORDER: bool = false;

fn new_model() -> Model {
    let mut model = Model::new();
    model.rename_name_first = ACCEPT_KNOWN_RENAME_NAME_ORDER;
    model
}

// ---------------------------------------------------------------------------
// Glue

fn as_op(op: &MOp) -> Op<'_> {
    match op {
        MOp::Create(path) => Op::Create { path },
        MOp::Mkdir(path) => Op::Mkdir { path },
        MOp::Write {
            path,
            offset,
            data,
            truncate,
        } => Op::Write {
            path,
            offset: *offset,
            data,
            truncate: *truncate,
        },
        MOp::Delete(path) => Op::Delete { path },
        MOp::Rename(from, to) => Op::Rename { from, to },
        MOp::Mtime(path, mtime) => Op::Mtime {
            path,
            mtime: *mtime,
        },
    }
}

fn store_apply(
    session: &mut Session<'_>,
    permit: &mut ApplyPermit,
    op: &MOp,
    writer: u32,
    mtime: u32,
) -> Result<u32, i32> {
    session
        .writer(permit)
        .apply(&as_op(op), Origin { writer, mtime })
        .map_err(|error| error.errno())
}

fn store_rows(session: &Session<'_>) -> Vec<ModelRow> {
    let reader = session.reader();
    let mut rows = Vec::new();
    reader
        .for_each_entry(|entry| {
            let row = Reader::row_of(&entry);
            rows.push(ModelRow {
                inode: row.inode,
                parent: row.parent,
                version: row.version,
                writer: row.writer,
                mtime: row.mtime,
                kind: row.kind,
                name: row.name,
                data: row.data,
            });
            Ok(())
        })
        .expect("for_each_entry");
    rows
}

fn store_vmlist(session: &Session<'_>) -> BTreeMap<u32, (Vec<u8>, u8)> {
    session
        .vmlist()
        .guests()
        .iter()
        .map(|(vmid, guest)| (*vmid, (guest.node.clone(), guest.guest_type as u8)))
        .collect()
}

fn show_row(row: &ModelRow) -> String {
    format!(
        "inode={} parent={} version={} writer={} mtime={} kind={} name={:?} data={}",
        row.inode,
        row.parent,
        row.version,
        row.writer,
        row.mtime,
        row.kind,
        String::from_utf8_lossy(&row.name),
        match &row.data {
            None => "NULL".to_string(),
            Some(d) => format!("{} bytes {:?}", d.len(), &d[..d.len().min(8)]),
        }
    )
}

/// Empty when equal, else a description of the first differences.
fn diff_rows(store: &[ModelRow], model: &[ModelRow]) -> String {
    let mut out = String::new();
    let all: std::collections::BTreeSet<u64> =
        store.iter().chain(model.iter()).map(|r| r.inode).collect();
    for inode in all {
        let s = store.iter().find(|r| r.inode == inode);
        let m = model.iter().find(|r| r.inode == inode);
        if s != m {
            out.push_str(&format!(
                "\n  inode {inode}:\n    store: {}\n    model: {}",
                s.map_or("-".into(), show_row),
                m.map_or("-".into(), show_row)
            ));
        }
    }
    out
}

/// Compares everything observable: rows, index blob, checksum, guest list.
fn check_state(model: &Model, session: &Session<'_>, context: &str) -> Result<(), String> {
    let rows = store_rows(session);
    let diff = diff_rows(&rows, &model.rows());
    if !diff.is_empty() {
        return Err(format!("{context}: rows differ:{diff}"));
    }
    let reader = session.reader();
    if reader.index().expect("index") != model.index() {
        return Err(format!("{context}: index blob differs (rows equal)"));
    }
    if reader.checksum().expect("checksum") != model.checksum() {
        return Err(format!("{context}: checksum differs (rows equal)"));
    }
    let vmlist = store_vmlist(session);
    if vmlist != model.vmlist {
        return Err(format!(
            "{context}: vmlist differs:\n  store: {}\n  model: {}",
            show_vmlist(&vmlist),
            show_vmlist(&model.vmlist)
        ));
    }
    Ok(())
}

fn show_vmlist(list: &BTreeMap<u32, (Vec<u8>, u8)>) -> String {
    list.iter()
        .map(|(vmid, (node, kind))| format!("{vmid}->{}/{kind}", String::from_utf8_lossy(node)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tree holds a guest config vmid more than once (reachable through the
/// delete quirk of §6.4); such a tree does not open.
fn has_duplicate_guests(model: &Model) -> bool {
    !model.scan_guests().1.is_empty()
}

/// After a reopen the guest list is rebuilt from the tree (§6.4).
fn rebuild_vmlist(model: &mut Model) -> Result<(), String> {
    let (unique, duplicates) = model.scan_guests();
    if !duplicates.is_empty() {
        return Err(format!(
            "the tree holds vmids more than once ({duplicates:?}) but the store opened \
             (spec §6.4: it must not)"
        ));
    }
    model.vmlist = unique;
    Ok(())
}

// ---------------------------------------------------------------------------
// Property tests

#[derive(Clone, Debug)]
enum Step {
    Op(MOp, u32, u32),
    Commit,
    Checkpoint,
    /// Drop session and store without checkpoint, reopen (journal replay).
    Crash,
}

const NAMES: &[&str] = &[
    "a",
    "b",
    "nodes",
    "pve1",
    "pve2",
    "qemu-server",
    "lxc",
    "100.conf",
    "101.conf",
    "priv",
    "lock",
    "",
    ".",
];

fn random_path() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(prop::sample::select(NAMES), 1..=3)
        .prop_map(|parts| {
            let path = parts.join("/");
            path.into_bytes()
        })
        .boxed()
}

fn template_path() -> BoxedStrategy<Vec<u8>> {
    let node = prop::sample::select(&["pve1", "pve2"][..]);
    let kind = prop::sample::select(&["qemu-server", "lxc"][..]);
    let conf = prop::sample::select(&["100.conf", "101.conf"][..]);
    prop_oneof![
        1 => Just("nodes".to_string()),
        2 => node.clone().prop_map(|n| format!("nodes/{n}")),
        3 => (node.clone(), kind.clone()).prop_map(|(n, k)| format!("nodes/{n}/{k}")),
        6 => (node, kind, conf).prop_map(|(n, k, c)| format!("nodes/{n}/{k}/{c}")),
        1 => Just("priv".to_string()),
        2 => Just("priv/lock".to_string()),
        3 => prop::sample::select(&["priv/lock/a", "priv/lock/b"][..]).prop_map(str::to_string),
        1 => Just("priv/lock/a/b".to_string()),
        5 => prop::sample::select(&["a", "b", "a/b", "b/a", "a/a", "a/b/a"][..])
            .prop_map(str::to_string),
    ]
    .prop_map(String::into_bytes)
    .boxed()
}

fn any_path() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![4 => template_path(), 1 => random_path()].boxed()
}

/// Paths that are mostly files: guest configs and a few plain names.
fn file_path() -> BoxedStrategy<Vec<u8>> {
    let node = prop::sample::select(&["pve1", "pve2"][..]);
    let kind = prop::sample::select(&["qemu-server", "lxc"][..]);
    let conf = prop::sample::select(&["100.conf", "101.conf"][..]);
    prop_oneof![
        4 => (node, kind, conf)
            .prop_map(|(n, k, c)| format!("nodes/{n}/{k}/{c}").into_bytes()),
        3 => prop::sample::select(&["f", "a/f", "b/f", "a/b/f", "priv/lock/f"][..])
            .prop_map(|p| p.as_bytes().to_vec()),
        2 => any_path(),
    ]
    .boxed()
}

fn offset() -> BoxedStrategy<u64> {
    prop_oneof![
        12 => 0u64..48,
        1 => (MIB - 40)..(MIB + 8),
        1 => Just(MIB),
        1 => (MIB + 1)..(4 * MIB),
    ]
    .boxed()
}

fn data() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..24),
        1 => prop::collection::vec(any::<u8>(), 0..1500),
    ]
    .boxed()
}

fn mtime_value() -> BoxedStrategy<u32> {
    prop_oneof![
        3 => prop::sample::select(&[0u32, 100, 200, 300, T0][..]),
        1 => any::<u32>(),
    ]
    .boxed()
}

fn tree_op() -> BoxedStrategy<MOp> {
    prop_oneof![
        4 => any_path().prop_map(MOp::Mkdir),
        3 => file_path().prop_map(MOp::Create),
        5 => (file_path(), offset(), data(), any::<bool>()).prop_map(
            |(path, offset, data, truncate)| MOp::Write {
                path,
                offset,
                data,
                truncate,
            }
        ),
        2 => any_path().prop_map(MOp::Delete),
        4 => prop_oneof![any_path(), file_path()]
            .prop_flat_map(|a| (Just(a), prop_oneof![any_path(), file_path()]))
            .prop_map(|(a, b)| MOp::Rename(a, b)),
        2 => (any_path(), mtime_value()).prop_map(|(p, m)| MOp::Mtime(p, m)),
    ]
    .boxed()
}

fn op_step() -> BoxedStrategy<Step> {
    (tree_op(), 0u32..4, mtime_value())
        .prop_map(|(op, writer, mtime)| Step::Op(op, writer, mtime))
        .boxed()
}

/// One op, or a create followed by a write of the same path (so writes
/// often find a file).
fn op_steps() -> BoxedStrategy<Vec<Step>> {
    let create_write = (file_path(), offset(), data(), any::<bool>(), 0u32..4).prop_map(
        |(path, offset, data, truncate, writer)| {
            vec![
                Step::Op(MOp::Create(path.clone()), writer, 200),
                Step::Op(
                    MOp::Write {
                        path,
                        offset,
                        data,
                        truncate,
                    },
                    writer,
                    300,
                ),
            ]
        },
    );
    prop_oneof![4 => op_step().prop_map(|s| vec![s]), 1 => create_write].boxed()
}

fn flat(steps: Vec<Vec<Step>>) -> Vec<Step> {
    steps.into_iter().flatten().collect()
}

/// Directories most sequences start with, so that later ops often hit
/// existing names (a random subset, in this order).
const SCAFFOLD: &[&str] = &[
    "nodes",
    "nodes/pve1",
    "nodes/pve2",
    "nodes/pve1/qemu-server",
    "nodes/pve1/lxc",
    "nodes/pve2/qemu-server",
    "nodes/pve2/lxc",
    "priv",
    "priv/lock",
    "a",
    "b",
];

fn scaffold() -> impl Strategy<Value = Vec<Step>> {
    prop::sample::subsequence(SCAFFOLD, SCAFFOLD.len() / 2..=SCAFFOLD.len()).prop_map(|dirs| {
        dirs.into_iter()
            .map(|dir| Step::Op(MOp::Mkdir(dir.as_bytes().to_vec()), 1, 100))
            .collect()
    })
}

fn with_scaffold(steps: impl Strategy<Value = Vec<Step>>) -> impl Strategy<Value = Vec<Step>> {
    (scaffold(), steps).prop_map(|(mut first, rest)| {
        first.extend(rest);
        first
    })
}

fn plain_steps() -> impl Strategy<Value = Vec<Step>> {
    with_scaffold(prop::collection::vec(op_steps(), 1..170).prop_map(flat))
}

fn crash_steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        30 => op_steps(),
        4 => Just(vec![Step::Commit]),
        1 => Just(vec![Step::Crash]),
    ];
    with_scaffold(prop::collection::vec(step, 1..170).prop_map(flat))
}

fn checkpoint_steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        30 => op_steps(),
        6 => Just(vec![Step::Commit]),
        2 => Just(vec![Step::Checkpoint]),
        1 => Just(vec![Step::Crash]),
    ];
    with_scaffold(prop::collection::vec(step, 1..170).prop_map(flat))
}

fn limits() -> impl Strategy<Value = CheckpointLimits> {
    (1u64..6, 64u64..4096).prop_map(|(records_max, journal_bytes_max)| CheckpointLimits {
        records_max,
        journal_bytes_max,
    })
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// Runs `steps` against a fresh store and the model. After every op the
/// results must agree; every 20 ops, after every reopen and at the end the
/// whole state must agree. A crash must leave the state of the last commit
/// (or, if the store persisted more, the current state).
fn run(steps: &[Step], limits: Option<CheckpointLimits>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = new_model();
    let mut committed = model.clone();
    let mut steps = steps.iter().enumerate();
    let mut ops = 0usize;
    let mut reopened = false;
    loop {
        let store = Store::open(dir.path()).map_err(|e| fail(format!("open: {e}")))?;
        let (mut session, mut permit) = match store.session(Durability::Relaxed) {
            Ok(pair) => pair,
            // Spec §6.4: a tree with a vmid twice cannot be opened.
            Err(_) if has_duplicate_guests(&model) || has_duplicate_guests(&committed) => {
                return Ok(());
            }
            Err(e) => return Err(fail(format!("session: {e}"))),
        };
        if let Some(limits) = limits {
            session.set_checkpoint_limits(limits);
        }
        if reopened {
            let index = session.reader().index().expect("index");
            if index == committed.index() {
                model = committed.clone();
            } else if index != model.index() {
                let diff = diff_rows(&store_rows(&session), &committed.rows());
                return Err(fail(format!(
                    "after crash: state is neither the last commit nor the current one; \
                     diff against the last commit:{diff}"
                )));
            }
            rebuild_vmlist(&mut model).map_err(fail)?;
            committed = model.clone();
        }
        check_state(&model, &session, "after open").map_err(fail)?;
        loop {
            let Some((index, step)) = steps.next() else {
                session.commit().map_err(|e| fail(format!("commit: {e}")))?;
                check_state(&model, &session, "at the end").map_err(fail)?;
                session.close().map_err(|e| fail(format!("close: {e}")))?;
                drop(store);
                let store = Store::open(dir.path()).map_err(|e| fail(format!("reopen: {e}")))?;
                let (session, _permit) = match store.session(Durability::Relaxed) {
                    Ok(pair) => pair,
                    Err(_) if has_duplicate_guests(&model) => return Ok(()),
                    Err(e) => return Err(fail(format!("session: {e}"))),
                };
                rebuild_vmlist(&mut model).map_err(fail)?;
                check_state(&model, &session, "after close and reopen").map_err(fail)?;
                return Ok(());
            };
            match step {
                Step::Op(op, writer, mtime) => {
                    let expected = model.apply(op, *writer, *mtime);
                    let got = store_apply(&mut session, &mut permit, op, *writer, *mtime);
                    if expected == Err(UNDEFINED) {
                        // Undefined in C: any refusal that changes nothing.
                        prop_assert!(got.is_err(), "step {} {:?}: {:?}", index, op, got);
                        check_state(&model, &session, &format!("after step {index}"))
                            .map_err(fail)?;
                        continue;
                    }
                    prop_assert_eq!(
                        got,
                        expected,
                        "step {} {:?} writer={} mtime={}",
                        index,
                        op,
                        writer,
                        mtime
                    );
                    ops += 1;
                    if ops.is_multiple_of(20) {
                        check_state(&model, &session, &format!("after step {index}"))
                            .map_err(fail)?;
                    }
                }
                Step::Commit => {
                    session.commit().map_err(|e| fail(format!("commit: {e}")))?;
                    committed = model.clone();
                }
                Step::Checkpoint => {
                    // A checkpoint requires committed changes.
                    session.commit().map_err(|e| fail(format!("commit: {e}")))?;
                    session
                        .checkpoint()
                        .map_err(|e| fail(format!("checkpoint: {e}")))?;
                    committed = model.clone();
                }
                Step::Crash => {
                    drop(session);
                    drop(store);
                    reopened = true;
                    break;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn model_matches_store(steps in plain_steps()) {
        run(&steps, None)?;
    }

    #[test]
    fn model_matches_store_across_crashes(steps in crash_steps()) {
        run(&steps, None)?;
    }

    #[test]
    fn model_matches_store_with_frequent_checkpoints(
        steps in checkpoint_steps(),
        limits in limits(),
    ) {
        run(&steps, Some(limits))?;
    }
}

// ---------------------------------------------------------------------------
// Deterministic tests: each op is applied to store and model, the results
// must agree with each other and with the value the spec prescribes.

fn mkdir(p: &str) -> MOp {
    MOp::Mkdir(p.as_bytes().to_vec())
}
fn create(p: &str) -> MOp {
    MOp::Create(p.as_bytes().to_vec())
}
fn write(p: &str, offset: u64, data: &[u8]) -> MOp {
    MOp::Write {
        path: p.as_bytes().to_vec(),
        offset,
        data: data.to_vec(),
        truncate: false,
    }
}
fn truncate(p: &str, len: u64) -> MOp {
    MOp::Write {
        path: p.as_bytes().to_vec(),
        offset: len,
        data: Vec::new(),
        truncate: true,
    }
}
fn delete(p: &str) -> MOp {
    MOp::Delete(p.as_bytes().to_vec())
}
fn rename(a: &str, b: &str) -> MOp {
    MOp::Rename(a.as_bytes().to_vec(), b.as_bytes().to_vec())
}
fn mtime(p: &str, m: u32) -> MOp {
    MOp::Mtime(p.as_bytes().to_vec(), m)
}

struct Pair<'a, 's> {
    session: &'a mut Session<'s>,
    permit: &'a mut ApplyPermit,
    model: Model,
}

impl Pair<'_, '_> {
    /// Applies `op` to both; they must agree; returns the result.
    fn apply_as(&mut self, op: MOp, writer: u32, mtime: u32) -> Result<u32, i32> {
        let expected = self.model.apply(&op, writer, mtime);
        assert_ne!(expected, Err(UNDEFINED), "{op:?} is undefined in C");
        let got = store_apply(self.session, self.permit, &op, writer, mtime);
        assert_eq!(got, expected, "store vs model for {op:?}");
        got
    }

    fn apply(&mut self, op: MOp) -> Result<u32, i32> {
        self.apply_as(op, 0, T0)
    }

    /// Applies `op`, asserts the spec's answer and the full state.
    fn expect(&mut self, op: MOp, spec: Result<u32, i32>) {
        let text = format!("{op:?}");
        let got = self.apply(op);
        assert_eq!(got, spec, "spec answer for {text}");
        self.check();
    }

    fn ok(&mut self, op: MOp) {
        let text = format!("{op:?}");
        let got = self.apply(op);
        assert!(got.is_ok(), "{text} failed: {got:?}");
    }

    fn check(&self) {
        if let Err(message) = check_state(&self.model, self.session, "check") {
            panic!("{message}");
        }
    }

    fn version(&self) -> u64 {
        self.session.reader().root().expect("root").meta.version
    }

    fn exists(&self, path: &str) -> bool {
        self.session
            .reader()
            .resolve(path.as_bytes())
            .expect("resolve")
            .is_some()
    }
}

fn with_pair(test: impl FnOnce(&mut Pair<'_, '_>)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let mut pair = Pair {
        session: &mut session,
        permit: &mut permit,
        model: Model::new(),
    };
    pair.check();
    test(&mut pair);
    pair.check();
}

#[test]
fn fresh_store_is_version_1_writer_0_mtime_0() {
    with_pair(|t| {
        let root = t.session.reader().root().expect("root");
        assert_eq!(
            (root.meta.version, root.meta.writer, root.meta.mtime),
            (1, 0, 0)
        );
        let index = t.session.reader().index().expect("index");
        assert_eq!(index.len(), 72);
        assert_eq!(index, t.model.index());
    });
}

#[test]
fn inode_and_versions_follow_the_global_counter() {
    with_pair(|t| {
        t.expect(mkdir("d"), Ok(0)); // version 2, inode 2
        t.expect(create("d/f"), Ok(0)); // 3
        t.expect(write("d/f", 0, b"xyz"), Ok(3)); // 4
        t.expect(delete("d/f"), Ok(0)); // 5, consumes a version
        t.expect(create("d/g"), Ok(0)); // inode 6
        assert_eq!(t.version(), 6);
        let g = t.session.reader().resolve(b"d/g").unwrap().unwrap();
        assert_eq!((g.meta.inode, g.meta.version, g.meta.parent), (6, 6, 2));
        // The parent directory is not touched by child changes.
        let d = t.session.reader().resolve(b"d").unwrap().unwrap();
        assert_eq!(d.meta.version, 2);
        // Rename keeps the inode, gets a new version, writer and mtime.
        assert_eq!(t.apply_as(rename("d/g", "h"), 2, T0 + 5), Ok(0));
        let h = t.session.reader().resolve(b"h").unwrap().unwrap();
        assert_eq!(
            (h.meta.inode, h.meta.version, h.meta.writer, h.meta.mtime),
            (6, 7, 2, T0 + 5)
        );
        let root = t.session.reader().root().unwrap();
        assert_eq!((root.meta.writer, root.meta.mtime), (2, T0 + 5));
    });
}

#[test]
fn missing_parent_is_enoent_and_file_parent_is_enotdir() {
    with_pair(|t| {
        t.ok(create("f"));
        for op in [
            create("x/a"),
            mkdir("x/a"),
            write("x/a", 0, b"1"),
            mtime("x/a", 5),
        ] {
            t.expect(op, Err(ENOENT));
        }
        for op in [
            create("f/a"),
            mkdir("f/a"),
            write("f/a", 0, b"1"),
            mtime("f/a", 5),
        ] {
            t.expect(op, Err(ENOTDIR));
        }
        // Deeper below a file: the lookup of the parent fails.
        t.expect(create("f/a/b"), Err(ENOENT));
        t.expect(delete("x"), Err(ENOENT));
        t.expect(delete("f/a"), Err(ENOENT));
        t.expect(rename("x", "y"), Err(ENOENT));
        t.ok(create("g"));
        t.expect(rename("g", "x/y"), Err(ENOENT));
        t.expect(rename("g", "f/y"), Err(ENOTDIR));
    });
}

#[test]
fn forbidden_names_are_eacces() {
    with_pair(|t| {
        t.ok(mkdir("d"));
        for path in ["", ".", "..", "/", "d/.", "d/..", "d/./", "//"] {
            t.expect(create(path), Err(EACCES));
            t.expect(mkdir(path), Err(EACCES));
            t.expect(write(path, 0, b"x"), Err(EACCES));
            t.expect(mtime(path, 5), Err(EACCES));
        }
        // The parent is checked before the name.
        t.expect(mkdir("nope/.."), Err(ENOENT));
        // Root cannot be removed or renamed.
        t.expect(delete(""), Err(EACCES));
        t.expect(delete("/"), Err(EACCES));
        t.expect(rename("", "x"), Err(EACCES));
        t.expect(rename("/", "x"), Err(EACCES));
        // Rename to a new name "", "." or ".." (deviation 3) and onto the root.
        t.ok(create("f"));
        t.expect(rename("f", "d/."), Err(EACCES));
        t.expect(rename("f", "d/.."), Err(EACCES));
        t.expect(rename("f", ".."), Err(EACCES));
        t.expect(rename("f", "."), Err(EACCES));
        t.expect(rename("f", ""), Err(EACCES));
        assert!(t.exists("f"));
    });
}

#[test]
fn create_and_mkdir_on_existing_names() {
    with_pair(|t| {
        t.ok(create("f"));
        t.ok(mkdir("d"));
        t.expect(create("f"), Err(EEXIST));
        t.expect(create("d"), Err(ENOTDIR));
        t.expect(mkdir("f"), Err(EEXIST));
        t.expect(mkdir("d"), Err(EEXIST));
        t.expect(mkdir("d/"), Err(EEXIST));
        t.expect(write("d", 0, b"x"), Err(ENOTDIR));
        t.expect(truncate("d", 0), Err(ENOTDIR));
        t.expect(write("missing", 0, b"x"), Err(ENOENT));
        t.expect(truncate("missing", 0), Err(ENOENT));
        t.expect(mtime("missing", 1), Err(ENOENT));
        // Name comparison is exact (case-sensitive); a//b/ equals a/b.
        t.expect(create("F"), Ok(0));
        t.expect(create("d//x/"), Ok(0));
        t.expect(create("d/x"), Err(EEXIST));
    });
}

#[test]
fn write_semantics_and_zero_fill() {
    with_pair(|t| {
        t.ok(create("f"));
        t.expect(write("f", 2, b"ab"), Ok(2)); // grows, gap zero-filled
        t.expect(write("f", 0, b"x"), Ok(1)); // keeps the size
        t.expect(truncate("f", 2), Ok(0)); // shrinks
        t.expect(write("f", 0, b""), Ok(0)); // empty write, still a change
        t.expect(truncate("f", 6), Ok(0)); // grows a non-empty file with zeros
        let f = t.session.reader().resolve(b"f").unwrap().unwrap();
        assert_eq!(f.data, b"x\0\0\0\0\0");
        t.expect(truncate("f", 0), Ok(0));
        // Deviation 1: growing an empty file without data zero-fills.
        t.expect(truncate("f", 5), Ok(0));
        let f = t.session.reader().resolve(b"f").unwrap().unwrap();
        assert_eq!(f.data, [0u8; 5]);
        t.ok(create("g"));
        t.expect(write("g", 3, b""), Ok(0));
        let g = t.session.reader().resolve(b"g").unwrap().unwrap();
        assert_eq!(g.data, [0u8; 3]);
        // Writing with truncate in the middle of a file cuts after the data.
        t.expect(
            MOp::Write {
                path: b"g".to_vec(),
                offset: 1,
                data: b"Q".to_vec(),
                truncate: true,
            },
            Ok(1),
        );
        let g = t.session.reader().resolve(b"g").unwrap().unwrap();
        assert_eq!(g.data, b"\0Q");
    });
}

#[test]
fn efbig_at_offset_plus_len_beyond_one_mib() {
    with_pair(|t| {
        t.ok(create("f"));
        t.expect(write("f", MIB - 4, b"abcd"), Ok(4));
        assert_eq!(
            t.session
                .reader()
                .resolve(b"f")
                .unwrap()
                .unwrap()
                .data
                .len(),
            MIB as usize
        );
        t.expect(write("f", MIB - 4, b"abcde"), Err(EFBIG));
        t.expect(write("f", MIB, b""), Ok(0));
        t.expect(write("f", MIB, b"x"), Err(EFBIG));
        t.expect(truncate("f", MIB), Ok(0));
        t.expect(truncate("f", MIB + 1), Err(EFBIG));
        // EFBIG comes before every other check.
        t.expect(write("missing/f", MIB, b"x"), Err(EFBIG));
        t.expect(write("..", MIB + 1, b""), Err(EFBIG));
        t.expect(truncate("f", 10), Ok(0));
        let version = t.version();
        t.expect(write("f", u64::MAX, b"x"), Err(EFBIG));
        t.expect(write("f", u64::MAX - 3, b""), Err(EFBIG));
        assert_eq!(t.version(), version);
    });
}

#[test]
fn delete_rules() {
    with_pair(|t| {
        t.ok(mkdir("d"));
        t.ok(create("d/f"));
        t.expect(delete("d"), Err(ENOTEMPTY));
        t.expect(delete("d/f/"), Ok(0));
        t.expect(delete("d"), Ok(0)); // rmdir and unlink are the same op
        t.expect(delete("d"), Err(ENOENT));
    });
}

#[test]
fn rename_rules() {
    with_pair(|t| {
        t.ok(mkdir("d"));
        t.ok(create("d/f"));
        t.ok(mkdir("e"));
        t.ok(create("g"));
        // Non-empty source directory.
        t.expect(rename("d", "x"), Err(ENOTEMPTY));
        // Non-empty target directory.
        t.expect(rename("g", "d"), Err(ENOTEMPTY));
        assert!(t.exists("g") && t.exists("d/f"));
        // A file replaces an existing file or empty directory.
        t.ok(create("h"));
        t.expect(rename("g", "h"), Ok(0));
        t.expect(rename("h", "e"), Ok(0));
        assert!(!t.exists("h") && t.exists("e"));
        // An empty directory can be renamed, also onto a file.
        t.ok(mkdir("m"));
        t.ok(create("n"));
        t.expect(rename("m", "n"), Ok(0));
        // Rename onto itself is a no-op without version bump (deviation 2).
        let version = t.version();
        t.expect(rename("n", "n/"), Ok(0));
        t.expect(rename("d/f", "d//f"), Ok(0));
        assert_eq!(t.version(), version);
    });
}

#[test]
fn rename_non_empty_dir_onto_empty_dir_removes_target_without_bump() {
    with_pair(|t| {
        t.ok(mkdir("src"));
        t.ok(create("src/f"));
        t.ok(mkdir("dst"));
        let version = t.version();
        t.expect(rename("src", "dst"), Err(ENOTEMPTY));
        assert!(!t.exists("dst"), "C quirk: the target is removed first");
        assert!(t.exists("src/f"));
        assert_eq!(t.version(), version);
        // Same with a file target.
        t.ok(create("file"));
        t.expect(rename("src", "file"), Err(ENOTEMPTY));
        assert!(!t.exists("file"));
    });
}

#[test]
fn lock_directories_cannot_be_renamed() {
    with_pair(|t| {
        t.ok(mkdir("priv"));
        t.ok(mkdir("priv/lock"));
        t.ok(mkdir("priv/lock/l"));
        t.ok(mkdir("priv/lock/l/sub"));
        t.expect(rename("priv/lock/l/sub", "x"), Err(EACCES));
        t.expect(rename("priv/lock/l", "priv/lock/m"), Err(EACCES));
        t.expect(rename("priv/lock/l", "priv/lock/l"), Err(EACCES));
        t.expect(rename("/priv/lock/l", "x"), Err(EACCES));
        // Files in priv/lock are not lock directories.
        t.ok(create("priv/lock/file"));
        t.expect(rename("priv/lock/file", "priv/lock/file2"), Ok(0));
        // The missing-source check comes first.
        t.expect(rename("priv/lock/none", "x"), Err(ENOENT));
    });
}

#[test]
fn lock_mtime_rules() {
    with_pair(|t| {
        t.ok(mkdir("priv"));
        t.ok(mkdir("priv/lock"));
        assert_eq!(t.apply_as(mkdir("priv/lock/l"), 1, 1000), Ok(0));
        let version = t.version();
        // Older mtime: refused, whoever asks.
        assert_eq!(t.apply_as(mtime("priv/lock/l", 999), 1, 5), Err(EACCES));
        assert_eq!(t.apply_as(mtime("priv/lock/l", 0), 1, 5), Err(EACCES));
        // Other writer: refused even with a newer mtime.
        assert_eq!(t.apply_as(mtime("priv/lock/l", 2000), 2, 5), Err(EACCES));
        assert_eq!(t.version(), version);
        // Same writer, same or newer mtime: accepted.
        assert_eq!(t.apply_as(mtime("priv/lock/l", 1000), 1, 5), Ok(0));
        assert_eq!(t.apply_as(mtime("priv/lock/l", 1500), 1, 5), Ok(0));
        let l = t.session.reader().resolve(b"priv/lock/l").unwrap().unwrap();
        assert_eq!((l.meta.mtime, l.meta.writer), (1500, 1));
        // The mtime of the op, not the origin, becomes the root mtime.
        assert_eq!(t.session.reader().root().unwrap().meta.mtime, 1500);
        t.check();
        // Only directories directly in priv/lock are locks.
        assert_eq!(t.apply_as(mkdir("priv/lock/l/deep"), 1, 1000), Ok(0));
        assert_eq!(t.apply_as(mtime("priv/lock/l/deep", 5), 2, 5), Ok(0));
        assert_eq!(t.apply_as(create("priv/lock/f"), 1, 1000), Ok(0));
        assert_eq!(t.apply_as(mtime("priv/lock/f", 5), 2, 5), Ok(0));
        assert_eq!(t.apply_as(mkdir("priv/other"), 1, 1000), Ok(0));
        assert_eq!(t.apply_as(mtime("priv/other", 5), 2, 5), Ok(0));
        t.check();
    });
}

#[test]
fn lock_expiry_uses_the_injected_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let clock = Arc::new(AtomicU64::new(10_000));
    session.set_clock({
        let clock = clock.clone();
        move || clock.load(Ordering::SeqCst)
    });
    let mut t = Pair {
        session: &mut session,
        permit: &mut permit,
        model: Model::new(),
    };
    assert_eq!(LOCK_TIMEOUT_SECS, 120);
    t.ok(mkdir("priv"));
    t.ok(mkdir("priv/lock"));
    let path = b"priv/lock/l";
    assert_eq!(t.apply_as(mkdir("priv/lock/l"), 1, 1000), Ok(0));
    let csum = t
        .session
        .writer(t.permit)
        .lock_checksum(path)
        .unwrap()
        .expect("is a lock dir");
    assert_eq!(csum, entry_checksum(t.model.resolve(path).unwrap()));
    let expired = |t: &mut Pair<'_, '_>, now: u64, csum: [u8; 32]| {
        clock.store(now, Ordering::SeqCst);
        t.session.writer(t.permit).lock_expired(path, csum)
    };
    // The timer starts at mkdir (10_000), not at the first question.
    assert!(!expired(&mut t, 10_000, csum));
    assert!(!expired(&mut t, 10_120, csum));
    assert!(expired(&mut t, 10_121, csum));
    // An extension by the owner changes the checksum and restarts the timer.
    clock.store(10_200, Ordering::SeqCst);
    assert_eq!(t.apply_as(mtime("priv/lock/l", 1100), 1, 7), Ok(0));
    let csum2 = t
        .session
        .writer(t.permit)
        .lock_checksum(path)
        .unwrap()
        .unwrap();
    assert_ne!(csum, csum2);
    assert_eq!(csum2, entry_checksum(t.model.resolve(path).unwrap()));
    assert!(!expired(&mut t, 10_320, csum2));
    assert!(expired(&mut t, 10_321, csum2));
    // Asking with a different checksum resets the entry to (now, that csum).
    assert!(!expired(&mut t, 20_000, csum));
    assert!(!expired(&mut t, 20_120, csum));
    assert!(expired(&mut t, 20_121, csum));
    assert!(!expired(&mut t, 20_121, csum2));
    assert!(expired(&mut t, 20_242, csum2));
    // Unknown path: inserted, not expired.
    assert!(!expired(&mut t, 30_000, csum));
    // Not a lock dir: no checksum.
    assert_eq!(
        t.session
            .writer(t.permit)
            .lock_checksum(b"priv/lock")
            .unwrap(),
        None
    );
    // UNLOCK needs the current checksum; it is a delete by the sender.
    let version = t.version();
    let origin = Origin {
        writer: 3,
        mtime: T0 + 9,
    };
    assert!(
        !t.session
            .writer(t.permit)
            .unlock(path, csum, origin)
            .unwrap()
    );
    assert_eq!(t.version(), version);
    assert!(
        t.session
            .writer(t.permit)
            .unlock(path, csum2, origin)
            .unwrap()
    );
    assert_eq!(t.model.apply(&delete("priv/lock/l"), 3, T0 + 9), Ok(0));
    t.check();
    // Re-created: a fresh timer.
    clock.store(40_000, Ordering::SeqCst);
    assert_eq!(t.apply_as(mkdir("priv/lock/l"), 1, 1000), Ok(0));
    let csum3 = t
        .session
        .writer(t.permit)
        .lock_checksum(path)
        .unwrap()
        .unwrap();
    assert!(!expired(&mut t, 40_120, csum3));
    assert!(expired(&mut t, 40_121, csum3));
}

fn guests(t: &Pair<'_, '_>) -> Vec<(u32, String, u8)> {
    store_vmlist(t.session)
        .into_iter()
        .map(|(vmid, (node, kind))| (vmid, String::from_utf8(node).unwrap(), kind))
        .collect()
}

fn guest_tree(t: &mut Pair<'_, '_>) {
    t.ok(mkdir("nodes"));
    for node in ["pve1", "pve2"] {
        t.ok(mkdir(&format!("nodes/{node}")));
        for kind in ["qemu-server", "lxc", "openvz"] {
            t.ok(mkdir(&format!("nodes/{node}/{kind}")));
        }
    }
}

#[test]
fn vmid_uniqueness() {
    with_pair(|t| {
        guest_tree(t);
        t.expect(create("nodes/pve1/qemu-server/100.conf"), Ok(0));
        assert_eq!(guests(t), [(100, "pve1".into(), 1)]);
        // Another node or another type: EEXIST, before the existence check.
        t.expect(create("nodes/pve2/qemu-server/100.conf"), Err(EEXIST));
        t.expect(create("nodes/pve1/lxc/100.conf"), Err(EEXIST));
        t.expect(
            write("nodes/pve2/qemu-server/100.conf", 0, b"x"),
            Err(EEXIST),
        );
        // Same node and type: the usual answers.
        t.expect(create("nodes/pve1/qemu-server/100.conf"), Err(EEXIST));
        t.expect(write("nodes/pve1/qemu-server/100.conf", 0, b"x"), Ok(1));
        // Not guest paths: vmid with leading zero, deeper, other dir.
        t.ok(create("nodes/pve2/qemu-server/0100.conf"));
        t.ok(mkdir("nodes/pve2/qemu-server/sub"));
        t.ok(create("nodes/pve2/qemu-server/sub/100.conf"));
        t.ok(mkdir("nodes/pve2/other"));
        t.ok(create("nodes/pve2/other/100.conf"));
        // mkdir of a guest-config name does not register.
        t.expect(mkdir("nodes/pve2/lxc/101.conf"), Ok(0));
        assert_eq!(guests(t), [(100, "pve1".into(), 1)]);
        // Moving a guest between nodes / types is allowed.
        t.expect(
            rename("nodes/pve1/qemu-server/100.conf", "nodes/pve2/lxc/100.conf"),
            Ok(0),
        );
        assert_eq!(guests(t), [(100, "pve2".into(), 3)]);
        t.expect(
            rename("nodes/pve2/lxc/100.conf", "nodes/pve1/openvz/100.conf"),
            Ok(0),
        );
        assert_eq!(guests(t), [(100, "pve1".into(), 2)]);
        // Another file onto a vmid registered elsewhere: EEXIST.
        t.ok(create("nodes/pve2/qemu-server/102.conf"));
        t.ok(create("plain"));
        t.expect(
            rename("plain", "nodes/pve2/qemu-server/100.conf"),
            Err(EEXIST),
        );
        t.expect(
            rename(
                "nodes/pve2/qemu-server/102.conf",
                "nodes/pve2/qemu-server/100.conf",
            ),
            Err(EEXIST),
        );
        // A directory is not checked.
        t.ok(mkdir("dir"));
        t.expect(rename("dir", "nodes/pve2/qemu-server/100.conf"), Ok(0));
        assert_eq!(
            guests(t),
            [(100, "pve1".into(), 2), (102, "pve2".into(), 1)]
        );
        // A plain file renamed to a free guest path registers it.
        t.expect(rename("plain", "nodes/pve2/lxc/103.conf"), Ok(0));
        // Renaming a guest config to a plain name unregisters it.
        t.expect(
            rename("nodes/pve2/qemu-server/102.conf", "nodes/pve2/x"),
            Ok(0),
        );
        assert_eq!(
            guests(t),
            [(100, "pve1".into(), 2), (103, "pve2".into(), 3)]
        );
        // Delete removes the vmid without checking the node, also for a
        // directory of that name.
        t.expect(delete("nodes/pve2/lxc/101.conf"), Ok(0));
        t.ok(create("nodes/pve2/lxc/101.conf"));
        t.ok(mkdir("nodes/pve2/qemu-server/103.conf"));
        t.expect(delete("nodes/pve2/qemu-server/103.conf"), Ok(0));
        assert_eq!(
            guests(t),
            [(100, "pve1".into(), 2), (101, "pve2".into(), 3)]
        );
        // ...so the file nodes/pve2/lxc/103.conf is now unregistered and a
        // second config with vmid 103 can be created.
        t.expect(create("nodes/pve1/qemu-server/103.conf"), Ok(0));
        assert_eq!(
            guests(t),
            [
                (100, "pve1".into(), 2),
                (101, "pve2".into(), 3),
                (103, "pve1".into(), 1)
            ]
        );
    });
}

#[test]
fn committed_changes_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut committed, mut current) = {
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let mut t = Pair {
            session: &mut session,
            permit: &mut permit,
            model: Model::new(),
        };
        guest_tree(&mut t);
        t.ok(create("nodes/pve1/qemu-server/100.conf"));
        t.ok(write(
            "nodes/pve1/qemu-server/100.conf",
            0,
            b"memory: 512\n",
        ));
        t.ok(mkdir("m"));
        t.ok(rename("m", "n"));
        t.ok(mtime("n", 42));
        let committed = t.model.clone();
        t.session.commit().expect("commit");
        t.ok(create("uncommitted"));
        (committed, t.model.clone())
        // dropped without checkpoint or commit
    };
    let store = Store::open(dir.path()).expect("reopen");
    let (session, _permit) = store.session(Durability::Relaxed).expect("session");
    rebuild_vmlist(&mut committed).unwrap();
    rebuild_vmlist(&mut current).unwrap();
    // The uncommitted change may or may not be there; the committed ones must.
    if check_state(&current, &session, "after crash").is_err()
        && let Err(message) = check_state(&committed, &session, "after crash")
    {
        panic!("{message}");
    }
}

// ---------------------------------------------------------------------------
// C-compatibility corners of the path syntax (spec/memdb.md §10: split_path
// is GLib-style, "the dirname of x is `.`, which resolves to the root").

#[test]
fn c_compat_dirname_dot_is_the_root() {
    with_pair(|t| {
        // GLib: dirname("./a") == "." -> the root; basename "a".
        t.expect(create("./a"), Ok(0));
        assert!(t.exists("a"));
        t.expect(mkdir("./d"), Ok(0));
        t.expect(write("./a", 0, b"x"), Ok(1));
        t.expect(mtime("./a", 7), Ok(0));
        // The whole path "." is the root.
        t.expect(delete("."), Err(EACCES));
        t.expect(rename(".", "x"), Err(EACCES));
        // Lookup of a longer path takes "." literally (no such entry) ...
        t.expect(delete("./a"), Err(ENOENT));
        t.expect(rename("./a", "x"), Err(ENOENT));
        // ... but "a/./b" has the dirname "a/." which does not exist.
        t.expect(create("d/./b"), Err(ENOENT));
    });
}

// ---------------------------------------------------------------------------
// Minimal reproductions of divergences the property tests found. Those
// named `regression_*` were failing when found and have been fixed in the
// store since; `divergence_*` ones are still open.

/// Two crashes in a row: the changes committed after the first journal
/// replay used to be dropped by the second replay (the journal record was
/// counted as garbage, `dropped_journal_bytes`).
#[test]
fn regression_commit_after_a_replay_survives_the_next_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origin = Origin {
        writer: 0,
        mtime: 0,
    };
    for (round, path) in [&b"one"[..], b"two"].into_iter().enumerate() {
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        eprintln!("round {round}: recovery {:?}", session.recovery());
        session
            .writer(&mut permit)
            .apply(&Op::Mkdir { path }, origin)
            .expect("mkdir");
        session.commit().expect("commit");
        // dropped without checkpoint: a crash
    }
    let store = Store::open(dir.path()).expect("open");
    let (session, _permit) = store.session(Durability::Relaxed).expect("session");
    eprintln!("final: recovery {:?}", session.recovery());
    let reader = session.reader();
    assert!(
        reader.resolve(b"one").unwrap().is_some(),
        "first commit lost"
    );
    assert!(
        reader.resolve(b"two").unwrap().is_some(),
        "second commit (made after a journal replay) lost"
    );
    assert_eq!(reader.root().unwrap().meta.version, 3);
}

/// Moving an empty directory into itself is a use-after-free in C
/// (memdb_rename). When the target exists (`d -> d/x` with `d/x` its only
/// child) the store removes the target and answers ENOTEMPTY (adopted by
/// the model). For a new name it used to answer Ok, leaving an entry whose
/// parent is itself (unreachable from the root, a cycle for path_of).
#[test]
fn regression_rename_dir_into_itself_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let origin = Origin {
        writer: 0,
        mtime: 0,
    };
    let mut writer = session.writer(&mut permit);
    writer.apply(&Op::Mkdir { path: b"d" }, origin).unwrap();
    let result = writer.apply(
        &Op::Rename {
            from: b"d",
            to: b"d/x",
        },
        origin,
    );
    let mut rows = Vec::new();
    session
        .reader()
        .for_each_entry(|e| {
            rows.push(Reader::row_of(&e));
            Ok(())
        })
        .unwrap();
    eprintln!(
        "result {:?}; rows {rows:?}",
        result.as_ref().map_err(|e| e.errno())
    );
    assert!(result.is_err(), "rename d -> d/x must be refused");
}

/// The C daemon checks the target's parent (ENOENT / ENOTDIR) before
/// anything about the new name; deviation 3 only replaces the cases where
/// C would have created "", "." or "..". The store answers EACCES first.
#[test]
fn divergence_rename_to_forbidden_name_hides_parent_errors() {
    with_pair(|t| {
        t.ok(create("f"));
        t.ok(create("g"));
        let c_order = |t: &mut Pair<'_, '_>, op: MOp, spec: i32| {
            let text = format!("{op:?}");
            assert_eq!(t.model.apply(&op, 0, T0), Err(spec));
            let got = store_apply(t.session, t.permit, &op, 0, T0);
            assert_eq!(got, Err(spec), "{text}: spec/C answer");
        };
        c_order(t, rename("f", "missing/."), ENOENT);
        c_order(t, rename("f", "missing/.."), ENOENT);
        c_order(t, rename("f", "g/.."), ENOTDIR);
    });
}

/// filesystem.md §6.4: "The whole vmlist is rebuilt from the tree at
/// startup". After a crash the store used to keep the list the replayed
/// ops left.
#[test]
fn regression_vmlist_is_rebuilt_after_a_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origin = Origin {
        writer: 0,
        mtime: 0,
    };
    {
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let mut writer = session.writer(&mut permit);
        for path in [
            &b"nodes"[..],
            b"nodes/pve1",
            b"nodes/pve1/qemu-server",
            b"nodes/pve2",
            b"nodes/pve2/lxc",
        ] {
            writer.apply(&Op::Mkdir { path }, origin).unwrap();
        }
        let config = b"nodes/pve2/lxc/100.conf";
        writer.apply(&Op::Create { path: config }, origin).unwrap();
        // A directory with a guest-config name: deleting it unregisters
        // vmid 100 although nodes/pve2/lxc/100.conf still exists (C quirk).
        let decoy = b"nodes/pve1/qemu-server/100.conf";
        writer.apply(&Op::Mkdir { path: decoy }, origin).unwrap();
        writer.apply(&Op::Delete { path: decoy }, origin).unwrap();
        assert!(session.vmlist().get(100).is_none());
        session.commit().expect("commit");
        // crash
    }
    let store = Store::open(dir.path()).expect("reopen");
    let (session, _permit) = store.session(Durability::Relaxed).expect("session");
    let guest = session
        .vmlist()
        .get(100)
        .expect("vmid 100 rebuilt from the tree");
    assert_eq!(guest.node, b"pve2");
}

/// The refused rename of the C quirk (non-empty directory onto an existing
/// target: ENOTEMPTY, target removed) is journaled; the replay after a
/// crash used to fail on it, so the store could not be opened any more.
#[test]
fn regression_refused_rename_with_side_effect_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origin = Origin {
        writer: 0,
        mtime: 0,
    };
    {
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let mut writer = session.writer(&mut permit);
        writer.apply(&Op::Mkdir { path: b"src" }, origin).unwrap();
        writer
            .apply(&Op::Create { path: b"src/f" }, origin)
            .unwrap();
        writer.apply(&Op::Create { path: b"dst" }, origin).unwrap();
        let refused = writer.apply(
            &Op::Rename {
                from: b"src",
                to: b"dst",
            },
            origin,
        );
        assert_eq!(refused.map_err(|e| e.errno()), Err(ENOTEMPTY));
        session.commit().expect("commit");
        // crash
    }
    let store = Store::open(dir.path()).expect("reopen");
    let (session, _permit) = store
        .session(Durability::Relaxed)
        .expect("session after crash (journal replay)");
    let reader = session.reader();
    assert!(reader.resolve(b"src/f").unwrap().is_some());
    assert!(reader.resolve(b"dst").unwrap().is_none());
    assert_eq!(reader.root().unwrap().meta.version, 4);
}

/// The generator reaches what the property tests are meant to compare: every
/// op kind both succeeds and is refused, guest configs and lock dirs occur.
/// (`--nocapture` prints the table.)
#[test]
fn coverage_of_the_generator() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut guests = 0usize;
    let mut locks = 0usize;
    for _ in 0..300 {
        let steps = plain_steps().new_tree(&mut runner).unwrap().current();
        let mut model = new_model();
        for step in steps {
            let Step::Op(op, writer, mtime) = step else {
                continue;
            };
            let kind = format!("{op:?}");
            let kind = kind.split('(').next().unwrap().to_string();
            let result = model.apply(&op, writer, mtime);
            *counts.entry(format!("{kind:7} {result:?}")).or_default() += 1;
        }
        guests += model.vmlist.len();
        locks += model.resolve(b"priv/lock").map_or(0, |_| 1);
    }
    for (key, count) in &counts {
        eprintln!("{count:7}  {key}");
    }
    eprintln!("guests at end (sum) {guests}; runs with priv/lock {locks}/300");
    for kind in ["Create", "Mkdir", "Write", "Delete", "Rename", "Mtime"] {
        let ok = counts
            .iter()
            .any(|(key, count)| key.starts_with(kind) && key.contains("Ok") && *count > 0);
        let refused = counts
            .iter()
            .any(|(key, count)| key.starts_with(kind) && key.contains("Err") && *count > 0);
        assert!(ok && refused, "{kind}: ok {ok}, refused {refused}");
    }
    assert!(guests > 0, "no guest configs generated");
    assert!(locks > 0, "no priv/lock generated");
}

/// The guest list at a checkpoint is not always the one a rebuild from the
/// checkpointed tree gives (the delete quirk of §6.4 unregisters a vmid
/// whose config still exists). The journal replay starts from the rebuilt
/// list, so a committed create that succeeded originally used to be refused
/// on replay and the store could not be opened — although the final tree is
/// consistent (one config for vmid 100) and the C daemon restarts fine.
#[test]
fn regression_replay_does_not_depend_on_the_guest_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origin = Origin {
        writer: 0,
        mtime: 0,
    };
    {
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let mut writer = session.writer(&mut permit);
        for path in [
            &b"nodes"[..],
            b"nodes/pve1",
            b"nodes/pve1/qemu-server",
            b"nodes/pve2",
            b"nodes/pve2/lxc",
        ] {
            writer.apply(&Op::Mkdir { path }, origin).unwrap();
        }
        let old = &b"nodes/pve2/lxc/100.conf"[..];
        let new = &b"nodes/pve1/qemu-server/100.conf"[..];
        writer.apply(&Op::Create { path: old }, origin).unwrap();
        writer.apply(&Op::Mkdir { path: new }, origin).unwrap();
        writer.apply(&Op::Delete { path: new }, origin).unwrap(); // unregisters 100
        session.commit().expect("commit");
        session.checkpoint().expect("checkpoint");
        let mut writer = session.writer(&mut permit);
        writer.apply(&Op::Create { path: new }, origin).unwrap();
        writer.apply(&Op::Delete { path: old }, origin).unwrap();
        session.commit().expect("commit");
        // crash
    }
    let store = Store::open(dir.path()).expect("reopen");
    let (session, _permit) = store
        .session(Durability::Relaxed)
        .expect("session after crash (journal replay)");
    let reader = session.reader();
    assert!(
        reader
            .resolve(b"nodes/pve1/qemu-server/100.conf")
            .unwrap()
            .is_some()
    );
    assert_eq!(
        session.vmlist().get(100).map(|g| g.node.clone()),
        Some(b"pve1".to_vec())
    );
}

/// What the store derives from the tree (the guest list and the lock
/// table) is rebuilt when it is opened again: guest configs only under a
/// node directory with a valid node name and only files; lock directories
/// with their entry checksums and a fresh lifetime.
#[test]
fn guests_and_locks_are_rebuilt_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = b"priv/lock/l";
    let checksum = {
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let mut t = Pair {
            session: &mut session,
            permit: &mut permit,
            model: Model::new(),
        };
        for dir in [
            "nodes",
            "nodes/n1",
            "nodes/n1/qemu-server",
            "nodes/n1/lxc",
            "nodes/-bad",
            "nodes/-bad/qemu-server",
            "priv",
            "priv/lock",
            "priv/lock/l",
        ] {
            t.ok(mkdir(dir));
        }
        for file in [
            "nodes/n1/qemu-server/100.conf",
            "nodes/n1/lxc/101.conf",
            "nodes/-bad/qemu-server/102.conf",
            "nodes/n2",
        ] {
            t.ok(create(file));
        }
        t.ok(mkdir("nodes/n1/qemu-server/103.conf"));
        t.session.commit().expect("commit");
        assert!(t.session.vmlist().get(100).is_some());
        t.session
            .writer(t.permit)
            .lock_checksum(lock)
            .expect("read")
            .expect("a lock")
    };
    let store = Store::open(dir.path()).expect("reopen");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let vmlist = session.vmlist();
    assert!(vmlist.get(100).is_some(), "a VM config");
    assert!(vmlist.get(101).is_some(), "a container config");
    assert!(vmlist.get(102).is_none(), "not a valid node name");
    assert!(vmlist.get(103).is_none(), "a directory, not a config");
    // The lock's lifetime started when the store was opened (not at the
    // first question, as it would for a lock the table does not know).
    let opened = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let clock = Arc::new(AtomicU64::new(opened + 10));
    session.set_clock({
        let clock = clock.clone();
        move || clock.load(Ordering::SeqCst)
    });
    let mut writer = session.writer(&mut permit);
    assert_eq!(writer.lock_checksum(lock).expect("read"), Some(checksum));
    assert!(!writer.lock_expired(lock, checksum), "a fresh lifetime");
    clock.store(opened + LOCK_TIMEOUT_SECS + 5, Ordering::SeqCst);
    assert!(
        writer.lock_expired(lock, checksum),
        "the lifetime started at the reopen"
    );
    assert_eq!(writer.lock_checksum(b"priv/lock/none").expect("read"), None);
}
