//! The Debian package (`make deb`, cargo-deb): built from this build's
//! binary, lintian without errors, and installed, used and purged on a
//! stand-in Proxmox VE node in a scratch root (tests/package/install-purge.sh:
//! overlay over /, chroot): the diversion of pve-cluster's /usr/bin/pmxcfs,
//! the files, the unit with the optional Type=notify drop-in, the tree
//! exported back to config.db on removal, the C binary back, nothing left
//! after the purge.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tree table's rows, in inode order.
type Rows = Vec<(i64, i64, i64, i64, i64, i64, Vec<u8>, Option<Vec<u8>>)>;

fn rows(path: &Path) -> Rows {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open config.db");
    let mut statement = conn
        .prepare(
            "SELECT inode, parent, version, writer, mtime, type, CAST(name AS BLOB), data FROM tree \
             ORDER BY inode",
        )
        .expect("query");
    statement
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get::<_, Vec<u8>>(6)?,
                row.get::<_, Option<Vec<u8>>>(7)?,
            ))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("row")
}

#[test]
fn the_package_diverts_exports_back_and_purges_cleanly() {
    let work = tempfile::Builder::new()
        .prefix("pmxcfs-package-")
        .tempdir()
        .expect("tempdir");
    let out: PathBuf = work.path().join("out");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The binary this test run built (the dev profile), packaged as
    // `make deb` packages the release one.
    let built = Command::new(&cargo)
        .args(["deb", "--no-build", "--profile", "dev", "--output"])
        .arg(&out)
        .current_dir(repo())
        .output()
        .expect("cargo deb (make deps installs cargo-deb)");
    assert!(
        built.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = std::fs::read_dir(&out)
        .expect("output dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .expect("a .deb");

    let lintian = Command::new("lintian")
        .args(["--fail-on", "error", "--allow-root"])
        .arg(&deb)
        .output()
        .expect("lintian (Debian package lintian)");
    assert!(
        lintian.status.success(),
        "lintian: {}{}",
        String::from_utf8_lossy(&lintian.stdout),
        String::from_utf8_lossy(&lintian.stderr)
    );

    // A copy: reading a WAL-mode database leaves -wal/-shm files beside it.
    let c_db = work.path().join("config.db");
    std::fs::copy(repo().join("tests/vectors/config-db/config.db"), &c_db).expect("copy");
    let root = work.path().join("root");
    std::fs::create_dir(&root).expect("scratch dir");
    let run = Command::new("sh")
        .arg(repo().join("tests/package/install-purge.sh"))
        .arg(&deb)
        .arg(&root)
        .arg(&c_db)
        .output()
        .expect("install-purge.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "install-purge.sh:\n{stdout}\n{stderr}"
    );
    for line in [
        "diversion: diversion of /usr/bin/pmxcfs to /usr/bin/pmxcfs.c-daemon by pmxcfs-rs",
        "diverted C binary says: C pmxcfs",
        "ours says: Usage:",
        "files: /usr/share/pmxcfs-rs/pve-cluster-notify.conf /usr/bin/pmxcfs",
        "unit verified",
        "drop-in: Type=notify ExecStart= ExecStart=/usr/bin/pmxcfs -f",
        "after remove the binary says: C pmxcfs",
        "data dir: config.db config.db.before-pmxcfs-rs journal lmdb",
        "diversions left: 0",
        "after purge the binary says: C pmxcfs",
    ] {
        assert!(stdout.contains(line), "no '{line}' in:\n{stdout}\n{stderr}");
    }
    // The C daemon gets the tree back: the exported config.db holds the
    // rows it had (nothing changed in between), the original kept beside.
    let data = root.join("upper/var/lib/pve-cluster");
    assert_eq!(
        std::fs::read(data.join("config.db.before-pmxcfs-rs")).expect("kept"),
        std::fs::read(&c_db).expect("vector")
    );
    assert_eq!(rows(&data.join("config.db")), rows(&c_db));
}
