//! The `/etc/pve` view: node ids, modes and ownership, the special root
//! entries (symlinks and virtual files), attributes, lookups, reads and
//! directory listings with the C daemon's errno (spec/filesystem.md), and
//! the state every request shares ([`Core`], behind `PmxFs`'s mutex).
//!
//! Node ids: FUSE's root (1) is store inode 0, store inode `i` is node id
//! `i + 1` (store inodes are stable across renames), and the ten special
//! entries live above `SPECIAL_BASE`.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{SetattrValid, stat64, statvfs64};
use fuse_backend_rs::api::filesystem::{Entry, ZeroCopyWriter};
use pmxcfs_store::{ApplyPermit, EntryRef, Kind, Reader, Session, StoreError, path};

use crate::clock::now_secs;
use crate::error::FsError;
use crate::quorum::QuorumGate;
use crate::replicator::{Backend, Replies};
use crate::status::{Status, vmlist_text};
use crate::wire::Invalidation;

const ROOT_ID: u64 = 1;
const SPECIAL_BASE: u64 = 1 << 62;
/// How long the kernel may cache entries and attributes of tree entries.
/// Every change of the tree goes through this process, which invalidates
/// what the kernel did not change itself (see `Invalidation`).
const TREE_TTL: Duration = Duration::from_secs(10);
/// Virtual files change without a FUSE request: never cached.
const VIRTUAL_TTL: Duration = Duration::ZERO;
const BLOCK_SIZE: u64 = 4096;
/// What statfs reports (never enforced, as in the C daemon).
const FS_BLOCKS: u64 = 32768;
const FS_FILES: u64 = 262_144;
/// Longest name accepted for new entries: the FUSE limit of the kernels the
/// C daemon runs on (newer kernels allow 4096, which C nodes cannot open).
const NAME_BYTES_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Virtual {
    Version,
    Members,
    Vmlist,
    Rrd,
    ClusterLog,
    Debug,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// A symlink to `nodes/<nodename>` plus the suffix.
    Link(&'static str),
    Virtual(Virtual),
}

/// The root's special entries, in the C daemon's readdir order.
const SPECIALS: [(&str, Special); 10] = [
    ("local", Special::Link("")),
    ("qemu-server", Special::Link("/qemu-server")),
    ("openvz", Special::Link("/openvz")),
    ("lxc", Special::Link("/lxc")),
    (".version", Special::Virtual(Virtual::Version)),
    (".members", Special::Virtual(Virtual::Members)),
    (".vmlist", Special::Virtual(Virtual::Vmlist)),
    (".rrd", Special::Virtual(Virtual::Rrd)),
    (".clusterlog", Special::Virtual(Virtual::ClusterLog)),
    (".debug", Special::Virtual(Virtual::Debug)),
];

pub(crate) fn special_by_name(name: &[u8]) -> Option<(u64, Special)> {
    SPECIALS
        .iter()
        .position(|(special, _)| special.as_bytes() == name)
        .map(|index| (SPECIAL_BASE + index as u64, SPECIALS[index].1))
}

pub(crate) fn special_by_id(node_id: u64) -> Option<Special> {
    let index = node_id.checked_sub(SPECIAL_BASE)?;
    SPECIALS
        .get(usize::try_from(index).ok()?)
        .map(|(_, special)| *special)
}

/// The store inode of a tree node id (node id 0 does not exist).
pub(crate) fn store_inode(node_id: u64) -> io::Result<u64> {
    node_id
        .checked_sub(1)
        .ok_or_else(|| io::Error::from(FsError::NotFound))
}

/// A request names a node id whose entry no longer exists: another node
/// removed or replaced it and the kernel's cached dentry is not invalidated
/// yet (invalidations are asynchronous). ESTALE makes the VFS look the path
/// up again (`LOOKUP_REVAL`) for open, stat, unlink, rename, ..., so the
/// caller sees the current tree instead of a spurious ENOENT.
pub(crate) fn gone() -> io::Error {
    io::Error::from(FsError::Stale)
}

/// A store error for the FUSE server (a failure of the store is logged).
pub(crate) fn store_error(error: StoreError) -> io::Error {
    FsError::Store(error).into()
}

/// Static facts of this node.
#[derive(Clone, Debug)]
pub struct Config {
    pub nodename: String,
    pub www_data_gid: u32,
}

pub(crate) struct Core {
    pub(crate) backend: Backend,
    /// Answers of taken (mutating) requests, for the channel and queues.
    pub(crate) replies: Replies,
    pub(crate) quorum: QuorumGate,
    pub(crate) status: Status,
    pub(crate) config: Config,
    pub(crate) invalidations: Vec<Invalidation>,
    /// Open handles per tree node id.
    pub(crate) open_counts: HashMap<u64, u32>,
    /// Files removed (unlinked or renamed over) while open: served to their
    /// open handles until the last one is released, as the C daemon (through
    /// libfuse's hidden files) does. Not replicated, not persisted.
    pub(crate) orphans: HashMap<u64, Orphan>,
    /// Directory listings taken at the first READDIR of a handle, served by offset until
    /// releasedir: a listing read in several READDIR calls stays consistent
    /// while the directory changes (libfuse's high-level API did the same).
    pub(crate) listings: HashMap<u64, Vec<(u64, u32, Vec<u8>)>>,
    pub(crate) next_handle: u64,
}

#[derive(Debug)]
pub(crate) struct Orphan {
    pub(crate) stat: stat64,
    pub(crate) data: Vec<u8>,
}

impl Core {
    pub(crate) fn session(&self) -> &Session<'static> {
        match &self.backend {
            Backend::Local(local) => local.dcdb.session(),
            Backend::Cluster(cluster) => cluster.session(),
        }
    }

    pub(crate) fn parts(&mut self) -> (&mut Session<'static>, &mut ApplyPermit) {
        match &mut self.backend {
            Backend::Local(local) => local.dcdb.parts(),
            Backend::Cluster(cluster) => cluster.parts(),
        }
    }

    pub(crate) fn session_mut(&mut self) -> &mut Session<'static> {
        self.parts().0
    }

    pub(crate) fn reader(&self) -> Reader<'_> {
        self.session().reader()
    }

    pub(crate) fn quorate(&self) -> bool {
        self.quorum.is_quorate()
    }

    /// The path of a tree node id (`None` for specials and gone entries).
    pub(crate) fn path_of(&self, node_id: u64) -> io::Result<Vec<u8>> {
        if node_id >= SPECIAL_BASE {
            return Err(io::Error::from(FsError::Denied));
        }
        self.reader()
            .path_of(store_inode(node_id)?)
            .map_err(store_error)?
            .ok_or_else(gone)
    }

    pub(crate) fn child_path(&self, parent: u64, name: &[u8]) -> io::Result<Vec<u8>> {
        let mut path = self.path_of(parent)?;
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        Ok(path)
    }

    pub(crate) fn base_stat(&self, node_id: u64) -> stat64 {
        // SAFETY: stat64 is a plain C struct for which all-zero is valid.
        let mut stat: stat64 = unsafe { std::mem::zeroed() };
        stat.st_ino = node_id;
        stat.st_uid = 0;
        stat.st_gid = self.config.www_data_gid;
        stat.st_blksize = BLOCK_SIZE as i64;
        stat
    }

    pub(crate) fn tree_stat(&self, entry: &EntryRef<'_>, path: &[u8]) -> stat64 {
        let node_id = entry.meta.inode + 1;
        let mut stat = self.base_stat(node_id);
        let quorate = self.quorate();
        let (kind_bits, mut mode, nlink) = match entry.meta.kind {
            Kind::Dir => (libc::S_IFDIR, if quorate { 0o777 } else { 0o555 }, 2),
            Kind::File => {
                let mut mode = if quorate { 0o666 } else { 0o444 };
                if is_openvz_script(entry.name) {
                    mode |= 0o100;
                }
                (libc::S_IFREG, mode, 1)
            }
        };
        if node_id == ROOT_ID {
            mode = 0o777;
        }
        mode &= if path::is_private(path) {
            0o700
        } else if entry.meta.kind == Kind::Dir {
            0o755
        } else {
            0o750
        };
        stat.st_mode = kind_bits | mode;
        stat.st_nlink = nlink;
        let size = entry.data.len() as u64;
        stat.st_size = size as i64;
        stat.st_blocks = size.div_ceil(BLOCK_SIZE) as i64;
        let mtime = i64::from(entry.meta.mtime);
        stat.st_mtime = mtime;
        stat.st_atime = mtime;
        stat.st_ctime = mtime;
        stat
    }

    pub(crate) fn special_content(&self, special: Special) -> Vec<u8> {
        match special {
            Special::Link(suffix) => format!("nodes/{}{suffix}", self.config.nodename).into_bytes(),
            Special::Virtual(file) => self.virtual_content(file).into_bytes(),
        }
    }

    pub(crate) fn virtual_content(&self, file: Virtual) -> String {
        match file {
            Virtual::Version => self.version_text(),
            Virtual::Members => self.status.members_text(self.quorate()),
            Virtual::Vmlist => vmlist_text(self.session().vmlist()),
            Virtual::Rrd => {
                let mut dump = self.tables().rrd_dump(now_secs());
                // The IPC dump ends with a NUL; the file does not show it.
                dump.pop();
                String::from_utf8_lossy(&dump).into_owned()
            }
            Virtual::ClusterLog => self
                .cluster_log_text()
                .unwrap_or_else(|| self.status.clusterlog_text()),
            Virtual::Debug => self.status.debug_text().to_string(),
        }
    }

    pub(crate) fn special_stat(&self, node_id: u64, special: Special) -> stat64 {
        let mut stat = self.base_stat(node_id);
        let size = self.special_content(special).len() as i64;
        stat.st_mode = match special {
            Special::Link(_) => libc::S_IFLNK | if self.quorate() { 0o755 } else { 0o555 },
            Special::Virtual(Virtual::Debug) => libc::S_IFREG | 0o640,
            Special::Virtual(_) => libc::S_IFREG | 0o440,
        };
        stat.st_nlink = 1;
        stat.st_size = size;
        stat
    }

    pub(crate) fn getattr(&self, node_id: u64) -> io::Result<(stat64, Duration)> {
        if let Some(special) = special_by_id(node_id) {
            let ttl = match special {
                Special::Link(_) => TREE_TTL,
                Special::Virtual(_) => VIRTUAL_TTL,
            };
            return Ok((self.special_stat(node_id, special), ttl));
        }
        if let Some(orphan) = self.orphans.get(&node_id) {
            return Ok((orphan.stat, VIRTUAL_TTL));
        }
        let path = self.path_of(node_id)?;
        let reader = self.reader();
        let entry = reader
            .entry(store_inode(node_id)?)
            .map_err(store_error)?
            .ok_or_else(gone)?;
        Ok((self.tree_stat(&entry, &path), TREE_TTL))
    }

    pub(crate) fn entry_out(&self, node_id: u64) -> io::Result<Entry> {
        let (attr, ttl) = self.getattr(node_id)?;
        Ok(Entry {
            inode: node_id,
            generation: 0,
            attr,
            attr_flags: 0,
            attr_timeout: ttl,
            entry_timeout: ttl,
        })
    }

    pub(crate) fn lookup(&mut self, parent: u64, name: &[u8]) -> io::Result<Entry> {
        if parent == ROOT_ID
            && let Some((node_id, _)) = special_by_name(name)
        {
            return self.entry_out(node_id);
        }
        if parent >= SPECIAL_BASE {
            return Err(io::Error::from(FsError::NotDirectory));
        }
        // What C nodes' kernels answer (no such name can exist here).
        if name.len() > NAME_BYTES_MAX {
            return Err(io::Error::from(FsError::NameTooLong));
        }
        let child = self
            .reader()
            .child_inode(store_inode(parent)?, name)
            .map_err(store_error)?
            .ok_or_else(|| io::Error::from(FsError::NotFound))?;
        self.remember(parent, name, child + 1);
        self.entry_out(child + 1)
    }

    /// The attributes of a removed file its open handles keep (no link).
    pub(crate) fn orphan_stat(&self, entry: &EntryRef<'_>, path: &[u8]) -> stat64 {
        let mut stat = self.tree_stat(entry, path);
        stat.st_nlink = 0;
        stat
    }

    /// Keeps `orphan` for the open handles of `node_id` if the change just
    /// applied removed its file (a rename onto itself, a failed change
    /// did not).
    pub(crate) fn keep_orphan(&mut self, node_id: u64, orphan: Orphan) {
        let gone = node_id
            .checked_sub(1)
            .is_some_and(|inode| matches!(self.reader().entry(inode), Ok(None)));
        if gone {
            self.orphans.insert(node_id, orphan);
        }
    }

    pub(crate) fn opened(&mut self, node_id: u64) {
        let count = self.open_counts.entry(node_id).or_default();
        *count += 1;
        if *count == 1 {
            self.watch_open(node_id, true);
        }
    }

    pub(crate) fn released(&mut self, node_id: u64) {
        if let Some(count) = self.open_counts.get_mut(&node_id) {
            *count -= 1;
            if *count == 0 {
                self.open_counts.remove(&node_id);
                self.orphans.remove(&node_id);
                self.watch_open(node_id, false);
            }
        }
    }

    /// Refuses changes of the root and of special entries (EACCES), and
    /// names longer than the C nodes' kernels allow (ENAMETOOLONG).
    pub(crate) fn refuse_special(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        if parent >= SPECIAL_BASE || (parent == ROOT_ID && special_by_name(name).is_some()) {
            return Err(io::Error::from(FsError::Denied));
        }
        if name.len() > NAME_BYTES_MAX {
            return Err(io::Error::from(FsError::NameTooLong));
        }
        Ok(())
    }

    /// SETATTR of a special file or of a removed file still open (the
    /// mutation path leaves those to the server).
    pub(crate) fn setattr(
        &mut self,
        node_id: u64,
        attr: &stat64,
        valid: SetattrValid,
    ) -> io::Result<()> {
        if let Some(special) = special_by_id(node_id) {
            return self.setattr_special(special, attr, valid);
        }
        if let Some(orphan) = self.orphans.get_mut(&node_id) {
            // An unlinked file that is still open: its private copy.
            if valid.contains(SetattrValid::SIZE) {
                let size = usize::try_from(attr.st_size)
                    .ok()
                    .filter(|size| *size <= pmxcfs_store::MAX_FILE_SIZE)
                    .ok_or_else(|| io::Error::from(FsError::TooBig))?;
                orphan.data.resize(size, 0);
                orphan.stat.st_size = size as i64;
            }
            if valid.contains(SetattrValid::MTIME) {
                orphan.stat.st_mtime = attr.st_mtime;
            }
            return Ok(());
        }
        // Tree entries are changed through the mutation path only
        // (`mutation.rs` takes every SETATTR of one).
        tracing::error!(node_id, "SETATTR of a tree entry reached the server");
        Err(io::Error::from(FsError::Io))
    }

    pub(crate) fn setattr_special(
        &mut self,
        special: Special,
        attr: &stat64,
        valid: SetattrValid,
    ) -> io::Result<()> {
        if valid.contains(SetattrValid::SIZE) {
            // truncate works only on a file with a write handler (.debug).
            if special != Special::Virtual(Virtual::Debug) {
                return Err(io::Error::from(FsError::Io));
            }
        }
        if valid.contains(SetattrValid::MODE) && attr.st_mode & 0o7777 != 0o640 {
            return Err(io::Error::from(FsError::NotPermitted));
        }
        if valid.intersects(SetattrValid::MTIME | SetattrValid::MTIME_NOW | SetattrValid::ATIME) {
            return Err(io::Error::from(FsError::Denied));
        }
        Ok(())
    }

    /// The checksum of the lock directory at `path` (what an unlock request
    /// names), `None` for anything else. A store failure is logged and
    /// counts as none (the MTIME that follows meets it again).
    pub(crate) fn lock_checksum(&mut self, path: &[u8]) -> Option<[u8; 32]> {
        let (session, permit) = self.parts();
        session
            .writer(permit)
            .lock_checksum(path)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot read a lock directory's checksum");
                None
            })
    }

    pub(crate) fn read(
        &self,
        node_id: u64,
        size: u32,
        offset: u64,
        w: &mut dyn ZeroCopyWriter,
    ) -> io::Result<usize> {
        let copy = |data: &[u8], w: &mut dyn ZeroCopyWriter| -> io::Result<usize> {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let end = start.saturating_add(size as usize).min(data.len());
            w.write_all(&data[start..end])?;
            Ok(end - start)
        };
        if let Some(special) = special_by_id(node_id) {
            return copy(&self.special_content(special), w);
        }
        if let Some(orphan) = self.orphans.get(&node_id) {
            return copy(&orphan.data, w);
        }
        let reader = self.reader();
        let entry = reader
            .entry(store_inode(node_id)?)
            .map_err(store_error)?
            .ok_or_else(gone)?;
        if entry.meta.kind != Kind::File {
            return Err(io::Error::from(FsError::IsDirectory));
        }
        copy(entry.data, w)
    }

    /// WRITE to a special file or to a removed file still open.
    pub(crate) fn write(&mut self, node_id: u64, offset: u64, data: &[u8]) -> io::Result<usize> {
        if let Some(special) = special_by_id(node_id) {
            return self.write_special(special, offset, data);
        }
        if let Some(orphan) = self.orphans.get_mut(&node_id) {
            // Written only to the copy its open handles see.
            let end = usize::try_from(offset)
                .ok()
                .and_then(|start| start.checked_add(data.len()))
                .filter(|end| *end <= pmxcfs_store::MAX_FILE_SIZE)
                .ok_or_else(|| io::Error::from(FsError::TooBig))?;
            if orphan.data.len() < end {
                orphan.data.resize(end, 0);
            }
            orphan.data[end - data.len()..end].copy_from_slice(data);
            orphan.stat.st_size = orphan.data.len() as i64;
            return Ok(data.len());
        }
        // Tree entries are changed through the mutation path only.
        tracing::error!(node_id, "WRITE of a tree entry reached the server");
        Err(io::Error::from(FsError::Io))
    }

    pub(crate) fn write_special(
        &mut self,
        special: Special,
        offset: u64,
        data: &[u8],
    ) -> io::Result<usize> {
        if special != Special::Virtual(Virtual::Debug) || offset != 0 || data.len() < 2 {
            return Err(io::Error::from(FsError::Io));
        }
        match &data[..2] {
            b"0\n" => self.status.debug = false,
            b"1\n" => self.status.debug = true,
            _ => return Err(io::Error::from(FsError::Io)),
        }
        tracing::info!(
            debug = self.status.debug,
            "debug level changed through .debug"
        );
        // The C daemon answers 2 whatever the length of the write.
        Ok(2)
    }

    pub(crate) fn readdir_entries(&self, node_id: u64) -> io::Result<Vec<(u64, u32, Vec<u8>)>> {
        if node_id >= SPECIAL_BASE {
            return Err(io::Error::from(FsError::NotDirectory));
        }
        let mut entries = vec![
            (node_id, libc::DT_UNKNOWN as u32, b".".to_vec()),
            (ROOT_ID, libc::DT_UNKNOWN as u32, b"..".to_vec()),
        ];
        if node_id == ROOT_ID {
            for (index, (name, _)) in SPECIALS.iter().enumerate() {
                entries.push((
                    SPECIAL_BASE + index as u64,
                    libc::DT_UNKNOWN as u32,
                    name.as_bytes().to_vec(),
                ));
            }
        }
        let reader = self.reader();
        reader
            .for_each_child(store_inode(node_id)?, |child| {
                if node_id == ROOT_ID && special_by_name(child.name).is_some() {
                    return true;
                }
                let kind = match child.meta.kind {
                    Kind::Dir => libc::DT_DIR,
                    Kind::File => libc::DT_REG,
                };
                entries.push((child.meta.inode + 1, kind as u32, child.name.to_vec()));
                true
            })
            .map_err(store_error)?;
        Ok(entries)
    }

    pub(crate) fn statfs(&self) -> io::Result<statvfs64> {
        let (count, bytes) = self.reader().usage().map_err(store_error)?;
        // SAFETY: statvfs64 is a plain C struct for which all-zero is valid.
        let mut stat: statvfs64 = unsafe { std::mem::zeroed() };
        stat.f_bsize = BLOCK_SIZE;
        stat.f_frsize = BLOCK_SIZE;
        stat.f_blocks = FS_BLOCKS;
        let used = bytes.div_ceil(BLOCK_SIZE);
        stat.f_bfree = FS_BLOCKS.saturating_sub(used);
        stat.f_bavail = stat.f_bfree;
        stat.f_files = FS_FILES;
        stat.f_ffree = FS_FILES.saturating_sub(count);
        stat.f_favail = stat.f_ffree;
        stat.f_namemax = 256;
        Ok(stat)
    }
}

/// `<vmid>.<x>` or `vps.<x>` with x one of the OpenVZ hook names.
fn is_openvz_script(name: &[u8]) -> bool {
    let Some(dot) = name.iter().position(|byte| *byte == b'.') else {
        return false;
    };
    let (prefix, suffix) = (&name[..dot], &name[dot + 1..]);
    let prefix_ok = prefix == b"vps"
        || (!prefix.is_empty()
            && (b'1'..=b'9').contains(&prefix[0])
            && prefix.iter().all(u8::is_ascii_digit));
    prefix_ok
        && matches!(
            suffix,
            b"mount" | b"umount" | b"start" | b"stop" | b"premount" | b"postumount"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openvz_script_names() {
        for name in ["101.mount", "vps.umount", "9.premount", "100.postumount"] {
            assert!(is_openvz_script(name.as_bytes()), "{name}");
        }
        for name in [
            "0101.mount",
            "101.conf",
            "vps.mountx",
            "abc.stop",
            ".mount",
            "101",
        ] {
            assert!(!is_openvz_script(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn special_ids_round_trip() {
        for (name, special) in SPECIALS {
            let (id, found) = special_by_name(name.as_bytes()).expect("special");
            assert_eq!(found, special);
            assert_eq!(special_by_id(id), Some(special));
        }
        assert_eq!(special_by_id(SPECIAL_BASE + 10), None);
        assert_eq!(special_by_id(5), None);
    }
}
