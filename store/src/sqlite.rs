//! Reading and writing the C daemon's `config.db` (spec/memdb.md §4): the
//! `tree` table as [`Row`]s.
//!
//! Reading opens the file read-only and immutable, so nothing (no `-wal`,
//! no `-shm`) is created next to it. Writing builds a new file under a
//! temporary name in the target's directory and moves it into place only
//! when it is complete and checkpointed.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql};

use crate::error::{Result, StoreError};
use crate::row::Row;

/// The `tree` table exactly as the C daemon's `CREATE TABLE IF NOT EXISTS`
/// leaves it in `sqlite_master.sql` (sqlite keeps the statement text without
/// `IF NOT EXISTS` and the final semicolon). Creating the table with this
/// text gives a byte-identical schema entry.
pub const C_SCHEMA_SQL: &str = "CREATE TABLE tree (  \
inode INTEGER PRIMARY KEY NOT NULL,  \
parent INTEGER NOT NULL CHECK(typeof(parent)=='integer'),  \
version INTEGER NOT NULL CHECK(typeof(version)=='integer'),  \
writer INTEGER NOT NULL CHECK(typeof(writer)=='integer'),  \
mtime INTEGER NOT NULL CHECK(typeof(mtime)=='integer'),  \
type INTEGER NOT NULL CHECK(typeof(type)=='integer'),  \
name TEXT NOT NULL,  \
data BLOB)";

const COLUMNS: [&str; 8] = [
    "inode", "parent", "version", "writer", "mtime", "type", "name", "data",
];

fn sqlite_error(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// `file:` URI for `path` (absolute, every byte outside the unreserved set
/// percent-encoded, so `?`, `#` and `%` in names are taken literally).
fn file_uri(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path).map_err(|error| StoreError::io(path, error))?;
    let mut uri = String::from("file:");
    for &byte in absolute.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    Ok(uri)
}

/// `path` with `suffix` appended to its file name (`config.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn type_name(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// Reads every row of the `tree` table of a C daemon's database, in inode
/// order, with the C loader's conversions: `writer` and `mtime` masked to 32
/// bits, `type` to 8 bits; `name` as raw bytes; `data` NULL or a blob.
///
/// The load rules (names, parents, types, vmids) are checked by
/// [`Store::import_rows`](crate::Store::import_rows), not here. Refused here:
/// a file that is not such a database, a non-integer in an integer column, a
/// NULL name, a name holding a NUL byte (the C daemon would cut the name
/// there), and a database with a non-empty write-ahead log (an immutable
/// open would not see the changes in it).
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let conn = open_read_only(path)?;
    read_rows_of(path, &conn)
}

/// The global version of a C daemon's database (its `__version__` row),
/// with the same refusals as [`read_rows`] for the file itself.
pub fn read_global_version(path: &Path) -> Result<u64> {
    let conn = open_read_only(path)?;
    conn.query_row("SELECT version FROM tree WHERE inode = 0", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|version| version as u64)
    .map_err(|error| sqlite_error(path, format!("no version row: {error}")))
}

/// Opens a regular file without a pending write-ahead log, read-only and
/// immutable.
fn open_read_only(path: &Path) -> Result<Connection> {
    let metadata = std::fs::metadata(path).map_err(|error| StoreError::io(path, error))?;
    if !metadata.is_file() {
        return Err(sqlite_error(path, "not a regular file"));
    }
    let wal = with_suffix(path, "-wal");
    if std::fs::metadata(&wal).is_ok_and(|wal_metadata| wal_metadata.len() > 0) {
        return Err(sqlite_error(
            path,
            format!(
                "{} is not empty: the database has changes that are not checkpointed \
                 (the C daemon is running or was not stopped cleanly); stop pmxcfs \
                 cleanly, or run `sqlite3 {} 'PRAGMA wal_checkpoint(TRUNCATE)'`, and retry",
                wal.display(),
                path.display()
            ),
        ));
    }
    let uri = file_uri(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(&uri, flags)
        .map_err(|error| sqlite_error(path, format!("cannot open: {error}")))
}

fn read_rows_of(path: &Path, conn: &Connection) -> Result<Vec<Row>> {
    let reason = |error: rusqlite::Error| sqlite_error(path, error.to_string());
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('tree')")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(reason)?;
    if columns.is_empty() {
        return Err(sqlite_error(
            path,
            "has no table `tree`: not a pmxcfs config.db",
        ));
    }
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|column| !columns.iter().any(|have| have == column))
        .collect();
    if !missing.is_empty() {
        return Err(sqlite_error(
            path,
            format!("table `tree` lacks the columns {missing:?}"),
        ));
    }
    let schema: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tree'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(reason)?
        .flatten();
    if schema.as_deref() != Some(C_SCHEMA_SQL) {
        tracing::warn!(
            path = %path.display(),
            "table `tree` is not declared as the C daemon declares it; reading it anyway"
        );
    }

    let mut statement = conn
        .prepare(
            "SELECT inode, parent, version, writer, mtime, type, name, data \
             FROM tree ORDER BY inode",
        )
        .map_err(reason)?;
    let mut query = statement.query([]).map_err(reason)?;
    let mut rows = Vec::new();
    while let Some(sql_row) = query.next().map_err(reason)? {
        let mut integers = [0i64; 6];
        for (index, slot) in integers.iter_mut().enumerate() {
            match sql_row.get_ref(index).map_err(reason)? {
                ValueRef::Integer(value) => *slot = value,
                other => {
                    return Err(sqlite_error(
                        path,
                        format!(
                            "column `{}` of row {} holds {}, not an integer",
                            COLUMNS[index],
                            integers[0],
                            type_name(other)
                        ),
                    ));
                }
            }
        }
        // Same conversions as the C loader: 64-bit values are taken as
        // unsigned, writer/mtime keep their low 32 bits, type its low 8.
        let [inode, parent, version, writer, mtime, kind] = integers.map(|value| value as u64);
        let row_error = |what: String| sqlite_error(path, format!("row {inode}: {what}"));
        if writer > u64::from(u32::MAX) || mtime > u64::from(u32::MAX) || kind > 255 {
            tracing::warn!(
                inode,
                writer,
                mtime,
                kind,
                "row has out-of-range writer, mtime or type; keeping the low bits as the C daemon does"
            );
        }
        let name = match sql_row.get_ref(6).map_err(reason)? {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.to_vec(),
            ValueRef::Null => return Err(row_error("the name is NULL".into())),
            other => {
                return Err(row_error(format!(
                    "the name holds {}, not text",
                    type_name(other)
                )));
            }
        };
        if name.contains(&0) {
            return Err(row_error(format!(
                "the name {:?} holds a NUL byte (the C daemon would cut it there)",
                String::from_utf8_lossy(&name)
            )));
        }
        let data = match sql_row.get_ref(7).map_err(reason)? {
            ValueRef::Null => None,
            ValueRef::Blob(bytes) => Some(bytes.to_vec()),
            ValueRef::Text(bytes) => {
                tracing::debug!(inode, "data stored as text; taken as its bytes");
                Some(bytes.to_vec())
            }
            other => {
                return Err(row_error(format!(
                    "the data holds {}, not a blob",
                    type_name(other)
                )));
            }
        };
        rows.push(Row {
            inode,
            parent,
            version,
            writer: (writer & 0xffff_ffff) as u32,
            mtime: (mtime & 0xffff_ffff) as u32,
            kind: (kind & 0xff) as u8,
            name,
            data,
        });
    }
    Ok(rows)
}

/// A name bound as TEXT from raw bytes (sqlite does not check encodings).
struct TextBytes<'a>(&'a [u8]);

impl ToSql for TextBytes<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}

/// Data bound exactly as the row says: NULL, or a (possibly empty) blob.
struct Data<'a>(Option<&'a [u8]>);

impl ToSql for Data<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            None => ValueRef::Null,
            Some(bytes) => ValueRef::Blob(bytes),
        }))
    }
}

/// Removes the temporary database (and any `-wal`/`-shm` of it) unless the
/// export got to the end.
struct TempFiles {
    path: PathBuf,
    armed: bool,
}

impl TempFiles {
    fn paths(&self) -> [PathBuf; 3] {
        [
            self.path.clone(),
            with_suffix(&self.path, "-wal"),
            with_suffix(&self.path, "-shm"),
        ]
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        if self.armed {
            for path in self.paths() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Writes `rows` into a new database at `path` that the C daemon loads
/// unchanged: its schema text, WAL journal mode, mode 0600, one row per
/// entry. Refuses to overwrite an existing file. The file appears at `path`
/// only complete (built under a temporary name in the same directory,
/// checkpointed, synced, then renamed without replacing anything).
pub fn write_rows(path: &Path, rows: &[Row]) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(sqlite_error(
            path,
            "already exists; refusing to overwrite it",
        ));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| sqlite_error(path, "has no file name"))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp_path = dir.join(temp_name);
    for leftover in [
        with_suffix(&temp_path, "-wal"),
        with_suffix(&temp_path, "-shm"),
    ] {
        if leftover.symlink_metadata().is_ok() {
            return Err(sqlite_error(
                path,
                format!("a leftover {} is in the way", leftover.display()),
            ));
        }
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(|error| StoreError::io(&temp_path, error))?;
    let mut temp = TempFiles {
        path: temp_path.clone(),
        armed: true,
    };

    let reason = |error: rusqlite::Error| sqlite_error(&temp_path, error.to_string());
    let mut conn = Connection::open_with_flags(
        &temp_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(reason)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(reason)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(sqlite_error(
            &temp_path,
            format!("journal mode is {mode}, not wal"),
        ));
    }
    {
        let txn = conn.transaction().map_err(reason)?;
        txn.execute_batch(C_SCHEMA_SQL).map_err(reason)?;
        {
            let mut insert = txn
                .prepare(
                    "INSERT INTO tree (inode, parent, version, writer, mtime, type, name, data) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(reason)?;
            for row in rows {
                // 64-bit values are stored as the C daemon binds them: the
                // same bits as a signed integer.
                insert
                    .execute(rusqlite::params![
                        row.inode as i64,
                        row.parent as i64,
                        row.version as i64,
                        i64::from(row.writer),
                        i64::from(row.mtime),
                        i64::from(row.kind),
                        TextBytes(&row.name),
                        Data(row.data.as_deref()),
                    ])
                    .map_err(|error| {
                        sqlite_error(&temp_path, format!("row {}: {error}", row.inode))
                    })?;
            }
        }
        txn.commit().map_err(reason)?;
    }
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(reason)?;
    if busy != 0 {
        return Err(sqlite_error(
            &temp_path,
            "the final checkpoint did not complete",
        ));
    }
    conn.close().map_err(|(_, error)| reason(error))?;
    // The last connection is closed and everything is in the main file;
    // whatever sqlite left beside it is empty.
    for side in &temp.paths()[1..] {
        match std::fs::remove_file(side) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(StoreError::io(side, error)),
        }
    }
    File::open(&temp_path)
        .and_then(|file| file.sync_all())
        .map_err(|error| StoreError::io(&temp_path, error))?;
    rename_no_replace(&temp_path, path)?;
    temp.armed = false;
    File::open(&dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(|error| StoreError::io(&dir, error))?;
    Ok(())
}

/// Moves `from` to `to` atomically, failing if `to` exists.
fn rename_no_replace(from: &Path, to: &Path) -> Result<()> {
    let c_path = |path: &Path| {
        std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| sqlite_error(path, "the path holds a NUL byte"))
    };
    let (c_from, c_to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EEXIST) => Err(sqlite_error(
            to,
            "appeared while the export ran; refusing to overwrite it",
        )),
        // The file system cannot rename without replacing: a hard link
        // fails on an existing target just the same.
        Some(libc::EINVAL | libc::ENOSYS) => {
            std::fs::hard_link(from, to).map_err(|link_error| {
                if link_error.kind() == std::io::ErrorKind::AlreadyExists {
                    sqlite_error(
                        to,
                        "appeared while the export ran; refusing to overwrite it",
                    )
                } else {
                    StoreError::io(to, link_error)
                }
            })?;
            std::fs::remove_file(from).map_err(|unlink_error| StoreError::io(from, unlink_error))
        }
        _ => Err(StoreError::io(to, error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn row(inode: u64, parent: u64, kind: u8, name: &[u8], data: Option<&[u8]>) -> Row {
        Row {
            inode,
            parent,
            version: inode,
            writer: 0,
            mtime: 1_700_000_000,
            kind,
            name: name.to_vec(),
            data: data.map(<[u8]>::to_vec),
        }
    }

    fn sample() -> Vec<Row> {
        vec![
            Row {
                writer: u32::MAX,
                mtime: u32::MAX,
                version: u64::MAX,
                ..row(0, 0, 8, b"__version__", None)
            },
            row(2, 0, 4, b"dir", None),
            row(3, 0, 4, b"touched-dir", Some(b"")),
            row(4, 2, 8, b"null.cfg", None),
            row(5, 2, 8, b"empty.cfg", Some(b"")),
            row(6, 2, 8, b"caf\xe9-\xff.cfg", Some(b"\x00\x01binary\xff")),
            row(u64::MAX, 2, 8, b"big inode", Some(b"x")),
        ]
    }

    #[test]
    fn rows_survive_a_write_and_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        let mut rows = sample();
        write_rows(&path, &rows).expect("write");
        let mut read = read_rows(&path).expect("read");
        let key = |row: &Row| row.inode as i64;
        rows.sort_by_key(key);
        read.sort_by_key(key);
        assert_eq!(read, rows);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![OsString::from("config.db")],
            "no -wal, -shm or temp file"
        );
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let header = std::fs::read(&path).expect("read file");
        assert_eq!(&header[18..20], &[2, 2], "WAL mode in the header");

        let conn = Connection::open(&path).expect("open");
        let schema: String = conn
            .query_row(
                "SELECT group_concat(sql, ';') FROM sqlite_master",
                [],
                |row| row.get(0),
            )
            .expect("schema");
        assert_eq!(schema, C_SCHEMA_SQL);
        let types: Vec<(i64, String, String)> = conn
            .prepare("SELECT inode, typeof(name), typeof(data) FROM tree ORDER BY inode")
            .expect("prepare")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        let expected = [
            (-1, "text", "blob"),
            (0, "text", "null"),
            (2, "text", "null"),
            (3, "text", "blob"),
            (4, "text", "null"),
            (5, "text", "blob"),
            (6, "text", "blob"),
        ];
        let types: Vec<(i64, &str, &str)> = types
            .iter()
            .map(|(inode, name, data)| (*inode, name.as_str(), data.as_str()))
            .collect();
        assert_eq!(types, expected);
    }

    #[test]
    fn write_refuses_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        std::fs::write(&path, b"keep me").expect("write");
        let error = write_rows(&path, &sample()).expect_err("must refuse");
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(std::fs::read(&path).expect("read"), b"keep me");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        let rows = vec![row(2, 0, 4, b"a", None), row(2, 0, 4, b"b", None)];
        let error = write_rows(&path, &rows).expect_err("duplicate inode");
        assert!(error.to_string().contains("row 2"), "{error}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    #[test]
    fn read_masks_like_the_c_loader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(C_SCHEMA_SQL).expect("schema");
        conn.execute(
            "INSERT INTO tree VALUES (2, 0, 2, ?1, ?2, ?3, 'f', 'text data')",
            rusqlite::params![(7i64 << 32) | 5, -1i64, 0x108i64],
        )
        .expect("insert");
        drop(conn);
        let rows = read_rows(&path).expect("read");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].writer, 5);
        assert_eq!(rows[0].mtime, u32::MAX);
        assert_eq!(rows[0].kind, 8);
        assert_eq!(rows[0].data.as_deref(), Some(&b"text data"[..]));
    }

    fn refusal(setup: &str, expected: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("odd?name#%.db");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(setup).expect("setup");
        drop(conn);
        let error = read_rows(&path).expect_err(expected).to_string();
        assert!(
            error.contains(expected),
            "{error} should mention {expected}"
        );
    }

    #[test]
    fn read_refuses_what_is_not_a_tree() {
        refusal("CREATE TABLE other (a);", "has no table `tree`");
        refusal(
            "CREATE TABLE tree (inode INTEGER PRIMARY KEY, parent, version, name, data);",
            r#"lacks the columns ["writer", "mtime", "type"]"#,
        );
        let loose = "CREATE TABLE tree (inode INTEGER PRIMARY KEY, parent, version, writer, \
                     mtime, type, name, data);";
        refusal(
            &format!("{loose} INSERT INTO tree VALUES (2, 0, 2, 0, '12', 8, 'f', NULL);"),
            "column `mtime` of row 2 holds text, not an integer",
        );
        refusal(
            &format!("{loose} INSERT INTO tree VALUES (2, 0, 2, 0, 1, 8, NULL, NULL);"),
            "row 2: the name is NULL",
        );
        refusal(
            &format!(
                "{loose} INSERT INTO tree VALUES (2, 0, 2, 0, 1, 8, CAST(x'610062' AS TEXT), NULL);"
            ),
            "holds a NUL byte",
        );
        refusal(
            &format!("{loose} INSERT INTO tree VALUES (2, 0, 2, 0, 1, 8, 'f', 1.5);"),
            "the data holds a real",
        );
    }

    /// A database built by `setup` in a fresh directory; what reading it
    /// logs at warning level.
    fn warnings_reading(setup: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(setup).expect("setup");
        drop(conn);
        let (warnings, rows) =
            pmxcfs_testkit::logged_at(tracing::Level::WARN, || read_rows(&path).expect("read"));
        assert!(!rows.is_empty());
        warnings
    }

    /// What an admin is warned of on import: a writer, mtime or type that
    /// the C loader cuts to its low bits (each on its own), and a table not
    /// declared as the C daemon declares it; nothing for the largest values
    /// that fit or for the C daemon's own schema.
    #[test]
    fn read_warns_of_values_cut_to_their_low_bits_and_of_a_foreign_schema() {
        let c_schema = |values: &str| {
            format!(
                "{C_SCHEMA_SQL}; INSERT INTO tree VALUES (2, 0, 2, 0, 1, 8, 'a', NULL); INSERT INTO tree VALUES {values};"
            )
        };
        let max = u32::MAX;
        assert_eq!(
            warnings_reading(&c_schema(&format!(
                "(3, 0, 3, {max}, {max}, 255, 'b', NULL)"
            ))),
            "",
            "the largest values that fit"
        );
        let out_of_range = "keeping the low bits";
        let over = u64::from(max) + 1;
        for values in [
            format!("(3, 0, 3, {over}, 1, 8, 'b', NULL)"),
            format!("(3, 0, 3, 0, {over}, 8, 'b', NULL)"),
            "(3, 0, 3, 0, 1, 256, 'b', NULL)".to_string(),
        ] {
            let warnings = warnings_reading(&c_schema(&values));
            assert!(warnings.contains(out_of_range), "{values}: {warnings}");
            assert!(!warnings.contains("not declared"), "{values}: {warnings}");
        }
        let loose = warnings_reading(
            "CREATE TABLE tree (inode INTEGER PRIMARY KEY, parent, version, writer, \
             mtime, type, name, data); INSERT INTO tree VALUES (2, 0, 2, 0, 1, 8, 'a', NULL);",
        );
        assert!(
            loose.contains("not declared as the C daemon declares it"),
            "{loose}"
        );
        assert!(!loose.contains(out_of_range), "{loose}");
    }

    #[test]
    fn the_global_version_is_the_version_row_s() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        let mut rows = sample();
        rows[0].version = 4711;
        write_rows(&path, &rows).expect("write");
        assert_eq!(read_global_version(&path).expect("version"), 4711);
        let without = dir.path().join("without.db");
        write_rows(&without, &rows[1..]).expect("write");
        let error = read_global_version(&without).expect_err("no version row");
        assert!(error.to_string().contains("no version row"), "{error}");
    }

    /// The last step of an export: a file that appeared at the target in
    /// the meantime is never replaced.
    #[test]
    fn the_final_rename_never_replaces_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (from, to) = (dir.path().join("new"), dir.path().join("config.db"));
        std::fs::write(&from, b"export").expect("write");
        std::fs::write(&to, b"appeared").expect("write");
        let error = rename_no_replace(&from, &to).expect_err("target exists");
        assert!(
            error.to_string().contains("appeared while the export ran"),
            "{error}"
        );
        assert_eq!(std::fs::read(&to).expect("read"), b"appeared");
        std::fs::remove_file(&to).expect("remove");
        rename_no_replace(&from, &to).expect("rename");
        assert_eq!(std::fs::read(&to).expect("read"), b"export");
        assert!(!from.exists());
    }

    #[test]
    fn read_refuses_a_database_with_a_pending_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        write_rows(&path, &sample()).expect("write");
        std::fs::write(with_suffix(&path, "-wal"), b"pending").expect("wal");
        let error = read_rows(&path).expect_err("pending wal").to_string();
        assert!(error.contains("not checkpointed"), "{error}");
        std::fs::write(with_suffix(&path, "-wal"), b"").expect("empty wal");
        assert_eq!(
            read_rows(&path).expect("empty wal is fine").len(),
            sample().len()
        );
    }

    #[test]
    fn read_does_not_touch_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.db");
        write_rows(&path, &sample()).expect("write");
        let before = std::fs::read(&path).expect("read");
        read_rows(&path).expect("read");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 1);
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }
}
