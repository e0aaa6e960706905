//! One raw FUSE request through cluster mode's mutation path: decoded and
//! planned by `PmxFs::intercept`, its DCDB messages delivered back to this
//! (single-member, quorate) node, applied to a real store, answered. Must
//! never panic; every taken request is answered exactly once.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use pmxcfs_fsproto::{Config, Group, MemberId, PmxFs};

/// The mutating opcodes (and a few others) the first byte picks from.
const OPCODES: [u32; 12] = [4, 8, 9, 10, 11, 12, 16, 35, 45, 1, 3, 14];

fn fs() -> &'static Mutex<PmxFs> {
    static FS: OnceLock<Mutex<PmxFs>> = OnceLock::new();
    FS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let store = pmxcfs_store::Store::open(&dir).expect("store").leak();
        let (session, permit) = store
            .session(pmxcfs_store::Durability::Relaxed)
            .expect("session");
        let fs = PmxFs::new_cluster(
            session,
            permit,
            Config {
                nodename: "fuzz".into(),
                www_data_gid: 33,
            },
            None,
        );
        let me = MemberId::new(1, 1);
        fs.cpg_connected(Group::Dcdb, me);
        fs.cpg_confchg(Group::Dcdb, &[me], &[me]);
        fs.set_quorate(true);
        Mutex::new(fs)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Some((&node, body)) = rest.split_first() else {
        return;
    };
    let fs = fs().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let unique = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut request = Vec::with_capacity(40 + body.len());
    request.extend_from_slice(&((40 + body.len()) as u32).to_le_bytes());
    request.extend_from_slice(&OPCODES[pick as usize % OPCODES.len()].to_le_bytes());
    request.extend_from_slice(&unique.to_le_bytes());
    request.extend_from_slice(&u64::from(node % 16).to_le_bytes());
    request.extend_from_slice(&[0u8; 16]); // uid, gid, pid, padding
    request.extend_from_slice(body);
    if !fs.intercept(&request) {
        return;
    }
    // Deliver what it sent (a singleton group delivers its own messages).
    for _ in 0..8 {
        let outgoing = fs.take_outgoing();
        if outgoing.is_empty() {
            break;
        }
        for (group, _, bytes) in outgoing {
            fs.cpg_deliver(group, MemberId::new(1, 1), &bytes);
        }
    }
    let replies = fs.take_replies();
    assert!(replies.len() <= 1, "a request answered twice");
});
