//! Building a store from rows of the C daemon's `tree` table, with the load
//! rules of the C daemon (spec/memdb.md §4.5): a database the C daemon would
//! refuse to load is refused here too, with the reason.

use std::collections::{HashMap, HashSet};

use crate::entry::{Kind, Meta, ROOT_INODE, encode_value, flags};
use crate::error::{Result, StoreError};
use crate::row::{Row, VERSION_ROW_NAME};
use crate::session::collect_guest_configs;
use crate::store::{Reader, Store, dirent_key, inode_key};

/// What an import wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    pub entries: u64,
    pub bytes: u64,
    pub version: u64,
}

fn refuse(reason: String) -> StoreError {
    StoreError::Corrupt(reason)
}

/// Checks the rows against the C load rules; returns the version row (or a
/// default one when the table has none: the C daemon then starts at 1).
fn validate(rows: &[Row]) -> Result<Row> {
    let mut version_row = None;
    let mut kinds: HashMap<u64, u8> = HashMap::new();
    for row in rows {
        if row.name.is_empty() {
            return Err(refuse(format!("row {} has an empty name", row.inode)));
        }
        if row.inode == ROOT_INODE {
            if row.name != VERSION_ROW_NAME {
                return Err(refuse(format!(
                    "inode 0 is named {:?}, not __version__",
                    String::from_utf8_lossy(&row.name)
                )));
            }
            if row.kind != Kind::Dir as u8 && row.kind != Kind::File as u8 {
                return Err(refuse(format!("the version row has type {}", row.kind)));
            }
            if version_row.replace(row.clone()).is_some() {
                return Err(refuse("two version rows".into()));
            }
            continue;
        }
        match Kind::from_u8(row.kind) {
            Some(Kind::Dir) if row.size() > 0 => {
                return Err(refuse(format!("directory {} has data", row.inode)));
            }
            Some(_) => {}
            None => return Err(refuse(format!("row {} has type {}", row.inode, row.kind))),
        }
        if row.size() > crate::entry::MAX_FILE_SIZE {
            return Err(refuse(format!("file {} is larger than 1 MiB", row.inode)));
        }
        if kinds.insert(row.inode, row.kind).is_some() {
            return Err(refuse(format!("inode {} occurs twice", row.inode)));
        }
    }
    let mut names: HashSet<(u64, &[u8])> = HashSet::new();
    for row in rows.iter().filter(|row| row.inode != ROOT_INODE) {
        if row.parent != ROOT_INODE {
            match kinds.get(&row.parent) {
                None => {
                    return Err(refuse(format!(
                        "row {} has a missing parent {}",
                        row.inode, row.parent
                    )));
                }
                Some(kind) if *kind != Kind::Dir as u8 => {
                    return Err(refuse(format!(
                        "row {} has a file as its parent ({})",
                        row.inode, row.parent
                    )));
                }
                Some(_) => {}
            }
        }
        if !names.insert((row.parent, &row.name)) {
            return Err(refuse(format!(
                "duplicate name {:?} in directory {}",
                String::from_utf8_lossy(&row.name),
                row.parent
            )));
        }
    }
    Ok(version_row.unwrap_or(Row {
        inode: ROOT_INODE,
        parent: 0,
        version: 1,
        writer: 0,
        mtime: 0,
        kind: Kind::File as u8,
        name: VERSION_ROW_NAME.to_vec(),
        data: None,
    }))
}

impl Store {
    /// Fills a new, empty store with the rows of a C database, in one LMDB
    /// transaction: either all of it is there afterwards or nothing.
    pub fn import_rows(&self, rows: &[Row]) -> Result<ImportSummary> {
        let version_row = validate(rows)?;
        let mut txn = self.env.write_txn()?;
        {
            let reader = Reader {
                txn: &txn,
                dbs: &self.dbs,
            };
            let (count, _) = reader.usage()?;
            if count != 1 || reader.root()?.meta.version != 1 {
                return Err(StoreError::Invalid("import needs an empty data directory"));
            }
        }
        if std::fs::metadata(self.journal_path()).is_ok_and(|meta| meta.len() > 0) {
            return Err(StoreError::Invalid("import needs an empty data directory"));
        }
        // The C daemon sets a loaded version of 0 to 1.
        let version = version_row.version.max(1);
        let root = Meta {
            inode: ROOT_INODE,
            parent: 0,
            version,
            writer: version_row.writer,
            mtime: version_row.mtime,
            kind: Kind::Dir,
        };
        let root_flags = if version_row.kind == Kind::Dir as u8 {
            flags::VERSION_ROW_DIR
        } else {
            0
        };
        self.dbs.entries.put(
            &mut txn,
            &inode_key(ROOT_INODE),
            &encode_value(&root, root_flags, b"", b""),
        )?;
        let mut bytes = 0u64;
        let mut value = Vec::new();
        for row in rows.iter().filter(|row| row.inode != ROOT_INODE) {
            let kind = Kind::from_u8(row.kind).ok_or_else(|| refuse("bad type".into()))?;
            let meta = Meta {
                inode: row.inode,
                parent: row.parent,
                version: row.version,
                writer: row.writer,
                mtime: row.mtime,
                kind,
            };
            let data = row.data.as_deref().unwrap_or_default();
            let entry_flags = if row.data.as_ref().is_some_and(Vec::is_empty) {
                flags::EMPTY_BLOB
            } else {
                0
            };
            value.clear();
            crate::entry::write_value(&mut value, &meta, entry_flags, &row.name, data);
            self.dbs
                .entries
                .put(&mut txn, &inode_key(row.inode), &value)?;
            self.dbs.children.put(
                &mut txn,
                &dirent_key(row.parent, &row.name),
                &row.inode.to_le_bytes(),
            )?;
            bytes += data.len() as u64;
        }
        {
            let reader = Reader {
                txn: &txn,
                dbs: &self.dbs,
            };
            let mut seen = HashSet::new();
            let mut duplicates = Vec::new();
            for config in collect_guest_configs(&reader)? {
                if !seen.insert(config.vmid) {
                    duplicates.push(config.vmid);
                }
            }
            if !duplicates.is_empty() {
                return Err(refuse(format!(
                    "the tree holds vmids more than once: {duplicates:?}"
                )));
            }
        }
        txn.commit()?;
        Ok(ImportSummary {
            entries: rows.iter().filter(|row| row.inode != ROOT_INODE).count() as u64 + 1,
            bytes,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(inode: u64, parent: u64, kind: Kind, name: &str) -> Row {
        Row {
            inode,
            parent,
            version: inode,
            writer: 0,
            mtime: 1,
            kind: kind as u8,
            name: name.as_bytes().to_vec(),
            data: None,
        }
    }

    #[test]
    fn the_c_load_rules_refuse_bad_tables() {
        let good = vec![row(2, 0, Kind::Dir, "d"), row(3, 2, Kind::File, "f")];
        assert!(validate(&good).is_ok());
        let cases: Vec<(Vec<Row>, &str)> = vec![
            (vec![row(2, 0, Kind::Dir, "")], "empty name"),
            (vec![row(2, 9, Kind::File, "f")], "missing parent"),
            (
                vec![row(2, 0, Kind::File, "f"), row(3, 2, Kind::File, "g")],
                "file as its parent",
            ),
            (
                vec![row(2, 0, Kind::File, "f"), row(3, 0, Kind::File, "f")],
                "duplicate name",
            ),
            (vec![row(0, 0, Kind::File, "root")], "not __version__"),
            (
                vec![Row {
                    data: Some(vec![1]),
                    ..row(2, 0, Kind::Dir, "d")
                }],
                "has data",
            ),
            (
                vec![Row {
                    kind: 10,
                    ..row(2, 0, Kind::Dir, "d")
                }],
                "has type 10",
            ),
        ];
        for (rows, reason) in cases {
            let error = validate(&rows).expect_err(reason).to_string();
            assert!(error.contains(reason), "{error} should mention {reason}");
        }
    }

    #[test]
    fn a_file_of_exactly_1_mib_is_loaded_and_one_byte_more_is_not() {
        let file = |size: usize| Row {
            data: Some(vec![b'x'; size]),
            ..row(2, 0, Kind::File, "f")
        };
        assert!(validate(&[file(crate::entry::MAX_FILE_SIZE)]).is_ok());
        let error = validate(&[file(crate::entry::MAX_FILE_SIZE + 1)]).expect_err("too large");
        assert!(error.to_string().contains("larger than 1 MiB"), "{error}");
    }

    const ORIGIN: crate::Origin = crate::Origin {
        writer: 0,
        mtime: 1,
    };

    /// A store in `dir` that ran `ops` (each committed), then closed
    /// (checkpointed, `checkpoint`) or dropped as in a crash.
    fn store_after(dir: &std::path::Path, ops: &[crate::Op<'_>], checkpoint: bool) {
        let store = Store::open(dir).expect("open");
        let (mut session, mut permit) = store.session(crate::Durability::Relaxed).expect("session");
        for op in ops {
            session.writer(&mut permit).apply(op, ORIGIN).expect("op");
            session.commit().expect("commit");
        }
        if checkpoint {
            session.close().expect("close");
        }
    }

    /// An import fills a new store only: not one whose tree was changed
    /// back to a lone root (its version moved), not one whose changes are
    /// still only in the journal; one that never changed is new, journal
    /// file or not. The summary counts the entries and the file bytes.
    #[test]
    fn an_import_needs_a_store_that_never_changed() {
        let rows = vec![
            row(2, 0, Kind::Dir, "d"),
            Row {
                data: Some(b"12345".to_vec()),
                ..row(3, 2, Kind::File, "f")
            },
            Row {
                data: Some(b"678".to_vec()),
                ..row(4, 0, Kind::File, "g")
            },
        ];
        let refused = |dir: &std::path::Path| {
            let store = Store::open(dir).expect("open");
            let error = store.import_rows(&rows).expect_err("not empty");
            assert!(
                error.to_string().contains("empty data directory"),
                "{error}"
            );
        };
        let changed_back = tempfile::tempdir().expect("tempdir");
        store_after(
            changed_back.path(),
            &[
                crate::Op::Mkdir { path: b"x" },
                crate::Op::Delete { path: b"x" },
            ],
            true,
        );
        refused(changed_back.path());
        let journal_only = tempfile::tempdir().expect("tempdir");
        store_after(
            journal_only.path(),
            &[crate::Op::Mkdir { path: b"x" }],
            false,
        );
        refused(journal_only.path());

        let untouched = tempfile::tempdir().expect("tempdir");
        store_after(untouched.path(), &[], false);
        let store = Store::open(untouched.path()).expect("open");
        assert!(store.journal_path().exists(), "the session made a journal");
        let summary = store.import_rows(&rows).expect("import");
        assert_eq!((summary.entries, summary.bytes), (4, 8));
    }
}
