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
