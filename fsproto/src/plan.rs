//! A mutating request decoded: the DCDB ops it asks for and what its reply
//! needs (built by `mutation.rs`, carried out by a replicator).

use std::borrow::Cow;

use pmxcfs_store::Op;

use crate::wire::read_at;

/// What a parked request answers with once all its messages are applied.
#[derive(Debug)]
pub(crate) enum ReplyKind {
    Write {
        node_id: u64,
    },
    Entry {
        parent: u64,
        name: Vec<u8>,
    },
    Create {
        parent: u64,
        name: Vec<u8>,
    },
    Empty,
    /// A rename: the kernel moves its dentry to (`newdir`, `newname`).
    Renamed {
        newdir: u64,
        newname: Vec<u8>,
        to: Vec<u8>,
    },
    Attr {
        node_id: u64,
    },
}

/// What the changes of one request came to.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// First failure (positive errno), 0 if none.
    pub(crate) error: i32,
    /// Result of the last change (a WRITE's byte count).
    pub(crate) value: i32,
}

impl Outcome {
    /// One change's result (negative: an errno).
    pub(crate) fn record(&mut self, result: i32) {
        if result < 0 && self.error == 0 {
            self.error = -result;
        }
        self.value = result;
    }
}

/// The changes one request asks for, before the quorum gate.
pub(crate) struct Plan<'r> {
    pub(crate) ops: Vec<PlanOp<'r>>,
    /// A utime of a lock directory that names its checksum (spec
    /// filesystem.md §8): an unlock request for the MTIME op of the plan.
    pub(crate) unlock: Option<[u8; 32]>,
    pub(crate) reply: ReplyKind,
}

#[derive(Debug)]
pub(crate) enum PlanOp<'r> {
    Create(Vec<u8>),
    Mkdir(Vec<u8>),
    Delete(Vec<u8>),
    Rename(Vec<u8>, Vec<u8>),
    /// Path, offset, data (borrowed from the request until the op must
    /// outlive it), truncate.
    Write(Vec<u8>, u64, Cow<'r, [u8]>, bool),
    Mtime(Vec<u8>, u32),
}

impl PlanOp<'_> {
    /// The op, holding its data itself (to be sent later).
    pub(crate) fn into_owned(self) -> PlanOp<'static> {
        match self {
            PlanOp::Create(path) => PlanOp::Create(path),
            PlanOp::Mkdir(path) => PlanOp::Mkdir(path),
            PlanOp::Delete(path) => PlanOp::Delete(path),
            PlanOp::Rename(from, to) => PlanOp::Rename(from, to),
            PlanOp::Write(path, offset, data, truncate) => {
                PlanOp::Write(path, offset, Cow::Owned(data.into_owned()), truncate)
            }
            PlanOp::Mtime(path, mtime) => PlanOp::Mtime(path, mtime),
        }
    }

    pub(crate) fn as_op(&self) -> Op<'_> {
        match self {
            PlanOp::Create(path) => Op::Create { path },
            PlanOp::Mkdir(path) => Op::Mkdir { path },
            PlanOp::Delete(path) => Op::Delete { path },
            PlanOp::Rename(from, to) => Op::Rename { from, to },
            PlanOp::Write(path, offset, data, truncate) => Op::Write {
                path,
                offset: *offset,
                data,
                truncate: *truncate,
            },
            PlanOp::Mtime(path, mtime) => Op::Mtime {
                path,
                mtime: *mtime,
            },
        }
    }
}

/// The `unique` of an encoded reply (bytes 8..16 of its header).
pub(crate) fn reply_unique(reply: &[u8]) -> u64 {
    read_at::<u64>(reply, 8).unwrap_or(0)
}
