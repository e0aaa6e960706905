//! The own-delivery window (RELIABILITY.md): corosync hands a node its own
//! multicast as soon as it has forwarded the token, before the other members
//! received it. A partition in between leaves a write applied and
//! acknowledged on the sender alone. This test makes the window wide and
//! deterministic: node 3's egress goes through a slow token bucket (its
//! multicast waits in the queue for ~100 ms after its own delivery), and the
//! link is cut as soon as the write call returns. Before the DFSM's
//! own-write check (ARCHITECTURE.md "The own-delivery window") every such
//! write was lost; now the node re-sends it after the heal's resync and the
//! test requires it on every node. In the last round node 3's daemon is
//! also killed and restarted while cut off: the write kept on disk
//! (`<data dir>/own-writes`) survives that too. `PMXCFS_OWN_ROUNDS`
//! (default 3) sets the number of cuts. Needs root, FUSE, corosync and `tc` with the tbf qdisc:
//! fails, never skips.

mod common;

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::node::{Node, read, wait_converged, wait_for, wait_writable, write_when_writable};

const NODES: u32 = 3;

fn members_seen(node: &Node) -> Option<usize> {
    let members = node.members()?;
    let list = members["nodelist"].as_object()?;
    Some(list.values().filter(|n| n["online"] == 1).count())
}

#[test]
fn a_write_acknowledged_right_before_a_partition_survives_the_heal() {
    let (base, keep) = common::lab::temp_base("pmxcfs-own-");
    let mut lab = Lab::up(NODES, base.path().join("lab"));
    lab.keep = keep;
    let mut nodes: Vec<Node> = (1..=NODES).map(|i| Node::new(&lab, i)).collect();
    for node in &mut nodes {
        node.start(&lab);
    }
    wait_writable(&nodes, "hello");
    wait_converged(&nodes);
    let payload = |round: usize| {
        let mut data = format!("round {round}\n").into_bytes();
        data.resize(4096, b'.');
        data
    };
    let rounds = std::env::var("PMXCFS_OWN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    let mut lost = Vec::new();
    for round in 0..rounds {
        let rel = format!("own-{round}");
        write_when_writable(&nodes, 2, &rel, b"start");
        wait_converged(&nodes);
        // Node 3's egress: 400 kbit/s, so a 4 KiB write's frames leave ~100
        // ms after corosync queued them (and delivered the write to node 3).
        lab.run(&[
            "exec", "3", "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "400kbit",
            "burst", "1600", "latency", "2s",
        ]);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(nodes[2].path(&rel))
            .expect("open");
        let data = payload(round);
        let started = Instant::now();
        file.write_all(&data).expect("write before the cut");
        let acked = started.elapsed();
        lab.run(&["cut", "3"]);
        // Removing the queue drops what it still held.
        lab.run(&["exec", "3", "tc", "qdisc", "del", "dev", "eth0", "root"]);
        drop(file);
        eprintln!("round {round}: write acknowledged in {acked:?}, link cut");
        // The majority notices and goes on writing (its branch gets ahead).
        wait_for("nodes 1 and 2 without node 3", &nodes, || {
            members_seen(&nodes[0]) == Some(2)
        });
        if round == rounds - 1 {
            // The last round: node 3's daemon is killed while cut off (an
            // HA watchdog fences a node without quorum) and started again;
            // the write it kept on disk at the cut comes back with it.
            let kept = nodes[2].dir.join("data/own-writes");
            wait_for("node 3's kept own writes on disk", &nodes, || kept.exists());
            nodes[2].kill9();
            nodes[2].start(&lab);
            wait_for("node 3 serving again", &nodes, || {
                nodes[2].quorate().is_some()
            });
            eprintln!("round {round}: node 3 killed and restarted while cut off");
        }
        write_when_writable(&nodes, 0, &format!("majority-{round}"), b"m");
        write_when_writable(&nodes, 1, &format!("majority-{round}-b"), b"m");
        lab.run(&["heal", "3"]);
        wait_for("node 3 back", &nodes, || members_seen(&nodes[0]) == Some(3));
        wait_converged(&nodes);
        for node in &nodes {
            let now = read(node, &rel);
            if now.as_deref() != Some(&data[..]) {
                lost.push(format!(
                    "round {round}: node {} has {:?}",
                    node.index,
                    now.map(|d| String::from_utf8_lossy(&d[..d.len().min(12)]).into_owned())
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for node in &mut nodes {
        node.stop();
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:#?}");
}
