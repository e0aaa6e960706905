//! The database tools: `import-db` (C `config.db` -> store), `export-db`
//! (store -> new `config.db`) and `dump` (the tree as JSON lines).

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use pmxcfs_store::{
    Durability, ImportSummary, Reader, Row, Store, StoreError, read_rows, write_rows,
};
use sha2::{Digest, Sha256};

use crate::cli::DbArgs;
use crate::lock::{DataDirLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{sqlite}: the C daemon would refuse to load this database: {reason}")]
    Refused { sqlite: PathBuf, reason: String },
    #[error(
        "{dir} already holds a tree ({entries} entries, global version {version}); \
         import-db only fills an empty data directory"
    )]
    NotEmpty {
        dir: PathBuf,
        entries: u64,
        version: u64,
    },
    #[error(
        "{sqlite} (version {theirs}) is newer than this daemon's store (version {ours}): the C \
         daemon ran since this store was written; to continue from the C daemon's tree, move \
         {data_dir}/lmdb and {data_dir}/journal aside and start again (config.db is imported)"
    )]
    CNewer {
        sqlite: PathBuf,
        theirs: u64,
        ours: u64,
        data_dir: PathBuf,
    },
    #[error("{0} holds no store (import a database with import-db first)")]
    NoStore(PathBuf),
    #[error("{0} already exists; export-db writes a new file only")]
    TargetExists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Creates the data directory (mode 0700) if it is missing.
fn ensure_data_dir(dir: &Path) -> Result<(), ToolError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ToolError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn require_store(dir: &Path) -> Result<(), ToolError> {
    // The store keeps its LMDB environment in `<dir>/lmdb` (store.rs).
    if !dir.join("lmdb").join("data.mdb").is_file() {
        return Err(ToolError::NoStore(dir.to_path_buf()));
    }
    Ok(())
}

fn all_rows(reader: &Reader<'_>) -> Result<Vec<Row>, StoreError> {
    let mut rows = Vec::new();
    reader.for_each_entry(|entry| {
        rows.push(Reader::row_of(&entry));
        Ok(())
    })?;
    Ok(rows)
}

pub fn import_db(args: &DbArgs) -> Result<(), ToolError> {
    ensure_data_dir(&args.data_dir)?;
    let _lock = DataDirLock::acquire(&args.data_dir)?;
    import_locked(args).map(|_| ())
}

/// The C daemon's database in a data directory.
pub const C_DATABASE: &str = "config.db";

/// The daemon's first start on a C node: `data_dir` holds the C daemon's
/// `config.db` and no store of ours, so the database is imported with
/// import-db's checks (`config.db` itself is only read). `None` when there
/// is nothing to migrate. The caller holds the data directory's lock.
///
/// With a store of ours and a `config.db` beside it, the database must not
/// be newer than the store (a C daemon that ran since, on a copy written by
/// `export-db`, say): that start is refused, with what to do, instead of
/// serving a tree that lacks the C daemon's changes.
pub fn migrate_c_database(data_dir: &Path) -> Result<Option<ImportSummary>, ToolError> {
    let sqlite = data_dir.join(C_DATABASE);
    if !sqlite.exists() {
        return Ok(None);
    }
    if data_dir.join("lmdb").join("data.mdb").exists() {
        let theirs = pmxcfs_store::read_global_version(&sqlite)?;
        let ours = {
            let store = Store::open(data_dir)?;
            let (session, _permit) = store.session(Durability::Relaxed)?;
            let version = session.reader().root()?.meta.version;
            drop(session);
            version
        };
        if theirs > ours {
            return Err(ToolError::CNewer {
                sqlite,
                theirs,
                ours,
                data_dir: data_dir.to_path_buf(),
            });
        }
        return Ok(None);
    }
    import_locked(&DbArgs {
        sqlite,
        data_dir: data_dir.to_path_buf(),
    })
    .map(Some)
}

fn import_locked(args: &DbArgs) -> Result<ImportSummary, ToolError> {
    // Read (and check) the database before a store is created.
    let rows = read_rows(&args.sqlite)?;
    let fresh = !args.data_dir.join("lmdb").exists();
    let result = import_into(args, &rows);
    if result.is_err() && fresh {
        // Leave the data directory as it was: no half-made store.
        let _ = std::fs::remove_dir_all(args.data_dir.join("lmdb"));
        let _ = std::fs::remove_file(args.data_dir.join("journal"));
    }
    result
}

fn import_into(args: &DbArgs, rows: &[Row]) -> Result<ImportSummary, ToolError> {
    let store = Store::open(&args.data_dir)?;
    {
        let snapshot = store.snapshot()?;
        let reader = snapshot.reader();
        let (entries, _) = reader.usage()?;
        let version = reader.root()?.meta.version;
        if entries > 1 || version != 1 {
            return Err(ToolError::NotEmpty {
                dir: args.data_dir.clone(),
                entries,
                version,
            });
        }
    }
    let summary = store.import_rows(rows).map_err(|error| match error {
        StoreError::Corrupt(reason) => ToolError::Refused {
            sqlite: args.sqlite.clone(),
            reason,
        },
        other => other.into(),
    })?;
    tracing::info!(
        sqlite = %args.sqlite.display(),
        data_dir = %args.data_dir.display(),
        entries = summary.entries,
        bytes = summary.bytes,
        version = summary.version,
        "imported"
    );
    Ok(summary)
}

pub fn export_db(args: &DbArgs) -> Result<(), ToolError> {
    if args.sqlite.symlink_metadata().is_ok() {
        return Err(ToolError::TargetExists(args.sqlite.clone()));
    }
    require_store(&args.data_dir)?;
    let _lock = DataDirLock::acquire(&args.data_dir)?;
    let store = Store::open(&args.data_dir)?;
    // The session replays changes still in the journal; it is dropped
    // without a checkpoint, so the store stays as it was.
    let (session, _permit) = store.session(Durability::Relaxed)?;
    if session.recovery().replayed_records > 0 {
        tracing::info!(
            records = session.recovery().replayed_records,
            "included changes from the journal"
        );
    }
    let rows = all_rows(&session.reader())?;
    drop(session);
    write_rows(&args.sqlite, &rows)?;
    tracing::info!(
        sqlite = %args.sqlite.display(),
        data_dir = %args.data_dir.display(),
        rows = rows.len(),
        "exported"
    );
    Ok(())
}

/// One JSON line for a row (keys in a fixed order; `name` converted lossily
/// when it is not UTF-8).
fn json_line(out: &mut Vec<u8>, row: &Row) {
    let data = row.data.as_deref().unwrap_or_default();
    let name = serde_json::Value::String(String::from_utf8_lossy(&row.name).into_owned());
    let sha256: String = Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        out,
        "{{\"inode\":{},\"parent\":{},\"version\":{},\"writer\":{},\"mtime\":{},\"type\":{},\
         \"name\":{},\"size\":{},\"sha256\":\"{}\"}}",
        row.inode,
        row.parent,
        row.version,
        row.writer,
        row.mtime,
        row.kind,
        name,
        data.len(),
        sha256
    );
}

/// The current tree of a data directory, also while a daemon runs: the
/// journal is copied first, then LMDB's last checkpoint (a consistent copy);
/// a session on the copy replays the journal records newer than the copied
/// checkpoint. A checkpoint between the two copies only makes more records
/// redundant, so the view is always some state the daemon acknowledged.
fn current_rows(data_dir: &Path) -> Result<Vec<Row>, ToolError> {
    require_store(data_dir)?;
    let view = tempfile::Builder::new()
        .prefix("pmxcfs-dump-")
        .tempdir()
        .map_err(|source| ToolError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let journal = data_dir.join("journal");
    if journal.is_file() {
        std::fs::copy(&journal, view.path().join("journal")).map_err(|source| ToolError::Io {
            path: journal.clone(),
            source,
        })?;
    }
    Store::open_existing(data_dir)?.copy_checkpoint_to(&view.path().join("lmdb"))?;
    let store = Store::open(view.path())?;
    let (session, _permit) = store.session(Durability::Relaxed)?;
    Ok(all_rows(&session.reader())?)
}

pub fn dump(data_dir: &Path) -> Result<(), ToolError> {
    let mut out = Vec::new();
    for row in current_rows(data_dir)? {
        json_line(&mut out, &row);
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        // A reader that stopped early (`| head`) is not an error.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(ToolError::Io {
            path: PathBuf::from("<stdout>"),
            source: error,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_the_manifest_keys() {
        let mut out = Vec::new();
        json_line(
            &mut out,
            &Row {
                inode: 5,
                parent: 2,
                version: 7,
                writer: 1,
                mtime: 1_700_000_000,
                kind: 8,
                name: b"a\"b\xff".to_vec(),
                data: Some(b"abc".to_vec()),
            },
        );
        let line = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            line,
            "{\"inode\":5,\"parent\":2,\"version\":7,\"writer\":1,\"mtime\":1700000000,\
             \"type\":8,\"name\":\"a\\\"b\u{fffd}\",\"size\":3,\"sha256\":\
             \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"}\n"
        );
    }
}
