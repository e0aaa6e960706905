//! The one error type of the wire codecs.

/// A received payload that does not follow the wire format, or a value an
/// encoder cannot put on the wire.
///
/// The header errors are distinct because the C daemon treats them
/// differently (spec/dfsm.md §6): a message shorter than the base header, a
/// NORMAL message shorter than 24 bytes and a state message shorter than 32
/// bytes all make the DFSM leave, but only after the protocol-version check,
/// which needs just the base header ([`BaseHeader::decode`](super::BaseHeader::decode)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer than 16 bytes: not even a base header.
    #[error("message of {len} bytes is shorter than the 16-byte base header")]
    ShortBaseHeader { len: usize },
    /// A NORMAL message (type 0) shorter than its 24-byte header.
    #[error("NORMAL message of {len} bytes is shorter than the 24-byte header")]
    ShortNormalHeader { len: usize },
    /// A state message (any type but 0) shorter than its 32-byte header.
    #[error(
        "state message (type {message_type}) of {len} bytes is shorter than the 32-byte header"
    )]
    ShortStateHeader { message_type: u16, len: usize },
    /// Base header type outside 0..=6 (with a complete 32-byte header).
    #[error("unknown DFSM message type {0}")]
    UnknownMessageType(u16),
    /// VERIFY_REQUEST whose payload is not exactly 8 bytes.
    #[error("VERIFY_REQUEST payload of {len} bytes, expected 8")]
    VerifyRequestLength { len: usize },
    /// VERIFY whose payload is not exactly 40 bytes.
    #[error("VERIFY payload of {len} bytes, expected 40")]
    VerifyLength { len: usize },
    /// NORMAL subtype outside the DCDB types 1..=8.
    #[error("unknown DCDB message type {0}")]
    UnknownDcdbType(u16),
    /// NORMAL subtype outside the kvstore types 1..=3.
    #[error("unknown kvstore message type {0}")]
    UnknownKvstoreType(u16),
    /// A payload shorter than its fixed part.
    #[error("{what}: {len} bytes, shorter than the minimum of {min}")]
    Short {
        what: &'static str,
        len: usize,
        min: usize,
    },
    /// A payload whose length disagrees with the lengths it declares.
    #[error("{what}: {len} bytes, but the fields declare {expected}")]
    LengthMismatch {
        what: &'static str,
        len: usize,
        expected: u64,
    },
    /// A string field whose last byte is not NUL.
    #[error("{what} is not NUL-terminated")]
    Unterminated { what: &'static str },
    /// A string field of length 0 (C would read the byte before it).
    #[error("{what} has length 0")]
    EmptyString { what: &'static str },
    /// A fuse message with `pathlen` 0 (the C receiver would use a NULL path).
    #[error("fuse message without a path")]
    MissingPath,
    /// A tree entry type other than 4 (directory) or 8 (file).
    #[error("unknown tree entry type {0}")]
    UnknownEntryType(u8),
    /// A value to encode contains a NUL byte where a C string is sent.
    #[error("{what} contains a NUL byte")]
    InteriorNul { what: &'static str },
    /// A value to encode does not fit its wire field.
    #[error("{what}: {len} bytes exceed the maximum of {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    /// Two fields of a value to encode disagree (e.g. a declared size and
    /// the data).
    #[error("{what}: inconsistent value")]
    Inconsistent { what: &'static str },
    /// A cluster-log ring position outside the blob (or not leaving room for
    /// an entry header there).
    #[error("cluster log: position {position} outside the {len}-byte blob")]
    ClogPosition { position: u32, len: usize },
    /// A cluster-log walk that did not end within one step per 8-byte slot:
    /// the `prev` links form a cycle.
    #[error("cluster log: the prev links do not end (cycle)")]
    ClogCycle,
    /// Entries that do not fit a compact cluster-log ring of the given size.
    #[error("cluster log: entries need more than the {size}-byte ring")]
    ClogFull { size: u32 },
}
