//! The C daemon's rules for mutating requests on tree entries
//! (spec/filesystem.md §§6-8), in one place for both modes: local mode
//! (`fs.rs`, through fuse-backend-rs) and cluster mode (`cluster.rs`, from
//! the raw request) decode a request into the types here and apply or
//! propose what the rules give back. Pure functions: no store, no FUSE.

use pmxcfs_store::path;

use crate::error::FsError;

/// A SETATTR of a tree entry, as either transport decoded it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SetattrRequest {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<MtimeRequest>,
}

/// The mtime a SETATTR asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MtimeRequest {
    /// `UTIME_NOW`: the daemon's clock.
    Now,
    /// Seconds as the kernel passed them (a signed `time_t`).
    Seconds(i64),
}

/// What a SETATTR changes once its rules passed: a truncating write to
/// `size`, then an MTIME (an unlock request first when `unlock` holds the
/// lock directory's checksum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SetattrChanges {
    pub size: Option<u64>,
    pub mtime: Option<u32>,
    pub unlock: Option<[u8; 32]>,
}

/// The SETATTR rules of a tree entry at `path`: a mode only as the path's
/// fixed one (0600 under `priv`, else 0640), owner root and group www-data
/// only (else EPERM); a size up to the 1 MiB limit (else EFBIG); the mtime
/// as C's `uint32_t mtime = tv_sec` (its low 32 bits). An mtime of 0 on a
/// lock directory is also an unlock request (`lock_checksum` gives the
/// directory's checksum; `None` if it is no lock directory).
pub(crate) fn setattr_changes(
    path: &[u8],
    request: &SetattrRequest,
    www_data_gid: u32,
    now: impl FnOnce() -> u32,
    lock_checksum: impl FnOnce() -> Option<[u8; 32]>,
) -> Result<SetattrChanges, FsError> {
    if let Some(mode) = request.mode {
        let wanted = if path::is_private(path) { 0o600 } else { 0o640 };
        if mode & 0o7777 != wanted {
            return Err(FsError::NotPermitted);
        }
    }
    if request.uid.is_some_and(|uid| uid != 0) || request.gid.is_some_and(|gid| gid != www_data_gid)
    {
        return Err(FsError::NotPermitted);
    }
    if request
        .size
        .is_some_and(|size| size > pmxcfs_store::MAX_FILE_SIZE as u64)
    {
        return Err(FsError::TooBig);
    }
    let mtime = request.mtime.map(|mtime| match mtime {
        MtimeRequest::Now => now(),
        // C truncates time_t to its low 32 bits.
        MtimeRequest::Seconds(seconds) => seconds as u32,
    });
    let unlock = match mtime {
        Some(0) if path::is_lockdir(path) => lock_checksum(),
        _ => None,
    };
    Ok(SetattrChanges {
        size: request.size,
        mtime,
        unlock,
    })
}

/// MKNOD makes regular files only (C: ENOSYS for anything else).
pub(crate) fn mknod_allowed(mode: u32) -> Result<(), FsError> {
    if mode & libc::S_IFMT == libc::S_IFREG {
        Ok(())
    } else {
        Err(FsError::NotSupported)
    }
}

/// RENAME2 without flags only (no RENAME_NOREPLACE/EXCHANGE: EINVAL).
pub(crate) fn rename_flags_allowed(flags: u32) -> Result<(), FsError> {
    if flags == 0 {
        Ok(())
    } else {
        Err(FsError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WWW_DATA: u32 = 33;
    const LOCK: &[u8] = b"priv/lock/vm-100";

    fn changes(path: &[u8], request: SetattrRequest) -> Result<SetattrChanges, i32> {
        setattr_changes(path, &request, WWW_DATA, || 1_234, || Some([7; 32]))
            .map_err(|error| error.errno())
    }

    #[test]
    fn modes_owners_and_sizes() {
        let ok = |path: &[u8], request| changes(path, request).map(|_| ());
        let mode = |mode| SetattrRequest {
            mode: Some(mode),
            ..Default::default()
        };
        assert_eq!(ok(b"a.cfg", mode(0o100640)), Ok(()));
        assert_eq!(ok(b"a.cfg", mode(0o600)), Err(libc::EPERM));
        assert_eq!(ok(b"priv/a", mode(0o600)), Ok(()));
        assert_eq!(ok(b"priv/a", mode(0o640)), Err(libc::EPERM));
        assert_eq!(ok(b"a.cfg", mode(0o4640)), Err(libc::EPERM), "set-uid bit");
        let owner = |uid, gid| SetattrRequest {
            uid,
            gid,
            ..Default::default()
        };
        assert_eq!(ok(b"a", owner(Some(0), Some(WWW_DATA))), Ok(()));
        assert_eq!(ok(b"a", owner(Some(0), None)), Ok(()));
        assert_eq!(ok(b"a", owner(None, Some(WWW_DATA))), Ok(()));
        assert_eq!(ok(b"a", owner(Some(1), None)), Err(libc::EPERM));
        assert_eq!(ok(b"a", owner(None, Some(0))), Err(libc::EPERM));
        let size = |size| SetattrRequest {
            size: Some(size),
            ..Default::default()
        };
        let limit = pmxcfs_store::MAX_FILE_SIZE as u64;
        assert_eq!(changes(b"a", size(limit)).map(|c| c.size), Ok(Some(limit)));
        assert_eq!(ok(b"a", size(limit + 1)), Err(libc::EFBIG));
    }

    /// C: `uint32_t mtime = tv[1].tv_sec`; 0 on a lock directory is also
    /// an unlock request, on nothing else.
    #[test]
    fn mtimes_and_unlock_requests() {
        let at = |path: &[u8], mtime| {
            changes(
                path,
                SetattrRequest {
                    mtime: Some(mtime),
                    ..Default::default()
                },
            )
            .expect("allowed")
        };
        assert_eq!(at(b"a", MtimeRequest::Now).mtime, Some(1_234));
        assert_eq!(at(b"a", MtimeRequest::Seconds(5)).mtime, Some(5));
        assert_eq!(at(b"a", MtimeRequest::Seconds(-1)).mtime, Some(u32::MAX));
        assert_eq!(
            at(b"a", MtimeRequest::Seconds((1 << 32) + 9)).mtime,
            Some(9)
        );
        assert_eq!(at(LOCK, MtimeRequest::Seconds(0)).unlock, Some([7; 32]));
        assert_eq!(
            at(LOCK, MtimeRequest::Seconds(1 << 32)).unlock,
            Some([7; 32]),
            "0 in its low 32 bits"
        );
        assert_eq!(at(LOCK, MtimeRequest::Seconds(1)).unlock, None);
        assert_eq!(at(b"priv/lock", MtimeRequest::Seconds(0)).unlock, None);
        assert_eq!(at(b"a", MtimeRequest::Seconds(0)).unlock, None);
        let no_lock = setattr_changes(
            LOCK,
            &SetattrRequest {
                mtime: Some(MtimeRequest::Seconds(0)),
                ..Default::default()
            },
            WWW_DATA,
            || 1,
            || None,
        );
        assert_eq!(no_lock.map(|c| c.unlock).ok(), Some(None));
    }

    #[test]
    fn mknod_and_rename_flags() {
        let errno = |result: Result<(), FsError>| result.map_err(|error| error.errno());
        assert_eq!(errno(mknod_allowed(libc::S_IFREG | 0o640)), Ok(()));
        assert_eq!(
            errno(mknod_allowed(libc::S_IFIFO | 0o640)),
            Err(libc::ENOSYS)
        );
        assert_eq!(errno(rename_flags_allowed(0)), Ok(()));
        assert_eq!(
            errno(rename_flags_allowed(libc::RENAME_NOREPLACE)),
            Err(libc::EINVAL)
        );
    }
}
