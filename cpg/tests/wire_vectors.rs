//! The wire codecs against the DFSM messages captured from the C daemon
//! (tests/vectors/dcdb, see its README): every .bin decodes, every field
//! the manifest records matches, and re-encoding from the decoded values
//! gives the same bytes, except the two documented differences (garbage
//! after the NUL in kvstore keys, and the unused clog prev/next of LOG
//! messages, which C sends as 0 anyway).
//!
//! Missing vectors fail the test.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pmxcfs_cpg::wire::{
    self, ClogEntry, ClogState, DcdbPayload, DcdbType, EntryType, Epoch, FusePayload, IndexView,
    KvUpdate, KvstoreType, Message, MessageType, UnlockPayload, UpdateEntry,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DCDB_GROUP: &str = "pve_dcdb_v1";
const KVSTORE_GROUP: &str = "pve_kvstore_v1";

fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/dcdb"
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("vector strings are UTF-8")
}

/// A captured vector: its manifest entry and its bytes.
struct Vector {
    file: String,
    meta: Value,
    bytes: Vec<u8>,
}

fn load_vectors() -> Vec<Vector> {
    let dir = vectors_dir();
    let manifest_path = dir.join("manifest.json");
    let manifest = std::fs::read(&manifest_path)
        .unwrap_or_else(|error| panic!("{}: {error}", manifest_path.display()));
    let manifest: Value = serde_json::from_slice(&manifest).expect("manifest is JSON");
    let messages = manifest["messages"].as_array().expect("manifest messages");
    let mut vectors = Vec::new();
    for meta in messages {
        let Some(file) = meta.get("file").and_then(Value::as_str) else {
            continue; // init/join/confchg events
        };
        let path = dir.join(file);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        vectors.push(Vector {
            file: file.to_owned(),
            meta: meta.clone(),
            bytes,
        });
    }
    let mut bins: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .into_string()
                .expect("name")
        })
        .filter(|name| name.ends_with(".bin"))
        .collect();
    bins.sort();
    let mut listed: Vec<String> = vectors.iter().map(|vector| vector.file.clone()).collect();
    listed.sort();
    assert_eq!(
        bins, listed,
        "every .bin has a manifest entry and vice versa"
    );
    assert_eq!(
        vectors.len(),
        201,
        "the README promises 201 captured messages"
    );
    vectors
}

/// Requires every key the manifest records in `expected` to be produced in
/// `actual` with the same value (recursively through objects and arrays),
/// so no recorded field goes unchecked.
fn assert_covers(file: &str, path: &str, expected: &Value, actual: &Value) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, expected_value) in expected {
                let actual_value = actual
                    .get(key)
                    .unwrap_or_else(|| panic!("{file}: {path}.{key} is not checked by the test"));
                assert_covers(file, &format!("{path}.{key}"), expected_value, actual_value);
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            assert_eq!(expected.len(), actual.len(), "{file}: {path} length");
            for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
                assert_covers(file, &format!("{path}[{index}]"), expected, actual);
            }
        }
        _ => assert_eq!(expected, actual, "{file}: {path}"),
    }
}

fn type_name(message_type: MessageType) -> &'static str {
    match message_type {
        MessageType::Normal => "NORMAL",
        MessageType::SyncStart => "SYNC_START",
        MessageType::State => "STATE",
        MessageType::Update => "UPDATE",
        MessageType::UpdateComplete => "UPDATE_COMPLETE",
        MessageType::VerifyRequest => "VERIFY_REQUEST",
        MessageType::Verify => "VERIFY",
    }
}

fn dcdb_name(kind: DcdbType) -> &'static str {
    match kind {
        DcdbType::Write => "WRITE",
        DcdbType::Mkdir => "MKDIR",
        DcdbType::Delete => "DELETE",
        DcdbType::Rename => "RENAME",
        DcdbType::Create => "CREATE",
        DcdbType::Mtime => "MTIME",
        DcdbType::UnlockRequest => "UNLOCK_REQUEST",
        DcdbType::Unlock => "UNLOCK",
    }
}

fn kvstore_name(kind: KvstoreType) -> &'static str {
    match kind {
        KvstoreType::Update => "UPDATE",
        KvstoreType::UpdateComplete => "UPDATE_COMPLETE",
        KvstoreType::Log => "LOG",
    }
}

fn epoch_json(epoch: Epoch) -> Value {
    json!({
        "epoch": epoch.epoch,
        "time": epoch.time,
        "nodeid": epoch.node_id,
        "pid": epoch.pid,
    })
}

fn fuse_json(fuse: &FusePayload<'_>) -> Value {
    let mut value = json!({
        "size": fuse.size(),
        "offset": fuse.offset,
        "pathlen": fuse.path.len() + 1,
        "tolen": fuse.to.map_or(0, |to| to.len() + 1),
        "flags": fuse.flags,
        "path": text(fuse.path),
        "to": fuse.to.map(text),
        "data_len": fuse.data.len(),
        "data_sha256": sha256_hex(fuse.data),
    });
    if let Ok(repr) = std::str::from_utf8(fuse.data) {
        value["data_repr"] = json!(repr);
    }
    value
}

fn unlock_json(unlock: &UnlockPayload<'_>, payload_len: usize) -> Value {
    json!({
        "checksum": hex(&unlock.checksum),
        "path": text(unlock.path),
        // The decoder refuses anything else.
        "path_nul_terminated": true,
        "total_len": payload_len,
    })
}

/// memdb.md §5.1 (with inode) / §5.3 (without) over a tree entry.
fn entry_hash(entry: &UpdateEntry<'_>, with_inode: bool) -> String {
    let mut hasher = Sha256::new();
    if with_inode {
        hasher.update(entry.inode.to_le_bytes());
    }
    hasher.update(entry.version.to_le_bytes());
    hasher.update(entry.writer.to_le_bytes());
    hasher.update(entry.mtime.to_le_bytes());
    hasher.update(entry.size().to_le_bytes());
    hasher.update([entry.entry_type as u8]);
    hasher.update(entry.parent.to_le_bytes());
    hasher.update(entry.name);
    if entry.entry_type == EntryType::File {
        hasher.update(entry.data);
    }
    hex(&hasher.finalize())
}

fn update_json(entry: &UpdateEntry<'_>) -> Value {
    let mut value = json!({
        "parent": entry.parent,
        "inode": entry.inode,
        "version": entry.version,
        "writer": entry.writer,
        "mtime": entry.mtime,
        "size": entry.size(),
        "namelen": entry.name.len() + 1,
        "type": entry.entry_type as u8,
        "name": text(entry.name),
        "data_sha256": sha256_hex(entry.data),
        "computed_index_digest": entry_hash(entry, false),
        "computed_entry_csum": entry_hash(entry, true),
    });
    if let Ok(repr) = std::str::from_utf8(entry.data) {
        value["data_repr"] = json!(repr);
    }
    value
}

fn index_json(index: &IndexView<'_>) -> Value {
    json!({
        "kind": "memdb_index",
        "version": index.version(),
        "last_inode": index.last_inode(),
        "writer": index.writer(),
        "mtime": index.mtime(),
        "size": index.len(),
        "bytes": index.as_bytes().len(),
        "entries": index
            .entries()
            .map(|entry| json!({"inode": entry.inode, "digest": hex(&entry.digest)}))
            .collect::<Vec<_>>(),
    })
}

fn kv_json(update: &KvUpdate<'_>, payload: &[u8]) -> Value {
    let after_nul = &payload[update.key.len()..wire::KV_KEY_FIELD_BYTES];
    json!({
        "key": text(update.key),
        "key_bytes_after_nul_all_zero": after_nul.iter().all(|&byte| byte == 0),
        "value_len": update.value.len(),
        "value_repr": text(update.value),
        "value_hex": hex(update.value),
    })
}

/// `entry_bytes`: the entry's own bytes (for the unused trailing 4).
fn clog_json(entry: &ClogEntry<'_>, entry_bytes: &[u8]) -> Value {
    let size = entry.size() as usize;
    assert_eq!(entry_bytes.len(), size);
    json!({
        "prev": entry.prev,
        "next": entry.next,
        "uid": entry.uid,
        "time": entry.time,
        "node_digest": format!("{:016x}", entry.node_digest),
        "ident_digest": format!("{:016x}", entry.ident_digest),
        "pid": entry.pid,
        "priority": entry.priority,
        "node_len": entry.node.len() + 1,
        "ident_len": entry.ident.len() + 1,
        "tag_len": entry.tag.len() + 1,
        "msg_len": entry.message.len() + 1,
        "node": text(entry.node),
        "ident": text(entry.ident),
        "tag": text(entry.tag),
        "msg": text(entry.message),
        "entry_size_formula": size,
        "strings_end_offset": size - 4,
        "node_digest_matches_fnv1a64": entry.node_digest == wire::clog_digest(entry.node),
        "ident_digest_matches_fnv1a64": entry.ident_digest == wire::clog_digest(entry.ident),
        "trailing_4_bytes_hex": hex(&entry_bytes[size - 4..]),
    })
}

fn clog_state_json(state: &ClogState<'_>) -> Value {
    let blob = state.as_bytes();
    let entries: Vec<Value> = state
        .entries()
        .map(|item| {
            let (offset, entry) = item.expect("ring entry decodes");
            let start = offset as usize;
            let mut value = clog_json(&entry, &blob[start..start + entry.size() as usize]);
            value["offset"] = json!(offset);
            value
        })
        .collect();
    json!({
        "kind": "clog_base",
        "size": state.size(),
        "cpos": state.cpos(),
        "blob_len": blob.len(),
        "entries": entries,
    })
}

/// Decodes one vector completely: the JSON of every decoded field, and the
/// bytes re-encoded from the decoded values with the typed encoders.
fn decode_and_re_encode(group: &str, bytes: &[u8]) -> (Value, Vec<u8>) {
    let message = wire::decode(bytes).expect("message decodes");
    let base = *message.base();
    let message_type = MessageType::try_from(base.message_type).expect("known type");
    let mut header = json!({
        "type": base.message_type,
        "type_name": type_name(message_type),
        "subtype": base.subtype,
        "protocol_version": base.protocol_version,
        "time": base.time,
        "reserved": base.reserved,
    });
    let mut out = Vec::new();
    let mut decoded = json!({});
    match message {
        Message::Normal {
            header: normal,
            payload,
        } => {
            header["count"] = json!(normal.count);
            wire::encode_normal(
                base.subtype,
                base.protocol_version,
                base.time,
                normal.count,
                &[],
                &mut out,
            );
            let payload_json = if group == DCDB_GROUP {
                let (kind, dcdb) = wire::decode_dcdb(base.subtype, payload).expect("dcdb payload");
                header["subtype_name"] = json!(dcdb_name(kind));
                match dcdb {
                    DcdbPayload::Fuse(fuse) => {
                        fuse.encode(&mut out).expect("fuse encodes");
                        fuse_json(&fuse)
                    }
                    DcdbPayload::Unlock(unlock) => {
                        unlock.encode(&mut out).expect("unlock encodes");
                        unlock_json(&unlock, payload.len())
                    }
                }
            } else {
                let kind = KvstoreType::try_from(base.subtype).expect("kvstore subtype");
                header["subtype_name"] = json!(kvstore_name(kind));
                match kind {
                    KvstoreType::Update => {
                        let update = KvUpdate::decode(payload).expect("kv update");
                        update.encode(&mut out).expect("kv update encodes");
                        kv_json(&update, payload)
                    }
                    KvstoreType::Log => {
                        let entry = ClogEntry::decode(payload).expect("clog entry");
                        entry.encode(&mut out).expect("clog entry encodes");
                        clog_json(&entry, payload)
                    }
                    KvstoreType::UpdateComplete => panic!("UPDATE_COMPLETE is never sent"),
                }
            };
            decoded["payload"] = payload_json;
        }
        Message::SyncStart { header: state } | Message::UpdateComplete { header: state } => {
            header["epoch"] = epoch_json(state.epoch);
            wire::encode_state(
                message_type,
                base.protocol_version,
                base.time,
                state.epoch,
                &[],
                &mut out,
            );
        }
        Message::State {
            header: state,
            blob,
        } => {
            header["epoch"] = epoch_json(state.epoch);
            wire::encode_state(
                message_type,
                base.protocol_version,
                base.time,
                state.epoch,
                &[],
                &mut out,
            );
            decoded["payload"] = if group == DCDB_GROUP {
                let index = IndexView::decode(blob).expect("memdb index");
                let entries: Vec<_> = index.entries().collect();
                wire::encode_index(
                    index.version(),
                    index.last_inode(),
                    index.writer(),
                    index.mtime(),
                    &entries,
                    &mut out,
                )
                .expect("index encodes");
                index_json(&index)
            } else {
                let ring = ClogState::decode(blob).expect("clog state");
                let mut entries: Vec<ClogEntry<'_>> = ring
                    .entries()
                    .map(|item| item.expect("ring entry").1)
                    .collect();
                entries.reverse();
                ClogState::encode_compact(ring.size(), &entries, &mut out)
                    .expect("clog state encodes");
                clog_state_json(&ring)
            };
        }
        Message::Update {
            header: state,
            payload,
        } => {
            header["epoch"] = epoch_json(state.epoch);
            wire::encode_state(
                message_type,
                base.protocol_version,
                base.time,
                state.epoch,
                &[],
                &mut out,
            );
            let entry = UpdateEntry::decode(payload).expect("update entry");
            entry.encode(&mut out).expect("update entry encodes");
            decoded["payload"] = update_json(&entry);
        }
        Message::VerifyRequest { .. } | Message::Verify { .. } => {
            panic!("no VERIFY_REQUEST/VERIFY was captured")
        }
    }
    decoded["header"] = header;
    (decoded, out)
}

/// The bytes the re-encoding must equal: the captured ones with the
/// documented differences normalised (kvstore key garbage zeroed, LOG
/// prev/next zeroed).
fn expected_re_encoding(group: &str, bytes: &[u8]) -> Vec<u8> {
    let mut expected = bytes.to_vec();
    let message = wire::decode(bytes).expect("message decodes");
    if let (KVSTORE_GROUP, Message::Normal { header, payload }) = (group, message) {
        let start = wire::NORMAL_HEADER_BYTES;
        match KvstoreType::try_from(header.base.subtype) {
            Ok(KvstoreType::Update) => {
                let key_len = KvUpdate::decode(payload).expect("kv update").key.len();
                expected[start + key_len..start + wire::KV_KEY_FIELD_BYTES].fill(0);
            }
            Ok(KvstoreType::Log) => expected[start..start + 8].fill(0),
            _ => {}
        }
    }
    expected
}

#[test]
fn every_vector_decodes_matches_the_manifest_and_re_encodes() {
    let vectors = load_vectors();
    let by_file: BTreeMap<&str, &Vector> = vectors
        .iter()
        .map(|vector| (vector.file.as_str(), vector))
        .collect();
    let mut garbage_keys = 0;
    for vector in &vectors {
        let file = vector.file.as_str();
        let meta = &vector.meta;
        assert_eq!(meta["length"], json!(vector.bytes.len()), "{file}: length");
        assert_eq!(
            meta["sha256"],
            json!(sha256_hex(&vector.bytes)),
            "{file}: sha256"
        );
        let group = meta["group"].as_str().expect("group");
        let (protocol_version, name_length) = match group {
            DCDB_GROUP => (wire::DCDB_PROTOCOL_VERSION, 12),
            KVSTORE_GROUP => (wire::KVSTORE_PROTOCOL_VERSION, 15),
            other => panic!("{file}: unknown group {other}"),
        };
        assert_eq!(meta["group_name_length"], json!(name_length), "{file}");
        if let Some(original) = meta.get("identical_to_mcast_file").and_then(Value::as_str) {
            assert_eq!(
                by_file[original].bytes, vector.bytes,
                "{file} vs {original}"
            );
        }

        let (decoded, re_encoded) = decode_and_re_encode(group, &vector.bytes);
        assert_eq!(
            decoded["header"]["protocol_version"],
            json!(protocol_version),
            "{file}"
        );
        assert_covers(file, "decoded", &meta["decoded"], &decoded);
        assert_eq!(
            meta["decoded"].get("payload").is_some(),
            decoded.get("payload").is_some(),
            "{file}: payload presence"
        );

        let expected = expected_re_encoding(group, &vector.bytes);
        if expected != vector.bytes {
            garbage_keys +=
                usize::from(decoded["payload"]["key_bytes_after_nul_all_zero"] == false);
        }
        assert!(
            re_encoded == expected,
            "{file}: re-encoding differs at byte {:?}",
            re_encoded
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .or(Some(re_encoded.len().min(expected.len())))
        );
    }
    // The documented exception is real in these vectors, not vacuous.
    assert!(
        garbage_keys > 0,
        "no kvstore key with garbage after its NUL"
    );
}

/// Every cut of every captured message is refused somewhere in the decode
/// stack (header, or the payload decoder of its group), and never panics.
/// The one legitimate exception: a kvstore UPDATE cut inside its value is
/// just a shorter value.
#[test]
fn every_truncation_of_every_vector_is_refused() {
    for vector in load_vectors() {
        let group = vector.meta["group"].as_str().expect("group");
        let bytes = &vector.bytes;
        let is_kv_update = group == KVSTORE_GROUP
            && matches!(
                wire::decode(bytes),
                Ok(Message::Normal { header, .. }) if header.base.subtype == KvstoreType::Update as u16
            );
        for len in 0..bytes.len() {
            let accepted = full_decode(group, &bytes[..len]).is_ok();
            let allowed =
                is_kv_update && len >= wire::NORMAL_HEADER_BYTES + wire::KV_KEY_FIELD_BYTES;
            assert_eq!(accepted, allowed, "{}: cut at {len}", vector.file);
        }
    }
}

fn full_decode(group: &str, bytes: &[u8]) -> Result<(), wire::WireError> {
    match wire::decode(bytes)? {
        Message::Normal { header, payload } if group == DCDB_GROUP => {
            wire::decode_dcdb(header.base.subtype, payload).map(drop)
        }
        Message::Normal { header, payload } => match KvstoreType::try_from(header.base.subtype)? {
            KvstoreType::Update => KvUpdate::decode(payload).map(drop),
            KvstoreType::Log => ClogEntry::decode(payload).map(drop),
            KvstoreType::UpdateComplete => Ok(()),
        },
        Message::State { blob, .. } if group == DCDB_GROUP => IndexView::decode(blob).map(drop),
        Message::State { blob, .. } => {
            let ring = ClogState::decode(blob)?;
            ring.entries().try_for_each(|item| item.map(drop))
        }
        Message::Update { payload, .. } => UpdateEntry::decode(payload).map(drop),
        _ => Ok(()),
    }
}
