//! One journal record payload (an encoded op).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pmxcfs_store::fuzzing::journal_payload(data);
});
