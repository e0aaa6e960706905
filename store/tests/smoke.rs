//! Basic life cycle of a store: apply, commit, kill (drop without
//! checkpoint), reopen with journal replay, checkpoint.

use pmxcfs_store::{Durability, Op, Origin, Store, StoreError};

const ORIGIN: Origin = Origin {
    writer: 0,
    mtime: 1_700_000_000,
};

#[test]
fn changes_survive_a_crash_through_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let mut writer = session.writer(&mut permit);
        writer
            .apply(&Op::Mkdir { path: b"nodes" }, ORIGIN)
            .expect("mkdir");
        writer
            .apply(
                &Op::Create {
                    path: b"nodes/a.cfg",
                },
                ORIGIN,
            )
            .expect("create");
        let written = writer
            .apply(
                &Op::Write {
                    path: b"nodes/a.cfg",
                    offset: 0,
                    data: b"hello",
                    truncate: false,
                },
                ORIGIN,
            )
            .expect("write");
        assert_eq!(written, 5);
        assert!(matches!(
            writer.apply(
                &Op::Create {
                    path: b"nodes/a.cfg"
                },
                ORIGIN
            ),
            Err(StoreError::Exists)
        ));
        session.commit().expect("commit");
        // Dropped without checkpoint: the LMDB transaction is aborted, the
        // journal holds the three changes.
    }
    {
        let store = Store::open(dir.path()).expect("reopen");
        let (session, _permit) = store.session(Durability::Relaxed).expect("session");
        assert_eq!(session.recovery().replayed_records, 3);
        let reader = session.reader();
        let file = reader
            .resolve(b"nodes/a.cfg")
            .expect("resolve")
            .expect("exists");
        assert_eq!(file.data, b"hello");
        assert_eq!(file.meta.inode, 3);
        assert_eq!(file.meta.version, 4);
        assert_eq!(reader.root().expect("root").meta.version, 4);
        session.close().expect("close");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let (session, _permit) = store.session(Durability::Strict).expect("session");
    assert_eq!(session.recovery().replayed_records, 0);
    assert_eq!(session.reader().root().expect("root").meta.version, 4);
}

/// The daemon's FUSE queues run on one thread per CPU: the session (and its
/// open LMDB write transaction) is used, committed and checkpointed from
/// whichever thread holds it. LMDB's writer lock is a POSIX semaphore here
/// (heed `posix-sem`), which has no owner thread; with the default robust
/// mutex a checkpoint on another thread than the one that began the
/// transaction would deadlock the next begin.
#[test]
fn sessions_move_between_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: &'static Store = Store::open(dir.path()).expect("open").leak();
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    session
        .writer(&mut permit)
        .apply(&Op::Mkdir { path: b"a" }, ORIGIN)
        .expect("mkdir");
    session.commit().expect("commit");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut session = session;
        let mut permit = permit;
        for round in 0..3 {
            let path = format!("a/f{round}");
            session
                .writer(&mut permit)
                .apply(
                    &Op::Create {
                        path: path.as_bytes(),
                    },
                    ORIGIN,
                )
                .expect("create");
            session.commit().expect("commit");
            // Commits the transaction begun on the other thread (or in the
            // previous round) and begins the next one here.
            session.checkpoint().expect("checkpoint");
        }
        let _ = done.send((session, permit));
    });
    let (mut session, mut permit) = finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("checkpoints on another thread finished (no deadlock)");
    session
        .writer(&mut permit)
        .apply(&Op::Create { path: b"a/back" }, ORIGIN)
        .expect("create");
    session.commit().expect("commit");
    session
        .checkpoint()
        .expect("checkpoint back on the first thread");
    let reader = session.reader();
    for name in ["a/f0", "a/f1", "a/f2", "a/back"] {
        assert!(
            reader.resolve(name.as_bytes()).expect("resolve").is_some(),
            "{name}"
        );
    }
    drop(session);
    // SAFETY: the session (and its reader) are gone.
    unsafe { Store::reclaim(store) };
}

/// The largest write the tree takes (1 MiB) at a deep path is journaled and
/// replayed; a write whose journal record would pass the record limit (a
/// path of tens of KiB) is refused with ENAMETOOLONG and changes nothing,
/// instead of bringing the daemon down.
#[test]
fn the_largest_records_are_journaled_and_larger_ones_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let component = vec![b'd'; 250];
    let data = vec![b'x'; pmxcfs_store::MAX_FILE_SIZE];
    // A 1 MiB write at a 4 KiB path (the kernel's PATH_MAX): accepted.
    let mut shallow = Vec::new();
    // A path well past the record's room for paths (renamed at the end).
    let renamed;
    {
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let mut writer = session.writer(&mut permit);
        let mut path = Vec::new();
        while path.len() < 24 * 1024 {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&component);
            writer
                .apply(&Op::Mkdir { path: &path }, ORIGIN)
                .expect("mkdir");
            if shallow.is_empty() && path.len() > 3800 {
                shallow = [&path[..], b"/f"].concat();
            }
        }
        let deep = [&path[..], b"/f"].concat();
        for path in [&shallow, &deep] {
            writer.apply(&Op::Create { path }, ORIGIN).expect("create");
        }
        let write = |path| Op::Write {
            path,
            offset: 0,
            data: &data,
            truncate: true,
        };
        assert_eq!(
            writer.apply(&write(&shallow), ORIGIN).expect("1 MiB write"),
            data.len() as u32
        );
        let refused = writer.apply(&write(&deep), ORIGIN);
        assert!(
            matches!(&refused, Err(error) if error.errno() == libc::ENAMETOOLONG && error.is_refusal()),
            "{refused:?}"
        );
        // A rename between two deep paths fits (no data).
        renamed = [&deep[..], b"2"].concat();
        writer
            .apply(
                &Op::Rename {
                    from: &deep,
                    to: &renamed,
                },
                ORIGIN,
            )
            .expect("rename");
        session.commit().expect("commit");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let (session, _permit) = store.session(Durability::Relaxed).expect("session");
    let reader = session.reader();
    let file = reader
        .resolve(&shallow)
        .expect("resolve")
        .expect("the 1 MiB file");
    assert_eq!(file.data, &data[..]);
    let moved = reader
        .resolve(&renamed)
        .expect("resolve")
        .expect("the renamed file");
    assert!(moved.data.is_empty(), "the refused write changed nothing");
}

/// What the daemon reads of a store besides the tree: the LMDB dir is
/// private (0700), its size on disk, an inode's path, the entry count and
/// data bytes.
#[test]
fn store_facts_for_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let lmdb = dir.path().join("lmdb");
    std::fs::create_dir(&lmdb).expect("mkdir");
    std::fs::set_permissions(&lmdb, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = Store::open(dir.path()).expect("open");
    let mode = std::fs::metadata(&lmdb).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(store.disk_size_bytes().expect("size") > 0);
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let mut writer = session.writer(&mut permit);
    writer
        .apply(&Op::Mkdir { path: b"a" }, ORIGIN)
        .expect("mkdir");
    writer
        .apply(&Op::Create { path: b"a/b" }, ORIGIN)
        .expect("create");
    let write = Op::Write {
        path: b"a/b",
        offset: 0,
        data: b"12345",
        truncate: false,
    };
    writer.apply(&write, ORIGIN).expect("write");
    session.commit().expect("commit");
    let reader = session.reader();
    let file = reader.resolve(b"a/b").expect("read").expect("a/b");
    assert_eq!(
        reader.path_of(file.meta.inode).expect("path"),
        Some(b"a/b".to_vec())
    );
    assert_eq!(reader.path_of(file.meta.inode + 1000).expect("path"), None);
    // The root, a, a/b (the version row is not an entry).
    assert_eq!(reader.usage().expect("usage"), (3, 5));
}
