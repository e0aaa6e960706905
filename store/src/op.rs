//! Tree operations as data: what the apply path executes, what the journal
//! records and what DCDB messages carry (spec/filesystem.md §6.3).

/// Who made a change and when: the CPG node id of the sender (0 in local
/// mode) and the sender's clock (the DFSM header time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub writer: u32,
    pub mtime: u32,
}

/// One mutation of the tree. Paths are relative, without a leading `/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Create {
        path: &'a [u8],
    },
    Mkdir {
        path: &'a [u8],
    },
    /// A write of `data` at `offset`; with `truncate` the file ends after it
    /// (truncate to `n` is a write of no data at offset `n` with `truncate`).
    Write {
        path: &'a [u8],
        offset: u64,
        data: &'a [u8],
        truncate: bool,
    },
    /// unlink and rmdir alike.
    Delete {
        path: &'a [u8],
    },
    Rename {
        from: &'a [u8],
        to: &'a [u8],
    },
    /// utimens: the new mtime travels in the op, not in the origin.
    Mtime {
        path: &'a [u8],
        mtime: u32,
    },
}

impl Op<'_> {
    fn code(&self) -> u8 {
        match self {
            Op::Write { .. } => 1,
            Op::Mkdir { .. } => 2,
            Op::Delete { .. } => 3,
            Op::Rename { .. } => 4,
            Op::Create { .. } => 5,
            Op::Mtime { .. } => 6,
        }
    }

    /// The main path of the op (the source for a rename).
    pub fn path(&self) -> &[u8] {
        match self {
            Op::Create { path }
            | Op::Mkdir { path }
            | Op::Write { path, .. }
            | Op::Delete { path }
            | Op::Mtime { path, .. } => path,
            Op::Rename { from, .. } => from,
        }
    }
}

/// Fixed part of an encoded op (journal payload), little-endian.
const FIXED_LEN: usize = 32;

/// The length of the op's encoding (`encode`), without encoding it.
pub fn encoded_len(op: &Op<'_>) -> usize {
    FIXED_LEN
        + match *op {
            Op::Create { path } | Op::Mkdir { path } | Op::Delete { path } => path.len(),
            Op::Mtime { path, .. } => path.len(),
            Op::Write { path, data, .. } => path.len() + data.len(),
            Op::Rename { from, to } => from.len() + to.len(),
        }
}

/// Encodes an op with its origin (the journal payload).
pub fn encode(out: &mut Vec<u8>, op: &Op<'_>, origin: Origin) {
    let (path, to, data, offset, flag) = match *op {
        Op::Create { path } | Op::Mkdir { path } | Op::Delete { path } => {
            (path, &[][..], &[][..], 0, 0)
        }
        Op::Write {
            path,
            offset,
            data,
            truncate,
        } => (path, &[][..], data, offset, u8::from(truncate)),
        Op::Rename { from, to } => (from, to, &[][..], 0, 0),
        Op::Mtime { path, mtime } => (path, &[][..], &[][..], u64::from(mtime), 0),
    };
    out.push(op.code());
    out.push(flag);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&origin.writer.to_le_bytes());
    out.extend_from_slice(&origin.mtime.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(path.len() as u32).to_le_bytes());
    out.extend_from_slice(&(to.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(path);
    out.extend_from_slice(to);
    out.extend_from_slice(data);
}

/// Decodes a journal payload; `None` if malformed (never panics).
pub fn decode(bytes: &[u8]) -> Option<(Op<'_>, Origin)> {
    let fixed = bytes.get(..FIXED_LEN)?;
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(fixed.get(at..at + 4)?.try_into().ok()?))
    };
    let code = fixed[0];
    let flag = fixed[1];
    let origin = Origin {
        writer: u32_at(4)?,
        mtime: u32_at(8)?,
    };
    let offset = u64::from_le_bytes(fixed.get(12..20)?.try_into().ok()?);
    let path_len = u32_at(20)? as usize;
    let to_len = u32_at(24)? as usize;
    let data_len = u32_at(28)? as usize;
    let rest = &bytes[FIXED_LEN..];
    if rest.len() != path_len.checked_add(to_len)?.checked_add(data_len)? {
        return None;
    }
    let (path, rest) = rest.split_at(path_len);
    let (to, data) = rest.split_at(to_len);
    let op = match code {
        1 if flag <= 1 => Op::Write {
            path,
            offset,
            data,
            truncate: flag == 1,
        },
        2 => Op::Mkdir { path },
        3 => Op::Delete { path },
        4 => Op::Rename { from: path, to },
        5 => Op::Create { path },
        6 => Op::Mtime {
            path,
            mtime: u32::try_from(offset).ok()?,
        },
        _ => return None,
    };
    // Only the canonical encoding is accepted (no stray flags, offsets or
    // fields that the op does not use).
    let mut canonical = Vec::with_capacity(bytes.len());
    encode(&mut canonical, &op, origin);
    (canonical == bytes).then_some((op, origin))
}

#[cfg(test)]
mod tests {

    /// The path an op names first (a rename's source).
    #[test]
    fn the_path_of_each_op() {
        let ops = [
            Op::Create { path: b"c" },
            Op::Mkdir { path: b"m" },
            Op::Delete { path: b"d" },
            Op::Rename {
                from: b"f",
                to: b"t",
            },
            Op::Write {
                path: b"w",
                offset: 0,
                data: b"",
                truncate: false,
            },
            Op::Mtime {
                path: b"u",
                mtime: 1,
            },
        ];
        let paths: Vec<&[u8]> = ops.iter().map(Op::path).collect();
        assert_eq!(paths, vec![&b"c"[..], b"m", b"d", b"f", b"w", b"u"]);
    }
    use super::*;

    #[test]
    fn every_op_round_trips_and_every_cut_is_refused() {
        let origin = Origin {
            writer: 3,
            mtime: 1_700_000_000,
        };
        let ops = [
            Op::Create { path: b"a" },
            Op::Mkdir { path: b"d/e" },
            Op::Write {
                path: b"a",
                offset: 7,
                data: b"hello",
                truncate: true,
            },
            Op::Delete { path: b"a" },
            Op::Rename {
                from: b"a",
                to: b"b/c",
            },
            Op::Mtime {
                path: b"a",
                mtime: 42,
            },
        ];
        for op in ops {
            let mut bytes = Vec::new();
            encode(&mut bytes, &op, origin);
            assert_eq!(encoded_len(&op), bytes.len(), "{op:?}");
            assert_eq!(decode(&bytes), Some((op, origin)));
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), None);
            }
        }
    }
}

#[cfg(test)]
mod arbitrary_bytes {
    use proptest::prelude::*;

    proptest! {
        /// Journal payloads from a damaged file never panic the decoder, and
        /// what decodes encodes back to the same bytes.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some((op, origin)) = super::decode(&bytes) {
                let mut again = Vec::new();
                super::encode(&mut again, &op, origin);
                prop_assert_eq!(again, bytes);
            }
        }
    }
}
