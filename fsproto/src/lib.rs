//! The FUSE side of pmxcfs: the `/etc/pve` view (path routing, modes and
//! ownership, special entries, virtual files), every FUSE operation with the
//! C daemon's errno, proposals gated by quorum, and the mount.
//!
//! It knows the store, fuse-backend-rs and the DFSM/DCDB of `pmxcfs-cpg`
//! (cluster mode); it knows nothing of the reactor (the daemon feeds it
//! buffers) or of corosync handles (the daemon feeds it CPG events).

mod channel;
mod clock;
mod cluster;
mod core;
mod error;
mod fs;
mod mutation;
mod notify_queue;
mod plan;
mod quorum;
mod replicator;
pub mod report;
mod rules;
mod service;
pub mod status;
mod uring;
mod wire;

pub use channel::{Channel, ChannelError, REQUEST_BUFFER_BYTES};
pub use cluster::Replication;
pub use core::Config;
pub use error::FsError;
pub use fs::{Health, PmxFs};
pub use pmxcfs_cpg::dfsm::{MemberId, Message as DfsmMessage};
pub use quorum::{Proposal, Quorate, QuorumGate};
pub use replicator::Group;
pub use service::IpcService;
pub use status::{ClusterInfo, ClusterNode};
pub use uring::enable as enable_uring;
pub use wire::Invalidation;
