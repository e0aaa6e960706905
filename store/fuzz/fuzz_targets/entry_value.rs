//! An LMDB entry value as read from a (damaged) map.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_store::EntryRef;

fuzz_target!(|data: &[u8]| {
    if let Some(entry) = EntryRef::decode(1, data) {
        assert_eq!(entry.name.len() + entry.data.len() + 32, data.len());
        let _ = entry.checksum();
        let _ = entry.index_digest();
    }
});
