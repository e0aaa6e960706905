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
