//! One `pmxcfs` per node of the lab cluster (tests/cluster/lab.sh): its
//! own data dir and mountpoint in the node's mount namespace (reached
//! through /proc/PID/root), started and stopped like a service, and the
//! waits the cluster tests share.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::lab::Lab;
use super::{BIN, dump_tree};

pub const WAIT: Duration = Duration::from_secs(30);
/// Lock lifetime of the lab daemons (C: 120 s).
pub const LOCK_TIMEOUT_SECS: u64 = 2;

pub struct Node {
    pub index: u32,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Extra environment of every start (e.g. an LD_PRELOAD slow disk).
    pub env: Vec<(String, String)>,
}

impl Node {
    pub fn new(lab: &Lab, index: u32) -> Node {
        let dir = lab.dir.join(format!("n{index}/pmxcfs"));
        for sub in ["mnt", "data", "run", "etc"] {
            fs::create_dir_all(dir.join(sub)).expect("node dirs");
        }
        // The host corosync.conf pmxcfs imports and keeps in sync: the lab's
        // config without the per-node `system` section (identical on all
        // nodes, as on a real cluster).
        let config = fs::read_to_string(lab.dir.join(format!("n{index}/corosync.conf")))
            .expect("lab corosync.conf");
        let cluster_part = config.split("system {").next().unwrap_or(&config);
        fs::write(dir.join("etc/corosync.conf"), cluster_part).expect("write corosync.conf");
        Node {
            index,
            dir,
            child: None,
            env: Vec::new(),
        }
    }

    pub fn start(&mut self, lab: &Lab) {
        assert!(self.child.is_none(), "node {} runs already", self.index);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pmxcfs.log"))
            .expect("log file");
        let d = |sub: &str| self.dir.join(sub);
        let child = lab
            .command(&["exec", &self.index.to_string()])
            .arg(BIN)
            .arg("-f")
            .arg("--mountpoint")
            .arg(d("mnt"))
            .arg("--data-dir")
            .arg(d("data"))
            .arg("--run-dir")
            .arg(d("run"))
            .arg("--pid-file")
            .arg(d("pmxcfs.pid"))
            .arg("--nodename")
            .arg(format!("node{}", self.index))
            .arg("--node-ip")
            .arg(format!("10.99.0.{}", self.index))
            .arg("--corosync-conf")
            .arg(d("etc/corosync.conf"))
            .arg("--rrd-dir")
            .arg(d("rrd"))
            .arg("--rrdcached-socket")
            .arg(d("rrdcached.sock"))
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NOTIFY_SOCKET", self.dir.join("notify.sock"))
            .env("PMXCFS_LOCK_TIMEOUT_SECS", LOCK_TIMEOUT_SECS.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start pmxcfs");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A path in the node's mount (through its mount namespace).
    pub fn path(&self, rel: &str) -> PathBuf {
        let mnt = self.dir.join("mnt");
        let mut path = PathBuf::from(format!("/proc/{}/root", self.pid()));
        path.push(mnt.strip_prefix("/").expect("absolute"));
        if !rel.is_empty() {
            path.push(rel);
        }
        path
    }

    pub fn members(&self) -> Option<Value> {
        let text = fs::read_to_string(self.path(".members")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn quorate(&self) -> Option<bool> {
        self.members()
            .and_then(|m| m["cluster"]["quorate"].as_u64())
            .map(|q| q == 1)
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("pmxcfs.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- node {} pmxcfs log ---\n{}",
            self.index,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// SIGTERM; the daemon must be gone within 2 s.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "node {}: exit {status}", self.index);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "node {}: pmxcfs still running 2 s after SIGTERM\n{}",
                self.index,
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The store's rows. The root row's `type` is left out: a resync
    /// writes it as 4 (directory) until the next change, as the C daemon
    /// does in its database (docs/store.md).
    pub fn dump(&self) -> BTreeMap<String, Value> {
        let mut tree = dump_tree(&self.dir.join("data"));
        if let Some(Value::Object(root)) = tree.get_mut("") {
            root.remove("type");
        }
        tree
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[track_caller]
pub fn wait_for(what: &str, nodes: &[Node], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(Node::log_tail).collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Creates a file, retrying while the node is not (yet) writable: EACCES
/// (no quorum, or not synced yet). Any other error fails the test.
#[track_caller]
pub fn write_when_writable(nodes: &[Node], node: usize, rel: &str, data: &[u8]) {
    wait_for(
        &format!("node {} to accept a write", node + 1),
        nodes,
        || match fs::write(nodes[node].path(rel), data) {
            Ok(()) => true,
            Err(error) if error.raw_os_error() == Some(libc::EACCES) => false,
            Err(error) => panic!("node {}: write of {rel}: {error}", node + 1),
        },
    );
}

/// Every running node quorate (through .members: its FUSE mount is up; a
/// write before it would land in the plain mountpoint directory) and
/// accepting a write (`TAG-I` on node I, 0-based).
#[track_caller]
pub fn wait_writable(nodes: &[Node], tag: &str) {
    for node in nodes.iter().filter(|n| n.child.is_some()) {
        wait_for(&format!("node {} quorate", node.index), nodes, || {
            node.quorate() == Some(true)
        });
    }
    for i in 0..nodes.len() {
        if nodes[i].child.is_some() {
            write_when_writable(nodes, i, &format!("{tag}-{i}"), b"ok");
        }
    }
}

pub fn read(node: &Node, rel: &str) -> Option<Vec<u8>> {
    fs::read(node.path(rel)).ok()
}

/// Every node has the same tree (same rows: inode, version, writer, mtime,
/// content) in its store.
#[track_caller]
pub fn wait_converged(nodes: &[Node]) {
    let running: Vec<&Node> = nodes.iter().filter(|n| n.child.is_some()).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let last = running.iter().map(|n| n.dump()).collect::<Vec<_>>();
        if last.windows(2).all(|pair| pair[0] == pair[1]) {
            return;
        }
        if Instant::now() > deadline {
            let diff: Vec<String> = last[0]
                .iter()
                .filter(|(path, row)| last.iter().any(|t| t.get(*path) != Some(row)))
                .map(|(path, _)| {
                    let rows: Vec<String> = last
                        .iter()
                        .map(|t| t.get(path).map_or("-".into(), Value::to_string))
                        .collect();
                    format!("{path}: {}", rows.join(" | "))
                })
                .take(20)
                .collect();
            panic!(
                "trees differ: {diff:?} (sizes {:?})\n{}",
                last.iter().map(BTreeMap::len).collect::<Vec<_>>(),
                nodes
                    .iter()
                    .map(Node::log_tail)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[track_caller]
pub fn wait_visible(nodes: &[Node], rel: &str, data: &[u8]) {
    for node in nodes.iter().filter(|n| n.child.is_some()) {
        wait_for(&format!("{rel} on node {}", node.index), nodes, || {
            read(node, rel).as_deref() == Some(data)
        });
    }
}
