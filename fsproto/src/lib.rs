//! The FUSE side of pmxcfs: the `/etc/pve` view (path routing, modes and
//! ownership, special entries, virtual files), every FUSE operation with the
//! C daemon's errno, proposals gated by quorum, and the mount.
//!
//! It knows the store and fuse-backend-rs; it knows nothing of the reactor
//! (the daemon feeds it buffers) or of corosync.

mod channel;
mod fs;
mod quorum;
pub mod status;

pub use channel::{Channel, ChannelError, REQUEST_BUFFER_BYTES};
pub use fs::{Config, Invalidation, PmxFs};
pub use quorum::{Proposal, Quorate, QuorumGate};
