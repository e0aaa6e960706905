//! Any bytes from a client decode without a panic, on read-write and
//! read-only connections, to an id and either a request or a positive
//! errno; the reply always encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmxcfs_ipc::proto::{Request, decode, decode_response, encode_response};

fuzz_target!(|data: &[u8]| {
    for read_only in [false, true] {
        let decoded = decode(data, read_only);
        let result = match &decoded.request {
            Ok(Request::GuestConfigProperty {
                property: Err(errno),
                ..
            })
            | Ok(Request::GuestConfigProperties {
                properties: Err(errno),
                ..
            }) => Err(*errno),
            Ok(_) => Ok(&b""[..]),
            Err(errno) => Err(*errno),
        };
        if let Err(errno) = result {
            assert!(
                [libc::ECHRNG, libc::EINVAL, libc::EPERM].contains(&errno),
                "unexpected errno {errno}"
            );
        }
        let mut reply = Vec::new();
        encode_response(decoded.id, result, &mut reply);
        let (header, payload) = decode_response(&reply).expect("own reply decodes");
        assert_eq!(header.id, decoded.id);
        assert!(payload.is_empty());
    }
});
