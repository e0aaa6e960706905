//! A kvstore LOG payload (cluster-log entry): accepted entries that fit the
//! 4096-byte limit must survive encode → decode (with prev/next zeroed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::wire::{ClogEntry, WireError};

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = ClogEntry::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    match entry.encode(&mut out) {
        Ok(()) => {}
        Err(WireError::TooLong { .. }) => {
            assert!(entry.size() > 4096);
            return;
        }
        Err(error) => panic!("decoded entry does not encode: {error}"),
    }
    let expected = ClogEntry {
        prev: 0,
        next: 0,
        ..entry
    };
    assert_eq!(ClogEntry::decode(&out), Ok(expected));
});
