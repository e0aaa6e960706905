//! kvstore payloads (spec/dfsm.md §10): key/value UPDATE, cluster-log entry
//! and the cluster-log ring that is the kvstore state blob.

use bytemuck::{Pod, Zeroable};

use super::{WireError, c_string, c_string_len, check_no_nul, read_pod};

/// DFSM protocol version of the kvstore group (`pve_kvstore_v1`).
pub const KVSTORE_PROTOCOL_VERSION: u32 = 0;
/// The fixed key field of a kvstore UPDATE.
pub const KV_KEY_FIELD_BYTES: usize = 256;
/// Size of [`ClogEntryHeader`]: the strings start here.
pub const CLOG_ENTRY_HEADER_BYTES: usize = 44;
/// C `sizeof(clog_entry_t)`: an entry is this plus its string lengths (4
/// unused trailing bytes).
pub const CLOG_ENTRY_BASE_BYTES: usize = 48;
/// C `CLOG_MAX_ENTRY_SIZE`.
pub const CLOG_MAX_ENTRY_BYTES: usize = 4096;
/// C `CLOG_DEFAULT_SIZE`: the size of every ring a C node sends.
pub const CLOG_DEFAULT_BYTES: u32 = 131_072;
/// C `sizeof(clog_base_t)`: `size` and `cpos`; entries start here.
pub const CLOG_BASE_BYTES: usize = 8;

wire_code! {
    /// kvstore application message type, the NORMAL subtype (§10.1).
    pub enum KvstoreType: u16, unknown = WireError::UnknownKvstoreType {
        Update = 1,
        /// Defined, never sent; C receivers log it as unknown.
        UpdateComplete = 2,
        Log = 3,
    }
}

/// The payload of a kvstore UPDATE (§10.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvUpdate<'a> {
    /// The key up to the first NUL of the 256-byte field; the C sender
    /// leaves uninitialised bytes after the NUL, which are ignored.
    pub key: &'a [u8],
    /// The rest of the payload (possibly empty: "delete" for generic keys).
    pub value: &'a [u8],
}

impl<'a> KvUpdate<'a> {
    /// C receiver rules: ≥ 256 bytes and a NUL within the first 256.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let (key_field, value) =
            payload
                .split_at_checked(KV_KEY_FIELD_BYTES)
                .ok_or(WireError::Short {
                    what: "kvstore update",
                    len: payload.len(),
                    min: KV_KEY_FIELD_BYTES,
                })?;
        if !key_field.contains(&0) {
            return Err(WireError::Unterminated {
                what: "kvstore key",
            });
        }
        Ok(Self {
            key: c_string(key_field),
            value,
        })
    }

    /// Appends key, zero fill to 256 bytes, value. The key must be at most
    /// 255 bytes without NUL (C truncates longer keys silently; truncate
    /// before calling if that is wanted).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        check_no_nul("kvstore key", self.key)?;
        c_string_len("kvstore key", self.key, KV_KEY_FIELD_BYTES as u64)?;
        out.extend_from_slice(self.key);
        out.resize(out.len() + KV_KEY_FIELD_BYTES - self.key.len(), 0);
        out.extend_from_slice(self.value);
        Ok(())
    }
}

/// FNV-1a-64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3), as
/// logger.c `fnv_64a_buf`.
pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut index = 0;
    while index < bytes.len() {
        hash ^= bytes[index] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        index += 1;
    }
    hash
}

/// The digest C stores for a node or ident string that fits its field:
/// FNV-1a-64 over the string and its NUL. (For strings of 255 bytes or
/// more C hashes the first 255 bytes, without a NUL: use [`fnv1a64`].)
pub const fn clog_digest(name: &[u8]) -> u64 {
    let hash = fnv1a64(name);
    // One more round for the terminating NUL (xor with 0 is a no-op).
    hash.wrapping_mul(0x0000_0100_0000_01b3)
}

/// Fixed part of a cluster-log entry (`clog_entry_t` up to `data`). C's
/// struct is 48 bytes because of u64 alignment, but its strings start at
/// 44; this is the 44-byte prefix (packed to 4, no padding).
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ClogEntryHeader {
    pub prev: u32,
    pub next: u32,
    pub uid: u32,
    pub time: u32,
    pub node_digest: u64,
    pub ident_digest: u64,
    pub pid: u32,
    pub priority: u8,
    pub node_len: u8,
    pub ident_len: u8,
    pub tag_len: u8,
    pub msg_len: u32,
}
const _: () = assert!(size_of::<ClogEntryHeader>() == CLOG_ENTRY_HEADER_BYTES);

/// One cluster-log entry (§10.3): a LOG payload or an entry of the ring.
///
/// Each string is its whole field minus the terminating NUL (C stores and
/// forwards entries byte for byte, so a NUL inside is kept; C displays the
/// part before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClogEntry<'a> {
    /// Ring link; 0 in LOG messages (ignored by receivers).
    pub prev: u32,
    /// Ring link; 0 in LOG messages (ignored by receivers).
    pub next: u32,
    /// Per-process counter of the creating node.
    pub uid: u32,
    pub time: u32,
    /// [`clog_digest`] of the node name.
    pub node_digest: u64,
    /// [`clog_digest`] of the ident (user).
    pub ident_digest: u64,
    pub pid: u32,
    /// Syslog priority 0..=7 (not checked on receive, as in C).
    pub priority: u8,
    pub node: &'a [u8],
    pub ident: &'a [u8],
    pub tag: &'a [u8],
    pub message: &'a [u8],
}

impl<'a> ClogEntry<'a> {
    /// The C `clog_entry_size`: 48 + the four string lengths (with NULs).
    pub fn size(&self) -> u64 {
        CLOG_ENTRY_BASE_BYTES as u64
            + self.node.len() as u64
            + self.ident.len() as u64
            + self.tag.len() as u64
            + self.message.len() as u64
            + 4
    }

    /// C receiver rules (status.c `kvstore_parse_log_message`): length ≥
    /// 48 and exactly 48 + the string lengths, each string's last byte
    /// NUL; stricter than C, a zero string length is refused. The 4096-byte
    /// limit is not checked (C does not on receive; its ring refuses to
    /// store such an entry).
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let header: ClogEntryHeader = read_pod(payload, 0)
            .filter(|_| payload.len() >= CLOG_ENTRY_BASE_BYTES)
            .ok_or(WireError::Short {
                what: "cluster log entry",
                len: payload.len(),
                min: CLOG_ENTRY_BASE_BYTES,
            })?;
        let expected = entry_size(&header);
        if payload.len() as u64 != expected {
            return Err(WireError::LengthMismatch {
                what: "cluster log entry",
                len: payload.len(),
                expected,
            });
        }
        let strings = payload.get(CLOG_ENTRY_HEADER_BYTES..).unwrap_or_default();
        let (node, strings) = clog_string(strings, u32::from(header.node_len), "clog node")?;
        let (ident, strings) = clog_string(strings, u32::from(header.ident_len), "clog ident")?;
        let (tag, strings) = clog_string(strings, u32::from(header.tag_len), "clog tag")?;
        let (message, _trailing) = clog_string(strings, header.msg_len, "clog message")?;
        Ok(Self {
            prev: header.prev,
            next: header.next,
            uid: header.uid,
            time: header.time,
            node_digest: header.node_digest,
            ident_digest: header.ident_digest,
            pid: header.pid,
            priority: header.priority,
            node,
            ident,
            tag,
            message,
        })
    }

    /// Appends the entry as a LOG payload: prev = next = 0, 4 zero trailing
    /// bytes. Refuses node/ident/tag of 255 bytes or more, and entries
    /// larger than 4096 bytes (C's ring would not store them).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.encode_linked(0, 0, out)
    }

    /// Appends the entry with the given ring links.
    fn encode_linked(&self, prev: u32, next: u32, out: &mut Vec<u8>) -> Result<(), WireError> {
        let size = self.size();
        if size > CLOG_MAX_ENTRY_BYTES as u64 {
            return Err(WireError::TooLong {
                what: "cluster log entry",
                len: size,
                max: CLOG_MAX_ENTRY_BYTES as u64,
            });
        }
        let u8_len =
            |what, value: &[u8]| c_string_len(what, value, u64::from(u8::MAX)).map(|len| len as u8);
        let header = ClogEntryHeader {
            prev,
            next,
            uid: self.uid,
            time: self.time,
            node_digest: self.node_digest,
            ident_digest: self.ident_digest,
            pid: self.pid,
            priority: self.priority,
            node_len: u8_len("clog node", self.node)?,
            ident_len: u8_len("clog ident", self.ident)?,
            tag_len: u8_len("clog tag", self.tag)?,
            msg_len: c_string_len("clog message", self.message, u64::from(u32::MAX))?,
        };
        out.extend_from_slice(bytemuck::bytes_of(&header));
        for string in [self.node, self.ident, self.tag, self.message] {
            out.extend_from_slice(string);
            out.push(0);
        }
        out.extend_from_slice(&[0; 4]);
        Ok(())
    }
}

/// `clog_entry_size` from a header, without overflow.
fn entry_size(header: &ClogEntryHeader) -> u64 {
    CLOG_ENTRY_BASE_BYTES as u64
        + u64::from(header.node_len)
        + u64::from(header.ident_len)
        + u64::from(header.tag_len)
        + u64::from(header.msg_len)
}

/// Splits a NUL-terminated string of `len` bytes off `bytes`; returns it
/// without the NUL.
fn clog_string<'a>(
    bytes: &'a [u8],
    len: u32,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), WireError> {
    let (field, rest) = usize::try_from(len)
        .ok()
        .and_then(|len| bytes.split_at_checked(len))
        .ok_or(WireError::Short {
            what,
            len: bytes.len(),
            min: len as usize,
        })?;
    match field.split_last() {
        Some((0, string)) => Ok((string, rest)),
        Some(_) => Err(WireError::Unterminated { what }),
        None => Err(WireError::EmptyString { what }),
    }
}

/// A view of a cluster-log ring (`clog_base_t`), the kvstore state blob
/// (§10.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClogState<'a> {
    blob: &'a [u8],
    cpos: u32,
}

impl<'a> ClogState<'a> {
    /// C receiver rules: length > 8 and equal to the `size` field (else
    /// that member's log is ignored). Stricter than C: `cpos` must be 0 or
    /// leave room for an entry header inside the blob (C would read out of
    /// bounds).
    pub fn decode(blob: &'a [u8]) -> Result<Self, WireError> {
        let short = WireError::Short {
            what: "cluster log state",
            len: blob.len(),
            min: CLOG_BASE_BYTES + 1,
        };
        if blob.len() <= CLOG_BASE_BYTES {
            return Err(short);
        }
        let size: u32 = read_pod(blob, 0).ok_or(short)?;
        let cpos: u32 = read_pod(blob, 4).ok_or(short)?;
        if u64::from(size) != blob.len() as u64 {
            return Err(WireError::LengthMismatch {
                what: "cluster log state (size field)",
                len: blob.len(),
                expected: u64::from(size),
            });
        }
        if cpos != 0 && !entry_header_fits(blob, cpos) {
            return Err(WireError::ClogPosition {
                position: cpos,
                len: blob.len(),
            });
        }
        Ok(Self { blob, cpos })
    }

    /// The `size` field (= blob length).
    pub fn size(&self) -> u32 {
        self.blob.len() as u32
    }

    /// Offset of the newest entry, 0 if the log is empty.
    pub fn cpos(&self) -> u32 {
        self.cpos
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.blob
    }

    /// The entries from newest to oldest, with their offsets, following
    /// the C walk (logger.c `clog_dump`): from `cpos` along `prev` while
    /// the position is non-zero and either ≤ `cpos` or > `cpos` + 4096,
    /// stopping before a `prev` that jumps up into (current, `cpos`].
    ///
    /// Bounded where C is not: a position whose entry does not fit the blob
    /// yields [`WireError::ClogPosition`] and ends the walk; more steps than
    /// 8-byte slots in the blob yields [`WireError::ClogCycle`] and ends it.
    /// An entry with bad strings yields its decode error and the walk goes
    /// on (its `prev` is readable), as C would carry the bytes along.
    pub fn entries(&self) -> ClogEntries<'a> {
        ClogEntries {
            blob: self.blob,
            head: self.cpos,
            position: self.cpos,
            steps_left: self.blob.len() / 8,
        }
    }

    /// Appends a compact ring of `size` bytes holding `entries` (oldest
    /// first) as C's `clog_sort` lays it out: first entry at 8 with prev 0,
    /// each at the 8-aligned end of the previous one, `next` = its aligned
    /// end, `cpos` = the last one, zeros elsewhere (each entry's 4 unused
    /// trailing bytes too). Sorting is the caller's (§10.4 order). Refuses
    /// entries that would make C wrap around (`offset + aligned size >=
    /// size`).
    pub fn encode_compact(
        size: u32,
        entries: &[ClogEntry<'_>],
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        if (size as usize) <= CLOG_BASE_BYTES {
            return Err(WireError::ClogFull { size });
        }
        let start = out.len();
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let mut previous = 0u32;
        let mut position = CLOG_BASE_BYTES as u32;
        for entry in entries {
            let aligned = entry.size().next_multiple_of(8);
            let next = u64::from(position) + aligned;
            if next >= u64::from(size) {
                out.truncate(start);
                return Err(WireError::ClogFull { size });
            }
            let next = next as u32;
            if let Err(error) = entry.encode_linked(previous, next, out) {
                out.truncate(start);
                return Err(error);
            }
            out.resize(start + next as usize, 0);
            previous = position;
            position = next;
        }
        out.resize(start + size as usize, 0);
        if let Some(cpos) = out.get_mut(start + 4..start + 8) {
            cpos.copy_from_slice(&previous.to_le_bytes());
        }
        Ok(())
    }
}

/// Whether a 44-byte entry header starting at `position` lies inside
/// `blob` past the 8-byte base.
fn entry_header_fits(blob: &[u8], position: u32) -> bool {
    position as usize >= CLOG_BASE_BYTES
        && u64::from(position) + CLOG_ENTRY_HEADER_BYTES as u64 <= blob.len() as u64
}

/// Iterator of [`ClogState::entries`]: `(offset, entry)` newest first.
#[derive(Clone, Debug)]
pub struct ClogEntries<'a> {
    blob: &'a [u8],
    head: u32,
    /// Next position to visit; 0 = done.
    position: u32,
    steps_left: usize,
}

impl<'a> Iterator for ClogEntries<'a> {
    type Item = Result<(u32, ClogEntry<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let position = self.position;
        let head = u64::from(self.head);
        let in_walk =
            u64::from(position) <= head || u64::from(position) > head + CLOG_MAX_ENTRY_BYTES as u64;
        if position == 0 || !in_walk {
            return None;
        }
        self.position = 0;
        if self.steps_left == 0 {
            return Some(Err(WireError::ClogCycle));
        }
        self.steps_left -= 1;
        let out_of_bounds = WireError::ClogPosition {
            position,
            len: self.blob.len(),
        };
        if !entry_header_fits(self.blob, position) {
            return Some(Err(out_of_bounds));
        }
        let Some(header) = read_pod::<ClogEntryHeader>(self.blob, position as usize) else {
            return Some(Err(out_of_bounds));
        };
        let end = u64::from(position) + entry_size(&header);
        let Some(bytes) = usize::try_from(end)
            .ok()
            .and_then(|end| self.blob.get(position as usize..end))
        else {
            return Some(Err(out_of_bounds));
        };
        // Wrap-around has to land after the initial position (C comment).
        let prev = header.prev;
        let wrapped = position < prev && u64::from(prev) <= head;
        if !wrapped {
            self.position = prev;
        }
        Some(ClogEntry::decode(bytes).map(|entry| (position, entry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: u32, node: &'static [u8], message: &'static [u8]) -> ClogEntry<'static> {
        ClogEntry {
            prev: 0,
            next: 0,
            uid,
            time: 1_795_319_779 + uid,
            node_digest: clog_digest(node),
            ident_digest: clog_digest(b"root@pam"),
            pid: 22614,
            priority: 6,
            node,
            ident: b"root@pam",
            tag: b"vectors",
            message,
        }
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        // From the captured vectors: node "pve1", ident "root@pam".
        assert_eq!(clog_digest(b"pve1"), 0x611f_b401_e533_4a83);
        assert_eq!(clog_digest(b"root@pam"), 0x0bf6_9a5d_bf95_bb61);
        assert_eq!(clog_digest(b"pve1"), fnv1a64(b"pve1\0"));
    }

    #[test]
    fn kv_update_round_trip_and_garbage() {
        let update = KvUpdate {
            key: b"nodeip",
            value: b"10.99.0.1\0",
        };
        let mut out = Vec::new();
        update.encode(&mut out).expect("encodes");
        assert_eq!(out.len(), 266);
        assert_eq!(KvUpdate::decode(&out), Ok(update));
        // Garbage after the NUL is ignored.
        out[100] = 0xff;
        assert_eq!(KvUpdate::decode(&out), Ok(update));
        for len in 0..256 {
            assert!(KvUpdate::decode(&out[..len]).is_err());
        }
        let no_nul = [b'k'; 256];
        assert!(KvUpdate::decode(&no_nul).is_err());
        let long_key = [b'k'; 256];
        let too_long = KvUpdate {
            key: &long_key,
            value: b"",
        };
        assert!(too_long.encode(&mut Vec::new()).is_err());
        let longest = KvUpdate {
            key: &long_key[..255],
            value: b"",
        };
        let mut out = Vec::new();
        longest.encode(&mut out).expect("255 bytes fit");
        assert_eq!(KvUpdate::decode(&out), Ok(longest));
    }

    #[test]
    fn clog_entry_round_trip_and_truncations() {
        let sample = entry(2, b"pve1", b"test cluster log entry from pve1");
        let mut out = Vec::new();
        sample.encode(&mut out).expect("encodes");
        assert_eq!(out.len(), 103);
        assert_eq!(sample.size(), 103);
        assert_eq!(ClogEntry::decode(&out), Ok(sample));
        for len in 0..out.len() {
            assert!(ClogEntry::decode(&out[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn clog_entry_zero_length_string_is_refused() {
        let sample = entry(1, b"n", b"m");
        let mut out = Vec::new();
        sample.encode(&mut out).expect("encodes");
        // node_len 2 -> 0 and msg_len 2 -> 4: the sizes still add up.
        out[37] = 0;
        out[40..44].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(
            ClogEntry::decode(&out),
            Err(WireError::EmptyString { what: "clog node" })
        );
    }

    #[test]
    fn clog_state_compact_round_trip() {
        let entries = [
            entry(1, b"pve1", b"starting cluster log"),
            entry(2, b"pve2", b"second"),
            entry(3, b"pve1", b"third"),
        ];
        let mut blob = Vec::new();
        ClogState::encode_compact(CLOG_DEFAULT_BYTES, &entries, &mut blob).expect("fits");
        assert_eq!(blob.len(), CLOG_DEFAULT_BYTES as usize);
        let state = ClogState::decode(&blob).expect("decodes");
        let walked: Vec<_> = state.entries().collect::<Result<_, _>>().expect("walks");
        assert_eq!(walked.len(), 3);
        assert_eq!(walked[2].0, 8);
        assert_eq!(walked[2].1.prev, 0);
        assert_eq!(walked[0].0, state.cpos());
        for ((_, walked), original) in walked.iter().rev().zip(&entries) {
            assert_eq!(
                (walked.uid, walked.node, walked.message),
                (original.uid, original.node, original.message)
            );
        }
        let oldest_first: Vec<_> = walked.iter().rev().map(|(_, entry)| *entry).collect();
        let mut again = Vec::new();
        ClogState::encode_compact(CLOG_DEFAULT_BYTES, &oldest_first, &mut again).expect("fits");
        assert_eq!(again, blob);
    }

    #[test]
    fn clog_state_empty_and_invalid() {
        let mut blob = Vec::new();
        ClogState::encode_compact(CLOG_DEFAULT_BYTES, &[], &mut blob).expect("empty");
        let state = ClogState::decode(&blob).expect("decodes");
        assert_eq!(state.cpos(), 0);
        assert_eq!(state.entries().count(), 0);
        assert_eq!(
            ClogState::decode(&blob[..8]),
            Err(WireError::Short {
                what: "cluster log state",
                len: 8,
                min: 9
            })
        );
        assert!(ClogState::decode(&blob[..100]).is_err());
        let mut bad_cpos = blob.clone();
        bad_cpos[4..8].copy_from_slice(&(CLOG_DEFAULT_BYTES - 10).to_le_bytes());
        assert!(matches!(
            ClogState::decode(&bad_cpos),
            Err(WireError::ClogPosition { .. })
        ));
        // 2072 aligned bytes each: the second would end at 4152 > 4096.
        let large = entry(1, b"n", &[b'x'; 2000]);
        assert_eq!(
            ClogState::encode_compact(4096, &[large, large], &mut Vec::new()),
            Err(WireError::ClogFull { size: 4096 })
        );
        let too_large = entry(1, b"n", &[b'x'; 4040]);
        assert!(matches!(
            ClogState::encode_compact(CLOG_DEFAULT_BYTES, &[too_large], &mut Vec::new()),
            Err(WireError::TooLong { .. })
        ));
    }

    /// A ring whose prev links cycle above cpos + 4096 (where the C walk
    /// never stops) ends with ClogCycle after one step per slot.
    #[test]
    fn clog_walk_is_bounded() {
        let size = 16_384u32;
        let mut blob = vec![0u8; size as usize];
        blob[0..4].copy_from_slice(&size.to_le_bytes());
        blob[4..8].copy_from_slice(&8u32.to_le_bytes());
        let mut put = |position: usize, prev: u32| {
            let mut out = Vec::new();
            entry(1, b"n", b"m")
                .encode_linked(prev, 0, &mut out)
                .expect("encodes");
            blob[position..position + out.len()].copy_from_slice(&out);
        };
        put(8, 8192);
        put(8192, 12_288);
        put(12_288, 8192);
        let state = ClogState::decode(&blob).expect("decodes");
        let items: Vec<_> = state.entries().collect();
        assert_eq!(items.len(), size as usize / 8 + 1);
        assert_eq!(items.last(), Some(&Err(WireError::ClogCycle)));
    }

    #[test]
    fn clog_walk_stops_at_wrap_and_out_of_bounds() {
        let size = 16_384u32;
        let mut blob = vec![0u8; size as usize];
        blob[0..4].copy_from_slice(&size.to_le_bytes());
        blob[4..8].copy_from_slice(&200u32.to_le_bytes());
        let put = |blob: &mut Vec<u8>, position: usize, prev: u32| {
            let mut out = Vec::new();
            entry(1, b"n", b"m")
                .encode_linked(prev, 0, &mut out)
                .expect("encodes");
            blob[position..position + out.len()].copy_from_slice(&out);
        };
        // 200 -> 8 -> 100: 100 is in (8, 200], the walk stops after 8.
        put(&mut blob, 200, 8);
        put(&mut blob, 8, 100);
        let state = ClogState::decode(&blob).expect("decodes");
        let offsets: Vec<_> = state
            .entries()
            .map(|item| item.map(|(offset, _)| offset))
            .collect();
        assert_eq!(offsets, [Ok(200), Ok(8)]);
        // 200 -> 16380: header does not fit.
        put(&mut blob, 200, size - 4);
        let state = ClogState::decode(&blob).expect("decodes");
        let items: Vec<_> = state.entries().collect();
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Err(WireError::ClogPosition { .. })));
        // The walk's upper bound, as C's: a prev of exactly cpos + the
        // largest entry is outside it, one slot more is inside.
        let bound = 200 + CLOG_MAX_ENTRY_BYTES as u32;
        for (prev, expected) in [(bound, vec![200]), (bound + 8, vec![200, bound + 8])] {
            put(&mut blob, 200, prev);
            put(&mut blob, prev as usize, 0);
            let state = ClogState::decode(&blob).expect("decodes");
            let offsets: Vec<u32> = state.entries().map(|item| item.expect("entry").0).collect();
            assert_eq!(offsets, expected, "prev {prev}");
        }
        // An entry that links to itself is no wrap-around (C would walk it
        // forever): the walk ends with ClogCycle.
        put(&mut blob, 200, 200);
        let state = ClogState::decode(&blob).expect("decodes");
        let items: Vec<_> = state.entries().collect();
        assert_eq!(items.last(), Some(&Err(WireError::ClogCycle)));
        assert!(items.len() > 2);
    }
}
