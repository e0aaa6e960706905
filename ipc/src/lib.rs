//! The local IPC service "pve2" (PVE::IPCC): libqb's server plugged into the
//! daemon's reactor, the request decoder and the pure parts of the answers.

pub mod client;
mod ffi;
pub mod guest;
pub mod proto;
pub mod server;
pub mod token;
