//! The daemon's byte adapter for every CPG delivery: any bytes decode to a
//! DFSM message (malformed ones classified, never a panic), and what
//! decodes to a well-formed message re-encodes to bytes that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::frame::{decode_message, encode_message};

fuzz_target!(|data: &[u8]| {
    let msg = decode_message(data);
    if let Some(bytes) = encode_message(&msg) {
        assert_eq!(decode_message(&bytes), msg);
    }
});
