//! The file of kept own writes (`pmxcfs_cpg::kept`): whatever its bytes,
//! decoding never panics, and what decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::kept;

fuzz_target!(|data: &[u8]| {
    let Ok(writes) = kept::decode(data) else {
        return;
    };
    let bytes = kept::encode(&writes).expect("decoded writes encode");
    assert_eq!(bytes, data);
});
