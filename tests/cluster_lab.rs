//! A real 3-node corosync cluster on this machine (tests/cluster/lab.sh, network
//! namespaces; needs root and the corosync packages: it fails, never skips,
//! when something is missing) driven through `pmxcfs_cpg::corosync`:
//!
//! * three `cpg_probe`s (our `Cpg`, one per node) join `pve_dcdb_v1` and all
//!   see the 3-member confchg; `Cmap` reads the lab's corosync.conf back;
//! * a member written like the C daemon (tests/cluster/cpg_cjoin.c: length
//!   strlen + 1) lands in the same group, corosync reports length 12, and
//!   `corosync-cpgtool` lists one group `pve_dcdb_v1\x00`;
//! * concurrent bursts from every member are delivered to every member in the
//!   same order (total order), each sender's in its own order;
//! * SIGKILL of one corosync: the two others see its member leave (NodeDown)
//!   and stay quorate (our `Quorum`, and `corosync-quorumtool`); the probe
//!   on the dead node sees the connection gone (`CorosyncError::is_gone`).
//!
//! Everything (processes, namespaces, /dev/shm leftovers, dirs) is torn down
//! by `lab.sh down`, also when an assertion fails (`Lab`'s `Drop`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::lab::{Lab, checked, manifest_dir};

const GROUP: &str = "pve_dcdb_v1";
const NODES: u32 = 3;
const BURST: usize = 100;
const WAIT: Duration = Duration::from_secs(20);

/// Builds `cpg_probe` (a no-op when `cargo test --workspace` built it).
fn build_probe() -> PathBuf {
    let output = checked(
        "cargo build cpg_probe",
        Command::new(env!("CARGO"))
            .current_dir(manifest_dir())
            .args(["build", "-p", "pmxcfs-cpg", "--example", "cpg_probe"])
            .arg("--message-format=json-render-diagnostics")
            .stderr(Stdio::inherit())
            .output(),
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "cpg_probe")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no cpg_probe executable")
}

/// Compiles the C-style member against Debian's libcpg.
fn build_cjoin(dir: &Path) -> PathBuf {
    let binary = dir.join("cpg_cjoin");
    checked(
        "cc cpg_cjoin.c (needs build-essential and libcpg-dev)",
        Command::new("cc")
            .args(["-O1", "-Wall", "-Werror", "-o"])
            .arg(&binary)
            .arg(manifest_dir().join("tests/cluster/cpg_cjoin.c"))
            .arg("-lcpg")
            .output(),
    );
    binary
}

/// Starts a probe-like member on `node` and waits for its `ready` line.
fn spawn(lab: &Lab, name: &str, node: u32, program: &Path, args: &[&str]) -> Member {
    let mut child = lab
        .command(&["exec", &node.to_string()])
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("{name}: cannot start: {error}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let stdin = child.stdin.take();
    let mut member = Member {
        name: name.to_owned(),
        child,
        stdin,
        lines,
        history: Vec::new(),
        cursor: 0,
        node_id: 0,
        pid: 0,
    };
    let ready = member.wait_line(|line| line.starts_with("ready "));
    let fields = fields(&ready);
    member.node_id = fields["node_id"].parse().expect("node_id");
    member.pid = fields["pid"].parse().expect("pid");
    assert_eq!(member.node_id, node, "{name}: wrong node id");
    member
}

/// `key=value` words of a probe line (the first word is its kind).
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .collect()
}

/// `N:P,N:P` (`-` for none), reasons (`/Leave`) dropped.
fn member_set(list: &str) -> BTreeSet<(u32, u32)> {
    if list == "-" {
        return BTreeSet::new();
    }
    list.split(',')
        .map(|item| {
            let item = item.split('/').next().expect("split yields one item");
            let (node, pid) = item.split_once(':').expect("N:P");
            (node.parse().expect("node id"), pid.parse().expect("pid"))
        })
        .collect()
}

/// A process in a lab node speaking the probe line protocol.
struct Member {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    history: Vec<String>,
    /// `history` up to here was consumed by `wait_line`.
    cursor: usize,
    node_id: u32,
    pid: u32,
}

impl Member {
    fn id(&self) -> (u32, u32) {
        (self.node_id, self.pid)
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").unwrap_or_else(|e| panic!("{}: write: {e}", self.name));
    }

    /// The next line (after the last one waited for) that matches; earlier
    /// lines are skipped but stay in `history`.
    fn wait_line(&mut self, matches: impl FnMut(&str) -> bool) -> String {
        let index = self.wait_line_since(self.cursor, matches);
        self.cursor = index + 1;
        self.history[index].clone()
    }

    /// The index of the first line at or after `start` that matches, reading
    /// more lines as needed.
    fn wait_line_since(&mut self, start: usize, mut matches: impl FnMut(&str) -> bool) -> usize {
        let start = start.min(self.history.len());
        if let Some(offset) = self.history[start..].iter().position(|line| matches(line)) {
            return start + offset;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.history.push(line);
                    if matches(self.history.last().expect("just pushed")) {
                        return self.history.len() - 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: expected line not seen in {WAIT:?}; got:\n{}",
                    self.name,
                    self.history.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before the expected line; got:\n{}",
                    self.name,
                    self.history.join("\n")
                ),
            }
        }
    }

    fn wait_confchg(&mut self, members: &BTreeSet<(u32, u32)>) -> String {
        self.wait_line(|line| {
            line.starts_with("confchg ") && member_set(fields(line)["members"]) == *members
        })
    }

    /// `(sender, data)` of every delivery so far, in delivery order.
    fn deliveries(&self) -> Vec<((u32, u32), String)> {
        self.history
            .iter()
            .filter(|line| line.starts_with("deliver "))
            .map(|line| {
                let fields = fields(line);
                let from = member_set(fields["from"]).pop_first().expect("sender");
                (from, fields["data"].to_owned())
            })
            .collect()
    }

    fn wait_deliveries(&mut self, count: usize) {
        let mut seen = 0;
        self.wait_line_since(0, |line| {
            seen += usize::from(line.starts_with("deliver "));
            seen >= count
        });
    }

    fn quit(&mut self) -> ExitStatus {
        self.send("quit");
        self.stdin = None;
        self.wait()
    }

    fn wait(&mut self) -> ExitStatus {
        // Keep reading so the child can never block on a full pipe.
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            self.history.push(line);
        }
        self.child.wait().expect("wait for member")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Its pid is ours until waited for: safe to signal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn timed<T>(
    timings: &mut Vec<(&'static str, Duration)>,
    what: &'static str,
    f: impl FnOnce() -> T,
) -> T {
    let started = Instant::now();
    let result = f();
    timings.push((what, started.elapsed()));
    result
}

#[test]
fn three_nodes_cpg_total_order_c_style_join_and_node_loss() {
    let test_started = Instant::now();
    assert_eq!(
        // SAFETY: getuid has no preconditions.
        unsafe { libc::getuid() },
        0,
        "the cluster lab needs root (network namespaces, mounts)"
    );
    let mut timings = Vec::new();
    let probe = timed(&mut timings, "build cpg_probe", build_probe);
    let tools = tempfile::tempdir().expect("temp dir");
    let cjoin = build_cjoin(tools.path());

    let mut lab = timed(&mut timings, "lab up (3 nodes quorate)", || {
        Lab::up(NODES, tools.path().join("lab"))
    });
    let tag = lab.tag();

    // --- three Rust members see one 3-member group ------------------------
    let mut probes: Vec<Member> = timed(&mut timings, "3 probes joined", || {
        (1..=NODES)
            .map(|node| spawn(&lab, &format!("probe{node}"), node, &probe, &[GROUP]))
            .collect()
    });
    let rust_members: BTreeSet<_> = probes.iter().map(Member::id).collect();
    timed(&mut timings, "3-member confchg everywhere", || {
        for probe in &mut probes {
            let line = probe.wait_confchg(&rust_members);
            assert_eq!(fields(&line)["group"], GROUP, "{}", probe.name);
        }
    });

    // --- cmap -----------------------------------------------------------------
    probes[1].send("cmap");
    let line = probes[1].wait_line(|line| line.starts_with("cmap "));
    let nodes: Vec<String> = (1..=NODES)
        .map(|i| format!("{i}/node{i}/10.99.0.{i}/1"))
        .collect();
    let expected = format!(
        "cmap cluster_name=lab-{tag} config_version=1 nodes={}",
        nodes.join(",")
    );
    assert_eq!(line, expected);

    // --- a C-style join (length strlen + 1) meets them ---------------------
    let mut cmember = spawn(&lab, "cpg_cjoin", 1, &cjoin, &[GROUP]);
    let mut all_members = rust_members.clone();
    all_members.insert(cmember.id());
    let line = cmember.wait_confchg(&all_members);
    assert_eq!(fields(&line)["namelen"], "12", "C member: {line}");
    for probe in &mut probes {
        probe.wait_confchg(&all_members);
    }
    let cpgtool = lab.run(&["exec", "2", "corosync-cpgtool"]);
    let groups: Vec<&str> = cpgtool
        .lines()
        .filter(|line| !line.starts_with(char::is_whitespace) && !line.starts_with("Group Name"))
        .collect();
    assert_eq!(groups, ["pve_dcdb_v1\\x00"], "corosync-cpgtool:\n{cpgtool}");
    assert_eq!(
        cpgtool.lines().count(),
        1 + 1 + all_members.len(),
        "{cpgtool}"
    );

    // --- total order --------------------------------------------------------
    let expected = probes.len() * BURST + 1;
    timed(
        &mut timings,
        "3x100 bursts + 1 delivered everywhere",
        || {
            for probe in &mut probes {
                let prefix = format!("n{}", probe.node_id);
                probe.send(&format!("burst {BURST} {prefix}"));
            }
            cmember.send("send c-hello");
            for member in probes.iter_mut().chain([&mut cmember]) {
                member.wait_deliveries(expected);
            }
        },
    );
    let reference = probes[0].deliveries();
    assert_eq!(reference.len(), expected);
    for member in probes.iter().chain([&cmember]) {
        assert_eq!(
            member.deliveries(),
            reference,
            "{} delivered another order than probe1",
            member.name
        );
    }
    for probe in &probes {
        let own: Vec<&str> = reference
            .iter()
            .filter(|(from, _)| *from == probe.id())
            .map(|(_, data)| data.as_str())
            .collect();
        let sent: Vec<String> = (0..BURST)
            .map(|i| format!("n{}-{i}", probe.node_id))
            .collect();
        assert_eq!(own, sent, "{}'s messages", probe.name);
    }
    assert!(reference.contains(&(cmember.id(), "c-hello".to_owned())));
    let switches = reference.windows(2).filter(|w| w[0].0 != w[1].0).count();
    eprintln!("cluster_lab: delivery order switched sender {switches} times");
    assert!(cmember.quit().success(), "cpg_cjoin exit");
    for probe in &mut probes {
        probe.wait_confchg(&rust_members);
    }

    // --- SIGKILL one corosync -----------------------------------------------
    let killed = probes[2].id();
    let survivors: BTreeSet<_> = probes[..2].iter().map(Member::id).collect();
    let marks: Vec<usize> = probes.iter().map(|probe| probe.history.len()).collect();
    let kill_started = Instant::now();
    lab.run(&["kill", "3"]);
    let gone = probes[2].wait_line(|line| line.starts_with("gone ") || line.starts_with("error "));
    assert!(gone.starts_with("gone "), "probe3: {gone}");
    assert_eq!(probes[2].wait().code(), Some(3), "probe3 exit status");
    for (probe, mark) in probes[..2].iter_mut().zip(marks) {
        let line = probe.wait_confchg(&survivors);
        let left = fields(&line)["left"];
        assert_eq!(member_set(left), BTreeSet::from([killed]), "{line}");
        assert!(left.ends_with("/NodeDown"), "{line}");
        // Its own notification, before or after the confchg.
        probe.wait_line_since(mark, |line| line == "quorum quorate=yes members=1,2");
    }
    timings.push((
        "SIGKILL -> leave seen, still quorate",
        kill_started.elapsed(),
    ));
    let quorumtool = lab.run(&["exec", "1", "corosync-quorumtool", "-s"]);
    assert!(
        quorumtool
            .lines()
            .any(|l| l.starts_with("Quorate:") && l.ends_with("Yes")),
        "{quorumtool}"
    );
    assert!(
        quorumtool
            .lines()
            .any(|l| l.starts_with("Total votes:") && l.ends_with(" 2")),
        "{quorumtool}"
    );
    for probe in &mut probes[..2] {
        assert!(probe.quit().success(), "{} exit", probe.name);
    }

    // --- tear-down leaves nothing -------------------------------------------
    drop(probes);
    timed(&mut timings, "lab down", || lab.down());
    let namespaces = checked(
        "ip netns list",
        Command::new("ip").args(["netns", "list"]).output(),
    );
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !namespaces.contains(&format!("lab-{tag}-")),
        "left over: {namespaces}"
    );
    assert!(!lab.dir.exists(), "lab dir left over");

    timings.push(("whole test", test_started.elapsed()));
    for (what, duration) in timings {
        eprintln!("cluster_lab: {what}: {} ms", duration.as_millis());
    }
}
