//! Process-local status behind the virtual files: change counters of the
//! tracked config paths (`.version`), the cluster log (`.clusterlog`), the
//! debug switch (`.debug`), and the exact JSON texts of spec/status.md §6.
//!
//! In local mode there is no cluster information and no kvstore traffic, so
//! `.members` has no cluster part and `.rrd` is empty.

use std::fmt::Write as _;

use pmxcfs_cpg::kvstore::{ClusterLog, KvTable, LogRecord};
use pmxcfs_cpg::status::StatusTables;
use pmxcfs_store::VmList;

/// The config paths whose changes `.version` counts, in the C daemon's order.
pub const TRACKED_PATHS: [&str; 43] = [
    "corosync.conf",
    "corosync.conf.new",
    "storage.cfg",
    "user.cfg",
    "domains.cfg",
    "notifications.cfg",
    "priv/notifications.cfg",
    "priv/shadow.cfg",
    "priv/acme/plugins.cfg",
    "priv/tfa.cfg",
    "priv/token.cfg",
    "priv/wg-keys.cfg",
    "datacenter.cfg",
    "vzdump.cron",
    "vzdump.conf",
    "jobs.cfg",
    "ha/crm_commands",
    "ha/manager_status",
    "ha/resources.cfg",
    "ha/rules.cfg",
    "ha/groups.cfg",
    "ha/fence.cfg",
    "status.cfg",
    "replication.cfg",
    "ceph.conf",
    "sdn/vnets.cfg",
    "sdn/zones.cfg",
    "sdn/controllers.cfg",
    "sdn/subnets.cfg",
    "sdn/ipams.cfg",
    "sdn/mac-cache.json",
    "sdn/pve-ipam-state.json",
    "sdn/dns.cfg",
    "sdn/fabrics.cfg",
    "sdn/route-maps.cfg",
    "sdn/prefix-lists.cfg",
    "sdn/.running-config",
    "virtual-guest/cpu-models.conf",
    "virtual-guest/profiles.cfg",
    "firewall/cluster.fw",
    "mapping/directory.cfg",
    "mapping/pci.cfg",
    "mapping/usb.cfg",
];

/// Entries `.clusterlog` prints.
const CLUSTER_LOG_DUMP_MAX: usize = 50;

/// One configured cluster node (cmap `nodelist.node.N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub node_id: u32,
    pub votes: u32,
}

/// The cluster configuration corosync runs with (cmap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    pub config_version: u64,
    pub nodes: Vec<ClusterNode>,
}

#[derive(Debug)]
pub struct Status {
    pub nodename: String,
    /// This node's address (`.members` "ip" of the local node).
    pub node_ip: Option<String>,
    cluster: Option<ClusterInfo>,
    online: std::collections::BTreeSet<u32>,
    pub start_time: u32,
    pub clinfo_version: u32,
    pub debug: bool,
    counters: [u32; 43],
    /// The cluster log; in cluster mode it moves to the kvstore
    /// application (see `take_log`).
    log: ClusterLog,
    /// Other nodes' IPs (kvstore `nodeip`), by node id.
    ips: std::collections::BTreeMap<u32, String>,
    /// Local mode's status tables (cluster mode: the kvstore's).
    pub(crate) tables: StatusTables,
}

impl Status {
    /// The configured nodes with their online state and IPs (`.members`'s
    /// data), in node id order.
    pub fn member_reports(&self) -> Vec<crate::report::MemberReport> {
        let mut nodes: Vec<&ClusterNode> = self
            .cluster
            .as_ref()
            .map(|cluster| cluster.nodes.iter().collect())
            .unwrap_or_default();
        nodes.sort_by_key(|node| node.node_id);
        nodes
            .into_iter()
            .map(|node| crate::report::MemberReport {
                name: node.name.clone(),
                node_id: node.node_id,
                online: self.online.contains(&node.node_id),
                ip: if node.name == self.nodename {
                    self.node_ip.clone()
                } else {
                    self.ips.get(&node.node_id).cloned()
                },
            })
            .collect()
    }

    /// `name (id N)` of a node id, from corosync's node list.
    pub fn node_name(&self, node_id: u32) -> String {
        let name = self
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.nodes.iter().find(|node| node.node_id == node_id));
        match name {
            Some(node) => format!("{} (id {node_id})", node.name),
            None => format!("node id {node_id}"),
        }
    }

    /// Nodes in the `pve_kvstore_v1` group, and nodes configured.
    pub fn node_counts(&self) -> (usize, usize) {
        let configured = self
            .cluster
            .as_ref()
            .map_or(0, |cluster| cluster.nodes.len());
        (self.online.len(), configured)
    }

    pub fn new(nodename: &str, now: u32) -> Status {
        let mut status = Status {
            nodename: nodename.to_string(),
            node_ip: None,
            cluster: None,
            online: std::collections::BTreeSet::new(),
            start_time: now,
            clinfo_version: 0,
            debug: false,
            counters: [0; 43],
            log: ClusterLog::new(),
            ips: std::collections::BTreeMap::new(),
            tables: StatusTables::default(),
        };
        status.log_local(
            6,
            "root",
            "cluster",
            std::process::id(),
            "starting cluster log",
            now,
        );
        status
    }

    /// `record_memdb_change`: a write/create/truncate/mtime/delete or either
    /// side of a rename of exactly this path (mkdir does not count).
    pub fn record_change(&mut self, path: &[u8]) {
        if let Some(index) = TRACKED_PATHS
            .iter()
            .position(|tracked| tracked.as_bytes() == path)
        {
            self.counters[index] = self.counters[index].wrapping_add(1);
        }
    }

    /// The `.version` change counters, in [`TRACKED_PATHS`] order.
    pub fn counters(&self) -> &[u32; 43] {
        &self.counters
    }

    /// `record_memdb_reload`: every counter +1 (load at start, resync).
    pub fn record_reload(&mut self) {
        for counter in &mut self.counters {
            *counter = counter.wrapping_add(1);
        }
    }

    pub fn log_local(
        &mut self,
        priority: u8,
        user: &str,
        tag: &str,
        pid: u32,
        message: &str,
        now: u32,
    ) {
        let record = LogRecord {
            node: &self.nodename,
            ident: user,
            tag,
            pid,
            priority,
            time: now,
            message,
        };
        if let Some(entry) = self.log.pack(&record) {
            self.log.insert(entry);
        }
    }

    /// `.version` (spec/status.md §6.1), local mode: no remote kv tables.
    pub fn version_text(&self, vmlist: &VmList) -> String {
        self.version_text_with(
            vmlist,
            self.tables.local(),
            &std::collections::BTreeMap::new(),
        )
    }

    /// `.version` with the other nodes' kvstore tables (node id → key →
    /// (value, version)); nodes without a name in the cluster
    /// configuration are left out, as C only knows configured nodes.
    pub fn version_text_with(
        &self,
        vmlist: &VmList,
        local: &KvTable,
        remote: &std::collections::BTreeMap<u32, KvTable>,
    ) -> String {
        let mut out = String::with_capacity(2048);
        let _ = write!(
            out,
            "{{\n\"starttime\": {},\n\"clinfo\": {},\n\"vmlist\": {},\n",
            self.start_time,
            self.clinfo_version,
            vmlist.version()
        );
        for (path, counter) in TRACKED_PATHS.iter().zip(self.counters) {
            let _ = writeln!(out, "\"{path}\": {counter},");
        }
        let _ = write!(out, "\"kvstore\": {{\n\"{}\": {{\n", self.nodename);
        Self::versions(&mut out, local);
        for (node_id, table) in remote {
            let Some(name) = self.cluster.as_ref().and_then(|info| {
                info.nodes
                    .iter()
                    .find(|node| node.node_id == *node_id)
                    .map(|node| node.name.as_str())
            }) else {
                continue;
            };
            let _ = write!(out, ",\n\"{name}\": {{\n");
            Self::versions(&mut out, table);
        }
        out.push_str("}\n}\n");
        out
    }

    /// A node block's entries: `"<key>": <version>` joined by `,\n`, then
    /// `}\n`.
    fn versions(out: &mut String, table: &KvTable) {
        for (index, (key, (_, version))) in table.iter().enumerate() {
            if index > 0 {
                out.push_str(",\n");
            }
            let _ = write!(out, "\"{}\": {version}", String::from_utf8_lossy(key));
        }
        out.push_str("}\n");
    }

    /// The node id of a configured node name.
    pub fn node_id_of(&self, name: &[u8]) -> Option<u32> {
        self.cluster
            .as_ref()?
            .nodes
            .iter()
            .find(|node| node.name.as_bytes() == name)
            .map(|node| node.node_id)
    }

    /// New cluster configuration from cmap (`None`: none readable).
    pub fn set_cluster_info(&mut self, info: Option<ClusterInfo>) {
        if self.cluster != info {
            self.cluster = info;
            self.clinfo_version = self.clinfo_version.wrapping_add(1);
        }
    }

    /// The node ids whose pmxcfs is in the group.
    pub fn set_online(&mut self, node_ids: &[u32]) {
        let online: std::collections::BTreeSet<u32> = node_ids.iter().copied().collect();
        if self.online != online {
            self.online = online;
            self.clinfo_version = self.clinfo_version.wrapping_add(1);
        }
    }

    /// `.members` (spec/status.md §6.2); without cluster configuration
    /// only the node name and the version. Nodes in node id order (C: hash
    /// order).
    pub fn members_text(&self, quorate: bool) -> String {
        let Some(cluster) = self.cluster.as_ref().filter(|info| !info.nodes.is_empty()) else {
            return format!(
                "{{\n\"nodename\": \"{}\",\n\"version\": {}\n}}\n",
                self.nodename, self.clinfo_version
            );
        };
        let mut out = format!(
            "{{\n\"nodename\": \"{}\",\n\"version\": {},\n",
            self.nodename, self.clinfo_version
        );
        let _ = writeln!(
            out,
            "\"cluster\": {{ \"name\": \"{}\", \"version\": {}, \"nodes\": {}, \"quorate\": {} }},",
            cluster.name,
            cluster.config_version,
            cluster.nodes.len(),
            u8::from(quorate)
        );
        out.push_str("\"nodelist\": {\n");
        let mut nodes: Vec<&ClusterNode> = cluster.nodes.iter().collect();
        nodes.sort_by_key(|node| node.node_id);
        for (index, node) in nodes.iter().enumerate() {
            if index > 0 {
                out.push_str(",\n");
            }
            let _ = write!(
                out,
                "  \"{}\": {{ \"id\": {}, \"online\": {}",
                node.name,
                node.node_id,
                u8::from(self.online.contains(&node.node_id))
            );
            let ip = if node.name == self.nodename {
                self.node_ip.as_ref()
            } else {
                self.ips.get(&node.node_id)
            };
            if let Some(ip) = ip {
                let _ = write!(out, ", \"ip\": \"{ip}\"");
            }
            out.push('}');
        }
        out.push_str("\n  }\n}\n");
        out
    }

    /// `.clusterlog`: newest first, at most 50 entries (spec/status.md §5.4).
    pub fn clusterlog_text(&self) -> String {
        self.log.dump_json(CLUSTER_LOG_DUMP_MAX)
    }

    /// `.clusterlog` of a log kept elsewhere (cluster mode).
    pub fn clusterlog_text_of(log: &ClusterLog) -> String {
        log.dump_json(CLUSTER_LOG_DUMP_MAX)
    }

    pub(crate) fn log(&self) -> &ClusterLog {
        &self.log
    }

    pub(crate) fn log_mut(&mut self) -> &mut ClusterLog {
        &mut self.log
    }

    /// Hands the cluster log over (to the kvstore application).
    pub fn take_log(&mut self) -> ClusterLog {
        std::mem::take(&mut self.log)
    }

    /// Other nodes' IPs for `.members`.
    pub fn set_ips(&mut self, ips: &std::collections::BTreeMap<u32, String>) {
        if &self.ips != ips {
            self.ips = ips.clone();
            self.clinfo_version = self.clinfo_version.wrapping_add(1);
        }
    }

    pub fn debug_text(&self) -> &'static str {
        if self.debug { "1\n" } else { "0\n" }
    }
}

/// `.vmlist` (spec/status.md §6.3).
pub fn vmlist_text(vmlist: &VmList) -> String {
    let guests = vmlist.guests();
    if guests.is_empty() {
        return format!("{{\n\"version\": {}\n\n}}\n", vmlist.version());
    }
    let mut out = format!("{{\n\"version\": {},\n\"ids\": {{\n", vmlist.version());
    let mut first = true;
    for (vmid, guest) in guests {
        if !first {
            out.push_str(",\n");
        }
        first = false;
        let _ = write!(
            out,
            "\"{vmid}\": {{ \"node\": \"{}\", \"type\": \"{}\", \"version\": {} }}",
            String::from_utf8_lossy(&guest.node),
            guest.guest_type.label(),
            guest.version
        );
    }
    out.push_str("}\n\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_have_the_c_byte_format() {
        let status = Status::new("pve1", 1_795_319_668);
        assert_eq!(
            status.members_text(false),
            "{\n\"nodename\": \"pve1\",\n\"version\": 0\n}\n"
        );
        let log = status.clusterlog_text();
        assert!(log.starts_with("{\n\"data\": [\n{\"uid\": 1, \"time\": 1795319668, \"pri\": 6, \"tag\": \"cluster\", \"pid\": "));
        assert!(log.ends_with(
            ", \"node\": \"pve1\", \"user\": \"root\", \"msg\": \"starting cluster log\"}\n]\n}\n"
        ));
        let vmlist = VmList::default();
        assert_eq!(vmlist_text(&vmlist), "{\n\"version\": 0\n\n}\n");
        let version = status.version_text(&vmlist);
        assert!(version.starts_with(
            "{\n\"starttime\": 1795319668,\n\"clinfo\": 0,\n\"vmlist\": 0,\n\"corosync.conf\": 0,\n"
        ));
        assert!(
            version.ends_with("\"mapping/usb.cfg\": 0,\n\"kvstore\": {\n\"pve1\": {\n}\n}\n}\n")
        );
    }

    #[test]
    fn the_version_file_matches_the_captured_c_shape() {
        let captured = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/vectors/config-db/dot.version"
        ))
        .expect("the C vectors are in tests/vectors");
        let ours = Status::new("pve1", 0).version_text(&VmList::default());
        let keys = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|line| line.split('"').nth(1).map(str::to_string))
                .collect()
        };
        assert_eq!(keys(&ours), keys(&captured));
    }

    #[test]
    fn version_lists_other_nodes_kv_tables() {
        let mut status = Status::new("node1", 1_795_319_668);
        status.set_cluster_info(Some(ClusterInfo {
            name: "lab".into(),
            config_version: 1,
            nodes: vec![
                ClusterNode {
                    name: "node1".into(),
                    node_id: 1,
                    votes: 1,
                },
                ClusterNode {
                    name: "node2".into(),
                    node_id: 2,
                    votes: 1,
                },
            ],
        }));
        let mut remote = std::collections::BTreeMap::new();
        let mut table = pmxcfs_cpg::kvstore::KvTable::new();
        table.insert(b"kv/x".to_vec(), (b"1\0".to_vec(), 3));
        table.insert(b"tasklist".to_vec(), (b"[]\0".to_vec(), 0));
        remote.insert(2, table);
        // A node id not in the configuration is not printed.
        remote.insert(9, pmxcfs_cpg::kvstore::KvTable::new());
        let text = status.version_text_with(&VmList::default(), &KvTable::new(), &remote);
        assert!(
            text.ends_with(
                "\"kvstore\": {\n\"node1\": {\n}\n,\n\"node2\": {\n\"kv/x\": 3,\n\"tasklist\": 0}\n}\n}\n"
            ),
            "{text}"
        );
        // The local table is printed in the same form.
        let mut local = KvTable::new();
        local.insert(b"kv/a".to_vec(), (b"1\0".to_vec(), 0));
        local.insert(b"kv/b".to_vec(), (b"1\0".to_vec(), 2));
        let text = status.version_text_with(&VmList::default(), &local, &remote);
        assert!(
            text.contains("\"kvstore\": {\n\"node1\": {\n\"kv/a\": 0,\n\"kv/b\": 2}\n,\n\"node2\""),
            "{text}"
        );
    }
}
