//! The pmxcfs tree, stored in LMDB: entries, versions, limits, locks, the
//! guest index, the C daemon's checksums and index, and the row view used to
//! import and export the C daemon's `config.db`.
//!
//! Access is type-stated: a [`Reader`] reads, a [`Writer`] also writes, and a
//! `Writer` exists only for the holder of the [`ApplyPermit`] that
//! [`Store::session`] hands out once.

mod entry;
mod error;
mod import;
mod journal;
mod locks;
mod op;
pub mod path;
mod row;
mod session;
mod sqlite;
mod store;
mod vmlist;

pub use entry::{EntryHeader, EntryRef, Kind, MAX_FILE_SIZE, Meta, ROOT_INODE, hash_entry};
pub use error::{Result, StoreError};
pub use import::ImportSummary;
pub use journal::{SyncJob, SyncSignal};
pub use locks::LOCK_TIMEOUT_SECS;
pub use op::{Op, Origin};
pub use row::{Row, VERSION_ROW_NAME};
pub use session::{
    ApplyPermit, CheckpointLimits, Durability, Recovery, Session, SessionStats, Writer,
    release_free_memory,
};
pub use sqlite::{C_SCHEMA_SQL, read_global_version, read_rows, write_rows};
pub use store::{FORMAT, Reader, Snapshot, Store};
pub use vmlist::{Guest, VmList};

/// Entry points for the fuzz targets in `store/fuzz` (the decoders of data
/// read back from disk). Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a journal payload; re-encodes what it accepts.
    pub fn journal_payload(bytes: &[u8]) -> bool {
        match crate::op::decode(bytes) {
            Some((op, origin)) => {
                let mut again = Vec::new();
                crate::op::encode(&mut again, &op, origin);
                assert_eq!(again, bytes, "accepted payloads are canonical");
                true
            }
            None => false,
        }
    }

    /// Parses a journal file; returns the number of good records.
    pub fn journal_file(bytes: &[u8]) -> usize {
        crate::journal::parse_for_fuzzing(bytes)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Op, Origin, fuzzing, journal, op};

    /// The fuzz targets' entry points answer what the decoders accept: a
    /// payload the encoder wrote, not one with a write's flag out of range;
    /// the good records of a journal, not what follows them.
    #[test]
    fn the_fuzz_entry_points_report_what_the_decoders_accept() {
        let origin = Origin {
            writer: 1,
            mtime: 2,
        };
        let write = Op::Write {
            path: b"f",
            offset: 0,
            data: b"x",
            truncate: true,
        };
        let mut payload = Vec::new();
        op::encode(&mut payload, &write, origin);
        assert!(fuzzing::journal_payload(&payload));
        // Byte 0 is the op's code, byte 1 its flag (truncate for a write).
        assert_eq!(payload[1], 1);
        let mut odd_flag = payload.clone();
        odd_flag[1] = 2;
        assert!(op::decode(&odd_flag).is_none(), "a write's flag is 0 or 1");
        assert!(!fuzzing::journal_payload(&odd_flag));
        assert!(!fuzzing::journal_payload(b"junk"));

        let mut file = Vec::new();
        assert_eq!(fuzzing::journal_file(&file), 0);
        journal::encode_record(&mut file, 1, &payload);
        let mut mkdir = Vec::new();
        op::encode(&mut mkdir, &Op::Mkdir { path: b"d" }, origin);
        journal::encode_record(&mut file, 2, &mkdir);
        assert_eq!(fuzzing::journal_file(&file), 2);
        file.extend_from_slice(b"torn tail");
        assert_eq!(fuzzing::journal_file(&file), 2);
    }
}
