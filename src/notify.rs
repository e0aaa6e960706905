//! systemd's service notifications (sd_notify(3)) for a `Type=notify` unit,
//! spoken directly: one datagram per message to `$NOTIFY_SOCKET` (a path,
//! or `@name` for an abstract socket). Nothing happens without that
//! variable (the C daemon's `Type=forking` unit).
//!
//! READY=1 once /etc/pve is served and, in cluster mode, the tree is in
//! sync with the cluster; STATUS= with quorum and members when it changes;
//! WATCHDOG=1 at half the unit's `WatchdogSec` when systemd asks for it;
//! STOPPING=1 at shutdown. Sends never block: a message the service
//! manager's queue has no room for is sent again at the next check
//! (READY and STATUS) or dropped (keep-alives, which come again).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use pmxcfs_fsproto::Health;

/// How often the health is looked at, at most.
const CHECK_EVERY: Duration = Duration::from_millis(100);

pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    ready: bool,
    status: String,
    checked: Option<Instant>,
    /// Half of `WATCHDOG_USEC`, when systemd wants keep-alives from us.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (and `WATCHDOG_USEC`/`WATCHDOG_PID`); `None`
    /// when not run by a service manager that listens.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)
            }
            None => SocketAddr::from_pathname(&path),
        };
        let address = match address {
            Ok(address) => address,
            Err(error) => {
                tracing::warn!(%error, "NOTIFY_SOCKET unusable; no service notifications");
                return None;
            }
        };
        // Non-blocking: a datagram socket's send waits while the receiver's
        // queue is full, and the loop must never wait for the service
        // manager (a message that does not fit is sent at the next check).
        let socket = match UnixDatagram::unbound().and_then(|socket| {
            socket.set_nonblocking(true)?;
            Ok(socket)
        }) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, "no socket for service notifications");
                return None;
            }
        };
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.parse() == Ok(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(|usec| Duration::from_micros(usec / 2));
        Some(Notifier {
            socket,
            address,
            ready: false,
            status: String::new(),
            checked: None,
            watchdog,
        })
    }

    /// `true` if the datagram left.
    fn send(&self, text: &str) -> bool {
        match self.socket.send_to_addr(text.as_bytes(), &self.address) {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, "service notification not sent");
                false
            }
        }
    }

    /// READY=1 the first time the daemon is ready, STATUS= when it changed.
    /// `health` is called at most every 100 ms.
    pub fn update(&mut self, health: impl FnOnce() -> Health) {
        let now = Instant::now();
        if self
            .checked
            .is_some_and(|checked| now.duration_since(checked) < CHECK_EVERY)
        {
            return;
        }
        self.checked = Some(now);
        let health = health();
        let status = health.text();
        let becomes_ready = !self.ready && health.synced;
        if status == self.status && !becomes_ready {
            return;
        }
        let mut message = format!("STATUS={status}\n");
        if becomes_ready {
            message.push_str(&format!("READY=1\nMAINPID={}\n", std::process::id()));
        }
        if self.send(&message) {
            self.ready |= becomes_ready;
            self.status = status;
        }
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1\n");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping\n");
    }
}
