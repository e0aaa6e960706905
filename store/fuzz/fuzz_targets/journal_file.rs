//! A whole (damaged) journal file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pmxcfs_store::fuzzing::journal_file(data);
});
