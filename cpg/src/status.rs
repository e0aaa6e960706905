//! The node status tables behind IPC SET_STATUS / GET_STATUS and `.rrd`
//! (spec/status.md §2, §4.3, §4.4): this node's generic key/value table,
//! the last RRD value per key of every node, and this node's IP.
//!
//! In local mode the file system owns them; in cluster mode the kvstore
//! application does (it re-broadcasts the local table after every state
//! exchange and stores other nodes' RRD values). Only the storage rules live
//! here; sending is the caller's.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A node's generic key/value table: key → (value, version).
pub type KvTable = BTreeMap<Vec<u8>, (Vec<u8>, u32)>;

/// Largest status value (C `CFS_MAX_STATUS_SIZE`).
pub const STATUS_VALUE_MAX: usize = 32 * 1024;
/// An RRD value must be shorter than this (with its NUL).
pub const RRD_VALUE_LIMIT: usize = 4096;
/// RRD values older than this are dropped from the dump.
pub const RRD_EXPIRY_SECS: u32 = 300;
/// A dump younger than this is served again.
pub const RRD_DUMP_CACHE_SECS: u32 = 2;
/// RRD keys kept at most (a 300-guest cluster sends ~1,000 per cycle); a
/// new key beyond is refused (`NotStorable`) and logged.
pub const RRD_KEYS_MAX: usize = 65_536;
/// Generic keys kept per node at most (same bound and answer).
pub const KV_KEYS_MAX: usize = 4096;

/// Why a status value was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Over 32 KiB (C: -EFBIG).
    #[error("status value larger than 32 KiB")]
    TooBig,
    /// Malformed for its key, or the table is full (C: -ENOMEM).
    #[error("status value not storable")]
    NotStorable,
}

/// What a local SET_STATUS changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A generic key (its table version matters for `.version`).
    Kv,
    /// An RRD value.
    Rrd,
    /// The node IP; `true` if it changed (the cluster info version moves).
    NodeIp(bool),
}

/// Where stored RRD values go to be written to their files (the daemon's
/// RRD writer). Called on the thread that stores the value: it must not
/// block.
pub trait RrdSink: Send + Sync {
    /// `key` without `rrd/`, `value` as stored (with its NUL).
    fn update(&self, key: &[u8], value: &[u8]);
}

#[derive(Default)]
struct SinkSlot(Option<Arc<dyn RrdSink>>);

impl std::fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "RrdSink" } else { "none" })
    }
}

#[derive(Debug, Default)]
pub struct StatusTables {
    local: KvTable,
    /// Every node's RRD values; behind a cell because a read (the dump)
    /// expires values and caches its text.
    rrd: RefCell<RrdTable>,
    node_ip: Option<String>,
    /// Every RRD value stored, local or remote, is also handed here.
    rrd_sink: SinkSlot,
}

#[derive(Debug, Default)]
struct RrdTable {
    /// Key without `rrd/` → (value as sent, receive time).
    values: BTreeMap<Vec<u8>, (Vec<u8>, u32)>,
    /// The last dump and when it was made.
    dump: Option<(u32, Vec<u8>)>,
}

/// `nodeip` values: 1..=255 bytes ending in NUL.
fn ip_of(value: &[u8]) -> Option<String> {
    match value.split_last() {
        Some((0, ip)) if value.len() <= 255 => Some(String::from_utf8_lossy(ip).into_owned()),
        _ => None,
    }
}

/// Sets or removes (empty value) `key` in a generic table with C's version
/// rule (new key version 0, every change +1). `NotStorable` when the table is full.
pub fn table_set(table: &mut KvTable, key: &[u8], value: &[u8]) -> Result<(), StatusError> {
    if value.is_empty() {
        table.remove(key);
    } else if let Some((data, version)) = table.get_mut(key) {
        data.clear();
        data.extend_from_slice(value);
        *version = version.wrapping_add(1);
    } else if table.len() >= KV_KEYS_MAX {
        tracing::warn!(keys = table.len(), "status table full; key refused");
        return Err(StatusError::NotStorable);
    } else {
        table.insert(key.to_vec(), (value.to_vec(), 0));
    }
    Ok(())
}

impl StatusTables {
    pub fn new(node_ip: Option<String>) -> StatusTables {
        StatusTables {
            node_ip,
            ..StatusTables::default()
        }
    }

    /// `cfs_status_set` without the broadcast (spec/status.md §2.1).
    pub fn set_local(&mut self, key: &[u8], value: &[u8], now: u32) -> Result<Stored, StatusError> {
        if value.len() > STATUS_VALUE_MAX {
            return Err(StatusError::TooBig);
        }
        if let Some(rrd_key) = key.strip_prefix(b"rrd/") {
            self.set_rrd(rrd_key, value, now)?;
            return Ok(Stored::Rrd);
        }
        if key == b"nodeip" {
            let ip = ip_of(value).ok_or(StatusError::NotStorable)?;
            let changed = self.node_ip.as_deref() != Some(ip.as_str());
            self.node_ip = Some(ip);
            return Ok(Stored::NodeIp(changed));
        }
        table_set(&mut self.local, key, value)?;
        Ok(Stored::Kv)
    }

    /// An RRD value of any node: 1..4095 bytes ending in NUL.
    pub fn set_rrd(&mut self, key: &[u8], value: &[u8], now: u32) -> Result<(), StatusError> {
        if value.is_empty() || value.len() >= RRD_VALUE_LIMIT || value.last() != Some(&0) {
            return Err(StatusError::NotStorable);
        }
        let rrd = self.rrd.get_mut();
        let full = rrd.values.len() >= RRD_KEYS_MAX;
        match rrd.values.get_mut(key) {
            Some((data, time)) => {
                data.clear();
                data.extend_from_slice(value);
                *time = now;
            }
            None if full => {
                tracing::warn!(keys = RRD_KEYS_MAX, "RRD table full; key refused");
                return Err(StatusError::NotStorable);
            }
            None => {
                rrd.values.insert(key.to_vec(), (value.to_vec(), now));
            }
        }
        if let Some(sink) = &self.rrd_sink.0 {
            sink.update(key, value);
        }
        Ok(())
    }

    /// Hands every RRD value stored from now on to `sink` too.
    pub fn set_rrd_sink(&mut self, sink: Arc<dyn RrdSink>) {
        self.rrd_sink = SinkSlot(Some(sink));
    }

    /// This node's generic table.
    pub fn local(&self) -> &KvTable {
        &self.local
    }

    /// This node's IP (`nodeip`, else the one resolved at start).
    pub fn node_ip(&self) -> Option<&str> {
        self.node_ip.as_deref()
    }

    /// The RRD dump (spec/status.md §4.4): values older than 300 s are
    /// dropped, then one `key:value` line each (value without its NUL),
    /// then one NUL. A dump less than 2 s old is served again. Unlike C,
    /// whose cached copy lacks the NUL, every dump ends with it.
    pub fn rrd_dump(&self, now: u32) -> Vec<u8> {
        let mut rrd = self.rrd.borrow_mut();
        let fresh =
            matches!(&rrd.dump, Some((made, _)) if now.wrapping_sub(*made) < RRD_DUMP_CACHE_SECS);
        if !fresh {
            rrd.values
                .retain(|_, (_, time)| now.wrapping_sub(*time) <= RRD_EXPIRY_SECS);
            let mut out = rrd
                .dump
                .take()
                .map(|(_, buffer)| buffer)
                .unwrap_or_default();
            out.clear();
            for (key, (value, _)) in &rrd.values {
                out.extend_from_slice(key);
                out.push(b':');
                out.extend_from_slice(value.strip_suffix(&[0]).unwrap_or(value));
                out.push(b'\n');
            }
            out.push(0);
            rrd.dump = Some((now, out));
        }
        rrd.dump
            .as_ref()
            .map_or_else(|| vec![0], |(_, dump)| dump.clone())
    }
}

/// A remote node's generic or IP update (status.md §2.2); RRD values go to
/// `tables`. Returns the new IP for `nodeip`.
pub fn remote_update(
    tables: &mut StatusTables,
    table: &mut KvTable,
    key: &[u8],
    value: &[u8],
    now: u32,
) -> Option<String> {
    if let Some(rrd_key) = key.strip_prefix(b"rrd/") {
        if tables.set_rrd(rrd_key, value, now).is_err() {
            tracing::debug!("unusable remote RRD value ignored");
        }
        return None;
    }
    if key == b"nodeip" {
        return ip_of(value);
    }
    if value.len() <= STATUS_VALUE_MAX && table_set(table, key, value).is_err() {
        tracing::debug!("remote status key refused");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_values_follow_the_c_rules() {
        let mut tables = StatusTables::new(Some("192.0.2.1".into()));
        assert_eq!(tables.set_local(b"kv/a", b"1\0", 10), Ok(Stored::Kv));
        assert_eq!(
            tables.local().get(&b"kv/a"[..]),
            Some(&(b"1\0".to_vec(), 0))
        );
        assert_eq!(tables.set_local(b"kv/a", b"2\0", 10), Ok(Stored::Kv));
        assert_eq!(
            tables.local().get(&b"kv/a"[..]),
            Some(&(b"2\0".to_vec(), 1))
        );
        assert_eq!(tables.set_local(b"kv/a", b"", 10), Ok(Stored::Kv));
        assert!(tables.local().is_empty());
        assert_eq!(
            tables.set_local(b"kv/big", &vec![1; STATUS_VALUE_MAX + 1], 10),
            Err(StatusError::TooBig)
        );
        assert_eq!(
            tables.set_local(b"kv/max", &vec![1; STATUS_VALUE_MAX], 10),
            Ok(Stored::Kv)
        );
        assert_eq!(
            tables.set_local(b"nodeip", b"192.0.2.1\0", 10),
            Ok(Stored::NodeIp(false))
        );
        assert_eq!(
            tables.set_local(b"nodeip", b"192.0.2.2\0", 10),
            Ok(Stored::NodeIp(true))
        );
        assert_eq!(tables.node_ip(), Some("192.0.2.2"));
        assert_eq!(
            tables.set_local(b"nodeip", b"no-nul", 10),
            Err(StatusError::NotStorable)
        );
        assert_eq!(
            tables.set_local(b"nodeip", b"", 10),
            Err(StatusError::NotStorable)
        );
        assert_eq!(
            tables.set_local(b"rrd/x", b"", 10),
            Err(StatusError::NotStorable)
        );
        assert_eq!(
            tables.set_local(b"rrd/x", b"no-nul", 10),
            Err(StatusError::NotStorable)
        );
        assert_eq!(
            tables.set_local(b"rrd/x", &[b'1'; 4096], 10),
            Err(StatusError::NotStorable)
        );
        let mut long = vec![b'1'; 4095];
        long[4094] = 0;
        assert_eq!(tables.set_local(b"rrd/x", &long, 10), Ok(Stored::Rrd));
    }

    #[test]
    fn the_rrd_dump_expires_old_values_and_is_cached_for_two_seconds() {
        let mut tables = StatusTables::default();
        tables.set_rrd(b"pve2-node/a", b"1:2:3\0", 100).unwrap();
        tables
            .set_rrd(b"pve2-storage/a/local", b"4:5\0", 100)
            .unwrap();
        assert_eq!(
            tables.rrd_dump(100),
            b"pve2-node/a:1:2:3\npve2-storage/a/local:4:5\n\0"
        );
        tables.set_rrd(b"pve2-node/a", b"9\0", 101).unwrap();
        // Cached: still the old text.
        assert_eq!(
            tables.rrd_dump(101),
            b"pve2-node/a:1:2:3\npve2-storage/a/local:4:5\n\0"
        );
        assert_eq!(
            tables.rrd_dump(102),
            b"pve2-node/a:9\npve2-storage/a/local:4:5\n\0"
        );
        // 300 s after its last update the storage value is gone.
        assert_eq!(tables.rrd_dump(401), b"pve2-node/a:9\n\0");
        assert_eq!(tables.rrd_dump(403), b"\0");
    }

    #[test]
    fn remote_updates_keep_rrd_and_generic_values_apart() {
        let mut tables = StatusTables::default();
        let mut table = KvTable::new();
        assert_eq!(
            remote_update(&mut tables, &mut table, b"rrd/k", b"1\0", 5),
            None
        );
        assert_eq!(tables.rrd_dump(5), b"k:1\n\0");
        assert_eq!(
            remote_update(&mut tables, &mut table, b"nodeip", b"10.0.0.2\0", 5).as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(
            remote_update(&mut tables, &mut table, b"kv/x", b"v\0", 5),
            None
        );
        assert_eq!(table.get(&b"kv/x"[..]), Some(&(b"v\0".to_vec(), 0)));
        assert!(tables.local().is_empty());
    }
}
