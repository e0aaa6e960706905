//! The guest index: vmid -> (node, type), derived from
//! `nodes/<node>/{qemu-server,openvz,lxc}/<vmid>.conf` (spec/filesystem.md §6.4).
//!
//! Kept in memory only and rebuilt from the tree on open and after a resync,
//! as the C daemon does. The version counters are process-local.

use std::collections::BTreeMap;

use crate::path::{GuestConfig, GuestType};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    pub node: Vec<u8>,
    pub guest_type: GuestType,
    /// Per-guest version: a process-wide counter value, new on every register.
    pub version: u32,
}

#[derive(Debug, Default)]
pub struct VmList {
    guests: BTreeMap<u32, Guest>,
    /// Incremented on every register, delete and rebuild.
    version: u32,
    counter: u32,
}

impl VmList {
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn guests(&self) -> &BTreeMap<u32, Guest> {
        &self.guests
    }

    pub fn get(&self, vmid: u32) -> Option<&Guest> {
        self.guests.get(&vmid)
    }

    /// True when `vmid` belongs to another node or another guest type: a
    /// write of `config` must then fail with EEXIST.
    pub fn conflicts(&self, config: &GuestConfig) -> bool {
        self.guests
            .get(&config.vmid)
            .is_some_and(|guest| guest.guest_type != config.guest_type || guest.node != config.node)
    }

    pub fn register(&mut self, config: &GuestConfig) {
        self.version = self.version.wrapping_add(1);
        self.insert(config);
    }

    pub fn delete(&mut self, vmid: u32) {
        self.version = self.version.wrapping_add(1);
        self.guests.remove(&vmid);
    }

    fn insert(&mut self, config: &GuestConfig) {
        self.counter = self.counter.wrapping_add(1);
        self.guests.insert(
            config.vmid,
            Guest {
                node: config.node.clone(),
                guest_type: config.guest_type,
                version: self.counter,
            },
        );
    }

    /// Replaces the list with the guests found in the tree. Returns the
    /// vmids that occur more than once (the first occurrence is kept, as in
    /// the C daemon, which then refuses to start).
    pub fn rebuild(&mut self, configs: impl IntoIterator<Item = GuestConfig>) -> Vec<u32> {
        self.version = self.version.wrapping_add(1);
        self.guests.clear();
        let mut duplicates = Vec::new();
        for config in configs {
            if self.guests.contains_key(&config.vmid) {
                duplicates.push(config.vmid);
                continue;
            }
            self.insert(&config);
        }
        duplicates
    }
}
