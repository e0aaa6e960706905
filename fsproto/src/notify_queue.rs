//! The bounded queue between the request paths and the notifier thread that
//! writes kernel cache invalidations to /dev/fuse.
//!
//! The notifier is a thread of its own because the kernel may hold an
//! invalidation until a client releases a directory lock, while that client
//! waits for the daemon. Invalidations are idempotent, so an invalidation
//! equal to one still pending is coalesced with it: the queue holds at most
//! one message per cache target, and a flood of remote changes to the same
//! files does not grow it. Beyond [`MAX_PENDING`] distinct targets new ones
//! are dropped and the queue reports an overflow, after which the channel
//! invalidates every entry the kernel knows of once the queue has room again.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Distinct invalidations waiting for the notifier at most (about three per
/// entry of a 20,000-entry tree after a resync).
pub const MAX_PENDING: usize = 65_536;

/// What happened to one pushed invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// An identical invalidation was still pending.
    Coalesced,
    /// The queue was full: dropped (an overflow is reported).
    Dropped,
    /// The notifier has stopped.
    Closed,
}

#[derive(Default)]
struct Inner {
    order: VecDeque<Vec<u8>>,
    pending: HashSet<Vec<u8>>,
    closed: bool,
    overflowed: bool,
    dropped: u64,
}

pub struct NotifyQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    cap: usize,
}

impl NotifyQueue {
    pub fn new(cap: usize) -> NotifyQueue {
        NotifyQueue {
            inner: Mutex::new(Inner::default()),
            ready: Condvar::new(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic of the other side leaves plain data behind: go on.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, message: Vec<u8>) -> Push {
        let mut inner = self.lock();
        if inner.closed {
            return Push::Closed;
        }
        if inner.pending.contains(&message) {
            return Push::Coalesced;
        }
        if inner.order.len() >= self.cap {
            inner.overflowed = true;
            inner.dropped += 1;
            return Push::Dropped;
        }
        inner.pending.insert(message.clone());
        inner.order.push_back(message);
        drop(inner);
        self.ready.notify_one();
        Push::Queued
    }

    /// The next invalidation (blocks); `None` once closed and empty.
    pub fn pop(&self) -> Option<Vec<u8>> {
        let mut inner = self.lock();
        loop {
            if let Some(message) = inner.order.pop_front() {
                inner.pending.remove(&message);
                return Some(message);
            }
            if inner.closed {
                return None;
            }
            inner = self
                .ready
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Stops the notifier once the queue is drained.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// `true` once after an overflow, when at least half of the queue is
    /// free again: time to invalidate everything the kernel knows.
    pub fn take_overflow(&self) -> bool {
        let mut inner = self.lock();
        if inner.overflowed && inner.order.len() <= self.cap / 2 {
            inner.overflowed = false;
            return true;
        }
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Invalidations dropped at the bound so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_invalidations_coalesce_while_pending() {
        let q = NotifyQueue::new(4);
        assert_eq!(q.push(vec![1]), Push::Queued);
        for _ in 0..1000 {
            assert_eq!(q.push(vec![1]), Push::Coalesced);
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(), Some(vec![1]));
        // Written: the next equal one is needed again.
        assert_eq!(q.push(vec![1]), Push::Queued);
    }

    #[test]
    fn a_full_queue_drops_and_reports_the_overflow_when_drained() {
        let q = NotifyQueue::new(4);
        for i in 0..4u8 {
            assert_eq!(q.push(vec![i]), Push::Queued);
        }
        assert_eq!(q.push(vec![9]), Push::Dropped);
        assert_eq!(
            q.push(vec![0]),
            Push::Coalesced,
            "pending ones still coalesce"
        );
        assert_eq!((q.len(), q.dropped()), (4, 1));
        assert!(!q.take_overflow(), "not before there is room");
        q.pop();
        q.pop();
        assert!(q.take_overflow());
        assert!(!q.take_overflow(), "reported once");
    }

    #[test]
    fn close_ends_the_notifier_after_the_queue() {
        let q = std::sync::Arc::new(NotifyQueue::new(8));
        q.push(vec![1]);
        q.push(vec![2]);
        q.close();
        assert_eq!(q.push(vec![3]), Push::Closed);
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || std::iter::from_fn(|| q.pop()).count())
        };
        assert_eq!(worker.join().unwrap(), 2);
    }
}
