//! The daemon in cluster mode: three real corosync nodes in network
//! namespaces (tests/cluster/lab.sh), one `pmxcfs` per node with its own
//! data dir and mountpoint (mounted in the node's private mount namespace,
//! reached through /proc/PID/root). Needs root, FUSE and corosync: it fails,
//! never skips, when something is missing.
//!
//! One lab for the whole story (setting it up costs seconds): replication
//! and cache invalidation, errnos travelling back, cluster-wide locks,
//! identical trees, a stopped node resynced, a new empty node, a partition
//! (read-only minority, EACCES) and its heal, concurrent writers on all
//! nodes, kill -9 of a daemon and of a corosync, clean bounded shutdowns,
//! and the IPC service "pve2" of each node (status and cluster log shared
//! over the cluster, also with a restarted node).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;

use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use common::BIN;
use common::lab::Lab;
use common::node::{
    LOCK_TIMEOUT_SECS, Node, read, wait_converged, wait_for, wait_visible, wait_writable,
    write_when_writable,
};
use pmxcfs_ipc::client::Client;
use pmxcfs_ipc::proto::{Op, payload};
use serde_json::Value;

const NODES: u32 = 3;

/// Runs `calls` with an IPC client of `node`'s daemon. The service is an
/// abstract unix socket, private to the node's network namespace: the
/// client is made on a thread that joined it (setns is per thread).
fn ipc<T: Send>(node: &Node, calls: impl FnOnce(&mut Client) -> T + Send) -> T {
    let netns = fs::File::open(format!("/proc/{}/ns/net", node.pid())).expect("node netns");
    thread::scope(|scope| {
        scope
            .spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on an fd we hold, for this thread only.
                let joined = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
                let mut client = Client::connect("pve2").expect("connect to pve2");
                calls(&mut client)
            })
            .join()
            .expect("IPC thread")
    })
}

fn ipc_call(client: &mut Client, op: Op, payload: &[u8]) -> Result<Vec<u8>, i32> {
    client.call(op.id(), payload).expect("IPC transport")
}

/// Node `of`'s status value `key` as `node` sees it over IPC.
fn node_status(node: &Node, of: &str, key: &str) -> Result<Vec<u8>, i32> {
    ipc(node, |client| {
        ipc_call(
            client,
            Op::GetStatus,
            &payload::get_status(key.as_bytes(), of.as_bytes()),
        )
    })
}

/// How often `needle` appears in `node`'s cluster log, over IPC and in
/// `.clusterlog`.
fn log_count(node: &Node, needle: &str) -> (usize, usize) {
    let over_ipc = ipc(node, |client| {
        ipc_call(
            client,
            Op::GetClusterLog,
            &payload::get_cluster_log(1000, b""),
        )
    })
    .expect("cluster log");
    let over_ipc = String::from_utf8_lossy(&over_ipc).matches(needle).count();
    let file = fs::read_to_string(node.path(".clusterlog")).unwrap_or_default();
    (over_ipc, file.matches(needle).count())
}

/// Every running node has node `of`'s status `key` = `value`, and each
/// message of `messages` once in its cluster log.
#[track_caller]
fn wait_ipc_shared(nodes: &[Node], of: &str, key: &str, value: &[u8], messages: &[String]) {
    for node in nodes.iter().filter(|n| n.child.is_some()) {
        wait_for(
            &format!("{of}'s {key} on node {} over IPC", node.index),
            nodes,
            || node_status(node, of, key).as_deref() == Ok(value),
        );
        for message in messages {
            wait_for(
                &format!("'{message}' in node {}'s cluster log", node.index),
                nodes,
                || log_count(node, message) == (1, 1),
            );
        }
    }
}

/// Writers on every node; meanwhile every daemon is killed (-9) at once,
/// so no node can resync another's writes: after the restart each
/// acknowledged write is there (from the nodes' own journals), on every
/// node. Then every corosync is killed and started again: nothing changes.
fn every_node_killed_at_once_keeps_what_it_acknowledged(lab: &Lab, nodes: &mut [Node]) {
    fs::create_dir(nodes[0].path("allkill")).expect("mkdir");
    for node in nodes.iter() {
        wait_for("allkill replicated", nodes, || {
            node.path("allkill").is_dir()
        });
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Per writer: the writes acknowledged, and the one that failed (it may
    // have been applied in part: the truncating open, say). Plain threads,
    // not scoped ones: a writer that hangs fails the test below instead of
    // hanging it.
    type Outcome = (Vec<(String, String)>, Option<(String, String)>);
    let (sender, results) = std::sync::mpsc::channel::<Outcome>();
    for node in nodes.iter() {
        let path = node.path("");
        let index = node.index;
        let stop = stop.clone();
        let sender = sender.clone();
        thread::spawn(move || {
            let mut done = Vec::new();
            let mut failed = None;
            for k in 0.. {
                let rel = format!("allkill/n{index}-{}", k % 40);
                let content = format!("node {index} write {k}\n");
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // Errors end the writer: its daemon is gone.
                if fs::write(path.join(&rel), &content).is_err() {
                    failed = Some((rel, content));
                    break;
                }
                done.push((rel, content));
            }
            let _ = sender.send((done, failed));
        });
    }
    drop(sender);
    // Until every writer got a good way, then all daemons at once.
    wait_for("writes on all nodes", nodes, || {
        (1..=NODES).all(|i| {
            fs::read_dir(nodes[0].path("allkill"))
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .any(|entry| entry.file_name() == *format!("n{i}-20").as_str())
                })
                .unwrap_or(false)
        })
    });
    let pids: Vec<i32> = nodes.iter().map(|node| node.pid() as i32).collect();
    for pid in pids {
        // SAFETY: kill(2) of our own children.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // A killed daemon may not finish exiting while a writer still waits on
    // it (its notifier thread waits in the kernel for the directory that
    // writer holds): starting the new daemons is what releases them (they
    // abort a dead daemon's connection), so they start before the writers
    // and the old processes are waited for.
    let dead: Vec<Child> = nodes
        .iter_mut()
        .map(|node| node.child.take().expect("running"))
        .collect();
    for node in nodes.iter_mut() {
        node.start(lab);
    }
    let outcomes: Vec<Outcome> = (0..NODES)
        .map(|_| {
            results
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    let logs: Vec<String> = nodes.iter().map(Node::log_tail).collect();
                    panic!(
                        "a writer still hangs on a killed daemon 60 s after the restart\n{}",
                        logs.join("\n")
                    )
                })
        })
        .collect();
    for mut child in dead {
        let _ = child.wait();
    }
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for (writes, _) in &outcomes {
        for (rel, content) in writes {
            last.insert(rel.clone(), content.clone());
        }
    }
    // A file whose last write failed holds the acknowledged content, the
    // failed write's, or what its truncating open left (nothing): checked
    // apart, after the trees converged.
    let in_flight: Vec<(String, String)> = outcomes
        .iter()
        .filter_map(|(_, failed)| failed.clone())
        .collect();
    let mut undecided = Vec::new();
    for (rel, content) in &in_flight {
        undecided.push((rel.clone(), last.remove(rel), content.clone()));
    }
    let total: usize = outcomes.iter().map(|(writes, _)| writes.len()).sum();
    eprintln!("all daemons killed after {total} acknowledged writes");
    for node in nodes.iter() {
        wait_for(&format!("node {} quorate again", node.index), nodes, || {
            node.quorate() == Some(true)
        });
    }
    for (rel, content) in &last {
        wait_visible(nodes, rel, content.as_bytes());
    }
    wait_converged(nodes);
    for (rel, acknowledged, failed) in &undecided {
        let now = read(&nodes[0], rel);
        let allowed = now.is_none() && acknowledged.is_none()
            || now.as_deref() == Some(b"")
            || now.as_deref() == Some(failed.as_bytes())
            || now.as_deref() == acknowledged.as_deref().map(str::as_bytes);
        assert!(
            allowed,
            "{rel}: {now:?}, acknowledged {acknowledged:?}, failed {failed:?}"
        );
    }

    // Every corosync killed, then started again.
    for i in 1..=NODES {
        lab.run(&["kill", &i.to_string()]);
    }
    for node in nodes.iter() {
        wait_for(
            &format!("node {} without quorum", node.index),
            nodes,
            || node.quorate() == Some(false),
        );
    }
    for i in 1..=NODES {
        lab.run(&["start", &i.to_string()]);
    }
    lab.run(&["wait", "1", "3"]);
    write_when_writable(nodes, 2, "after-all-corosyncs", b"back");
    wait_visible(nodes, "after-all-corosyncs", b"back");
    for (rel, content) in &last {
        wait_visible(nodes, rel, content.as_bytes());
    }
    wait_converged(nodes);
}

/// `done` within 1 s: well under the 10 s the kernel caches entries and
/// attributes, so only an invalidation (not an expiry) can make it true.
#[track_caller]
fn within_a_second(what: &str, nodes: &[Node], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !done() {
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(Node::log_tail).collect();
            panic!(
                "{what}: not within 1 s (cached state was not invalidated)\n{}",
                logs.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn listing(node: &Node, rel: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(node.path(rel))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Each kind of remote change, made on node 1, reaches what nodes 2 and 3
/// have cached (listed the directory, stat'ed and read the files, a file
/// held open) within a second.
fn remote_changes_reach_cached_state(nodes: &[Node]) {
    use std::os::unix::fs::MetadataExt;
    let n1 = |rel: &str| nodes[0].path(rel);
    fs::create_dir(n1("inval")).expect("mkdir");
    fs::create_dir(n1("inval/sub")).expect("mkdir");
    for (name, data) in [
        ("a.cfg", "1111"),
        ("b.cfg", "longer text"),
        ("c.cfg", "c1"),
        ("d.cfg", "SAME"),
    ] {
        fs::write(n1(&format!("inval/{name}")), data).expect("write");
    }
    fs::create_dir_all(n1("priv/lock/inval-lock")).expect("lock");
    wait_visible(nodes, "inval/d.cfg", b"SAME");
    let others = &nodes[1..];
    // Prime every kernel cache on the other nodes.
    let mut held = Vec::new();
    for node in others {
        wait_for("the lock dir", nodes, || {
            node.path("priv/lock/inval-lock").exists()
        });
        assert_eq!(
            listing(node, "inval"),
            ["a.cfg", "b.cfg", "c.cfg", "d.cfg", "sub"]
        );
        for name in ["a.cfg", "b.cfg", "c.cfg", "d.cfg"] {
            fs::metadata(node.path(&format!("inval/{name}"))).expect("stat");
            fs::read(node.path(&format!("inval/{name}"))).expect("read");
        }
        held.push(fs::File::open(node.path("inval/a.cfg")).expect("open"));
    }
    let read_is = |node: &Node, rel: &str, data: &[u8]| read(node, rel).as_deref() == Some(data);
    let check = |what: &str, test: &dyn Fn(&Node) -> bool| {
        for node in others {
            within_a_second(&format!("{what} on node {}", node.index), nodes, || {
                test(node)
            });
        }
    };

    fs::write(n1("inval/new.cfg"), b"new").expect("create");
    check("a created file listed and read", &|node| {
        listing(node, "inval").contains(&"new.cfg".to_owned())
            && read_is(node, "inval/new.cfg", b"new")
    });
    fs::write(n1("inval/a.cfg"), b"1111 and more").expect("longer");
    check("a longer rewrite", &|node| {
        read_is(node, "inval/a.cfg", b"1111 and more")
            && fs::metadata(node.path("inval/a.cfg")).is_ok_and(|meta| meta.len() == 13)
    });
    for (node, file) in others.iter().zip(&held) {
        let mut buf = [0u8; 13];
        within_a_second(
            &format!("the held file on node {}", node.index),
            nodes,
            || file.read_exact_at(&mut buf, 0).is_ok() && &buf == b"1111 and more",
        );
    }
    fs::write(n1("inval/b.cfg"), b"short").expect("shorter");
    check("a shorter rewrite", &|node| {
        read_is(node, "inval/b.cfg", b"short")
    });
    fs::write(n1("inval/d.cfg"), b"more").expect("same size");
    check("a same-size rewrite", &|node| {
        read_is(node, "inval/d.cfg", b"more")
    });
    let old_inode: Vec<u64> = others
        .iter()
        .map(|node| fs::metadata(node.path("inval/c.cfg")).expect("stat").ino())
        .collect();
    fs::write(n1("inval/c.cfg.tmp.1"), b"c2 by rename").expect("tmp");
    fs::rename(n1("inval/c.cfg.tmp.1"), n1("inval/c.cfg")).expect("rename over");
    for (node, old) in others.iter().zip(&old_inode) {
        within_a_second(
            &format!("a rename over on node {}", node.index),
            nodes,
            || {
                read_is(node, "inval/c.cfg", b"c2 by rename")
                    && fs::metadata(node.path("inval/c.cfg")).is_ok_and(|meta| meta.ino() != *old)
                    && !listing(node, "inval").contains(&"c.cfg.tmp.1".to_owned())
            },
        );
    }
    fs::remove_file(n1("inval/b.cfg")).expect("unlink");
    check("an unlink", &|node| {
        fs::metadata(node.path("inval/b.cfg")).is_err()
            && !listing(node, "inval").contains(&"b.cfg".to_owned())
    });
    fs::create_dir(n1("inval/sub2")).expect("mkdir");
    fs::remove_dir(n1("inval/sub")).expect("rmdir");
    check("mkdir and rmdir", &|node| {
        listing(node, "inval") == ["a.cfg", "c.cfg", "d.cfg", "new.cfg", "sub2"]
            && fs::metadata(node.path("inval/sub")).is_err()
    });
    fs::remove_dir(n1("priv/lock/inval-lock")).expect("unlock");
    check("a lock directory's removal", &|node| {
        fs::metadata(node.path("priv/lock/inval-lock")).is_err()
    });
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    fs::File::options()
        .write(true)
        .open(n1("inval/a.cfg"))
        .and_then(|file| file.set_modified(mtime))
        .expect("set mtime");
    check("an mtime change", &|node| {
        fs::metadata(node.path("inval/a.cfg")).is_ok_and(|meta| meta.mtime() == 1_700_000_000)
    });
}

/// PVE rewrites a config on node 1 (`file_set_contents`: tmp file, write,
/// rename over) while pveproxy-like readers on nodes 2 and 3 read it: every
/// read of an opened file gives one whole version and none fails (an open
/// itself may fail with ESTALE when it loses the race twice, rarely). A reader whose open races
/// the rename reads the version it opened (the removed file's copy), as
/// with a local rename; without that copy its fstat and read of the
/// removed file failed with ESTALE (~10 % of the versions in the cluster
/// benchmark). The last version is read everywhere within a second.
fn readers_never_fail_while_a_config_is_rewritten(nodes: &[Node]) {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    const WRITES: usize = 150;
    let body = |k: usize| format!("version {k}\n{}\n", "x".repeat(400 + k % 50));
    fs::create_dir(nodes[0].path("race")).expect("mkdir");
    fs::write(nodes[0].path("race/vm.conf"), body(0)).expect("first version");
    wait_visible(nodes, "race/vm.conf", body(0).as_bytes());
    let stop = AtomicBool::new(false);
    let whole = |data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        text.split_whitespace()
            .nth(1)
            .and_then(|k| k.parse::<usize>().ok())
            .is_some_and(|k| k <= WRITES && data == body(k).as_bytes())
    };
    let outcomes: Vec<(usize, Vec<String>, usize)> = thread::scope(|scope| {
        let readers: Vec<_> = nodes[1..]
            .iter()
            .flat_map(|node| [(node, false), (node, true)])
            .map(|(node, slow)| {
                let path = node.path("race/vm.conf");
                let stop = &stop;
                scope.spawn(move || {
                    let (mut reads, mut failures, mut opens_stale) = (0, Vec::new(), 0);
                    while !stop.load(Ordering::Relaxed) {
                        // The slow reader holds the file open across the
                        // writer's rename before it stats and reads.
                        reads += 1;
                        let mut file = match fs::File::open(&path) {
                            Ok(file) => file,
                            // The kernel retries an open that names a
                            // replaced file once; a second rename within
                            // that retry fails it (rare, counted apart).
                            Err(error) if error.raw_os_error() == Some(libc::ESTALE) => {
                                opens_stale += 1;
                                continue;
                            }
                            Err(error) => {
                                failures.push(format!("node {}: open: {error}", node.index));
                                continue;
                            }
                        };
                        if slow {
                            thread::sleep(Duration::from_millis(1));
                        }
                        let result = file.metadata().and_then(|_| {
                            let mut data = Vec::new();
                            file.read_to_end(&mut data)?;
                            Ok(data)
                        });
                        match result {
                            Ok(data) if whole(&data) => {}
                            Ok(data) => failures.push(format!(
                                "node {}: torn read {:?}",
                                node.index,
                                String::from_utf8_lossy(&data[..data.len().min(20)])
                            )),
                            Err(error) => failures.push(format!(
                                "node {}: fstat or read of an open file: {error}",
                                node.index
                            )),
                        }
                        thread::sleep(Duration::from_micros(200));
                    }
                    (reads, failures, opens_stale)
                })
            })
            .collect();
        let dir = nodes[0].path("race");
        for k in 1..=WRITES {
            let tmp = dir.join(format!("vm.conf.tmp.{}", std::process::id()));
            fs::write(&tmp, body(k)).expect("write tmp");
            fs::rename(&tmp, dir.join("vm.conf")).expect("rename over");
            thread::sleep(Duration::from_millis(2));
        }
        for node in &nodes[1..] {
            within_a_second(
                &format!("the last version on node {}", node.index),
                nodes,
                || read(node, "race/vm.conf").as_deref() == Some(body(WRITES).as_bytes()),
            );
        }
        stop.store(true, Ordering::Relaxed);
        readers
            .into_iter()
            .map(|reader| reader.join().expect("reader"))
            .collect()
    });
    let reads: usize = outcomes.iter().map(|(reads, _, _)| reads).sum();
    let failures: Vec<&String> = outcomes.iter().flat_map(|(_, f, _)| f).collect();
    let opens_stale: usize = outcomes.iter().map(|(_, _, stale)| stale).sum();
    assert!(reads > 4 * WRITES, "only {reads} reads");
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed during {WRITES} atomic writes: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // An open that loses the race twice (its retry's lookup and open
    // straddle the next rename): seen once in ~11,000 reads; a bound of
    // 1 in 500 still fails loudly if the first retry stops working.
    assert!(
        opens_stale * 500 <= reads,
        "{opens_stale} of {reads} opens failed with ESTALE"
    );
    eprintln!(
        "{reads} reads on nodes 2 and 3 during {WRITES} atomic writes: none failed on an open \
         file, {opens_stale} opens failed with ESTALE"
    );
}

/// `pmxcfs status --json` of a node.
fn status_json(node: &Node) -> Option<Value> {
    let output = std::process::Command::new(BIN)
        .args(["status", "--json", "--run-dir"])
        .arg(node.dir.join("run"))
        .output()
        .ok()?;
    serde_json::from_slice(&output.stdout).ok()
}

/// Write safety (issue: the C protocol's forked histories): with the daemons
/// of nodes 2 and 3 stopped, corosync is still quorate on node 1 (three
/// corosyncs run) but its pmxcfs group holds 1 of 3 votes. C would accept a
/// write there (and a later resync could erase it); ours waits for a
/// majority of the group and is answered once node 2's daemon is back, or
/// gets EACCES after 10 s.
fn write_safety_waits_for_a_majority_of_the_group(lab: &Lab, nodes: &mut [Node]) {
    nodes[1].stop();
    nodes[2].stop();
    assert_eq!(nodes[0].quorate(), Some(true), "corosync keeps quorum");
    let path = nodes[0].path("written-by-a-majority");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let result = fs::write(&path, b"waited");
        (result.map_err(|e| e.raw_os_error()), started.elapsed())
    });
    wait_for("node 1 holds a write at the gate", nodes, || {
        status_json(&nodes[0]).is_some_and(|s| s["requests"]["waiting"] == 1)
    });
    assert!(!writer.is_finished(), "the write waits for the group");
    let log = fs::read_to_string(nodes[0].dir.join("pmxcfs.log")).unwrap_or_default();
    assert!(
        log.contains(
            "cluster writes closed: the pmxcfs group holds no majority of the configured votes"
        ),
        "node 1 says why writes wait:\n{}",
        nodes[0].log_tail()
    );
    nodes[1].start(lab);
    let (result, waited) = writer.join().expect("writer");
    assert_eq!(result, Ok(()), "the parked write succeeds with a majority");
    assert!(
        waited < Duration::from_secs(10),
        "answered when node 2 came back: {waited:?}"
    );
    wait_visible(&nodes[..2], "written-by-a-majority", b"waited");

    // Without a majority for 10 s: EACCES.
    nodes[1].stop();
    let started = Instant::now();
    assert_eq!(
        errno_of(fs::write(nodes[0].path("never-written"), b"x")),
        Some(libc::EACCES)
    );
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(20)).contains(&waited),
        "refused after the 10 s wait: {waited:?}"
    );
    assert!(read(&nodes[0], "never-written").is_none());
    nodes[1].start(lab);
    nodes[2].start(lab);
    wait_converged(nodes);
    assert!(read(&nodes[2], "never-written").is_none());
    assert_eq!(
        read(&nodes[2], "written-by-a-majority").as_deref(),
        Some(&b"waited"[..])
    );
}

fn errno_of(result: std::io::Result<()>) -> Option<i32> {
    result.err().and_then(|error| error.raw_os_error())
}

#[test]
fn three_node_cluster() {
    let base = tempfile::Builder::new()
        .prefix("pmxcfs-cluster-")
        .tempdir()
        .expect("temp dir");
    let lab = Lab::up(NODES, base.path().join("lab"));
    let mut nodes: Vec<Node> = (1..=NODES).map(|i| Node::new(&lab, i)).collect();
    // Node 1 reports to a service manager (a Type=notify unit): the test.
    let notify = std::os::unix::net::UnixDatagram::bind(nodes[0].dir.join("notify.sock"))
        .expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let started = Instant::now();
    for node in &mut nodes {
        node.start(&lab);
    }

    // All three quorate, with the cluster in .members, and writable.
    wait_writable(&nodes, "hello");
    eprintln!("3 daemons writable after {:?}", started.elapsed());
    // The local errno battery through node 2: the origin of every change
    // answers as a local-mode daemon does; the others converge on the result.
    let battery = Instant::now();
    common::battery::tree_operations_and_errnos_on(&nodes[1]);
    wait_converged(&nodes);
    eprintln!("errno battery through node 2 in {:?}", battery.elapsed());
    // Served through the per-CPU io_uring queues when the kernel offers
    // them (mutating requests parked in their entries), else /dev/fuse.
    let offered = std::path::Path::new("/sys/module/fuse/parameters/enable_uring").exists();
    for node in &nodes {
        let log = fs::read_to_string(node.dir.join("pmxcfs.log")).unwrap_or_default();
        assert_eq!(
            log.contains("FUSE over io_uring: one queue per CPU"),
            offered,
            "node {}: transport does not match the kernel's offer\n{}",
            node.index,
            node.log_tail()
        );
    }
    let members = nodes[0].members().expect(".members");
    assert_eq!(members["cluster"]["nodes"], 3, "{members}");
    assert_eq!(members["nodelist"]["node1"]["id"], 1, "{members}");
    assert_eq!(members["nodelist"]["node1"]["ip"], "10.99.0.1", "{members}");
    wait_for("all nodes online", &nodes, || {
        nodes[0]
            .members()
            .is_some_and(|m| (1..=3).all(|i| m["nodelist"][format!("node{i}")]["online"] == 1))
    });
    // systemd heard READY, and a STATUS with quorum and members.
    let mut heard = String::new();
    wait_for("node 1's STATUS with 3 nodes", &nodes, || {
        let mut buffer = [0u8; 4096];
        if let Ok(length) = notify.recv(&mut buffer) {
            heard.push_str(&String::from_utf8_lossy(&buffer[..length]));
        }
        heard.contains("STATUS=quorate, 3 of 3 nodes online, synced\n")
    });
    assert!(heard.contains("READY=1\n"), "{heard}");
    // Lines an admin greps for, with node names.
    wait_for("node 1's log of 3 members in sync", &nodes, || {
        let log = fs::read_to_string(nodes[0].dir.join("pmxcfs.log")).unwrap_or_default();
        log.contains("cluster members: node1 (id 1), node2 (id 2), node3 (id 3)")
            && log.contains("tree in sync with the cluster (leader node1 (id 1))")
            && log.contains("node has quorum")
    });
    // `pmxcfs status` of node 2: the cluster as it sees it.
    wait_for(
        "node 2's status: 3 online, both groups synced",
        &nodes,
        || {
            let output = std::process::Command::new(BIN)
                .args(["status", "--json", "--run-dir"])
                .arg(nodes[1].dir.join("run"))
                .output()
                .expect("pmxcfs status");
            let Ok(status) = serde_json::from_slice::<Value>(&output.stdout) else {
                return false;
            };
            status["mode"] == "cluster"
                && status["quorate"] == true
                && status["members"].as_array().is_some_and(|members| {
                    members.len() == 3 && members.iter().all(|member| member["online"] == true)
                })
                && status["members"][0]["ip"] == "10.99.0.1"
                && status["dfsm"].as_array().is_some_and(|groups| {
                    groups.len() == 2
                        && groups
                            .iter()
                            .all(|group| group["mode"] == "synced" && group["synced_members"] == 3)
                })
        },
    );

    // Every node imported the same corosync.conf; the host copy is unchanged.
    wait_visible(
        &nodes,
        "corosync.conf",
        &fs::read(nodes[0].dir.join("etc/corosync.conf")).expect("host conf"),
    );

    // A new corosync.conf (config_version bumped, written as PVE does: .new
    // then rename) reaches every node's host copy, replaced atomically.
    let current = fs::read_to_string(nodes[0].path("corosync.conf")).expect("tree conf");
    let bumped = current.replace("config_version: 1", "config_version: 2");
    assert_ne!(bumped, current, "lab config has config_version 1");
    fs::write(nodes[0].path("corosync.conf.new"), &bumped).expect("write .new");
    fs::rename(
        nodes[0].path("corosync.conf.new"),
        nodes[0].path("corosync.conf"),
    )
    .expect("rename corosync.conf");
    for node in &nodes {
        wait_for(
            &format!("host corosync.conf of node {}", node.index),
            &nodes,
            || {
                fs::read_to_string(node.dir.join("etc/corosync.conf"))
                    .ok()
                    .as_deref()
                    == Some(bumped.as_str())
            },
        );
    }
    // An older version in the tree does not replace a newer host file.
    const REFUSED: &str = "local corosync.conf is newer than the cluster's copy";
    let refusals = |node: &Node| {
        fs::read_to_string(node.dir.join("pmxcfs.log"))
            .map_or(0, |log| log.matches(REFUSED).count())
    };
    let before: Vec<usize> = nodes.iter().map(refusals).collect();
    fs::write(nodes[1].path("corosync.conf"), &current).expect("write older conf");
    wait_visible(&nodes, "corosync.conf", current.as_bytes());
    // Each node decides (and says so) before the host copy is checked.
    for (node, before) in nodes.iter().zip(before) {
        wait_for(
            &format!("node {} refusing the older corosync.conf", node.index),
            &nodes,
            || refusals(node) > before,
        );
    }
    for node in &nodes {
        assert_eq!(
            fs::read_to_string(node.dir.join("etc/corosync.conf"))
                .ok()
                .as_deref(),
            Some(bumped.as_str()),
            "node {}: an older corosync.conf replaced the host copy",
            node.index
        );
    }

    // A write on node 1 is readable everywhere; a rewrite replaces what
    // node 2's kernel cached (remote changes invalidate).
    fs::write(nodes[0].path("storage.cfg"), b"dir: local\n").expect("write");
    wait_visible(&nodes, "storage.cfg", b"dir: local\n");
    fs::write(
        nodes[0].path("storage.cfg"),
        b"dir: local\n\tpath /var/lib/vz\n",
    )
    .expect("rewrite");
    wait_visible(&nodes, "storage.cfg", b"dir: local\n\tpath /var/lib/vz\n");
    // Directories, rename, delete.
    fs::create_dir(nodes[1].path("nodes")).expect("mkdir nodes");
    fs::create_dir(nodes[1].path("nodes/node1")).expect("mkdir");
    fs::create_dir(nodes[1].path("nodes/node1/qemu-server")).expect("mkdir");
    fs::write(
        nodes[1].path("nodes/node1/qemu-server/100.conf.tmp"),
        b"memory: 512\n",
    )
    .expect("write vm");
    fs::rename(
        nodes[1].path("nodes/node1/qemu-server/100.conf.tmp"),
        nodes[1].path("nodes/node1/qemu-server/100.conf"),
    )
    .expect("rename");
    wait_visible(&nodes, "nodes/node1/qemu-server/100.conf", b"memory: 512\n");
    fs::remove_file(nodes[2].path("hello-0")).expect("unlink");
    for node in &nodes {
        wait_for("unlink replicated", &nodes, || {
            read(node, "hello-0").is_none()
        });
    }
    let vmlist = fs::read_to_string(nodes[2].path(".vmlist")).expect(".vmlist");
    assert!(vmlist.contains("\"100\""), "{vmlist}");

    // A file held open on node 2 (pages cached, KEEP_CACHE) sees a remote
    // same-size rewrite, also when it is renamed right after (directories
    // with entries cannot be renamed, as in C).
    fs::create_dir(nodes[0].path("held")).expect("mkdir held");
    fs::write(nodes[0].path("held/f.cfg"), b"AAAA").expect("write");
    wait_visible(&nodes, "held/f.cfg", b"AAAA");
    let held = fs::File::open(nodes[1].path("held/f.cfg")).expect("open on node 2");
    let mut buf = [0u8; 4];
    held.read_exact_at(&mut buf, 0).expect("read");
    assert_eq!(&buf, b"AAAA");
    fs::write(nodes[0].path("held/f.cfg"), b"BBBB").expect("rewrite");
    fs::rename(nodes[0].path("held/f.cfg"), nodes[0].path("held/g.cfg")).expect("rename");
    wait_for("open file on node 2 sees the rewrite", &nodes, || {
        held.read_exact_at(&mut buf, 0).is_ok() && &buf == b"BBBB"
    });
    drop(held);
    wait_visible(&nodes, "held/g.cfg", b"BBBB");

    remote_changes_reach_cached_state(&nodes);
    readers_never_fail_while_a_config_is_rewritten(&nodes);

    // Errors come back to the writer with the C errno.
    assert_eq!(
        errno_of(fs::create_dir(nodes[2].path("nodes"))),
        Some(libc::EEXIST)
    );
    let big = vec![b'x'; 1024 * 1024 + 1];
    assert_eq!(
        errno_of(fs::write(nodes[1].path("big"), &big)),
        Some(libc::EFBIG)
    );
    assert_eq!(
        errno_of(fs::write(nodes[0].path("missing/file"), b"x")),
        Some(libc::ENOENT)
    );
    // A second guest with the same vmid on another node: EEXIST.
    fs::create_dir_all(nodes[0].path("nodes/node2/qemu-server")).expect("mkdir");
    assert_eq!(
        errno_of(fs::write(
            nodes[0].path("nodes/node2/qemu-server/100.conf"),
            b"x"
        )),
        Some(libc::EEXIST)
    );

    // Cluster-wide locks: the first mkdir wins everywhere.
    fs::create_dir_all(nodes[0].path("priv/lock")).expect("priv/lock");
    fs::create_dir(nodes[0].path("priv/lock/ha_agent")).expect("take lock");
    assert_eq!(
        errno_of(fs::create_dir(nodes[1].path("priv/lock/ha_agent"))),
        Some(libc::EEXIST)
    );
    // An unlock request of a held lock is refused (EACCES, as C).
    assert_eq!(
        errno_of(common::utime(&nodes[1].path("priv/lock/ha_agent"), 0, 0)),
        Some(libc::EACCES)
    );
    fs::remove_dir(nodes[0].path("priv/lock/ha_agent")).expect("release lock");
    // An expired lock: taken on node 2, an unlock request from node 3 makes
    // node 1 (the lowest node id decides) send the UNLOCK; it is removed
    // everywhere, also from node 1's kernel cache although node 1's own
    // message removed it, and node 1 can take it at once.
    fs::create_dir(nodes[1].path("priv/lock/expiring")).expect("take lock on node 2");
    wait_for("lock on node 1", &nodes, || {
        nodes[0].path("priv/lock/expiring").is_dir()
    });
    wait_for("lock on node 3", &nodes, || {
        nodes[2].path("priv/lock/expiring").is_dir()
    });
    thread::sleep(Duration::from_secs(LOCK_TIMEOUT_SECS + 1));
    assert_eq!(
        errno_of(common::utime(&nodes[2].path("priv/lock/expiring"), 0, 0)),
        Some(libc::EACCES),
        "an unlock request answers EACCES (the MTIME 0 is refused), as C"
    );
    // Node 1's kernel had the lock cached (entry and attributes for 10 s):
    // the UNLOCK applied there must drop it, or stat would still see it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while nodes[0].path("priv/lock/expiring").exists() {
        assert!(
            Instant::now() < deadline,
            "node 1 still shows the removed lock (stale kernel cache)"
        );
        thread::sleep(Duration::from_millis(20));
    }
    while let Err(error) = fs::create_dir(nodes[0].path("priv/lock/expiring")) {
        assert!(
            Instant::now() < deadline,
            "expired lock not taken over on node 1: {error}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    fs::remove_dir(nodes[0].path("priv/lock/expiring")).expect("release");
    wait_converged(&nodes);

    // IPC: a status set on node 1 is read with node 1's name everywhere; a
    // message logged on each node is in every node's log once.
    let status = b"{\"running\":true}".to_vec();
    let set = ipc(&nodes[0], |client| {
        ipc_call(
            client,
            Op::SetStatus,
            &payload::set_status(b"kv/test", Some(&status)),
        )
    });
    assert_eq!(set, Ok(Vec::new()));
    let messages: Vec<String> = (1..=NODES).map(|i| format!("hello from node{i}")).collect();
    for (node, message) in nodes.iter().zip(&messages) {
        let logged = ipc(node, |client| {
            ipc_call(
                client,
                Op::LogClusterMsg,
                &payload::log_cluster_msg(6, b"root@pam", b"test", message.as_bytes()),
            )
        });
        assert_eq!(logged, Ok(Vec::new()), "log on node {}", node.index);
    }
    // GET_STATUS answers the bytes SET_STATUS got: the Z* value with its NUL.
    let stored = [&status[..], b"\0"].concat();
    wait_ipc_shared(&nodes, "node1", "kv/test", &stored, &messages);
    // RRD values set on node 1 are in every node's dump, and every node
    // writes the file (directly: no rrdcached in the lab).
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let rrd_value = format!("{stamp}:1000:250");
    let set = ipc(&nodes[0], |client| {
        ipc_call(
            client,
            Op::SetStatus,
            &payload::set_status(b"rrd/pve2-storage/node1/local", Some(rrd_value.as_bytes())),
        )
    });
    assert_eq!(set, Ok(Vec::new()));
    let line = format!("pve2-storage/node1/local:{rrd_value}\n");
    for node in &nodes {
        wait_for(
            &format!("the RRD value in node {}'s dump", node.index),
            &nodes,
            || {
                ipc(node, |client| ipc_call(client, Op::GetRrdDump, b""))
                    .is_ok_and(|dump| String::from_utf8_lossy(&dump).contains(&line))
            },
        );
        let file = node.dir.join("rrd/pve-storage-9.0/node1/local");
        wait_for(
            &format!("node {} writes {}", node.index, file.display()),
            &nodes,
            || file.exists(),
        );
    }
    assert_eq!(
        node_status(&nodes[1], "node9", "kv/test"),
        Err(libc::ENOENT),
        "an unknown node"
    );

    // A stopped node misses writes and is resynced when it comes back.
    nodes[2].stop();
    write_when_writable(&nodes, 0, "while-n3-down", b"missed");
    for k in 0..20 {
        fs::write(nodes[1].path(&format!("batch-{k}")), format!("{k}")).expect("batch");
    }
    let restart = Instant::now();
    nodes[2].start(&lab);
    wait_visible(&nodes, "while-n3-down", b"missed");
    eprintln!(
        "stopped node resynced {:?} after its start",
        restart.elapsed()
    );
    wait_converged(&nodes);
    let log = fs::read_to_string(nodes[0].dir.join("pmxcfs.log")).unwrap_or_default();
    assert!(
        log.contains("(joined: -; left: node3 (id 3))"),
        "node 1 logs node 3 leaving:\n{}",
        nodes[0].log_tail()
    );
    // The restarted node has node 1's status and the whole log again.
    wait_ipc_shared(&nodes, "node1", "kv/test", &stored, &messages);

    // A new, empty node gets the whole tree.
    nodes[2].stop();
    fs::remove_dir_all(nodes[2].dir.join("data")).expect("wipe node 3");
    fs::create_dir(nodes[2].dir.join("data")).expect("data dir");
    nodes[2].start(&lab);
    wait_visible(&nodes, "batch-19", b"19");
    wait_converged(&nodes);

    write_safety_waits_for_a_majority_of_the_group(&lab, &mut nodes);

    // Partition: node 3 alone has no quorum and refuses writes; the two
    // others keep writing; after the heal it converges.
    lab.run(&["cut", "3"]);
    wait_for("node 3 without quorum", &nodes, || {
        nodes[2].quorate() == Some(false)
    });
    assert_eq!(
        errno_of(fs::write(nodes[2].path("minority"), b"x")),
        Some(libc::EACCES)
    );
    assert!(
        read(&nodes[2], "storage.cfg").is_some(),
        "reads work without quorum"
    );
    write_when_writable(&nodes, 0, "majority", b"written during the partition");
    lab.run(&["heal", "3"]);
    wait_for("node 3 quorate again", &nodes, || {
        nodes[2].quorate() == Some(true)
    });
    wait_visible(&nodes, "majority", b"written during the partition");
    wait_converged(&nodes);

    // Concurrent writers on all three nodes: nothing acknowledged is lost.
    for node in &nodes {
        write_when_writable(&nodes, node.index as usize - 1, "sync-point", b"x");
    }
    fs::create_dir(nodes[0].path("cw")).expect("mkdir cw");
    wait_visible(&nodes, "sync-point", b"x");
    for node in &nodes {
        wait_for("cw replicated", &nodes, || node.path("cw").is_dir());
    }
    let acknowledged: Vec<Vec<(String, String)>> = thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    let mut done = Vec::new();
                    let until = Instant::now() + Duration::from_secs(3);
                    let mut k = 0;
                    while Instant::now() < until {
                        let rel = format!("cw/n{}-{}", node.index, k % 50);
                        let content = format!("node {} write {k}\n", node.index);
                        // A quorate cluster, each node its own files: every
                        // write must succeed (an ESTALE once slipped through
                        // a loop that skipped errors).
                        if let Err(error) = fs::write(node.path(&rel), &content) {
                            panic!("node {}: write {k} of {rel}: {error}", node.index);
                        }
                        done.push((rel, content));
                        k += 1;
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    eprintln!("concurrent writers: {total} acknowledged writes in 3 s");
    assert!(total > 30, "too few writes: {total}");
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for writes in &acknowledged {
        for (rel, content) in writes {
            last.insert(rel.clone(), content.clone());
        }
    }
    for (rel, content) in &last {
        wait_visible(&nodes, rel, content.as_bytes());
    }
    wait_converged(&nodes);

    // kill -9 of a daemon: restarted on its stale mount namespace-free
    // dirs, it comes back with everything acknowledged and resyncs.
    nodes[1].kill9();
    write_when_writable(&nodes, 0, "after-kill9", b"k");
    nodes[1].start(&lab);
    wait_visible(&nodes, "after-kill9", b"k");
    wait_converged(&nodes);

    // kill -9 of node 1's corosync: its daemon keeps serving reads, refuses
    // writes, and reconnects when corosync is back.
    lab.run(&["kill", "1"]);
    wait_for("node 1 without quorum", &nodes, || {
        nodes[0].quorate() == Some(false)
    });
    assert_eq!(
        read(&nodes[0], "majority").as_deref(),
        Some(&b"written during the partition"[..])
    );
    let refused = fs::write(nodes[0].path("no-corosync"), b"x");
    assert!(
        matches!(&refused, Err(error) if error.kind() == ErrorKind::PermissionDenied),
        "{refused:?}"
    );
    write_when_writable(&nodes, 1, "while-corosync-1-down", b"c");
    lab.run(&["start", "1"]);
    lab.run(&["wait", "1", "3"]);
    write_when_writable(&nodes, 0, "corosync-back", b"b");
    wait_visible(&nodes, "while-corosync-1-down", b"c");
    wait_visible(&nodes, "corosync-back", b"b");
    wait_converged(&nodes);

    every_node_killed_at_once_keeps_what_it_acknowledged(&lab, &mut nodes);

    // Clean, bounded shutdown of every daemon.
    for node in &mut nodes {
        node.stop();
    }
    drop(nodes);
    drop(lab);
}
