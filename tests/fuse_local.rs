//! Black-box tests of the FUSE daemon in local mode (`pmxcfs -f -l`):
//! the real binary on temporary directories, driven with plain std::fs and
//! libc calls, checked against shared/spec/filesystem.md and status.md.
//!
//! Every test runs its own daemon (own mountpoint, data and run dirs, node
//! name); `common::Daemon` tears it down also when an assertion fails.

mod common;

use common::battery::{Attr, attr, get, mkdirs, names_in, put, tree_operations_and_errnos_on};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use common::*;

const SPECIAL_ENTRIES: [&str; 10] = [
    ".version",
    ".members",
    ".vmlist",
    ".rrd",
    ".clusterlog",
    ".debug",
    "local",
    "qemu-server",
    "openvz",
    "lxc",
];

/// status.md §6.1, in this order.
const TRACKED_PATHS: [&str; 43] = [
    "corosync.conf",
    "corosync.conf.new",
    "storage.cfg",
    "user.cfg",
    "domains.cfg",
    "notifications.cfg",
    "priv/notifications.cfg",
    "priv/shadow.cfg",
    "priv/acme/plugins.cfg",
    "priv/tfa.cfg",
    "priv/token.cfg",
    "priv/wg-keys.cfg",
    "datacenter.cfg",
    "vzdump.cron",
    "vzdump.conf",
    "jobs.cfg",
    "ha/crm_commands",
    "ha/manager_status",
    "ha/resources.cfg",
    "ha/rules.cfg",
    "ha/groups.cfg",
    "ha/fence.cfg",
    "status.cfg",
    "replication.cfg",
    "ceph.conf",
    "sdn/vnets.cfg",
    "sdn/zones.cfg",
    "sdn/controllers.cfg",
    "sdn/subnets.cfg",
    "sdn/ipams.cfg",
    "sdn/mac-cache.json",
    "sdn/pve-ipam-state.json",
    "sdn/dns.cfg",
    "sdn/fabrics.cfg",
    "sdn/route-maps.cfg",
    "sdn/prefix-lists.cfg",
    "sdn/.running-config",
    "virtual-guest/cpu-models.conf",
    "virtual-guest/profiles.cfg",
    "firewall/cluster.fw",
    "mapping/directory.cfg",
    "mapping/pci.cfg",
    "mapping/usb.cfg",
];

const MAX_FILE_SIZE: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Small helpers

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `.vmlist` (status.md §6.3): checks the exact byte format and returns
/// (version, vmid → (node, type, per-VM version)). Cross-checked with a
/// JSON parser.
#[track_caller]
fn parse_vmlist(text: &str) -> (u64, BTreeMap<String, (String, String, u64)>) {
    let json: Value = serde_json::from_str(text)
        .unwrap_or_else(|error| panic!(".vmlist is not JSON ({error}): {text:?}"));
    let rest = text
        .strip_prefix("{\n\"version\": ")
        .unwrap_or_else(|| panic!(".vmlist does not start with {{\\n\"version\": {text:?}"));
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .expect(".vmlist version");
    let version: u64 = rest[..digits].parse().expect(".vmlist version number");
    assert_eq!(json["version"].as_u64(), Some(version), "{text:?}");
    let rest = &rest[digits..];
    let mut ids = BTreeMap::new();
    if rest == "\n\n}\n" {
        assert!(json.get("ids").is_none(), "{text:?}");
        return (version, ids);
    }
    let body = rest
        .strip_prefix(",\n\"ids\": {\n")
        .and_then(|rest| rest.strip_suffix("}\n\n}\n"))
        .unwrap_or_else(|| panic!(".vmlist: unexpected layout {text:?}"));
    for entry in body.split(",\n") {
        let parsed = (|| {
            let (vmid, tail) = entry.strip_prefix('"')?.split_once("\": { \"node\": \"")?;
            let (node, tail) = tail.split_once("\", \"type\": \"")?;
            let (kind, tail) = tail.split_once("\", \"version\": ")?;
            let vm_version: u64 = tail.strip_suffix(" }")?.parse().ok()?;
            Some((vmid, node, kind, vm_version))
        })();
        let (vmid, node, kind, vm_version) =
            parsed.unwrap_or_else(|| panic!(".vmlist: bad entry line {entry:?} in {text:?}"));
        let object = &json["ids"][vmid];
        assert_eq!(object["node"].as_str(), Some(node), "{text:?}");
        assert_eq!(object["type"].as_str(), Some(kind), "{text:?}");
        assert_eq!(object["version"].as_u64(), Some(vm_version), "{text:?}");
        ids.insert(
            vmid.to_owned(),
            (node.to_owned(), kind.to_owned(), vm_version),
        );
    }
    assert_eq!(
        json["ids"].as_object().map(|ids| ids.len()),
        Some(ids.len()),
        "{text:?}"
    );
    (version, ids)
}

#[track_caller]
fn vmlist(daemon: &Daemon) -> (u64, BTreeMap<String, (String, String, u64)>) {
    parse_vmlist(&read_fresh_string(&daemon.path(".vmlist")))
}

/// `.version` (status.md §6.1) in local mode with an empty kvstore: exact
/// line layout and key order; returns the parsed JSON.
#[track_caller]
fn parse_version(text: &str, nodename: &str) -> Value {
    let json: Value = serde_json::from_str(text)
        .unwrap_or_else(|error| panic!(".version is not JSON ({error}): {text:?}"));
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines[0], "{", "{text}");
    let mut keys = vec!["starttime", "clinfo", "vmlist"];
    keys.extend(TRACKED_PATHS);
    for (index, key) in keys.iter().enumerate() {
        let line = lines[index + 1];
        let value = line
            .strip_prefix(&format!("\"{key}\": "))
            .and_then(|value| value.strip_suffix(','))
            .unwrap_or_else(|| panic!(".version line {}: {line:?}, want key {key}", index + 1));
        assert!(
            !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()),
            ".version {key}: {value:?}"
        );
        assert_eq!(json[*key].as_u64(), value.parse().ok(), "{key}");
    }
    let tail = lines[keys.len() + 1..].join("\n");
    assert_eq!(
        tail,
        format!("\"kvstore\": {{\n\"{nodename}\": {{\n}}\n}}\n}}\n"),
        ".version kvstore part"
    );
    assert_eq!(
        json.as_object().expect("object").len(),
        keys.len() + 1,
        "{text}"
    );
    json
}

#[track_caller]
fn version_json(daemon: &Daemon) -> Value {
    parse_version(
        &read_fresh_string(&daemon.path(".version")),
        &daemon.nodename,
    )
}

// ---------------------------------------------------------------------------
// 1. Layout, modes, ownership, attributes

#[test]
fn layout_modes_and_attributes() {
    let before = now_secs();
    let daemon = Daemon::started();
    let node = daemon.nodename.clone();
    let gid = www_data_gid();

    // pmxcfs creates nothing in the tree: the root shows only the specials.
    let expected: BTreeSet<String> = SPECIAL_ENTRIES.iter().map(|s| s.to_string()).collect();
    assert_eq!(names_in(&daemon.mountpoint), expected, "fresh root readdir");

    for (link, target) in [
        ("local", format!("nodes/{node}")),
        ("qemu-server", format!("nodes/{node}/qemu-server")),
        ("openvz", format!("nodes/{node}/openvz")),
        ("lxc", format!("nodes/{node}/lxc")),
    ] {
        let read = ok(
            fs::read_link(daemon.path(link)),
            &format!("readlink {link}"),
        );
        assert_eq!(read, PathBuf::from(&target), "readlink {link}");
        let link_attr = attr(&daemon.path(link));
        assert_eq!(link_attr.size, target.len() as u64, "st_size of {link}");
        assert_eq!(link_attr.mtime, 0, "special entry {link} reports mtime 0");
    }

    let n = |rel: &str| rel.replace("N", &node);
    mkdirs(
        &daemon,
        &[
            &n("nodes/N/qemu-server"),
            &n("nodes/N/lxc"),
            &n("nodes/N/openvz"),
            &n("nodes/N/priv"),
            "priv/lock",
        ],
    );
    put(&daemon, "storage.cfg", "hello\n");
    put(&daemon, "priv/authkey.key", "secret\n");
    put(&daemon, &n("nodes/N/priv/pve-ssl.key"), "key\n");
    put(&daemon, &n("nodes/N/openvz/101.mount"), "#!/bin/sh\n");
    put(&daemon, &n("nodes/N/openvz/101.conf"), "");
    put(&daemon, &n("nodes/N/openvz/0101.mount"), "");
    put(&daemon, &n("nodes/N/openvz/101.mountx"), "");
    put(&daemon, "vps.stop", "");
    put(&daemon, &n("nodes/N/priv/102.start"), "");
    put(&daemon, "big.bin", vec![7u8; 5000]);
    // Through the `local` symlink (resolved by the kernel).
    put(&daemon, "local/via-link.txt", "via link\n");
    assert_eq!(get(&daemon, &n("nodes/N/via-link.txt")), b"via link\n");
    let after = now_secs();

    const DIR: u32 = libc::S_IFDIR;
    const REG: u32 = libc::S_IFREG;
    const LNK: u32 = libc::S_IFLNK;
    let mut table: Vec<(String, u32, u32, u32)> = vec![
        (String::new(), DIR, 0o755, 2),
        ("nodes".into(), DIR, 0o755, 2),
        (n("nodes/N"), DIR, 0o755, 2),
        (n("nodes/N/qemu-server"), DIR, 0o755, 2),
        ("priv".into(), DIR, 0o700, 2),
        ("priv/lock".into(), DIR, 0o700, 2),
        (n("nodes/N/priv"), DIR, 0o700, 2),
        ("storage.cfg".into(), REG, 0o640, 1),
        ("priv/authkey.key".into(), REG, 0o600, 1),
        (n("nodes/N/priv/pve-ssl.key"), REG, 0o600, 1),
        (n("nodes/N/openvz/101.mount"), REG, 0o740, 1),
        (n("nodes/N/openvz/101.conf"), REG, 0o640, 1),
        (n("nodes/N/openvz/0101.mount"), REG, 0o640, 1),
        (n("nodes/N/openvz/101.mountx"), REG, 0o640, 1),
        ("vps.stop".into(), REG, 0o740, 1),
        (n("nodes/N/priv/102.start"), REG, 0o700, 1),
        ("local".into(), LNK, 0o755, 1),
        ("qemu-server".into(), LNK, 0o755, 1),
        ("openvz".into(), LNK, 0o755, 1),
        ("lxc".into(), LNK, 0o755, 1),
        (".debug".into(), REG, 0o640, 1),
    ];
    for name in [".version", ".members", ".vmlist", ".rrd", ".clusterlog"] {
        table.push((name.into(), REG, 0o440, 1));
    }
    for (rel, kind, perm, nlink) in &table {
        let got = attr(&daemon.path(rel));
        let what = format!("/{rel}: {got:?}");
        assert_eq!(got.kind, *kind, "file type of {what}");
        assert_eq!(got.perm, *perm, "mode of {what}: got {:o}", got.perm);
        assert_eq!(got.nlink, *nlink, "st_nlink of {what}");
        assert_eq!(got.uid, 0, "owner of {what}");
        assert_eq!(got.gid, gid, "group (www-data) of {what}");
    }

    // Sizes and blocks (st_blocks in 4096-byte units, filesystem.md §3.2).
    let storage = attr(&daemon.path("storage.cfg"));
    assert_eq!((storage.size, storage.blocks), (6, 1), "storage.cfg");
    let big = attr(&daemon.path("big.bin"));
    assert_eq!((big.size, big.blocks), (5000, 2), "big.bin");
    assert_eq!(attr(&daemon.path("priv/authkey.key")).size, 7);
    assert_eq!(attr(&daemon.path("nodes")).size, 0, "directory size");

    // mtime = now for new entries; atime = ctime = mtime.
    assert!(
        (before - 1..=after + 1).contains(&storage.mtime),
        "mtime of a new file {} not within [{before}, {after}]",
        storage.mtime
    );
    assert_eq!(
        (storage.atime, storage.ctime),
        (storage.mtime, storage.mtime)
    );

    // utime: mtime taken, atime ignored, all three report the new mtime.
    ok(
        utime(&daemon.path("storage.cfg"), 1_600_000_000, 1_705_314_600),
        "utime storage.cfg",
    );
    let touched = attr(&daemon.path("storage.cfg"));
    assert_eq!(
        (touched.atime, touched.mtime, touched.ctime),
        (1_705_314_600, 1_705_314_600, 1_705_314_600),
        "times after utime"
    );
    ok(utime(&daemon.path("nodes"), 0, 0), "utime 0 on a directory");
    assert_eq!(attr(&daemon.path("nodes")).mtime, 0, "mtime 0 is stored");

    // Virtual files: mtime 0, size = content length.
    for name in [".version", ".members", ".vmlist", ".clusterlog", ".debug"] {
        let path = daemon.path(name);
        let got = attr(&path);
        let content = ok(fs::read(&path), name);
        assert_eq!(got.size, content.len() as u64, "st_size of {name}");
        assert_eq!(got.mtime, 0, "mtime of {name}");
    }

    // Root readdir: specials plus the memdb root entries.
    let mut expected = expected;
    for name in ["storage.cfg", "priv", "nodes", "vps.stop", "big.bin"] {
        expected.insert(name.to_owned());
    }
    assert_eq!(names_in(&daemon.mountpoint), expected, "root readdir");
}

// ---------------------------------------------------------------------------
// 2. Operations and errnos

#[test]
fn file_data_operations() {
    let daemon = Daemon::started();
    // Local mode serves through per-CPU io_uring queues when the kernel has
    // FUSE over io_uring (the daemon switches fuse.enable_uring on), else
    // through /dev/fuse; either way the log says which.
    let offered = Path::new("/sys/module/fuse/parameters/enable_uring").exists();
    let log = daemon.log_tail();
    assert_eq!(
        log.contains("FUSE over io_uring: one queue per CPU"),
        offered,
        "transport does not match the kernel's offer\n{log}"
    );
    file_data_operations_on(&daemon);
}

#[test]
fn file_data_operations_on_dev_fuse() {
    let mut daemon = Daemon::new().arg("--no-uring");
    daemon.start();
    file_data_operations_on(&daemon);
}

fn file_data_operations_on(daemon: &Daemon) {
    let p = |rel: &str| daemon.path(rel);

    // create / read / overwrite (O_TRUNC) / append
    put(daemon, "a.cfg", "abc");
    assert_eq!(get(daemon, "a.cfg"), b"abc");
    put(daemon, "a.cfg", "0123456789");
    put(daemon, "a.cfg", "xy");
    assert_eq!(
        get(daemon, "a.cfg"),
        b"xy",
        "overwrite with shorter content"
    );
    {
        let mut file = ok(
            OpenOptions::new().append(true).open(p("a.cfg")),
            "open append",
        );
        ok(file.write_all(b"def"), "append");
    }
    assert_eq!(get(daemon, "a.cfg"), b"xydef");
    {
        let _file = ok(
            OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(p("a.cfg")),
            "open O_TRUNC",
        );
    }
    assert_eq!(get(daemon, "a.cfg"), b"", "O_TRUNC empties the file");
    assert_eq!(attr(&p("a.cfg")).size, 0);

    // pwrite past the end: gap is zero-filled
    put(daemon, "gap.cfg", "abc");
    {
        let file = ok(OpenOptions::new().write(true).open(p("gap.cfg")), "open");
        ok(file.write_at(b"Z", 10), "pwrite at 10");
        ok(file.write_at(b"B", 1), "pwrite inside");
    }
    assert_eq!(get(daemon, "gap.cfg"), b"aBc\0\0\0\0\0\0\0Z");

    // truncate grow (zero-filled) and shrink
    put(daemon, "t.cfg", "abc");
    {
        let file = ok(OpenOptions::new().write(true).open(p("t.cfg")), "open");
        ok(file.set_len(8), "truncate grow");
    }
    assert_eq!(get(daemon, "t.cfg"), b"abc\0\0\0\0\0");
    assert_eq!(attr(&p("t.cfg")).size, 8);
    {
        let file = ok(OpenOptions::new().write(true).open(p("t.cfg")), "open");
        ok(file.set_len(2), "truncate shrink");
    }
    assert_eq!(get(daemon, "t.cfg"), b"ab");
    // growing an empty file by truncate zero-fills too (filesystem.md §6.3)
    put(daemon, "empty.cfg", "");
    {
        let file = ok(OpenOptions::new().write(true).open(p("empty.cfg")), "open");
        ok(file.set_len(5), "truncate grow empty");
    }
    assert_eq!(get(daemon, "empty.cfg"), vec![0u8; 5]);

    // mknod(S_IFREG) makes a normal empty file
    ok(
        mknod(&p("node.cfg"), libc::S_IFREG | 0o640),
        "mknod S_IFREG",
    );
    let node = attr(&p("node.cfg"));
    assert_eq!((node.kind, node.perm, node.size), (libc::S_IFREG, 0o640, 0));
    put(daemon, "node.cfg", "made by mknod");
    assert_eq!(get(daemon, "node.cfg"), b"made by mknod");

    // 1 MiB limit
    let big: Vec<u8> = (0..MAX_FILE_SIZE).map(|i| (i % 251) as u8).collect();
    put(daemon, "big.bin", &big);
    assert_eq!(get(daemon, "big.bin"), big, "1 MiB file content");
    let big_attr = attr(&p("big.bin"));
    assert_eq!(
        (big_attr.size, big_attr.blocks),
        (MAX_FILE_SIZE as u64, 256)
    );
    {
        let mut file = ok(OpenOptions::new().append(true).open(p("big.bin")), "open");
        assert_errno(file.write_all(b"x"), libc::EFBIG, "append past 1 MiB");
        let file = ok(OpenOptions::new().write(true).open(p("big.bin")), "open");
        assert_errno(
            file.write_at(b"yz", MAX_FILE_SIZE as u64 - 1),
            libc::EFBIG,
            "pwrite crossing 1 MiB",
        );
        ok(file.write_at(b"!", MAX_FILE_SIZE as u64 - 1), "last byte");
        assert_errno(
            file.set_len(MAX_FILE_SIZE as u64 + 1),
            libc::EFBIG,
            "truncate past 1 MiB",
        );
    }
    let mut expected = big.clone();
    expected[MAX_FILE_SIZE - 1] = b'!';
    assert_eq!(get(daemon, "big.bin"), expected, "after refused writes");
    assert_errno(
        fs::write(p("big2.bin"), vec![1u8; MAX_FILE_SIZE + 1]),
        libc::EFBIG,
        "write_all of 1 MiB + 1",
    );
}

#[test]
fn tree_operations_and_errnos() {
    tree_operations_and_errnos_on(&Daemon::started());
}

/// The same through /dev/fuse only (the transport of cluster mode, and of
/// local mode on kernels without FUSE over io_uring).
#[test]
fn tree_operations_and_errnos_on_dev_fuse() {
    let mut daemon = Daemon::new().arg("--no-uring");
    daemon.start();
    tree_operations_and_errnos_on(&daemon);
    assert!(
        !daemon
            .log_tail()
            .contains("FUSE over io_uring: one queue per CPU"),
        "--no-uring still started io_uring queues"
    );
}

#[test]
fn special_entries_permissions_and_unsupported_ops() {
    let daemon = Daemon::started();
    let p = |rel: &str| daemon.path(rel);
    let gid = www_data_gid();
    mkdirs(&daemon, &["priv", "nodes"]);
    put(&daemon, "file.cfg", "f");
    put(&daemon, "priv/secret.cfg", "s");

    // special entries
    assert_errno(
        fs::remove_file(p(".version")),
        libc::EACCES,
        "unlink .version",
    );
    assert_errno(fs::remove_file(p("local")), libc::EACCES, "unlink local");
    assert_errno(
        fs::rename(p(".version"), p("v.cfg")),
        libc::EACCES,
        "rename .version",
    );
    assert_errno(
        fs::rename(p("file.cfg"), p(".members")),
        libc::EACCES,
        "rename onto a virtual file",
    );
    assert_errno(
        fs::create_dir(p(".version")),
        libc::EEXIST,
        "mkdir .version",
    );
    assert_errno(fs::create_dir(p("local")), libc::EEXIST, "mkdir local");
    assert_errno(
        fs::remove_dir(p(".version")),
        libc::ENOTDIR,
        "rmdir .version",
    );
    assert_errno(
        fs::read(p(".version/x")),
        libc::ENOTDIR,
        "path below a virtual file",
    );
    assert_errno(
        fs::remove_dir(&daemon.mountpoint),
        libc::EBUSY,
        "rmdir mount root",
    );
    assert_errno(
        utime(&p(".version"), 5, 5),
        libc::EACCES,
        "utime of a virtual file",
    );
    assert!(p("file.cfg").exists() && p(".version").exists());

    // chmod: only the reported state is accepted
    ok(
        fs::set_permissions(p("file.cfg"), fs::Permissions::from_mode(0o640)),
        "chmod 0640",
    );
    assert_errno(
        fs::set_permissions(p("file.cfg"), fs::Permissions::from_mode(0o644)),
        libc::EPERM,
        "chmod 0644",
    );
    assert_errno(
        fs::set_permissions(p("file.cfg"), fs::Permissions::from_mode(0o600)),
        libc::EPERM,
        "chmod 0600 on a non-private file",
    );
    ok(
        fs::set_permissions(p("priv/secret.cfg"), fs::Permissions::from_mode(0o600)),
        "chmod 0600 private",
    );
    assert_errno(
        fs::set_permissions(p("priv/secret.cfg"), fs::Permissions::from_mode(0o640)),
        libc::EPERM,
        "chmod 0640 on a private file",
    );
    assert_errno(
        fs::set_permissions(p("nodes"), fs::Permissions::from_mode(0o755)),
        libc::EPERM,
        "chmod 0755 on a dir (only 0640/0600 are accepted, filesystem.md §3.4)",
    );
    assert_eq!(attr(&p("file.cfg")).perm, 0o640, "mode unchanged");

    // chown: only (0 or -1, www-data or -1)
    use std::os::unix::fs::chown;
    ok(chown(p("file.cfg"), Some(0), Some(gid)), "chown 0:www-data");
    ok(chown(p("file.cfg"), None, None), "chown -1:-1");
    ok(chown(p("file.cfg"), Some(0), None), "chown 0:-1");
    assert_errno(
        chown(p("file.cfg"), Some(1), Some(gid)),
        libc::EPERM,
        "chown uid 1",
    );
    assert_errno(
        chown(p("file.cfg"), Some(0), Some(0)),
        libc::EPERM,
        "chown gid 0",
    );

    // unsupported operations
    assert_errno(
        std::os::unix::fs::symlink("file.cfg", p("sym")),
        libc::ENOSYS,
        "symlink()",
    );
    assert_errno(
        fs::hard_link(p("file.cfg"), p("hard")),
        libc::EPERM,
        "link()",
    );
    assert_errno(mkfifo(&p("fifo"), 0o640), libc::ENOSYS, "mkfifo");
    assert_errno(
        mknod(&p("chr"), libc::S_IFCHR | 0o640),
        libc::ENOSYS,
        "mknod char device",
    );
    assert_errno(
        mknod(&p("sock"), libc::S_IFSOCK | 0o640),
        libc::ENOSYS,
        "mknod socket",
    );
    assert_errno(
        lgetxattr(&p("file.cfg"), "user.test"),
        libc::EOPNOTSUPP,
        "getxattr",
    );
    assert_errno(
        lsetxattr(&p("file.cfg"), "user.test", b"v"),
        libc::EOPNOTSUPP,
        "setxattr",
    );
    // renameat2: RENAME_NOREPLACE onto an existing name is refused by the
    // VFS; RENAME_EXCHANGE cannot be done (libfuse 2 has no rename2).
    put(&daemon, "other.cfg", "o");
    assert_errno(
        renameat2(&p("file.cfg"), &p("other.cfg"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE onto an existing file",
    );
    assert_errno(
        renameat2(&p("file.cfg"), &p("other.cfg"), libc::RENAME_EXCHANGE),
        libc::EINVAL,
        "RENAME_EXCHANGE",
    );
    assert_eq!(get(&daemon, "file.cfg"), b"f");
    assert_eq!(get(&daemon, "other.cfg"), b"o");

    // fsync, directory fsync, flock and posix_fallocate succeed
    {
        let file = ok(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p("other.cfg")),
            "open",
        );
        ok(file.sync_all(), "fsync");
        ok(file.sync_data(), "fdatasync");
        ok(flock(&file, libc::LOCK_EX), "flock");
        ok(flock(&file, libc::LOCK_UN), "unlock flock");
        ok(posix_fallocate(&file, 0, 100), "posix_fallocate");
    }
    let mut grown = b"o".to_vec();
    grown.resize(100, 0);
    assert_eq!(get(&daemon, "other.cfg"), grown, "fallocate grew the file");
    ok(
        ok(fs::File::open(p("nodes")), "open dir").sync_all(),
        "fsync dir",
    );

    for name in ["sym", "hard", "fifo", "chr", "sock"] {
        assert_errno(
            fs::symlink_metadata(p(name)),
            libc::ENOENT,
            "refused op left nothing",
        );
    }
}

#[test]
fn debug_version_writes_and_statfs() {
    let daemon = Daemon::started();
    let p = |rel: &str| daemon.path(rel);

    // statfs of a fresh tree (root only), then with a 5000-byte file
    let st = ok(statfs(&daemon.mountpoint), "statfs");
    assert_eq!(st.f_bsize, 4096, "f_bsize");
    assert_eq!(st.f_blocks, 32768, "f_blocks");
    assert_eq!(st.f_namelen, 256, "f_namemax");
    assert_eq!(st.f_files, 262_144, "f_files");
    assert_eq!((st.f_bfree, st.f_bavail), (32768, 32768), "empty tree");
    assert_eq!(st.f_ffree, 262_143, "f_ffree counts the root");
    // The mount flags of the C daemon's mount: nosuid, nodev, relatime.
    const ST_NOSUID: i64 = 0x2;
    const ST_NODEV: i64 = 0x4;
    const ST_NOATIME: i64 = 0x400;
    const ST_RELATIME: i64 = 0x1000;
    let path =
        std::ffi::CString::new(daemon.mountpoint.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: zeroed plain C struct, filled by the kernel; valid C string.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(path.as_ptr(), &mut vfs) },
        0,
        "statvfs"
    );
    let flags = vfs.f_flag as i64;
    assert_eq!(
        flags & (ST_NOSUID | ST_NODEV | ST_NOATIME | ST_RELATIME),
        ST_NOSUID | ST_NODEV | ST_RELATIME,
        "statfs flags {flags:#x}"
    );
    put(&daemon, "blob.bin", vec![1u8; 5000]);
    let st = ok(statfs(&daemon.mountpoint), "statfs");
    assert_eq!(
        (st.f_bfree, st.f_bavail),
        (32766, 32766),
        "5000 bytes = 2 blocks"
    );
    assert_eq!(st.f_ffree, 262_142, "one more entry");

    // .debug
    assert_eq!(read_fresh_string(&p(".debug")), "0\n");
    ok(fs::write(p(".debug"), "1\n"), "write 1 to .debug");
    assert_eq!(read_fresh_string(&p(".debug")), "1\n");
    assert_errno(
        fs::write(p(".debug"), "x\n"),
        libc::EIO,
        "write x to .debug",
    );
    assert_eq!(read_fresh_string(&p(".debug")), "1\n", "unchanged");
    {
        // One byte is too short; a longer write counts as 2 bytes.
        let mut file = ok(OpenOptions::new().write(true).open(p(".debug")), "open");
        assert_errno(file.write(b"0"), libc::EIO, "1-byte write to .debug");
        assert_eq!(
            ok(file.write(b"1\nxyz"), "long write"),
            2,
            "write returns 2"
        );
        ok(file.set_len(0), "truncate .debug (has a write handler)");
    }
    assert_eq!(read_fresh_string(&p(".debug")), "1\n", "truncate keeps it");
    {
        let mut file = ok(OpenOptions::new().append(true).open(p(".debug")), "open");
        assert_errno(file.write_all(b"0\n"), libc::EIO, "O_APPEND to .debug");
    }
    ok(fs::write(p(".debug"), "0\n"), "write 0 to .debug");
    assert_eq!(read_fresh_string(&p(".debug")), "0\n");

    // read-only virtual files: no write handler → EIO (root bypasses modes)
    for name in [".version", ".vmlist"] {
        let before = read_fresh_string(&p(name));
        {
            let mut file = ok(OpenOptions::new().write(true).open(p(name)), "open");
            assert_errno(file.write_all(b"{}"), libc::EIO, &format!("write {name}"));
        }
        assert_errno(
            OpenOptions::new().write(true).truncate(true).open(p(name)),
            libc::EIO,
            &format!("O_TRUNC {name}"),
        );
        assert_errno(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_TRUNC)
                .open(p(name)),
            libc::EIO,
            &format!("O_RDONLY|O_TRUNC {name}"),
        );
        assert_eq!(read_fresh_string(&p(name)), before, "{name} unchanged");
    }
}

/// An fd opened before its file was unlinked or replaced by a rename keeps
/// reading the old content (the C daemon via libfuse's `.fuse_hidden`
/// files, filesystem.md §9a); no leftovers once the fd is closed.
#[test]
fn open_files_survive_unlink_and_replace() {
    use std::io::Read;
    let daemon = Daemon::started();
    let p = |rel: &str| daemon.path(rel);
    mkdirs(&daemon, &["d"]);
    // A write through an fd after a rename goes to the new name.
    put(&daemon, "d/w.cfg", "aaa");
    let writer = ok(OpenOptions::new().write(true).open(p("d/w.cfg")), "open w");
    ok(fs::rename(p("d/w.cfg"), p("d/w2.cfg")), "rename open file");
    ok(writer.write_at(b"XY", 0), "write after rename");
    drop(writer);
    assert_eq!(get(&daemon, "d/w2.cfg"), b"XYa");
    ok(fs::remove_file(p("d/w2.cfg")), "unlink w2");
    put(&daemon, "d/keep.cfg", "old content\n");
    put(&daemon, "d/gone.cfg", "bye\n");
    let mut replaced = ok(fs::File::open(p("d/keep.cfg")), "open keep.cfg");
    let mut unlinked = ok(fs::File::open(p("d/gone.cfg")), "open gone.cfg");

    put(&daemon, "d/keep.cfg.tmp", "new\n");
    ok(fs::rename(p("d/keep.cfg.tmp"), p("d/keep.cfg")), "replace");
    ok(fs::remove_file(p("d/gone.cfg")), "unlink open file");
    assert_eq!(get(&daemon, "d/keep.cfg"), b"new\n");
    assert_errno(fs::metadata(p("d/gone.cfg")), libc::ENOENT, "unlinked");

    let mut old = Vec::new();
    ok(replaced.read_to_end(&mut old), "read replaced fd");
    assert_eq!(old, b"old content\n", "fd of the replaced file");
    let mut old = Vec::new();
    ok(unlinked.read_to_end(&mut old), "read unlinked fd");
    assert_eq!(old, b"bye\n", "fd of the unlinked file");
    drop(replaced);
    drop(unlinked);

    let wanted = BTreeSet::from(["keep.cfg".to_owned()]);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let names = names_in(&p("d"));
        if names == wanted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leftovers after close: {names:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    ok(fs::remove_file(p("d/keep.cfg")), "unlink");
    ok(
        fs::remove_dir(p("d")),
        "rmdir after the hidden files are gone",
    );
}

/// The mount is `allow_other` + `default_permissions`: a www-data process
/// (what pveproxy runs as) reads non-private files and virtual files, but
/// cannot read private ones or write anything (filesystem.md §3.4).
#[test]
fn www_data_reads_but_cannot_write() {
    let daemon = Daemon::started();
    // Let other users traverse the (root-only) temporary base directory.
    ok(
        fs::set_permissions(&daemon.base, fs::Permissions::from_mode(0o711)),
        "chmod base",
    );
    mkdirs(&daemon, &["priv", "ha"]);
    put(&daemon, "storage.cfg", "shared\n");
    put(&daemon, "priv/authkey.key", "secret\n");
    let as_www_data = |script: &str| {
        let output = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&daemon.mountpoint)
            .uid(www_data_uid())
            .gid(www_data_gid())
            .output()
            .expect("run sh as www-data");
        (output.status.success(), output.stdout)
    };
    let allowed = [
        "cat \"$1/storage.cfg\"",
        "cat \"$1/.members\" \"$1/.version\" \"$1/.vmlist\" \"$1/.debug\" >/dev/null",
        "ls \"$1/\" \"$1/ha\" >/dev/null",
        "test -r \"$1/storage.cfg\" && ! test -w \"$1/storage.cfg\"",
    ];
    for script in allowed {
        let (success, _) = as_www_data(script);
        assert!(success, "www-data: {script} failed");
    }
    assert_eq!(as_www_data("cat \"$1/storage.cfg\"").1, b"shared\n");
    let refused = [
        "cat \"$1/priv/authkey.key\"",
        "ls \"$1/priv\"",
        "echo x >> \"$1/storage.cfg\"",
        "echo x > \"$1/new.cfg\"",
        "mkdir \"$1/newdir\"",
        "rm \"$1/storage.cfg\"",
        "echo 1 > \"$1/.debug\"",
    ];
    for script in refused {
        let (success, _) = as_www_data(script);
        assert!(!success, "www-data: {script} succeeded");
    }
    assert_eq!(get(&daemon, "storage.cfg"), b"shared\n");
    assert_errno(
        fs::symlink_metadata(daemon.path("new.cfg")),
        libc::ENOENT,
        "nothing created by www-data",
    );
    assert_eq!(read_fresh_string(&daemon.path(".debug")), "0\n");
}

// ---------------------------------------------------------------------------
// 3. Virtual files

#[test]
fn virtual_files() {
    let before = now_secs();
    let daemon = Daemon::started();
    let node = daemon.nodename.clone();
    let p = |rel: &str| daemon.path(rel);

    // .members without a cluster
    let members = read_fresh_string(&p(".members"));
    let version = members
        .strip_prefix(&format!("{{\n\"nodename\": \"{node}\",\n\"version\": "))
        .and_then(|rest| rest.strip_suffix("\n}\n"))
        .unwrap_or_else(|| panic!(".members: {members:?}"));
    assert!(
        !version.is_empty() && version.bytes().all(|byte| byte.is_ascii_digit()),
        ".members version {version:?}"
    );
    let _: Value = serde_json::from_str(&members).expect(".members is JSON");

    // .version: layout, start time, all tracked counters 1 after the load
    let json = version_json(&daemon);
    let starttime = json["starttime"].as_i64().expect("starttime");
    assert!(
        (before - 1..=now_secs() + 1).contains(&starttime),
        "starttime {starttime}"
    );
    for key in TRACKED_PATHS {
        assert_eq!(json[key].as_u64(), Some(1), "fresh counter of {key}");
    }
    put(&daemon, "storage.cfg", "dir: local\n");
    let after_write = version_json(&daemon);
    let storage_count = after_write["storage.cfg"].as_u64().expect("counter");
    assert!(
        storage_count > 1,
        "storage.cfg counter after write: {storage_count}"
    );
    assert_eq!(
        after_write["user.cfg"].as_u64(),
        Some(1),
        "other counters stay"
    );
    assert_eq!(after_write["starttime"].as_i64(), Some(starttime));
    put(&daemon, "storage.cfg.tmp.1", "dir: local\n\tpath /var\n");
    ok(
        fs::rename(p("storage.cfg.tmp.1"), p("storage.cfg")),
        "rename onto storage.cfg",
    );
    let after_rename = version_json(&daemon)["storage.cfg"].as_u64().unwrap();
    assert!(after_rename > storage_count, "counter after rename onto it");

    // .vmlist: empty, then two guests
    let (empty_version, ids) = vmlist(&daemon);
    assert!(ids.is_empty(), "fresh .vmlist has no ids");
    mkdirs(
        &daemon,
        &[
            &format!("nodes/{node}/qemu-server"),
            &format!("nodes/{node}/lxc"),
            "nodes/other/qemu-server",
            "nodes/other/lxc",
        ],
    );
    put(
        &daemon,
        &format!("nodes/{node}/qemu-server/100.conf"),
        "memory: 512\n",
    );
    put(
        &daemon,
        &format!("nodes/{node}/lxc/200.conf"),
        "arch: amd64\n",
    );
    let text = read_fresh_string(&p(".vmlist"));
    assert!(text.starts_with("{\n\"version\": "), "{text:?}");
    let (version, ids) = parse_vmlist(&text);
    assert!(version > empty_version, "vmlist version grows");
    let summary: BTreeMap<&str, (&str, &str)> = ids
        .iter()
        .map(|(vmid, (node, kind, _))| (vmid.as_str(), (node.as_str(), kind.as_str())))
        .collect();
    assert_eq!(
        summary,
        BTreeMap::from([
            ("100", (node.as_str(), "qemu")),
            ("200", (node.as_str(), "lxc"))
        ]),
        "{text}"
    );
    assert_eq!(version_json(&daemon)["vmlist"].as_u64(), Some(version));
    let text_size = attr(&p(".vmlist")).size;
    assert_eq!(text_size, read_fresh(&p(".vmlist")).unwrap().len() as u64);

    // vmid uniqueness: another node or another type → EEXIST
    assert_errno(
        fs::write(p("nodes/other/qemu-server/100.conf"), "x"),
        libc::EEXIST,
        "vmid 100 on another node",
    );
    assert_errno(
        fs::write(p(&format!("nodes/{node}/lxc/100.conf")), "x"),
        libc::EEXIST,
        "vmid 100 with another type",
    );
    assert_errno(
        fs::symlink_metadata(p("nodes/other/qemu-server/100.conf")),
        libc::ENOENT,
        "refused create left nothing",
    );
    // ...rewriting one's own config is fine
    put(
        &daemon,
        &format!("nodes/{node}/qemu-server/100.conf"),
        "memory: 1024\n",
    );

    // migration: rename to another node
    ok(
        fs::rename(
            p(&format!("nodes/{node}/qemu-server/100.conf")),
            p("nodes/other/qemu-server/100.conf"),
        ),
        "migrate 100.conf",
    );
    assert_eq!(
        get(&daemon, "nodes/other/qemu-server/100.conf"),
        b"memory: 1024\n"
    );
    let (_, ids) = vmlist(&daemon);
    assert_eq!(ids["100"].0, "other", "vmid 100 moved");
    assert_eq!(ids["100"].1, "qemu");
    // utime of a guest config changes neither vmlist nor per-VM version
    let (list_version, ids) = vmlist(&daemon);
    ok(
        utime(&p("nodes/other/qemu-server/100.conf"), 5, 5),
        "utime 100.conf",
    );
    let (list_version_after, ids_after) = vmlist(&daemon);
    assert_eq!(
        list_version_after, list_version,
        "vmlist version after utime"
    );
    assert_eq!(ids_after, ids, "per-VM versions after utime");
    // Not guest config paths (§6.4): no registration, no EEXIST.
    mkdirs(
        &daemon,
        &[
            "nodes/bad_name/qemu-server",
            "nodes/other/qemu-server/sub",
            "nodes/other/misc",
        ],
    );
    for rel in [
        "nodes/other/qemu-server/0100.conf",
        "nodes/other/qemu-server/100.conf.bak",
        "nodes/other/qemu-server/4294967296.conf",
        "nodes/other/qemu-server/sub/100.conf",
        "nodes/bad_name/qemu-server/300.conf",
        "nodes/other/misc/301.conf",
    ] {
        put(&daemon, rel, "x");
    }
    let (_, ids_now) = vmlist(&daemon);
    assert_eq!(ids_now, ids, "non-guest paths left the vmlist alone");
    // delete removes the vmid
    ok(
        fs::remove_file(p(&format!("nodes/{node}/lxc/200.conf"))),
        "rm 200.conf",
    );
    let (_, ids) = vmlist(&daemon);
    assert_eq!(ids.keys().collect::<Vec<_>>(), ["100"], "after delete");
    // the vmid is free again
    put(&daemon, "nodes/other/lxc/200.conf", "arch: amd64\n");
    assert_eq!(vmlist(&daemon).1["200"].0, "other");

    // .clusterlog: JSON with the start entry (status.md §5.1, §5.4)
    let log = read_fresh_string(&p(".clusterlog"));
    assert!(log.starts_with("{\n\"data\": [\n"), "{log:?}");
    assert!(log.ends_with("]\n}\n"), "{log:?}");
    let json: Value = serde_json::from_str(&log).expect(".clusterlog is JSON");
    let data = json["data"].as_array().expect("data array");
    let first = data.last().expect("a start entry");
    assert_eq!(first["msg"], "starting cluster log", "{log}");
    assert_eq!(first["tag"], "cluster");
    assert_eq!(first["user"], "root");
    assert_eq!(first["pri"], 6);
    assert_eq!(first["uid"], 1);
    assert_eq!(first["node"].as_str(), Some(node.as_str()));
    assert_eq!(first["pid"].as_i64(), Some(i64::from(daemon.pid())));
    let time = first["time"].as_i64().expect("time");
    let line = format!(
        "{{\"uid\": 1, \"time\": {time}, \"pri\": 6, \"tag\": \"cluster\", \"pid\": {}, \
         \"node\": \"{node}\", \"user\": \"root\", \"msg\": \"starting cluster log\"}}",
        daemon.pid()
    );
    assert!(
        log.ends_with(&format!("{line}\n]\n}}\n")),
        "exact start entry {line:?} in {log:?}"
    );
    assert!((before - 1..=now_secs() + 1).contains(&time), "time {time}");

    // .rrd: nothing reported yet, or `key:data` lines
    let rrd = read_fresh_string(&p(".rrd"));
    for line in rrd.lines() {
        assert!(line.contains(':'), ".rrd line {line:?}");
    }
}

// ---------------------------------------------------------------------------
// 4. Locks

#[test]
fn lock_directories() {
    let mut daemon = Daemon::new().env("PMXCFS_LOCK_TIMEOUT_SECS", "2");
    daemon.start();
    let lock = daemon.path("priv/lock/a");
    mkdirs(&daemon, &["priv/lock"]);

    ok(fs::create_dir(&lock), "acquire lock");
    assert_errno(fs::create_dir(&lock), libc::EEXIST, "lock held");
    assert_errno(
        utime(&lock, 0, 0),
        libc::EACCES,
        "unlock request, not expired",
    );
    assert!(lock.is_dir(), "lock still there");

    // The holder extends it (same writer, mtime not older).
    let now = now_secs();
    ok(utime(&lock, now, now), "refresh by the holder");
    assert_eq!(attr(&lock).mtime, now);
    assert_errno(
        utime(&lock, now - 100, now - 100),
        libc::EACCES,
        "older mtime on a lock dir",
    );
    // A plain directory takes any mtime, also 0.
    mkdirs(&daemon, &["priv/notalock"]);
    ok(
        utime(&daemon.path("priv/notalock"), 0, 0),
        "utime 0 on a plain dir",
    );

    // The listing is read (and may be cached by the kernel) before the
    // daemon itself deletes the lock below.
    let listed = names_in(&daemon.path("priv/lock"));
    assert_eq!(
        listed,
        BTreeSet::from(["a".to_owned()]),
        "priv/lock listing"
    );

    // Expiry: > 2 s after the last refresh an unlock request deletes it.
    thread::sleep(Duration::from_millis(3500));
    let result = utime(&lock, 0, 0);
    // Either return is acceptable; the effect is what counts. The kernel
    // may keep the entry cached for a moment (entry timeout), so poll.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match fs::symlink_metadata(&lock) {
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => break,
            other => assert!(
                Instant::now() < deadline,
                "expired lock still there after utime(0,0) (returned {result:?}): {other:?}"
            ),
        }
        thread::sleep(Duration::from_millis(100));
    }
    // A deletion the kernel did not ask for must show in listings too (in
    // cluster mode every remote change is such a change).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let listed = names_in(&daemon.path("priv/lock"));
        if listed.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readdir priv/lock still lists {listed:?} after the lock expired"
        );
        thread::sleep(Duration::from_millis(100));
    }
    ok(fs::create_dir(&lock), "re-acquire expired lock");
    assert_errno(utime(&lock, 0, 0), libc::EACCES, "new lock not expired");
    ok(fs::remove_dir(&lock), "release lock");
    assert_errno(fs::metadata(&lock), libc::ENOENT, "released");
}

// ---------------------------------------------------------------------------
// 5. Persistence

#[test]
fn persistence_across_clean_restart() {
    let mut daemon = Daemon::started();
    let node = daemon.nodename.clone();
    mkdirs(
        &daemon,
        &[
            &format!("nodes/{node}/qemu-server"),
            &format!("nodes/{node}/priv"),
            "priv/lock/held",
            "sdn/deep/dir",
            "emptydir",
        ],
    );
    let big: Vec<u8> = (0..MAX_FILE_SIZE).map(|i| (i * 7 % 256) as u8).collect();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("storage.cfg".into(), b"dir: local\n".to_vec()),
        ("priv/authkey.key".into(), b"-----KEY-----\n".to_vec()),
        (format!("nodes/{node}/priv/pve-ssl.key"), b"ssl\n".to_vec()),
        (
            format!("nodes/{node}/qemu-server/100.conf"),
            b"memory: 512\n".to_vec(),
        ),
        ("sdn/deep/dir/marker.txt".into(), b"deep".to_vec()),
        ("empty.cfg".into(), Vec::new()),
        ("big.bin".into(), big),
        ("weird name \t\u{e9}.cfg".into(), b"odd".to_vec()),
    ];
    for (rel, content) in &files {
        put(&daemon, rel, content);
    }
    ok(
        utime(&daemon.path("storage.cfg"), 1_705_314_600, 1_705_314_600),
        "utime",
    );
    let mut paths: Vec<String> = files.iter().map(|(rel, _)| rel.clone()).collect();
    paths.extend(
        [
            "priv",
            "priv/lock/held",
            "sdn/deep/dir",
            "emptydir",
            "nodes",
        ]
        .map(String::from),
    );
    let before: Vec<Attr> = paths.iter().map(|rel| attr(&daemon.path(rel))).collect();
    let vmlist_before = vmlist(&daemon).1;
    let root_before = names_in(&daemon.mountpoint);

    daemon.stop_clean();
    let dump_stopped = daemon.dump();
    daemon.start();
    assert_eq!(
        daemon.dump(),
        dump_stopped,
        "a restart alone changes nothing in the store"
    );

    for (rel, content) in &files {
        assert_eq!(
            &get(&daemon, rel),
            content,
            "content of {rel} after restart"
        );
    }
    for (rel, old) in paths.iter().zip(&before) {
        assert_eq!(&attr(&daemon.path(rel)), old, "attributes of {rel}");
    }
    assert_eq!(attr(&daemon.path("storage.cfg")).mtime, 1_705_314_600);
    let strip =
        |ids: BTreeMap<String, (String, String, u64)>| -> BTreeMap<String, (String, String)> {
            ids.into_iter()
                .map(|(vmid, (node, kind, _))| (vmid, (node, kind)))
                .collect()
        };
    assert_eq!(strip(vmlist(&daemon).1), strip(vmlist_before), "vmlist");
    assert_eq!(names_in(&daemon.mountpoint), root_before, "root readdir");
    // The lock table restarts its clock: the lock is not expired.
    assert_errno(
        utime(&daemon.path("priv/lock/held"), 0, 0),
        libc::EACCES,
        "lock after restart",
    );
}

/// Until `dir` lists at least `count` entries (a writer got that far).
#[track_caller]
fn wait_for_entries(dir: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_dir(dir).map_or(0, |entries| entries.count()) < count {
        assert!(
            Instant::now() < deadline,
            "{} never held {count} entries",
            dir.display()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn persistence_after_kill9_on_stale_mount() {
    let mut daemon = Daemon::started();
    mkdirs(&daemon, &["stream"]);
    let mountpoint = daemon.mountpoint.clone();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let start = Instant::now();
        let mut done: Vec<(String, String)> = Vec::new();
        let mut failure = None;
        for i in 0.. {
            if start.elapsed() > Duration::from_secs(20) {
                break;
            }
            let name = format!("stream/f{i:05}.cfg");
            let content = format!("write {i}\n{}", "x".repeat(i % 400));
            match fs::write(mountpoint.join(&name), &content) {
                Ok(()) => done.push((name, content)),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let _ = sender.send((done, failure));
    });
    // Kill it in the middle of the stream, once the writer is well going.
    wait_for_entries(&daemon.path("stream"), 50);
    daemon.kill9();
    let (done, failure) = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("writer blocked after kill -9 (it must see errors, e.g. ENOTCONN)");
    let failure = failure.expect("writer kept succeeding after kill -9");
    assert!(
        done.len() >= 5,
        "only {} writes succeeded in 1 s (failure: {failure})",
        done.len()
    );
    eprintln!(
        "kill -9 after {} acknowledged writes; the writer then got: {failure}",
        done.len()
    );
    // The mount is stale now.
    assert!(daemon.is_mounted(), "kernel keeps the dead mount");
    // ENOTCONN once the device is closed; ECONNABORTED when the io_uring
    // teardown aborted the connection first.
    let stale = fs::metadata(&daemon.mountpoint).expect_err("a dead mount answers");
    assert!(
        matches!(
            stale.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        ),
        "stale mount: {stale}"
    );

    // The daemon must cope with the stale mount itself.
    daemon.start();
    let mut missing = Vec::new();
    for (name, content) in &done {
        match fs::read(daemon.path(name)) {
            Ok(data) if data == content.as_bytes() => {}
            other => missing.push(format!("{name}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost or wrong after kill -9 (writer stopped with \
         {failure}): {:?}",
        missing.len(),
        done.len(),
        &missing[..missing.len().min(5)]
    );
    daemon.stop_clean();
}

/// Kill cycles of `restart_after_kill9_at_random_points` (make test runs the
/// short form; `PMXCFS_KILL_CYCLES=200` the long one).
fn kill_cycles() -> u32 {
    std::env::var("PMXCFS_KILL_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(25)
}

/// kill -9 under a write load at a random moment (mid-request on the
/// io_uring queues included), then a restart on the same mountpoint: every
/// restart must succeed whatever state the dead mount is in (ENOTCONN,
/// ECONNABORTED, stacked), and every acknowledged write must be there.
#[test]
fn restart_after_kill9_at_random_points() {
    let mut daemon = Daemon::started();
    mkdirs(&daemon, &["k"]);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64)
        | 1;
    let mut random = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let cycles = kill_cycles();
    let mut acknowledged: Vec<(PathBuf, String)> = Vec::new();
    let mut stale_errors = std::collections::BTreeMap::<String, u32>::new();
    for cycle in 0..cycles {
        let writers: Vec<_> = (0..3)
            .map(|writer| {
                let mountpoint = daemon.mountpoint.clone();
                thread::spawn(move || {
                    let mut done = Vec::new();
                    for i in 0..100_000u32 {
                        let rel = format!("k/c{cycle}-w{writer}-{i}.conf");
                        let tmp = format!("{rel}.tmp");
                        let content = format!("cycle {cycle} writer {writer} write {i}\n");
                        // Half plain writes, half PVE's tmp file + rename.
                        let result = if i % 2 == 0 {
                            fs::write(mountpoint.join(&rel), &content)
                        } else {
                            fs::write(mountpoint.join(&tmp), &content).and_then(|()| {
                                fs::rename(mountpoint.join(&tmp), mountpoint.join(&rel))
                            })
                        };
                        match result {
                            Ok(()) => done.push((PathBuf::from(rel), content)),
                            Err(_) => break,
                        }
                    }
                    done
                })
            })
            .collect();
        thread::sleep(Duration::from_micros(random(40_000)));
        if cycle % 2 == 0 {
            // The operator's `kill -9 PID; pmxcfs`: the new daemon meets the
            // mount while the kernel still tears the old connection down
            // (io_uring teardown finishes asynchronously; the dying mount
            // answers ECONNABORTED or ECANCELED then).
            daemon.kill9_and_restart_at_once();
            for writer in writers {
                acknowledged.extend(writer.join().expect("writer thread"));
            }
        } else {
            daemon.kill9();
            for writer in writers {
                acknowledged.extend(writer.join().expect("writer thread"));
            }
            let stale = fs::metadata(&daemon.mountpoint)
                .err()
                .and_then(|error| error.raw_os_error())
                .map_or("none".to_owned(), |errno| {
                    std::io::Error::from_raw_os_error(errno).to_string()
                });
            *stale_errors.entry(stale).or_default() += 1;
            // `start` fails the test with the daemon's log if it does not serve.
            daemon.start();
        }
    }
    let mut missing = Vec::new();
    for (rel, content) in &acknowledged {
        match fs::read(daemon.mountpoint.join(rel)) {
            Ok(data) if data == content.as_bytes() => {}
            other => missing.push(format!("{}: {other:?}", rel.display())),
        }
    }
    eprintln!(
        "{cycles} kill -9 cycles, {} acknowledged writes, the dead mount answered: {stale_errors:?}",
        acknowledged.len()
    );
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost after kill -9 cycles: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    daemon.stop_clean();
}

// ---------------------------------------------------------------------------
// 6. Shutdown

#[test]
fn repeated_clean_shutdown() {
    let mut daemon = Daemon::new();
    for round in 0..10 {
        daemon.start();
        for earlier in 0..round {
            assert_eq!(
                get(&daemon, &format!("round{earlier}.cfg")),
                format!("round {earlier}\n").as_bytes(),
                "round {round}"
            );
        }
        put(
            &daemon,
            &format!("round{round}.cfg"),
            format!("round {round}\n"),
        );
        mkdirs(&daemon, &[&format!("dir{round}")]);
        put(&daemon, &format!("dir{round}/x"), "x");
        daemon.stop_clean();
    }
}

#[test]
fn sigint_stops_cleanly() {
    let mut daemon = Daemon::started();
    put(&daemon, "a.cfg", "a");
    let stopped = daemon.stop(libc::SIGINT);
    assert!(stopped.exited, "still running after SIGINT");
    assert!(
        stopped.status.expect("foreground status").success(),
        "{stopped:?}"
    );
    assert!(stopped.elapsed < Duration::from_secs(2), "{stopped:?}");
    assert!(!daemon.is_mounted(), "still mounted after SIGINT");
}

#[test]
fn clean_shutdown_under_load() {
    let mut daemon = Daemon::started();
    mkdirs(&daemon, &["load"]);
    let mountpoint = daemon.mountpoint.clone();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let start = Instant::now();
        let mut done: Vec<(String, String)> = Vec::new();
        for i in 0.. {
            if start.elapsed() > Duration::from_secs(20) {
                break;
            }
            let name = format!("load/f{i:05}.cfg");
            let content = format!("load {i}\n{}", "y".repeat(i % 300));
            // After the unmount "load" is missing in the plain directory,
            // so the writer stops with an error.
            if fs::write(mountpoint.join(&name), &content).is_err() {
                break;
            }
            done.push((name, content));
        }
        let _ = sender.send(done);
    });
    wait_for_entries(&daemon.path("load"), 50);
    daemon.stop_clean();
    let done = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("writer blocked after the daemon stopped");
    assert!(!done.is_empty(), "no write succeeded");
    eprintln!("SIGTERM after {} acknowledged writes", done.len());

    daemon.start();
    for (name, content) in &done {
        assert_eq!(
            fs::read(daemon.path(name)).ok().as_deref(),
            Some(content.as_bytes()),
            "acknowledged write {name} after a clean shutdown under load"
        );
    }
    daemon.stop_clean();
}

// ---------------------------------------------------------------------------
// 7. Concurrency

#[test]
fn concurrent_writers_tmp_and_rename() {
    const THREADS: usize = 8;
    let mut daemon = Daemon::started();
    mkdirs(&daemon, &["conc"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let conc = daemon.path("conc");
            thread::spawn(move || -> Result<(Vec<u8>, usize), String> {
                let target = conc.join(format!("t{t}.cfg"));
                let mut last = None;
                let mut round = 0usize;
                while Instant::now() < deadline {
                    let content = format!("thread {t} round {round}\n")
                        .repeat(1 + (round * 7 + t) % 60)
                        .into_bytes();
                    let tmp = conc.join(format!("t{t}.cfg.tmp.{round}"));
                    fs::write(&tmp, &content).map_err(|e| format!("t{t} write tmp: {e}"))?;
                    fs::rename(&tmp, &target).map_err(|e| format!("t{t} rename: {e}"))?;
                    let back = fs::read(&target).map_err(|e| format!("t{t} read: {e}"))?;
                    if back != content {
                        return Err(format!("t{t} round {round}: read back other content"));
                    }
                    last = Some(content);
                    if round.is_multiple_of(10) {
                        let dir = conc.join(format!("d{t}"));
                        fs::create_dir(&dir).map_err(|e| format!("t{t} mkdir: {e}"))?;
                        fs::write(dir.join("x"), b"x").map_err(|e| format!("t{t} x: {e}"))?;
                        fs::remove_file(dir.join("x")).map_err(|e| format!("t{t} rm: {e}"))?;
                        fs::remove_dir(&dir).map_err(|e| format!("t{t} rmdir: {e}"))?;
                    }
                    round += 1;
                }
                Ok((last.ok_or(format!("t{t}: no round"))?, round))
            })
        })
        .collect();
    let mut last: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut rounds = 0;
    for (t, handle) in handles.into_iter().enumerate() {
        match handle.join().expect("thread panicked") {
            Ok((content, count)) => {
                last.insert(format!("t{t}.cfg"), content);
                rounds += count;
            }
            Err(error) => errors.push(error),
        }
    }
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert!(rounds >= THREADS, "{rounds} rounds in total");

    for (name, content) in &last {
        assert_eq!(&get(&daemon, &format!("conc/{name}")), content, "{name}");
    }
    let names: BTreeSet<String> = last.keys().cloned().collect();
    assert_eq!(names_in(&daemon.path("conc")), names, "no leftovers");

    let mut expected: BTreeMap<String, Option<&Vec<u8>>> = BTreeMap::new();
    expected.insert(String::new(), None);
    expected.insert("conc".into(), None);
    for (name, content) in &last {
        expected.insert(format!("conc/{name}"), Some(content));
    }
    let compare = |tree: BTreeMap<String, Value>, when: &str| {
        let paths: BTreeSet<&String> = tree.keys().collect();
        assert_eq!(
            paths,
            expected.keys().collect::<BTreeSet<_>>(),
            "dump paths ({when})"
        );
        for (path, content) in &expected {
            let row = &tree[path];
            match content {
                // The root is the C `__version__` row (type 8).
                None if path.is_empty() => {}
                None => assert_eq!(row["type"], 4, "{path} is a dir ({when})"),
                Some(content) => {
                    assert_eq!(row["type"], 8, "{path} ({when})");
                    assert_eq!(row["size"].as_u64(), Some(content.len() as u64), "{path}");
                    assert_eq!(
                        row["sha256"].as_str(),
                        Some(sha256_hex(content).as_str()),
                        "{path} content ({when})"
                    );
                }
            }
        }
    };
    compare(daemon.dump(), "while running");
    daemon.stop_clean();
    compare(daemon.dump(), "after shutdown");
}

// ---------------------------------------------------------------------------
// 8. Daemonize

#[test]
fn daemonize_writes_pid_file_and_serves() {
    let mut daemon = Daemon::new();
    let status = daemon.start_daemonized();
    assert!(status.success(), "parent exit status {status}");
    let text = fs::read_to_string(&daemon.pid_file).expect("pid file");
    let pid: i32 = text
        .strip_suffix('\n')
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("pid file content {text:?}"));
    assert!(pid_alive(pid), "pid {pid} from the pid file is not running");
    let mode = fs::metadata(&daemon.pid_file)
        .expect("pid file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o644, "pid file mode {mode:o}");
    assert_eq!(daemon.pid(), pid);
    assert!(
        daemon.is_mounted(),
        "parent exited before the mount existed"
    );
    assert!(
        daemon.serves(Instant::now() + Duration::from_secs(5)),
        "mount does not serve after the parent exited"
    );
    put(&daemon, "d.cfg", "daemonized\n");
    assert_eq!(get(&daemon, "d.cfg"), b"daemonized\n");

    let stopped = daemon.stop(libc::SIGTERM);
    assert!(stopped.exited, "daemon {pid} still running after SIGTERM");
    assert!(stopped.elapsed < Duration::from_secs(2), "{stopped:?}");
    assert!(
        !daemon.is_mounted(),
        "still mounted after the daemon exited"
    );
}

/// Removing an expired lock invalidates the kernel's entry for it while other
/// processes look up names in `priv/lock` (they hold the directory's lock and
/// wait for this daemon). The invalidation must not be written from the loop
/// that serves them, or everything hangs (found in review).
#[test]
fn expired_lock_removal_under_concurrent_lookups_does_not_hang() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut daemon = Daemon::new().env("PMXCFS_LOCK_TIMEOUT_SECS", "0");
    daemon.start();
    mkdirs(&daemon, &["priv/lock"]);
    let stop = Arc::new(AtomicBool::new(false));
    let lookers: Vec<_> = (0..2)
        .map(|thread| {
            let stop = Arc::clone(&stop);
            let dir = daemon.path("priv/lock");
            std::thread::spawn(move || {
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = fs::metadata(dir.join(format!("missing-{thread}-{count}")));
                    count += 1;
                }
                count
            })
        })
        .collect();
    let (done_sender, done) = std::sync::mpsc::channel();
    let lock_dir = daemon.path("priv/lock");
    let locker = std::thread::spawn(move || {
        for round in 0..4 {
            let lock = lock_dir.join(format!("x{round}"));
            fs::create_dir(&lock).expect("take the lock");
            std::thread::sleep(Duration::from_millis(1100));
            // Expired (timeout 0 s, more than a second later): removed. The
            // kernel's cached entry is dropped right after the reply.
            let _ = utime(&lock, 0, 0);
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while fs::metadata(&lock).is_ok() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: the lock is still there"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            fs::create_dir(&lock).expect("the lock can be taken again");
        }
        let _ = done_sender.send(());
    });
    let finished = done.recv_timeout(Duration::from_secs(30)).is_ok();
    stop.store(true, Ordering::Relaxed);
    assert!(finished, "lock removal hung while lookups ran");
    locker.join().expect("locker");
    for looker in lookers {
        assert!(looker.join().expect("looker") > 0);
    }
}

/// `--sync-writes`: every change is fdatasync'ed before the reply; the tree
/// behaves the same and survives a kill -9.
#[test]
fn sync_writes_mode_serves_and_persists() {
    let mut daemon = Daemon::new().arg("--sync-writes");
    daemon.start();
    mkdirs(&daemon, &["d"]);
    for index in 0..20 {
        put(
            &daemon,
            &format!("d/f{index}.cfg"),
            format!("content {index}\n"),
        );
    }
    daemon.kill9();
    daemon.start();
    for index in 0..20 {
        assert_eq!(
            get(&daemon, &format!("d/f{index}.cfg")),
            format!("content {index}\n").as_bytes()
        );
    }
}

/// The journal events of the loop thread, in order, from an strace of the
/// daemon: `J` a journal write, `S` an fdatasync of the journal, `R` a
/// reply to the kernel (a write to /dev/fuse).
fn journal_events(daemon: &Daemon, writes: usize) -> String {
    use std::io::{BufRead, BufReader};
    let pid = daemon.pid();
    let trace = daemon.base.join("strace.out");
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-e", "trace=write,writev,fdatasync", "-o"])
        .arg(&trace)
        .args(["-p", &pid.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace (Debian package strace)");
    // strace says when it is attached to the loop thread.
    let stderr = strace.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let attached = format!("Process {pid} attached");
    loop {
        let line = lines.next().expect("strace ended").expect("strace output");
        if line.contains(&attached) {
            break;
        }
    }
    thread::spawn(move || lines.for_each(drop));
    for i in 0..writes {
        fs::write(
            daemon.path(&format!("synced-{i}.cfg")),
            format!("write {i}\n"),
        )
        .expect("write");
    }
    // SAFETY: kill(2) of our own child: strace detaches on SIGINT.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    strace.wait().expect("strace exit");
    let text = fs::read_to_string(&trace).expect("trace");
    let mut events = String::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&format!("{pid} ")) else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("write(") && rest.contains("/journal>") {
            events.push('J');
        } else if rest.starts_with("fdatasync(") && rest.contains("/journal>") {
            events.push('S');
        } else if (rest.starts_with("write(") || rest.starts_with("writev("))
            && rest.contains("</dev/fuse>")
        {
            events.push('R');
        }
    }
    events
}

/// `--sync-writes`: every journal write is followed by its fdatasync before
/// the reply that acknowledges it (the loop thread, /dev/fuse transport so
/// replies are syscalls strace sees). The default mode is checked to do
/// otherwise, so the check can tell them apart.
#[test]
fn strict_mode_syncs_the_journal_before_each_reply() {
    let mut strict = Daemon::new().arg("--no-uring").arg("--sync-writes");
    strict.start();
    let events = journal_events(&strict, 20);
    strict.stop_clean();
    assert!(events.matches('J').count() >= 20, "{events}");
    assert!(
        !events.contains("JR") && !events.contains("JJ"),
        "a reply (R) or another write (J) before the journal's fdatasync (S): {events}"
    );
    assert_eq!(
        events.matches("JS").count(),
        events.matches('J').count(),
        "{events}"
    );

    let mut relaxed = Daemon::new().arg("--no-uring");
    relaxed.start();
    let events = journal_events(&relaxed, 20);
    relaxed.stop_clean();
    assert!(
        events.contains("JR"),
        "the default mode replies before syncing: {events}"
    );
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// A slow disk (every fdatasync/fsync 400 ms longer, an LD_PRELOAD shim) must
/// not hold up reads, nor relaxed-mode writes: the journal syncs run on a
/// thread of their own. And relaxed mode's promise holds on the io_uring
/// transport too: a change is synced ~10 ms (plus the disk's time) after it
/// was acknowledged. (Before, with the sync timer on the loop, writes served
/// by the io_uring queues were not synced at all until the loop woke up for
/// something else: the last check failed.)
#[test]
fn a_slow_disk_holds_up_neither_reads_nor_relaxed_writes() {
    // Both transports: the io_uring queues and the loop reading /dev/fuse.
    for transport in [None, Some("--no-uring")] {
        slow_disk_run(transport);
    }
}

fn slow_disk_run(transport: Option<&str>) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let shim = slow_sync_shim(scratch.path());
    let sync_log = scratch.path().join("syncs");
    let mut daemon = Daemon::new();
    if let Some(arg) = transport {
        daemon = daemon.arg(arg);
    }
    let mut daemon = daemon
        .env("LD_PRELOAD", shim.to_str().expect("utf-8 path"))
        .env("PMXCFS_TEST_SYNC_DELAY_MS", "400")
        .env(
            "PMXCFS_TEST_SYNC_LOG",
            sync_log.to_str().expect("utf-8 path"),
        );
    daemon.start();
    fs::write(daemon.path("read-me"), b"content").expect("write");
    let started = Instant::now();
    let mut worst_read = Duration::ZERO;
    let mut worst_write = Duration::ZERO;
    let mut k = 0u32;
    let mut last_write_ack = None;
    while started.elapsed() < Duration::from_secs(3) {
        // A write leaves the journal unsynced: the timer starts a sync.
        let t = Instant::now();
        fs::write(daemon.path(&format!("w{}", k % 10)), format!("{k}")).expect("write");
        worst_write = worst_write.max(t.elapsed());
        // The journal holds the write before it is acknowledged.
        last_write_ack = Some((
            monotonic_ns(),
            fs::metadata(daemon.data_dir.join("journal")).expect("journal"),
        ));
        k += 1;
        for _ in 0..5 {
            let t = Instant::now();
            assert_eq!(fs::read(daemon.path("read-me")).expect("read"), b"content");
            worst_read = worst_read.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let (last_ack, journal) = last_write_ack.expect("at least one write");
    // The sync that covers the last write is the first one of the journal
    // at its size after that write (the shim logs what each sync covered);
    // it ends at least 400 ms after the write, at worst after one sync in
    // flight (400 ms) and the 10 ms delay. The slack (1.5 s) is for a
    // loaded machine; what the test guards is that the last write is
    // synced with no later write to wake the syncer.
    let bound = Duration::from_millis(400 + 400 + 10 + 1500);
    let covering = || -> Option<Duration> {
        fs::read_to_string(&sync_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ').map(str::parse::<u64>);
                match (fields.next(), fields.next(), fields.next()) {
                    (Some(Ok(at)), Some(Ok(ino)), Some(Ok(size))) => Some((at, ino, size)),
                    _ => None,
                }
            })
            .find(|&(_, ino, size)| ino == journal.ino() && size >= journal.len())
            .map(|(at, _, _)| Duration::from_nanos(at.saturating_sub(last_ack)))
    };
    let waited = Instant::now();
    while covering().is_none() && waited.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(20));
    }
    let covering = covering();
    eprintln!(
        "{transport:?}: {k} writes; worst read {worst_read:?}, worst write {worst_write:?}; last write synced after {covering:?}"
    );
    assert!(
        covering.is_some_and(|after| after < bound),
        "the last acknowledged write was not synced in time: {covering:?} (journal of {} bytes; syncs: {:?})",
        journal.len(),
        fs::read_to_string(&sync_log).unwrap_or_default()
    );
    assert!(k > 20, "writes went on during slow syncs: {k}");
    assert!(
        worst_read < Duration::from_millis(200),
        "a read waited for the slow disk: {worst_read:?}"
    );
    assert!(
        worst_write < Duration::from_millis(200),
        "a relaxed-mode write waited for the slow disk: {worst_write:?}"
    );
    daemon.stop_clean();
}

/// A tmpfs mounted for a test, unmounted when dropped (also on failure).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        fs::create_dir_all(at).expect("mountpoint");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs at {}", at.display());
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system at `dir` with `filler` until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    filler
}

/// A full disk: writes fail with ENOSPC (a clear error; C says EIO), reads
/// go on, nothing acknowledged is lost, and once there is space again the
/// store takes writes without a restart.
#[test]
fn a_full_disk_refuses_writes_with_enospc_and_recovers_when_space_is_back() {
    let mut daemon = Daemon::new();
    let disk = SmallDisk::mount(&daemon.base.join("data"), "16m");
    daemon.start();
    for i in 0..20 {
        fs::write(daemon.path(&format!("before-{i}")), format!("acked {i}")).expect("write");
    }
    let filler = fill(&disk.0);
    // Writes now fail (the journal cannot grow): with ENOSPC, and keep failing.
    let mut failed_with = None;
    let mut acked_while_full = Vec::new();
    for i in 0..200 {
        let rel = format!("while-full-{i}");
        match fs::write(daemon.path(&rel), vec![b'x'; 4096]) {
            Ok(()) => acked_while_full.push(rel),
            Err(error) => {
                failed_with = error.raw_os_error();
                break;
            }
        }
    }
    assert_eq!(
        failed_with,
        Some(libc::ENOSPC),
        "a full disk answers ENOSPC"
    );
    for _ in 0..3 {
        let refused = fs::write(daemon.path("still-full"), b"x");
        assert_eq!(
            refused.map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOSPC)),
            "refused while the disk is full"
        );
    }
    // Reads go on; everything acknowledged is there.
    for i in 0..20 {
        assert_eq!(
            fs::read_to_string(daemon.path(&format!("before-{i}"))).expect("read"),
            format!("acked {i}")
        );
    }
    for rel in &acked_while_full {
        assert_eq!(fs::read(daemon.path(rel)).expect("read").len(), 4096);
    }
    // Space again: within ~1 s the store takes writes (no restart).
    fs::remove_file(&filler).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::write(daemon.path("after"), b"space again") {
            Ok(()) => break,
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
                assert!(Instant::now() < deadline, "no recovery within 5 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert_eq!(
        fs::read(daemon.path("after")).expect("read"),
        b"space again"
    );
    // And it all survives a restart (the durable state is consistent).
    daemon.stop_clean();
    daemon.start();
    assert_eq!(
        fs::read(daemon.path("after")).expect("read"),
        b"space again"
    );
    for i in 0..20 {
        assert!(daemon.path(&format!("before-{i}")).exists());
    }
    for rel in &acked_while_full {
        assert!(
            daemon.path(rel).exists(),
            "{rel} acknowledged while filling"
        );
    }
    daemon.stop_clean();
    drop(disk);
}
