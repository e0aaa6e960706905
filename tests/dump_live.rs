//! `pmxcfs dump` while another process holds the store's write transaction
//! (a running daemon): it must not block and must show acknowledged changes
//! that are still only in the journal.

use std::process::Command;
use std::time::{Duration, Instant};

use pmxcfs_store::{Durability, Op, Origin, Store};

#[test]
fn dump_sees_journaled_changes_while_a_writer_is_active() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
    let origin = Origin {
        writer: 0,
        mtime: 1_700_000_000,
    };
    let mut writer = session.writer(&mut permit);
    writer
        .apply(&Op::Mkdir { path: b"nodes" }, origin)
        .expect("mkdir");
    writer
        .apply(
            &Op::Create {
                path: b"nodes/live.cfg",
            },
            origin,
        )
        .expect("create");
    session.commit().expect("commit");

    let mut child = Command::new(env!("CARGO_BIN_EXE_pmxcfs"))
        .args(["dump", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dump");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("dump blocked on the writer's transaction");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].contains("\"name\":\"live.cfg\""), "{text}");
    assert!(lines[0].contains("\"version\":3"), "{text}");
    drop(session);
}
