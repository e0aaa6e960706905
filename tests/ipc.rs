//! The IPC service "pve2" through libqb's own client (as PVE::IPCC uses
//! it), against a local-mode daemon: every operation's answer and errno
//! (spec/ipc.md §4), the permissions of the peer credentials (§3), and
//! hostile clients (malformed requests, storms, clients that die).
//!
//! Clients with other credentials are this test binary run again as a child
//! with `setresuid`/`setresgid` applied by the kernel before exec
//! (`ipc_child` below does the calls and prints the answers).

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{Daemon, www_data_gid, www_data_uid};
use pmxcfs_ipc::client::Client;
use pmxcfs_ipc::proto::{Op, decode_response, encode_request, payload};

fn connect(daemon: &Daemon) -> Client {
    Client::connect(&daemon.ipc_service()).expect("connect to the daemon's IPC service")
}

/// One call; `Ok(payload)` or `Err(errno)`.
fn call(client: &mut Client, op: Op, payload: &[u8]) -> Result<Vec<u8>, i32> {
    client.call(op.id(), payload).expect("IPC transport")
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("utf-8 reply")
}

fn setup_tree(daemon: &Daemon) {
    let node = &daemon.nodename;
    fs::create_dir_all(daemon.path(&format!("nodes/{node}/qemu-server"))).expect("mkdir");
    fs::create_dir_all(daemon.path(&format!("nodes/{node}/lxc"))).expect("mkdir");
    fs::write(
        daemon.path(&format!("nodes/{node}/qemu-server/100.conf")),
        "name: vm100\ncores: 2\nmemory: 512\ndescription: a \"quoted\" \\ value  \n\
         [snap]\nmemory: 4096\n",
    )
    .expect("100.conf");
    fs::write(
        daemon.path(&format!("nodes/{node}/lxc/200.conf")),
        "hostname: ct200\nmemory: 256",
    )
    .expect("200.conf");
    fs::create_dir_all(daemon.path("priv")).expect("priv");
    fs::write(
        daemon.path("priv/token.cfg"),
        "root@pam!a secret-a\nuser@pve!b secret-b",
    )
    .expect("token.cfg");
    fs::write(daemon.path("storage.cfg"), "dir: local\n").expect("storage.cfg");
}

#[test]
fn every_operation_answers_as_the_c_daemon() {
    let mut daemon = Daemon::started();
    setup_tree(&daemon);
    let node = daemon.nodename.clone();
    let mut client = connect(&daemon);

    // 1, 2, 3: the virtual files' texts.
    let version = text(call(&mut client, Op::GetFsVersion, b"").expect("version"));
    assert!(version.starts_with("{\n\"starttime\": "), "{version}");
    assert!(version.contains("\"storage.cfg\": "), "{version}");
    assert!(version.ends_with(&format!("\"kvstore\": {{\n\"{node}\": {{\n}}\n}}\n}}\n")));
    assert_eq!(
        version,
        fs::read_to_string(daemon.path(".version")).expect(".version"),
        "op 1 is .version"
    );
    assert_eq!(
        text(call(&mut client, Op::GetClusterInfo, b"").expect("members")),
        format!("{{\n\"nodename\": \"{node}\",\n\"version\": 0\n}}\n")
    );
    let vmlist = text(call(&mut client, Op::GetGuestList, b"").expect("vmlist"));
    assert!(vmlist.contains(&format!(
        "\"100\": {{ \"node\": \"{node}\", \"type\": \"qemu\""
    )));
    assert!(vmlist.contains(&format!(
        "\"200\": {{ \"node\": \"{node}\", \"type\": \"lxc\""
    )));
    // Header-only requests take no payload.
    assert_eq!(call(&mut client, Op::GetFsVersion, b"x"), Err(libc::EINVAL));

    // 4, 5: the node's key/value table.
    assert_eq!(
        call(
            &mut client,
            Op::SetStatus,
            &payload::set_status(b"kv/a", Some(b"one"))
        ),
        Ok(Vec::new())
    );
    assert_eq!(
        call(
            &mut client,
            Op::GetStatus,
            &payload::get_status(b"kv/a", b"")
        ),
        Ok(b"one\0".to_vec())
    );
    assert_eq!(
        call(
            &mut client,
            Op::GetStatus,
            &payload::get_status(b"kv/a", node.as_bytes())
        ),
        Ok(b"one\0".to_vec())
    );
    assert_eq!(
        call(
            &mut client,
            Op::GetStatus,
            &payload::get_status(b"kv/a", b"othernode")
        ),
        Err(libc::ENOENT)
    );
    assert_eq!(
        call(
            &mut client,
            Op::GetStatus,
            &payload::get_status(b"kv/none", b"")
        ),
        Err(libc::ENOENT)
    );
    call(
        &mut client,
        Op::SetStatus,
        &payload::set_status(b"kv/a", Some(b"two")),
    )
    .expect("set");
    let version = text(call(&mut client, Op::GetFsVersion, b"").expect("version"));
    assert!(
        version.ends_with(&format!(
            "\"kvstore\": {{\n\"{node}\": {{\n\"kv/a\": 1}}\n}}\n}}\n"
        )),
        "a rewritten key has version 1: {version}"
    );
    // An empty value removes the key.
    call(
        &mut client,
        Op::SetStatus,
        &payload::set_status(b"kv/a", None),
    )
    .expect("remove");
    assert_eq!(
        call(
            &mut client,
            Op::GetStatus,
            &payload::get_status(b"kv/a", b"")
        ),
        Err(libc::ENOENT)
    );
    // 32 KiB is the limit (with the NUL Perl adds).
    assert_eq!(
        call(
            &mut client,
            Op::SetStatus,
            &payload::set_status(b"kv/big", Some(&[b'x'; 32767]))
        ),
        Ok(Vec::new())
    );
    assert_eq!(
        call(
            &mut client,
            Op::SetStatus,
            &payload::set_status(b"kv/big", Some(&[b'x'; 32768]))
        ),
        Err(libc::EFBIG)
    );
    // RRD values: kept for the dump (with its trailing NUL), even for keys
    // no file would be written for.
    call(
        &mut client,
        Op::SetStatus,
        &payload::set_status(format!("rrd/pve2-node/{node}").as_bytes(), Some(b"1:2:3")),
    )
    .expect("rrd");
    call(
        &mut client,
        Op::SetStatus,
        &payload::set_status(b"rrd/odd", Some(b"x")),
    )
    .expect("rrd");
    assert_eq!(
        call(
            &mut client,
            Op::SetStatus,
            &payload::set_status(b"rrd/empty", None)
        ),
        Err(libc::ENOMEM),
        "an RRD value must not be empty"
    );
    let dump = call(&mut client, Op::GetRrdDump, b"").expect("rrd dump");
    assert_eq!(
        dump,
        format!("odd:x\npve2-node/{node}:1:2:3\n\0").into_bytes()
    );
    assert_eq!(
        fs::read(daemon.path(".rrd")).expect(".rrd"),
        format!("odd:x\npve2-node/{node}:1:2:3\n").into_bytes(),
        ".rrd shows the dump without its NUL"
    );
    // nodeip is the daemon's own key: .members of a local node has no IP.
    call(
        &mut client,
        Op::SetStatus,
        &payload::set_status(b"nodeip", Some(b"192.0.2.9")),
    )
    .expect("nodeip");
    assert!(
        text(call(&mut client, Op::GetClusterInfo, b"").expect("members"))
            .contains("\"version\": 1"),
        "a changed IP moves the cluster info version"
    );

    // 6: tree files, not the plugin links, no directories.
    fs::write(daemon.path("empty.cfg"), "").expect("empty");
    let token_cfg: &[u8] = b"root@pam!a secret-a\nuser@pve!b secret-b";
    type Case<'a> = (&'a [u8], Result<&'a [u8], i32>);
    let configs: [Case<'_>; 6] = [
        (b"storage.cfg", Ok(b"dir: local\n")),
        (b"/storage.cfg", Ok(b"dir: local\n")),
        (b"local/qemu-server/100.conf", Err(libc::ENOENT)),
        (b"nodes", Err(libc::ENOENT)),
        (b"priv/token.cfg", Ok(token_cfg)),
        (b"empty.cfg", Ok(b"")),
    ];
    for (path, expected) in configs {
        assert_eq!(
            call(&mut client, Op::GetConfig, &payload::get_config(path)),
            expected.map(<[u8]>::to_vec),
            "GET_CONFIG {}",
            String::from_utf8_lossy(path)
        );
    }

    // 7, 8: the cluster log, newest first, filtered by user.
    call(
        &mut client,
        Op::LogClusterMsg,
        &payload::log_cluster_msg(5, b"root@pam", b"tagA", b"first message"),
    )
    .expect("log");
    call(
        &mut client,
        Op::LogClusterMsg,
        &payload::log_cluster_msg(6, b"user@pve", b"tagB", b"second message"),
    )
    .expect("log");
    call(
        &mut client,
        Op::LogClusterMsg,
        &payload::log_cluster_msg(9, b"root@pam", b"tagC", b"priority 9 makes no entry"),
    )
    .expect("log");
    let all = text(
        call(
            &mut client,
            Op::GetClusterLog,
            &payload::get_cluster_log(0, b""),
        )
        .expect("log"),
    );
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines[0], "{");
    assert_eq!(lines[1], "\"data\": [");
    assert!(lines[2].contains("\"msg\": \"second message\""), "{all}");
    assert!(lines[3].contains("\"msg\": \"first message\""), "{all}");
    assert!(
        lines[4].contains("\"msg\": \"starting cluster log\""),
        "{all}"
    );
    assert!(!all.contains("priority 9"), "{all}");
    assert!(
        lines[2].contains(&format!("\"pri\": 6, \"tag\": \"tagB\", \"pid\": {}, \"node\": \"{node}\", \"user\": \"user@pve\"", std::process::id())),
        "the client's pid and the local node: {all}"
    );
    let root = text(
        call(
            &mut client,
            Op::GetClusterLog,
            &payload::get_cluster_log(10, b"root@pam"),
        )
        .expect("log"),
    );
    assert!(
        root.contains("first message") && !root.contains("second message"),
        "{root}"
    );
    let one = text(
        call(
            &mut client,
            Op::GetClusterLog,
            &payload::get_cluster_log(1, b""),
        )
        .expect("log"),
    );
    assert_eq!(one.lines().count(), 5, "one entry: {one}");
    assert_eq!(
        fs::read_to_string(daemon.path(".clusterlog")).expect(".clusterlog"),
        all,
        ".clusterlog is the same dump"
    );

    // 11, 13: guest config properties (before the first section only; the
    // last occurrence wins; only \ and " escaped).
    assert_eq!(
        text(
            call(
                &mut client,
                Op::GetGuestConfigProperty,
                &payload::guest_config_property(0, b"memory")
            )
            .expect("prop")
        ),
        "{\n\"100\":{\"memory\": \"512\"},\n\"200\":{\"memory\": \"256\"}\n}\n"
    );
    assert_eq!(
        text(
            call(
                &mut client,
                Op::GetGuestConfigProperty,
                &payload::guest_config_property(100, b"description")
            )
            .expect("prop")
        ),
        "{\n\"100\":{\"description\": \"a \\\"quoted\\\" \\\\ value\"}\n}\n"
    );
    assert_eq!(
        text(
            call(
                &mut client,
                Op::GetGuestConfigProperty,
                &payload::guest_config_property(0, b"nosuch")
            )
            .expect("prop")
        ),
        "{\n\n}\n"
    );
    assert_eq!(
        call(
            &mut client,
            Op::GetGuestConfigProperty,
            &payload::guest_config_property(99, b"name")
        ),
        Err(libc::EINVAL)
    );
    assert_eq!(
        call(
            &mut client,
            Op::GetGuestConfigProperty,
            &payload::guest_config_property(101, b"name")
        ),
        Err(libc::ENOENT)
    );
    assert_eq!(
        text(
            call(
                &mut client,
                Op::GetGuestConfigProperties,
                &payload::guest_config_properties(0, &[b"name", b"hostname", b"cores"])
            )
            .expect("props")
        ),
        "{\n\"100\":{\"name\": \"vm100\",\"cores\": \"2\"},\n\"200\":{\"hostname\": \"ct200\"}\n}\n"
    );
    assert_eq!(
        call(
            &mut client,
            Op::GetGuestConfigProperties,
            &payload::guest_config_properties(0, &[b"Name"])
        ),
        Err(libc::EINVAL),
        "property names start with a-z"
    );
    assert_eq!(
        call(
            &mut client,
            Op::GetGuestConfigProperties,
            &payload::guest_config_properties(0, &[])
        ),
        Err(libc::EINVAL)
    );

    // 12: tokens, line by line.
    assert_eq!(
        call(
            &mut client,
            Op::VerifyToken,
            &payload::verify_token(b"root@pam!a secret-a")
        ),
        Ok(Vec::new())
    );
    assert_eq!(
        call(
            &mut client,
            Op::VerifyToken,
            &payload::verify_token(b"user@pve!b secret-b")
        ),
        Ok(Vec::new())
    );
    assert_eq!(
        call(
            &mut client,
            Op::VerifyToken,
            &payload::verify_token(b"root@pam!a secret-b")
        ),
        Err(libc::ENOENT)
    );
    assert_eq!(
        call(
            &mut client,
            Op::VerifyToken,
            &payload::verify_token(b"root@pam!a secret-a\nx")
        ),
        Err(libc::EINVAL)
    );
    assert_eq!(
        call(&mut client, Op::VerifyToken, &payload::verify_token(b"")),
        Err(libc::EINVAL)
    );

    // Unknown ids.
    for id in [0, 9, 14, 99, i32::MAX, -1, -2, i32::MIN] {
        assert_eq!(
            client.call(id, b"").expect("transport"),
            Err(libc::ECHRNG),
            "id {id}"
        );
    }
    drop(client);
    daemon.stop_clean();
}

#[test]
fn malformed_requests_get_einval_and_nothing_else_happens() {
    let mut daemon = Daemon::started();
    setup_tree(&daemon);
    let mut client = connect(&daemon);
    let header = |id: i32, size: i32| {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&size.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes
    };
    let errno_of = |reply: Vec<u8>| {
        let (header, payload) = decode_response(&reply).expect("a whole response header");
        assert!(payload.is_empty() || header.error == 0);
        header.error
    };
    let mut cases: Vec<(String, Vec<u8>, i32)> = Vec::new();
    // Shorter than a header, each first on a fresh connection (libqb reads
    // the missing header bytes from the ring, zero there, as C does).
    for length in [1usize, 8, 15] {
        let mut bytes = header(Op::GetConfig.id(), length as i32);
        bytes.truncate(length);
        let mut fresh = connect(&daemon);
        let reply = fresh.send_raw(&bytes).expect("short message");
        assert_eq!(errno_of(reply), -libc::EINVAL, "{length}-byte message");
    }
    // A size field that disagrees with the bytes received. libqb hands the
    // server the header's size, not the bytes received: sizes inside the
    // connection's 1 MiB buffer read what C reads (20: a 4-byte path;
    // 100: the path plus stale bytes after its NUL), all others are
    // refused, including the values that crash the C daemon (op 6 size
    // 2^31-1, op 8 size -2^31).
    for (op, size, expected) in [
        (Op::GetConfig, 0, -libc::EINVAL),
        (Op::GetConfig, -1, -libc::EINVAL),
        (Op::GetConfig, 8, -libc::EINVAL),
        (Op::GetConfig, 15, -libc::EINVAL),
        (Op::GetConfig, 20, -libc::ENOENT),
        (Op::GetConfig, 100, 0),
        (Op::GetConfig, i32::MAX, -libc::EINVAL),
        (Op::GetClusterLog, i32::MIN, -libc::EINVAL),
        (Op::GetGuestConfigProperty, i32::MAX, -libc::EINVAL),
        (Op::SetStatus, 2_000_000, -libc::EINVAL),
        (Op::LogClusterMsg, i32::MAX, -libc::EINVAL),
        (Op::VerifyToken, 1024 * 1024 + 1, -libc::EINVAL),
    ] {
        let mut bytes = header(op.id(), size);
        bytes.extend_from_slice(b"storage.cfg\0aaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        cases.push((format!("{op:?} size {size}"), bytes, expected));
    }
    // Truncated payloads.
    for (op, payload) in [
        (Op::SetStatus, vec![b'k'; 100]),
        (Op::GetStatus, payload::set_status(b"kv/a", None)),
        (Op::GetConfig, Vec::new()),
        (Op::LogClusterMsg, vec![6, 5, 4]),
        (
            Op::LogClusterMsg,
            vec![6, 5, 4, b'r', b'o', b'o', b't', 0, b't', b'a', b'g', 0],
        ),
        (Op::GetClusterLog, vec![0; 16]),
        (Op::GetGuestConfigProperty, vec![0; 4]),
        (Op::GetGuestConfigProperties, vec![0; 5]),
        (Op::VerifyToken, Vec::new()),
    ] {
        cases.push((
            format!("{op:?} truncated"),
            encode_request(op.id(), &payload),
            -libc::EINVAL,
        ));
    }
    // Missing NULs.
    cases.push((
        "log without NULs".into(),
        encode_request(
            Op::LogClusterMsg.id(),
            &[
                6, 5, 4, b'r', b'o', b'o', b't', b'x', b't', b'a', b'g', b'x', b'm',
            ],
        ),
        -libc::EINVAL,
    ));
    cases.push((
        "token with embedded NUL".into(),
        encode_request(Op::VerifyToken.id(), b"root@pam!a\0secret-a\0"),
        -libc::EINVAL,
    ));
    for (what, bytes, expected) in &cases {
        let reply = client
            .send_raw(bytes)
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(errno_of(reply), *expected, "{what}");
        // The connection stays usable.
        assert_eq!(
            call(
                &mut client,
                Op::GetConfig,
                &payload::get_config(b"storage.cfg")
            ),
            Ok(b"dir: local\n".to_vec()),
            "after {what}"
        );
    }
    // Nothing malformed reached the tree or the log.
    let log = fs::read_to_string(daemon.path(".clusterlog")).expect(".clusterlog");
    assert_eq!(log.matches("\"uid\"").count(), 1, "{log}");
    drop(client);

    // Buffers: a client may ask for up to 16 MiB a connection, not more.
    let mut big = Client::connect_with_max_msg_size(&daemon.ipc_service(), 16 << 20)
        .expect("a 16 MiB buffer is served");
    let reply = call(
        &mut big,
        Op::GetConfig,
        &payload::get_config(b"storage.cfg"),
    );
    assert_eq!(reply, Ok(b"dir: local\n".to_vec()));
    drop(big);
    assert!(
        Client::connect_with_max_msg_size(&daemon.ipc_service(), (16 << 20) + 1).is_err(),
        "a larger buffer is refused"
    );
    daemon.stop_clean();
}

/// What a child client with other credentials saw; see `ipc_child`.
fn as_user(daemon: &Daemon, uid: u32, gid: u32) -> String {
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "ipc_child", "--nocapture", "--test-threads=1"])
        .env("PMXCFS_IPC_CHILD", daemon.ipc_service())
        .uid(uid)
        .gid(gid)
        .output()
        .expect("spawn child client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once("IPC-CHILD ").map(|(_, rest)| rest))
        .collect();
    assert!(
        !lines.is_empty(),
        "child printed nothing: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    lines.join("\n")
}

/// The child side of `as_user`: connects with its credentials and prints one
/// line per call (`IPC-CHILD <what> <errno or ok>`). Does nothing in a normal
/// test run.
#[test]
fn ipc_child() {
    let Ok(service) = std::env::var("PMXCFS_IPC_CHILD") else {
        return;
    };
    let mut client = match Client::connect(&service) {
        Ok(client) => client,
        Err(error) => {
            println!(
                "IPC-CHILD connect refused {}",
                error.raw_os_error().unwrap_or(0)
            );
            return;
        }
    };
    println!("IPC-CHILD connect ok");
    let mut show = |what: &str, op: Op, payload: Vec<u8>| {
        let answer = match client.call(op.id(), &payload) {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(errno)) => format!("errno {errno}"),
            Err(error) => format!("transport {error}"),
        };
        println!("IPC-CHILD {what} {answer}");
    };
    show("version", Op::GetFsVersion, Vec::new());
    show(
        "get-config",
        Op::GetConfig,
        payload::get_config(b"storage.cfg"),
    );
    show(
        "get-config-private",
        Op::GetConfig,
        payload::get_config(b"priv/token.cfg"),
    );
    show(
        "set-status",
        Op::SetStatus,
        payload::set_status(b"kv/child", Some(b"1")),
    );
    show(
        "log",
        Op::LogClusterMsg,
        payload::log_cluster_msg(6, b"child", b"t", b"from child"),
    );
    show(
        "get-log",
        Op::GetClusterLog,
        payload::get_cluster_log(0, b""),
    );
    show(
        "verify-token",
        Op::VerifyToken,
        payload::verify_token(b"root@pam!a secret-a"),
    );
    show(
        "props",
        Op::GetGuestConfigProperty,
        payload::guest_config_property(0, b"memory"),
    );
}

#[test]
fn permissions_follow_the_peer_credentials() {
    let mut daemon = Daemon::started();
    setup_tree(&daemon);
    let www = www_data_gid();
    let www_uid = www_data_uid();
    let read_write = "connect ok\nversion ok\nget-config ok\nget-config-private ok\nset-status ok\n\
                      log ok\nget-log ok\nverify-token ok\nprops ok";
    let read_only = format!(
        "connect ok\nversion ok\nget-config ok\nget-config-private errno {}\nset-status errno {}\n\
         log errno {}\nget-log ok\nverify-token ok\nprops ok",
        libc::EPERM,
        libc::EPERM,
        libc::EPERM
    );
    assert_eq!(as_user(&daemon, 0, 0), read_write, "root");
    for (uid, gid) in [(0, www), (www_uid, www), (65534, www)] {
        assert_eq!(as_user(&daemon, uid, gid), read_only, "{uid}:{gid}");
    }
    for (uid, gid) in [(65534, 65534), (0, 65534), (www_uid, 0), (1000, 1000)] {
        let seen = as_user(&daemon, uid, gid);
        assert!(seen.starts_with("connect refused"), "{uid}:{gid}: {seen}");
    }
    let log = fs::read_to_string(&daemon.log).expect("daemon log");
    assert!(
        log.contains("connection from bad user 65534! - rejected"),
        "{log}"
    );
    // Only root's entry is in the log.
    let clusterlog = fs::read_to_string(daemon.path(".clusterlog")).expect(".clusterlog");
    assert_eq!(clusterlog.matches("from child").count(), 1, "{clusterlog}");
    daemon.stop_clean();
}

/// Resident memory and open fds of a process.
fn rss_and_fds(pid: i32) -> (u64, usize) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    (rss, fds)
}

#[test]
fn storms_and_dying_clients_leave_the_daemon_as_it_was() {
    let mut daemon = Daemon::started();
    setup_tree(&daemon);
    let pid = daemon.pid();
    // Warm up (first allocations, libqb's first connection).
    for _ in 0..20 {
        let mut client = connect(&daemon);
        call(&mut client, Op::GetFsVersion, b"").expect("version");
    }
    let (rss_before, fds_before) = rss_and_fds(pid);

    // 2,000 connects and disconnects, half of them with a request.
    let start = Instant::now();
    for round in 0..2000 {
        let mut client = connect(&daemon);
        if round % 2 == 0 {
            call(
                &mut client,
                Op::GetConfig,
                &payload::get_config(b"storage.cfg"),
            )
            .expect("config");
        }
    }
    let storm = start.elapsed();

    // 200 connections held open at once, each answered.
    let mut held: Vec<Client> = (0..200).map(|_| connect(&daemon)).collect();
    for client in &mut held {
        call(client, Op::GetFsVersion, b"").expect("version");
    }
    drop(held);

    // Clients killed while their request is being sent or answered: child
    // processes that loop on requests and are SIGKILLed.
    for _ in 0..10 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "ipc_child_loop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PMXCFS_IPC_CHILD", daemon.ipc_service())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        thread::sleep(Duration::from_millis(30));
        child.kill().expect("kill child");
        child.wait().expect("reap child");
    }

    // The daemon serves the next good request...
    let mut client = connect(&daemon);
    assert_eq!(
        call(
            &mut client,
            Op::GetConfig,
            &payload::get_config(b"storage.cfg")
        ),
        Ok(b"dir: local\n".to_vec())
    );
    drop(client);
    // ...and holds no more memory or fds than before (libqb frees a dead
    // client's connection once it notices; give it a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut rss_after, mut fds_after) = rss_and_fds(pid);
    while fds_after > fds_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        (rss_after, fds_after) = rss_and_fds(pid);
    }
    eprintln!(
        "2,000 connects in {storm:?}; RSS {rss_before} kB → {rss_after} kB, fds {fds_before} → {fds_after}"
    );
    assert!(
        fds_after <= fds_before,
        "fds leaked: {fds_before} → {fds_after}"
    );
    assert!(
        rss_after < rss_before + 4 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    daemon.stop_clean();
}

/// A client that sends requests until killed (`storms_and_dying_clients…`).
#[test]
fn ipc_child_loop() {
    let Ok(service) = std::env::var("PMXCFS_IPC_CHILD") else {
        return;
    };
    let Ok(mut client) = Client::connect(&service) else {
        return;
    };
    let big = payload::set_status(b"kv/loop", Some(&[b'x'; 30_000]));
    loop {
        let _ = client.call(Op::SetStatus.id(), &big);
        let _ = client.call(Op::GetFsVersion.id(), b"");
    }
}

#[test]
fn replies_larger_than_the_client_buffer_fail_with_enobufs_and_the_daemon_goes_on() {
    let mut daemon = Daemon::started();
    setup_tree(&daemon);
    // The reply is 24 header bytes + the file: 1 MiB − 24 fits, − 23 not.
    let fits = vec![b'a'; 1024 * 1024 - 24];
    let too_big = vec![b'b'; 1024 * 1024 - 23];
    fs::write(daemon.path("fits.bin"), &fits).expect("fits");
    fs::write(daemon.path("too-big.bin"), &too_big).expect("too big");
    let mut client = connect(&daemon);
    assert_eq!(
        call(
            &mut client,
            Op::GetConfig,
            &payload::get_config(b"fits.bin")
        ),
        Ok(fits)
    );
    let error = client
        .call(Op::GetConfig.id(), &payload::get_config(b"too-big.bin"))
        .expect_err("a reply over the buffer is a transport error");
    assert_eq!(error.raw_os_error(), Some(libc::ENOBUFS), "{error}");
    // PVE::IPCC drops the connection after a transport error and retries on
    // a new one (the oversized reply still sits in the old one's ring): the
    // daemon serves the new connection, and the others it has.
    let mut other = connect(&daemon);
    drop(client);
    let mut client = connect(&daemon);
    assert_eq!(
        call(
            &mut client,
            Op::GetConfig,
            &payload::get_config(b"storage.cfg")
        ),
        Ok(b"dir: local\n".to_vec()),
        "a new connection is served"
    );
    assert_eq!(
        call(&mut other, Op::GetConfig, &payload::get_config(b"fits.bin")).map(|data| data.len()),
        Ok(1024 * 1024 - 24)
    );
    daemon.stop_clean();
}

#[test]
fn the_restart_flag_lets_clients_wait_for_a_restart() {
    let mut daemon = Daemon::started();
    let flag = daemon.run_dir.join("cfs-restart-flag");
    assert!(!flag.exists(), "no flag while serving");
    daemon.stop_clean();
    assert!(flag.exists(), "a stop leaves the restart flag");
    assert!(
        Client::connect(&daemon.ipc_service()).is_err(),
        "nothing listens after the stop"
    );
    daemon.start();
    assert!(!flag.exists(), "a start removes the flag once IPC listens");
    let mut client = connect(&daemon);
    call(&mut client, Op::GetFsVersion, b"").expect("version");
    drop(client);
    daemon.stop_clean();
}
