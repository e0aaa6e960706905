//! The few FUSE request and reply layouts cluster mode reads and writes
//! itself (linux/fuse.h, protocol 7.x): mutating requests are parked until
//! their DCDB message came back through CPG, so they are answered outside
//! fuse-backend-rs's request/reply cycle.

use bytemuck::{Pod, Zeroable};
use fuse_backend_rs::abi::fuse_abi::stat64;
use std::time::Duration;

pub const FUSE_SETATTR: u32 = 4;
pub const FUSE_MKNOD: u32 = 8;
pub const FUSE_MKDIR: u32 = 9;
pub const FUSE_UNLINK: u32 = 10;
pub const FUSE_RMDIR: u32 = 11;
pub const FUSE_RENAME: u32 = 12;
pub const FUSE_WRITE: u32 = 16;
pub const FUSE_CREATE: u32 = 35;
pub const FUSE_RENAME2: u32 = 45;

pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_MTIME: u32 = 1 << 5;
pub const FATTR_MTIME_NOW: u32 = 1 << 8;

pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub node_id: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}
const _: () = assert!(size_of::<InHeader>() == 40);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct OutHeader {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}
const _: () = assert!(size_of::<OutHeader>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct WriteIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub write_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}
const _: () = assert!(size_of::<WriteIn>() == 40);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SetattrIn {
    pub valid: u32,
    pub padding: u32,
    pub fh: u64,
    pub size: u64,
    pub lock_owner: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub unused4: u32,
    pub uid: u32,
    pub gid: u32,
    pub unused5: u32,
}
const _: () = assert!(size_of::<SetattrIn>() == 88);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct CreateIn {
    pub flags: u32,
    pub mode: u32,
    pub umask: u32,
    pub open_flags: u32,
}
const _: () = assert!(size_of::<CreateIn>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MknodIn {
    pub mode: u32,
    pub rdev: u32,
    pub umask: u32,
    pub padding: u32,
}
const _: () = assert!(size_of::<MknodIn>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MkdirIn {
    pub mode: u32,
    pub umask: u32,
}
const _: () = assert!(size_of::<MkdirIn>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RenameIn {
    pub newdir: u64,
}
const _: () = assert!(size_of::<RenameIn>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Rename2In {
    pub newdir: u64,
    pub flags: u32,
    pub padding: u32,
}
const _: () = assert!(size_of::<Rename2In>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<Attr>() == 88);

impl Attr {
    pub fn from_stat(stat: &stat64) -> Attr {
        Attr {
            ino: stat.st_ino,
            size: stat.st_size as u64,
            blocks: stat.st_blocks as u64,
            atime: stat.st_atime as u64,
            mtime: stat.st_mtime as u64,
            ctime: stat.st_ctime as u64,
            atimensec: 0,
            mtimensec: 0,
            ctimensec: 0,
            mode: stat.st_mode,
            nlink: stat.st_nlink as u32,
            uid: stat.st_uid,
            gid: stat.st_gid,
            rdev: stat.st_rdev as u32,
            blksize: stat.st_blksize as u32,
            flags: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct EntryOut {
    pub node_id: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: Attr,
}
const _: () = assert!(size_of::<EntryOut>() == 128);

impl EntryOut {
    pub fn new(node_id: u64, stat: &stat64, entry_ttl: Duration, attr_ttl: Duration) -> EntryOut {
        EntryOut {
            node_id,
            generation: 0,
            entry_valid: entry_ttl.as_secs(),
            attr_valid: attr_ttl.as_secs(),
            entry_valid_nsec: entry_ttl.subsec_nanos(),
            attr_valid_nsec: attr_ttl.subsec_nanos(),
            attr: Attr::from_stat(stat),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttrOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: Attr,
}
const _: () = assert!(size_of::<AttrOut>() == 104);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
    pub padding: u32,
}
const _: () = assert!(size_of::<OpenOut>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct WriteOut {
    pub size: u32,
    pub padding: u32,
}
const _: () = assert!(size_of::<WriteOut>() == 8);

/// Reads a `T` at `offset`; `None` if the bytes are not all there.
pub fn read_at<T: Pod>(bytes: &[u8], offset: usize) -> Option<T> {
    let end = offset.checked_add(size_of::<T>())?;
    bytemuck::try_pod_read_unaligned(bytes.get(offset..end)?).ok()
}

/// The NUL-terminated name at `offset` and the offset after its NUL.
pub fn name_at(bytes: &[u8], offset: usize) -> Option<(&[u8], usize)> {
    let rest = bytes.get(offset..)?;
    let nul = rest.iter().position(|byte| *byte == 0)?;
    Some((&rest[..nul], offset + nul + 1))
}

/// A reply: header plus the given body parts.
pub fn reply(unique: u64, parts: &[&[u8]]) -> Vec<u8> {
    let len = size_of::<OutHeader>() + parts.iter().map(|part| part.len()).sum::<usize>();
    let header = OutHeader {
        len: len as u32,
        error: 0,
        unique,
    };
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(bytemuck::bytes_of(&header));
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// A kernel cache entry to drop after the current reply was sent (a FUSE
/// notification).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Invalidation {
    Entry {
        parent: u64,
        name: Vec<u8>,
    },
    /// Attributes and cached pages.
    Inode {
        node_id: u64,
    },
    /// Attributes only (modes change with quorum).
    Attributes {
        node_id: u64,
    },
}

/// FUSE notification codes (fuse_notify_code).
const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;

/// `fuse_notify_inval_inode_out`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NotifyInvalInodeOut {
    pub ino: u64,
    /// Negative: attributes only.
    pub off: i64,
    /// 0: all pages from `off`.
    pub len: i64,
}
const _: () = assert!(size_of::<NotifyInvalInodeOut>() == 24);

/// `fuse_notify_inval_entry_out`, followed by the name and its NUL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NotifyInvalEntryOut {
    pub parent: u64,
    pub namelen: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<NotifyInvalEntryOut>() == 16);

/// One notification message: the out header (unique 0, the code in the
/// error field) and the code's body.
pub fn encode_notification(invalidation: &Invalidation) -> Vec<u8> {
    let inode = |node_id: u64, off: i64| NotifyInvalInodeOut {
        ino: node_id,
        off,
        len: 0,
    };
    let (code, mut message) = match invalidation {
        Invalidation::Inode { node_id } => (
            FUSE_NOTIFY_INVAL_INODE,
            reply(0, &[bytemuck::bytes_of(&inode(*node_id, 0))]),
        ),
        Invalidation::Attributes { node_id } => (
            FUSE_NOTIFY_INVAL_INODE,
            reply(0, &[bytemuck::bytes_of(&inode(*node_id, -1))]),
        ),
        Invalidation::Entry { parent, name } => {
            let body = NotifyInvalEntryOut {
                parent: *parent,
                namelen: name.len() as u32,
                flags: 0,
            };
            (
                FUSE_NOTIFY_INVAL_ENTRY,
                reply(0, &[bytemuck::bytes_of(&body), name, &[0]]),
            )
        }
    };
    message[4..8].copy_from_slice(&code.to_le_bytes());
    message
}

/// An error reply (`errno` positive).
pub fn reply_error(unique: u64, errno: i32) -> Vec<u8> {
    let header = OutHeader {
        len: size_of::<OutHeader>() as u32,
        error: -errno,
        unique,
    };
    bytemuck::bytes_of(&header).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_have_the_kernel_layout() {
        let entry = encode_notification(&Invalidation::Entry {
            parent: 7,
            name: b"lock-a".to_vec(),
        });
        assert_eq!(entry.len(), 16 + 16 + 7);
        assert_eq!(&entry[0..4], &(39u32).to_le_bytes());
        assert_eq!(&entry[4..8], &3i32.to_le_bytes());
        assert_eq!(&entry[8..16], &0u64.to_le_bytes());
        assert_eq!(&entry[16..24], &7u64.to_le_bytes());
        assert_eq!(&entry[24..28], &6u32.to_le_bytes());
        assert_eq!(&entry[28..32], &0u32.to_le_bytes());
        assert_eq!(&entry[32..], b"lock-a\0");
        let attributes = encode_notification(&Invalidation::Attributes { node_id: 9 });
        assert_eq!(attributes.len(), 40);
        assert_eq!(&attributes[24..32], &(-1i64).to_le_bytes());
        let inode = encode_notification(&Invalidation::Inode { node_id: 9 });
        assert_eq!(inode.len(), 40);
        assert_eq!(&inode[0..4], &40u32.to_le_bytes());
        assert_eq!(&inode[4..8], &2i32.to_le_bytes());
        assert_eq!(&inode[16..24], &9u64.to_le_bytes());
        assert_eq!(&inode[24..40], &[0; 16]);
    }

    #[test]
    fn replies_have_the_kernel_layout() {
        let ok = reply(
            9,
            &[bytemuck::bytes_of(&WriteOut {
                size: 5,
                padding: 0,
            })],
        );
        assert_eq!(ok.len(), 24);
        assert_eq!(&ok[0..4], &24u32.to_le_bytes());
        assert_eq!(&ok[4..8], &0i32.to_le_bytes());
        assert_eq!(&ok[8..16], &9u64.to_le_bytes());
        assert_eq!(&ok[16..20], &5u32.to_le_bytes());
        let error = reply_error(3, libc::EACCES);
        assert_eq!(error.len(), 16);
        assert_eq!(&error[4..8], &(-libc::EACCES).to_le_bytes());
    }

    #[test]
    fn names_are_nul_terminated() {
        let bytes = b"\x01\x02abc\0de\0";
        assert_eq!(name_at(bytes, 2), Some((&b"abc"[..], 6)));
        assert_eq!(name_at(bytes, 6), Some((&b"de"[..], 9)));
        assert_eq!(name_at(bytes, 9), None);
        assert_eq!(name_at(b"abc", 0), None);
        assert_eq!(read_at::<RenameIn>(b"1234567", 0).map(|r| r.newdir), None);
    }
}
