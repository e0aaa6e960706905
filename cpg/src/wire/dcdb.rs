//! DCDB payloads (spec/dfsm.md §9) and the memdb index (spec/memdb.md §6).

use bytemuck::{Pod, Zeroable};

use super::{WireError, c_string, c_string_len, check_no_nul, read_pod};

/// DFSM protocol version of the DCDB group (`pve_dcdb_v1`).
pub const DCDB_PROTOCOL_VERSION: u32 = 1;
/// Size of [`FuseHeader`].
pub const FUSE_HEADER_BYTES: usize = 20;
/// A SHA-256 checksum (unlock payload, VERIFY, index digests).
pub const CHECKSUM_BYTES: usize = 32;
/// Size of [`UpdateEntryHeader`] (packed).
pub const UPDATE_ENTRY_HEADER_BYTES: usize = 41;
/// Size of [`IndexHeader`].
pub const INDEX_HEADER_BYTES: usize = 32;
/// Size of [`IndexEntry`].
pub const INDEX_ENTRY_BYTES: usize = 40;

wire_code! {
    /// DCDB application message type, the NORMAL subtype (§9.1).
    pub enum DcdbType: u16, unknown = WireError::UnknownDcdbType {
        Write = 1,
        Mkdir = 2,
        Delete = 3,
        Rename = 4,
        Create = 5,
        Mtime = 6,
        UnlockRequest = 7,
        Unlock = 8,
    }
}

impl DcdbType {
    /// Types 1..=6 carry the fuse payload, 7 and 8 the unlock payload.
    pub fn is_fuse(self) -> bool {
        !matches!(self, Self::UnlockRequest | Self::Unlock)
    }
}

/// A decoded DCDB NORMAL payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DcdbPayload<'a> {
    Fuse(FusePayload<'a>),
    Unlock(UnlockPayload<'a>),
}

/// Decodes the payload of a DCDB NORMAL message by its subtype.
pub fn decode_dcdb(subtype: u16, payload: &[u8]) -> Result<(DcdbType, DcdbPayload<'_>), WireError> {
    let kind = DcdbType::try_from(subtype)?;
    let decoded = if kind.is_fuse() {
        DcdbPayload::Fuse(FusePayload::decode(payload)?)
    } else {
        DcdbPayload::Unlock(UnlockPayload::decode(payload)?)
    };
    Ok((kind, decoded))
}

/// Fixed part of the fuse payload (§9.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FuseHeader {
    pub size: u32,
    pub offset: u32,
    pub path_len: u32,
    pub to_len: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<FuseHeader>() == FUSE_HEADER_BYTES);

/// The "fuse" payload of DCDB types 1..=6 (§9.2).
///
/// `path` and `to` are the C strings the C receiver works with: the field
/// without its terminating NUL, cut at an earlier NUL if there is one (so a
/// payload with a NUL inside a string does not re-encode byte for byte).
/// The data length is `data.len()` (the wire `size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusePayload<'a> {
    /// File offset (WRITE), new length (truncating WRITE) or mtime (MTIME).
    pub offset: u32,
    /// 1 for a truncating WRITE, else 0.
    pub flags: u32,
    pub path: &'a [u8],
    /// Target of RENAME; `None` = `tolen` 0.
    pub to: Option<&'a [u8]>,
    pub data: &'a [u8],
}

impl<'a> FusePayload<'a> {
    /// The wire `size` field: the data length.
    pub fn size(&self) -> u32 {
        self.data.len() as u32
    }

    /// Validation of the C receiver (dcdb.c `dcdb_parse_fuse_message`):
    /// length ≥ 20, length == 20 + size + pathlen + tolen (computed without
    /// the C u32 wrap-around), each non-zero string length ends in NUL.
    /// Stricter than C: `pathlen` 0 is refused ([`WireError::MissingPath`];
    /// C would go on with a NULL path).
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let header: FuseHeader = read_pod(payload, 0).ok_or(WireError::Short {
            what: "fuse payload",
            len: payload.len(),
            min: FUSE_HEADER_BYTES,
        })?;
        let expected = FUSE_HEADER_BYTES as u64
            + u64::from(header.size)
            + u64::from(header.path_len)
            + u64::from(header.to_len);
        if payload.len() as u64 != expected {
            return Err(WireError::LengthMismatch {
                what: "fuse payload",
                len: payload.len(),
                expected,
            });
        }
        // The lengths add up to the payload length, so they fit usize and
        // every split below is in bounds; `split_at_checked` keeps it so.
        let rest = payload.get(FUSE_HEADER_BYTES..).unwrap_or_default();
        let (path_field, rest) = split(rest, header.path_len, "fuse payload")?;
        let (to_field, data) = split(rest, header.to_len, "fuse payload")?;
        if path_field.is_empty() {
            return Err(WireError::MissingPath);
        }
        let path = terminated(path_field, "fuse path")?;
        let to = if to_field.is_empty() {
            None
        } else {
            Some(terminated(to_field, "fuse target")?)
        };
        Ok(Self {
            offset: header.offset,
            flags: header.flags,
            path,
            to,
            data,
        })
    }

    /// Appends the payload as the C sender lays it out. Refuses NULs inside
    /// `path`/`to` and lengths that do not fit the u32 fields.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        check_no_nul("fuse path", self.path)?;
        let path_len = c_string_len("fuse path", self.path, u64::from(u32::MAX))?;
        let to_len = match self.to {
            Some(to) => {
                check_no_nul("fuse target", to)?;
                c_string_len("fuse target", to, u64::from(u32::MAX))?
            }
            None => 0,
        };
        let size = u32::try_from(self.data.len()).map_err(|_| WireError::TooLong {
            what: "fuse data",
            len: self.data.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        let header = FuseHeader {
            size,
            offset: self.offset,
            path_len,
            to_len,
            flags: self.flags,
        };
        out.extend_from_slice(bytemuck::bytes_of(&header));
        out.extend_from_slice(self.path);
        out.push(0);
        if let Some(to) = self.to {
            out.extend_from_slice(to);
            out.push(0);
        }
        out.extend_from_slice(self.data);
        Ok(())
    }
}

/// Splits `len` bytes off the front of `bytes`.
fn split<'a>(
    bytes: &'a [u8],
    len: u32,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), WireError> {
    usize::try_from(len)
        .ok()
        .and_then(|len| bytes.split_at_checked(len))
        .ok_or(WireError::Short {
            what,
            len: bytes.len(),
            min: len as usize,
        })
}

/// The C string of a non-empty NUL-terminated field.
fn terminated<'a>(field: &'a [u8], what: &'static str) -> Result<&'a [u8], WireError> {
    match field.split_last() {
        Some((0, _)) => Ok(c_string(field)),
        Some(_) => Err(WireError::Unterminated { what }),
        None => Err(WireError::EmptyString { what }),
    }
}

/// The payload of UNLOCK_REQUEST / UNLOCK (§9.4): the lock directory's entry
/// checksum (memdb.md §5.1) and its path (C string, see [`FusePayload`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnlockPayload<'a> {
    pub checksum: [u8; 32],
    pub path: &'a [u8],
}

impl<'a> UnlockPayload<'a> {
    /// Validation of the C receiver: length ≥ 33 and the last byte NUL.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let short = WireError::Short {
            what: "unlock payload",
            len: payload.len(),
            min: CHECKSUM_BYTES + 1,
        };
        let (checksum, path_field) = payload.split_at_checked(CHECKSUM_BYTES).ok_or(short)?;
        if path_field.is_empty() {
            return Err(short);
        }
        let checksum = read_pod(checksum, 0).ok_or(short)?;
        let path = terminated(path_field, "unlock path")?;
        Ok(Self { checksum, path })
    }

    /// Appends checksum, path and NUL.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        check_no_nul("unlock path", self.path)?;
        out.extend_from_slice(&self.checksum);
        out.extend_from_slice(self.path);
        out.push(0);
        Ok(())
    }
}

wire_code! {
    /// Tree entry type, the `type` byte of an UPDATE (DT_DIR / DT_REG).
    pub enum EntryType: u8, unknown = WireError::UnknownEntryType {
        Dir = 4,
        File = 8,
    }
}

/// Fixed part of an UPDATE payload (§9.6): built by C from an iovec, so it
/// is packed, 41 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct UpdateEntryHeader {
    pub parent: u64,
    pub inode: u64,
    pub version: u64,
    pub writer: u32,
    pub mtime: u32,
    pub size: u32,
    pub name_len: u32,
    pub entry_type: u8,
}
const _: () = assert!(size_of::<UpdateEntryHeader>() == UPDATE_ENTRY_HEADER_BYTES);

/// One tree entry sent by the sync leader in an UPDATE message (§9.6).
///
/// `name` is the C string (cut at the first NUL, as C's `strdup` does); the
/// root entry (inode 0) has the empty name. `data` is what follows the name:
/// `size` bytes (C sends data only for files, and ignores it for
/// directories, but accepts a directory with `size` > 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateEntry<'a> {
    pub parent: u64,
    pub inode: u64,
    pub version: u64,
    pub writer: u32,
    pub mtime: u32,
    pub entry_type: EntryType,
    pub name: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> UpdateEntry<'a> {
    /// The wire `size` field: the data length.
    pub fn size(&self) -> u32 {
        self.data.len() as u32
    }

    /// Validation of dcdb.c `dcdb_parse_update_inode`, made safe: length ≥
    /// 41 (C reads the type byte with only 40 checked), type 4 or 8,
    /// remaining length == size + namelen (without the C u32 wrap-around),
    /// namelen > 0 (C would read before the name) and the name's last byte
    /// NUL.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let header: UpdateEntryHeader = read_pod(payload, 0).ok_or(WireError::Short {
            what: "update entry",
            len: payload.len(),
            min: UPDATE_ENTRY_HEADER_BYTES,
        })?;
        let entry_type = EntryType::try_from(header.entry_type)?;
        let rest = payload.get(UPDATE_ENTRY_HEADER_BYTES..).unwrap_or_default();
        let expected = u64::from(header.size) + u64::from(header.name_len);
        if rest.len() as u64 != expected {
            return Err(WireError::LengthMismatch {
                what: "update entry",
                len: payload.len(),
                expected: UPDATE_ENTRY_HEADER_BYTES as u64 + expected,
            });
        }
        let (name_field, data) = split(rest, header.name_len, "update entry")?;
        let name = terminated(name_field, "update entry name")?;
        Ok(Self {
            parent: header.parent,
            inode: header.inode,
            version: header.version,
            writer: header.writer,
            mtime: header.mtime,
            entry_type,
            name,
            data,
        })
    }

    /// Appends the entry as dcdb.c `dcdb_send_update_inode` lays it out.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        check_no_nul("update entry name", self.name)?;
        let name_len = c_string_len("update entry name", self.name, u64::from(u32::MAX))?;
        let size = u32::try_from(self.data.len()).map_err(|_| WireError::TooLong {
            what: "update entry data",
            len: self.data.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        let header = UpdateEntryHeader {
            parent: self.parent,
            inode: self.inode,
            version: self.version,
            writer: self.writer,
            mtime: self.mtime,
            size,
            name_len,
            entry_type: self.entry_type as u8,
        };
        out.extend_from_slice(bytemuck::bytes_of(&header));
        out.extend_from_slice(self.name);
        out.push(0);
        out.extend_from_slice(self.data);
        Ok(())
    }
}

/// Header of the memdb index (`memdb_index_t`), the DCDB state blob.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IndexHeader {
    /// Global version (root version).
    pub version: u64,
    /// Largest inode in the tree.
    pub last_inode: u64,
    /// Root writer.
    pub writer: u32,
    /// Root mtime.
    pub mtime: u32,
    /// Number of entries (root included).
    pub size: u32,
    /// Total blob length.
    pub bytes: u32,
}
const _: () = assert!(size_of::<IndexHeader>() == INDEX_HEADER_BYTES);

/// One index entry: inode and the digest of memdb.md §5.3.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct IndexEntry {
    pub inode: u64,
    pub digest: [u8; 32],
}
const _: () = assert!(size_of::<IndexEntry>() == INDEX_ENTRY_BYTES);

/// A validated view of a received memdb index (memdb.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexView<'a> {
    header: IndexHeader,
    blob: &'a [u8],
}

impl<'a> IndexView<'a> {
    /// Validates a state blob: ≥ 32 bytes and `bytes` == length (the C
    /// checks; failure → LEAVE), and, stricter than C as memdb.md §6
    /// recommends, `bytes` == 32 + 40 × `size`.
    pub fn decode(blob: &'a [u8]) -> Result<Self, WireError> {
        let header: IndexHeader = read_pod(blob, 0).ok_or(WireError::Short {
            what: "memdb index",
            len: blob.len(),
            min: INDEX_HEADER_BYTES,
        })?;
        if u64::from(header.bytes) != blob.len() as u64 {
            return Err(WireError::LengthMismatch {
                what: "memdb index (bytes field)",
                len: blob.len(),
                expected: u64::from(header.bytes),
            });
        }
        let expected =
            INDEX_HEADER_BYTES as u64 + INDEX_ENTRY_BYTES as u64 * u64::from(header.size);
        if expected != blob.len() as u64 {
            return Err(WireError::LengthMismatch {
                what: "memdb index (entry count)",
                len: blob.len(),
                expected,
            });
        }
        Ok(Self { header, blob })
    }

    pub fn header(&self) -> &IndexHeader {
        &self.header
    }

    pub fn version(&self) -> u64 {
        self.header.version
    }

    pub fn last_inode(&self) -> u64 {
        self.header.last_inode
    }

    pub fn writer(&self) -> u32 {
        self.header.writer
    }

    pub fn mtime(&self) -> u32 {
        self.header.mtime
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.header.size as usize
    }

    pub fn is_empty(&self) -> bool {
        self.header.size == 0
    }

    /// The whole blob: two members are in sync iff these are equal.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.blob
    }

    /// Entry `index`, if there is one.
    pub fn entry(&self, index: usize) -> Option<IndexEntry> {
        let offset = index
            .checked_mul(INDEX_ENTRY_BYTES)?
            .checked_add(INDEX_HEADER_BYTES)?;
        read_pod(self.blob, offset)
    }

    /// The entries in blob order (C: sorted by inode, root first; not
    /// checked here).
    pub fn entries(&self) -> impl ExactSizeIterator<Item = IndexEntry> + 'a {
        self.blob
            .get(INDEX_HEADER_BYTES..)
            .unwrap_or_default()
            .chunks_exact(INDEX_ENTRY_BYTES)
            .map(|chunk| read_pod(chunk, 0).unwrap_or_default())
    }
}

/// Appends a memdb index with the given root fields and entries (which the
/// caller sorts by inode, root first).
pub fn encode_index(
    version: u64,
    last_inode: u64,
    writer: u32,
    mtime: u32,
    entries: &[IndexEntry],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let bytes = INDEX_HEADER_BYTES as u64 + INDEX_ENTRY_BYTES as u64 * entries.len() as u64;
    let too_long = WireError::TooLong {
        what: "memdb index",
        len: bytes,
        max: u64::from(u32::MAX),
    };
    let header = IndexHeader {
        version,
        last_inode,
        writer,
        mtime,
        size: u32::try_from(entries.len()).map_err(|_| too_long)?,
        bytes: u32::try_from(bytes).map_err(|_| too_long)?,
    };
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(bytemuck::cast_slice(entries));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fuse_samples() -> Vec<Vec<u8>> {
        let payloads = [
            FusePayload {
                offset: 0,
                flags: 0,
                path: b"nodes",
                to: None,
                data: b"",
            },
            FusePayload {
                offset: 100,
                flags: 0,
                path: b"test.txt",
                to: None,
                data: b"hello world",
            },
            FusePayload {
                offset: 0,
                flags: 0,
                path: b"test.txt",
                to: Some(b"testdir/test-renamed.txt"),
                data: b"",
            },
            FusePayload {
                offset: 0,
                flags: 0,
                path: b"",
                to: Some(b""),
                data: b"x",
            },
        ];
        payloads
            .iter()
            .map(|payload| {
                let mut out = Vec::new();
                payload.encode(&mut out).expect("encodes");
                assert_eq!(FusePayload::decode(&out).as_ref(), Ok(payload));
                out
            })
            .collect()
    }

    #[test]
    fn fuse_truncations_are_errors() {
        for sample in fuse_samples() {
            for len in 0..sample.len() {
                assert!(FusePayload::decode(&sample[..len]).is_err(), "len {len}");
            }
            let mut longer = sample.clone();
            longer.push(0);
            assert!(FusePayload::decode(&longer).is_err());
        }
    }

    #[test]
    fn fuse_validation() {
        let mut out = Vec::new();
        FusePayload {
            offset: 0,
            flags: 0,
            path: b"a",
            to: None,
            data: b"",
        }
        .encode(&mut out)
        .expect("encodes");
        // Unterminated path.
        let mut bad = out.clone();
        bad[21] = b'x';
        assert_eq!(
            FusePayload::decode(&bad),
            Err(WireError::Unterminated { what: "fuse path" })
        );
        // No path at all.
        let header = FuseHeader::default();
        assert_eq!(
            FusePayload::decode(bytemuck::bytes_of(&header)),
            Err(WireError::MissingPath)
        );
        // Lengths that wrap around in u32 arithmetic.
        let header = FuseHeader {
            size: u32::MAX,
            path_len: 2,
            ..FuseHeader::default()
        };
        let mut wrapping = bytemuck::bytes_of(&header).to_vec();
        wrapping.extend_from_slice(b"a\0");
        assert!(matches!(
            FusePayload::decode(&wrapping),
            Err(WireError::LengthMismatch { .. })
        ));
        // Interior NUL: C sees the string up to it.
        let mut interior = Vec::new();
        let header = FuseHeader {
            path_len: 4,
            ..FuseHeader::default()
        };
        interior.extend_from_slice(bytemuck::bytes_of(&header));
        interior.extend_from_slice(b"a\0b\0");
        assert_eq!(
            FusePayload::decode(&interior).map(|fuse| fuse.path),
            Ok(&b"a"[..])
        );
        // Encoders refuse what C could not read back.
        let with_nul = FusePayload {
            offset: 0,
            flags: 0,
            path: b"a\0b",
            to: None,
            data: b"",
        };
        assert!(with_nul.encode(&mut Vec::new()).is_err());
    }

    #[test]
    fn unlock_round_trip_and_truncations() {
        let payload = UnlockPayload {
            checksum: [7; 32],
            path: b"priv/lock/lock-a",
        };
        let mut out = Vec::new();
        payload.encode(&mut out).expect("encodes");
        assert_eq!(out.len(), 32 + 17);
        assert_eq!(UnlockPayload::decode(&out), Ok(payload));
        for len in 0..out.len() {
            assert!(UnlockPayload::decode(&out[..len]).is_err(), "len {len}");
        }
        // The refusals say what was expected (the daemon logs them).
        for len in [10, 32] {
            assert_eq!(
                UnlockPayload::decode(&out[..len]),
                Err(WireError::Short {
                    what: "unlock payload",
                    len,
                    min: 33
                })
            );
        }
        assert_eq!(
            decode_dcdb(8, &out),
            Ok((DcdbType::Unlock, DcdbPayload::Unlock(payload)))
        );
        assert_eq!(decode_dcdb(9, &out), Err(WireError::UnknownDcdbType(9)));
    }

    fn update_samples() -> Vec<(UpdateEntry<'static>, Vec<u8>)> {
        let entries = [
            UpdateEntry {
                parent: 0,
                inode: 0,
                version: 17,
                writer: 1,
                mtime: 1_795_319_736,
                entry_type: EntryType::Dir,
                name: b"",
                data: b"",
            },
            UpdateEntry {
                parent: 0,
                inode: 2,
                version: 3,
                writer: 0,
                mtime: 1_795_319_734,
                entry_type: EntryType::File,
                name: b"corosync.conf",
                data: b"totem {}\n",
            },
        ];
        entries
            .into_iter()
            .map(|entry| {
                let mut out = Vec::new();
                entry.encode(&mut out).expect("encodes");
                (entry, out)
            })
            .collect()
    }

    #[test]
    fn update_entry_round_trip_and_truncations() {
        for (entry, bytes) in update_samples() {
            assert_eq!(bytes.len(), 41 + entry.name.len() + 1 + entry.data.len());
            assert_eq!(UpdateEntry::decode(&bytes), Ok(entry));
            for len in 0..bytes.len() {
                assert!(UpdateEntry::decode(&bytes[..len]).is_err(), "len {len}");
            }
            let short = bytes.len() - 1;
            assert_eq!(
                UpdateEntry::decode(&bytes[..short]),
                Err(WireError::LengthMismatch {
                    what: "update entry",
                    len: short,
                    expected: bytes.len() as u64,
                })
            );
        }
    }

    #[test]
    fn update_entry_validation() {
        let (_, root) = update_samples().remove(0);
        let mut bad_type = root.clone();
        bad_type[40] = 6;
        assert_eq!(
            UpdateEntry::decode(&bad_type),
            Err(WireError::UnknownEntryType(6))
        );
        // namelen 0: C would read the byte before the name.
        let mut no_name = root.clone();
        no_name[36..40].copy_from_slice(&0u32.to_le_bytes());
        no_name.pop();
        assert_eq!(
            UpdateEntry::decode(&no_name),
            Err(WireError::EmptyString {
                what: "update entry name"
            })
        );
        let mut unterminated = root;
        unterminated[41] = b'x';
        assert!(UpdateEntry::decode(&unterminated).is_err());
    }

    #[test]
    fn index_round_trip_and_validation() {
        let entries = [
            IndexEntry {
                inode: 0,
                digest: [1; 32],
            },
            IndexEntry {
                inode: 2,
                digest: [2; 32],
            },
        ];
        let mut out = Vec::new();
        encode_index(17, 2, 1, 99, &entries, &mut out).expect("encodes");
        assert_eq!(out.len(), 32 + 80);
        let view = IndexView::decode(&out).expect("decodes");
        assert_eq!(
            (
                view.version(),
                view.last_inode(),
                view.writer(),
                view.mtime()
            ),
            (17, 2, 1, 99)
        );
        assert_eq!(view.entries().collect::<Vec<_>>(), entries);
        assert_eq!((view.len(), view.is_empty()), (2, false));
        assert_eq!(view.header().version, 17);
        let mut empty = Vec::new();
        encode_index(1, 0, 0, 0, &[], &mut empty).expect("encodes");
        let empty = IndexView::decode(&empty).expect("decodes");
        assert_eq!((empty.len(), empty.is_empty()), (0, true));
        assert_eq!(view.entry(1), Some(entries[1]));
        assert_eq!(view.entry(2), None);
        for len in 0..out.len() {
            assert!(IndexView::decode(&out[..len]).is_err(), "len {len}");
        }
        // bytes == len but size disagrees: C accepts, we refuse.
        let mut lying = out.clone();
        lying[24..28].copy_from_slice(&5u32.to_le_bytes());
        assert!(matches!(
            IndexView::decode(&lying),
            Err(WireError::LengthMismatch {
                what: "memdb index (entry count)",
                ..
            })
        ));
    }
}
