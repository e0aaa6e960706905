//! A kvstore STATE blob (cluster-log ring). The size field is forced to the
//! input length so the fuzzer explores the walk, which must end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::wire::ClogState;

fuzz_target!(|data: &[u8]| {
    let _ = ClogState::decode(data);
    if data.len() <= 8 {
        return;
    }
    let mut blob = data.to_vec();
    let len = blob.len() as u32;
    blob[..4].copy_from_slice(&len.to_le_bytes());
    let Ok(state) = ClogState::decode(&blob) else {
        return;
    };
    let steps = state.entries().count();
    assert!(steps <= blob.len() / 8 + 1);
});
