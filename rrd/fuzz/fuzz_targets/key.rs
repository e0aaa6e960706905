//! Any status key and value (split at the first NUL of the input) parse
//! without a panic; a parsed update stays inside the RRD directory and its
//! update string holds no byte that could change an rrdcached command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_rrd::key::parse;

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(update) = parse(key, value) {
        assert!(
            update
                .file
                .components()
                .all(|part| matches!(part, std::path::Component::Normal(_)))
        );
        assert!(update.values.bytes().all(|b| b.is_ascii_graphic()));
        assert!(
            update
                .file
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_graphic())
        );
    }
});
