//! The messages of the "pve2" service inside libqb's IPC frames
//! (spec/ipc.md §2, §4): the request decoder, the response encoder, and the
//! request encoders that PVE::Cluster uses (for the test client and the
//! benchmarks).
//!
//! # Errors
//!
//! Errors are **positive** errno values (`libc::EINVAL`, ...) as `i32`; the
//! response header carries them negated ([`encode_response`]).
//!
//! # The decoder and the C daemon
//!
//! [`decode`] dispatches on the id and then runs each operation's checks in
//! the C daemon's order (`s1_msg_process_fn`), so a request gets the same
//! errno as from the C daemon. Two deliberate differences, both invisible to
//! clients that encode requests correctly (Perl always does):
//!
//! * **Framing.** C trusts the header's `size` field and reads (and, for ops
//!   6, 8 and 11, writes) beyond the received bytes. Here a request whose
//!   `size` differs from the received length, or that is shorter than its
//!   16-byte header, is a framing error: **EINVAL**. It is reported at the
//!   first check C makes on the request's bytes: after the unknown-id check
//!   (ECHRNG) and after the read-only checks that C makes before looking at
//!   the size (EPERM of ops 4 and 7), and before everything else. Missing
//!   header bytes read as zero, so a 1-byte message with byte 1 gets EINVAL
//!   and one with byte 0 gets ECHRNG.
//! * **Ops 11 and 13 need their fixed part.** C reads `vmid` (and op 13's
//!   `num_props`) before it checks the size. Here a request too short to hold
//!   them (op 11: < 20 bytes, op 13: < 21 bytes) is EINVAL at once, as
//!   spec/ipc.md §4.8 recommends. C gives EINVAL for these too, unless the
//!   stale ring-buffer bytes it reads happen to name an unknown guest.
//!
//! Where C forces a byte to NUL before reading a string (the last byte of
//! ops 6, 8 and 11; byte 255 of the name fields of ops 4 and 5), the decoder
//! reads the string only up to that byte, so the result is the same and the
//! input is never changed.
//!
//! For ops 11 and 13 the decoder checks the vmid range, but the vmlist check
//! (vmid ≥ 100 unknown → ENOENT) needs the daemon's state and comes before
//! the remaining checks in C. Those later errors are therefore carried in
//! [`Request::GuestConfigProperty::property`] and
//! [`Request::GuestConfigProperties::properties`]: the handler checks the
//! vmlist first, then returns them.

use bytemuck::{Pod, Zeroable};
use libc::{ECHRNG, EINVAL, EPERM};
use smallvec::SmallVec;

/// The libqb service name of the local IPC server.
pub const SERVICE_NAME: &str = "pve2";

/// Size of [`RequestHeader`]; request payloads start here.
pub const REQUEST_HEADER_BYTES: usize = 16;
/// Size of [`ResponseHeader`]; response payloads start here.
pub const RESPONSE_HEADER_BYTES: usize = 24;
/// The fixed name fields of SET_STATUS and GET_STATUS.
pub const NAME_FIELD_BYTES: usize = 256;

/// libqb's `struct qb_ipc_request_header`: every field 8-byte aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestHeader {
    /// The operation ([`Op`]).
    pub id: i32,
    _pad0: u32,
    /// Total request length, this header included.
    pub size: i32,
    _pad1: u32,
}

/// libqb's `struct qb_ipc_response_header`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ResponseHeader {
    /// The request's id, echoed.
    pub id: i32,
    _pad0: u32,
    /// Total response length, this header included.
    pub size: i32,
    _pad1: u32,
    /// 0, or a negative errno (then the payload is empty).
    pub error: i32,
    _pad2: u32,
}

const _: () = assert!(size_of::<RequestHeader>() == REQUEST_HEADER_BYTES);
const _: () = assert!(size_of::<ResponseHeader>() == RESPONSE_HEADER_BYTES);

impl RequestHeader {
    pub fn new(id: i32, size: i32) -> Self {
        Self {
            id,
            size,
            ..Zeroable::zeroed()
        }
    }
}

impl ResponseHeader {
    pub fn new(id: i32, size: i32, error: i32) -> Self {
        Self {
            id,
            size,
            error,
            ..Zeroable::zeroed()
        }
    }
}

/// The operations (`cfs-ipc-ops.h`). Id 9 is unused.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    GetFsVersion = 1,
    GetClusterInfo = 2,
    GetGuestList = 3,
    SetStatus = 4,
    GetStatus = 5,
    GetConfig = 6,
    LogClusterMsg = 7,
    GetClusterLog = 8,
    GetRrdDump = 10,
    GetGuestConfigProperty = 11,
    VerifyToken = 12,
    GetGuestConfigProperties = 13,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::GetFsVersion,
        Op::GetClusterInfo,
        Op::GetGuestList,
        Op::SetStatus,
        Op::GetStatus,
        Op::GetConfig,
        Op::LogClusterMsg,
        Op::GetClusterLog,
        Op::GetRrdDump,
        Op::GetGuestConfigProperty,
        Op::VerifyToken,
        Op::GetGuestConfigProperties,
    ];

    /// The operation with this id; `None` (→ ECHRNG) for 0, 9, ≥ 14 and
    /// negative ids.
    pub fn from_id(id: i32) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.id() == id)
    }

    pub fn id(self) -> i32 {
        self as i32
    }
}

/// A decoded request. Strings are borrowed from the message, without their
/// NUL and anything after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    FsVersion,
    ClusterInfo,
    GuestList,
    RrdDump,
    SetStatus {
        /// The key, at most 255 bytes.
        name: &'a [u8],
        /// Everything after the name field, as sent (Perl's values end with
        /// a NUL); empty = remove the key.
        data: &'a [u8],
    },
    GetStatus {
        name: &'a [u8],
        /// Empty = the local node.
        node: &'a [u8],
    },
    GetConfig {
        path: &'a [u8],
    },
    LogClusterMsg {
        /// ≥ 8 produces no entry (status.md §5.1); the decoder passes it on.
        priority: u8,
        ident: &'a [u8],
        tag: &'a [u8],
        message: &'a [u8],
    },
    GetClusterLog {
        /// 0 on the wire is already replaced by 50.
        max_entries: u32,
        /// Empty = no filter.
        user: &'a [u8],
    },
    GuestConfigProperty {
        /// 0 = all guests, else ≥ 100 (not yet checked against the vmlist).
        vmid: u32,
        /// The property, or the errno to return once the vmlist check
        /// passed. May be empty (C answers `{}` for it).
        property: Result<&'a [u8], i32>,
    },
    VerifyToken {
        /// Non-empty, without NUL or newline ([`crate::token::parse`]).
        token: &'a [u8],
    },
    GuestConfigProperties {
        /// 0 = all guests, else ≥ 100 (not yet checked against the vmlist).
        vmid: u32,
        /// 1 to 255 names, each non-empty and starting with `a`–`z`, or the
        /// errno to return once the vmlist check passed.
        properties: Result<SmallVec<[&'a [u8]; 8]>, i32>,
    },
}

/// What [`decode`] makes of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The header's id (missing bytes read as zero), to echo in the reply.
    pub id: i32,
    /// The request, or the positive errno to answer with.
    pub request: Result<Request<'a>, i32>,
}

/// Decodes one request as received from libqb. Never panics and never reads
/// beyond `msg`; see the module documentation for the order of checks.
pub fn decode(msg: &[u8], read_only: bool) -> Decoded<'_> {
    let header = read_header(msg);
    let request = match Op::from_id(header.id) {
        None => Err(ECHRNG),
        Some(op) => {
            let framed = msg.len() >= REQUEST_HEADER_BYTES
                && usize::try_from(header.size).is_ok_and(|size| size == msg.len());
            decode_op(op, msg, framed, read_only)
        }
    };
    Decoded {
        id: header.id,
        request,
    }
}

/// The header, with missing bytes read as zero.
fn read_header(msg: &[u8]) -> RequestHeader {
    let mut bytes = [0u8; REQUEST_HEADER_BYTES];
    let present = msg.len().min(REQUEST_HEADER_BYTES);
    bytes[..present].copy_from_slice(&msg[..present]);
    bytemuck::pod_read_unaligned(&bytes)
}

/// The checks of one operation, in C's order. `msg.len()` is the request
/// size once `framed` is true.
fn decode_op(op: Op, msg: &[u8], framed: bool, read_only: bool) -> Result<Request<'_>, i32> {
    // C checks read-only before it looks at the size for these two.
    if read_only && matches!(op, Op::SetStatus | Op::LogClusterMsg) {
        return Err(EPERM);
    }
    if !framed {
        return Err(EINVAL);
    }
    let payload = &msg[REQUEST_HEADER_BYTES..];
    match op {
        Op::GetFsVersion | Op::GetClusterInfo | Op::GetGuestList | Op::GetRrdDump => {
            if !payload.is_empty() {
                return Err(EINVAL);
            }
            Ok(match op {
                Op::GetFsVersion => Request::FsVersion,
                Op::GetClusterInfo => Request::ClusterInfo,
                Op::GetGuestList => Request::GuestList,
                _ => Request::RrdDump,
            })
        }
        Op::SetStatus => {
            let (name, data) = payload.split_at_checked(NAME_FIELD_BYTES).ok_or(EINVAL)?;
            Ok(Request::SetStatus {
                name: name_field(name),
                data,
            })
        }
        Op::GetStatus => {
            if payload.len() < 2 * NAME_FIELD_BYTES {
                return Err(EINVAL);
            }
            let (name, rest) = payload.split_at(NAME_FIELD_BYTES);
            Ok(Request::GetStatus {
                name: name_field(name),
                node: name_field(&rest[..NAME_FIELD_BYTES]),
            })
        }
        Op::GetConfig => {
            let path = forced_nul_string(payload).ok_or(EINVAL)?;
            if read_only && pmxcfs_store::path::is_private(path) {
                return Err(EPERM);
            }
            Ok(Request::GetConfig { path })
        }
        Op::LogClusterMsg => decode_log_message(payload),
        Op::GetClusterLog => {
            const FIXED_BYTES: usize = 16;
            if payload.len() <= FIXED_BYTES {
                return Err(EINVAL);
            }
            let max_entries = read_u32(payload, 0);
            Ok(Request::GetClusterLog {
                max_entries: if max_entries == 0 { 50 } else { max_entries },
                user: forced_nul_string(&payload[FIXED_BYTES..]).unwrap_or_default(),
            })
        }
        Op::GetGuestConfigProperty => {
            const FIXED_BYTES: usize = 4;
            if payload.len() < FIXED_BYTES {
                return Err(EINVAL);
            }
            let vmid = guest_vmid(payload)?;
            Ok(Request::GuestConfigProperty {
                vmid,
                property: forced_nul_string(&payload[FIXED_BYTES..]).ok_or(EINVAL),
            })
        }
        Op::VerifyToken => Ok(Request::VerifyToken {
            token: crate::token::parse(payload)?,
        }),
        Op::GetGuestConfigProperties => {
            const FIXED_BYTES: usize = 5;
            if payload.len() < FIXED_BYTES {
                return Err(EINVAL);
            }
            let vmid = guest_vmid(payload)?;
            Ok(Request::GuestConfigProperties {
                vmid,
                properties: property_names(payload[4], &payload[FIXED_BYTES..]),
            })
        }
    }
}

/// A fixed name field whose last byte C forces to NUL.
fn name_field(field: &[u8]) -> &[u8] {
    c_string(&field[..field.len().saturating_sub(1)])
}

/// A string that runs to the end of the request, whose last byte C forces to
/// NUL; `None` if there is not even that byte.
fn forced_nul_string(bytes: &[u8]) -> Option<&[u8]> {
    let (_, string) = bytes.split_last()?;
    Some(c_string(string))
}

/// The bytes up to the first NUL (all of them if there is none).
fn c_string(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|byte| *byte == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

/// A native-endian u32 at `offset`; the caller checked the length.
fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_ne_bytes(word)
}

/// The vmid of ops 11 and 13: 0 (all guests) or ≥ 100.
fn guest_vmid(payload: &[u8]) -> Result<u32, i32> {
    match read_u32(payload, 0) {
        1..=99 => Err(EINVAL),
        vmid => Ok(vmid),
    }
}

/// LOG_CLUSTER_MSG after the read-only check (spec/ipc.md §4.5).
fn decode_log_message(payload: &[u8]) -> Result<Request<'_>, i32> {
    const FIXED_BYTES: usize = 3;
    // Missing fixed bytes read as zero; the length check below rejects such
    // a request anyway (C's message length is then < 1 whatever it reads).
    let fixed = |index: usize| payload.get(index).copied().unwrap_or(0);
    let (priority, ident_len, tag_len) = (fixed(0), usize::from(fixed(1)), usize::from(fixed(2)));
    let strings_len = ident_len + tag_len;
    // C: size − 19 − ident_len − tag_len ≥ 1.
    if payload.len() < FIXED_BYTES + strings_len + 1 {
        return Err(EINVAL);
    }
    // C tests `data[ident_len − 1]` and `data[ident_len + tag_len − 1]`
    // where `data` is at payload offset 3: with a zero length these are the
    // tag_len byte (offset 2), so ident_len = tag_len = 0 passes.
    let ident_end = FIXED_BYTES + ident_len - 1;
    let tag_end = FIXED_BYTES + strings_len - 1;
    // C's third test reads one byte past the request; the last byte is what
    // it means and what Perl always sends as NUL.
    let last = payload.len() - 1;
    if payload[ident_end] != 0 || payload[tag_end] != 0 || payload[last] != 0 {
        return Err(EINVAL);
    }
    Ok(Request::LogClusterMsg {
        priority,
        ident: c_string(&payload[FIXED_BYTES..]),
        tag: c_string(&payload[FIXED_BYTES + ident_len..]),
        message: c_string(&payload[FIXED_BYTES + strings_len..]),
    })
}

/// Op 13's property list after the vmlist check, in C's order (spec/ipc.md
/// §4.8); every failure is EINVAL.
fn property_names(count: u8, mut remaining: &[u8]) -> Result<SmallVec<[&[u8]; 8]>, i32> {
    if count == 0 || remaining.len() <= 1 {
        return Err(EINVAL);
    }
    let mut names = SmallVec::new();
    for _ in 0..count {
        let len = remaining.iter().position(|byte| *byte == 0).ok_or(EINVAL)?;
        let (name, rest) = remaining.split_at(len);
        match name.first() {
            Some(first) if first.is_ascii_lowercase() => {}
            _ => return Err(EINVAL),
        }
        names.push(name);
        remaining = &rest[1..];
    }
    if !remaining.is_empty() {
        return Err(EINVAL);
    }
    Ok(names)
}

/// Appends one response to `out`: the header, then the payload on success
/// (possibly empty); on `Err(errno)` the error field is `-errno` and there
/// is no payload.
///
/// # Panics
///
/// If `errno` is not positive or the payload exceeds `i32::MAX − 24` bytes:
/// the server bounds its answers far below (programmer error).
pub fn encode_response(id: i32, result: Result<&[u8], i32>, out: &mut Vec<u8>) {
    let (payload, error) = match result {
        Ok(payload) => (payload, 0),
        Err(errno) => {
            assert!(errno > 0, "errno must be positive, got {errno}");
            (&[][..], -errno)
        }
    };
    let size = i32::try_from(RESPONSE_HEADER_BYTES + payload.len())
        .expect("response payload larger than i32::MAX");
    out.reserve(RESPONSE_HEADER_BYTES + payload.len());
    out.extend_from_slice(bytemuck::bytes_of(&ResponseHeader::new(id, size, error)));
    out.extend_from_slice(payload);
}

/// Splits a response into its header and payload. `None` if it is shorter
/// than the header or its `size` field differs from its length.
pub fn decode_response(bytes: &[u8]) -> Option<(ResponseHeader, &[u8])> {
    let (header, payload) = bytes.split_at_checked(RESPONSE_HEADER_BYTES)?;
    let header: ResponseHeader = bytemuck::pod_read_unaligned(header);
    usize::try_from(header.size)
        .is_ok_and(|size| size == bytes.len())
        .then_some((header, payload))
}

/// A whole request as PVE::IPCC sends it: header (`size` = 16 + payload
/// length) and payload.
///
/// # Panics
///
/// If the payload exceeds `i32::MAX − 16` bytes.
pub fn encode_request(id: i32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_HEADER_BYTES + payload.len());
    out.extend_from_slice(bytemuck::bytes_of(&request_header(id, payload.len())));
    out.extend_from_slice(payload);
    out
}

/// The header of a request with `payload_len` bytes of payload.
///
/// # Panics
///
/// If the payload exceeds `i32::MAX − 16` bytes.
pub fn request_header(id: i32, payload_len: usize) -> RequestHeader {
    let size = i32::try_from(REQUEST_HEADER_BYTES + payload_len)
        .expect("request payload larger than i32::MAX");
    RequestHeader::new(id, size)
}

/// Request payloads exactly as PVE::Cluster packs them (spec/ipc.md §4).
pub mod payload {
    use super::NAME_FIELD_BYTES;

    /// Perl `pack "Z[256]"`: at most 255 bytes, NUL-padded to 256.
    fn push_name_field(out: &mut Vec<u8>, name: &[u8]) {
        let kept = &name[..name.len().min(NAME_FIELD_BYTES - 1)];
        out.extend_from_slice(kept);
        out.resize(out.len() + NAME_FIELD_BYTES - kept.len(), 0);
    }

    /// Perl `pack "Z*"`: the string and one NUL.
    fn push_c_string(out: &mut Vec<u8>, string: &[u8]) {
        out.extend_from_slice(string);
        out.push(0);
    }

    /// SET_STATUS (4): `pack "Z[256]Z*", $name, $raw`, or `pack "Z[256]"`
    /// to remove the key (`value` = `None`).
    pub fn set_status(name: &[u8], value: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(NAME_FIELD_BYTES + value.map_or(0, |v| v.len() + 1));
        push_name_field(&mut out, name);
        if let Some(value) = value {
            push_c_string(&mut out, value);
        }
        out
    }

    /// GET_STATUS (5): `pack "Z[256]Z[256]", $name, $nodename`; an empty
    /// node is the local one.
    pub fn get_status(name: &[u8], node: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 * NAME_FIELD_BYTES);
        push_name_field(&mut out, name);
        push_name_field(&mut out, node);
        out
    }

    /// GET_CONFIG (6): `pack "Z*", $path`.
    pub fn get_config(path: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(path.len() + 1);
        push_c_string(&mut out, path);
        out
    }

    /// LOG_CLUSTER_MSG (7): `pack "CCCZ*Z*Z*", $priority,
    /// length($ident) + 1, length($tag) + 1, $ident, $tag, $msg`. Like
    /// Perl's `C`, a length of 256 or more wraps modulo 256.
    pub fn log_cluster_msg(priority: u8, ident: &[u8], tag: &[u8], message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + ident.len() + tag.len() + message.len() + 3);
        let wrapped_len = |string: &[u8]| (string.len().wrapping_add(1) & 0xff) as u8;
        out.extend_from_slice(&[priority, wrapped_len(ident), wrapped_len(tag)]);
        push_c_string(&mut out, ident);
        push_c_string(&mut out, tag);
        push_c_string(&mut out, message);
        out
    }

    /// GET_CLUSTER_LOG (8): `pack "VVVVZ*", $max, 0, 0, 0, $user`; 0 means
    /// 50 entries, an empty user no filter.
    pub fn get_cluster_log(max_entries: u32, user: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + user.len() + 1);
        out.extend_from_slice(&max_entries.to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        push_c_string(&mut out, user);
        out
    }

    /// GET_GUEST_CONFIG_PROPERTY (11): `pack "VZ*", $vmid, $property`; vmid
    /// 0 = all guests.
    pub fn guest_config_property(vmid: u32, property: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + property.len() + 1);
        out.extend_from_slice(&vmid.to_le_bytes());
        push_c_string(&mut out, property);
        out
    }

    /// VERIFY_TOKEN (12): `pack "Z*", "$userid $token"`.
    pub fn verify_token(full_token: &[u8]) -> Vec<u8> {
        get_config(full_token)
    }

    /// GET_GUEST_CONFIG_PROPERTIES (13): `pack "VC", $vmid, $count` and
    /// `pack "Z*"` per property. Perl refuses more than 255 properties;
    /// here the count byte wraps like Perl's `C` would (for tests of it).
    pub fn guest_config_properties(vmid: u32, properties: &[&[u8]]) -> Vec<u8> {
        let names_len: usize = properties.iter().map(|name| name.len() + 1).sum();
        let mut out = Vec::with_capacity(5 + names_len);
        out.extend_from_slice(&vmid.to_le_bytes());
        out.push((properties.len() & 0xff) as u8);
        for name in properties {
            push_c_string(&mut out, name);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{ECHRNG, EINVAL, EPERM};
    use proptest::prelude::*;

    fn request(op: Op, payload: &[u8]) -> Vec<u8> {
        encode_request(op.id(), payload)
    }

    /// The decoded request of a read-write connection.
    fn rw(msg: &[u8]) -> Result<Request<'_>, i32> {
        decode(msg, false).request
    }

    fn ro(msg: &[u8]) -> Result<Request<'_>, i32> {
        decode(msg, true).request
    }

    /// A request whose header `size` field says `size`, whatever its length.
    fn with_size(op: i32, size: i32, payload: &[u8]) -> Vec<u8> {
        let mut msg = bytemuck::bytes_of(&RequestHeader::new(op, size)).to_vec();
        msg.extend_from_slice(payload);
        msg
    }

    // §2: headers.

    #[test]
    fn header_layouts_match_libqb() {
        let request = RequestHeader::new(0x0102_0304, 0x0506_0708);
        assert_eq!(
            bytemuck::bytes_of(&request),
            [4, 3, 2, 1, 0, 0, 0, 0, 8, 7, 6, 5, 0, 0, 0, 0]
        );
        let mut out = Vec::new();
        encode_response(7, Err(libc::ENOENT), &mut out);
        assert_eq!(
            out,
            [
                7, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 254, 255, 255, 255, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn response_success_carries_the_payload() {
        let mut out = vec![9];
        encode_response(6, Ok(b"abc"), &mut out);
        assert_eq!(out.len(), 1 + 27, "appends");
        let (header, payload) = decode_response(&out[1..]).expect("well formed");
        assert_eq!((header.id, header.size, header.error), (6, 27, 0));
        assert_eq!(payload, b"abc");
    }

    #[test]
    fn response_success_may_be_empty_and_error_has_no_payload() {
        let mut out = Vec::new();
        encode_response(4, Ok(b""), &mut out);
        assert_eq!(
            decode_response(&out).map(|(h, p)| (h.size, h.error, p.len())),
            Some((24, 0, 0))
        );
        out.clear();
        encode_response(44, Err(ECHRNG), &mut out);
        assert_eq!(
            decode_response(&out).map(|(h, p)| (h.error, p.len())),
            Some((-ECHRNG, 0))
        );
    }

    #[test]
    fn decode_response_checks_size() {
        let mut out = Vec::new();
        encode_response(1, Ok(b"x"), &mut out);
        assert!(decode_response(&out[..24]).is_none());
        assert!(decode_response(&out[..3]).is_none());
        out.push(0);
        assert!(decode_response(&out).is_none());
    }

    #[test]
    fn op_ids_are_the_c_numbers() {
        let ids: Vec<i32> = Op::ALL.iter().map(|op| op.id()).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13]);
        for op in Op::ALL {
            assert_eq!(Op::from_id(op.id()), Some(op));
        }
    }

    // §2: unknown ids and framing.

    #[test]
    fn unknown_ids_are_echrng() {
        for id in [0, 9, 14, 15, 100, i32::MAX, -1, -2, -3, i32::MIN] {
            let msg = encode_request(id, b"");
            assert_eq!(
                decode(&msg, false),
                Decoded {
                    id,
                    request: Err(ECHRNG)
                },
                "id {id}"
            );
            // Even with a broken frame, the id is checked first.
            assert_eq!(
                decode(&with_size(id, 99, b"x"), true).request,
                Err(ECHRNG),
                "id {id}"
            );
        }
    }

    #[test]
    fn short_messages_read_missing_header_bytes_as_zero() {
        assert_eq!(
            decode(b"", false),
            Decoded {
                id: 0,
                request: Err(ECHRNG)
            }
        );
        assert_eq!(decode(&[0], false).request, Err(ECHRNG));
        assert_eq!(decode(&[14], false).request, Err(ECHRNG));
        for len in [1, 8, 15] {
            let msg = &request(Op::GetFsVersion, b"")[..len];
            assert_eq!(
                decode(msg, false),
                Decoded {
                    id: 1,
                    request: Err(EINVAL)
                },
                "{len} bytes"
            );
        }
        // A 12-byte message whose size field says 12 still lacks its header.
        let mut msg = with_size(6, 12, b"");
        msg.truncate(12);
        assert_eq!(rw(&msg), Err(EINVAL));
    }

    #[test]
    fn size_field_must_equal_the_received_length() {
        let path = b"storage.cfg\0";
        for size in [0, -1, 8, 15, 16, 20, 27, 29, 100, i32::MAX, i32::MIN] {
            assert_eq!(rw(&with_size(6, size, path)), Err(EINVAL), "size {size}");
        }
        assert_eq!(
            rw(&with_size(6, 28, path)),
            Ok(Request::GetConfig {
                path: b"storage.cfg"
            })
        );
        for size in [0, 8, 15, 17, 24, i32::MIN] {
            assert_eq!(rw(&with_size(1, size, b"")), Err(EINVAL), "size {size}");
            assert_eq!(rw(&with_size(8, size, b"")), Err(EINVAL), "size {size}");
        }
    }

    // §3: read-only connections.

    #[test]
    fn read_only_set_status_and_log_are_eperm_before_size_checks() {
        let set = request(Op::SetStatus, &payload::set_status(b"kv/x", Some(b"1")));
        assert_eq!(ro(&set), Err(EPERM));
        assert_eq!(ro(&request(Op::SetStatus, b"")), Err(EPERM));
        assert_eq!(ro(&with_size(4, 3, b"")), Err(EPERM));
        let log = request(
            Op::LogClusterMsg,
            &payload::log_cluster_msg(6, b"root@pam", b"t", b"m"),
        );
        assert_eq!(ro(&log), Err(EPERM));
        assert_eq!(ro(&request(Op::LogClusterMsg, b"")), Err(EPERM));
        assert_eq!(ro(&[7]), Err(EPERM));
    }

    #[test]
    fn read_only_get_config_of_private_path_is_eperm() {
        for path in [
            &b"priv/authkey.key"[..],
            b"/priv/token.cfg",
            b"priv",
            b"nodes/pve1/priv/x",
            b"nodes/pve1/priv",
        ] {
            let msg = request(Op::GetConfig, &payload::get_config(path));
            assert_eq!(ro(&msg), Err(EPERM), "{}", String::from_utf8_lossy(path));
            assert_eq!(rw(&msg), Ok(Request::GetConfig { path }));
        }
        for path in [
            &b"privx"[..],
            b"storage.cfg",
            b"nodes/priv",
            b"local/priv/x",
        ] {
            let msg = request(Op::GetConfig, &payload::get_config(path));
            assert_eq!(ro(&msg), Ok(Request::GetConfig { path }));
        }
        // The private check sees the path after the forced NUL.
        let msg = request(Op::GetConfig, b"privx");
        assert_eq!(ro(&msg), Err(EPERM));
        // A broken frame is EINVAL first.
        assert_eq!(ro(&with_size(6, 99, b"priv\0")), Err(EINVAL));
    }

    #[test]
    fn read_only_may_use_every_other_op() {
        let cases = [
            request(Op::GetFsVersion, b""),
            request(Op::GetClusterInfo, b""),
            request(Op::GetGuestList, b""),
            request(Op::GetRrdDump, b""),
            request(Op::GetStatus, &payload::get_status(b"kv/x", b"")),
            request(Op::GetClusterLog, &payload::get_cluster_log(0, b"")),
            request(
                Op::GetGuestConfigProperty,
                &payload::guest_config_property(0, b"lock"),
            ),
            request(Op::VerifyToken, &payload::verify_token(b"root@pam!t abc")),
            request(
                Op::GetGuestConfigProperties,
                &payload::guest_config_properties(0, &[b"lock"]),
            ),
        ];
        for msg in &cases {
            assert_eq!(ro(msg), rw(msg));
            assert!(ro(msg).is_ok(), "{msg:?}");
        }
    }

    // §4.1

    #[test]
    fn header_only_ops_need_size_16() {
        let ops = [
            Op::GetFsVersion,
            Op::GetClusterInfo,
            Op::GetGuestList,
            Op::GetRrdDump,
        ];
        for op in ops {
            let msg = request(op, b"");
            let expected = match op {
                Op::GetFsVersion => Request::FsVersion,
                Op::GetClusterInfo => Request::ClusterInfo,
                Op::GetGuestList => Request::GuestList,
                _ => Request::RrdDump,
            };
            assert_eq!(rw(&msg), Ok(expected));
            assert_eq!(rw(&request(op, b"\0")), Err(EINVAL));
            assert_eq!(rw(&request(op, &[0; 100])), Err(EINVAL));
        }
    }

    // §4.2

    #[test]
    fn set_status_value_and_removal() {
        let msg = request(Op::SetStatus, &payload::set_status(b"kv/ceph", Some(b"{}")));
        assert_eq!(
            rw(&msg),
            Ok(Request::SetStatus {
                name: b"kv/ceph",
                data: b"{}\0"
            })
        );
        let msg = request(Op::SetStatus, &payload::set_status(b"kv/ceph", None));
        assert_eq!(msg.len(), 272);
        assert_eq!(
            rw(&msg),
            Ok(Request::SetStatus {
                name: b"kv/ceph",
                data: b""
            })
        );
    }

    #[test]
    fn set_status_shorter_than_the_name_field_is_einval() {
        assert_eq!(rw(&request(Op::SetStatus, &[0; 255])), Err(EINVAL));
        assert_eq!(rw(&request(Op::SetStatus, b"")), Err(EINVAL));
    }

    #[test]
    fn set_status_name_byte_255_is_forced_to_nul() {
        let mut field = [b'k'; 256];
        let msg = request(Op::SetStatus, &field);
        assert_eq!(
            rw(&msg),
            Ok(Request::SetStatus {
                name: &field[..255],
                data: b""
            })
        );
        // Garbage after the NUL is ignored.
        field[3] = 0;
        let msg = request(Op::SetStatus, &field);
        assert_eq!(
            rw(&msg),
            Ok(Request::SetStatus {
                name: b"kkk",
                data: b""
            })
        );
    }

    // §4.3

    #[test]
    fn get_status_fields_and_size() {
        let payload = payload::get_status(b"kv/x", b"node1");
        assert_eq!(payload.len(), 512);
        assert_eq!(
            rw(&request(Op::GetStatus, &payload)),
            Ok(Request::GetStatus {
                name: b"kv/x",
                node: b"node1"
            })
        );
        assert_eq!(rw(&request(Op::GetStatus, &payload[..511])), Err(EINVAL));
        assert_eq!(rw(&request(Op::GetStatus, b"")), Err(EINVAL));
        // Extra bytes are ignored.
        let mut longer = payload.clone();
        longer.extend_from_slice(b"extra");
        assert_eq!(
            rw(&request(Op::GetStatus, &longer)),
            Ok(Request::GetStatus {
                name: b"kv/x",
                node: b"node1"
            })
        );
    }

    #[test]
    fn get_status_last_byte_of_both_fields_is_forced_to_nul() {
        let payload = [b'n'; 512];
        assert_eq!(
            rw(&request(Op::GetStatus, &payload)),
            Ok(Request::GetStatus {
                name: &payload[..255],
                node: &payload[..255]
            })
        );
    }

    // §4.4

    #[test]
    fn get_config_path() {
        let msg = request(
            Op::GetConfig,
            &payload::get_config(b"/nodes/a/qemu-server/100.conf"),
        );
        assert_eq!(
            rw(&msg),
            Ok(Request::GetConfig {
                path: b"/nodes/a/qemu-server/100.conf"
            })
        );
        assert_eq!(rw(&request(Op::GetConfig, b"")), Err(EINVAL));
        assert_eq!(
            rw(&request(Op::GetConfig, b"\0")),
            Ok(Request::GetConfig { path: b"" })
        );
        // The last byte is forced to NUL, whatever it was.
        assert_eq!(
            rw(&request(Op::GetConfig, b"abc")),
            Ok(Request::GetConfig { path: b"ab" })
        );
        assert_eq!(
            rw(&request(Op::GetConfig, b"a\0bc\0")),
            Ok(Request::GetConfig { path: b"a" })
        );
    }

    // §4.5

    fn log(ident_len: u8, tag_len: u8, strings: &[u8]) -> Vec<u8> {
        let mut payload = vec![5, ident_len, tag_len];
        payload.extend_from_slice(strings);
        request(Op::LogClusterMsg, &payload)
    }

    #[test]
    fn log_message_as_perl_sends_it() {
        let msg = request(
            Op::LogClusterMsg,
            &payload::log_cluster_msg(6, b"root@pam", b"pvedaemon", b"hello"),
        );
        assert_eq!(
            rw(&msg),
            Ok(Request::LogClusterMsg {
                priority: 6,
                ident: b"root@pam",
                tag: b"pvedaemon",
                message: b"hello"
            })
        );
        // Priority 8 and more pass the decoder (the log drops them).
        let msg = request(
            Op::LogClusterMsg,
            &payload::log_cluster_msg(200, b"u", b"t", b"m"),
        );
        assert!(matches!(
            rw(&msg),
            Ok(Request::LogClusterMsg { priority: 200, .. })
        ));
    }

    #[test]
    fn log_message_needs_at_least_one_message_byte() {
        // ident "u\0", tag "t\0", no message byte.
        assert_eq!(rw(&log(2, 2, b"u\0t\0")), Err(EINVAL));
        assert_eq!(
            rw(&log(2, 2, b"u\0t\0\0")),
            Ok(Request::LogClusterMsg {
                priority: 5,
                ident: b"u",
                tag: b"t",
                message: b""
            })
        );
        // Lengths longer than the request.
        assert_eq!(rw(&log(200, 2, b"u\0t\0m\0")), Err(EINVAL));
        // Shorter than the fixed part (missing bytes read as zero).
        for len in 16..20 {
            let msg = &log(0, 0, b"\0")[..len];
            let mut msg = msg.to_vec();
            msg[8] = len as u8;
            assert_eq!(rw(&msg), Err(EINVAL), "{len} bytes");
        }
    }

    #[test]
    fn log_message_strings_must_be_nul_terminated() {
        // ident end not NUL.
        assert_eq!(rw(&log(2, 2, b"ux\0t\0m\0")), Err(EINVAL));
        assert_eq!(rw(&log(2, 2, b"uxt\0m\0")), Err(EINVAL));
        // tag end not NUL.
        assert_eq!(rw(&log(2, 2, b"u\0tm\0")), Err(EINVAL));
        // last byte not NUL (C would test the byte after the request).
        assert_eq!(rw(&log(2, 2, b"u\0t\0m")), Err(EINVAL));
        // Embedded NULs end the strings early.
        assert_eq!(
            rw(&log(4, 2, b"u\0v\0t\0m\0n\0")),
            Ok(Request::LogClusterMsg {
                priority: 5,
                ident: b"u",
                tag: b"t",
                message: b"m"
            })
        );
    }

    #[test]
    fn log_message_zero_lengths_as_observed_live() {
        // Both 0: the tested byte is tag_len (0) itself; user, tag and
        // message are all the message.
        assert_eq!(
            rw(&log(0, 0, b"msg\0")),
            Ok(Request::LogClusterMsg {
                priority: 5,
                ident: b"msg",
                tag: b"msg",
                message: b"msg"
            })
        );
        // ident_len 0, tag_len > 0: the tested byte is tag_len: not NUL.
        assert_eq!(rw(&log(0, 2, b"t\0msg\0")), Err(EINVAL));
        // tag_len 0: the tag is the message.
        assert_eq!(
            rw(&log(2, 0, b"u\0msg\0")),
            Ok(Request::LogClusterMsg {
                priority: 5,
                ident: b"u",
                tag: b"msg",
                message: b"msg"
            })
        );
    }

    #[test]
    fn log_message_perl_length_wraps() {
        let ident = vec![b'i'; 255];
        let payload = payload::log_cluster_msg(6, &ident, b"t", b"m");
        assert_eq!(payload[1], 0, "256 wraps to 0 like Perl's pack C");
        // The server then sees ident_len 0 with tag_len 2: EINVAL.
        assert_eq!(rw(&request(Op::LogClusterMsg, &payload)), Err(EINVAL));
    }

    // §4.6

    #[test]
    fn get_cluster_log_fields() {
        let msg = request(Op::GetClusterLog, &payload::get_cluster_log(0, b""));
        assert_eq!(msg.len(), 33);
        assert_eq!(
            rw(&msg),
            Ok(Request::GetClusterLog {
                max_entries: 50,
                user: b""
            })
        );
        let msg = request(Op::GetClusterLog, &payload::get_cluster_log(7, b"root@pam"));
        assert_eq!(
            rw(&msg),
            Ok(Request::GetClusterLog {
                max_entries: 7,
                user: b"root@pam"
            })
        );
        let mut payload = payload::get_cluster_log(u32::MAX, b"ab");
        payload.pop();
        assert_eq!(
            rw(&request(Op::GetClusterLog, &payload)),
            Ok(Request::GetClusterLog {
                max_entries: u32::MAX,
                user: b"a"
            })
        );
    }

    #[test]
    fn get_cluster_log_needs_the_user_nul() {
        assert_eq!(rw(&request(Op::GetClusterLog, &[0; 16])), Err(EINVAL));
        assert_eq!(rw(&request(Op::GetClusterLog, &[0; 3])), Err(EINVAL));
        assert_eq!(rw(&request(Op::GetClusterLog, b"")), Err(EINVAL));
    }

    // §4.7

    fn property(msg: &[u8]) -> Result<(u32, Result<&[u8], i32>), i32> {
        match rw(msg)? {
            Request::GuestConfigProperty { vmid, property } => Ok((vmid, property)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn guest_config_property_vmid_range() {
        for vmid in [1, 50, 99] {
            let msg = request(
                Op::GetGuestConfigProperty,
                &payload::guest_config_property(vmid, b"lock"),
            );
            assert_eq!(property(&msg), Err(EINVAL), "vmid {vmid}");
            // The range check comes before the size check.
            let msg = request(Op::GetGuestConfigProperty, &vmid.to_ne_bytes());
            assert_eq!(property(&msg), Err(EINVAL), "vmid {vmid}");
        }
        for vmid in [0, 100, 999_999_999, u32::MAX] {
            let msg = request(
                Op::GetGuestConfigProperty,
                &payload::guest_config_property(vmid, b"lock"),
            );
            assert_eq!(property(&msg), Ok((vmid, Ok(&b"lock"[..]))), "vmid {vmid}");
        }
    }

    #[test]
    fn guest_config_property_size_error_waits_for_the_vmlist_check() {
        let msg = request(Op::GetGuestConfigProperty, &100u32.to_ne_bytes());
        assert_eq!(property(&msg), Ok((100, Err(EINVAL))));
        let msg = request(Op::GetGuestConfigProperty, &0u32.to_ne_bytes());
        assert_eq!(property(&msg), Ok((0, Err(EINVAL))));
        // Too short for the vmid: EINVAL at once.
        assert_eq!(
            property(&request(Op::GetGuestConfigProperty, &[100, 0, 0])),
            Err(EINVAL)
        );
    }

    #[test]
    fn guest_config_property_empty_name_and_forced_nul() {
        let msg = request(
            Op::GetGuestConfigProperty,
            &payload::guest_config_property(0, b""),
        );
        assert_eq!(msg.len(), 21);
        assert_eq!(property(&msg), Ok((0, Ok(&b""[..]))));
        let mut payload = payload::guest_config_property(100, b"lock");
        payload.pop();
        assert_eq!(
            property(&request(Op::GetGuestConfigProperty, &payload)),
            Ok((100, Ok(&b"loc"[..])))
        );
    }

    // §4.8

    /// vmid and property names of op 13, or the decoder's errno.
    type PropertiesResult<'a> = Result<(u32, Result<Vec<&'a [u8]>, i32>), i32>;

    fn properties(msg: &[u8]) -> PropertiesResult<'_> {
        match rw(msg)? {
            Request::GuestConfigProperties { vmid, properties } => {
                Ok((vmid, properties.map(SmallVec::into_vec)))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn props_request(vmid: u32, count: u8, names: &[u8]) -> Vec<u8> {
        let mut payload = vmid.to_ne_bytes().to_vec();
        payload.push(count);
        payload.extend_from_slice(names);
        request(Op::GetGuestConfigProperties, &payload)
    }

    #[test]
    fn guest_config_properties_as_perl_sends_them() {
        let msg = request(
            Op::GetGuestConfigProperties,
            &payload::guest_config_properties(100, &[b"lock", b"tags", b"name"]),
        );
        assert_eq!(
            properties(&msg),
            Ok((100, Ok(vec![&b"lock"[..], b"tags", b"name"])))
        );
        let names: Vec<Vec<u8>> = (0..255).map(|i| format!("p{i}").into_bytes()).collect();
        let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let msg = request(
            Op::GetGuestConfigProperties,
            &payload::guest_config_properties(0, &names),
        );
        assert_eq!(properties(&msg), Ok((0, Ok(names))));
    }

    #[test]
    fn guest_config_properties_vmid_range_comes_first() {
        assert_eq!(properties(&props_request(99, 1, b"lock\0")), Err(EINVAL));
        assert_eq!(properties(&props_request(1, 0, b"")), Err(EINVAL));
        // Too short for vmid and count: EINVAL at once.
        let msg = request(Op::GetGuestConfigProperties, &100u32.to_ne_bytes());
        assert_eq!(properties(&msg), Err(EINVAL));
    }

    #[test]
    fn guest_config_properties_errors_wait_for_the_vmlist_check() {
        let cases: [(u8, &[u8]); 11] = [
            (0, b"lock\0"),       // num_props = 0
            (1, b""),             // remaining ≤ 1
            (1, b"\0"),           // remaining ≤ 1
            (1, b"a"),            // remaining ≤ 1
            (2, b"lock\0\0"),     // empty property
            (1, b"\0\0"),         // empty property
            (1, b"lock"),         // not NUL-terminated
            (2, b"lock\0tags"),   // the second not NUL-terminated
            (1, b"Lock\0"),       // first character not a-z
            (2, b"lock\0_x\0"),   // first character not a-z
            (1, b"lock\0tags\0"), // leftover bytes
        ];
        for (count, names) in cases {
            let msg = props_request(100, count, names);
            assert_eq!(
                properties(&msg),
                Ok((100, Err(EINVAL))),
                "{count} {names:?}"
            );
        }
        // Fewer names than announced.
        assert_eq!(
            properties(&props_request(0, 3, b"a\0b\0")),
            Ok((0, Err(EINVAL)))
        );
        // Names may contain anything after the first letter.
        assert_eq!(
            properties(&props_request(0, 2, b"a:B \xff\0z\0")),
            Ok((0, Ok(vec![&b"a:B \xff"[..], b"z"])))
        );
    }

    // §4.9

    #[test]
    fn verify_token_format() {
        let msg = request(Op::VerifyToken, &payload::verify_token(b"root@pam!t 1234"));
        assert_eq!(
            rw(&msg),
            Ok(Request::VerifyToken {
                token: b"root@pam!t 1234"
            })
        );
        for bad in [&b""[..], b"\0", b"a\nb\0", b"abc", b"a\0b\0"] {
            assert_eq!(rw(&request(Op::VerifyToken, bad)), Err(EINVAL), "{bad:?}");
        }
    }

    // Perl's pack.

    #[test]
    fn payloads_match_perl_pack() {
        let set = payload::set_status(&[b'n'; 300], Some(b"v"));
        assert_eq!(set.len(), 256 + 2);
        assert_eq!((set[254], set[255], &set[256..]), (b'n', 0, &b"v\0"[..]));
        assert_eq!(payload::set_status(b"k", None), {
            let mut field = vec![0; 256];
            field[0] = b'k';
            field
        });
        let get = payload::get_status(b"a", b"b");
        assert_eq!(
            (get.len(), get[0], get[1], get[256], get[257]),
            (512, b'a', 0, b'b', 0)
        );
        assert_eq!(
            payload::log_cluster_msg(6, b"ab", b"c", b"d"),
            b"\x06\x03\x02ab\0c\0d\0"
        );
        assert_eq!(
            payload::get_cluster_log(0x0102_0304, b"u"),
            b"\x04\x03\x02\x01\0\0\0\0\0\0\0\0\0\0\0\0u\0"
        );
        assert_eq!(
            payload::guest_config_property(100, b"lock"),
            b"d\0\0\0lock\0"
        );
        assert_eq!(
            payload::guest_config_properties(101, &[b"a", b"bc"]),
            b"e\0\0\0\x02a\0bc\0"
        );
        assert_eq!(payload::verify_token(b"u t"), b"u t\0");
        assert_eq!(payload::get_config(b"x"), b"x\0");
        let request = encode_request(6, b"x\0");
        assert_eq!(
            request,
            [6, 0, 0, 0, 0, 0, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0, b'x', 0]
        );
    }

    fn any_request() -> impl Strategy<Value = Vec<u8>> {
        // Mostly well-framed requests of known ids, so the checks behind
        // the framing check are reached.
        (
            0i32..16,
            proptest::collection::vec(any::<u8>(), 0..600),
            any::<bool>(),
        )
            .prop_map(|(id, payload, framed)| {
                let mut msg = encode_request(id, &payload);
                if !framed {
                    msg.truncate(payload.len() % 20);
                }
                msg
            })
    }

    proptest! {
        #[test]
        fn decode_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..700), read_only in any::<bool>()) {
            let decoded = decode(&msg, read_only);
            if let Err(errno) = decoded.request {
                prop_assert!([ECHRNG, EINVAL, EPERM].contains(&errno));
            }
        }

        #[test]
        fn decode_framed_never_panics(msg in any_request(), read_only in any::<bool>()) {
            let decoded = decode(&msg, read_only);
            match decoded.request {
                Err(errno) => prop_assert!([ECHRNG, EINVAL, EPERM].contains(&errno)),
                Ok(Request::GuestConfigProperty { property: Err(errno), .. })
                | Ok(Request::GuestConfigProperties { properties: Err(errno), .. }) => {
                    prop_assert_eq!(errno, EINVAL)
                }
                Ok(_) => {}
            }
        }

        #[test]
        fn perl_requests_decode_to_their_fields(
            name in proptest::collection::vec(1u8..=255, 0..300),
            value in proptest::collection::vec(any::<u8>(), 0..100),
            vmid in prop_oneof![Just(0u32), 100u32..],
        ) {
            let msg = request(Op::SetStatus, &payload::set_status(&name, Some(&value)));
            let mut data = value.clone();
            data.push(0);
            prop_assert_eq!(
                rw(&msg),
                Ok(Request::SetStatus { name: &name[..name.len().min(255)], data: &data })
            );
            let msg = request(Op::GetGuestConfigProperty, &payload::guest_config_property(vmid, &name));
            prop_assert_eq!(property(&msg), Ok((vmid, Ok(&name[..]))));
        }
    }
}
