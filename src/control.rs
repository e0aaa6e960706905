//! The control socket, `<run-dir>/pmxcfs.sock` (mode 0600, and the peer
//! must be uid 0): `pmxcfs status` and `pmxcfs metrics` ask the running
//! daemon through it. One request line (`status`, `status-json`,
//! `metrics`), one answer, then the daemon closes the connection.
//!
//! Everything runs on the loop and never waits: the listening socket and a
//! connection whose request has not arrived yet are polled through the
//! reactor; answers (a few KiB) are written without blocking, and a client
//! that does not take its answer at once loses it. At most
//! [`PENDING_MAX`] connections wait for their request line; more are
//! closed with a log line.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pmxcfs_reactor::{Reactor, ReactorError, Token};

/// The socket's name in the run directory.
pub const SOCKET_NAME: &str = "pmxcfs.sock";
/// Connections that may wait for their request line at once.
pub const PENDING_MAX: usize = 8;
const TOKEN_LISTEN: Token = Token(106);
/// Tokens of pending connections: this and the next `PENDING_MAX - 1`.
const TOKEN_PENDING: u64 = 120;
/// Longest request line.
const REQUEST_MAX: usize = 64;

pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    listening: bool,
    /// A connection, what it sent so far, and whether its peer is root.
    pending: [Option<(UnixStream, Vec<u8>, bool)>; PENDING_MAX],
}

impl Control {
    /// Binds the socket (a stale one of a killed daemon is replaced).
    pub fn bind(run_dir: &Path) -> std::io::Result<Control> {
        let path = run_dir.join(SOCKET_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Control {
            listener,
            path,
            listening: false,
            pending: Default::default(),
        })
    }

    pub fn owns(token: Token) -> bool {
        token == TOKEN_LISTEN
            || (TOKEN_PENDING..TOKEN_PENDING + PENDING_MAX as u64).contains(&token.0)
    }

    /// Polls the listening socket (again) if it is not polled.
    pub fn arm(&mut self, reactor: &mut Reactor) -> Result<(), ReactorError> {
        if !self.listening {
            reactor.poll_once(self.listener.as_raw_fd(), libc::POLLIN as u32, TOKEN_LISTEN)?;
            self.listening = true;
        }
        Ok(())
    }

    /// A poll of ours completed: accept, read requests, answer them with
    /// `answer(request)` (`None` for an unknown request).
    pub fn complete(
        &mut self,
        token: Token,
        reactor: &mut Reactor,
        answer: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Result<(), ReactorError> {
        if token == TOKEN_LISTEN {
            self.listening = false;
            loop {
                match self.listener.accept() {
                    Ok((stream, _)) => {
                        // The peer's uid, asked now; refused once its request
                        // line is read (closing with unread input would reset
                        // the connection before the client reads why).
                        let root = peer_uid(&stream) == Some(0);
                        if stream.set_nonblocking(true).is_ok() {
                            self.take(stream, Vec::new(), root, reactor, answer)?;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        tracing::warn!(%error, "control socket: accept failed");
                        break;
                    }
                }
            }
            return self.arm(reactor);
        }
        let slot = (token.0 - TOKEN_PENDING) as usize;
        if let Some((stream, partial, root)) = self.pending.get_mut(slot).and_then(Option::take) {
            self.take(stream, partial, root, reactor, answer)?;
        }
        Ok(())
    }

    /// Reads what the connection has sent; answers a whole request line,
    /// parks the connection until more comes, or drops it.
    fn take(
        &mut self,
        mut stream: UnixStream,
        mut request: Vec<u8>,
        root: bool,
        reactor: &mut Reactor,
        answer: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Result<(), ReactorError> {
        let mut buffer = [0u8; REQUEST_MAX];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => request.extend_from_slice(&buffer[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Ok(()),
            }
            if request.contains(&b'\n') || request.len() > REQUEST_MAX {
                break;
            }
        }
        if let Some(end) = request.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&request[..end]).trim().to_owned();
            let text = if root {
                answer(&line).unwrap_or_else(|| format!("error: unknown request {line:?}\n"))
            } else {
                tracing::warn!(
                    uid = ?peer_uid(&stream),
                    "control socket: connection refused (root only)"
                );
                "error: root only\n".to_owned()
            };
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            if let Err(error) = stream.write_all(text.as_bytes()) {
                tracing::debug!(%error, "control socket: answer not taken");
            }
            return Ok(());
        }
        if request.len() > REQUEST_MAX {
            return Ok(());
        }
        let Some(slot) = self.pending.iter().position(Option::is_none) else {
            tracing::warn!(
                limit = PENDING_MAX,
                "control socket: too many waiting connections; one closed"
            );
            return Ok(());
        };
        reactor.poll_once(
            stream.as_raw_fd(),
            libc::POLLIN as u32,
            Token(TOKEN_PENDING + slot as u64),
        )?;
        self.pending[slot] = Some((stream, request, root));
        Ok(())
    }

    /// Removes the socket file (at shutdown).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The peer's uid (SO_PEERCRED).
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `credentials`.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut length,
        )
    };
    (result == 0).then_some(credentials.uid)
}

/// The client side: one request, the whole answer.
pub fn ask(run_dir: &Path, request: &str) -> std::io::Result<String> {
    let path = run_dir.join(SOCKET_NAME);
    let mut stream = UnixStream::connect(&path).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("no pmxcfs answers at {} ({error})", path.display()),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
