//! The guest config scanner and the JSON writer of ops 11/13 on any config
//! and any property names: no panic, values borrowed from inside the
//! config, and the JSON framed as C frames it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_ipc::guest::{properties_json, property_values};

fuzz_target!(|data: &[u8]| {
    // First byte: number of properties (0..=7); then that many
    // NUL-terminated names; the rest is the config.
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    let mut props: Vec<&[u8]> = Vec::new();
    for _ in 0..count % 8 {
        let Some(end) = rest.iter().position(|byte| *byte == 0) else {
            return;
        };
        props.push(&rest[..end]);
        rest = &rest[end + 1..];
    }
    let config = rest;
    let values = property_values(config, &props);
    assert_eq!(values.len(), props.len());
    let range = config.as_ptr_range();
    for value in values.iter().flatten() {
        let inner = value.as_ptr_range();
        assert!(range.start <= inner.start && inner.end <= range.end);
        assert!(!value.contains(&0) && !value.contains(&b'\n'));
    }
    let mut out = Vec::new();
    properties_json(&mut out, &props, [(100, &values[..])]);
    assert!(out.starts_with(b"{\n") && out.ends_with(b"\n}\n"));
});
