//! A kvstore UPDATE payload: accepted updates must survive encode → decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::wire::KvUpdate;

fuzz_target!(|data: &[u8]| {
    let Ok(update) = KvUpdate::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    update.encode(&mut out).expect("decoded update encodes");
    assert_eq!(KvUpdate::decode(&out), Ok(update));
});
