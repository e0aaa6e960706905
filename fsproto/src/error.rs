//! The one error type of the file system side: every refusal a FUSE or IPC
//! request gets from this crate. It is mapped to the C daemon's errno here
//! ([`FsError::errno`]) and nowhere else; the FUSE server gets it as an
//! `io::Error` of that errno, cluster mode writes it into the reply, the
//! IPC service returns it negated.

use std::io;

use pmxcfs_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    /// The node id names an entry that is gone (another node removed it):
    /// the kernel looks the path up again.
    #[error("stale file handle")]
    Stale,
    /// A special entry or the root, a write without quorum, a group in
    /// error (C: EACCES for all of them).
    #[error("permission denied")]
    Denied,
    /// A mode or owner other than the path's fixed one.
    #[error("operation not permitted")]
    NotPermitted,
    #[error("not a directory")]
    NotDirectory,
    #[error("is a directory")]
    IsDirectory,
    #[error("file name too long")]
    NameTooLong,
    /// Past the 1 MiB file limit (or a status value past its limit).
    #[error("file too large")]
    TooBig,
    /// A malformed request, unsupported flags.
    #[error("invalid argument")]
    Invalid,
    /// MKNOD of anything but a regular file.
    #[error("not supported")]
    NotSupported,
    /// A symbolic link followed as a directory.
    #[error("too many levels of symbolic links")]
    Loop,
    #[error("bad file handle")]
    BadHandle,
    /// Too many writes wait for the cluster group already.
    #[error("try again")]
    Again,
    /// A status value that cannot be stored.
    #[error("not enough memory")]
    NoMemory,
    /// A failure of this node (the request may be fine).
    #[error("input/output error")]
    Io,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An errno chosen by another layer (the kernel, fuse-backend-rs).
    #[error(transparent)]
    Os(io::Error),
}

impl FsError {
    /// An errno another layer chose (positive).
    pub fn from_errno(code: i32) -> FsError {
        FsError::Os(io::Error::from_raw_os_error(code))
    }

    /// The errno a client sees (positive).
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Stale => libc::ESTALE,
            FsError::Denied => libc::EACCES,
            FsError::NotPermitted => libc::EPERM,
            FsError::NotDirectory => libc::ENOTDIR,
            FsError::IsDirectory => libc::EISDIR,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::TooBig => libc::EFBIG,
            FsError::Invalid => libc::EINVAL,
            FsError::NotSupported => libc::ENOSYS,
            FsError::Loop => libc::ELOOP,
            FsError::BadHandle => libc::EBADF,
            FsError::Again => libc::EAGAIN,
            FsError::NoMemory => libc::ENOMEM,
            FsError::Io => libc::EIO,
            FsError::Store(error) => error.errno(),
            FsError::Os(error) => error.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

impl From<io::Error> for FsError {
    fn from(error: io::Error) -> FsError {
        FsError::Os(error)
    }
}

impl From<FsError> for io::Error {
    fn from(error: FsError) -> io::Error {
        if let FsError::Store(store) = &error
            && !store.is_refusal()
        {
            tracing::error!(%store, "store failure");
        }
        match error {
            FsError::Os(error) => error,
            error => io::Error::from_raw_os_error(error.errno()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_errno_and_survives_io_error() {
        let cases = [
            (FsError::NotFound, libc::ENOENT),
            (FsError::Stale, libc::ESTALE),
            (FsError::Denied, libc::EACCES),
            (FsError::NotPermitted, libc::EPERM),
            (FsError::NotDirectory, libc::ENOTDIR),
            (FsError::IsDirectory, libc::EISDIR),
            (FsError::NameTooLong, libc::ENAMETOOLONG),
            (FsError::TooBig, libc::EFBIG),
            (FsError::Invalid, libc::EINVAL),
            (FsError::NotSupported, libc::ENOSYS),
            (FsError::Loop, libc::ELOOP),
            (FsError::BadHandle, libc::EBADF),
            (FsError::Again, libc::EAGAIN),
            (FsError::NoMemory, libc::ENOMEM),
            (FsError::Io, libc::EIO),
            (FsError::Store(StoreError::Exists), libc::EEXIST),
            (
                FsError::Os(io::Error::from_raw_os_error(libc::ENOTCONN)),
                libc::ENOTCONN,
            ),
            (FsError::Os(io::Error::other("no errno")), libc::EIO),
        ];
        for (error, errno) in cases {
            assert_eq!(error.errno(), errno, "{error}");
            let io: io::Error = error.into();
            assert_eq!(io.raw_os_error().unwrap_or(libc::EIO), errno);
            assert_eq!(FsError::from(io).errno(), errno, "back again");
        }
    }
}
