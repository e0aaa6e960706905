//! The lock table of `priv/lock/<name>` directories (spec/filesystem.md §8).
//!
//! In memory only: path -> (local time first seen, entry checksum). A lock is
//! expired when the same checksum has been seen for more than 120 s on this
//! node's clock; any change of the lock entry restarts the clock.

use std::collections::HashMap;

/// Lock lifetime in seconds (`CFS_LOCK_TIMEOUT`).
pub const LOCK_TIMEOUT_SECS: u64 = 120;

#[derive(Debug)]
pub struct LockTable {
    locks: HashMap<Vec<u8>, (u64, [u8; 32])>,
    timeout_secs: u64,
}

impl Default for LockTable {
    fn default() -> Self {
        LockTable {
            locks: HashMap::new(),
            timeout_secs: LOCK_TIMEOUT_SECS,
        }
    }
}

impl LockTable {
    /// Replaces the 120 s lifetime (tests).
    pub fn set_timeout_secs(&mut self, timeout_secs: u64) {
        self.timeout_secs = timeout_secs;
    }

    /// (Re)starts the clock of a lock (mkdir, mtime update, rebuild).
    pub fn reset(&mut self, path: &[u8], checksum: [u8; 32], now_secs: u64) {
        self.locks.insert(path.to_vec(), (now_secs, checksum));
    }

    /// Every known lock: path and the second it expires (first seen + the
    /// lifetime), for status reports.
    pub fn expiries(&self) -> Vec<(Vec<u8>, u64)> {
        let mut all: Vec<(Vec<u8>, u64)> = self
            .locks
            .iter()
            .map(|(path, (first_seen, _))| (path.clone(), first_seen + self.timeout_secs))
            .collect();
        all.sort();
        all
    }

    pub fn remove(&mut self, path: &[u8]) {
        self.locks.remove(path);
    }

    pub fn clear(&mut self) {
        self.locks.clear();
    }

    /// `memdb_lock_expired`: an unknown lock or a changed checksum starts the
    /// clock and is not expired; otherwise expired after more than 120 s.
    pub fn expired(&mut self, path: &[u8], checksum: [u8; 32], now_secs: u64) -> bool {
        let timeout_secs = self.timeout_secs;
        match self.locks.get_mut(path) {
            Some((first_seen, known)) if *known == checksum => {
                now_secs > *first_seen && now_secs - *first_seen > timeout_secs
            }
            Some(slot) => {
                tracing::warn!(path = %String::from_utf8_lossy(path), "lock checksum changed, timeout restarted");
                *slot = (now_secs, checksum);
                false
            }
            None => {
                self.locks.insert(path.to_vec(), (now_secs, checksum));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {

    /// Status reports: every lock with the second it expires, sorted.
    #[test]
    fn expiries_are_first_seen_plus_the_lifetime() {
        let mut table = LockTable::default();
        table.set_timeout_secs(30);
        table.reset(b"priv/lock/b", [2; 32], 100);
        table.reset(b"priv/lock/a", [1; 32], 200);
        assert_eq!(
            table.expiries(),
            vec![
                (b"priv/lock/a".to_vec(), 230),
                (b"priv/lock/b".to_vec(), 130)
            ]
        );
    }
    use super::*;

    #[test]
    fn expiry_follows_the_c_rules() {
        let mut table = LockTable::default();
        let first = [1u8; 32];
        assert!(!table.expired(b"priv/lock/a", first, 1000));
        assert!(!table.expired(b"priv/lock/a", first, 1120));
        assert!(table.expired(b"priv/lock/a", first, 1121));
        // A changed checksum restarts the clock.
        assert!(!table.expired(b"priv/lock/a", [2u8; 32], 1200));
        assert!(!table.expired(b"priv/lock/a", [2u8; 32], 1320));
        assert!(table.expired(b"priv/lock/a", [2u8; 32], 1321));
        // A clock that went backwards never expires a lock.
        table.reset(b"priv/lock/b", first, 5000);
        assert!(!table.expired(b"priv/lock/b", first, 100));
    }
}
