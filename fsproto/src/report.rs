//! What `pmxcfs status` shows of the file system side: members, the two
//! DFSM groups, parked and outgoing requests, the store's journal and lock
//! table. Plain data (`PmxFs::report` fills it in); the daemon adds IPC and
//! RRD and writes it out.

use pmxcfs_store::SessionStats;

#[derive(Clone, Debug)]
pub struct MemberReport {
    pub name: String,
    pub node_id: u32,
    pub online: bool,
    pub ip: Option<String>,
}

/// One DFSM group (`pve_dcdb_v1`, `pve_kvstore_v1`).
#[derive(Clone, Debug)]
pub struct GroupReport {
    pub name: &'static str,
    pub mode: String,
    /// The sync epoch: counter and the node that started it.
    pub epoch: u32,
    pub epoch_node_id: u32,
    pub members: usize,
    pub synced_members: usize,
    /// The lowest node id, the group's leader for syncs.
    pub leader_node_id: u32,
    pub queued: usize,
    pub sync_queued: usize,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub nodename: String,
    pub cluster: bool,
    pub quorate: bool,
    pub members: Vec<MemberReport>,
    pub groups: Vec<GroupReport>,
    /// Mutating requests waiting for their DFSM result.
    pub parked: usize,
    /// Mutating requests waiting for the write gate (group synchronising or
    /// without a majority of the votes), not sent yet.
    pub waiting: usize,
    /// Messages waiting to be multicast.
    pub outgoing: usize,
    pub global_version: u64,
    pub store: SessionStats,
}
