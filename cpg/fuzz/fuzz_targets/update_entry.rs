//! A DCDB UPDATE payload (one tree entry): accepted entries must survive
//! encode → decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::wire::UpdateEntry;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = UpdateEntry::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    entry.encode(&mut out).expect("decoded entry encodes");
    assert_eq!(UpdateEntry::decode(&out), Ok(entry));
});
