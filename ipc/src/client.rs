//! A small client of the "pve2" service over libqb's client API, as
//! PVE::IPCC uses it: for tests and benchmarks.
//!
//! A libqb connection belongs to the thread (and the process) that opened
//! it, so [`Client`] is neither `Send` nor `Sync`:
//!
//! ```compile_fail
//! fn needs_send<T: Send>() {}
//! needs_send::<pmxcfs_ipc::client::Client>();
//! ```

use std::ffi::{CString, c_void};
use std::io;
use std::ptr::NonNull;

use crate::proto::{self, REQUEST_HEADER_BYTES};

/// The libqb client calls used here, declared by hand (the server side's
/// declarations live in `ffi`).
mod sys {
    use std::ffi::{c_char, c_void};

    unsafe extern "C" {
        /// NULL with `errno` set on failure.
        pub fn qb_ipcc_connect(name: *const c_char, max_msg_size: usize) -> *mut c_void;
        /// Bytes received, or a negative errno.
        pub fn qb_ipcc_sendv_recv(
            connection: *mut c_void,
            iov: *const libc::iovec,
            iov_len: u32,
            msg_ptr: *mut c_void,
            msg_len: usize,
            ms_timeout: i32,
        ) -> isize;
        pub fn qb_ipcc_disconnect(connection: *mut c_void);
    }
}

/// The size PVE::IPCC asks for at connect, and its reply buffer (8192 ×
/// 128 bytes).
pub const PERL_MAX_MSG_SIZE_BYTES: usize = 8192 * 128;

/// One connection to a libqb IPC service.
pub struct Client {
    /// Owned: disconnected on drop. Also makes the type `!Send + !Sync`.
    connection: NonNull<c_void>,
    /// Receives each reply; as large as the size asked for at connect.
    reply: Vec<u8>,
    /// −1 = wait forever, as Perl does.
    timeout_ms: i32,
}

impl Client {
    /// Connects as PVE::IPCC does: 1 MiB messages, no timeout.
    pub fn connect(service: &str) -> io::Result<Client> {
        Client::connect_with_max_msg_size(service, PERL_MAX_MSG_SIZE_BYTES)
    }

    /// Connects asking libqb for `max_msg_size_bytes` buffers (the server
    /// sizes the connection from it; spec/ipc.md §1).
    ///
    /// The error is libqb's errno as it is: a connection the server refuses
    /// reports −1 (`raw_os_error() == Some(-1)`), not EACCES.
    pub fn connect_with_max_msg_size(
        service: &str,
        max_msg_size_bytes: usize,
    ) -> io::Result<Client> {
        let name = CString::new(service).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "service name contains NUL")
        })?;
        // SAFETY: `name` is a valid C string that outlives the call.
        let raw = unsafe { sys::qb_ipcc_connect(name.as_ptr(), max_msg_size_bytes) };
        let connection = NonNull::new(raw).ok_or_else(io::Error::last_os_error)?;
        Ok(Client {
            connection,
            reply: vec![0; max_msg_size_bytes],
            timeout_ms: -1,
        })
    }

    /// Sets the reply timeout; `None` waits forever (Perl's behaviour).
    /// After a timeout the connection may still deliver the late reply:
    /// reconnect, as Perl does after any transport error.
    pub fn set_timeout_ms(&mut self, timeout_ms: Option<u32>) {
        self.timeout_ms = timeout_ms.map_or(-1, |ms| i32::try_from(ms).unwrap_or(i32::MAX));
    }

    /// Sends request `id` with `payload` (header added, as PVE::IPCC does)
    /// and returns the reply's payload, or `Err(errno)` (positive) from the
    /// reply's error field. The outer error is a transport error (libqb's
    /// errno, e.g. ENOBUFS for a reply larger than the buffer), or
    /// `InvalidData` for a reply that is not a well-formed answer to `id`.
    pub fn call(&mut self, id: i32, payload: &[u8]) -> io::Result<Result<Vec<u8>, i32>> {
        let header = proto::request_header(id, payload.len());
        let header_bytes = bytemuck::bytes_of(&header);
        debug_assert_eq!(header_bytes.len(), REQUEST_HEADER_BYTES);
        let received = self.send(&[header_bytes, payload])?;
        let invalid =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("reply {what}"));
        let (header, reply) = proto::decode_response(&self.reply[..received])
            .ok_or_else(|| invalid("size mismatch"))?;
        if header.id != id {
            return Err(invalid("id mismatch"));
        }
        match header.error {
            0 => Ok(Ok(reply.to_vec())),
            error if error < 0 => Ok(Err(-error)),
            _ => Err(invalid("error field positive")),
        }
    }

    /// Sends `bytes` as they are (no header added) and returns the raw
    /// reply, header included: for malformed requests.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let received = self.send(&[bytes])?;
        Ok(self.reply[..received].to_vec())
    }

    /// One `qb_ipcc_sendv_recv`; the reply is in `self.reply[..returned]`.
    fn send(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|part| libc::iovec {
                iov_base: part.as_ptr().cast_mut().cast(),
                iov_len: part.len(),
            })
            .collect();
        let iov_len = u32::try_from(iov.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many parts"))?;
        // SAFETY: the connection is open (owned by self); libqb only reads
        // the iovecs' memory, which `parts` keeps alive, and writes at most
        // `self.reply.len()` bytes into `self.reply`.
        let result = unsafe {
            sys::qb_ipcc_sendv_recv(
                self.connection.as_ptr(),
                iov.as_ptr(),
                iov_len,
                self.reply.as_mut_ptr().cast(),
                self.reply.len(),
                self.timeout_ms,
            )
        };
        match usize::try_from(result) {
            Ok(received) if received <= self.reply.len() => Ok(received),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "libqb reported more bytes than the buffer holds",
            )),
            Err(_) => {
                let errno = i32::try_from(result.unsigned_abs()).unwrap_or(libc::EIO);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: the connection is open and never used after this.
        unsafe { sys::qb_ipcc_disconnect(self.connection.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connecting_to_a_missing_service_fails() {
        let error = Client::connect("pmxcfs-ipc-test-no-such-service")
            .err()
            .expect("nothing serves this name");
        assert!(error.raw_os_error().is_some(), "{error:?}");
    }

    #[test]
    fn service_name_with_nul_is_invalid_input() {
        let error = Client::connect("pv\0e2").err().expect("NUL is refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
