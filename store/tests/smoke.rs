//! Basic life cycle of a store: apply, commit, kill (drop without
//! checkpoint), reopen with journal replay, checkpoint.

use pmxcfs_store::{CheckpointLimits, Durability, Op, Origin, Store, StoreError};

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
        assert_eq!(
            session.stats().records_since_checkpoint,
            3,
            "the replayed records wait for the next checkpoint"
        );
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
    // At least LMDB's meta pages (4 KiB each).
    assert!(store.disk_size_bytes().expect("size") >= 8192);
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

/// What the syncer and the status report see: a session is synced until a
/// change is applied, and after the commit (relaxed mode) until a sync or a
/// background sync job finished; a failed background sync poisons it with
/// the disk's errno. The stats count the journal and the checkpoints, and
/// the checkpoint limits and the lock lifetime are the ones set.
#[test]
fn sync_state_stats_checkpoint_limits_and_lock_lifetime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    session.set_clock(|| 1_000);
    let mkdir = |session: &mut pmxcfs_store::Session<'_>,
                 permit: &mut pmxcfs_store::ApplyPermit,
                 path: &[u8]| {
        session
            .writer(permit)
            .apply(&Op::Mkdir { path }, ORIGIN)
            .expect("mkdir");
    };
    assert!(session.is_synced(), "nothing applied yet");
    mkdir(&mut session, &mut permit, b"a");
    assert!(!session.is_synced(), "applied, not committed");
    session.commit().expect("commit");
    assert!(!session.is_synced(), "committed, not synced");
    session.sync().expect("sync");
    assert!(session.is_synced());

    mkdir(&mut session, &mut permit, b"b");
    session.commit().expect("commit");
    let job = session.sync_job().expect("unsynced bytes make a job");
    assert!(session.sync_job().is_none(), "one job at a time");
    job.run().expect("fdatasync");
    session.sync_done(job, Ok(())).expect("done");
    assert!(session.is_synced());
    assert!(session.sync_job().is_none(), "nothing left to sync");

    let stats = session.stats();
    assert_eq!(stats.records_since_checkpoint, 2);
    assert!(stats.journal_bytes > 0);
    assert_eq!(stats.last_checkpoint, None);
    assert!(!stats.poisoned);

    session.set_checkpoint_limits(CheckpointLimits {
        records_max: 3,
        journal_bytes_max: u64::MAX,
    });
    mkdir(&mut session, &mut permit, b"c");
    session.commit().expect("commit");
    let stats = session.stats();
    assert_eq!(
        (
            stats.records_since_checkpoint,
            stats.journal_bytes,
            stats.last_checkpoint
        ),
        (0, 0, Some(1_000)),
        "the third record reached the record limit"
    );
    session.set_checkpoint_limits(CheckpointLimits {
        records_max: u64::MAX,
        journal_bytes_max: 1,
    });
    mkdir(&mut session, &mut permit, b"d");
    session.commit().expect("commit");
    assert_eq!(
        session.stats().records_since_checkpoint,
        0,
        "one record passed the byte limit"
    );
    session.set_checkpoint_limits(CheckpointLimits::default());

    session.set_lock_timeout_secs(5);
    for path in [&b"priv"[..], b"priv/lock", b"priv/lock/x"] {
        mkdir(&mut session, &mut permit, path);
    }
    session.commit().expect("commit");
    assert_eq!(
        session.stats().locks,
        vec![(b"priv/lock/x".to_vec(), 1_005)]
    );
    session
        .writer(&mut permit)
        .apply(
            &Op::Delete {
                path: b"priv/lock/x",
            },
            ORIGIN,
        )
        .expect("unlock");
    session.commit().expect("commit");
    assert_eq!(session.stats().locks, vec![], "a deleted lock is forgotten");

    mkdir(&mut session, &mut permit, b"e");
    session.commit().expect("commit");
    let job = session.sync_job().expect("job");
    let failed = session.sync_done(job, Err(std::io::Error::from_raw_os_error(libc::EIO)));
    assert!(failed.is_err());
    assert!(session.is_poisoned() && session.stats().poisoned);
    assert_eq!(session.poison_errno(), Some(libc::EIO));
    assert!(
        session.sync_job().is_none(),
        "a poisoned session syncs nothing"
    );
    assert!(session.commit().is_err(), "and takes no changes");
}

/// `pmxcfs dump` opens a store that a daemon holds: read-only, the last
/// checkpoint; a directory without a store is refused. A copy of the
/// checkpoint reads the same tree.
#[test]
fn a_store_opened_for_reading_and_a_copy_of_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(Store::open_existing(dir.path()).is_err(), "nothing there");
    let store = Store::open(dir.path()).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    session
        .writer(&mut permit)
        .apply(&Op::Mkdir { path: b"a" }, ORIGIN)
        .expect("mkdir");
    session.commit().expect("commit");
    session.checkpoint().expect("checkpoint");
    let expected = session.reader().checksum().expect("checksum");
    let copy = tempfile::tempdir().expect("tempdir");
    store
        .copy_checkpoint_to(&copy.path().join("lmdb"))
        .expect("copy");
    // (LMDB opens an environment once per process: the reader of the
    // store itself comes after the session, as it would in another process.)
    drop(session);
    drop(store);
    for dir in [dir.path(), copy.path()] {
        let reading = Store::open_existing(dir).expect("open for reading");
        let snapshot = reading.snapshot().expect("snapshot");
        assert_eq!(snapshot.reader().checksum().expect("checksum"), expected);
        assert!(snapshot.reader().resolve(b"a").expect("resolve").is_some());
    }
}

/// The guest index's version moves with every guest registered or
/// removed (IPC clients poll it to know when to re-read the list).
#[test]
fn the_guest_list_version_moves_with_each_guest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let before = session.vmlist().version();
    let mut writer = session.writer(&mut permit);
    for path in [&b"nodes"[..], b"nodes/n1", b"nodes/n1/qemu-server"] {
        writer.apply(&Op::Mkdir { path }, ORIGIN).expect("mkdir");
    }
    let config = &b"nodes/n1/qemu-server/100.conf"[..];
    writer
        .apply(&Op::Create { path: config }, ORIGIN)
        .expect("create");
    session.commit().expect("commit");
    assert_eq!(session.vmlist().version(), before + 1);
    assert!(session.vmlist().guests().contains_key(&100));
    session
        .writer(&mut permit)
        .apply(&Op::Delete { path: config }, ORIGIN)
        .expect("delete");
    session.commit().expect("commit");
    assert_eq!(session.vmlist().version(), before + 2);
    assert!(session.vmlist().guests().is_empty());
}

/// At start the guest index is rebuilt from the tree: only configs under a
/// directory with a node's name count, not under a file or a directory
/// whose name no node can have.
#[test]
fn the_guest_index_is_rebuilt_from_node_directories_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    {
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let mut writer = session.writer(&mut permit);
        for path in [
            &b"nodes"[..],
            b"nodes/n1",
            b"nodes/n1/qemu-server",
            b"nodes/-bad",
            b"nodes/-bad/qemu-server",
        ] {
            writer.apply(&Op::Mkdir { path }, ORIGIN).expect("mkdir");
        }
        for path in [
            &b"nodes/n1/qemu-server/100.conf"[..],
            b"nodes/-bad/qemu-server/101.conf",
            b"nodes/n2",
        ] {
            writer.apply(&Op::Create { path }, ORIGIN).expect("create");
        }
        session.commit().expect("commit");
        session.close().expect("close");
    }
    let (session, _permit) = store.session(Durability::Relaxed).expect("session");
    let vmids: Vec<u32> = session.vmlist().guests().keys().copied().collect();
    assert_eq!(vmids, vec![100]);
}
