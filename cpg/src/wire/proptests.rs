//! Property tests across all codecs: decoders never panic on arbitrary
//! bytes, accepted bytes re-encode identically where the format allows it,
//! and generated values survive encode → decode.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..2048)
}

/// A string without NUL.
fn c_str(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(1u8..=255, 0..max)
}

fn epoch() -> impl Strategy<Value = Epoch> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(epoch, time, node_id, pid)| Epoch {
            epoch,
            time,
            node_id,
            pid,
        },
    )
}

/// Runs every decoder over `input`; panics are the failure.
fn decode_everything(input: &[u8]) {
    let _ = decode(input);
    let _ = BaseHeader::decode(input);
    let _ = NormalHeader::decode(input);
    let _ = StateHeader::decode(input);
    for subtype in 0..10 {
        let _ = decode_dcdb(subtype, input);
    }
    let _ = FusePayload::decode(input);
    let _ = UnlockPayload::decode(input);
    let _ = UpdateEntry::decode(input);
    if let Ok(index) = IndexView::decode(input) {
        assert_eq!(index.entries().count(), index.len());
    }
    let _ = KvUpdate::decode(input);
    let _ = ClogEntry::decode(input);
    if let Ok(state) = ClogState::decode(input) {
        assert!(state.entries().count() <= input.len() / 8 + 1);
    }
}

proptest! {
    #[test]
    fn decoders_never_panic(input in bytes()) {
        decode_everything(&input);
    }

    /// Arbitrary bytes behind a plausible header, so the payload decoders
    /// get past the first checks more often.
    #[test]
    fn decoders_never_panic_behind_headers(
        message_type in 0u16..8,
        subtype in 0u16..10,
        body in bytes(),
    ) {
        let mut input = Vec::new();
        input.extend_from_slice(&message_type.to_le_bytes());
        input.extend_from_slice(&subtype.to_le_bytes());
        input.extend_from_slice(&[0; 28]);
        input.extend_from_slice(&body);
        decode_everything(&input);
        if let Ok(message) = decode(&input) {
            match message {
                Message::Normal { payload, .. } => {
                    let _ = decode_dcdb(subtype, payload);
                }
                Message::State { blob, .. } => {
                    let _ = IndexView::decode(blob);
                    let _ = ClogState::decode(blob);
                }
                Message::Update { payload, .. } => {
                    let _ = UpdateEntry::decode(payload);
                }
                _ => {}
            }
        }
    }

    /// Clog rings with a valid size field and cpos, random contents: the
    /// walk ends (no panic, no endless loop).
    #[test]
    fn clog_walk_terminates(mut blob in vec(any::<u8>(), 9..4096), cpos in any::<u32>()) {
        let len = blob.len() as u32;
        blob[0..4].copy_from_slice(&len.to_le_bytes());
        blob[4..8].copy_from_slice(&(cpos % len).to_le_bytes());
        if let Ok(state) = ClogState::decode(&blob) {
            let steps = state.entries().count();
            prop_assert!(steps <= blob.len() / 8 + 1);
        }
    }

    /// Whatever `decode` accepts re-encodes to the same bytes (except the
    /// ignored payload after SYNC_START / UPDATE_COMPLETE).
    #[test]
    fn accepted_messages_re_encode(message_type in 0u16..7, body in vec(any::<u8>(), 0..128)) {
        let mut input = message_type.to_le_bytes().to_vec();
        input.extend_from_slice(&body);
        if let Ok(message) = decode(&input) {
            let mut out = Vec::new();
            message.encode(&mut out);
            match message {
                Message::SyncStart { .. } | Message::UpdateComplete { .. } => {
                    prop_assert_eq!(&out[..], &input[..STATE_HEADER_BYTES]);
                }
                _ => prop_assert_eq!(out, input),
            }
        }
    }

    #[test]
    fn messages_round_trip(
        subtype in any::<u16>(),
        protocol_version in any::<u32>(),
        time in any::<u32>(),
        count in any::<u64>(),
        epoch in epoch(),
        csum_id in any::<u64>(),
        checksum in any::<[u8; 32]>(),
        payload in vec(any::<u8>(), 0..256),
    ) {
        let mut out = Vec::new();
        encode_normal(subtype, protocol_version, time, count, &payload, &mut out);
        prop_assert_eq!(
            decode(&out),
            Ok(Message::Normal {
                header: NormalHeader::new(subtype, protocol_version, time, count),
                payload: &payload,
            })
        );
        out.clear();
        encode_state(MessageType::State, protocol_version, time, epoch, &payload, &mut out);
        prop_assert_eq!(
            decode(&out),
            Ok(Message::State {
                header: StateHeader::new(MessageType::State, protocol_version, time, epoch),
                blob: &payload,
            })
        );
        out.clear();
        encode_verify_request(protocol_version, time, epoch, csum_id, &mut out);
        prop_assert_eq!(
            decode(&out),
            Ok(Message::VerifyRequest {
                header: StateHeader::new(MessageType::VerifyRequest, protocol_version, time, epoch),
                csum_id,
            })
        );
        out.clear();
        encode_verify(protocol_version, time, epoch, csum_id, &checksum, &mut out);
        prop_assert_eq!(
            decode(&out),
            Ok(Message::Verify {
                header: StateHeader::new(MessageType::Verify, protocol_version, time, epoch),
                csum_id,
                checksum,
            })
        );
    }

    #[test]
    fn fuse_round_trip(
        offset in any::<u32>(),
        flags in any::<u32>(),
        path in c_str(300),
        to in proptest::option::of(c_str(300)),
        data in vec(any::<u8>(), 0..512),
    ) {
        let payload = FusePayload { offset, flags, path: &path, to: to.as_deref(), data: &data };
        let mut out = Vec::new();
        payload.encode(&mut out).expect("encodes");
        prop_assert_eq!(out.len(), 20 + path.len() + 1 + to.as_ref().map_or(0, |to| to.len() + 1) + data.len());
        prop_assert_eq!(FusePayload::decode(&out), Ok(payload));
    }

    #[test]
    fn unlock_round_trip(checksum in any::<[u8; 32]>(), path in c_str(300)) {
        let payload = UnlockPayload { checksum, path: &path };
        let mut out = Vec::new();
        payload.encode(&mut out).expect("encodes");
        prop_assert_eq!(UnlockPayload::decode(&out), Ok(payload));
    }

    #[test]
    fn update_entry_round_trip(
        (parent, inode, version) in (any::<u64>(), any::<u64>(), any::<u64>()),
        (writer, mtime) in (any::<u32>(), any::<u32>()),
        is_dir in any::<bool>(),
        name in c_str(300),
        data in vec(any::<u8>(), 0..512),
    ) {
        let entry = UpdateEntry {
            parent, inode, version, writer, mtime,
            entry_type: if is_dir { EntryType::Dir } else { EntryType::File },
            name: &name,
            data: if is_dir { &[] } else { &data },
        };
        let mut out = Vec::new();
        entry.encode(&mut out).expect("encodes");
        prop_assert_eq!(UpdateEntry::decode(&out), Ok(entry));
    }

    #[test]
    fn index_round_trip(
        header in (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()),
        entries in vec((any::<u64>(), any::<[u8; 32]>()), 0..40),
    ) {
        let entries: Vec<IndexEntry> = entries
            .into_iter()
            .map(|(inode, digest)| IndexEntry { inode, digest })
            .collect();
        let (version, last_inode, writer, mtime) = header;
        let mut out = Vec::new();
        encode_index(version, last_inode, writer, mtime, &entries, &mut out).expect("encodes");
        let view = IndexView::decode(&out).expect("decodes");
        prop_assert_eq!(
            (view.version(), view.last_inode(), view.writer(), view.mtime()),
            (version, last_inode, writer, mtime)
        );
        prop_assert_eq!(view.entries().collect::<Vec<_>>(), entries);
    }

    #[test]
    fn kv_update_round_trip(key in c_str(256), value in vec(any::<u8>(), 0..512)) {
        let update = KvUpdate { key: &key, value: &value };
        let mut out = Vec::new();
        match update.encode(&mut out) {
            Ok(()) => prop_assert_eq!(KvUpdate::decode(&out), Ok(update)),
            Err(_) => prop_assert_eq!(key.len(), 256),
        }
    }

    #[test]
    fn clog_entry_and_state_round_trip(
        raw in vec(
            (any::<u32>(), any::<u32>(), any::<u32>(), any::<u8>(),
             c_str(40), vec(any::<u8>(), 0..40), c_str(40), vec(any::<u8>(), 0..300)),
            0..20,
        ),
    ) {
        // Interior NULs are allowed in clog strings: they are carried.
        let entries: Vec<ClogEntry<'_>> = raw
            .iter()
            .map(|(uid, time, pid, priority, node, ident, tag, message)| ClogEntry {
                prev: 0,
                next: 0,
                uid: *uid,
                time: *time,
                node_digest: clog_digest(node),
                ident_digest: fnv1a64(ident),
                pid: *pid,
                priority: *priority,
                node,
                ident,
                tag,
                message,
            })
            .collect();
        for entry in &entries {
            let mut out = Vec::new();
            entry.encode(&mut out).expect("encodes");
            prop_assert_eq!(out.len() as u64, entry.size());
            prop_assert_eq!(ClogEntry::decode(&out), Ok(*entry));
        }
        let mut blob = Vec::new();
        ClogState::encode_compact(CLOG_DEFAULT_BYTES, &entries, &mut blob).expect("fits");
        let state = ClogState::decode(&blob).expect("decodes");
        let mut walked: Vec<ClogEntry<'_>> = state
            .entries()
            .map(|item| item.map(|(_, entry)| ClogEntry { prev: 0, next: 0, ..entry }))
            .collect::<Result<_, _>>()
            .expect("walks");
        walked.reverse();
        prop_assert_eq!(walked, entries);
    }
}
