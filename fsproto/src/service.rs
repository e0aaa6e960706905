//! The answers of the IPC service "pve2" (spec/ipc.md §4): the same status
//! the virtual files show, the node status tables, the cluster log and
//! reads of the tree, under the file system's one lock. Every operation
//! answers at once; status updates and log entries are multicast on the
//! kvstore group without waiting for their delivery, as in the C daemon.

use pmxcfs_cpg::kvstore::{Kvstore, LogRecord};
use pmxcfs_cpg::status::{StatusError, Stored};
use pmxcfs_cpg::wire::KvstoreType;
use pmxcfs_ipc::guest;
use pmxcfs_ipc::proto::Request;
use pmxcfs_ipc::server::{Client, Handler};
use pmxcfs_ipc::token;
use pmxcfs_store::Kind;
use smallvec::SmallVec;

use crate::clock::now_secs;
use crate::core::Core;
use crate::error::FsError;
use crate::fs::PmxFs;
use crate::status::vmlist_text;

/// Entries GET_CLUSTER_LOG prints when the request asks for 0.
const LOG_DUMP_DEFAULT: u32 = 50;

/// The service's view of the file system (one per loop).
pub struct IpcService<'a> {
    fs: &'a PmxFs,
}

impl<'a> IpcService<'a> {
    pub fn new(fs: &'a PmxFs) -> IpcService<'a> {
        IpcService { fs }
    }
}

impl Handler for IpcService<'_> {
    fn handle(
        &mut self,
        client: &Client,
        request: Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), i32> {
        let mut core = self.fs.core();
        core.answer(client, request, out)
            .map_err(|error| error.errno())
    }
}

fn status_error(error: StatusError) -> FsError {
    match error {
        StatusError::TooBig => FsError::TooBig,
        StatusError::NotStorable => FsError::NoMemory,
    }
}

impl Core {
    fn answer(
        &mut self,
        client: &Client,
        request: Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), FsError> {
        match request {
            Request::FsVersion => out.extend_from_slice(self.version_text().as_bytes()),
            Request::ClusterInfo => out.extend_from_slice(
                self.status
                    .members_text(self.quorum.is_quorate())
                    .as_bytes(),
            ),
            Request::GuestList => {
                out.extend_from_slice(vmlist_text(self.session().vmlist()).as_bytes())
            }
            Request::RrdDump => out.extend_from_slice(&self.tables().rrd_dump(now_secs())),
            Request::SetStatus { name, data } => return self.set_status(name, data),
            Request::GetStatus { name, node } => {
                let local = node.is_empty() || node == self.config.nodename.as_bytes();
                let table = if local {
                    Some(self.tables().local())
                } else {
                    self.status
                        .node_id_of(node)
                        .and_then(|node_id| self.kv_remote()?.get(&node_id))
                };
                let (value, _) = table
                    .and_then(|table| table.get(name))
                    .ok_or(FsError::NotFound)?;
                out.extend_from_slice(value);
            }
            Request::GetConfig { path } => out.extend_from_slice(&self.tree_file(path)?),
            Request::LogClusterMsg {
                priority,
                ident,
                tag,
                message,
            } => self.log_cluster_message(client, priority, ident, tag, message),
            Request::GetClusterLog { max_entries, user } => {
                let max = if max_entries == 0 {
                    LOG_DUMP_DEFAULT
                } else {
                    max_entries
                };
                let user = (!user.is_empty()).then_some(user);
                out.extend_from_slice(
                    self.cluster_log()
                        .dump_json_of(max as usize, user)
                        .as_bytes(),
                );
            }
            Request::GuestConfigProperty { vmid, property } => {
                self.check_vmid(vmid)?;
                let property = property.map_err(FsError::from_errno)?;
                self.guest_properties(vmid, &[property], out)?;
            }
            Request::GuestConfigProperties { vmid, properties } => {
                self.check_vmid(vmid)?;
                let properties = properties.map_err(FsError::from_errno)?;
                self.guest_properties(vmid, &properties, out)?;
            }
            Request::VerifyToken { token } => {
                let config = self.tree_file(b"priv/token.cfg").ok();
                token::verify(config.as_deref(), token).map_err(FsError::from_errno)?;
            }
        }
        Ok(())
    }

    /// SET_STATUS (spec/status.md §2.1): stored here, and in cluster mode
    /// multicast whether or not it was storable (but not when too big).
    fn set_status(&mut self, name: &[u8], data: &[u8]) -> Result<(), FsError> {
        let stored = self.tables_mut().set_local(name, data, now_secs());
        if stored == Err(StatusError::TooBig) {
            return Err(FsError::TooBig);
        }
        if let Ok(Stored::NodeIp(true)) = stored {
            self.status.node_ip = self.tables().node_ip().map(str::to_owned);
            self.status.clinfo_version = self.status.clinfo_version.wrapping_add(1);
        }
        match Kvstore::update_message(name, data) {
            Some(payload) => self.send_kvstore(KvstoreType::Update, payload),
            None => tracing::debug!("status key too long to multicast"),
        }
        stored.map(|_| ()).map_err(status_error)
    }

    /// LOG_CLUSTER_MSG (spec/status.md §5.1): inserted here (duplicate
    /// check) and multicast either way; priority ≥ 8 makes no entry.
    fn log_cluster_message(
        &mut self,
        client: &Client,
        priority: u8,
        ident: &[u8],
        tag: &[u8],
        message: &[u8],
    ) {
        let nodename = self.config.nodename.clone();
        let ident = String::from_utf8_lossy(ident);
        let tag = String::from_utf8_lossy(tag);
        let message = String::from_utf8_lossy(message);
        let record = LogRecord {
            node: &nodename,
            ident: &ident,
            tag: &tag,
            pid: client.pid,
            priority,
            time: now_secs(),
            message: &message,
        };
        let Some(entry) = self.cluster_log_mut().pack(&record) else {
            return;
        };
        let payload = entry.encode();
        self.cluster_log_mut().insert(entry);
        if let Some(payload) = payload {
            self.send_kvstore(KvstoreType::Log, payload);
        }
    }

    /// A file of the tree (memdb only: no plugin symlinks); ENOENT for
    /// missing entries and directories.
    fn tree_file(&self, path: &[u8]) -> Result<Vec<u8>, FsError> {
        let start = path
            .iter()
            .position(|byte| *byte != b'/')
            .unwrap_or(path.len());
        let reader = self.reader();
        match reader.resolve(&path[start..]) {
            Ok(Some(entry)) if entry.meta.kind == Kind::File => Ok(entry.data.to_vec()),
            _ => Err(FsError::NotFound),
        }
    }

    /// vmid 0 is "all"; another one must be a known guest.
    fn check_vmid(&self, vmid: u32) -> Result<(), FsError> {
        if vmid >= 100 && self.session().vmlist().get(vmid).is_none() {
            return Err(FsError::NotFound);
        }
        Ok(())
    }

    /// Ops 11 and 13 (spec/status.md §6.4). One guest: its config must be
    /// readable (EIO otherwise); all guests: unreadable ones are skipped.
    fn guest_properties(
        &self,
        vmid: u32,
        props: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), FsError> {
        let vmlist = self.session().vmlist();
        let path_of = |vmid: u32, guest: &pmxcfs_store::Guest| {
            let mut path = b"nodes/".to_vec();
            path.extend_from_slice(&guest.node);
            path.push(b'/');
            path.extend_from_slice(guest.guest_type.dir_name().as_bytes());
            path.extend_from_slice(format!("/{vmid}.conf").as_bytes());
            path
        };
        let mut configs: Vec<(u32, Vec<u8>)> = Vec::new();
        if vmid >= 100 {
            if let Some(guest) = vmlist.get(vmid) {
                let config = self
                    .tree_file(&path_of(vmid, guest))
                    .map_err(|_| FsError::Io)?;
                configs.push((vmid, config));
            }
        } else {
            for (id, guest) in vmlist.guests() {
                if let Ok(config) = self.tree_file(&path_of(*id, guest)) {
                    configs.push((*id, config));
                }
            }
        }
        let values = configs.iter().map(|(id, config)| {
            let values: SmallVec<[Option<&[u8]>; 8]> = guest::property_values(config, props);
            (*id, values)
        });
        guest::properties_json(out, props, values);
        Ok(())
    }
}
