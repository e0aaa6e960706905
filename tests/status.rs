//! `pmxcfs status` / `metrics` through the control socket of a local-mode
//! daemon, and who may ask (root only: the socket is 0600 and the daemon
//! checks the peer's uid).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::{BIN, Daemon};
use pmxcfs_ipc::client::Client;
use pmxcfs_ipc::proto::{Op, payload};
use serde_json::Value;

fn pmxcfs(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--run-dir")
        .arg(&daemon.run_dir)
        .output()
        .expect("run pmxcfs")
}

fn status_json(daemon: &Daemon) -> Value {
    let output = pmxcfs(daemon, &["status", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn status_and_metrics_show_what_the_daemon_does() {
    let mut daemon = Daemon::started();
    std::fs::create_dir_all(daemon.path("priv/lock")).expect("lock dir parent");
    std::fs::create_dir(daemon.path("priv/lock/backup-100")).expect("lock");
    std::fs::write(daemon.path("storage.cfg"), b"dir: local\n").expect("write");
    let mut client = Client::connect(&daemon.ipc_service()).expect("ipc");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let reply = client
        .call(
            Op::SetStatus.id(),
            &payload::set_status(
                b"rrd/pve2-storage/node1/local",
                Some(format!("{stamp}:100:50").as_bytes()),
            ),
        )
        .expect("transport");
    assert_eq!(reply, Ok(Vec::new()));

    let status = status_json(&daemon);
    assert_eq!(status["mode"], "local", "{status:#}");
    assert_eq!(status["quorate"], true);
    assert_eq!(status["nodename"], daemon.nodename.as_str());
    assert_eq!(status["pid"], daemon.pid());
    assert_eq!(status["ipc"]["connections"], 1, "{status:#}");
    assert_eq!(status["rrd"]["submitted"], 1, "{status:#}");
    assert!(
        status["store"]["global_version"]
            .as_u64()
            .is_some_and(|v| v >= 4)
    );
    assert!(
        status["store"]["journal_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    assert_eq!(status["dfsm"], Value::Array(Vec::new()));
    let locks = status["locks"].as_array().expect("locks");
    assert_eq!(locks.len(), 1, "{status:#}");
    assert_eq!(locks[0]["path"], "priv/lock/backup-100");
    assert!(
        locks[0]["expires_in_secs"]
            .as_u64()
            .is_some_and(|s| s > 100 && s <= 120)
    );

    let text = pmxcfs(&daemon, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("node {}, local mode, quorate", daemon.nodename)),
        "{text}"
    );
    assert!(text.contains("ipc: 1 connections"), "{text}");

    let metrics = pmxcfs(&daemon, &["metrics"]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("# TYPE pmxcfs_quorate gauge\npmxcfs_quorate 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("pmxcfs_ipc_connections 1\n"), "{metrics}");
    drop(client);
    daemon.stop_clean();

    // No daemon: a clear error, exit 1.
    let output = pmxcfs(&daemon, &["status"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no pmxcfs answers"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `pmxcfs status` as another user.
fn as_nobody(daemon: &Daemon) -> Output {
    let mut command = Command::new(BIN);
    command.args(["status", "--run-dir"]).arg(&daemon.run_dir);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("run as nobody")
}

#[test]
fn only_root_may_ask() {
    let mut daemon = Daemon::started();
    // The run dir is root:www-data 0750; let nobody reach the socket.
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(&daemon.run_dir, open).expect("chmod run dir");
    let socket = daemon.run_dir.join("pmxcfs.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let output = as_nobody(&daemon);
    assert_eq!(output.status.code(), Some(1), "the socket's mode refuses");
    // Even through an open socket file, the daemon checks the peer.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let output = as_nobody(&daemon);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("root only"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    daemon.stop_clean();
    let log = std::fs::read_to_string(&daemon.log).expect("log");
    assert!(log.contains("connection refused (root only)"), "{log}");
}
