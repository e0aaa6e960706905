//! The file that keeps this node's unconfirmed own writes across a restart
//! (write safety, the own-delivery window): a node cut off from the majority
//! right after it applied and acknowledged writes, and then restarted (an
//! HA watchdog fences a node without quorum), checks them after its first
//! resync within a majority as if it had not restarted
//! ([`crate::dfsm::Dfsm::restore_kept`]).
//!
//! Layout (little endian): the 8-byte magic `PMXOWN01`, the write count
//! (u32), then per write: subtype (u16), payload length (u32) and payload,
//! the footprint before and the footprint after, each as a key count (u16)
//! and per key: key length (u16), key, present (u8: 0 or 1), state (u64).
//! The decoder reads untrusted bytes (a file a crash may have cut short):
//! it never panics and refuses anything malformed or beyond the bounds.

use crate::dfsm::{Footprint, KeptWrite, OWN_WRITES_KEPT, OWN_WRITES_KEPT_BYTES};
use crate::wire::WireError;

const MAGIC: &[u8; 8] = b"PMXOWN01";
/// Keys per footprint at most (a DCDB write changes one or two paths).
const MAX_KEYS: usize = 16;

/// The file's bytes for `writes`.
pub fn encode(writes: &[KeptWrite]) -> Result<Vec<u8>, WireError> {
    if writes.len() > 2 * OWN_WRITES_KEPT {
        return Err(WireError::TooLong {
            what: "kept writes",
            len: writes.len() as u64,
            max: 2 * OWN_WRITES_KEPT as u64,
        });
    }
    let mut out =
        Vec::with_capacity(12 + writes.iter().map(|w| w.payload.len() + 64).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for write in writes {
        let len = u32::try_from(write.payload.len()).map_err(|_| WireError::TooLong {
            what: "kept write payload",
            len: write.payload.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        out.extend_from_slice(&write.subtype.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&write.payload);
        for footprint in [&write.before, &write.after] {
            if footprint.len() > MAX_KEYS {
                return Err(WireError::TooLong {
                    what: "kept write footprint",
                    len: footprint.len() as u64,
                    max: MAX_KEYS as u64,
                });
            }
            out.extend_from_slice(&(footprint.len() as u16).to_le_bytes());
            for (key, state) in footprint {
                let key_len = u16::try_from(key.len()).map_err(|_| WireError::TooLong {
                    what: "kept write key",
                    len: key.len() as u64,
                    max: u64::from(u16::MAX),
                })?;
                out.extend_from_slice(&key_len.to_le_bytes());
                out.extend_from_slice(key);
                out.push(u8::from(state.is_some()));
                out.extend_from_slice(&state.unwrap_or(0).to_le_bytes());
            }
        }
    }
    Ok(out)
}

/// The writes in the file's `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Vec<KeptWrite>, WireError> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.take(8, "kept writes magic")? != MAGIC {
        return Err(WireError::Inconsistent {
            what: "kept writes magic",
        });
    }
    let count = reader.u32("kept write count")? as usize;
    if count > 2 * OWN_WRITES_KEPT {
        return Err(WireError::TooLong {
            what: "kept writes",
            len: count as u64,
            max: 2 * OWN_WRITES_KEPT as u64,
        });
    }
    let mut writes = Vec::with_capacity(count);
    let mut payload_bytes = 0usize;
    for _ in 0..count {
        let subtype = reader.u16("kept write subtype")?;
        let len = reader.u32("kept write payload length")? as usize;
        payload_bytes = payload_bytes.saturating_add(len);
        if payload_bytes > 2 * OWN_WRITES_KEPT_BYTES {
            return Err(WireError::TooLong {
                what: "kept write payloads",
                len: payload_bytes as u64,
                max: 2 * OWN_WRITES_KEPT_BYTES as u64,
            });
        }
        let payload = reader.take(len, "kept write payload")?.to_vec();
        let before = reader.footprint()?;
        let after = reader.footprint()?;
        writes.push(KeptWrite {
            subtype,
            payload,
            before,
            after,
        });
    }
    if reader.at != bytes.len() {
        return Err(WireError::LengthMismatch {
            what: "kept writes",
            len: bytes.len(),
            expected: reader.at as u64,
        });
    }
    Ok(writes)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(WireError::Short {
                what,
                len: self.bytes.len().saturating_sub(self.at),
                min: len,
            });
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn footprint(&mut self) -> Result<Footprint, WireError> {
        let keys = self.u16("kept write key count")? as usize;
        if keys > MAX_KEYS {
            return Err(WireError::TooLong {
                what: "kept write footprint",
                len: keys as u64,
                max: MAX_KEYS as u64,
            });
        }
        let mut footprint = Vec::with_capacity(keys);
        for _ in 0..keys {
            let len = self.u16("kept write key length")? as usize;
            let key = self.take(len, "kept write key")?.to_vec();
            let present = match self.array::<1>("kept write key state")? {
                [0] => false,
                [1] => true,
                _ => {
                    return Err(WireError::Inconsistent {
                        what: "kept write key state",
                    });
                }
            };
            let state = u64::from_le_bytes(self.array("kept write key state")?);
            if !present && state != 0 {
                // One encoding per value: an absent key's state is 0.
                return Err(WireError::Inconsistent {
                    what: "kept write key state",
                });
            }
            footprint.push((key, present.then_some(state)));
        }
        Ok(footprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(key: &[u8], payload: &[u8]) -> KeptWrite {
        KeptWrite {
            subtype: 3,
            payload: payload.to_vec(),
            before: vec![(key.to_vec(), None)],
            after: vec![
                (key.to_vec(), Some(0x1234_5678_9abc_def0)),
                (b"/t".to_vec(), None),
            ],
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let writes = vec![write(b"/a", b"x"), write(b"/b/c", &[7; 300])];
        let bytes = encode(&writes).expect("encode");
        assert_eq!(decode(&bytes), Ok(writes.clone()));
        assert_eq!(decode(&encode(&[]).expect("empty")), Ok(Vec::new()));
        // Cut anywhere: refused, never a prefix taken for the whole.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing byte");
        let mut magic = bytes.clone();
        magic[0] ^= 1;
        assert!(decode(&magic).is_err(), "magic");
        let mut state = bytes.clone();
        // The first key's present flag (after magic, count, subtype,
        // length, payload, key count, key length, key).
        let flag = 8 + 4 + 2 + 4 + 1 + 2 + 2 + 2;
        assert_eq!(state[flag], 0);
        state[flag] = 2;
        assert!(decode(&state).is_err(), "present flag 2");
        state[flag] = 0;
        state[flag + 1] = 1;
        assert!(decode(&state).is_err(), "an absent key with a state");
        let too_many = vec![write(b"/a", b""); 2 * OWN_WRITES_KEPT + 1];
        assert!(encode(&too_many).is_err());
        let mut count = encode(&[]).expect("empty");
        count[8..12].copy_from_slice(&((2 * OWN_WRITES_KEPT + 1) as u32).to_le_bytes());
        assert!(matches!(decode(&count), Err(WireError::TooLong { .. })));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            if let Ok(writes) = decode(&framed) {
                prop_assert_eq!(encode(&writes).expect("re-encode"), framed);
            }
        }
    }
}
