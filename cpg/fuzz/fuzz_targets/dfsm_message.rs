//! Any CPG payload: `decode` must not panic, and what it accepts must
//! re-encode to the same bytes (SYNC_START / UPDATE_COMPLETE drop their
//! ignored payload) and decode again to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_cpg::wire::{self, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = wire::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    message.encode(&mut out);
    match message {
        Message::SyncStart { .. } | Message::UpdateComplete { .. } => {
            assert_eq!(out[..], data[..wire::STATE_HEADER_BYTES]);
        }
        _ => assert_eq!(out, data),
    }
    assert_eq!(wire::decode(&out), Ok(message));
});
