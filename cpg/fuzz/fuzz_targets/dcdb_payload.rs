//! A DCDB NORMAL payload: the first two bytes are the subtype, the rest the
//! payload. Accepted payloads must survive encode → decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::wire::{self, DcdbPayload};

fuzz_target!(|data: &[u8]| {
    let Some((subtype, payload)) = data.split_first_chunk::<2>() else {
        return;
    };
    let subtype = u16::from_le_bytes(*subtype);
    let Ok((kind, decoded)) = wire::decode_dcdb(subtype, payload) else {
        return;
    };
    let mut out = Vec::new();
    match decoded {
        DcdbPayload::Fuse(fuse) => fuse.encode(&mut out).expect("decoded fuse encodes"),
        DcdbPayload::Unlock(unlock) => unlock.encode(&mut out).expect("decoded unlock encodes"),
    }
    assert_eq!(wire::decode_dcdb(kind as u16, &out), Ok((kind, decoded)));
});
