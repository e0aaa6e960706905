//! What `pmxcfs status` shows of the file system side: members, the two
//! DFSM groups, parked and outgoing requests, the store's journal and lock
//! table. Plain data; the daemon adds IPC and RRD and writes it out.

use pmxcfs_store::SessionStats;

use crate::fs::{Backend, PmxFs};

#[derive(Clone, Debug)]
pub struct MemberReport {
    pub name: String,
    pub nodeid: u32,
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
    pub epoch_nodeid: u32,
    pub members: usize,
    pub synced_members: usize,
    /// The lowest node id, the group's leader for syncs.
    pub leader_nodeid: u32,
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

impl PmxFs {
    pub fn report(&self) -> Report {
        let core = self.core();
        let session = core.session();
        let global_version = session.reader().root().map_or(0, |root| root.meta.version);
        let store = session.stats();
        let (members, groups, parked, waiting, outgoing) = match &core.backend {
            Backend::Local { .. } => (
                vec![MemberReport {
                    name: core.status.nodename.clone(),
                    nodeid: 0,
                    online: true,
                    ip: core.status.node_ip.clone(),
                }],
                Vec::new(),
                0,
                0,
                0,
            ),
            Backend::Cluster(cluster) => (
                core.status.member_reports(),
                cluster.group_reports(),
                cluster.parked_count(),
                cluster.waiting_count(),
                cluster.outgoing_count(),
            ),
        };
        Report {
            nodename: core.status.nodename.clone(),
            cluster: matches!(core.backend, Backend::Cluster(_)),
            quorate: core.quorum.is_quorate(),
            members,
            groups,
            parked,
            waiting,
            outgoing,
            global_version,
            store,
        }
    }
}
