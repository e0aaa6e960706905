//! The quorum gate and the proof value a proposal needs.
//!
//! A `Proposal` can only be built with a `Quorate`, and a `Quorate` only
//! comes from `QuorumGate::check` while the node is quorate: a write path
//! that skips the quorum check does not compile.
//!
//! ```compile_fail,E0451
//! let forged = pmxcfs_fsproto::Quorate { _private: () };
//! ```

use pmxcfs_store::Op;

use crate::error::FsError;

/// Proof that the quorum gate was passed for one proposal.
#[derive(Debug)]
pub struct Quorate {
    _private: (),
}

/// Tracks whether this node may change the tree. Local mode is always
/// quorate (the C daemon forces quorum to 1 without corosync).
#[derive(Debug)]
pub struct QuorumGate {
    quorate: bool,
}

impl QuorumGate {
    pub fn local() -> QuorumGate {
        QuorumGate { quorate: true }
    }

    pub fn is_quorate(&self) -> bool {
        self.quorate
    }

    pub fn set_quorate(&mut self, quorate: bool) {
        self.quorate = quorate;
    }

    /// EACCES when not quorate, as the C daemon answers every write then.
    pub fn check(&self) -> Result<Quorate, FsError> {
        if self.quorate {
            Ok(Quorate { _private: () })
        } else {
            Err(FsError::Denied)
        }
    }
}

/// A change that passed the quorum gate and waits to be applied (at once in
/// local mode; after CPG delivery in cluster mode).
#[derive(Debug)]
pub struct Proposal<'a> {
    op: Op<'a>,
    _proof: Quorate,
}

impl<'a> Proposal<'a> {
    pub fn new(op: Op<'a>, proof: Quorate) -> Proposal<'a> {
        Proposal { op, _proof: proof }
    }

    pub fn op(&self) -> &Op<'a> {
        &self.op
    }
}
