//! The one error type of the reactor.
//!
//! Operating errors only: a full slot table, a kernel that refuses a ring, a failed
//! `io_uring_enter`. Errors of individual operations (EBADF, ENODEV, ECANCELED, ...) are not
//! errors of the reactor: they arrive as negative `result`s in their [`crate::Completion`].

use std::io;

/// Why the reactor could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    /// `slot_count` is outside `1..=SLOT_COUNT_MAX`.
    #[error("slot count {requested} is outside 1..={max}")]
    InvalidSlotCount { requested: u32, max: u32 },

    /// The kernel refused to set up the ring.
    #[error("io_uring setup failed: {0}")]
    Setup(#[source] io::Error),

    /// The kernel lacks an io_uring feature the reactor relies on.
    #[error("the kernel's io_uring lacks {0}")]
    Unsupported(&'static str),

    /// Every slot holds an operation in flight (the designed behaviour at the bound):
    /// reap completions with `wait` and try again.
    #[error("all {capacity} operation slots are in flight")]
    Full { capacity: u32 },

    /// Every slot has a cancellation in flight already.
    #[error("all {capacity} cancellation slots are in flight")]
    CancelsFull { capacity: u32 },

    /// A buffer larger than `BUFFER_SIZE_BYTES_MAX`.
    #[error("buffer of {size_bytes} bytes exceeds the limit of {max} bytes")]
    BufferTooLarge { size_bytes: usize, max: usize },

    /// A device command with more buffers than `COMMAND_BUFFERS_MAX`.
    #[error("device command with {count} buffers exceeds the limit of {max}")]
    TooManyBuffers { count: usize, max: usize },

    /// The submission queue stayed full although it was just handed to the kernel.
    #[error("submission queue still full after submitting it")]
    SubmissionQueueFull,

    /// `io_uring_enter` failed (other than by a timeout or an interrupting signal).
    #[error("io_uring_enter failed: {0}")]
    Enter(#[source] io::Error),

    /// Blocking signals or creating the signalfd failed.
    #[error("signal setup failed: {0}")]
    Signal(#[source] io::Error),
}
