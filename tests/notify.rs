//! systemd notifications of a `Type=notify` unit (sd_notify protocol): the
//! test listens on a NOTIFY_SOCKET as systemd would.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::Daemon;

/// Datagrams until `until` holds for one of them, or the deadline.
fn messages_until(socket: &UnixDatagram, until: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(length) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            let done = until(&text);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("no such notification; got {seen:?}");
}

#[test]
fn ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut daemon = Daemon::new()
        .env("NOTIFY_SOCKET", path.to_str().expect("utf-8"))
        .env("WATCHDOG_USEC", "200000");
    daemon.start();
    let pid = daemon.pid();
    let seen = messages_until(&socket, |text| text.contains("READY=1"));
    let ready = seen.last().expect("READY");
    assert!(ready.contains("STATUS=local mode\n"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={pid}\n")), "{ready}");
    // Keep-alives at half of WATCHDOG_USEC (100 ms): several in 600 ms.
    let start = Instant::now();
    let mut keepalives = 0;
    let mut buffer = [0u8; 4096];
    while start.elapsed() < Duration::from_millis(600) {
        if let Ok(length) = socket.recv(&mut buffer) {
            keepalives += usize::from(&buffer[..length] == b"WATCHDOG=1\n");
        }
    }
    assert!(
        (3..=8).contains(&keepalives),
        "{keepalives} keep-alives in 600 ms"
    );
    daemon.stop_clean();
    let seen = messages_until(&socket, |text| text.contains("STOPPING=1"));
    assert!(
        !seen.iter().any(|text| text.contains("READY=1")),
        "{seen:?}"
    );
}

/// A service manager that does not read: the daemon goes on serving (the
/// first version blocked its loop in sendto once the socket's queue was
/// full), and READY still arrives when the manager reads again.
#[test]
fn a_manager_that_does_not_read_blocks_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    // Fill the socket's queue before the daemon starts.
    let filler = UnixDatagram::unbound().expect("filler");
    filler.set_nonblocking(true).expect("nonblocking");
    while filler.send_to(b"X=1\n", &path).is_ok() {}
    let mut daemon = Daemon::new()
        .env("NOTIFY_SOCKET", path.to_str().expect("utf-8"))
        .env("WATCHDOG_USEC", "20000");
    daemon.start();
    for round in 0..50 {
        std::fs::write(daemon.path(&format!("f{round}")), b"x").expect("write");
        std::thread::sleep(Duration::from_millis(5));
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let seen = messages_until(&socket, |text| text.contains("READY=1"));
    assert!(
        seen.last()
            .is_some_and(|text| text.contains("STATUS=local mode"))
    );
    daemon.stop_clean();
}
