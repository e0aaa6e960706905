//! One tree entry: its metadata, its byte encodings and its digests.
//!
//! Three encodings matter (spec/memdb.md §5, §6 and the LMDB value below):
//! * the C daemon's hash input (37 fixed bytes + name + data), for the lock
//!   checksum, the index digest and the whole-tree checksum;
//! * the LMDB value of an entry (`EntryHeader` + name + data);
//! * the sqlite row (see `row.rs`).

use bytemuck::{Pod, Zeroable};
use sha2::{Digest, Sha256};

/// Largest file the tree accepts (spec/filesystem.md §6.1).
pub const MAX_FILE_SIZE: usize = 1024 * 1024;
/// The inode of the root directory; its metadata is the global version.
pub const ROOT_INODE: u64 = 0;

/// The C daemon's type numbers (DT_DIR, DT_REG).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Dir = 4,
    File = 8,
}

impl Kind {
    pub fn from_u8(value: u8) -> Option<Kind> {
        match value {
            4 => Some(Kind::Dir),
            8 => Some(Kind::File),
            _ => None,
        }
    }
}

/// Metadata of an entry, without name and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub inode: u64,
    pub parent: u64,
    pub version: u64,
    pub writer: u32,
    pub mtime: u32,
    pub kind: Kind,
}

/// Flags kept in `EntryHeader::flags`.
pub mod flags {
    /// An entry without data whose sqlite row holds an empty blob instead of
    /// NULL (the C daemon writes one after mtime/rename of a directory).
    pub const EMPTY_BLOB: u8 = 1;
    /// Root only: the `__version__` row was written with type 4 (resync).
    pub const VERSION_ROW_DIR: u8 = 2;
}

/// Fixed part of an entry's LMDB value; name and data follow it.
/// Little-endian, 32 bytes, read with `pod_read_unaligned` (LMDB values are
/// not aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct EntryHeader {
    pub parent: u64,
    pub version: u64,
    pub writer: u32,
    pub mtime: u32,
    pub name_len: u32,
    pub kind: u8,
    pub flags: u8,
    pub reserved: [u8; 2],
}
const _: () = assert!(size_of::<EntryHeader>() == 32);
#[cfg(not(target_endian = "little"))]
compile_error!(
    "the store's on-disk and wire formats are little-endian; big-endian hosts are not supported"
);

/// An entry as read from LMDB: borrowed name and data (zero copy from the map).
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub meta: Meta,
    pub flags: u8,
    pub name: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> EntryRef<'a> {
    /// Decodes an LMDB value; `None` if it is malformed.
    pub fn decode(inode: u64, value: &'a [u8]) -> Option<EntryRef<'a>> {
        let header_bytes = value.get(..size_of::<EntryHeader>())?;
        let header: EntryHeader = bytemuck::pod_read_unaligned(header_bytes);
        let rest = &value[size_of::<EntryHeader>()..];
        let name_len = usize::try_from(header.name_len).ok()?;
        let name = rest.get(..name_len)?;
        let data = &rest[name_len..];
        let kind = Kind::from_u8(header.kind)?;
        if kind == Kind::Dir && !data.is_empty() {
            return None;
        }
        Some(EntryRef {
            meta: Meta {
                inode,
                parent: header.parent,
                version: header.version,
                writer: header.writer,
                mtime: header.mtime,
                kind,
            },
            flags: header.flags,
            name,
            data,
        })
    }

    pub fn size(&self) -> u32 {
        self.data.len() as u32
    }

    /// SHA-256 as the C daemon's lock checksum (spec/memdb.md §5.1).
    pub fn checksum(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hash_entry(&mut hasher, &self.meta, self.name, self.data, true);
        hasher.finalize().into()
    }

    /// SHA-256 as the C daemon's index digest (spec/memdb.md §5.3): the
    /// checksum input without the leading inode.
    pub fn index_digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hash_entry(&mut hasher, &self.meta, self.name, self.data, false);
        hasher.finalize().into()
    }
}

/// Builds an LMDB value for an entry.
pub fn encode_value(meta: &Meta, entry_flags: u8, name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(size_of::<EntryHeader>() + name.len() + data.len());
    write_value(&mut value, meta, entry_flags, name, data);
    value
}

/// Appends an LMDB value for an entry to `out`.
pub fn write_value(out: &mut Vec<u8>, meta: &Meta, entry_flags: u8, name: &[u8], data: &[u8]) {
    debug_assert!(meta.kind == Kind::File || data.is_empty());
    let header = EntryHeader {
        parent: meta.parent,
        version: meta.version,
        writer: meta.writer,
        mtime: meta.mtime,
        name_len: name.len() as u32,
        kind: meta.kind as u8,
        flags: entry_flags,
        reserved: [0; 2],
    };
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(name);
    out.extend_from_slice(data);
}

/// Feeds the C daemon's per-entry hash input into `hasher`: inode (optional),
/// version, writer, mtime, size, type, parent, name without NUL, file data.
pub fn hash_entry(hasher: &mut Sha256, meta: &Meta, name: &[u8], data: &[u8], with_inode: bool) {
    let mut fixed = [0u8; 37];
    fixed[0..8].copy_from_slice(&meta.inode.to_le_bytes());
    fixed[8..16].copy_from_slice(&meta.version.to_le_bytes());
    fixed[16..20].copy_from_slice(&meta.writer.to_le_bytes());
    fixed[20..24].copy_from_slice(&meta.mtime.to_le_bytes());
    fixed[24..28].copy_from_slice(&(data.len() as u32).to_le_bytes());
    fixed[28] = meta.kind as u8;
    fixed[29..37].copy_from_slice(&meta.parent.to_le_bytes());
    if with_inode {
        hasher.update(fixed);
    } else {
        hasher.update(&fixed[8..]);
    }
    hasher.update(name);
    if meta.kind == Kind::File && !data.is_empty() {
        hasher.update(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta {
            inode: 7,
            parent: 3,
            version: 9,
            writer: 2,
            mtime: 1_700_000_000,
            kind,
        }
    }

    #[test]
    fn value_round_trip() {
        let value = encode_value(&meta(Kind::File), 0, b"a.cfg", b"hello");
        let entry = EntryRef::decode(7, &value).expect("decodes");
        assert_eq!(entry.meta, meta(Kind::File));
        assert_eq!(entry.name, b"a.cfg");
        assert_eq!(entry.data, b"hello");
        assert_eq!(entry.size(), 5);
    }

    #[test]
    fn malformed_values_are_refused() {
        let value = encode_value(&meta(Kind::File), 0, b"a.cfg", b"hello");
        for cut in 0..size_of::<EntryHeader>() + 5 {
            assert!(EntryRef::decode(7, &value[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad_kind = value.clone();
        bad_kind[28] = 5;
        assert!(EntryRef::decode(7, &bad_kind).is_none());
        let dir_with_data = encode_value(&meta(Kind::File), 0, b"d", b"x");
        let mut dir_with_data = dir_with_data;
        dir_with_data[28] = Kind::Dir as u8;
        assert!(EntryRef::decode(7, &dir_with_data).is_none());
    }

    #[test]
    fn checksum_is_index_digest_plus_inode() {
        let value = encode_value(&meta(Kind::File), 0, b"x", b"data");
        let entry = EntryRef::decode(7, &value).expect("decodes");
        let mut hasher = Sha256::new();
        hasher.update(7u64.to_le_bytes());
        hasher.update(9u64.to_le_bytes());
        hasher.update(2u32.to_le_bytes());
        hasher.update(1_700_000_000u32.to_le_bytes());
        hasher.update(4u32.to_le_bytes());
        hasher.update([8u8]);
        hasher.update(3u64.to_le_bytes());
        hasher.update(b"x");
        hasher.update(b"data");
        let expected: [u8; 32] = hasher.finalize().into();
        assert_eq!(entry.checksum(), expected);
        assert_ne!(entry.index_digest(), expected);
    }
}

#[cfg(test)]
mod arbitrary_bytes {
    use proptest::prelude::*;

    proptest! {
        /// LMDB values from a damaged map never panic the decoder.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some(entry) = super::EntryRef::decode(1, &bytes) {
                prop_assert!(entry.name.len() + entry.data.len() + 32 == bytes.len());
                let _ = entry.checksum();
            }
        }
    }
}
