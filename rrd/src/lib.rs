//! The RRD files behind the Proxmox VE graphs (spec/status.md §4): which
//! file and which columns a status key's value goes to ([`key`]), the C
//! daemon's file layout ([`schema`]), rrdcached's text protocol
//! ([`rrdcached`]) and the writer thread that keeps all of it off the
//! daemon's loop ([`writer`]).

pub mod key;
pub mod rrdcached;
pub mod schema;
pub mod writer;

pub use key::{Kind, Update};
pub use writer::{Stats, Writer, WriterConfig};
