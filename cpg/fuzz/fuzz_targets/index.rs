//! A DCDB STATE blob (memdb index). The size and bytes fields are forced to
//! fit the input length so the fuzzer gets past them; accepted indexes
//! re-encode exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::wire::{self, IndexView};

fuzz_target!(|data: &[u8]| {
    let _ = IndexView::decode(data);
    if data.len() < 32 {
        return;
    }
    let mut blob = data.to_vec();
    let len = blob.len() as u32;
    let size = (len - 32) / 40;
    blob[24..28].copy_from_slice(&size.to_le_bytes());
    blob[28..32].copy_from_slice(&len.to_le_bytes());
    let Ok(index) = IndexView::decode(&blob) else {
        return;
    };
    let entries: Vec<_> = index.entries().collect();
    assert_eq!(entries.len(), index.len());
    let mut out = Vec::new();
    wire::encode_index(
        index.version(),
        index.last_inode(),
        index.writer(),
        index.mtime(),
        &entries,
        &mut out,
    )
    .expect("decoded index encodes");
    assert_eq!(out, blob);
});
