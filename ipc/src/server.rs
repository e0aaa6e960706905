//! libqb's IPC server on the daemon's reactor.
//!
//! libqb does the transport (the connect handshake over an abstract unix
//! socket, the shared-memory rings, peer credentials); it asks its host loop
//! to watch fds and to run deferred jobs through `qb_ipcs_poll_handlers`.
//! Here those calls land in a per-thread table of watches; the daemon's
//! loop turns each watch into one io_uring poll ([`Server::arm`]), and hands
//! the completion back ([`Server::complete`]), which calls libqb's dispatch
//! function on the loop thread. libqb never blocks and has no thread or main
//! loop of its own.
//!
//! A request is decoded ([`crate::proto::decode`]), answered by the
//! daemon's [`Handler`] and the reply sent at once: no operation of the
//! service waits for the cluster (status updates and log entries are
//! multicast without waiting, as in the C daemon).
//!
//! Bounds: at most [`CONNECTIONS_MAX`] connections (more are refused with a
//! log line); each connection's buffers are at least [`BUFFER_BYTES`] (the
//! size the Perl client asks for) and at most [`BUFFER_MAX_BYTES`] (a client
//! asking for more is refused); jobs are bounded by the connections (libqb
//! queues at most one per connection).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, c_int, c_void};
use std::time::{Duration, Instant};

use pmxcfs_reactor::{Completion, OperationId, Reactor, ReactorError, Token};

use crate::ffi;
use crate::proto::{self, Request};

/// libqb buffer size per connection (8192 × 128, what PVE::IPCC asks).
/// libqb uses the larger of this and what the client asks for.
pub const BUFFER_BYTES: u32 = 8192 * 128;
/// The largest buffer a client may ask for (libqb allocates it per
/// connection, in the daemon and in shared memory); larger asks are refused.
pub const BUFFER_MAX_BYTES: u32 = 16 * BUFFER_BYTES;
/// Connections served at once; a connect beyond is refused.
pub const CONNECTIONS_MAX: usize = 512;
/// How long the daemon's start waits for the service name to become free.
pub const NAME_WAIT: Duration = Duration::from_secs(10);
const BIND_RETRY_EVERY: Duration = Duration::from_millis(50);
/// Reactor tokens at and above this belong to the IPC server.
pub const TOKEN_BASE: u64 = 1 << 48;

/// A connected client, as the kernel reported it at connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// www-data connections may only read (spec ipc.md §3).
    pub read_only: bool,
}

/// The daemon's answers. `out` is empty on entry; its content is the reply
/// payload on `Ok`. `Err` is a positive errno.
pub trait Handler {
    fn handle(
        &mut self,
        client: &Client,
        request: Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), i32>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("qb_ipcs_create({name}): {source}")]
    Create {
        name: String,
        source: std::io::Error,
    },
    #[error("qb_ipcs_run({name}): {source}")]
    Run {
        name: String,
        source: std::io::Error,
    },
    #[error("service name contains NUL")]
    Name,
    #[error("an IPC server already runs on this thread")]
    Busy,
    #[error(transparent)]
    Reactor(#[from] ReactorError),
}

/// One fd libqb asked us to watch.
struct Watch {
    events: i32,
    data: *mut c_void,
    dispatch: ffi::DispatchFn,
    /// The poll in flight for it: its key (token offset) and operation.
    armed: Option<(u64, OperationId)>,
    /// Events or callback changed while a poll was in flight.
    stale: bool,
}

/// What libqb registered on this thread.
#[derive(Default)]
struct Watches {
    by_fd: HashMap<i32, Watch>,
    /// Key of an armed poll → its fd.
    keys: HashMap<u64, i32>,
    next_key: u64,
    /// Polls of removed or changed watches still in the kernel.
    to_cancel: Vec<OperationId>,
    jobs: VecDeque<(ffi::JobFn, usize)>,
    active: bool,
}

/// Server-wide state the libqb callbacks need (they get no context of
/// ours besides the connection).
struct Shared {
    www_data_gid: u32,
    connections: usize,
    refused: u64,
    /// The handler of the dispatch in progress (set only while the loop is
    /// inside [`Server::complete`] / [`Server::run_jobs`]).
    handler: Option<*mut (dyn Handler + 'static)>,
    /// Reply buffer, reused.
    out: Vec<u8>,
    reply: Vec<u8>,
}

thread_local! {
    static WATCHES: RefCell<Watches> = RefCell::new(Watches::default());
    static SHARED: RefCell<Option<Shared>> = const { RefCell::new(None) };
    static IN_DISPATCH: Cell<bool> = const { Cell::new(false) };
}

/// The "pve2" service (or a test's own name) on this thread.
pub struct Server {
    service: *mut ffi::QbIpcsService,
    name: String,
}

impl Server {
    /// Creates the service and starts listening; libqb's first watch (the
    /// listening socket) is armed by the next [`Server::arm`]. While the
    /// name is bound by another socket, retries for up to `name_wait`.
    pub fn start(
        name: &str,
        www_data_gid: u32,
        name_wait: Duration,
    ) -> Result<Server, ServerError> {
        if WATCHES.with(|watches| watches.borrow().active) {
            return Err(ServerError::Busy);
        }
        let c_name = CString::new(name).map_err(|_| ServerError::Name)?;
        let mut handlers = ffi::QbIpcsServiceHandlers {
            connection_accept,
            connection_created,
            msg_process,
            connection_closed,
            connection_destroyed,
        };
        let mut poll = ffi::QbIpcsPollHandlers {
            job_add,
            dispatch_add,
            dispatch_mod,
            dispatch_del,
        };
        WATCHES.with(|watches| {
            *watches.borrow_mut() = Watches {
                active: true,
                ..Watches::default()
            }
        });
        SHARED.with(|shared| {
            *shared.borrow_mut() = Some(Shared {
                www_data_gid,
                connections: 0,
                refused: 0,
                handler: None,
                out: Vec::with_capacity(64 * 1024),
                reply: Vec::with_capacity(64 * 1024),
            })
        });
        // A daemon killed a moment ago may still hold the name: its
        // listening socket lives until the kernel has torn its io_uring
        // down, which finishes after the process is gone.
        let deadline = Instant::now() + name_wait;
        let service = loop {
            match Self::create_and_run(name, &c_name, &mut handlers, &mut poll) {
                Ok(service) => break service,
                Err(ServerError::Run { source, .. })
                    if source.raw_os_error() == Some(libc::EADDRINUSE)
                        && Instant::now() < deadline =>
                {
                    tracing::warn!(
                        service = name,
                        "IPC service name still in use (a previous daemon still exiting?); retrying"
                    );
                    std::thread::sleep(BIND_RETRY_EVERY);
                }
                Err(error) => {
                    Self::reset_thread();
                    return Err(error);
                }
            }
        };
        tracing::info!(service = name, "IPC server listening");
        Ok(Server {
            service,
            name: name.to_owned(),
        })
    }

    /// One try: a new libqb service, listening.
    fn create_and_run(
        name: &str,
        c_name: &CString,
        handlers: &mut ffi::QbIpcsServiceHandlers,
        poll: &mut ffi::QbIpcsPollHandlers,
    ) -> Result<*mut ffi::QbIpcsService, ServerError> {
        // SAFETY: libqb copies both handler tables (qb_ipcs_create and
        // qb_ipcs_poll_handlers_set store them by value), so stack copies
        // are fine; the name is NUL-terminated.
        let service = unsafe { ffi::qb_ipcs_create(c_name.as_ptr(), 1, ffi::QB_IPC_SHM, handlers) };
        if service.is_null() {
            return Err(ServerError::Create {
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `service` is the live service just created.
        unsafe {
            ffi::qb_ipcs_poll_handlers_set(service, poll);
            ffi::qb_ipcs_enforce_buffer_size(service, BUFFER_BYTES);
        }
        // SAFETY: as above; qb_ipcs_run registers the listening socket
        // through our dispatch_add. On failure it drops the service's only
        // reference itself (the service is freed: no destroy after it).
        let result = unsafe { ffi::qb_ipcs_run(service) };
        if result < 0 {
            return Err(ServerError::Run {
                name: name.to_owned(),
                source: std::io::Error::from_raw_os_error(-result),
            });
        }
        Ok(service)
    }

    fn reset_thread() {
        WATCHES.with(|watches| *watches.borrow_mut() = Watches::default());
        SHARED.with(|shared| *shared.borrow_mut() = None);
    }

    /// Whether a completion with this token is ours.
    pub fn owns(token: Token) -> bool {
        token.0 >= TOKEN_BASE
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        SHARED.with(|shared| shared.borrow().as_ref().map_or(0, |s| s.connections))
    }

    /// Connections refused since start (over the bound or bad user).
    pub fn refused(&self) -> u64 {
        SHARED.with(|shared| shared.borrow().as_ref().map_or(0, |s| s.refused))
    }

    /// libqb has deferred work: the loop must not sleep.
    pub fn has_jobs(&self) -> bool {
        WATCHES.with(|watches| !watches.borrow().jobs.is_empty())
    }

    /// Submits a poll for every watch without one and cancels the polls of
    /// removed or changed watches.
    pub fn arm(&mut self, reactor: &mut Reactor) -> Result<(), ServerError> {
        let (cancel, wanted) = WATCHES.with(|watches| {
            let mut watches = watches.borrow_mut();
            let cancel = std::mem::take(&mut watches.to_cancel);
            let wanted: Vec<(i32, i32)> = watches
                .by_fd
                .iter()
                .filter(|(_, watch)| watch.armed.is_none())
                .map(|(fd, watch)| (*fd, watch.events))
                .collect();
            (cancel, wanted)
        });
        for id in cancel {
            reactor.cancel(id)?;
        }
        for (fd, events) in wanted {
            let key = WATCHES.with(|watches| {
                let mut watches = watches.borrow_mut();
                watches.next_key += 1;
                watches.next_key
            });
            let id = reactor.poll_once(fd, poll_mask(events), Token(TOKEN_BASE + key))?;
            WATCHES.with(|watches| {
                let mut watches = watches.borrow_mut();
                watches.keys.insert(key, fd);
                if let Some(watch) = watches.by_fd.get_mut(&fd) {
                    watch.armed = Some((key, id));
                }
            });
        }
        Ok(())
    }

    /// A poll of ours completed: libqb's dispatch function runs for it
    /// (accepting, reading requests, answering them through `handler`).
    pub fn complete(&mut self, completion: &Completion, handler: &mut dyn Handler) {
        let key = completion.token.0 - TOKEN_BASE;
        let call = WATCHES.with(|watches| {
            let mut watches = watches.borrow_mut();
            let fd = watches.keys.remove(&key)?;
            let watch = watches.by_fd.get_mut(&fd)?;
            if watch.armed.map(|(armed, _)| armed) != Some(key) {
                return None;
            }
            watch.armed = None;
            if std::mem::take(&mut watch.stale) {
                return None;
            }
            let revents = match -completion.result {
                result if result <= 0 => completion.result,
                // Cancelled or a passing failure: armed again by the next `arm`.
                libc::ECANCELED | libc::EINTR | libc::EAGAIN | libc::ENOMEM => return None,
                errno => {
                    // The fd itself is unusable (EBADF, say): libqb is told
                    // so and drops the connection, instead of a poll that
                    // fails again on every loop turn.
                    tracing::warn!(fd, errno, "IPC poll failed; dropping the watch");
                    i32::from(libc::POLLNVAL | libc::POLLERR)
                }
            };
            Some((fd, watch.dispatch, watch.data, revents))
        });
        let Some((fd, dispatch, data, revents)) = call else {
            return;
        };
        let result = with_handler(handler, || {
            // SAFETY: libqb's own callback with the fd and data it registered
            // (still registered: dispatch_del removes the entry).
            unsafe { dispatch(fd, revents, data) }
        });
        if result < 0 {
            // qb_loop's contract: a negative result drops the watch.
            WATCHES.with(|watches| {
                watches.borrow_mut().by_fd.remove(&fd);
            });
        }
    }

    /// Runs libqb's deferred jobs (those queued so far).
    pub fn run_jobs(&mut self, handler: &mut dyn Handler) {
        let count = WATCHES.with(|watches| watches.borrow().jobs.len());
        for _ in 0..count {
            let Some((job, data)) = WATCHES.with(|watches| watches.borrow_mut().jobs.pop_front())
            else {
                break;
            };
            with_handler(handler, || {
                // SAFETY: libqb's job with its own data.
                unsafe { job(data as *mut c_void) }
            });
        }
    }

    /// Closes every connection and the listening socket; cancels the polls.
    pub fn stop(mut self, reactor: &mut Reactor) {
        self.destroy();
        let cancel: Vec<OperationId> = WATCHES.with(|watches| {
            let mut watches = watches.borrow_mut();
            let mut ids = std::mem::take(&mut watches.to_cancel);
            ids.extend(
                watches
                    .by_fd
                    .values()
                    .filter_map(|watch| watch.armed.map(|(_, id)| id)),
            );
            ids
        });
        for id in cancel {
            if let Err(error) = reactor.cancel(id) {
                tracing::debug!(%error, "IPC poll not cancelled");
            }
        }
        Self::reset_thread();
    }

    fn destroy(&mut self) {
        if self.service.is_null() {
            return;
        }
        // SAFETY: the live service; destroy disconnects the clients and
        // removes the watches through dispatch_del. No handler is needed:
        // no request is processed while tearing down.
        unsafe { ffi::qb_ipcs_destroy(self.service) };
        self.service = std::ptr::null_mut();
        tracing::info!(service = %self.name, "IPC server stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// libqb's events are poll(2) bits; io_uring's poll takes the same.
fn poll_mask(events: i32) -> u32 {
    (events as u32) & (libc::POLLIN | libc::POLLOUT | libc::POLLPRI | libc::POLLRDHUP) as u32
}

/// Runs `f` with `handler` reachable from libqb's callbacks.
fn with_handler<R>(handler: &mut dyn Handler, f: impl FnOnce() -> R) -> R {
    // SAFETY: the pointer is only dereferenced inside `f` (by msg_process on
    // this thread, `IN_DISPATCH` guards re-entry) and is cleared before
    // returning; erasing the lifetime is sound because it never outlives
    // this call.
    let pointer: *mut (dyn Handler + 'static) =
        unsafe { std::mem::transmute::<*mut dyn Handler, *mut (dyn Handler + 'static)>(handler) };
    SHARED.with(|shared| {
        if let Some(shared) = shared.borrow_mut().as_mut() {
            shared.handler = Some(pointer);
        }
    });
    IN_DISPATCH.with(|flag| flag.set(true));
    let result = f();
    IN_DISPATCH.with(|flag| flag.set(false));
    SHARED.with(|shared| {
        if let Some(shared) = shared.borrow_mut().as_mut() {
            shared.handler = None;
        }
    });
    result
}

// --- poll handlers (libqb → our loop) ---------------------------------------

unsafe extern "C" fn job_add(_priority: c_int, data: *mut c_void, job: ffi::JobFn) -> i32 {
    WATCHES.with(|watches| watches.borrow_mut().jobs.push_back((job, data as usize)));
    0
}

unsafe extern "C" fn dispatch_add(
    _priority: c_int,
    fd: i32,
    events: i32,
    data: *mut c_void,
    dispatch: ffi::DispatchFn,
) -> i32 {
    WATCHES.with(|watches| {
        let mut watches = watches.borrow_mut();
        if watches.by_fd.contains_key(&fd) {
            return -libc::EEXIST;
        }
        watches.by_fd.insert(
            fd,
            Watch {
                events,
                data,
                dispatch,
                armed: None,
                stale: false,
            },
        );
        0
    })
}

unsafe extern "C" fn dispatch_mod(
    _priority: c_int,
    fd: i32,
    events: i32,
    data: *mut c_void,
    dispatch: ffi::DispatchFn,
) -> i32 {
    WATCHES.with(|watches| {
        let mut watches = watches.borrow_mut();
        let Some(watch) = watches.by_fd.get_mut(&fd) else {
            return -libc::ENOENT;
        };
        let changed = watch.events != events;
        watch.events = events;
        watch.data = data;
        watch.dispatch = dispatch;
        if changed && let Some((_, id)) = watch.armed {
            // The poll in flight waits for the old events: cancel it; its
            // completion re-arms with the new ones.
            watch.stale = true;
            watches.to_cancel.push(id);
        }
        0
    })
}

unsafe extern "C" fn dispatch_del(fd: i32) -> i32 {
    WATCHES.with(|watches| {
        let mut watches = watches.borrow_mut();
        match watches.by_fd.remove(&fd) {
            Some(watch) => {
                if let Some((key, id)) = watch.armed {
                    watches.keys.remove(&key);
                    watches.to_cancel.push(id);
                }
                0
            }
            None => -libc::ENOENT,
        }
    })
}

// --- service handlers (libqb → the service) ---------------------------------

unsafe extern "C" fn connection_accept(
    c: *mut ffi::QbIpcsConnection,
    uid: libc::uid_t,
    gid: libc::gid_t,
) -> i32 {
    let verdict = SHARED.with(|shared| {
        let mut shared = shared.borrow_mut();
        let shared = shared.as_mut()?;
        let read_only = gid == shared.www_data_gid;
        if !((uid == 0 && gid == 0) || read_only) {
            shared.refused += 1;
            tracing::error!("connection from bad user {uid}! - rejected");
            return None;
        }
        // SAFETY: the connection being accepted; libqb sets its buffer
        // size (the larger of ours and the client's) before asking.
        let buffer = unsafe { ffi::qb_ipcs_connection_get_buffer_size(c) };
        if u32::try_from(buffer).map_or(true, |buffer| buffer > BUFFER_MAX_BYTES) {
            shared.refused += 1;
            tracing::warn!(
                uid,
                gid,
                buffer,
                limit = BUFFER_MAX_BYTES,
                "IPC connection refused: the client asks for too large a buffer"
            );
            return None;
        }
        if shared.connections >= CONNECTIONS_MAX {
            shared.refused += 1;
            tracing::warn!(
                uid,
                gid,
                limit = CONNECTIONS_MAX,
                "IPC connection refused: too many connections"
            );
            return None;
        }
        shared.connections += 1;
        Some(read_only)
    });
    let Some(read_only) = verdict else {
        // libqb hands a non-zero accept result to the client (PVE::IPCC
        // sees errno -1, as with the C daemon).
        return 1;
    };
    let mut stats = ffi::QbIpcsConnectionStats::default();
    // SAFETY: `c` is the connection being accepted; stats is a valid out
    // pointer of the declared layout.
    unsafe { ffi::qb_ipcs_connection_stats_get(c, &mut stats, 0) };
    let client = Box::new(Client {
        pid: stats.client_pid.max(0) as u32,
        uid,
        gid,
        read_only,
    });
    tracing::debug!(
        pid = client.pid,
        uid,
        gid,
        read_only,
        "IPC connection accepted"
    );
    // SAFETY: the box is reclaimed in connection_destroyed.
    unsafe { ffi::qb_ipcs_context_set(c, Box::into_raw(client).cast()) };
    0
}

unsafe extern "C" fn connection_created(_c: *mut ffi::QbIpcsConnection) {}

unsafe extern "C" fn connection_closed(_c: *mut ffi::QbIpcsConnection) -> i32 {
    0
}

unsafe extern "C" fn connection_destroyed(c: *mut ffi::QbIpcsConnection) {
    // SAFETY: the context is null or the box set at accept.
    let context = unsafe { ffi::qb_ipcs_context_get(c) };
    if context.is_null() {
        return;
    }
    // SAFETY: set by connection_accept from Box::into_raw, freed once here.
    drop(unsafe { Box::from_raw(context.cast::<Client>()) });
    // SAFETY: clearing our own pointer on the dying connection.
    unsafe { ffi::qb_ipcs_context_set(c, std::ptr::null_mut()) };
    SHARED.with(|shared| {
        if let Some(shared) = shared.borrow_mut().as_mut() {
            shared.connections = shared.connections.saturating_sub(1);
        }
    });
}

unsafe extern "C" fn msg_process(
    c: *mut ffi::QbIpcsConnection,
    data: *mut c_void,
    size: usize,
) -> i32 {
    // SAFETY: the context is null or our Client box (see accept).
    let context = unsafe { ffi::qb_ipcs_context_get(c) };
    if context.is_null() {
        tracing::error!("IPC request on a connection without context");
        // SAFETY: the live connection libqb handed us.
        unsafe { ffi::qb_ipcs_disconnect(c) };
        return 0;
    }
    // SAFETY: the box lives until connection_destroyed, which cannot run
    // during this call.
    let client = unsafe { &*context.cast::<Client>() };
    // libqb passes the header's own `size` field as `size`, not the
    // number of bytes received (libqb 2.0 does not check it either): a
    // client can claim anything. `data` points into the connection's
    // request buffer (its shared-memory ring, mapped twice in a row, or its
    // receive buffer), which holds at least the negotiated buffer size from
    // there on. So: a size within that buffer is read as C reads it (bytes
    // beyond a shorter message are stale, as in C); any other size is not
    // read at all, only the 16 header bytes, and the request is refused
    // with EINVAL by the decoder (the size field then disagrees).
    // SAFETY: the live connection.
    let buffer = unsafe { ffi::qb_ipcs_connection_get_buffer_size(c) };
    let buffer = usize::try_from(buffer).unwrap_or(0);
    let readable = if (proto::REQUEST_HEADER_BYTES..=buffer).contains(&size) {
        size
    } else {
        proto::REQUEST_HEADER_BYTES
    };
    if data.is_null() || buffer < proto::REQUEST_HEADER_BYTES {
        tracing::error!(
            pid = client.pid,
            "IPC request without a buffer; dropping the connection"
        );
        // SAFETY: the live connection.
        unsafe { ffi::qb_ipcs_disconnect(c) };
        return 0;
    }
    // SAFETY: `readable` bytes from `data` lie within the connection's
    // request buffer (see above), valid for this call.
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), readable) };
    let taken = SHARED.with(|shared| {
        let mut shared = shared.borrow_mut();
        let shared = shared.as_mut()?;
        Some((
            shared.handler,
            std::mem::take(&mut shared.out),
            std::mem::take(&mut shared.reply),
        ))
    });
    let Some((handler, mut out, mut reply)) = taken else {
        return 0;
    };
    out.clear();
    reply.clear();
    let decoded = proto::decode(bytes, client.read_only);
    let result = match (decoded.request, handler) {
        (Ok(request), Some(handler)) if IN_DISPATCH.with(Cell::get) => {
            // SAFETY: set by `with_handler` for the dispatch that is running
            // on this thread right now (see there).
            let handler = unsafe { &mut *handler };
            handler.handle(client, request, &mut out)
        }
        (Ok(_), _) => Err(libc::EAGAIN),
        (Err(errno), _) => Err(errno),
    };
    proto::encode_response(decoded.id, result.map(|()| &out[..]), &mut reply);
    // SAFETY: `reply` is a valid buffer of its length for the call.
    let sent = unsafe { ffi::qb_ipcs_response_send(c, reply.as_ptr().cast(), reply.len()) };
    if sent < 0 {
        tracing::error!(
            pid = client.pid,
            errno = -sent,
            bytes = reply.len(),
            "IPC reply not sent; dropping the connection"
        );
        // SAFETY: the live connection.
        unsafe { ffi::qb_ipcs_disconnect(c) };
    }
    // Keep the buffers for the next request, but not a huge one.
    if out.capacity() > 4 * 1024 * 1024 {
        out = Vec::with_capacity(64 * 1024);
    }
    if reply.capacity() > 4 * 1024 * 1024 {
        reply = Vec::with_capacity(64 * 1024);
    }
    SHARED.with(|shared| {
        if let Some(shared) = shared.borrow_mut().as_mut() {
            shared.out = out;
            shared.reply = reply;
        }
    });
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name held by a live server: the second start retries, then fails
    /// with EADDRINUSE and leaves its thread clean (libqb already freed the
    /// failed service; freeing it again aborted the daemon once).
    #[test]
    fn a_name_in_use_fails_after_the_wait_and_the_first_server_stays() {
        let name = format!("pmxcfs-ipc-unit-{}", std::process::id());
        let first = Server::start(&name, 33, Duration::ZERO).expect("first server");
        let second = std::thread::spawn({
            let name = name.clone();
            move || {
                let start = Instant::now();
                let result = Server::start(&name, 33, Duration::from_millis(200));
                let error = match result {
                    Ok(_) => panic!("a second server on the same name"),
                    Err(error) => error,
                };
                assert!(start.elapsed() >= Duration::from_millis(200), "it retried");
                assert!(
                    matches!(&error, ServerError::Run { source, .. }
                        if source.raw_os_error() == Some(libc::EADDRINUSE)),
                    "{error}"
                );
                // The thread can serve again once the name is free.
                WATCHES.with(|watches| assert!(!watches.borrow().active));
            }
        });
        second.join().expect("second thread");
        let mut reactor = Reactor::new(16).expect("reactor");
        first.stop(&mut reactor);
        let again = Server::start(&name, 33, Duration::ZERO).expect("the name is free again");
        again.stop(&mut reactor);
    }
}
