//! Replication over corosync: the DFSM protocol of the C daemon, its wire
//! formats (dcdb and kvstore payloads), and the corosync bindings.

pub mod corosync;
pub mod dcdb;
pub mod dfsm;
pub mod frame;
pub mod kept;
pub mod kvstore;
pub mod status;
pub mod wire;
