//! `pmxcfs status` (text and JSON) and `pmxcfs metrics` (Prometheus text)
//! from the file system's report and the daemon's own figures.

use std::fmt::Write as _;

use pmxcfs_fsproto::report::Report;
use serde_json::{Value, json};

/// What the daemon adds to the file system's report.
pub struct DaemonFigures {
    pub pid: u32,
    pub uptime_secs: u64,
    pub ipc_connections: usize,
    pub ipc_refused: u64,
    pub rrd: pmxcfs_rrd::Stats,
    pub rrd_pending: usize,
    pub invalidations_sent: u64,
    pub now_secs: u64,
}

pub fn json(report: &Report, figures: &DaemonFigures) -> Value {
    let members: Vec<Value> = report
        .members
        .iter()
        .map(|member| {
            json!({
                "name": member.name,
                "nodeid": member.node_id,
                "online": member.online,
                "ip": member.ip,
            })
        })
        .collect();
    let groups: Vec<Value> = report
        .groups
        .iter()
        .map(|group| {
            json!({
                "group": group.name,
                "mode": group.mode,
                "epoch": group.epoch,
                "epoch_nodeid": group.epoch_node_id,
                "members": group.members,
                "synced_members": group.synced_members,
                "leader_nodeid": group.leader_node_id,
                "queued": group.queued,
                "sync_queued": group.sync_queued,
            })
        })
        .collect();
    let locks: Vec<Value> = report
        .store
        .locks
        .iter()
        .map(|(path, expires)| {
            json!({
                "path": String::from_utf8_lossy(path),
                "expires_in_secs": expires.saturating_sub(figures.now_secs),
            })
        })
        .collect();
    let rrd = &figures.rrd;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": figures.pid,
        "uptime_secs": figures.uptime_secs,
        "nodename": report.nodename,
        "mode": if report.cluster { "cluster" } else { "local" },
        "quorate": report.quorate,
        "members": members,
        "dfsm": groups,
        "requests": { "parked": report.parked, "waiting": report.waiting, "outgoing": report.outgoing },
        "store": {
            "global_version": report.global_version,
            "journal_bytes": report.store.journal_bytes,
            "records_since_checkpoint": report.store.records_since_checkpoint,
            "last_checkpoint": report.store.last_checkpoint,
            "poisoned": report.store.poisoned,
        },
        "locks": locks,
        "ipc": { "connections": figures.ipc_connections, "refused": figures.ipc_refused },
        "rrd": {
            "waiting": figures.rrd_pending,
            "submitted": rrd.submitted,
            "through_rrdcached": rrd.through_rrdcached,
            "direct": rrd.direct,
            "created": rrd.created,
            "failed": rrd.failed,
            "ignored": rrd.ignored,
            "dropped": rrd.dropped,
        },
        "invalidations_sent": figures.invalidations_sent,
    })
}

pub fn text(report: &Report, figures: &DaemonFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pmxcfs {} (pid {}, up {}), node {}, {} mode, {}",
        env!("CARGO_PKG_VERSION"),
        figures.pid,
        duration(figures.uptime_secs),
        report.nodename,
        if report.cluster { "cluster" } else { "local" },
        if report.quorate {
            "quorate"
        } else {
            "NO QUORUM"
        }
    );
    if report.cluster {
        let members: Vec<String> = report
            .members
            .iter()
            .map(|member| {
                format!(
                    "{} (id {}, {}{})",
                    member.name,
                    member.node_id,
                    if member.online { "online" } else { "offline" },
                    member
                        .ip
                        .as_deref()
                        .map(|ip| format!(", {ip}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let _ = writeln!(out, "members: {}", members.join(", "));
        for group in &report.groups {
            let _ = writeln!(
                out,
                "{}: {}, epoch {} (node {}), {} members ({} synced), leader node {}, {} queued, {} queued in sync",
                group.name,
                group.mode,
                group.epoch,
                group.epoch_node_id,
                group.members,
                group.synced_members,
                group.leader_node_id,
                group.queued,
                group.sync_queued
            );
        }
        let _ = writeln!(
            out,
            "requests: {} waiting for their DFSM result, {} for the write gate, {} to multicast",
            report.parked, report.waiting, report.outgoing
        );
    }
    let checkpoint = report.store.last_checkpoint.map_or_else(
        || "none since the start".to_owned(),
        |at| format!("{} ago", duration(figures.now_secs.saturating_sub(at))),
    );
    let _ = writeln!(
        out,
        "store: version {}, journal {} bytes ({} records since the last checkpoint: {}){}",
        report.global_version,
        report.store.journal_bytes,
        report.store.records_since_checkpoint,
        checkpoint,
        if report.store.poisoned {
            ", WRITES REFUSED after a disk error"
        } else {
            ""
        }
    );
    for (path, expires) in &report.store.locks {
        let _ = writeln!(
            out,
            "lock: {} (expires in {} s)",
            String::from_utf8_lossy(path),
            expires.saturating_sub(figures.now_secs)
        );
    }
    let _ = writeln!(
        out,
        "ipc: {} connections, {} refused since the start",
        figures.ipc_connections, figures.ipc_refused
    );
    let rrd = &figures.rrd;
    let _ = writeln!(
        out,
        "rrd: {} waiting, {} through rrdcached, {} directly, {} failed, {} ignored, {} dropped",
        figures.rrd_pending,
        rrd.through_rrdcached,
        rrd.direct,
        rrd.failed,
        rrd.ignored,
        rrd.dropped
    );
    let _ = writeln!(
        out,
        "kernel cache invalidations sent: {}",
        figures.invalidations_sent
    );
    out
}

pub fn metrics(report: &Report, figures: &DaemonFigures) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP pmxcfs_{name} {help}");
        let _ = writeln!(out, "# TYPE pmxcfs_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "pmxcfs_{name}{labels} {value}");
        }
    };
    let one = |value: f64| vec![(String::new(), value)];
    let flag = |value: bool| if value { 1.0 } else { 0.0 };
    gauge(
        "up_seconds",
        "Seconds since the daemon started.",
        "gauge",
        &one(figures.uptime_secs as f64),
    );
    gauge(
        "quorate",
        "1 if the node has quorum.",
        "gauge",
        &one(flag(report.quorate)),
    );
    gauge(
        "members_online",
        "Nodes in the status group.",
        "gauge",
        &one(report.members.iter().filter(|member| member.online).count() as f64),
    );
    let synced: Vec<(String, f64)> = report
        .groups
        .iter()
        .map(|group| {
            (
                format!("{{group=\"{}\"}}", group.name),
                flag(group.mode == "synced"),
            )
        })
        .collect();
    gauge(
        "dfsm_synced",
        "1 if the DFSM group is in sync.",
        "gauge",
        &synced,
    );
    gauge(
        "parked_requests",
        "Writes waiting for their DFSM result.",
        "gauge",
        &one(report.parked as f64),
    );
    gauge(
        "gate_waiting_requests",
        "Writes waiting for the write gate (group synchronising or without a majority).",
        "gauge",
        &one(report.waiting as f64),
    );
    gauge(
        "global_version",
        "The tree's global version.",
        "gauge",
        &one(report.global_version as f64),
    );
    gauge(
        "journal_bytes",
        "Bytes in the journal since the last checkpoint.",
        "gauge",
        &one(report.store.journal_bytes as f64),
    );
    gauge(
        "store_poisoned",
        "1 if a disk error stopped writes.",
        "gauge",
        &one(flag(report.store.poisoned)),
    );
    gauge(
        "locks",
        "Lock directories known.",
        "gauge",
        &one(report.store.locks.len() as f64),
    );
    gauge(
        "ipc_connections",
        "IPC clients connected.",
        "gauge",
        &one(figures.ipc_connections as f64),
    );
    gauge(
        "ipc_refused_total",
        "IPC connections refused.",
        "counter",
        &one(figures.ipc_refused as f64),
    );
    gauge(
        "rrd_waiting",
        "RRD updates waiting for the writer.",
        "gauge",
        &one(figures.rrd_pending as f64),
    );
    let rrd = &figures.rrd;
    let written = vec![
        (
            "{via=\"rrdcached\"}".to_owned(),
            rrd.through_rrdcached as f64,
        ),
        ("{via=\"direct\"}".to_owned(), rrd.direct as f64),
    ];
    gauge(
        "rrd_written_total",
        "RRD updates written.",
        "counter",
        &written,
    );
    gauge(
        "rrd_failed_total",
        "RRD updates neither rrdcached nor librrd took.",
        "counter",
        &one(rrd.failed as f64),
    );
    gauge(
        "rrd_dropped_total",
        "RRD updates dropped (queue full, shutdown).",
        "counter",
        &one(rrd.dropped as f64),
    );
    gauge(
        "invalidations_sent_total",
        "Kernel cache invalidations written.",
        "counter",
        &one(figures.invalidations_sent as f64),
    );
    out
}

fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}
