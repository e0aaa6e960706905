//! The row view of the tree: one row per entry, as the C daemon's sqlite
//! `tree` table holds it (spec/memdb.md §4). Used by import, export and dump.

/// Name of the row that carries the global version (inode 0).
pub const VERSION_ROW_NAME: &[u8] = b"__version__";

/// One row of the C daemon's `tree` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub inode: u64,
    pub parent: u64,
    pub version: u64,
    pub writer: u32,
    pub mtime: u32,
    /// The raw `type` column: 4 directory, 8 file (the version row may be either).
    pub kind: u8,
    pub name: Vec<u8>,
    /// `None` is SQL NULL; `Some(empty)` is an empty blob.
    pub data: Option<Vec<u8>>,
}

impl Row {
    pub fn size(&self) -> usize {
        self.data.as_ref().map_or(0, Vec::len)
    }
}
