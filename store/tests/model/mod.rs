//! An independent reference model of the pmxcfs tree, written from
//! spec/memdb.md and spec/filesystem.md §6 / §8 (check order taken from the
//! C daemon's memdb.c), used to test `pmxcfs-store` differentially.
//!
//! Plain maps, no LMDB: entries by inode (the root, inode 0, carries the
//! global version/writer/mtime), children by (parent inode, name), and the
//! guest list with its uniqueness rule. Every operation returns
//! `Ok(value)` or `Err(errno)` (positive), like `StoreError::errno`.
//!
//! Deliberate deviations from the C daemon that the store adopted and this
//! model therefore adopts as well:
//! 1. growing an empty file by truncate / zero-length write zero-fills;
//! 2. rename onto the very same entry is a no-op returning 0 (no version bump);
//! 3. rename to a new name `""`, `.` or `..` is refused with EACCES;
//! 4. (C quirk kept) rename of a non-empty directory onto an existing file or
//!    empty directory removes the target, then fails with ENOTEMPTY;
//! 5. a fresh tree is at version 1, root writer 0, mtime 0.
//!
//! Moving a directory into itself is undefined in C (use-after-free): with
//! an existing target (its only child) the model removes the target and
//! answers ENOTEMPTY like quirk 4; with a new name it answers `UNDEFINED`
//! and the harness requires some refusal that changes nothing.
//!
//! Path classification (lock parent, guest config paths) is done on the
//! path's non-empty components; lookup and the dirname/basename split
//! follow spec/memdb.md §10 (GLib style: the dirname `.` is the root).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

pub const MAX_FILE_SIZE: u64 = 1024 * 1024;
pub const ENOENT: i32 = libc::ENOENT;
pub const EEXIST: i32 = libc::EEXIST;
pub const ENOTDIR: i32 = libc::ENOTDIR;
pub const ENOTEMPTY: i32 = libc::ENOTEMPTY;
pub const EACCES: i32 = libc::EACCES;
pub const EFBIG: i32 = libc::EFBIG;
/// Not an errno: the C daemon has undefined behaviour for this request
/// (moving a directory into itself, a use-after-free in memdb_rename); the
/// model leaves the tree unchanged and the harness accepts any error.
pub const UNDEFINED: i32 = -1;

pub const DT_DIR: u8 = 4;
pub const DT_REG: u8 = 8;

/// Guest types as numbered in the C vmlist.
pub const QEMU: u8 = 1;
pub const OPENVZ: u8 = 2;
pub const LXC: u8 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub inode: u64,
    pub parent: u64,
    pub version: u64,
    pub writer: u32,
    pub mtime: u32,
    /// DT_DIR or DT_REG.
    pub kind: u8,
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// Directory rows written by mtime/rename carry an empty blob, not NULL.
    pub empty_blob: bool,
}

/// A row of the C daemon's sqlite `tree` table (spec/memdb.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRow {
    pub inode: u64,
    pub parent: u64,
    pub version: u64,
    pub writer: u32,
    pub mtime: u32,
    pub kind: u8,
    pub name: Vec<u8>,
    pub data: Option<Vec<u8>>,
}

/// vmid -> (node, type)
pub type GuestList = BTreeMap<u32, (Vec<u8>, u8)>;
/// vmid -> every (node, type) that holds a config for it
pub type Duplicates = BTreeMap<u32, Vec<(Vec<u8>, u8)>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPath {
    pub vmid: u32,
    pub node: Vec<u8>,
    pub kind: u8,
}

/// One tree operation, owning its bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum MOp {
    Create(Vec<u8>),
    Mkdir(Vec<u8>),
    Write {
        path: Vec<u8>,
        offset: u64,
        data: Vec<u8>,
        truncate: bool,
    },
    Delete(Vec<u8>),
    Rename(Vec<u8>, Vec<u8>),
    Mtime(Vec<u8>, u32),
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

impl fmt::Debug for MOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MOp::Create(p) => write!(f, "Create({})", show(p)),
            MOp::Mkdir(p) => write!(f, "Mkdir({})", show(p)),
            MOp::Write {
                path,
                offset,
                data,
                truncate,
            } => {
                let preview: Vec<u8> = data.iter().take(8).copied().collect();
                write!(
                    f,
                    "Write({}, off={offset}, len={}, trunc={truncate}, data~{preview:?})",
                    show(path),
                    data.len()
                )
            }
            MOp::Delete(p) => write!(f, "Delete({})", show(p)),
            MOp::Rename(a, b) => write!(f, "Rename({} -> {})", show(a), show(b)),
            MOp::Mtime(p, m) => write!(f, "Mtime({}, {m})", show(p)),
        }
    }
}

/// The tree. Cloneable so a harness can keep the state of the last commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// Rename to a new name "", "." or "..": refuse it (EACCES) before the
    /// target's parent is checked. The C daemon checks the parent first
    /// (ENOENT / ENOTDIR) and then has no name check at all, so the
    /// spec-faithful order is `false`.
    pub rename_name_first: bool,
    pub entries: BTreeMap<u64, Entry>,
    pub children: BTreeMap<(u64, Vec<u8>), u64>,
    pub vmlist: GuestList,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// Path rules (spec/memdb.md §10, filesystem.md §6.4, §8)

/// GLib-style split after removing trailing slashes: (dirname, basename).
pub fn split_path(path: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = path.len();
    while end > 0 && path[end - 1] == b'/' {
        end -= 1;
    }
    let p = &path[..end];
    if p.is_empty() {
        return (b".".to_vec(), b".".to_vec());
    }
    match p.iter().rposition(|b| *b == b'/') {
        None => (b".".to_vec(), p.to_vec()),
        Some(slash) => {
            let base = p[slash + 1..].to_vec();
            // Drop the run of separators before the basename, keep at
            // least one character.
            let mut last = slash;
            while last > 0 && p[last] == b'/' {
                last -= 1;
            }
            (p[..=last].to_vec(), base)
        }
    }
}

/// Non-empty components of a path.
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect()
}

pub fn is_forbidden_name(name: &[u8]) -> bool {
    name.is_empty() || name == b"." || name == b".."
}

fn is_vm_config_name(name: &[u8]) -> Option<u32> {
    let digits = name.strip_suffix(b".conf")?;
    let first = *digits.first()?;
    if !(b'1'..=b'9').contains(&first) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: u64 = 0;
    for d in digits {
        value = value * 10 + u64::from(d - b'0');
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    Some(value as u32)
}

fn is_ldh(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || (*b == b'-' && i != 0 && i != name.len() - 1)
        })
}

fn guest_type(name: &[u8]) -> Option<u8> {
    match name {
        b"qemu-server" => Some(QEMU),
        b"openvz" => Some(OPENVZ),
        b"lxc" => Some(LXC),
        _ => None,
    }
}

/// `nodes/<node>/<type>/<vmid>.conf`.
pub fn guest_path(path: &[u8]) -> Option<GuestPath> {
    let (dir, base) = split_path(path);
    let vmid = is_vm_config_name(&base)?;
    match components(&dir)[..] {
        [nodes, node, kind] if nodes == b"nodes" && is_ldh(node) => Some(GuestPath {
            vmid,
            node: node.to_vec(),
            kind: guest_type(kind)?,
        }),
        _ => None,
    }
}

/// The dirname is the lock directory `priv/lock`.
fn is_lock_parent(dirname: &[u8]) -> bool {
    components(dirname) == [&b"priv"[..], b"lock"]
}

/// `path_is_lockdir`: after leading slashes, `priv/lock/` plus one byte.
pub fn is_lockdir_path(path: &[u8]) -> bool {
    let start = path.iter().position(|b| *b != b'/').unwrap_or(path.len());
    let p = &path[start..];
    p.len() > 10 && p.starts_with(b"priv/lock/")
}

// ---------------------------------------------------------------------------
// Digests (spec/memdb.md §5, §6)

fn hash_input(e: &Entry, with_inode: bool, hasher: &mut Sha256) {
    if with_inode {
        hasher.update(e.inode.to_le_bytes());
    }
    hasher.update(e.version.to_le_bytes());
    hasher.update(e.writer.to_le_bytes());
    hasher.update(e.mtime.to_le_bytes());
    let size = if e.kind == DT_REG {
        e.data.len() as u32
    } else {
        0
    };
    hasher.update(size.to_le_bytes());
    hasher.update([e.kind]);
    hasher.update(e.parent.to_le_bytes());
    hasher.update(&e.name);
    if e.kind == DT_REG && !e.data.is_empty() {
        hasher.update(&e.data);
    }
}

pub fn entry_checksum(e: &Entry) -> [u8; 32] {
    let mut h = Sha256::new();
    hash_input(e, true, &mut h);
    h.finalize().into()
}

pub fn index_digest(e: &Entry) -> [u8; 32] {
    let mut h = Sha256::new();
    hash_input(e, false, &mut h);
    h.finalize().into()
}

// ---------------------------------------------------------------------------

impl Model {
    pub fn new() -> Model {
        let root = Entry {
            inode: 0,
            parent: 0,
            version: 1,
            writer: 0,
            mtime: 0,
            kind: DT_DIR,
            name: Vec::new(),
            data: Vec::new(),
            empty_blob: false,
        };
        Model {
            rename_name_first: false,
            entries: BTreeMap::from([(0, root)]),
            children: BTreeMap::new(),
            vmlist: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Entry {
        &self.entries[&0]
    }

    pub fn version(&self) -> u64 {
        self.root().version
    }

    fn child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.children.get(&(parent, name.to_vec())).copied()
    }

    fn is_dir(&self, inode: u64) -> bool {
        self.entries[&inode].kind == DT_DIR
    }

    fn has_children(&self, inode: u64) -> bool {
        self.children
            .range((inode, Vec::new())..)
            .next()
            .is_some_and(|((p, _), _)| *p == inode)
    }

    fn children_of(&self, inode: u64) -> Vec<u64> {
        self.children
            .range((inode, Vec::new())..)
            .take_while(|((p, _), _)| *p == inode)
            .map(|(_, c)| *c)
            .collect()
    }

    /// `memdb_lookup_path`: "", "." and "/" are the root; otherwise every
    /// non-empty component is looked up literally; a file in the middle of
    /// the path ends the lookup (not found).
    pub fn lookup(&self, path: &[u8]) -> Option<u64> {
        if path == b"." {
            return Some(0);
        }
        let mut current = 0u64;
        for comp in components(path) {
            if !self.is_dir(current) {
                return None;
            }
            current = self.child(current, comp)?;
        }
        Some(current)
    }

    pub fn resolve(&self, path: &[u8]) -> Option<&Entry> {
        self.lookup(path).map(|i| &self.entries[&i])
    }

    /// The directory a new name of `path` goes into, and that name:
    /// ENOENT / ENOTDIR.
    fn parent_of(&self, path: &[u8]) -> Result<(u64, Vec<u8>, Vec<u8>), i32> {
        let (dirname, base) = split_path(path);
        let parent = self.parent_dir(&dirname)?;
        Ok((parent, dirname, base))
    }

    fn parent_dir(&self, dirname: &[u8]) -> Result<u64, i32> {
        let parent = self.lookup(dirname).ok_or(ENOENT)?;
        if !self.is_dir(parent) {
            return Err(ENOTDIR);
        }
        Ok(parent)
    }

    fn bump(&mut self, writer: u32, mtime: u32) -> u64 {
        let root = self.entries.get_mut(&0).expect("root");
        root.version += 1;
        root.writer = writer;
        root.mtime = mtime;
        root.version
    }

    fn vm_conflicts(&self, g: &GuestPath) -> bool {
        self.vmlist
            .get(&g.vmid)
            .is_some_and(|(node, kind)| *node != g.node || *kind != g.kind)
    }

    fn register(&mut self, g: &GuestPath) {
        self.vmlist.insert(g.vmid, (g.node.clone(), g.kind));
    }

    fn unlink(&mut self, inode: u64) -> Entry {
        let e = self.entries.remove(&inode).expect("entry");
        self.children.remove(&(e.parent, e.name.clone()));
        e
    }

    /// Applies one operation with the sender's writer id and clock.
    pub fn apply(&mut self, op: &MOp, writer: u32, mtime: u32) -> Result<u32, i32> {
        match op {
            MOp::Create(path) => self.pwrite(path, 0, &[], false, true, writer, mtime),
            MOp::Write {
                path,
                offset,
                data,
                truncate,
            } => self.pwrite(path, *offset, data, *truncate, false, writer, mtime),
            MOp::Mkdir(path) => self.mkdir(path, writer, mtime),
            MOp::Delete(path) => self.delete(path, writer, mtime),
            MOp::Rename(from, to) => self.rename(from, to, writer, mtime),
            // utimens: the new mtime is the op's, the origin's clock is unused.
            MOp::Mtime(path, new_mtime) => self.mtime(path, writer, *new_mtime),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pwrite(
        &mut self,
        path: &[u8],
        offset: u64,
        data: &[u8],
        truncate: bool,
        create: bool,
        writer: u32,
        mtime: u32,
    ) -> Result<u32, i32> {
        let count = data.len() as u64;
        match offset.checked_add(count) {
            Some(end) if end <= MAX_FILE_SIZE => {}
            _ => return Err(EFBIG),
        }
        let (parent, _, base) = self.parent_of(path)?;
        if is_forbidden_name(&base) {
            return Err(EACCES);
        }
        let guest = guest_path(path);
        if let Some(g) = &guest
            && self.vm_conflicts(g)
        {
            return Err(EEXIST);
        }
        let inode = match self.child(parent, &base) {
            Some(inode) => {
                if !self.is_dir(inode) {
                    if create {
                        return Err(EEXIST);
                    }
                } else {
                    return Err(ENOTDIR);
                }
                inode
            }
            None => {
                if !create {
                    return Err(ENOENT);
                }
                let version = self.version() + 1;
                self.entries.insert(
                    version,
                    Entry {
                        inode: version,
                        parent,
                        version,
                        writer,
                        mtime,
                        kind: DT_REG,
                        name: base.clone(),
                        data: Vec::new(),
                        empty_blob: false,
                    },
                );
                self.children.insert((parent, base), version);
                version
            }
        };
        let version = self.bump(writer, mtime);
        let e = self.entries.get_mut(&inode).expect("entry");
        e.version = version;
        e.writer = writer;
        e.mtime = mtime;
        let end = (offset + count) as usize;
        if end > e.data.len() || truncate {
            // Growing zero-fills (also for an empty file: deviation 1).
            e.data.resize(end, 0);
        }
        e.data[offset as usize..end].copy_from_slice(data);
        if let Some(g) = &guest {
            self.register(g);
        }
        Ok(count as u32)
    }

    fn mkdir(&mut self, path: &[u8], writer: u32, mtime: u32) -> Result<u32, i32> {
        let (parent, _, base) = self.parent_of(path)?;
        if is_forbidden_name(&base) {
            return Err(EACCES);
        }
        if self.child(parent, &base).is_some() {
            return Err(EEXIST);
        }
        let version = self.bump(writer, mtime);
        self.entries.insert(
            version,
            Entry {
                inode: version,
                parent,
                version,
                writer,
                mtime,
                kind: DT_DIR,
                name: base.clone(),
                data: Vec::new(),
                empty_blob: false,
            },
        );
        self.children.insert((parent, base), version);
        Ok(0)
    }

    fn mtime(&mut self, path: &[u8], writer: u32, mtime: u32) -> Result<u32, i32> {
        let (parent, dirname, base) = self.parent_of(path)?;
        if is_forbidden_name(&base) {
            return Err(EACCES);
        }
        let inode = self.child(parent, &base).ok_or(ENOENT)?;
        let e = &self.entries[&inode];
        if e.kind == DT_DIR && is_lock_parent(&dirname) && (mtime < e.mtime || writer != e.writer) {
            return Err(EACCES);
        }
        let version = self.bump(writer, mtime);
        let e = self.entries.get_mut(&inode).expect("entry");
        e.version = version;
        e.writer = writer;
        e.mtime = mtime;
        if e.kind == DT_DIR {
            e.empty_blob = true;
        }
        Ok(0)
    }

    fn delete(&mut self, path: &[u8], writer: u32, mtime: u32) -> Result<u32, i32> {
        let inode = self.lookup(path).ok_or(ENOENT)?;
        if inode == 0 {
            return Err(EACCES);
        }
        if self.is_dir(inode) && self.has_children(inode) {
            return Err(ENOTEMPTY);
        }
        self.unlink(inode);
        self.bump(writer, mtime);
        if let Some(g) = guest_path(path) {
            self.vmlist.remove(&g.vmid);
        }
        Ok(0)
    }

    fn rename(&mut self, from: &[u8], to: &[u8], writer: u32, mtime: u32) -> Result<u32, i32> {
        let source = self.lookup(from).ok_or(ENOENT)?;
        if source == 0 {
            return Err(EACCES);
        }
        let source_is_dir = self.is_dir(source);
        let from_guest = guest_path(from);
        let to_guest = guest_path(to);
        if !source_is_dir
            && let Some(g) = &to_guest
            && self.vm_conflicts(g)
            && from_guest.as_ref().is_none_or(|f| f.vmid != g.vmid)
        {
            return Err(EEXIST);
        }
        if source_is_dir && is_lockdir_path(from) {
            return Err(EACCES);
        }
        let (target_parent, target_name) = match self.lookup(to) {
            Some(target) => {
                if target == source {
                    return Ok(0); // deviation 2
                }
                if target == 0 {
                    return Err(EACCES);
                }
                if self.is_dir(target) && self.has_children(target) {
                    return Err(ENOTEMPTY);
                }
                let parent = self.entries[&target].parent;
                if parent == source && self.children_of(source).len() == 1 {
                    // The source would be moved into itself: undefined in C
                    // (use-after-free). The store removes the target first,
                    // as in quirk 4, and then refuses; adopted here.
                    self.unlink(target);
                    return Err(ENOTEMPTY);
                }
                // Removed before the source check below (quirk 4).
                let removed = self.unlink(target);
                (removed.parent, removed.name)
            }
            None => {
                if self.rename_name_first && is_forbidden_name(&split_path(to).1) {
                    return Err(EACCES);
                }
                let (parent, _, base) = self.parent_of(to)?;
                if is_forbidden_name(&base) {
                    return Err(EACCES); // deviation 3
                }
                if parent == source {
                    return Err(UNDEFINED);
                }
                (parent, base)
            }
        };
        if source_is_dir && self.has_children(source) {
            return Err(ENOTEMPTY);
        }
        let version = self.bump(writer, mtime);
        let mut e = self.unlink(source);
        e.parent = target_parent;
        e.name = target_name.clone();
        e.version = version;
        e.writer = writer;
        e.mtime = mtime;
        if e.kind == DT_DIR {
            e.empty_blob = true;
        }
        self.entries.insert(source, e);
        self.children.insert((target_parent, target_name), source);
        if !source_is_dir {
            if let Some(f) = &from_guest {
                self.vmlist.remove(&f.vmid);
            }
            if let Some(g) = &to_guest {
                self.register(g);
            }
        }
        Ok(0)
    }

    // -----------------------------------------------------------------------
    // Views

    /// The DCDB state blob (spec/memdb.md §6).
    pub fn index(&self) -> Vec<u8> {
        let root = self.root();
        let count = self.entries.len() as u32;
        let last_inode = *self.entries.keys().next_back().expect("root");
        let mut out = Vec::new();
        out.extend_from_slice(&root.version.to_le_bytes());
        out.extend_from_slice(&last_inode.to_le_bytes());
        out.extend_from_slice(&root.writer.to_le_bytes());
        out.extend_from_slice(&root.mtime.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&(32 + 40 * count).to_le_bytes());
        for e in self.entries.values() {
            out.extend_from_slice(&e.inode.to_le_bytes());
            out.extend_from_slice(&index_digest(e));
        }
        out
    }

    /// The VERIFY checksum (spec/memdb.md §5.2).
    pub fn checksum(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for e in self.entries.values() {
            hash_input(e, true, &mut h);
        }
        h.finalize().into()
    }

    /// The sqlite rows, root as the `__version__` row, ascending inode.
    pub fn rows(&self) -> Vec<ModelRow> {
        self.entries
            .values()
            .map(|e| {
                if e.inode == 0 {
                    return ModelRow {
                        inode: 0,
                        parent: 0,
                        version: e.version,
                        writer: e.writer,
                        mtime: e.mtime,
                        kind: DT_REG,
                        name: b"__version__".to_vec(),
                        data: None,
                    };
                }
                let data = if e.kind == DT_REG {
                    (!e.data.is_empty()).then(|| e.data.clone())
                } else {
                    e.empty_blob.then(Vec::new)
                };
                ModelRow {
                    inode: e.inode,
                    parent: e.parent,
                    version: e.version,
                    writer: e.writer,
                    mtime: e.mtime,
                    kind: e.kind,
                    name: e.name.clone(),
                    data,
                }
            })
            .collect()
    }

    /// Guest configs found in the tree (startup rebuild): files named
    /// `<vmid>.conf` in `nodes/<ldh>/<type>/` directories. Returns the list
    /// and the candidates for vmids that occur more than once.
    pub fn scan_guests(&self) -> (GuestList, Duplicates) {
        let mut all: BTreeMap<u32, Vec<(Vec<u8>, u8)>> = BTreeMap::new();
        if let Some(nodes) = self.child(0, b"nodes")
            && self.is_dir(nodes)
        {
            for ((p, node_name), node) in self.children.range((nodes, Vec::new())..) {
                if *p != nodes {
                    break;
                }
                if !self.is_dir(*node) || !is_ldh(node_name) {
                    continue;
                }
                for (type_name, kind) in [
                    (&b"qemu-server"[..], QEMU),
                    (b"openvz", OPENVZ),
                    (b"lxc", LXC),
                ] {
                    let Some(dir) = self.child(*node, type_name) else {
                        continue;
                    };
                    if !self.is_dir(dir) {
                        continue;
                    }
                    for ((p, name), file) in self.children.range((dir, Vec::new())..) {
                        if *p != dir {
                            break;
                        }
                        if self.is_dir(*file) {
                            continue;
                        }
                        if let Some(vmid) = is_vm_config_name(name) {
                            all.entry(vmid).or_default().push((node_name.clone(), kind));
                        }
                    }
                }
            }
        }
        let mut unique = BTreeMap::new();
        let mut duplicates = BTreeMap::new();
        for (vmid, candidates) in all {
            if candidates.len() == 1 {
                unique.insert(vmid, candidates[0].clone());
            } else {
                duplicates.insert(vmid, candidates);
            }
        }
        (unique, duplicates)
    }
}
