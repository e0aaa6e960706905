//! What survives a crash and a power cut (ARCHITECTURE.md, "Durability").
//!
//! A power cut can lose any suffix of the journal that was not yet synced,
//! and can tear the last record. These tests cut the journal at every record
//! boundary and in the middle of records, and require that the store comes
//! back as exactly the state after the last whole record: never an error,
//! never a mix, never a change applied twice.

use std::path::Path;

use pmxcfs_store::{Durability, Op, Origin, Store};

fn origin(step: u32) -> Origin {
    Origin {
        writer: step % 3,
        mtime: 1_700_000_000 + step,
    }
}

/// Applies a mixed workload, one commit per op; returns the checksum after
/// every op and the journal length after every op.
fn workload(dir: &Path, checkpoint_after: Option<usize>) -> (Vec<[u8; 32]>, Vec<u64>) {
    let store = Store::open(dir).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let mut checksums = vec![session.reader().checksum().expect("checksum")];
    let mut journal_lengths = vec![0];
    let paths: Vec<String> = (0..6).map(|index| format!("dir/f{index}.cfg")).collect();
    let mut ops: Vec<Op<'_>> = vec![Op::Mkdir { path: b"dir" }];
    for path in &paths {
        ops.push(Op::Create {
            path: path.as_bytes(),
        });
        ops.push(Op::Write {
            path: path.as_bytes(),
            offset: 0,
            data: b"some configuration text\n",
            truncate: false,
        });
    }
    ops.push(Op::Rename {
        from: paths[0].as_bytes(),
        to: paths[1].as_bytes(),
    });
    ops.push(Op::Delete {
        path: paths[2].as_bytes(),
    });
    ops.push(Op::Mtime {
        path: paths[3].as_bytes(),
        mtime: 42,
    });
    ops.push(Op::Write {
        path: paths[4].as_bytes(),
        offset: 3,
        data: b"",
        truncate: true,
    });
    for (step, op) in ops.iter().enumerate() {
        session
            .writer(&mut permit)
            .apply(op, origin(step as u32))
            .expect("apply");
        session.commit().expect("commit");
        if checkpoint_after == Some(step) {
            session.checkpoint().expect("checkpoint");
        }
        checksums.push(session.reader().checksum().expect("checksum"));
        journal_lengths.push(
            std::fs::metadata(dir.join("journal"))
                .expect("journal")
                .len(),
        );
    }
    // Crash: no checkpoint, no close. The LMDB transaction is aborted.
    drop(session);
    (checksums, journal_lengths)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("lmdb")).expect("mkdir");
    for name in ["lmdb/data.mdb", "journal"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy");
    }
}

fn checksum_after_reopen(dir: &Path) -> [u8; 32] {
    let store = Store::open(dir).expect("reopen");
    let (session, _permit) = store.session(Durability::Relaxed).expect("session");
    session.reader().checksum().expect("checksum")
}

#[test]
fn a_cut_journal_recovers_the_last_whole_record() {
    let source = tempfile::tempdir().expect("tempdir");
    let (checksums, lengths) = workload(source.path(), None);
    let journal = std::fs::read(source.path().join("journal")).expect("journal");
    assert_eq!(journal.len() as u64, *lengths.last().expect("ops"));
    // Every boundary, every boundary + 1 byte, and the middle of every record.
    let mut cuts = Vec::new();
    for window in lengths.windows(2) {
        cuts.extend([window[0], window[0] + 1, (window[0] + window[1]) / 2]);
    }
    cuts.push(journal.len() as u64);
    for cut in cuts {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(source.path(), copy.path());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join("journal"))
            .expect("open journal");
        file.set_len(cut).expect("cut");
        let whole_records = lengths.iter().filter(|length| **length <= cut).count() - 1;
        assert_eq!(
            checksum_after_reopen(copy.path()),
            checksums[whole_records],
            "journal cut at {cut} bytes"
        );
    }
}

#[test]
fn garbage_after_the_last_record_is_dropped() {
    let source = tempfile::tempdir().expect("tempdir");
    let (checksums, _) = workload(source.path(), None);
    let mut journal = std::fs::read(source.path().join("journal")).expect("journal");
    // A power cut on a file system without data ordering can leave zeros or
    // stale bytes in the last block.
    journal.extend(std::iter::repeat_n(0u8, 1000));
    std::fs::write(source.path().join("journal"), &journal).expect("write");
    assert_eq!(
        checksum_after_reopen(source.path()),
        *checksums.last().expect("ops")
    );
}

#[test]
fn records_older_than_the_checkpoint_are_not_applied_twice() {
    let source = tempfile::tempdir().expect("tempdir");
    let dir = source.path();
    let store = Store::open(dir).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    for step in 0..3u32 {
        let path = format!("f{step}");
        session
            .writer(&mut permit)
            .apply(
                &Op::Mkdir {
                    path: path.as_bytes(),
                },
                origin(step),
            )
            .expect("mkdir");
        session.commit().expect("commit");
    }
    // A write applies again without a refusal (and would bump versions):
    // only the checkpoint's sequence number keeps it from being replayed.
    for step in 3..5u32 {
        let mut writer = session.writer(&mut permit);
        if step == 3 {
            writer
                .apply(&Op::Create { path: b"f0/file" }, origin(step))
                .expect("create");
        }
        writer
            .apply(
                &Op::Write {
                    path: b"f0/file",
                    offset: 0,
                    data: b"same",
                    truncate: false,
                },
                origin(step),
            )
            .expect("write");
        session.commit().expect("commit");
    }
    let journal_before = std::fs::read(dir.join("journal")).expect("journal");
    session.checkpoint().expect("checkpoint");
    let expected = session.reader().checksum().expect("checksum");
    drop(session);
    drop(store);
    // The truncate of the journal was lost (power cut right after the
    // checkpoint): the old records are back.
    std::fs::write(dir.join("journal"), &journal_before).expect("restore");
    assert_eq!(checksum_after_reopen(dir), expected);
}

#[test]
fn a_checkpoint_in_the_middle_then_a_crash_keeps_everything() {
    let source = tempfile::tempdir().expect("tempdir");
    let (checksums, _) = workload(source.path(), Some(5));
    assert_eq!(
        checksum_after_reopen(source.path()),
        *checksums.last().expect("ops")
    );
}

/// A full disk: the journal write fails. The change that could not be made
/// durable is taken back out of view, every acknowledged one stays, and the
/// session refuses further changes; after a restart the acknowledged state
/// is there. (Needs root for the size-limited tmpfs, as the CI has.)
#[test]
fn a_full_disk_keeps_exactly_the_acknowledged_changes() {
    let base = tempfile::tempdir().expect("tempdir");
    let mountpoint = base.path().join("small");
    std::fs::create_dir(&mountpoint).expect("mkdir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mountpoint)
        .status()
        .expect("mount");
    assert!(status.success(), "mounting a tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mountpoint.clone());
    let dir = mountpoint.join("data");
    let data = vec![b'x'; 60 * 1024];
    // Freed later to make room again.
    let ballast = mountpoint.join("ballast");
    std::fs::write(&ballast, vec![0u8; 256 * 1024]).expect("ballast");
    let acknowledged;
    {
        let store = Store::open(&dir).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let signal = session.sync_signal();
        let mut last_ok = session.reader().checksum().expect("checksum");
        let mut failed = false;
        for step in 0..200u32 {
            let path = format!("f{step}");
            let mut writer = session.writer(&mut permit);
            writer
                .apply(
                    &Op::Create {
                        path: path.as_bytes(),
                    },
                    origin(step),
                )
                .expect("create");
            writer
                .apply(
                    &Op::Write {
                        path: path.as_bytes(),
                        offset: 0,
                        data: &data,
                        truncate: false,
                    },
                    origin(step),
                )
                .expect("write");
            match session.commit() {
                Ok(()) => last_ok = session.reader().checksum().expect("checksum"),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "the 2 MiB file system never filled up");
        assert!(session.is_poisoned());
        assert_eq!(
            session.reader().checksum().expect("checksum"),
            last_ok,
            "the view is exactly the acknowledged changes"
        );
        let refused = session
            .writer(&mut permit)
            .apply(&Op::Mkdir { path: b"later" }, origin(999));
        assert!(refused.is_err(), "no changes after a failed write");
        assert_eq!(session.poison_errno(), Some(libc::ENOSPC), "a full disk");
        assert!(
            session.sync_job().is_none(),
            "a poisoned session syncs nothing"
        );

        // Recovery needs 64 KiB of room: refused while the disk is full.
        assert!(session.recover().is_err(), "the disk is still full");
        assert!(session.is_poisoned());
        assert_eq!(session.poison_errno(), Some(libc::ENOSPC));
        std::fs::remove_file(&ballast).expect("free the ballast");
        session.recover().expect("room again");
        assert!(!session.is_poisoned());
        assert_eq!(session.poison_errno(), None);
        assert!(
            std::sync::Arc::ptr_eq(&signal, &session.sync_signal()),
            "the syncer keeps waiting on the same signal after the reopen"
        );
        assert_eq!(
            session.reader().checksum().expect("checksum"),
            last_ok,
            "the recovered view is exactly the acknowledged changes"
        );
        session
            .writer(&mut permit)
            .apply(&Op::Mkdir { path: b"after" }, origin(1000))
            .expect("changes are taken again");
        session.commit().expect("commit");
        session.sync().expect("sync");
        assert!(session.is_synced());
        acknowledged = session.reader().checksum().expect("checksum");
    }
    assert_eq!(checksum_after_reopen(&dir), acknowledged);
}
