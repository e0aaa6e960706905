//! The DCDB resync commit: a member takes the leader's tree from its index
//! and the entries that differ (spec/memdb.md §7–§8).

use std::collections::BTreeMap;

use pmxcfs_store::{Durability, Op, Origin, Reader, Row, Store};

fn origin(writer: u32, mtime: u32) -> Origin {
    Origin { writer, mtime }
}

fn apply_all(store: &Store, ops: &[(Op<'_>, Origin)]) {
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    for (op, origin) in ops {
        session
            .writer(&mut permit)
            .apply(op, *origin)
            .expect("apply");
    }
    session.close().expect("close");
}

fn rows(reader: &Reader<'_>) -> BTreeMap<u64, Row> {
    let mut rows = BTreeMap::new();
    reader
        .for_each_entry(|entry| {
            rows.insert(entry.meta.inode, Reader::row_of(&entry));
            Ok(())
        })
        .expect("rows");
    rows
}

/// The entries a leader sends: those whose 40-byte index record differs
/// from the member's (or that the member lacks).
fn updates_for(
    leader_index: &[u8],
    member_index: &[u8],
    leader_rows: &BTreeMap<u64, Row>,
) -> Vec<Row> {
    let records = |blob: &[u8]| -> BTreeMap<u64, Vec<u8>> {
        blob[32..]
            .chunks_exact(40)
            .map(|record| {
                let inode = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
                (inode, record.to_vec())
            })
            .collect()
    };
    let member = records(member_index);
    records(leader_index)
        .into_iter()
        .filter(|(inode, record)| member.get(inode) != Some(record))
        .map(|(inode, _)| leader_rows[&inode].clone())
        .collect()
}

#[test]
fn a_member_takes_the_leaders_tree() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let member_dir = tempfile::tempdir().expect("tempdir");
    let leader = Store::open(leader_dir.path()).expect("open");
    let member = Store::open(member_dir.path()).expect("open");
    // Shared history, then both diverge: the member has a file the leader
    // deleted, a different content, and a name the leader gave to another
    // inode.
    let common = [
        (Op::Mkdir { path: b"nodes" }, origin(1, 10)),
        (
            Op::Mkdir {
                path: b"nodes/pve1",
            },
            origin(1, 11),
        ),
        (Op::Create { path: b"a.cfg" }, origin(1, 12)),
        (Op::Create { path: b"b.cfg" }, origin(1, 13)),
    ];
    apply_all(&leader, &common);
    apply_all(&member, &common);
    apply_all(
        &leader,
        &[
            (Op::Delete { path: b"b.cfg" }, origin(1, 20)),
            (
                Op::Write {
                    path: b"a.cfg",
                    offset: 0,
                    data: b"leader",
                    truncate: false,
                },
                origin(2, 21),
            ),
            (Op::Create { path: b"c.cfg" }, origin(1, 22)),
            (
                Op::Rename {
                    from: b"c.cfg",
                    to: b"nodes/pve1/moved",
                },
                origin(1, 23),
            ),
            (Op::Mkdir { path: b"priv" }, origin(3, 24)),
        ],
    );
    apply_all(
        &member,
        &[
            (
                Op::Write {
                    path: b"a.cfg",
                    offset: 0,
                    data: b"member!",
                    truncate: false,
                },
                origin(2, 30),
            ),
            (
                Op::Create {
                    path: b"nodes/pve1/moved",
                },
                origin(2, 31),
            ),
        ],
    );
    let leader_snapshot = leader.snapshot().expect("snapshot");
    let leader_index = leader_snapshot.reader().index().expect("index");
    let leader_rows = rows(&leader_snapshot.reader());
    let (mut session, mut permit) = member.session(Durability::Relaxed).expect("session");
    let member_index = session.reader().index().expect("index");
    let updates = updates_for(&leader_index, &member_index, &leader_rows);
    assert!(
        updates.len() < leader_rows.len(),
        "only differing entries are sent"
    );

    // Wrong updates: refused, nothing changes.
    let before = rows(&session.reader());
    let broken: Vec<Row> = updates
        .iter()
        .map(|row| Row {
            mtime: row.mtime + 1,
            ..row.clone()
        })
        .collect();
    assert!(
        session
            .writer(&mut permit)
            .apply_resync(&leader_index, &broken)
            .is_err()
    );
    assert_eq!(rows(&session.reader()), before);

    session
        .writer(&mut permit)
        .apply_resync(&leader_index, &updates)
        .expect("resync");
    assert_eq!(session.reader().index().expect("index"), leader_index);
    let mut expected = leader_rows.clone();
    // The C daemon writes the root row with type 4 during a resync.
    if let Some(root) = expected.get_mut(&0)
        && updates.iter().any(|row| row.inode == 0)
    {
        root.kind = 4;
    }
    assert_eq!(rows(&session.reader()), expected);
    // Durable: a crash right now keeps the leader's tree.
    drop(session);
    let (session, _permit) = member.session(Durability::Relaxed).expect("reopen");
    assert_eq!(session.reader().index().expect("index"), leader_index);
    assert_eq!(
        session
            .reader()
            .resolve(b"a.cfg")
            .expect("resolve")
            .expect("a.cfg")
            .data,
        b"leader"
    );
}
