//! Signals as events: block them, read them from a signalfd through the reactor.
//!
//! The reactor decides nothing about what a signal means; the daemon maps SIGTERM/SIGINT to a
//! clean shutdown and SIGHUP to reopening its logs.

use std::io;
use std::marker::PhantomData;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{OperationId, Reactor, ReactorError, Token};

/// The signals a daemon handles: SIGTERM and SIGINT (shut down), SIGHUP (reopen logs).
pub const DAEMON_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Size of one `struct signalfd_siginfo`, as the kernel writes it.
pub const SIGINFO_SIZE_BYTES: usize = 128;

/// Most signals one read of the signalfd returns.
pub const SIGNALS_PER_READ_MAX: usize = 8;

const _: () = assert!(size_of::<libc::signalfd_siginfo>() == SIGINFO_SIZE_BYTES);

/// One signal as read from the signalfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalInfo {
    /// The signal number (`libc::SIGTERM`, ...).
    pub signal: libc::c_int,
    /// `si_code`: `SI_USER` for kill(2), `SI_TKILL` for tgkill(2), ...
    pub code: i32,
    /// Process id of the sender, when the kernel knows it.
    pub sender_pid: u32,
    /// Real user id of the sender, when the kernel knows it.
    pub sender_uid: u32,
}

/// A signalfd for a set of signals, which are blocked on the creating thread.
///
/// Blocking is per thread: create this on the main thread before spawning any other, so that
/// every thread inherits the mask and the signals reach only the signalfd. The signals stay
/// blocked after drop (unblocking could deliver a pending SIGTERM with its default action).
/// Not `Send`: the mask belongs to the creating thread.
#[derive(Debug)]
pub struct Signals {
    fd: OwnedFd,
    _single_thread: PhantomData<*const ()>,
}

impl Signals {
    /// Blocks `signals` on the calling thread and opens a non-blocking signalfd for them.
    pub fn new(signals: &[libc::c_int]) -> Result<Self, ReactorError> {
        assert!(!signals.is_empty());
        let mask = signal_set(signals)?;
        // SAFETY: `mask` is an initialised sigset; a null old-mask pointer is allowed.
        let status = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) };
        if status != 0 {
            return Err(ReactorError::Signal(io::Error::from_raw_os_error(status)));
        }
        // SAFETY: `mask` is an initialised sigset; -1 asks for a new fd.
        let raw = unsafe { libc::signalfd(-1, &mask, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if raw < 0 {
            return Err(ReactorError::Signal(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Signals {
            fd,
            _single_thread: PhantomData,
        })
    }

    /// The signalfd, for the caller's own reads or polls.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Submits a read of up to [`SIGNALS_PER_READ_MAX`] signals; it completes when at least
    /// one is pending. Decode the completion's buffer with [`Signals::decode`]. The signalfd
    /// must outlive the read, so keep `self` until its completion is reaped.
    pub fn read(&self, reactor: &mut Reactor, token: Token) -> Result<OperationId, ReactorError> {
        let buffer = Vec::with_capacity(SIGNALS_PER_READ_MAX * SIGINFO_SIZE_BYTES);
        reactor.read(self.fd(), buffer, token)
    }

    /// The signals in the bytes of a signalfd read. The kernel writes whole records only; a
    /// trailing partial record (which would be a bug) is ignored.
    pub fn decode(bytes: &[u8]) -> impl Iterator<Item = SignalInfo> + '_ {
        debug_assert_eq!(bytes.len() % SIGINFO_SIZE_BYTES, 0);
        bytes.chunks_exact(SIGINFO_SIZE_BYTES).map(|record| {
            // SAFETY: `record` holds exactly size_of::<signalfd_siginfo>() bytes, and the
            // struct is plain integers, valid for every bit pattern; the read is unaligned.
            let info: libc::signalfd_siginfo =
                unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
            SignalInfo {
                signal: info.ssi_signo as libc::c_int,
                code: info.ssi_code,
                sender_pid: info.ssi_pid,
                sender_uid: info.ssi_uid,
            }
        })
    }
}

fn signal_set(signals: &[libc::c_int]) -> Result<libc::sigset_t, ReactorError> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut set = unsafe { set.assume_init() };
    for &signal in signals {
        // SAFETY: `set` is an initialised sigset.
        if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
            return Err(ReactorError::Signal(io::Error::last_os_error()));
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::tests::wait_for;
    use std::time::Duration;

    /// Sends `signal` to this thread only, so parallel test threads never see it.
    fn signal_this_thread(signal: libc::c_int) {
        // SAFETY: plain syscalls on this process and thread.
        let status =
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), signal) };
        assert_eq!(status, 0, "tgkill: {}", io::Error::last_os_error());
    }

    #[test]
    fn signalfd_delivers_signals_sent_to_this_thread() {
        // SIGTERM is safe here: blocked on this thread and sent to this thread only.
        let signals = Signals::new(&[libc::SIGUSR1, libc::SIGTERM]).expect("signals");
        let mut reactor = Reactor::new(2).expect("reactor");
        signals.read(&mut reactor, Token(1)).expect("read");
        let mut completions = Vec::new();
        let count = reactor
            .wait(&mut completions, Some(Duration::from_millis(20)))
            .expect("wait");
        assert_eq!(count, 0, "no signal yet");

        signal_this_thread(libc::SIGUSR1);
        let completions = wait_for(&mut reactor, 1);
        let buffer = completions[0].buffer.as_deref().expect("buffer");
        assert_eq!(completions[0].result as usize, SIGINFO_SIZE_BYTES);
        let received: Vec<SignalInfo> = Signals::decode(buffer).collect();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].signal, libc::SIGUSR1);
        assert_eq!(received[0].code, libc::SI_TKILL);
        assert_eq!(received[0].sender_pid, std::process::id());

        // Two pending signals come back in one read.
        signal_this_thread(libc::SIGTERM);
        signal_this_thread(libc::SIGUSR1);
        signals.read(&mut reactor, Token(2)).expect("read");
        let completions = wait_for(&mut reactor, 1);
        let buffer = completions[0].buffer.as_deref().expect("buffer");
        let mut numbers: Vec<libc::c_int> = Signals::decode(buffer).map(|s| s.signal).collect();
        numbers.sort();
        assert_eq!(numbers, [libc::SIGUSR1, libc::SIGTERM]);
    }

    #[test]
    fn decode_reads_whole_records() {
        // SAFETY: signalfd_siginfo is plain integers; all zeroes is valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        info.ssi_signo = libc::SIGHUP as u32;
        info.ssi_pid = 42;
        // SAFETY: viewing a plain-integer struct as bytes.
        let bytes: [u8; SIGINFO_SIZE_BYTES] = unsafe { std::mem::transmute(info) };
        let decoded: Vec<SignalInfo> = Signals::decode(&bytes).collect();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].signal, libc::SIGHUP);
        assert_eq!(decoded[0].sender_pid, 42);
        assert_eq!(Signals::decode(&[]).count(), 0);
    }
}
