//! The kvstore application against the captured C messages
//! (tests/vectors/dcdb): the
//! cluster log ring a C node sent as its STATE is re-created byte for byte
//! from its entries, and the LOG messages C nodes multicast decode into
//! entries that re-encode to the same bytes.

use std::path::PathBuf;

use pmxcfs_cpg::kvstore::{ClusterLog, LogEntry};
use pmxcfs_cpg::wire::{self, ClogEntry, ClogState, STATE_HEADER_BYTES};

fn vectors() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/dcdb"
    ))
}

fn files(suffix: &str) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(vectors())
        .expect("vectors dir tests/vectors/dcdb")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("-kvstore-") && name.ends_with(suffix))
        .map(|name| {
            let bytes = std::fs::read(vectors().join(&name)).expect("read vector");
            (name, bytes)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn c_state_rings_are_reproduced_byte_for_byte() {
    let states = files(".STATE.bin");
    assert!(!states.is_empty(), "no kvstore STATE vectors");
    let mut checked = 0;
    for (name, bytes) in states.iter().filter(|(name, _)| name.contains("mcast@")) {
        let blob = &bytes[STATE_HEADER_BYTES..];
        let state = ClogState::decode(blob).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut newest_first = Vec::new();
        for item in state.entries() {
            let (_, entry) = item.unwrap_or_else(|e| panic!("{name}: {e}"));
            newest_first.push(LogEntry::from_wire(&entry));
        }
        let mut log = ClusterLog::new();
        for entry in newest_first.iter().rev() {
            assert!(log.insert(entry.clone()), "{name}: entry refused");
        }
        assert_eq!(log.state_blob(), blob, "{name}: ring differs");
        // Merging it with an empty log gives the same ring.
        let mut merged = ClusterLog::new();
        merged.merge(&[newest_first.clone(), Vec::new()]);
        assert_eq!(merged.state_blob(), blob, "{name}: merged ring differs");
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} STATE vectors checked");
}

#[test]
fn c_log_messages_round_trip() {
    let logs = files(".LOG.bin");
    assert!(!logs.is_empty(), "no LOG vectors");
    for (name, bytes) in &logs {
        let msg = wire::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let wire::Message::Normal { payload, .. } = msg else {
            panic!("{name}: not NORMAL");
        };
        let entry = ClogEntry::decode(payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        let owned = LogEntry::from_wire(&entry);
        assert_eq!(owned.encode().as_deref(), Some(payload), "{name}");
    }
}
