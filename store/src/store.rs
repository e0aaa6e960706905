//! The tree on LMDB: the environment, its databases, and the read view.
//!
//! Layout (one LMDB environment in `<data-dir>/lmdb/`):
//! * `entries`: inode (u64 big-endian, so iteration is inode order) ->
//!   `EntryHeader` + name + data. Inode 0 is the root; its version, writer
//!   and mtime are the global ones.
//! * `children`: parent inode (u64 BE) + name -> child inode (u64 LE). Names
//!   longer than `DIRENT_NAME_INLINE` are stored as a prefix + NUL + SHA-256
//!   of the whole name (LMDB keys are at most 511 bytes; names never hold NUL,
//!   so the two forms never collide).
//! * `meta`: `format` (u32) and `journal_seq` (u64, the last journal record
//!   contained in this checkpoint).

use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, WithoutTls};
use sha2::{Digest, Sha256};

use crate::entry::{EntryRef, Kind, Meta, ROOT_INODE, flags, hash_entry};
use crate::error::{Result, StoreError};
use crate::path;
use crate::row::{Row, VERSION_ROW_NAME};

/// On-disk format of the LMDB store; bumped on incompatible changes.
pub const FORMAT: u32 = 1;
const META_FORMAT: &[u8] = b"format";
const META_JOURNAL_SEQ: &[u8] = b"journal_seq";
/// Names up to this length are stored verbatim in `children` keys.
const DIRENT_NAME_INLINE: usize = 400;
/// Virtual size of the LMDB map. The tree is small (the C daemon reports a
/// 128 MiB file system); the map only reserves address space.
const MAP_SIZE_BYTES: usize = 4 << 30;

pub(crate) fn inode_key(inode: u64) -> [u8; 8] {
    inode.to_be_bytes()
}

pub(crate) fn dirent_key(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + name.len().min(DIRENT_NAME_INLINE + 33));
    key.extend_from_slice(&parent.to_be_bytes());
    if name.len() <= DIRENT_NAME_INLINE {
        key.extend_from_slice(name);
    } else {
        key.extend_from_slice(&name[..DIRENT_NAME_INLINE]);
        key.push(0);
        key.extend_from_slice(&Sha256::digest(name));
    }
    key
}

fn decode_inode_value(value: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("child value of {} bytes", value.len())))?;
    Ok(u64::from_le_bytes(bytes))
}

pub(crate) struct Dbs {
    pub(crate) entries: Database<'static, Bytes, Bytes>,
    pub(crate) children: Database<'static, Bytes, Bytes>,
    pub(crate) meta: Database<'static, Bytes, Bytes>,
}

/// An opened data directory. Cheap to share; reads on any thread through
/// `snapshot`, writes only through the one `Session` (see `session.rs`).
pub struct Store {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) dbs: Dbs,
    pub(crate) dir: PathBuf,
}

impl Store {
    /// Leaks the store for the rest of the process, so that its sessions are
    /// `Session<'static>` (the daemon keeps one for its whole life).
    pub fn leak(self) -> &'static Store {
        Box::leak(Box::new(self))
    }

    /// Frees a store from [`Store::leak`] and closes its LMDB environment
    /// (the last closer removes LMDB's writer/reader semaphores from
    /// /dev/shm; a store never closed leaves them there).
    ///
    /// # Safety
    /// Nothing borrowed from `store` (sessions, readers, transactions) may
    /// exist any more, and `store` must not be used afterwards.
    pub unsafe fn reclaim(store: &'static Store) {
        // SAFETY: `store` came from `Box::leak` in `Store::leak`, and the
        // caller guarantees that no borrow of it is left.
        drop(unsafe { Box::from_raw(std::ptr::from_ref(store).cast_mut()) });
    }

    /// Opens the store in `dir`, creating it if missing (its `lmdb`
    /// directory mode 0700; `dir` itself keeps its mode, as the C daemon's
    /// `/var/lib/pve-cluster` does). A new store holds only the root, at
    /// global version 1 (spec/memdb.md §3).
    pub fn open(dir: &Path) -> Result<Store> {
        let lmdb_dir = dir.join("lmdb");
        std::fs::create_dir_all(&lmdb_dir).map_err(|error| StoreError::io(&lmdb_dir, error))?;
        restrict_permissions(&lmdb_dir)?;
        let env = open_env(&lmdb_dir)?;
        if let Some(dbs) = open_dbs(&env)? {
            return Ok(Store {
                env,
                dbs,
                dir: dir.to_path_buf(),
            });
        }
        let dbs = create_dbs(&env)?;
        tracing::info!(dir = %dir.display(), "created a new store");
        Ok(Store {
            env,
            dbs,
            dir: dir.to_path_buf(),
        })
    }

    /// Opens an existing store for reading without taking LMDB's writer
    /// lock and without changing anything on disk, so it works while a
    /// daemon holds the store's write transaction (`pmxcfs dump`).
    pub fn open_existing(dir: &Path) -> Result<Store> {
        let lmdb_dir = dir.join("lmdb");
        if !lmdb_dir.join("data.mdb").is_file() {
            return Err(StoreError::Invalid("no store in this data directory"));
        }
        let env = open_env(&lmdb_dir)?;
        let dbs = open_dbs(&env)?.ok_or(StoreError::Invalid("no store in this data directory"))?;
        Ok(Store {
            env,
            dbs,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn journal_path(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// A read transaction on the last checkpoint. Changes applied by the
    /// session since then are in its journal, not here: other processes
    /// (`pmxcfs dump`) see the state of the last checkpoint.
    pub fn snapshot(&self) -> Result<Snapshot<'_>> {
        Ok(Snapshot {
            txn: self.env.read_txn()?,
            dbs: &self.dbs,
        })
    }

    pub(crate) fn journal_seq(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<u64> {
        let value = self
            .dbs
            .meta
            .get(txn, META_JOURNAL_SEQ)?
            .ok_or_else(|| StoreError::Corrupt("journal_seq missing".into()))?;
        Ok(u64::from_le_bytes(value.try_into().map_err(|_| {
            StoreError::Corrupt("journal_seq has a wrong size".into())
        })?))
    }

    pub(crate) fn put_journal_seq(&self, txn: &mut heed::RwTxn<'_>, seq: u64) -> Result<()> {
        self.dbs
            .meta
            .put(txn, META_JOURNAL_SEQ, &seq.to_le_bytes())?;
        Ok(())
    }

    /// Writes a consistent copy of the last checkpoint to `lmdb_dir`. LMDB's
    /// compacting copy runs in a read transaction; the plain copy would wait
    /// for the writer lock, which a running daemon holds.
    pub fn copy_checkpoint_to(&self, lmdb_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(lmdb_dir).map_err(|error| StoreError::io(lmdb_dir, error))?;
        let target = lmdb_dir.join("data.mdb");
        self.env
            .copy_to_path(&target, heed::CompactionOption::Enabled)?;
        Ok(())
    }

    /// Bytes the LMDB file occupies on disk.
    pub fn disk_size_bytes(&self) -> Result<u64> {
        Ok(self.env.real_disk_size()?)
    }
}

fn open_env(lmdb_dir: &Path) -> Result<Env<WithoutTls>> {
    // SAFETY: heed's open is unsafe because the map must not be modified
    // by anything but LMDB; the directory is ours (mode 0700) and the
    // daemon's single-instance lock keeps other writers away.
    let env = unsafe {
        EnvOpenOptions::new()
            .read_txn_without_tls()
            .map_size(MAP_SIZE_BYTES)
            .max_dbs(4)
            .max_readers(126)
            .open(lmdb_dir)?
    };
    Ok(env)
}

/// Opens the databases of an initialised store with a read transaction;
/// `None` if the store was never initialised.
fn open_dbs(env: &Env<WithoutTls>) -> Result<Option<Dbs>> {
    let opened = env
        .open_databases_and_commit(env.read_txn()?, |opener, txn| {
            let entries = opener.open_database(txn, Some("entries"))?;
            let children = opener.open_database(txn, Some("children"))?;
            let meta = opener.open_database(txn, Some("meta"))?;
            Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(
                entries.zip(children).zip(meta),
            ))
        })?
        .unwrap_commit();
    let Some(((entries, children), meta)) = opened else {
        return Ok(None);
    };
    let dbs = Dbs {
        entries,
        children,
        meta,
    };
    let txn = env.read_txn()?;
    match dbs.meta.get(&txn, META_FORMAT)? {
        None => Ok(None),
        Some(format) if format == FORMAT.to_le_bytes() => Ok(Some(dbs)),
        Some(other) => Err(StoreError::Corrupt(format!(
            "store format {other:?} is not {FORMAT}"
        ))),
    }
}

/// Creates the databases and the root of a new store in one transaction.
fn create_dbs(env: &Env<WithoutTls>) -> Result<Dbs> {
    let (entries, children, meta) = env
        .create_databases_and_commit(env.write_txn()?, |opener, txn| {
            let entries: Database<'_, Bytes, Bytes> =
                opener.create_database(txn, Some("entries"))?;
            let children = opener.create_database(txn, Some("children"))?;
            let meta: Database<'_, Bytes, Bytes> = opener.create_database(txn, Some("meta"))?;
            if meta.get(txn, META_FORMAT)?.is_none() {
                let root = Meta {
                    inode: ROOT_INODE,
                    parent: 0,
                    version: 1,
                    writer: 0,
                    mtime: 0,
                    kind: Kind::Dir,
                };
                let value = crate::entry::encode_value(&root, 0, b"", b"");
                entries.put(txn, &inode_key(ROOT_INODE), &value)?;
                meta.put(txn, META_FORMAT, &FORMAT.to_le_bytes())?;
                meta.put(txn, META_JOURNAL_SEQ, &0u64.to_le_bytes())?;
            }
            Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((entries, children, meta)))
        })?
        .unwrap_commit();
    Ok(Dbs {
        entries,
        children,
        meta,
    })
}

fn restrict_permissions(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|error| StoreError::io(dir, error))
}

/// A read-only view of the last checkpoint, usable from any thread.
pub struct Snapshot<'s> {
    txn: RoTxn<'s, WithoutTls>,
    dbs: &'s Dbs,
}

impl Snapshot<'_> {
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            txn: &self.txn,
            dbs: self.dbs,
        }
    }
}

/// Read access to the tree inside one transaction. This is the `CanRead`
/// level of the type states: it has no method that changes anything.
#[derive(Clone, Copy)]
pub struct Reader<'t> {
    pub(crate) txn: &'t RoTxn<'t, WithoutTls>,
    pub(crate) dbs: &'t Dbs,
}

impl<'t> Reader<'t> {
    pub fn entry(&self, inode: u64) -> Result<Option<EntryRef<'t>>> {
        match self.dbs.entries.get(self.txn, &inode_key(inode))? {
            None => Ok(None),
            Some(value) => EntryRef::decode(inode, value)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("entry {inode} does not decode"))),
        }
    }

    pub fn root(&self) -> Result<EntryRef<'t>> {
        self.entry(ROOT_INODE)?
            .ok_or_else(|| StoreError::Corrupt("the root entry is missing".into()))
    }

    /// The inode of `name` in directory `parent`.
    pub fn child_inode(&self, parent: u64, name: &[u8]) -> Result<Option<u64>> {
        match self.dbs.children.get(self.txn, &dirent_key(parent, name))? {
            None => Ok(None),
            Some(value) => decode_inode_value(value).map(Some),
        }
    }

    /// The entry `name` in directory `parent`.
    pub fn child(&self, parent: u64, name: &[u8]) -> Result<Option<EntryRef<'t>>> {
        let Some(inode) = self.child_inode(parent, name)? else {
            return Ok(None);
        };
        match self.entry(inode)? {
            Some(entry) if entry.name == name && entry.meta.parent == parent => Ok(Some(entry)),
            _ => Err(StoreError::Corrupt(format!(
                "child link {parent}/{} -> {inode} is dangling",
                String::from_utf8_lossy(name)
            ))),
        }
    }

    /// Walks `parts` from the root. A component below a file is not found.
    pub fn resolve_parts(&self, parts: &[&[u8]]) -> Result<Option<EntryRef<'t>>> {
        let mut current = self.root()?;
        for part in parts {
            if current.meta.kind != Kind::Dir {
                return Ok(None);
            }
            match self.child(current.meta.inode, part)? {
                Some(next) => current = next,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }

    /// Resolves a relative path like `memdb_lookup_path`: empty components
    /// are ignored, exactly `""`, `.` and `/` are the root, any other `.` is
    /// a literal name.
    pub fn resolve(&self, path: &[u8]) -> Result<Option<EntryRef<'t>>> {
        self.resolve_parts(&path::parts_of_lookup(path))
    }

    /// The directory that will hold a new or changed entry: missing ->
    /// ENOENT, a file -> ENOTDIR (the C daemon's checks, in that order).
    pub fn parent_dir(&self, parts: &[&[u8]]) -> Result<EntryRef<'t>> {
        match self.resolve_parts(parts)? {
            None => Err(StoreError::NotFound),
            Some(entry) if entry.meta.kind != Kind::Dir => Err(StoreError::NotDirectory),
            Some(entry) => Ok(entry),
        }
    }

    /// Calls `visit` for every child of `parent` (in key order) until it
    /// returns false.
    pub fn for_each_child(
        &self,
        parent: u64,
        mut visit: impl FnMut(EntryRef<'t>) -> bool,
    ) -> Result<()> {
        let prefix = parent.to_be_bytes();
        for item in self.dbs.children.prefix_iter(self.txn, &prefix)? {
            let (_, value) = item?;
            let inode = decode_inode_value(value)?;
            let entry = self.entry(inode)?.ok_or_else(|| {
                StoreError::Corrupt(format!("child {inode} of {parent} is missing"))
            })?;
            if !visit(entry) {
                break;
            }
        }
        Ok(())
    }

    pub fn has_children(&self, inode: u64) -> Result<bool> {
        let prefix = inode.to_be_bytes();
        Ok(self
            .dbs
            .children
            .prefix_iter(self.txn, &prefix)?
            .next()
            .transpose()?
            .is_some())
    }

    /// Calls `visit` for every entry, root first, in ascending inode order.
    pub fn for_each_entry(&self, mut visit: impl FnMut(EntryRef<'t>) -> Result<()>) -> Result<()> {
        for item in self.dbs.entries.iter(self.txn)? {
            let (key, value) = item?;
            let inode = u64::from_be_bytes(
                key.try_into()
                    .map_err(|_| StoreError::Corrupt("entry key of wrong size".into()))?,
            );
            let entry = EntryRef::decode(inode, value)
                .ok_or_else(|| StoreError::Corrupt(format!("entry {inode} does not decode")))?;
            visit(entry)?;
        }
        Ok(())
    }

    /// The C daemon's index blob (spec/memdb.md §6): the DCDB state.
    pub fn index(&self) -> Result<Vec<u8>> {
        let root = self.root()?;
        let mut entries = Vec::new();
        let mut count = 0u32;
        let mut last_inode = 0u64;
        self.for_each_entry(|entry| {
            entries.extend_from_slice(&entry.meta.inode.to_le_bytes());
            entries.extend_from_slice(&entry.index_digest());
            count += 1;
            last_inode = entry.meta.inode;
            Ok(())
        })?;
        let mut blob = Vec::with_capacity(32 + entries.len());
        blob.extend_from_slice(&root.meta.version.to_le_bytes());
        blob.extend_from_slice(&last_inode.to_le_bytes());
        blob.extend_from_slice(&root.meta.writer.to_le_bytes());
        blob.extend_from_slice(&root.meta.mtime.to_le_bytes());
        blob.extend_from_slice(&count.to_le_bytes());
        blob.extend_from_slice(&(32 + 40 * count).to_le_bytes());
        blob.extend_from_slice(&entries);
        Ok(blob)
    }

    /// The whole-tree checksum of VERIFY (spec/memdb.md §5.2).
    pub fn checksum(&self) -> Result<[u8; 32]> {
        let mut hasher = Sha256::new();
        self.for_each_entry(|entry| {
            hash_entry(&mut hasher, &entry.meta, entry.name, entry.data, true);
            Ok(())
        })?;
        Ok(hasher.finalize().into())
    }

    /// The path of an entry (for logs, dumps and the C daemon's path-keyed
    /// tables). `None` if an ancestor is missing.
    pub fn path_of(&self, inode: u64) -> Result<Option<Vec<u8>>> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut current = inode;
        while current != ROOT_INODE {
            let Some(entry) = self.entry(current)? else {
                return Ok(None);
            };
            names.push(entry.name);
            current = entry.meta.parent;
            if names.len() > 4096 {
                return Err(StoreError::Corrupt(format!("parent loop at inode {inode}")));
            }
        }
        names.reverse();
        Ok(Some(path::join(&names)))
    }

    /// The entry as a row of the C daemon's table (the root becomes the
    /// `__version__` row).
    pub fn row_of(entry: &EntryRef<'_>) -> Row {
        if entry.meta.inode == ROOT_INODE {
            let kind = if entry.flags & flags::VERSION_ROW_DIR != 0 {
                Kind::Dir
            } else {
                Kind::File
            };
            return Row {
                inode: ROOT_INODE,
                parent: 0,
                version: entry.meta.version,
                writer: entry.meta.writer,
                mtime: entry.meta.mtime,
                kind: kind as u8,
                name: VERSION_ROW_NAME.to_vec(),
                data: None,
            };
        }
        let data = match entry.meta.kind {
            Kind::File | Kind::Dir
                if entry.data.is_empty() && entry.flags & flags::EMPTY_BLOB != 0 =>
            {
                Some(Vec::new())
            }
            Kind::File if entry.data.is_empty() => None,
            Kind::File => Some(entry.data.to_vec()),
            Kind::Dir => None,
        };
        Row {
            inode: entry.meta.inode,
            parent: entry.meta.parent,
            version: entry.meta.version,
            writer: entry.meta.writer,
            mtime: entry.meta.mtime,
            kind: entry.meta.kind as u8,
            name: entry.name.to_vec(),
            data,
        }
    }

    /// Number of entries (root included) and the sum of file sizes.
    pub fn usage(&self) -> Result<(u64, u64)> {
        let mut count = 0u64;
        let mut bytes = 0u64;
        self.for_each_entry(|entry| {
            count += 1;
            bytes += entry.data.len() as u64;
            Ok(())
        })?;
        Ok((count, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory written by another store format is refused, not
    /// read as this one (both when opened for writing and for reading).
    #[test]
    fn a_store_of_another_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            let mut txn = store.env.write_txn().expect("txn");
            store
                .dbs
                .meta
                .put(&mut txn, META_FORMAT, &(FORMAT + 1).to_le_bytes())
                .expect("put");
            txn.commit().expect("commit");
        }
        for opened in [Store::open(dir.path()), Store::open_existing(dir.path())] {
            match opened {
                Err(StoreError::Corrupt(reason)) => assert!(reason.contains("format"), "{reason}"),
                Err(other) => panic!("{other}"),
                Ok(_) => panic!("another format was opened"),
            }
        }
    }

    /// A directory entry that names an inode whose own name or parent
    /// differ is damage, reported as such (not followed).
    #[test]
    fn a_child_link_to_an_entry_of_another_name_or_parent_is_dangling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        {
            let (mut session, mut permit) =
                store.session(crate::Durability::Relaxed).expect("session");
            let origin = crate::Origin {
                writer: 0,
                mtime: 1,
            };
            let mut writer = session.writer(&mut permit);
            writer
                .apply(&crate::Op::Mkdir { path: b"d" }, origin)
                .expect("mkdir");
            writer
                .apply(&crate::Op::Create { path: b"d/f" }, origin)
                .expect("create");
            session.close().expect("close");
        }
        let mut txn = store.env.write_txn().expect("txn");
        let (dir_inode, file_inode) = {
            let reader = Reader {
                txn: &txn,
                dbs: &store.dbs,
            };
            let dir_inode = reader.child_inode(ROOT_INODE, b"d").expect("read");
            let file_inode = reader
                .child_inode(dir_inode.expect("d"), b"f")
                .expect("read");
            (dir_inode.expect("d"), file_inode.expect("f"))
        };
        let file_link = file_inode.to_le_bytes();
        // Same parent, another name; the right name in another directory.
        for (parent, name) in [(dir_inode, &b"g"[..]), (ROOT_INODE, b"f")] {
            store
                .dbs
                .children
                .put(&mut txn, &dirent_key(parent, name), &file_link)
                .expect("put");
        }
        let reader = Reader {
            txn: &txn,
            dbs: &store.dbs,
        };
        assert!(
            reader
                .child(dir_inode, b"f")
                .expect("the real link")
                .is_some()
        );
        for (parent, name) in [(dir_inode, &b"g"[..]), (ROOT_INODE, b"f")] {
            match reader.child(parent, name) {
                Err(StoreError::Corrupt(reason)) => {
                    assert!(reason.contains("dangling"), "{reason}")
                }
                other => panic!("{:?}", other.map(|entry| entry.map(|e| e.meta.inode))),
            }
        }
    }
}
