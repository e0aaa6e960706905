//! A CPG member for the cluster lab (tests/cluster/): joins GROUP through
//! `pmxcfs_cpg::corosync::Cpg` (so with the C daemon's name length), tracks
//! quorum, and speaks a line protocol.
//!
//! Usage: `cpg_probe GROUP`, inside a lab node (`lab.sh exec I cpg_probe G`).
//!
//! stdout, one event a line:
//!   ready node_id=N pid=P max_message=BYTES
//!   confchg group=G members=N:P,.. left=N:P/Reason,.. joined=N:P/Reason,..   (- if empty)
//!   deliver group=G from=N:P data=TEXT
//!   quorum quorate=yes|no members=N,..
//!   members N:P,..            (answer to `members`)
//!   cmap cluster_name=C config_version=V nodes=ID/NAME/RING0/VOTES,..   (answer to `cmap`)
//!   sent COUNT                (answer to `send` and `burst`, once all are accepted)
//!   gone cpg|quorum ERROR     (corosync died; exit status 3)
//! stdin, one command a line:
//!   send TEXT                 multicast TEXT (as two slices: exercises the vectored path)
//!   burst K PREFIX            multicast PREFIX-0 .. PREFIX-(K-1)
//!   members                   print the current membership
//!   cmap                      print what `Cmap` reads
//!   quit (or end of input)    leave and exit 0

use std::io::{BufRead, IoSlice};
use std::process::ExitCode;
use std::sync::mpsc::{self, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use pmxcfs_cpg::corosync::{Cmap, CorosyncError, Cpg, CpgEvent, CpgMember, Quorum, QuorumEvent};

/// As the C daemon (spec/dfsm.md §1): TryAgain is retried for about 10 s.
const SEND_RETRY_DURATION: Duration = Duration::from_secs(10);
const IDLE_SLEEP: Duration = Duration::from_millis(1);

fn list(members: &[CpgMember], with_reason: bool) -> String {
    if members.is_empty() {
        return "-".to_owned();
    }
    let items: Vec<String> = members
        .iter()
        .map(|m| match with_reason {
            true => format!("{}:{}/{:?}", m.node_id, m.pid, m.reason),
            false => format!("{}:{}", m.node_id, m.pid),
        })
        .collect();
    items.join(",")
}

fn print_cpg_event(event: CpgEvent) {
    match event {
        CpgEvent::Deliver {
            group,
            node_id,
            pid,
            payload,
        } => println!(
            "deliver group={group} from={node_id}:{pid} data={}",
            String::from_utf8_lossy(&payload)
        ),
        CpgEvent::ConfChg {
            group,
            members,
            left,
            joined,
        } => println!(
            "confchg group={group} members={} left={} joined={}",
            list(&members, false),
            list(&left, true),
            list(&joined, true)
        ),
    }
}

fn send(cpg: &mut Cpg, text: &str) -> Result<(), CorosyncError> {
    let (head, tail) = text.as_bytes().split_at(text.len() / 2);
    let started = Instant::now();
    loop {
        match cpg.mcast_agreed(&[IoSlice::new(head), IoSlice::new(tail)]) {
            Err(error) if error.is_try_again() && started.elapsed() < SEND_RETRY_DURATION => {
                // Flow control: let deliveries drain, as the C daemon does.
                cpg.dispatch()?;
                cpg.events().for_each(print_cpg_event);
                thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

fn join(cpg: &mut Cpg, group: &str) -> Result<(), CorosyncError> {
    loop {
        match cpg.join(group) {
            Err(error) if error.is_try_again() => thread::sleep(Duration::from_millis(100)),
            result => return result,
        }
    }
}

enum Step {
    Continue,
    Quit,
}

fn command(cpg: &mut Cpg, line: &str) -> Result<Step, CorosyncError> {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "send" => {
            send(cpg, rest)?;
            println!("sent 1");
        }
        "burst" => {
            let (count, prefix) = rest.split_once(' ').unwrap_or((rest, "m"));
            let count: usize = count.parse().unwrap_or(0);
            for index in 0..count {
                send(cpg, &format!("{prefix}-{index}"))?;
            }
            println!("sent {count}");
        }
        "members" => println!("members {}", list(&cpg.membership()?, false)),
        "cmap" => {
            let cmap = Cmap::new()?;
            let version = cmap
                .config_version()?
                .map_or("-".to_owned(), |v| v.to_string());
            let nodes: Vec<String> = cmap
                .nodelist()?
                .iter()
                .map(|node| {
                    let text = |value: &Option<String>| value.clone().unwrap_or("-".into());
                    let number = |value: Option<u32>| value.map_or("-".into(), |v| v.to_string());
                    let (id, votes) = (number(node.node_id), number(node.quorum_votes));
                    format!(
                        "{id}/{}/{}/{votes}",
                        text(&node.name),
                        text(&node.ring0_addr)
                    )
                })
                .collect();
            println!(
                "cmap cluster_name={} config_version={version} nodes={}",
                cmap.cluster_name()?,
                nodes.join(",")
            );
        }
        "quit" => return Ok(Step::Quit),
        "" => {}
        other => eprintln!("cpg_probe: unknown command {other:?}"),
    }
    Ok(Step::Continue)
}

fn run(group: &str) -> Result<ExitCode, (&'static str, CorosyncError)> {
    let mut cpg = Cpg::new().map_err(|e| ("cpg", e))?;
    join(&mut cpg, group).map_err(|e| ("cpg", e))?;
    let mut quorum = Quorum::new().map_err(|e| ("quorum", e))?;
    let node_id = cpg.local_node_id().map_err(|e| ("cpg", e))?;
    let max_message = cpg.max_atomic_message_size().map_err(|e| ("cpg", e))?;
    println!(
        "ready node_id={node_id} pid={} max_message={max_message}",
        std::process::id()
    );

    let (lines_tx, lines) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    loop {
        cpg.dispatch().map_err(|e| ("cpg", e))?;
        cpg.events().for_each(print_cpg_event);
        quorum.dispatch().map_err(|e| ("quorum", e))?;
        for QuorumEvent::Changed { quorate, members } in quorum.events() {
            let members: Vec<String> = members.iter().map(u32::to_string).collect();
            let quorate = if quorate { "yes" } else { "no" };
            println!("quorum quorate={quorate} members={}", members.join(","));
        }
        match lines.try_recv() {
            Ok(line) => {
                if let Step::Quit = command(&mut cpg, line.trim()).map_err(|e| ("cpg", e))? {
                    break;
                }
            }
            Err(TryRecvError::Disconnected) => break,
            // A fixed short sleep instead of poll(2): this is a test tool;
            // the daemon polls `Cpg::fd` on its reactor.
            Err(TryRecvError::Empty) => thread::sleep(IDLE_SLEEP),
        }
    }
    cpg.leave().map_err(|e| ("cpg", e))?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(group), None) = (args.next(), args.next()) else {
        eprintln!("usage: cpg_probe GROUP");
        return ExitCode::from(2);
    };
    match run(&group) {
        Ok(code) => code,
        Err((service, error)) if error.is_gone() => {
            println!("gone {service} {error}");
            ExitCode::from(3)
        }
        Err((service, error)) => {
            println!("error {service} {error}");
            eprintln!("cpg_probe: {service}: {error}");
            ExitCode::from(1)
        }
    }
}
