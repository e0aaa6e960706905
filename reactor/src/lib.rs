//! pmxcfs-reactor: a single-threaded event loop on io_uring.
//!
//! Event sources: reads of an fd into an owned buffer (the /dev/fuse fd, the signalfd),
//! writes from an owned buffer, one-shot polls of any fd, timers, device commands with owned
//! buffers (FUSE over io_uring's queue entries), and signals through a signalfd. It knows nothing of FUSE, corosync or pmxcfs: it hands out completions tagged with
//! the caller's [`Token`].
//!
//! ```no_run
//! use pmxcfs_reactor::{Reactor, Token};
//! let mut reactor = Reactor::new(64)?;
//! let (fd, buffer) = (0, Vec::with_capacity(4096));
//! reactor.read(fd, buffer, Token(1))?;
//! let mut completions = Vec::new();
//! reactor.wait(&mut completions, None)?;
//! for completion in completions.drain(..) {
//!     // completion.token, completion.result, completion.buffer (the kernel is done with it)
//! }
//! # Ok::<(), pmxcfs_reactor::ReactorError>(())
//! ```

mod error;
mod reactor;
mod signals;
mod slots;

pub use error::ReactorError;
pub use reactor::{
    BUFFER_SIZE_BYTES_MAX, COMMAND_BUFFERS_MAX, Command, Completion, Operation, OperationId,
    Reactor, SLOT_COUNT_MAX, Token,
};
pub use signals::{DAEMON_SIGNALS, SIGINFO_SIZE_BYTES, SIGNALS_PER_READ_MAX, SignalInfo, Signals};
