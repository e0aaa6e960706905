//! DFSM wire formats of the C pmxcfs, byte for byte (spec/dfsm.md §2, §3,
//! §9, §10; spec/memdb.md §6).
//!
//! Everything here is a pure codec: decoders borrow from the received CPG
//! payload and never panic on untrusted bytes (every read goes through a
//! checked slice, every length sum is computed in `u64`); encoders append to
//! a caller-supplied `Vec<u8>` and refuse values the wire cannot carry.
//! Fixed parts are `#[repr(C)]` [`bytemuck::Pod`] structs with their sizes
//! asserted at compile time. All integers are native little-endian, as in
//! the C daemon; big-endian hosts are refused at compile time.
//!
//! Layout:
//! * [`header`]: the 16/24/32-byte DFSM headers, [`Message`], [`decode`] and
//!   the message encoders.
//! * [`dcdb`]: DCDB payloads (fuse, unlock, UPDATE tree entry) and the memdb
//!   index that is the DCDB state blob.
//! * [`kvstore`]: kvstore UPDATE, cluster-log entry and cluster-log ring.
//!
//! Strings: DCDB paths and names are C strings to the C receiver (it uses
//! them with `strcmp`/`strdup`), so the decoders cut them at the first NUL.
//! Cluster-log strings are stored and forwarded byte for byte by C, so
//! [`ClogEntry`] keeps each whole field minus its terminating NUL.

#[cfg(not(target_endian = "little"))]
compile_error!("the DFSM wire formats are little-endian; big-endian hosts are not supported");

/// A wire code as a `#[repr]` enum with its `TryFrom` (an unknown code is
/// `$unknown(code)`): each code is written once.
macro_rules! wire_code {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident, unknown = $unknown:path {
            $($(#[$variant_meta:meta])* $variant:ident = $code:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant = $code,)+
        }

        impl TryFrom<$repr> for $name {
            type Error = WireError;

            fn try_from(value: $repr) -> Result<Self, WireError> {
                match value {
                    $($code => Ok(Self::$variant),)+
                    other => Err($unknown(other)),
                }
            }
        }
    };
}

pub mod dcdb;
mod error;
pub mod header;
pub mod kvstore;

pub use dcdb::{
    CHECKSUM_BYTES, DCDB_PROTOCOL_VERSION, DcdbPayload, DcdbType, EntryType, FUSE_HEADER_BYTES,
    FuseHeader, FusePayload, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES, IndexEntry, IndexHeader,
    IndexView, UPDATE_ENTRY_HEADER_BYTES, UnlockPayload, UpdateEntry, UpdateEntryHeader,
    decode_dcdb, encode_index,
};
pub use error::WireError;
pub use header::{
    BASE_HEADER_BYTES, BaseHeader, Epoch, Message, MessageType, NORMAL_HEADER_BYTES, NormalHeader,
    STATE_HEADER_BYTES, StateHeader, VERIFY_PAYLOAD_BYTES, VERIFY_REQUEST_PAYLOAD_BYTES, decode,
    encode_normal, encode_state, encode_verify, encode_verify_request,
};
pub use kvstore::{
    CLOG_BASE_BYTES, CLOG_DEFAULT_BYTES, CLOG_ENTRY_BASE_BYTES, CLOG_ENTRY_HEADER_BYTES,
    CLOG_MAX_ENTRY_BYTES, ClogEntries, ClogEntry, ClogEntryHeader, ClogState, KV_KEY_FIELD_BYTES,
    KVSTORE_PROTOCOL_VERSION, KvUpdate, KvstoreType, clog_digest, fnv1a64,
};

/// Reads a `T` at `offset`, `None` if the bytes are not all there.
fn read_pod<T: bytemuck::Pod>(bytes: &[u8], offset: usize) -> Option<T> {
    let end = offset.checked_add(size_of::<T>())?;
    bytemuck::try_pod_read_unaligned(bytes.get(offset..end)?).ok()
}

/// The C string view of a field: the bytes before the first NUL (all of
/// them if there is none).
fn c_string(field: &[u8]) -> &[u8] {
    match field.iter().position(|&byte| byte == 0) {
        Some(nul) => field.get(..nul).unwrap_or(field),
        None => field,
    }
}

/// Checks that a string can be sent as a C string: no NUL inside.
fn check_no_nul(what: &'static str, value: &[u8]) -> Result<(), WireError> {
    if value.contains(&0) {
        return Err(WireError::InteriorNul { what });
    }
    Ok(())
}

/// `value.len() + 1` (the length with its NUL) as a `u32` wire field.
fn c_string_len(what: &'static str, value: &[u8], max: u64) -> Result<u32, WireError> {
    let with_nul = value.len() as u64 + 1;
    if with_nul > max {
        return Err(WireError::TooLong {
            what,
            len: with_nul,
            max,
        });
    }
    u32::try_from(with_nul).map_err(|_| WireError::TooLong {
        what,
        len: with_nul,
        max: u64::from(u32::MAX),
    })
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod code_tests {
    use super::*;

    /// Every code maps to the variant whose discriminant it is, and only
    /// the defined codes do.
    #[test]
    fn codes_map_to_their_variants_and_nothing_else() {
        let known: Vec<u16> = (0..=u16::MAX)
            .filter(|&code| match MessageType::try_from(code) {
                Ok(ty) => {
                    assert_eq!(ty as u16, code);
                    true
                }
                Err(error) => {
                    assert_eq!(error, WireError::UnknownMessageType(code));
                    false
                }
            })
            .collect();
        assert_eq!(known, (0..=6).collect::<Vec<_>>());
        let dcdb: Vec<u16> = (0..=u16::MAX)
            .filter(|&code| DcdbType::try_from(code).is_ok_and(|ty| ty as u16 == code))
            .collect();
        assert_eq!(dcdb, (1..=8).collect::<Vec<_>>());
        assert_eq!(DcdbType::try_from(9), Err(WireError::UnknownDcdbType(9)));
        let kvstore: Vec<u16> = (0..=u16::MAX)
            .filter(|&code| KvstoreType::try_from(code).is_ok_and(|ty| ty as u16 == code))
            .collect();
        assert_eq!(kvstore, [1, 2, 3]);
        assert_eq!(
            KvstoreType::try_from(0),
            Err(WireError::UnknownKvstoreType(0))
        );
        let entries: Vec<u8> = (0..=u8::MAX)
            .filter(|&code| EntryType::try_from(code).is_ok_and(|ty| ty as u8 == code))
            .collect();
        assert_eq!(entries, [4, 8]);
        assert_eq!(EntryType::try_from(6), Err(WireError::UnknownEntryType(6)));
    }
}
