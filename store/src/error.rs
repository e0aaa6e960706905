//! The store's one error type, and the one place where it becomes an errno.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
///
/// Semantic refusals (`NotFound`, `Exists`, ...) are the answers the C daemon
/// gives for the same request; `Db`, `Io`, `Journal` and `Corrupt` are real
/// failures of this node.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("permission denied")]
    Access,
    #[error("file too large")]
    TooBig,
    /// An op whose journal record would pass `RECORD_PAYLOAD_MAX` (paths of
    /// tens of KiB; the kernel's own paths end at 4 KiB).
    #[error("path too long")]
    PathTooLong,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("an earlier write to the database failed; the store refuses changes until restart")]
    Poisoned,
    #[error("LMDB: {0}")]
    Db(#[from] heed::Error),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("sqlite database {path}: {reason}")]
    Sqlite { path: PathBuf, reason: String },
}

impl StoreError {
    /// The errno a FUSE caller sees for this error (positive value).
    ///
    /// This is the only mapping from store errors to errno values; the
    /// semantic ones follow spec/filesystem.md §10, real failures are EIO
    /// (ENOSPC for a full disk).
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NotFound => libc::ENOENT,
            StoreError::Exists => libc::EEXIST,
            StoreError::NotDirectory => libc::ENOTDIR,
            StoreError::NotEmpty => libc::ENOTEMPTY,
            StoreError::Access => libc::EACCES,
            StoreError::TooBig => libc::EFBIG,
            StoreError::PathTooLong => libc::ENAMETOOLONG,
            StoreError::Invalid(_) => libc::EINVAL,
            // A full disk says so (C answers EIO for every disk failure).
            StoreError::Io { source, .. } | StoreError::Db(heed::Error::Io(source))
                if source.raw_os_error() == Some(libc::ENOSPC) =>
            {
                libc::ENOSPC
            }
            StoreError::Db(heed::Error::Mdb(heed::MdbError::MapFull)) => libc::ENOSPC,
            StoreError::Poisoned
            | StoreError::Db(_)
            | StoreError::Io { .. }
            | StoreError::Journal { .. }
            | StoreError::Corrupt(_)
            | StoreError::Sqlite { .. } => libc::EIO,
        }
    }

    /// True for the answers the C daemon gives to a well-formed request
    /// (they change nothing and are replicated results, not node failures).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound
                | StoreError::Exists
                | StoreError::NotDirectory
                | StoreError::NotEmpty
                | StoreError::Access
                | StoreError::TooBig
                | StoreError::PathTooLong
                | StoreError::Invalid(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk says ENOSPC (C: EIO); other disk failures EIO.
    #[test]
    fn disk_failures_map_to_their_errno() {
        let io = |errno| StoreError::Io {
            path: PathBuf::from("/x"),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(io(libc::ENOSPC).errno(), libc::ENOSPC);
        assert_eq!(io(libc::EIO).errno(), libc::EIO);
        let db = |errno| StoreError::Db(heed::Error::Io(std::io::Error::from_raw_os_error(errno)));
        assert_eq!(db(libc::ENOSPC).errno(), libc::ENOSPC);
        assert_eq!(db(libc::EIO).errno(), libc::EIO);
        assert_eq!(
            StoreError::Db(heed::Error::Mdb(heed::MdbError::MapFull)).errno(),
            libc::ENOSPC
        );
    }

    /// A refusal is a replicated answer to a request; a disk or database
    /// failure is this node's trouble (the DCDB leaves the group on it).
    #[test]
    fn refusals_are_told_from_node_failures() {
        for refusal in [
            StoreError::NotFound,
            StoreError::Exists,
            StoreError::NotDirectory,
            StoreError::NotEmpty,
            StoreError::Access,
            StoreError::TooBig,
            StoreError::PathTooLong,
            StoreError::Invalid("x"),
        ] {
            assert!(refusal.is_refusal(), "{refusal}");
        }
        for failure in [
            StoreError::Poisoned,
            StoreError::Corrupt("x".into()),
            StoreError::Io {
                path: PathBuf::from("/x"),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            },
            StoreError::Db(heed::Error::Mdb(heed::MdbError::MapFull)),
        ] {
            assert!(!failure.is_refusal(), "{failure}");
        }
    }
}
