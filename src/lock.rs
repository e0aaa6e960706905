//! The daemon's single-instance lock: an exclusive `flock` on
//! `<data-dir>/.pmxcfs.lockfile`, as the C daemon takes on its
//! `/var/lib/pve-cluster/.pmxcfs.lockfile`. Tools that change or need a
//! quiet data directory take it too.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const LOCK_FILE_NAME: &str = ".pmxcfs.lockfile";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{0} is locked by another process: pmxcfs (or another pmxcfs tool) is using this data \
         directory; stop it first"
    )]
    Held(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held until dropped (closing the file releases the lock).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock without waiting; the file is created with mode 0600.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE_NAME);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held(path)),
            Err(TryLockError::Error(source)) => Err(io(source)),
        }
    }
}
