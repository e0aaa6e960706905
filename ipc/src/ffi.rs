//! libqb's IPC server API (`qb/qbipcs.h`, Debian libqb-dev 2.0): the few
//! declarations the service uses, written by hand (a handful of functions
//! and three structs do not need bindgen). This module and `server.rs` are
//! the only places that call into libqb's server side.

use std::ffi::{c_char, c_int, c_void};

/// `enum qb_ipc_type`: shared-memory rings, as the C daemon.
pub const QB_IPC_SHM: c_int = 1;

/// `struct qb_ipcs_service` (opaque).
#[repr(C)]
pub struct QbIpcsService {
    _opaque: [u8; 0],
}

/// `struct qb_ipcs_connection` (opaque).
#[repr(C)]
pub struct QbIpcsConnection {
    _opaque: [u8; 0],
}

/// `qb_ipcs_dispatch_fn_t`: called with the poll result for a watched fd;
/// a negative return removes the watch (qb_loop's contract).
pub type DispatchFn = unsafe extern "C" fn(fd: i32, revents: i32, data: *mut c_void) -> i32;
/// `qb_loop_job_dispatch_fn`.
pub type JobFn = unsafe extern "C" fn(data: *mut c_void);

/// `struct qb_ipcs_poll_handlers`: how libqb asks its host loop to watch
/// fds and to run deferred jobs (the first argument is a
/// `enum qb_loop_priority`, ignored here).
#[repr(C)]
pub struct QbIpcsPollHandlers {
    pub job_add: unsafe extern "C" fn(priority: c_int, data: *mut c_void, job: JobFn) -> i32,
    pub dispatch_add: unsafe extern "C" fn(
        priority: c_int,
        fd: i32,
        events: i32,
        data: *mut c_void,
        dispatch: DispatchFn,
    ) -> i32,
    pub dispatch_mod: unsafe extern "C" fn(
        priority: c_int,
        fd: i32,
        events: i32,
        data: *mut c_void,
        dispatch: DispatchFn,
    ) -> i32,
    pub dispatch_del: unsafe extern "C" fn(fd: i32) -> i32,
}

/// `struct qb_ipcs_service_handlers`.
#[repr(C)]
pub struct QbIpcsServiceHandlers {
    pub connection_accept:
        unsafe extern "C" fn(c: *mut QbIpcsConnection, uid: libc::uid_t, gid: libc::gid_t) -> i32,
    pub connection_created: unsafe extern "C" fn(c: *mut QbIpcsConnection),
    pub msg_process:
        unsafe extern "C" fn(c: *mut QbIpcsConnection, data: *mut c_void, size: usize) -> i32,
    pub connection_closed: unsafe extern "C" fn(c: *mut QbIpcsConnection) -> i32,
    pub connection_destroyed: unsafe extern "C" fn(c: *mut QbIpcsConnection),
}

/// `struct qb_ipcs_connection_stats`.
#[repr(C)]
#[derive(Default)]
pub struct QbIpcsConnectionStats {
    pub client_pid: i32,
    pub requests: u64,
    pub responses: u64,
    pub events: u64,
    pub send_retries: u64,
    pub recv_retries: u64,
    pub flow_control_state: i32,
    pub flow_control_count: u64,
}

unsafe extern "C" {
    pub fn qb_ipcs_create(
        name: *const c_char,
        service_id: i32,
        kind: c_int,
        handlers: *mut QbIpcsServiceHandlers,
    ) -> *mut QbIpcsService;
    pub fn qb_ipcs_poll_handlers_set(s: *mut QbIpcsService, handlers: *mut QbIpcsPollHandlers);
    pub fn qb_ipcs_enforce_buffer_size(s: *mut QbIpcsService, max_buf_size: u32);
    pub fn qb_ipcs_run(s: *mut QbIpcsService) -> i32;
    pub fn qb_ipcs_destroy(s: *mut QbIpcsService);
    pub fn qb_ipcs_response_send(
        c: *mut QbIpcsConnection,
        data: *const c_void,
        size: usize,
    ) -> isize;
    pub fn qb_ipcs_disconnect(c: *mut QbIpcsConnection);
    pub fn qb_ipcs_context_set(c: *mut QbIpcsConnection, context: *mut c_void);
    pub fn qb_ipcs_context_get(c: *mut QbIpcsConnection) -> *mut c_void;
    pub fn qb_ipcs_connection_get_buffer_size(c: *mut QbIpcsConnection) -> i32;
    pub fn qb_ipcs_connection_stats_get(
        c: *mut QbIpcsConnection,
        stats: *mut QbIpcsConnectionStats,
        clear_after_read: i32,
    ) -> i32;
}
