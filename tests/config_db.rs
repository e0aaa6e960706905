//! `pmxcfs import-db`, `export-db` and `dump` against the C daemon's
//! config.db (tests/vectors/config-db) and against small hand-made
//! databases the C daemon would refuse.

mod common;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/config-db")
}

fn manifest() -> Value {
    let path = vector_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error} ", path.display()));
    serde_json::from_str(&text).expect("manifest.json parses")
}

fn pmxcfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pmxcfs"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pmxcfs")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn succeed(args: &[&str]) -> Output {
    let output = pmxcfs(args);
    assert!(
        output.status.success(),
        "pmxcfs {args:?} failed: {}",
        stderr(&output)
    );
    output
}

fn import(sqlite: &Path, data_dir: &Path) -> Output {
    pmxcfs(&[
        "import-db",
        "--sqlite",
        path_str(sqlite),
        "--data-dir",
        path_str(data_dir),
    ])
}

fn export(sqlite: &Path, data_dir: &Path) -> Output {
    pmxcfs(&[
        "export-db",
        "--sqlite",
        path_str(sqlite),
        "--data-dir",
        path_str(data_dir),
    ])
}

fn dump(data_dir: &Path) -> Vec<u8> {
    succeed(&["dump", "--data-dir", path_str(data_dir)]).stdout
}

fn dump_rows(data_dir: &Path) -> Vec<Value> {
    String::from_utf8(dump(data_dir))
        .expect("dump is UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each dump line is JSON"))
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One row of a sqlite `tree` table, with the SQL type of `data`.
#[derive(Debug, PartialEq, Eq)]
struct SqlRow {
    inode: i64,
    parent: i64,
    version: i64,
    writer: i64,
    mtime: i64,
    kind: i64,
    name: Vec<u8>,
    data_type: String,
    data: Vec<u8>,
}

fn sql_rows(path: &Path) -> Vec<SqlRow> {
    let conn = Connection::open_with_flags(
        format!("file:{}?mode=ro&immutable=1", path_str(path)),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .expect("open sqlite");
    let mut statement = conn
        .prepare(
            "SELECT inode, parent, version, writer, mtime, type, CAST(name AS BLOB), \
             typeof(data), ifnull(data, x'') FROM tree ORDER BY inode",
        )
        .expect("prepare");
    statement
        .query_map([], |row| {
            Ok(SqlRow {
                inode: row.get(0)?,
                parent: row.get(1)?,
                version: row.get(2)?,
                writer: row.get(3)?,
                mtime: row.get(4)?,
                kind: row.get(5)?,
                name: row.get(6)?,
                data_type: row.get(7)?,
                data: row.get(8)?,
            })
        })
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

fn schema(path: &Path) -> Vec<String> {
    let conn = Connection::open_with_flags(
        format!("file:{}?mode=ro&immutable=1", path_str(path)),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .expect("open sqlite");
    conn.prepare("SELECT sql FROM sqlite_master ORDER BY rowid")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("schema")
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names = common::battery::listing(dir);
    names.sort();
    names
}

/// Checks an exported file: the C schema text, WAL mode, mode 0600, nothing
/// beside it.
fn check_export_file(path: &Path, manifest: &Value) {
    let expected_schema: Vec<String> = manifest["sqlite_schema"]
        .as_array()
        .expect("sqlite_schema")
        .iter()
        .map(|sql| sql.as_str().expect("schema text").to_owned())
        .collect();
    assert_eq!(schema(path), expected_schema);
    let bytes = std::fs::read(path).expect("read export");
    assert_eq!(&bytes[18..20], &[2, 2], "WAL mode in the header");
    let mode = std::fs::metadata(path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir = path.parent().expect("parent");
    assert_eq!(
        dir_names(dir),
        vec![
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        ],
        "no -wal, -shm or temporary file next to the export"
    );
}

#[test]
fn the_vector_db_imports_exports_and_reimports_exactly() {
    let manifest = manifest();
    let expected = manifest["rows"].as_array().expect("rows");
    let temp = tempfile::tempdir().expect("tempdir");
    let source_dir = temp.path().join("source");
    std::fs::create_dir(&source_dir).expect("mkdir");
    let source = source_dir.join("config.db");
    std::fs::copy(vector_dir().join("config.db"), &source).expect("copy config.db");

    let data = temp.path().join("data");
    let output = import(&source, &data);
    assert!(output.status.success(), "import: {}", stderr(&output));
    // The source is untouched, and nothing was created next to it.
    assert_eq!(dir_names(&source_dir), vec!["config.db"]);
    assert_eq!(
        sha256_hex(&std::fs::read(&source).expect("read source")),
        manifest["db_sha256"].as_str().expect("db_sha256")
    );
    let lock_mode = std::fs::metadata(data.join(".pmxcfs.lockfile"))
        .expect("lockfile")
        .permissions()
        .mode();
    assert_eq!(lock_mode & 0o777, 0o600);

    // dump == manifest rows, every field, in inode order.
    let dumped = dump_rows(&data);
    assert_eq!(dumped.len(), expected.len());
    assert_eq!(
        dumped.len() as u64,
        manifest["row_count"].as_u64().expect("row_count")
    );
    let keys = [
        "inode", "parent", "version", "writer", "mtime", "type", "name", "size", "sha256",
    ];
    for (row, want) in dumped.iter().zip(expected) {
        let object = row.as_object().expect("object");
        assert_eq!(object.len(), keys.len(), "{row}");
        for key in keys {
            assert_eq!(row[key], want[key], "{key} of {row}");
        }
    }
    let inodes: Vec<u64> = dumped
        .iter()
        .map(|row| row["inode"].as_u64().expect("inode"))
        .collect();
    assert!(
        inodes.windows(2).all(|pair| pair[0] < pair[1]),
        "inode order"
    );
    assert_eq!(dumped[0]["version"], manifest["global_version"]);
    assert_eq!(dumped[0]["mtime"], manifest["global_mtime"]);
    assert_eq!(dumped[0]["type"], manifest["version_row_type"]);

    // export: the C schema and every row, NULL vs blob included.
    let out_dir = temp.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let exported = out_dir.join("config.db");
    let output = export(&exported, &data);
    assert!(output.status.success(), "export: {}", stderr(&output));
    check_export_file(&exported, &manifest);
    let rows = sql_rows(&exported);
    assert_eq!(rows.len(), expected.len());
    for (row, want) in rows.iter().zip(expected) {
        let number = |key: &str| want[key].as_i64().expect(key);
        assert_eq!(row.inode, number("inode"));
        assert_eq!(row.parent, number("parent"));
        assert_eq!(row.version, number("version"));
        assert_eq!(row.writer, number("writer"));
        assert_eq!(row.mtime, number("mtime"));
        assert_eq!(row.kind, number("type"));
        assert_eq!(row.name, want["name"].as_str().expect("name").as_bytes());
        assert_eq!(
            row.data_type,
            want["data_sql_type"].as_str().expect("sql type")
        );
        assert_eq!(row.data.len() as i64, number("size"));
        assert_eq!(
            sha256_hex(&row.data),
            want["sha256"].as_str().expect("sha256")
        );
    }
    // The export holds the same rows as the C daemon's file.
    assert_eq!(rows, sql_rows(&source));

    // import -> export -> import is lossless.
    let data2 = temp.path().join("data2");
    let output = import(&exported, &data2);
    assert!(output.status.success(), "re-import: {}", stderr(&output));
    assert_eq!(dump(&data2), dump(&data));
    let out2_dir = temp.path().join("out2");
    std::fs::create_dir(&out2_dir).expect("mkdir");
    let exported2 = out2_dir.join("config.db");
    let output = export(&exported2, &data2);
    assert!(output.status.success(), "re-export: {}", stderr(&output));
    check_export_file(&exported2, &manifest);
    assert_eq!(sql_rows(&exported2), rows);
}

/// A row for a hand-made database: (inode, parent, version, type, name, data).
type TestRow<'a> = (i64, i64, i64, i64, &'a [u8], Option<&'a [u8]>);

const VERSION_ROW: TestRow<'static> = (0, 0, 50, 8, b"__version__", None);

/// Creates a database with the C daemon's schema holding `rows`.
fn make_db(path: &Path, rows: &[TestRow<'_>]) {
    let manifest = manifest();
    let conn = Connection::open(path).expect("create db");
    conn.execute_batch(manifest["sqlite_schema"][0].as_str().expect("schema"))
        .expect("schema");
    for (inode, parent, version, kind, name, data) in rows {
        conn.execute(
            "INSERT INTO tree VALUES (?1, ?2, ?3, 0, 1700000000, ?4, CAST(?5 AS TEXT), ?6)",
            rusqlite::params![inode, parent, version, kind, name, data],
        )
        .expect("insert");
    }
}

#[test]
fn null_and_empty_blobs_and_odd_names_survive() {
    let temp = tempfile::tempdir().expect("tempdir");
    let source = temp.path().join("source.db");
    let rows: Vec<TestRow<'_>> = vec![
        VERSION_ROW,
        (2, 0, 2, 4, b"dir-null", None),
        (3, 0, 3, 4, b"dir-empty-blob", Some(b"")),
        (4, 2, 4, 8, b"file-null", None),
        (5, 2, 5, 8, b"file-empty-blob", Some(b"")),
        (6, 3, 6, 8, b"caf\xe9 \xff", Some(b"\x00binary\xff")),
    ];
    make_db(&source, &rows);
    let data = temp.path().join("data");
    let output = import(&source, &data);
    assert!(output.status.success(), "import: {}", stderr(&output));
    let exported = temp.path().join("out").join("config.db");
    std::fs::create_dir(temp.path().join("out")).expect("mkdir");
    let output = export(&exported, &data);
    assert!(output.status.success(), "export: {}", stderr(&output));
    check_export_file(&exported, &manifest());
    let exported_rows = sql_rows(&exported);
    assert_eq!(exported_rows, sql_rows(&source));
    let types: Vec<&str> = exported_rows
        .iter()
        .map(|row| row.data_type.as_str())
        .collect();
    assert_eq!(types, ["null", "null", "blob", "null", "blob", "blob"]);

    let dumped = dump_rows(&data);
    assert_eq!(dumped.len(), rows.len());
    assert_eq!(dumped[5]["name"], "caf\u{fffd} \u{fffd}");
    assert_eq!(dumped[5]["size"], 8);
    assert_eq!(dumped[5]["sha256"], sha256_hex(b"\x00binary\xff"));
    assert_eq!(dumped[4]["sha256"], sha256_hex(b""));
}

/// The data dir holds no tree: no store at all, or only the root at
/// version 1.
fn assert_no_tree(data_dir: &Path) {
    let output = pmxcfs(&["dump", "--data-dir", path_str(data_dir)]);
    if output.status.success() {
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "only the version row: {text}");
        let root: Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(root["inode"], 0);
        assert_eq!(root["version"], 1);
    } else {
        assert!(
            stderr(&output).contains("holds no store"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn databases_the_c_daemon_refuses_are_refused() {
    let temp = tempfile::tempdir().expect("tempdir");
    let qemu_guests: Vec<TestRow<'_>> = vec![
        VERSION_ROW,
        (2, 0, 2, 4, b"nodes", None),
        (3, 2, 3, 4, b"pve1", None),
        (4, 3, 4, 4, b"qemu-server", None),
        (5, 4, 5, 8, b"100.conf", Some(b"memory: 512\n")),
        (6, 2, 6, 4, b"pve2", None),
        (7, 6, 7, 4, b"qemu-server", None),
        (8, 7, 8, 8, b"100.conf", Some(b"memory: 1024\n")),
    ];
    let cases: Vec<(&str, Vec<TestRow<'_>>, &str)> = vec![
        (
            "duplicate-names",
            vec![
                VERSION_ROW,
                (2, 0, 2, 4, b"nodes", None),
                (3, 0, 3, 8, b"nodes", None),
            ],
            "duplicate name \"nodes\" in directory 0",
        ),
        (
            "missing-parent",
            vec![VERSION_ROW, (3, 2, 3, 8, b"orphan.cfg", None)],
            "row 3 has a missing parent 2",
        ),
        (
            "file-as-parent",
            vec![
                VERSION_ROW,
                (2, 0, 2, 8, b"file", None),
                (3, 2, 3, 8, b"child", None),
            ],
            "row 3 has a file as its parent (2)",
        ),
        (
            "duplicate-vmids",
            qemu_guests,
            "vmids more than once: [100]",
        ),
        (
            "dir-with-data",
            vec![VERSION_ROW, (2, 0, 2, 4, b"dir", Some(b"x"))],
            "directory 2 has data",
        ),
        (
            "unknown-type",
            vec![VERSION_ROW, (2, 0, 2, 10, b"odd", None)],
            "row 2 has type 10",
        ),
        (
            "misnamed-root",
            vec![(0, 0, 5, 8, b"root", None)],
            "inode 0 is named \"root\", not __version__",
        ),
    ];
    for (label, rows, reason) in cases {
        let sqlite = temp.path().join(format!("{label}.db"));
        make_db(&sqlite, &rows);
        let data = temp.path().join(format!("data-{label}"));
        let output = import(&sqlite, &data);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{label}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains("the C daemon would refuse to load this database")
                && message.contains(reason),
            "{label}: {message} should name {reason}"
        );
        assert_no_tree(&data);
    }

    // Refused while reading: nothing is created but the lock file.
    let nul_name = temp.path().join("nul-name.db");
    make_db(&nul_name, &[VERSION_ROW, (2, 0, 2, 8, b"a\0b", None)]);
    let no_table = temp.path().join("no-table.db");
    Connection::open(&no_table)
        .expect("create")
        .execute_batch("CREATE TABLE other (a)")
        .expect("table");
    let pending_wal = temp.path().join("pending.db");
    make_db(&pending_wal, &[VERSION_ROW]);
    std::fs::write(temp.path().join("pending.db-wal"), b"uncheckpointed").expect("wal");
    for (label, sqlite, reason) in [
        ("nul-name", &nul_name, "holds a NUL byte"),
        ("no-table", &no_table, "has no table `tree`"),
        ("pending-wal", &pending_wal, "not checkpointed"),
        (
            "missing-file",
            &temp.path().join("absent.db"),
            "No such file",
        ),
    ] {
        let data = temp.path().join(format!("data-{label}"));
        let output = import(sqlite, &data);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{label}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(reason),
            "{label}: {}",
            stderr(&output)
        );
        assert_eq!(dir_names(&data), vec![".pmxcfs.lockfile"], "{label}");
        assert_no_tree(&data);
    }
}

#[test]
fn import_needs_an_empty_unlocked_data_dir() {
    let temp = tempfile::tempdir().expect("tempdir");
    let sqlite = temp.path().join("small.db");
    make_db(&sqlite, &[VERSION_ROW, (2, 0, 2, 4, b"nodes", None)]);
    let data = temp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");

    let lock = File::create(data.join(".pmxcfs.lockfile")).expect("lockfile");
    lock.try_lock().expect("take the lock");
    let output = import(&sqlite, &data);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("is locked by another process"),
        "{}",
        stderr(&output)
    );
    assert_no_tree(&data);
    let output = export(&temp.path().join("x.db"), &data);
    assert_eq!(output.status.code(), Some(1));
    drop(lock);

    let output = import(&sqlite, &data);
    assert!(output.status.success(), "import: {}", stderr(&output));
    let before = dump(&data);
    let output = import(&sqlite, &data);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("already holds a tree"),
        "{}",
        stderr(&output)
    );
    assert_eq!(dump(&data), before);
}

#[test]
fn export_writes_only_new_files_from_existing_stores() {
    let temp = tempfile::tempdir().expect("tempdir");
    let sqlite = temp.path().join("small.db");
    make_db(&sqlite, &[VERSION_ROW, (2, 0, 2, 4, b"nodes", None)]);
    let data = temp.path().join("data");
    assert!(import(&sqlite, &data).status.success());

    let target = temp.path().join("existing.db");
    std::fs::write(&target, b"keep").expect("write");
    let output = export(&target, &data);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"keep");

    let empty = temp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let output = export(&temp.path().join("new.db"), &empty);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("holds no store"),
        "{}",
        stderr(&output)
    );
    assert_eq!(dir_names(&empty), Vec::<String>::new());
    assert!(!temp.path().join("new.db").exists());
}

#[test]
fn the_command_line_reports_usage_errors_and_cluster_mode_needs_a_node_ip() {
    for args in [
        &["import-db", "--sqlite", "x.db"][..],
        &["export-db", "--data-dir"],
        &["dump"],
        &["dump", "--data-dir", "d", "extra"],
        &["frobnicate"],
        &["--no-such-option"],
    ] {
        let output = pmxcfs(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains("Usage"), "{args:?}");
    }
    let output = pmxcfs(&["dump", "--help"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("lossy"));

    // A new tree imports the host corosync.conf and runs in cluster mode,
    // which needs the node's address: refused before anything is mounted.
    // (Only temporary paths: never start a daemon on the host's /etc/pve.)
    let temp = tempfile::tempdir().expect("temp dir");
    let conf = temp.path().join("corosync.conf");
    std::fs::write(&conf, "totem {\n  config_version: 1\n}\n").expect("conf");
    let path = |name: &str| temp.path().join(name).display().to_string();
    let output = pmxcfs(&[
        "-f",
        "--mountpoint",
        &path("mnt"),
        "--data-dir",
        &path("data"),
        "--run-dir",
        &path("run"),
        "--pid-file",
        &path("pid"),
        "--corosync-conf",
        &path("corosync.conf"),
        "--nodename",
        "no-such-node.invalid",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("unable to resolve node name"),
        "{}",
        stderr(&output)
    );
}

/// The first start on a node the C daemon ran (its config.db in the data
/// dir, no store of ours) imports the database, leaves the file as it was,
/// says so in one log line, and does not import again at the next start.
#[test]
fn the_first_start_on_a_c_node_migrates_its_config_db() {
    let manifest = manifest();
    let mut daemon = common::Daemon::new();
    let c_db = daemon.data_dir.join("config.db");
    std::fs::copy(vector_dir().join("config.db"), &c_db).expect("copy config.db");
    // /var/lib/pve-cluster as the C daemon left it: its mode stays.
    std::fs::set_permissions(&daemon.data_dir, std::fs::Permissions::from_mode(0o750))
        .expect("chmod");
    daemon.start();
    // The C database's files are served (those at the top, by content).
    let mut served = 0;
    for row in manifest["rows"].as_array().expect("rows") {
        let name = row["name"].as_str().expect("name");
        if row["type"] == 8 && row["parent"] == 0 && name != "__version__" {
            let data = std::fs::read(daemon.path(name)).expect("file from the C database");
            assert_eq!(
                sha256_hex(&data),
                row["sha256"].as_str().expect("sha256"),
                "{name}"
            );
            served += 1;
        }
    }
    assert!(served >= 3, "{served} top-level files checked");
    std::fs::write(daemon.path("after-migration.cfg"), b"ours\n").expect("write");
    daemon.stop_clean();
    let mode = std::fs::metadata(&daemon.data_dir)
        .expect("data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "data dir mode");
    let log = std::fs::read_to_string(&daemon.log).expect("log");
    assert_eq!(log.matches("migrated the C daemon's").count(), 1, "{log}");
    assert_eq!(
        sha256_hex(&std::fs::read(&c_db).expect("config.db")),
        manifest["db_sha256"].as_str().expect("db_sha256"),
        "config.db untouched"
    );
    // The store has the C rows (dump as import-db makes it) plus our write.
    let imported = tempfile::tempdir().expect("tempdir");
    let output = import(&c_db, imported.path());
    assert!(output.status.success(), "import: {}", stderr(&output));
    let reference = dump_rows(imported.path());
    let migrated = dump_rows(&daemon.data_dir);
    for row in reference.iter().skip(1) {
        assert!(migrated.contains(row), "{row} not migrated");
    }
    assert!(
        migrated
            .iter()
            .any(|row| row["name"] == "after-migration.cfg"),
        "our own write"
    );
    // A second start uses the store, not the database again.
    daemon.start();
    assert_eq!(
        std::fs::read(daemon.path("after-migration.cfg")).expect("kept"),
        b"ours\n"
    );
    daemon.stop_clean();
    let log = std::fs::read_to_string(&daemon.log).expect("log");
    assert_eq!(log.matches("migrated the C daemon's").count(), 1, "{log}");

    // Back to the C daemon (export-db), which then changes the tree: its
    // config.db is newer than our store, and our next start says so
    // instead of serving a tree without those changes.
    std::fs::remove_file(&c_db).expect("old config.db");
    let output = export(&c_db, &daemon.data_dir);
    assert!(output.status.success(), "export: {}", stderr(&output));
    let conn = Connection::open(&c_db).expect("open export");
    conn.execute("UPDATE tree SET version = version + 1 WHERE inode = 0", [])
        .expect("the C daemon's next change");
    drop(conn);
    let output = start_in_foreground(&daemon);
    assert!(!output.status.success(), "started on a stale store");
    assert!(
        stderr(&output).contains("is newer than this daemon's store"),
        "{}",
        stderr(&output)
    );
    // As the message says: the store aside, and the next start imports.
    std::fs::rename(daemon.data_dir.join("lmdb"), daemon.base.join("lmdb.old")).expect("aside");
    std::fs::rename(
        daemon.data_dir.join("journal"),
        daemon.base.join("journal.old"),
    )
    .expect("aside");
    daemon.start();
    assert_eq!(
        std::fs::read(daemon.path("after-migration.cfg")).expect("in the C tree"),
        b"ours\n"
    );
    daemon.stop_clean();
    let log = std::fs::read_to_string(&daemon.log).expect("log");
    assert_eq!(log.matches("migrated the C daemon's").count(), 2, "{log}");
}

/// `pmxcfs -f -l` on the harness daemon's directories, expected to fail
/// before it mounts.
fn start_in_foreground(daemon: &common::Daemon) -> Output {
    let mountpoint = daemon.mountpoint.to_string_lossy().into_owned();
    pmxcfs(&[
        "-f",
        "-l",
        "--mountpoint",
        &mountpoint,
        "--data-dir",
        path_str(&daemon.data_dir),
        "--run-dir",
        path_str(&daemon.run_dir),
        "--pid-file",
        path_str(&daemon.pid_file),
        "--nodename",
        &daemon.nodename,
        "--node-ip",
        common::NODE_IP,
        "--ipc-service",
        &daemon.ipc_service(),
        "--rrd-dir",
        path_str(&daemon.rrd_dir),
    ])
}

/// A C database the C daemon itself would refuse stops the first start
/// with the reason, and leaves no store behind (the next start tries again).
#[test]
fn a_c_database_the_c_daemon_refuses_stops_the_migration() {
    let daemon = common::Daemon::new();
    let c_db = daemon.data_dir.join("config.db");
    make_db(
        &c_db,
        &[
            VERSION_ROW,
            (2, 0, 2, 4, b"nodes", None),
            (3, 0, 3, 8, b"nodes", None),
        ],
    );
    let output = start_in_foreground(&daemon);
    assert!(!output.status.success(), "started on a refused database");
    let text = stderr(&output);
    assert!(
        text.contains("migrating the C daemon's config.db")
            && text.contains("duplicate name \"nodes\""),
        "{text}"
    );
    assert!(!daemon.data_dir.join("lmdb").exists(), "no half-made store");
    assert!(c_db.exists());
}
