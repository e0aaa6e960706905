//! The errno battery of the FUSE view, run through any mount: a local-mode
//! daemon (`tests/fuse_local.rs`) and a node of the 3-node cluster
//! (`tests/cluster_daemon.rs`), whose answers must be the same.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::{assert_errno, now_secs, ok, statx_sync, utime};

/// A mounted pmxcfs to run the battery through.
pub trait Mount {
    /// A path inside the mount (`rel` without leading `/`; "" the root).
    fn path(&self, rel: &str) -> PathBuf;
}

impl Mount for super::Daemon {
    fn path(&self, rel: &str) -> PathBuf {
        super::Daemon::path(self, rel)
    }
}

impl Mount for super::node::Node {
    fn path(&self, rel: &str) -> PathBuf {
        super::node::Node::path(self, rel)
    }
}

#[track_caller]
pub fn mkdirs(daemon: &impl Mount, dirs: &[&str]) {
    for dir in dirs {
        ok(
            fs::create_dir_all(daemon.path(dir)),
            &format!("mkdir -p {dir}"),
        );
    }
}

#[track_caller]
pub fn put(daemon: &impl Mount, rel: &str, content: impl AsRef<[u8]>) {
    ok(
        fs::write(daemon.path(rel), content),
        &format!("write {rel}"),
    );
}

#[track_caller]
pub fn get(daemon: &impl Mount, rel: &str) -> Vec<u8> {
    ok(fs::read(daemon.path(rel)), &format!("read {rel}"))
}

/// The names a readdir of `dir` lists, in its order, duplicates kept.
#[track_caller]
pub fn listing(dir: &Path) -> Vec<String> {
    ok(fs::read_dir(dir), &format!("readdir {}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[track_caller]
pub fn names_in(dir: &Path) -> BTreeSet<String> {
    listing(dir).into_iter().collect()
}

/// Attributes fresh from the daemon (statx with AT_STATX_FORCE_SYNC, no
/// symlink following).
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub kind: u32,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
}

#[track_caller]
pub fn attr(path: &Path) -> Attr {
    let st = ok(statx_sync(path), &format!("statx {}", path.display()));
    Attr {
        kind: u32::from(st.stx_mode) & libc::S_IFMT,
        perm: u32::from(st.stx_mode) & 0o7777,
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        blocks: st.stx_blocks,
        atime: st.stx_atime.tv_sec,
        mtime: st.stx_mtime.tv_sec,
        ctime: st.stx_ctime.tv_sec,
    }
}

/// The tree operations and errnos of spec/filesystem.md §10 through a mount
/// (local mode, or the origin node of a cluster: the same answers).
pub fn tree_operations_and_errnos_on(daemon: &impl Mount) {
    let p = |rel: &str| daemon.path(rel);

    mkdirs(daemon, &["dir", "priv/lock/x"]);
    put(daemon, "file.cfg", "f");
    put(daemon, "dir/inner.cfg", "i");

    assert_errno(fs::create_dir(p("dir")), libc::EEXIST, "mkdir existing dir");
    assert_errno(fs::create_dir(p("file.cfg")), libc::EEXIST, "mkdir on file");
    assert_errno(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p("file.cfg")),
        libc::EEXIST,
        "O_EXCL create of existing file",
    );
    assert_errno(
        fs::write(p("missing/x.cfg"), "x"),
        libc::ENOENT,
        "create in missing dir",
    );
    assert_errno(
        fs::create_dir(p("missing/sub")),
        libc::ENOENT,
        "mkdir in missing dir",
    );
    assert_errno(
        fs::write(p("file.cfg/x.cfg"), "x"),
        libc::ENOTDIR,
        "file as parent (create)",
    );
    assert_errno(
        fs::create_dir(p("file.cfg/sub")),
        libc::ENOTDIR,
        "file as parent (mkdir)",
    );
    assert_errno(fs::remove_dir(p("dir")), libc::ENOTEMPTY, "rmdir non-empty");
    assert_errno(fs::remove_file(p("dir")), libc::EISDIR, "unlink(dir)");
    assert_errno(fs::remove_dir(p("file.cfg")), libc::ENOTDIR, "rmdir(file)");
    assert_errno(
        fs::remove_file(p("nothing.cfg")),
        libc::ENOENT,
        "unlink missing",
    );
    assert_errno(fs::read(p("nothing.cfg")), libc::ENOENT, "read missing");

    // rename a file
    put(daemon, "r1.cfg", "one");
    ok(fs::rename(p("r1.cfg"), p("r2.cfg")), "rename file");
    assert_errno(fs::metadata(p("r1.cfg")), libc::ENOENT, "old name gone");
    assert_eq!(get(daemon, "r2.cfg"), b"one");
    // rename over an existing file replaces it
    put(daemon, "r3.cfg", "three");
    ok(fs::rename(p("r3.cfg"), p("r2.cfg")), "rename over file");
    assert_eq!(get(daemon, "r2.cfg"), b"three");
    assert_errno(fs::metadata(p("r3.cfg")), libc::ENOENT, "source gone");
    // rename into another directory
    ok(
        fs::rename(p("r2.cfg"), p("dir/r2.cfg")),
        "rename across dirs",
    );
    assert_eq!(get(daemon, "dir/r2.cfg"), b"three");
    assert_errno(
        fs::rename(p("dir/r2.cfg"), p("missing/r2.cfg")),
        libc::ENOENT,
        "rename into missing dir",
    );

    // rename gives the moved entry a new mtime (now); creating a child
    // leaves the directory's mtime alone (filesystem.md §9a)
    let start = now_secs();
    put(daemon, "m.cfg", "m");
    ok(utime(&p("m.cfg"), 1000, 1000), "utime m.cfg");
    ok(fs::rename(p("m.cfg"), p("m2.cfg")), "rename m.cfg");
    let moved = attr(&p("m2.cfg")).mtime;
    assert!(moved >= start - 1, "mtime after rename {moved}, want now");
    ok(utime(&p("dir"), 1000, 1000), "utime dir");
    put(daemon, "dir/child.cfg", "c");
    assert_eq!(
        attr(&p("dir")).mtime,
        1000,
        "dir mtime after creating a child"
    );
    // utimens keeps the low 32 bits of the seconds (C: `uint32_t mtime =
    // tv_sec`), in both modes
    let child = p("dir/child.cfg");
    ok(utime(&child, 0, -1), "utime before 1970");
    assert_eq!(attr(&child).mtime, i64::from(u32::MAX), "mtime -1");
    ok(utime(&child, 0, (1 << 32) + 7), "utime after 2106");
    assert_eq!(attr(&child).mtime, 7, "mtime 2^32 + 7");

    // rename directories: only empty ones
    mkdirs(daemon, &["e1", "e2"]);
    ok(fs::rename(p("e1"), p("e1moved")), "rename empty dir");
    assert!(p("e1moved").is_dir());
    assert_errno(fs::metadata(p("e1")), libc::ENOENT, "old dir name gone");
    ok(
        fs::rename(p("e1moved"), p("e2")),
        "rename empty dir over empty dir",
    );
    assert!(p("e2").is_dir());
    assert_errno(fs::metadata(p("e1moved")), libc::ENOENT, "source dir gone");
    assert_errno(
        fs::rename(p("dir"), p("dirmoved")),
        libc::ENOTEMPTY,
        "rename non-empty dir",
    );
    assert_eq!(
        get(daemon, "dir/inner.cfg"),
        b"i",
        "refused rename kept dir"
    );
    assert_errno(
        fs::rename(p("e2"), p("dir")),
        libc::ENOTEMPTY,
        "rename dir over non-empty dir",
    );
    assert_eq!(get(daemon, "dir/inner.cfg"), b"i", "target dir kept");
    mkdirs(daemon, &["nested/sub"]);
    assert_errno(
        fs::rename(p("nested"), p("nested2")),
        libc::ENOTEMPTY,
        "rename dir holding an empty dir",
    );

    // lock directories cannot be renamed
    assert_errno(
        fs::rename(p("priv/lock/x"), p("priv/lock/y")),
        libc::EACCES,
        "rename lock dir",
    );
    assert_errno(
        fs::rename(p("priv/lock/x"), p("xlock")),
        libc::EACCES,
        "rename lock dir out",
    );
    assert!(p("priv/lock/x").is_dir());

    // unlink and rmdir of empty things work
    ok(fs::remove_file(p("file.cfg")), "unlink");
    assert_errno(fs::metadata(p("file.cfg")), libc::ENOENT, "unlinked");
    ok(fs::remove_dir(p("e2")), "rmdir");
    assert_errno(fs::metadata(p("e2")), libc::ENOENT, "removed dir");

    // readdir over many buffers: every entry exactly once
    mkdirs(daemon, &["many"]);
    let mut wanted = BTreeSet::new();
    for i in 0..300 {
        let name = format!("{i:04}-{}", "e".repeat(110));
        ok(
            fs::write(p(&format!("many/{name}")), b""),
            "create in many/",
        );
        wanted.insert(name);
    }
    let listed = listing(&p("many"));
    assert_eq!(listed.len(), 300, "readdir count (duplicates?)");
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), wanted);

    // names: 255 and 1000 bytes work (no limit in the daemon, §6.1)
    for length in [255, 1000] {
        let name = "n".repeat(length);
        put(daemon, &name, format!("{length}"));
        assert_eq!(get(daemon, &name), format!("{length}").as_bytes());
        assert!(
            names_in(&daemon.path("")).contains(&name),
            "readdir {length}"
        );
        let renamed = "r".repeat(length);
        ok(fs::rename(p(&name), p(&renamed)), "rename long name");
        assert_eq!(get(daemon, &renamed), format!("{length}").as_bytes());
    }
    // 1025 bytes: ENAMETOOLONG, the limit the C daemon's kernels set
    // (FUSE_NAME_MAX 1024). Newer kernels pass longer names on; the daemon
    // refuses them itself, so every node of a mixed cluster can open every name.
    let long = "n".repeat(1025);
    assert_errno(
        fs::write(p(&long), "x"),
        libc::ENAMETOOLONG,
        "create 1025-byte name",
    );
    assert_errno(
        fs::create_dir(p(&long)),
        libc::ENAMETOOLONG,
        "mkdir 1025-byte name",
    );
    put(daemon, "short.cfg", "x");
    assert_errno(
        fs::rename(p("short.cfg"), p(&long)),
        libc::ENAMETOOLONG,
        "rename to a 1025-byte name",
    );
    // Looked up, too (C: ENAMETOOLONG from the kernel, not ENOENT).
    assert_errno(
        fs::metadata(p(&long)).map(|_| ()),
        libc::ENAMETOOLONG,
        "stat of a 1025-byte name",
    );
    assert_errno(
        fs::read(p(&long)).map(|_| ()),
        libc::ENAMETOOLONG,
        "open of a 1025-byte name",
    );
    // A name of PATH_MAX bytes is refused by the VFS in any case.
    let too_long = "n".repeat(4096);
    assert_errno(
        fs::write(p(&too_long), "x"),
        libc::ENAMETOOLONG,
        "create 4096-byte name",
    );
    assert_errno(
        fs::create_dir(p(&too_long)),
        libc::ENAMETOOLONG,
        "mkdir 4096-byte name",
    );
}
