//! The ring, the slot table, submission and reaping.
//!
//! Back of the envelope: submitting costs no syscall (an SQE is written into shared memory);
//! `wait` costs one `io_uring_enter` that hands every queued SQE to the kernel and sleeps until
//! at least one completion or the timeout. A loop iteration is therefore one syscall, however
//! many operations were queued or completed. A full submission queue costs one extra
//! `io_uring_enter`. No copies: the kernel reads into and writes from the caller's buffers.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use crate::ReactorError;
use crate::slots::{CommandBuffers, InFlight, Owned, SlotTable};

/// Most operations one reactor keeps in flight (`slot_count` of [`Reactor::new`]).
pub const SLOT_COUNT_MAX: u32 = 4096;

/// Largest buffer a read or write accepts, in bytes (64 MiB: far above a FUSE request,
/// far below the kernel's per-call limit of about 2 GiB).
pub const BUFFER_SIZE_BYTES_MAX: usize = 64 << 20;

/// Most buffers one device command may describe to the kernel.
pub const COMMAND_BUFFERS_MAX: usize = 8;

/// `user_data` of cancellations: their completions go to no caller. No slot index reaches
/// `u32::MAX` (see `SLOT_COUNT_MAX`), so no operation can carry this value.
const CANCEL_USER_DATA: u64 = u64::MAX;

/// How often `submit` retries an `io_uring_enter` interrupted by a signal.
const ENTER_INTERRUPTED_RETRIES_MAX: u32 = 16;

/// How long `Drop` waits, in rounds of `DROP_WAIT_ROUND`, for cancelled operations to return.
const DROP_WAIT_ROUNDS_MAX: u32 = 100;
const DROP_WAIT_ROUND: Duration = Duration::from_millis(10);

/// Offset meaning "the file's current position" (like `read(2)`); ignored by pipes, sockets,
/// character devices such as /dev/fuse, eventfds and signalfds.
const OFFSET_CURRENT: u64 = u64::MAX;

const _: () = assert!(SLOT_COUNT_MAX < u32::MAX);
const _: () = assert!(BUFFER_SIZE_BYTES_MAX <= i32::MAX as usize);

/// The caller's tag for an operation, returned unchanged in its [`Completion`].
/// The reactor never interprets it; several operations may share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// Names one operation in flight, for [`Reactor::cancel`]. Once the operation's completion is
/// reaped, the id matches nothing (until its slot's 32-bit generation wraps around).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OperationId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl OperationId {
    fn to_user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn from_user_data(user_data: u64) -> Self {
        OperationId {
            index: user_data as u32,
            generation: (user_data >> 32) as u32,
        }
    }
}

/// What kind of operation a [`Completion`] ends, and what its `result` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `result`: bytes read (0 = end of file), or a negative errno. The buffer comes back with
    /// its length set to the bytes read. `-ENODEV` on /dev/fuse means the file system was
    /// unmounted.
    Read,
    /// `result`: bytes written, or a negative errno. The buffer comes back unchanged.
    Write,
    /// `result`: the ready poll events (`POLLIN`, ...), or a negative errno.
    Poll,
    /// `result`: 0 when the timer expired (the kernel's `-ETIME`), or a negative errno
    /// (`-ECANCELED` after [`Reactor::cancel`]).
    Timer,
    /// A device command ([`Reactor::command`]). `result`: what the device answers, or a
    /// negative errno (`-EOPNOTSUPP` from a file without device commands). The buffers come
    /// back in [`Completion::buffers`].
    Command,
}

/// A device command (`IORING_OP_URING_CMD` in a 128-byte submission entry, akin to an
/// `ioctl`): the device's operation, its 80 bytes of command data, and the buffers the
/// device may read and write while the command is in flight, described to it by an iovec
/// array (the entry's `addr` and `len`), one iovec per buffer of the buffer's length.
#[derive(Debug)]
pub struct Command {
    pub op: u32,
    pub data: [u8; 80],
    pub buffers: Vec<Vec<u8>>,
}

/// The end of one operation. Every operation submitted yields exactly one completion.
#[derive(Debug)]
pub struct Completion {
    pub token: Token,
    pub id: OperationId,
    pub operation: Operation,
    /// Non-negative: success, meaning per [`Operation`]. Negative: `-errno`; `-ECANCELED`
    /// after [`Reactor::cancel`] (unless the operation finished first).
    pub result: i32,
    /// The buffer of a read or write, handed back to the caller: the kernel is done with it.
    /// `None` for the other operations.
    pub buffer: Option<Vec<u8>>,
    /// The buffers of a device command, in the order given, handed back unchanged in size:
    /// the kernel is done with them. Empty for the other operations.
    pub buffers: Vec<Vec<u8>>,
}

impl Completion {
    /// The errno of a failed operation, `None` on success.
    pub fn errno(&self) -> Option<i32> {
        (self.result < 0).then_some(-self.result)
    }

    /// `result` as an `io::Result`.
    pub fn io_result(&self) -> io::Result<usize> {
        match self.errno() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(self.result as usize),
        }
    }
}

/// A single-threaded io_uring event loop with a fixed number of operation slots.
///
/// Ownership: what the kernel may touch while an operation is in flight (a read or write
/// buffer, a timer's timespec) moves into the reactor on submission and is held in the
/// operation's slot. A buffer comes back only inside the operation's [`Completion`], so it
/// cannot be reused, dropped or resubmitted while the kernel owns it. File descriptors are the
/// caller's: one must stay open until its operation's completion is reaped (a closed fd number
/// may be reused by another file before the kernel looks it up).
///
/// Bounds: at most `slot_count` operations in flight (more is refused with
/// [`ReactorError::Full`]), at most `slot_count` cancellations in flight, and the completion
/// queue is sized for all of them, so it cannot overflow.
///
/// Batching: submission only queues; [`Reactor::wait`] hands the whole queue to the kernel and
/// collects what completed in one system call.
///
/// One reactor per thread: the ring is set up for a single issuer (the creating thread), hence
/// not `Send`. It keeps no global state.
pub struct Reactor {
    /// 128-byte submission entries, which device commands need (Linux 5.19).
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    slots: SlotTable,
    /// Cancellations submitted whose own completion has not been reaped yet.
    cancels_in_flight: u32,
    _single_thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Reactor")
            .field("capacity", &self.slots.capacity())
            .field("in_flight", &self.slots.in_flight())
            .field("cancels_in_flight", &self.cancels_in_flight)
            .finish_non_exhaustive()
    }
}

impl Reactor {
    /// A reactor with room for `slot_count` operations in flight (1..=[`SLOT_COUNT_MAX`]).
    pub fn new(slot_count: u32) -> Result<Self, ReactorError> {
        Self::with_submission_entries(slot_count, slot_count)
    }

    /// As `new`, with a submission queue of `submission_entries` (rounded up to a power of
    /// two); a queue smaller than `slot_count` is flushed whenever it fills up.
    pub(crate) fn with_submission_entries(
        slot_count: u32,
        submission_entries: u32,
    ) -> Result<Self, ReactorError> {
        if slot_count == 0 || slot_count > SLOT_COUNT_MAX {
            return Err(ReactorError::InvalidSlotCount {
                requested: slot_count,
                max: SLOT_COUNT_MAX,
            });
        }
        assert!(submission_entries > 0 && submission_entries <= slot_count);
        // Completions outstanding at most: one per slot, one per cancellation (one per slot),
        // and the cancel-all of `Drop`.
        let completion_entries = (2 * slot_count + 1).next_power_of_two();
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_cqsize(completion_entries)
            .setup_submit_all()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(submission_entries.next_power_of_two())
            .map_err(ReactorError::Setup)?;
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            return Err(ReactorError::Unsupported(
                "IORING_FEAT_EXT_ARG (Linux 5.11)",
            ));
        }
        if !params.is_feature_nodrop() {
            return Err(ReactorError::Unsupported("IORING_FEAT_NODROP (Linux 5.5)"));
        }
        assert!(params.cq_entries() > 2 * slot_count);
        Ok(Reactor {
            ring,
            slots: SlotTable::new(slot_count),
            cancels_in_flight: 0,
            _single_thread: PhantomData,
        })
    }

    /// How many operations may be in flight at once.
    pub fn capacity(&self) -> u32 {
        self.slots.capacity()
    }

    /// How many operations are in flight (submitted, completion not yet reaped).
    pub fn in_flight(&self) -> u32 {
        self.slots.in_flight()
    }

    /// Reads from `fd` at its current position into `buffer`'s spare capacity: the buffer is
    /// cleared and up to `buffer.capacity()` bytes are read. The buffer comes back in the
    /// completion with its length set to the bytes read. On error the buffer is dropped.
    pub fn read(
        &mut self,
        fd: RawFd,
        mut buffer: Vec<u8>,
        token: Token,
    ) -> Result<OperationId, ReactorError> {
        check_buffer_size(buffer.capacity())?;
        buffer.clear();
        let (pointer, length) = (buffer.as_mut_ptr(), buffer.capacity() as u32);
        // The pointer stays valid after the move below: moving a Vec does not move its heap
        // allocation, and the slot never touches the Vec until the completion is reaped.
        let entry = opcode::Read::new(Fd(fd), pointer, length)
            .offset(OFFSET_CURRENT)
            .build()
            .into();
        self.submit_entry(entry, token, Operation::Read, Owned::Buffer(buffer))
    }

    /// Writes all of `buffer` to `fd` at its current position (the kernel may write fewer
    /// bytes: see the completion's `result`). The buffer comes back, unchanged, in the
    /// completion. On error the buffer is dropped.
    pub fn write(
        &mut self,
        fd: RawFd,
        buffer: Vec<u8>,
        token: Token,
    ) -> Result<OperationId, ReactorError> {
        check_buffer_size(buffer.len())?;
        let (pointer, length) = (buffer.as_ptr(), buffer.len() as u32);
        let entry = opcode::Write::new(Fd(fd), pointer, length)
            .offset(OFFSET_CURRENT)
            .build()
            .into();
        self.submit_entry(entry, token, Operation::Write, Owned::Buffer(buffer))
    }

    /// Waits once for `events` (`POLLIN`, `POLLOUT`, ... as u32) on `fd`: exactly one
    /// completion, carrying the ready events. Poll again to wait again.
    pub fn poll_once(
        &mut self,
        fd: RawFd,
        events: u32,
        token: Token,
    ) -> Result<OperationId, ReactorError> {
        let entry = opcode::PollAdd::new(Fd(fd), events).build().into();
        self.submit_entry(entry, token, Operation::Poll, Owned::Nothing)
    }

    /// A one-shot timer that completes `after` from now (monotonic clock), with result 0.
    pub fn timer(&mut self, after: Duration, token: Token) -> Result<OperationId, ReactorError> {
        let timespec = Box::new(Timespec::from(after));
        let pointer: *const Timespec = &*timespec;
        let entry = opcode::Timeout::new(pointer).build().into();
        self.submit_entry(entry, token, Operation::Timer, Owned::Timespec(timespec))
    }

    /// Sends `command` to the device behind `fd`. Its buffers move into the reactor and come
    /// back in the completion ([`Completion::buffers`]); their heap allocations do not move,
    /// so a device that keeps their addresses beyond one command (FUSE over io_uring registers
    /// them once) sees the same memory as long as the caller hands the same buffers back.
    /// Errors (too many or too large buffers, no slot) drop the buffers.
    pub fn command(
        &mut self,
        fd: RawFd,
        command: Command,
        token: Token,
    ) -> Result<OperationId, ReactorError> {
        let Command {
            op,
            data,
            mut buffers,
        } = command;
        if buffers.len() > COMMAND_BUFFERS_MAX {
            return Err(ReactorError::TooManyBuffers {
                count: buffers.len(),
                max: COMMAND_BUFFERS_MAX,
            });
        }
        for buffer in &buffers {
            check_buffer_size(buffer.len())?;
        }
        // The pointers stay valid after the moves below: moving a Vec (or the Vec of Vecs)
        // does not move a heap allocation, and the slot never touches them until the
        // completion is reaped.
        let iovecs: Box<[libc::iovec]> = buffers
            .iter_mut()
            .map(|buffer| libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            })
            .collect();
        let entry = opcode::UringCmd80::new(Fd(fd), op)
            .cmd(data)
            .addr(Some(iovecs.as_ptr() as u64))
            .build();
        let entry = with_len(entry, iovecs.len() as u32);
        self.submit_entry(
            entry,
            token,
            Operation::Command,
            Owned::Command(CommandBuffers { buffers, iovecs }),
        )
    }

    /// Asks the kernel to cancel an operation. Its completion still arrives, usually with
    /// `-ECANCELED`, or with its own result if it finished first.
    ///
    /// Returns `Ok(false)` when `id` is no longer in flight (its completion was reaped
    /// already): nothing to cancel. Cancelling twice submits one cancellation.
    pub fn cancel(&mut self, id: OperationId) -> Result<bool, ReactorError> {
        let Some(in_flight) = self.slots.get_mut(id) else {
            return Ok(false);
        };
        if in_flight.cancel_requested {
            return Ok(true);
        }
        let capacity = self.slots.capacity();
        if self.cancels_in_flight >= capacity {
            return Err(ReactorError::CancelsFull { capacity });
        }
        let entry = opcode::AsyncCancel::new(id.to_user_data())
            .build()
            .user_data(CANCEL_USER_DATA)
            .into();
        self.push(&entry)?;
        self.cancels_in_flight += 1;
        if let Some(in_flight) = self.slots.get_mut(id) {
            in_flight.cancel_requested = true;
        }
        Ok(true)
    }

    /// Hands every queued submission to the kernel without waiting. `wait` does this anyway;
    /// this is for a caller that wants operations started before it does something slow.
    pub fn submit(&mut self) -> Result<(), ReactorError> {
        for _ in 0..ENTER_INTERRUPTED_RETRIES_MAX {
            if self.ring.submission().is_empty() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                Err(error) => return Err(ReactorError::Enter(error)),
            }
        }
        Err(ReactorError::Enter(io::Error::from_raw_os_error(
            libc::EINTR,
        )))
    }

    /// Submits what is queued, sleeps until at least one operation completes or `timeout`
    /// passes (`None`: no timeout), then replaces the contents of `completions` with every
    /// completion available (at most `capacity()` of them) and returns how many.
    ///
    /// Zero completions is a normal outcome, not an error: the timeout passed, a signal
    /// interrupted the sleep, or the kernel woke the ring for its own work. With nothing in
    /// flight and no timeout it returns 0 at once instead of sleeping forever.
    pub fn wait(
        &mut self,
        completions: &mut Vec<Completion>,
        timeout: Option<Duration>,
    ) -> Result<usize, ReactorError> {
        completions.clear();
        let idle = self.slots.in_flight() == 0 && self.cancels_in_flight == 0;
        if idle && timeout.is_none() {
            return Ok(0);
        }
        self.enter_and_wait(timeout)?;
        self.reap(|completion| completions.push(completion));
        debug_assert!(completions.len() <= self.slots.capacity() as usize);
        Ok(completions.len())
    }

    /// One `io_uring_enter`: submit the queue, wait for one completion or the timeout.
    fn enter_and_wait(&mut self, timeout: Option<Duration>) -> Result<(), ReactorError> {
        let outcome = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(timeout) => {
                let timespec = Timespec::from(timeout);
                let arguments = SubmitArgs::new().timespec(&timespec);
                self.ring.submitter().submit_with_args(1, &arguments)
            }
        };
        match outcome {
            Ok(_) => Ok(()),
            // A wakeup without completion: the timeout passed or a signal arrived.
            Err(error) if matches!(error.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(()),
            Err(error) => Err(ReactorError::Enter(error)),
        }
    }

    /// Takes every completion off the completion queue, frees its slot and passes it on.
    fn reap(&mut self, mut deliver: impl FnMut(Completion)) {
        let Reactor {
            ring,
            slots,
            cancels_in_flight,
            ..
        } = self;
        for entry in ring.completion() {
            let (user_data, result) = (entry.user_data(), entry.result());
            if user_data == CANCEL_USER_DATA {
                reap_cancel(cancels_in_flight, result);
                continue;
            }
            let id = OperationId::from_user_data(user_data);
            let Some(in_flight) = slots.remove(id) else {
                // The kernel returns only user_data we gave it: this is a bug of ours.
                tracing::error!(user_data, result, "completion of no operation in flight");
                debug_assert!(
                    false,
                    "completion of no operation in flight: {user_data:#x}"
                );
                continue;
            };
            deliver(complete(id, in_flight, result));
        }
    }

    /// Takes a slot for the operation and queues its submission entry.
    fn submit_entry(
        &mut self,
        entry: squeue::Entry128,
        token: Token,
        operation: Operation,
        owned: Owned,
    ) -> Result<OperationId, ReactorError> {
        let in_flight = InFlight {
            token,
            operation,
            owned,
            cancel_requested: false,
        };
        let Some(id) = self.slots.insert(in_flight) else {
            return Err(ReactorError::Full {
                capacity: self.slots.capacity(),
            });
        };
        let entry = entry.user_data(id.to_user_data());
        if let Err(error) = self.push(&entry) {
            // The kernel never saw the entry: freeing the slot (and its buffer) is safe.
            let removed = self.slots.remove(id);
            assert!(removed.is_some());
            return Err(error);
        }
        Ok(id)
    }

    /// Queues `entry`; when the submission queue is full, submits it first and retries once.
    fn push(&mut self, entry: &squeue::Entry128) -> Result<(), ReactorError> {
        // SAFETY (both pushes): every pointer in `entry` points into memory owned by the
        // entry's slot (buffer, timespec, iovecs and the buffers they describe) or is none; the slot keeps it alive and in place
        // until the entry's completion is reaped, or `Drop` leaks it.
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        self.submit()?;
        unsafe { self.ring.submission().push(entry) }.map_err(|_| ReactorError::SubmissionQueueFull)
    }
}

impl Drop for Reactor {
    /// Cancels everything in flight and waits (at most about a second) for the kernel to hand
    /// back the buffers. Whatever the kernel still owns after that is leaked, never freed.
    fn drop(&mut self) {
        self.cancel_all_and_reap();
        let leaked = self.slots.leak_all();
        if leaked > 0 {
            tracing::warn!(
                leaked,
                "reactor drop: leaking buffers the kernel still owns"
            );
        }
    }
}

impl Reactor {
    /// Cancels every operation in flight and drops their completions, waiting at most
    /// `DROP_WAIT_ROUNDS_MAX * DROP_WAIT_ROUND`. Returns how many are still in flight.
    fn cancel_all_and_reap(&mut self) -> u32 {
        if self.slots.in_flight() == 0 {
            return 0;
        }
        let entry = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(CANCEL_USER_DATA)
            .into();
        match self.push(&entry) {
            Ok(()) => self.cancels_in_flight += 1,
            Err(error) => tracing::warn!(%error, "reactor drop: cannot cancel operations"),
        }
        for _ in 0..DROP_WAIT_ROUNDS_MAX {
            if self.slots.in_flight() == 0 {
                break;
            }
            if let Err(error) = self.enter_and_wait(Some(DROP_WAIT_ROUND)) {
                tracing::warn!(%error, "reactor drop: waiting for completions");
                break;
            }
            self.reap(std::mem::drop);
        }
        self.slots.in_flight()
    }
}

fn check_buffer_size(size_bytes: usize) -> Result<(), ReactorError> {
    if size_bytes > BUFFER_SIZE_BYTES_MAX {
        return Err(ReactorError::BufferTooLarge {
            size_bytes,
            max: BUFFER_SIZE_BYTES_MAX,
        });
    }
    Ok(())
}

fn reap_cancel(cancels_in_flight: &mut u32, result: i32) {
    match cancels_in_flight.checked_sub(1) {
        Some(remaining) => *cancels_in_flight = remaining,
        None => {
            tracing::error!(result, "completion of a cancellation never submitted");
            debug_assert!(false, "completion of a cancellation never submitted");
        }
    }
    // 0 or a count (cancel-all): cancelled. ENOENT: finished already. EALREADY: running,
    // cancellation signalled. Anything else is worth a line in the log.
    if result < 0 && result != -libc::ENOENT && result != -libc::EALREADY {
        tracing::debug!(result, "cancellation failed");
    }
}

/// Turns an operation and the kernel's result into the caller's completion.
fn complete(id: OperationId, in_flight: InFlight, result: i32) -> Completion {
    let InFlight {
        token,
        operation,
        owned,
        ..
    } = in_flight;
    let (result, buffer, buffers) = match owned {
        Owned::Buffer(mut buffer) => {
            let result = if operation == Operation::Read {
                set_read_length(&mut buffer, result)
            } else {
                result
            };
            (result, Some(buffer), Vec::new())
        }
        Owned::Command(command) => (result, None, command.buffers),
        Owned::Timespec(_) if result == -libc::ETIME => (0, None, Vec::new()),
        Owned::Timespec(_) | Owned::Nothing => (result, None, Vec::new()),
    };
    Completion {
        token,
        id,
        operation,
        result,
        buffer,
        buffers,
    }
}

/// Offset of `len` in `struct io_uring_sqe` (after opcode, flags, ioprio, fd, off, addr).
const SQE_LEN_OFFSET: usize = 24;

/// `entry` with its `len` field set (the iovec count of a device command; io-uring 0.7's
/// `UringCmd80` has no setter for it).
fn with_len(entry: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const _: () = assert!(size_of::<squeue::Entry128>() == 128);
    // SAFETY: `Entry128` is a `repr(C)` pair of the 64-byte `io_uring_sqe` and 64 bytes of
    // command data, plain data without padding or invalid bit patterns: any 128 bytes are an
    // `Entry128`, and only the 4 bytes of `len` change.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
    raw[SQE_LEN_OFFSET..SQE_LEN_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// Sets the length of a read buffer to the bytes the kernel wrote into it. Returns the result
/// to report: the kernel's, or `-EIO` if it claims more bytes than the buffer holds.
fn set_read_length(buffer: &mut Vec<u8>, result: i32) -> i32 {
    debug_assert!(buffer.is_empty());
    let Ok(length) = usize::try_from(result) else {
        return result;
    };
    if length > buffer.capacity() {
        tracing::error!(
            length,
            capacity = buffer.capacity(),
            "read beyond its buffer"
        );
        return -libc::EIO;
    }
    // SAFETY: the kernel initialised the first `length` bytes, which are within capacity.
    unsafe { buffer.set_len(length) };
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Instant;

    use super::*;

    pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes.
        let status = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(status, 0, "pipe2: {}", io::Error::last_os_error());
        // SAFETY: fresh fds owned by nothing else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn eventfd() -> OwnedFd {
        // SAFETY: plain syscall.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(raw >= 0, "eventfd: {}", io::Error::last_os_error());
        // SAFETY: a fresh fd owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }

    fn write_all(fd: &OwnedFd, bytes: &[u8]) {
        // SAFETY: `bytes` is valid for its length.
        let written = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(written, bytes.len() as isize);
    }

    /// Waits until `count` completions arrived (or panics after 5 s).
    pub(crate) fn wait_for(reactor: &mut Reactor, count: usize) -> Vec<Completion> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut all, mut batch) = (Vec::new(), Vec::new());
        while all.len() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} completions",
                all.len()
            );
            reactor
                .wait(&mut batch, Some(Duration::from_millis(100)))
                .expect("wait");
            all.append(&mut batch);
        }
        assert_eq!(all.len(), count);
        all
    }

    #[test]
    fn read_from_pipe_returns_data_and_buffer() {
        let mut reactor = Reactor::new(4).expect("reactor");
        let (read_end, write_end) = pipe();
        let buffer = Vec::with_capacity(64);
        let address = buffer.as_ptr();
        let id = reactor
            .read(read_end.as_raw_fd(), buffer, Token(7))
            .expect("read");
        assert_eq!(reactor.in_flight(), 1);

        // Nothing written yet: the read stays in flight.
        let mut completions = Vec::new();
        let count = reactor
            .wait(&mut completions, Some(Duration::from_millis(20)))
            .expect("wait");
        assert_eq!(count, 0);
        assert_eq!(reactor.in_flight(), 1);

        write_all(&write_end, b"hello");
        let completions = wait_for(&mut reactor, 1);
        let completion = &completions[0];
        assert_eq!((completion.token, completion.id), (Token(7), id));
        assert_eq!(completion.operation, Operation::Read);
        assert_eq!(completion.result, 5);
        assert_eq!(completion.io_result().expect("ok"), 5);
        let buffer = completion.buffer.as_ref().expect("buffer back");
        assert_eq!(buffer.as_slice(), b"hello");
        assert_eq!(buffer.as_ptr(), address, "the same allocation comes back");
        assert_eq!(buffer.capacity(), 64);
        assert_eq!(reactor.in_flight(), 0);
    }

    #[test]
    fn read_of_closed_writer_is_end_of_file() {
        let mut reactor = Reactor::new(1).expect("reactor");
        let (read_end, write_end) = pipe();
        drop(write_end);
        reactor
            .read(read_end.as_raw_fd(), Vec::with_capacity(8), Token(1))
            .expect("read");
        let completions = wait_for(&mut reactor, 1);
        assert_eq!(completions[0].result, 0);
        assert_eq!(completions[0].buffer.as_ref().map(Vec::len), Some(0));
    }

    #[test]
    fn write_to_pipe_hands_buffer_back() {
        let mut reactor = Reactor::new(2).expect("reactor");
        let (read_end, write_end) = pipe();
        reactor
            .write(write_end.as_raw_fd(), b"ping".to_vec(), Token(3))
            .expect("write");
        let completions = wait_for(&mut reactor, 1);
        assert_eq!(completions[0].operation, Operation::Write);
        assert_eq!(completions[0].result, 4);
        assert_eq!(completions[0].buffer.as_deref(), Some(&b"ping"[..]));

        let mut bytes = [0u8; 8];
        // SAFETY: `bytes` is valid for its length.
        let read = unsafe { libc::read(read_end.as_raw_fd(), bytes.as_mut_ptr().cast(), 8) };
        assert_eq!(&bytes[..read as usize], b"ping");
    }

    #[test]
    fn errors_of_operations_are_results_not_panics() {
        let mut reactor = Reactor::new(2).expect("reactor");
        let (read_end, write_end) = pipe();
        let closed = read_end.as_raw_fd();
        drop((read_end, write_end));
        reactor
            .read(closed, Vec::with_capacity(16), Token(1))
            .expect("read");
        reactor
            .read(-1, Vec::with_capacity(16), Token(2))
            .expect("read");
        let completions = wait_for(&mut reactor, 2);
        for completion in &completions {
            assert_eq!(completion.result, -libc::EBADF);
            assert_eq!(completion.errno(), Some(libc::EBADF));
            let error = completion.io_result().expect_err("EBADF");
            assert_eq!(error.raw_os_error(), Some(libc::EBADF));
            assert_eq!(completion.buffer.as_ref().map(Vec::len), Some(0));
        }
        assert_eq!(reactor.in_flight(), 0);
    }

    #[test]
    fn poll_once_fires_exactly_once() {
        let mut reactor = Reactor::new(2).expect("reactor");
        let event = eventfd();
        reactor
            .poll_once(event.as_raw_fd(), libc::POLLIN as u32, Token(9))
            .expect("poll");
        let mut completions = Vec::new();
        let count = reactor
            .wait(&mut completions, Some(Duration::from_millis(20)))
            .expect("wait");
        assert_eq!(count, 0, "not readable yet");

        write_all(&event, &1u64.to_ne_bytes());
        let completions = wait_for(&mut reactor, 1);
        assert_eq!(completions[0].token, Token(9));
        assert_eq!(completions[0].operation, Operation::Poll);
        assert_ne!(completions[0].result & libc::POLLIN as i32, 0);
        assert!(completions[0].buffer.is_none());

        // Still readable, but the poll was one-shot: nothing more arrives.
        let mut completions = Vec::new();
        let count = reactor
            .wait(&mut completions, Some(Duration::from_millis(50)))
            .expect("wait");
        assert_eq!(count, 0);
        assert_eq!(reactor.in_flight(), 0);
    }

    #[test]
    fn timers_fire_in_order() {
        let mut reactor = Reactor::new(4).expect("reactor");
        let start = Instant::now();
        reactor
            .timer(Duration::from_millis(60), Token(3))
            .expect("timer");
        reactor
            .timer(Duration::from_millis(20), Token(1))
            .expect("timer");
        reactor
            .timer(Duration::from_millis(40), Token(2))
            .expect("timer");
        let completions = wait_for(&mut reactor, 3);
        let tokens: Vec<Token> = completions.iter().map(|c| c.token).collect();
        assert_eq!(tokens, [Token(1), Token(2), Token(3)]);
        assert!(completions.iter().all(|c| c.result == 0), "{completions:?}");
        assert!(completions.iter().all(|c| c.operation == Operation::Timer));
        assert!(start.elapsed() >= Duration::from_millis(60));
    }

    #[test]
    fn cancel_returns_ecanceled_and_stale_ids_match_nothing() {
        let mut reactor = Reactor::new(2).expect("reactor");
        let start = Instant::now();
        let timer = reactor
            .timer(Duration::from_secs(10), Token(1))
            .expect("timer");
        let (read_end, _write_end) = pipe();
        let read = reactor
            .read(read_end.as_raw_fd(), Vec::with_capacity(8), Token(2))
            .expect("read");
        assert!(reactor.cancel(timer).expect("cancel"));
        assert!(reactor.cancel(timer).expect("cancel twice"));
        assert!(reactor.cancel(read).expect("cancel"));
        let mut completions = wait_for(&mut reactor, 2);
        completions.sort_by_key(|c| c.token);
        assert_eq!(completions[0].result, -libc::ECANCELED);
        assert_eq!(completions[1].result, -libc::ECANCELED);
        assert!(
            completions[1].buffer.is_some(),
            "a cancelled read returns its buffer"
        );
        assert!(start.elapsed() < Duration::from_secs(5));

        assert!(!reactor.cancel(timer).expect("stale"));
        assert_eq!(reactor.in_flight(), 0);
        // The cancellations' own completions are reaped internally.
        let mut completions = Vec::new();
        reactor
            .wait(&mut completions, Some(Duration::from_millis(10)))
            .expect("wait");
        assert!(completions.is_empty());
        assert_eq!(reactor.cancels_in_flight, 0);
    }

    #[test]
    fn slot_table_bound_is_enforced() {
        let mut reactor = Reactor::new(2).expect("reactor");
        let event = eventfd();
        let fd = event.as_raw_fd();
        let first = reactor
            .poll_once(fd, libc::POLLIN as u32, Token(1))
            .expect("1");
        reactor
            .poll_once(fd, libc::POLLIN as u32, Token(2))
            .expect("2");
        let refused = reactor.poll_once(fd, libc::POLLIN as u32, Token(3));
        assert!(matches!(refused, Err(ReactorError::Full { capacity: 2 })));
        let refused = reactor.read(fd, Vec::with_capacity(8), Token(4));
        assert!(matches!(refused, Err(ReactorError::Full { .. })));
        assert_eq!(reactor.in_flight(), 2);

        // Reaping one frees one slot.
        reactor.cancel(first).expect("cancel");
        let completions = wait_for(&mut reactor, 1);
        assert_eq!(completions[0].token, Token(1));
        reactor
            .poll_once(fd, libc::POLLIN as u32, Token(5))
            .expect("5");
        assert_eq!(reactor.in_flight(), 2);
    }

    #[test]
    fn invalid_sizes_are_refused() {
        assert!(matches!(
            Reactor::new(0),
            Err(ReactorError::InvalidSlotCount { .. })
        ));
        assert!(matches!(
            Reactor::new(SLOT_COUNT_MAX + 1),
            Err(ReactorError::InvalidSlotCount { .. })
        ));
        let mut reactor = Reactor::new(1).expect("reactor");
        let too_large = Vec::with_capacity(BUFFER_SIZE_BYTES_MAX + 1);
        let refused = reactor.read(0, too_large, Token(1));
        assert!(matches!(refused, Err(ReactorError::BufferTooLarge { .. })));
        assert_eq!(reactor.in_flight(), 0);
    }

    #[test]
    fn full_submission_queue_is_flushed_and_retried() {
        let mut reactor = Reactor::with_submission_entries(8, 2).expect("reactor");
        let event = eventfd();
        for token in 0..8 {
            reactor
                .poll_once(event.as_raw_fd(), libc::POLLIN as u32, Token(token))
                .expect("poll");
        }
        assert_eq!(reactor.in_flight(), 8);
        write_all(&event, &1u64.to_ne_bytes());
        let mut completions = wait_for(&mut reactor, 8);
        completions.sort_by_key(|c| c.token);
        let tokens: Vec<u64> = completions.iter().map(|c| c.token.0).collect();
        assert_eq!(tokens, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn wakeup_without_completion_is_zero_events() {
        let mut reactor = Reactor::new(1).expect("reactor");
        let mut completions = Vec::new();
        let start = Instant::now();
        let count = reactor
            .wait(&mut completions, Some(Duration::from_millis(20)))
            .expect("wait");
        assert_eq!(count, 0);
        assert!(start.elapsed() >= Duration::from_millis(15));
        // Nothing in flight and no timeout: returns at once instead of sleeping forever.
        assert_eq!(reactor.wait(&mut completions, None).expect("wait"), 0);
        assert_eq!(
            reactor
                .wait(&mut completions, Some(Duration::ZERO))
                .expect("wait"),
            0
        );
    }

    #[test]
    fn drop_with_operations_in_flight_cancels_them() {
        let (read_end, _write_end) = pipe();
        let mut reactor = Reactor::new(2).expect("reactor");
        reactor
            .read(read_end.as_raw_fd(), Vec::with_capacity(8), Token(1))
            .expect("read");
        reactor
            .timer(Duration::from_secs(60), Token(2))
            .expect("timer");
        reactor.submit().expect("submit");
        let start = Instant::now();
        assert_eq!(reactor.cancel_all_and_reap(), 0, "nothing left to leak");
        assert!(start.elapsed() < Duration::from_millis(500));
        // Queued but never submitted: dropping cancels those too.
        reactor
            .read(read_end.as_raw_fd(), Vec::with_capacity(8), Token(3))
            .expect("read");
        assert_eq!(reactor.in_flight(), 1);
        drop(reactor);
    }

    /// A mount of an empty FUSE file system on a temporary directory, detached on drop.
    struct FuseMount {
        device: OwnedFd,
        directory: std::path::PathBuf,
    }

    impl FuseMount {
        /// Mounts; panics where that is impossible (the suite runs as root
        /// with /dev/fuse, as .ci/run provides: a skipped test is a missing test).
        fn new() -> Self {
            use std::ffi::CString;
            let path = c"/dev/fuse";
            // SAFETY: a NUL-terminated path.
            let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            assert!(
                raw >= 0,
                "cannot open /dev/fuse: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh fd owned by nothing else.
            let device = unsafe { OwnedFd::from_raw_fd(raw) };
            let directory = std::env::temp_dir().join(format!(
                "pmxcfs-reactor-fuse-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&directory).expect("mount point");
            let target = CString::new(directory.as_os_str().as_encoded_bytes()).expect("path");
            let options = CString::new(format!("fd={raw},rootmode=40000,user_id=0,group_id=0"))
                .expect("options");
            // SAFETY: NUL-terminated strings that outlive the call.
            let status = unsafe {
                libc::mount(
                    c"pmxcfs-reactor-test".as_ptr(),
                    target.as_ptr(),
                    c"fuse".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    options.as_ptr().cast(),
                )
            };
            if status != 0 {
                let error = std::io::Error::last_os_error();
                let _ = std::fs::remove_dir(&directory);
                panic!("cannot mount FUSE (needs root): {error}");
            }
            FuseMount { device, directory }
        }

        fn unmount(&self) {
            let target = std::ffi::CString::new(self.directory.as_os_str().as_encoded_bytes())
                .expect("path");
            // SAFETY: a NUL-terminated path. Errors (already unmounted) are harmless.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }

    impl Drop for FuseMount {
        fn drop(&mut self) {
            self.unmount();
            let _ = std::fs::remove_dir(&self.directory);
        }
    }

    #[test]
    fn read_of_unmounted_fuse_device_is_enodev() {
        let mount = FuseMount::new();
        let mut reactor = Reactor::new(2).expect("reactor");
        let fd = mount.device.as_raw_fd();
        // The kernel's first request is FUSE_INIT: a read completes with it.
        reactor
            .read(fd, Vec::with_capacity(1 << 20), Token(1))
            .expect("read");
        let completions = wait_for(&mut reactor, 1);
        assert!(completions[0].result > 0, "{completions:?}");
        // The next read waits; unmounting ends it with ENODEV.
        let buffer = completions.into_iter().next().and_then(|c| c.buffer);
        reactor
            .read(fd, buffer.expect("buffer"), Token(2))
            .expect("read");
        reactor.submit().expect("submit");
        mount.unmount();
        let completions = wait_for(&mut reactor, 1);
        assert_eq!(completions[0].errno(), Some(libc::ENODEV));
        assert!(completions[0].buffer.is_some());
    }

    /// Random submissions, cancellations and waits against a small table and a tiny
    /// submission queue: every operation completes exactly once, the bound holds throughout,
    /// and the reactor's count matches ours.
    #[test]
    fn churn_accounts_for_every_operation() {
        use std::collections::HashMap;

        let mut reactor = Reactor::with_submission_entries(8, 2).expect("reactor");
        let event = eventfd();
        let (read_end, write_end) = pipe();
        let mut random = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        let mut outstanding: HashMap<Token, OperationId> = HashMap::new();
        let (mut completions, mut refused) = (Vec::new(), 0);
        for round in 0..2000u64 {
            let token = Token(round);
            let submitted = match next() % 5 {
                0 => reactor.poll_once(event.as_raw_fd(), libc::POLLOUT as u32, token),
                1 => reactor.timer(Duration::from_micros(next() % 2000), token),
                2 => reactor.read(read_end.as_raw_fd(), Vec::with_capacity(4), token),
                3 => reactor.write(write_end.as_raw_fd(), vec![1], token),
                _ => {
                    if let Some(&id) = outstanding.values().next() {
                        assert!(reactor.cancel(id).expect("cancel"));
                    }
                    continue;
                }
            };
            match submitted {
                Ok(id) => assert!(outstanding.insert(token, id).is_none()),
                Err(ReactorError::Full { capacity }) => {
                    assert_eq!(reactor.in_flight(), capacity);
                    refused += 1;
                }
                Err(error) => panic!("{error}"),
            }
            let timeout = Duration::from_micros(next() % 500);
            reactor.wait(&mut completions, Some(timeout)).expect("wait");
            for completion in completions.drain(..) {
                let id = outstanding
                    .remove(&completion.token)
                    .expect("one completion each");
                assert_eq!(id, completion.id);
                assert!(completion.result >= 0 || completion.result == -libc::ECANCELED);
            }
            assert_eq!(reactor.in_flight() as usize, outstanding.len());
            assert!(reactor.cancels_in_flight <= reactor.capacity());
        }
        assert!(refused > 0, "the bound was never reached");
        let ids: Vec<OperationId> = outstanding.values().copied().collect();
        for id in ids {
            reactor.cancel(id).expect("cancel");
        }
        for completion in wait_for(&mut reactor, outstanding.len()) {
            assert!(outstanding.remove(&completion.token).is_some());
        }
        assert_eq!(reactor.in_flight(), 0);
    }

    #[test]
    fn user_data_round_trips() {
        let id = OperationId {
            index: 4095,
            generation: u32::MAX,
        };
        assert_eq!(OperationId::from_user_data(id.to_user_data()), id);
        assert_ne!(id.to_user_data(), CANCEL_USER_DATA);
    }

    #[test]
    fn a_device_command_entry_carries_op_addr_and_iovec_count() {
        let entry = opcode::UringCmd80::new(Fd(7), 0x1234)
            .cmd([0xab; 80])
            .addr(Some(0x1122_3344_5566_7788))
            .build();
        let entry = with_len(entry, 2);
        // SAFETY: an Entry128 is 128 bytes of plain data (see `with_len`).
        let raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
        assert_eq!(raw[0], opcode::UringCmd80::CODE);
        assert_eq!(raw[4..8], 7i32.to_ne_bytes(), "fd");
        assert_eq!(raw[8..12], 0x1234u32.to_ne_bytes(), "cmd_op");
        assert_eq!(raw[16..24], 0x1122_3344_5566_7788u64.to_ne_bytes(), "addr");
        assert_eq!(raw[24..28], 2u32.to_ne_bytes(), "len");
        assert!(
            raw[48..128].iter().all(|byte| *byte == 0xab),
            "command data"
        );
    }

    /// A file without device commands refuses one; its buffers come back all the same, at
    /// the addresses they had.
    #[test]
    fn a_refused_device_command_hands_its_buffers_back() {
        let mut reactor = Reactor::new(4).expect("reactor");
        let (read_end, _write_end) = pipe();
        let buffers = vec![vec![1u8; 288], vec![2u8; 1 << 20]];
        let addresses: Vec<*const u8> = buffers.iter().map(|b| b.as_ptr()).collect();
        let command = Command {
            op: 1,
            data: [0; 80],
            buffers,
        };
        reactor
            .command(read_end.as_raw_fd(), command, Token(9))
            .expect("submit");
        let completion = wait_for(&mut reactor, 1).remove(0);
        assert_eq!(completion.token, Token(9));
        assert_eq!(completion.operation, Operation::Command);
        assert_eq!(completion.errno(), Some(libc::EOPNOTSUPP));
        assert!(completion.buffer.is_none());
        let back: Vec<*const u8> = completion.buffers.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(back, addresses);
        assert_eq!(completion.buffers[0], vec![1u8; 288]);
        assert_eq!(completion.buffers[1].len(), 1 << 20);
    }

    /// A device command that succeeds: a socket's SIOCINQ (`SOCKET_URING_OP_SIOCINQ`, Linux
    /// 6.7) answers the size of the datagram waiting.
    #[test]
    fn a_device_command_gets_the_devices_answer() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = socket.local_addr().expect("address");
        socket.send_to(b"hello", address).expect("send");
        let mut reactor = Reactor::new(4).expect("reactor");
        let command = Command {
            op: 0,
            data: [0; 80],
            buffers: Vec::new(),
        };
        reactor
            .command(socket.as_raw_fd(), command, Token(1))
            .expect("submit");
        let completion = wait_for(&mut reactor, 1).remove(0);
        assert_eq!(completion.result, 5, "{completion:?}");
        assert!(completion.buffers.is_empty());
    }

    #[test]
    fn device_commands_with_too_many_or_too_large_buffers_are_refused() {
        let mut reactor = Reactor::new(4).expect("reactor");
        let (read_end, _write_end) = pipe();
        let many = Command {
            op: 1,
            data: [0; 80],
            buffers: vec![Vec::new(); COMMAND_BUFFERS_MAX + 1],
        };
        assert!(matches!(
            reactor.command(read_end.as_raw_fd(), many, Token(1)),
            Err(ReactorError::TooManyBuffers { .. })
        ));
        let large = Command {
            op: 1,
            data: [0; 80],
            buffers: vec![vec![0; BUFFER_SIZE_BYTES_MAX + 1]],
        };
        assert!(matches!(
            reactor.command(read_end.as_raw_fd(), large, Token(1)),
            Err(ReactorError::BufferTooLarge { .. })
        ));
        assert_eq!(reactor.in_flight(), 0);
    }
}
