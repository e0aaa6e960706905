//! The fixed-capacity table of operations in flight.
//!
//! Every operation handed to the kernel owns one slot from submission until its completion is
//! reaped. The slot holds what the kernel may touch meanwhile (the buffer, the timespec), so
//! nothing the kernel owns can be dropped, moved or resubmitted by the caller. The table is
//! allocated once; inserting into a full table is refused, never grown.

use io_uring::types::Timespec;

use crate::{Operation, OperationId, Token};

/// What the kernel may read or write while an operation is in flight.
#[derive(Debug)]
pub(crate) enum Owned {
    /// Poll: the kernel touches no memory of ours.
    Nothing,
    /// Read or write: the kernel reads or writes the buffer's heap allocation.
    Buffer(Vec<u8>),
    /// Timer: the kernel reads the timespec (boxed so its address is stable).
    Timespec(
        #[expect(dead_code, reason = "held only to keep it alive for the kernel")] Box<Timespec>,
    ),
    /// Device command: the kernel reads the iovec array and reads or writes the buffers' heap
    /// allocations it describes.
    Command(CommandBuffers),
}

/// The buffers of a device command and the iovec array that describes them to the kernel.
pub(crate) struct CommandBuffers {
    pub(crate) buffers: Vec<Vec<u8>>,
    #[expect(dead_code, reason = "held only to keep it alive for the kernel")]
    pub(crate) iovecs: Box<[libc::iovec]>,
}

impl std::fmt::Debug for CommandBuffers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<usize> = self.buffers.iter().map(Vec::len).collect();
        formatter
            .debug_struct("CommandBuffers")
            .field("sizes", &sizes)
            .finish()
    }
}

/// One operation in flight.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) token: Token,
    pub(crate) operation: Operation,
    pub(crate) owned: Owned,
    pub(crate) cancel_requested: bool,
}

#[derive(Debug)]
struct Slot {
    /// Bumped whenever the slot is freed, so a stale `OperationId` never matches a new occupant.
    generation: u32,
    in_flight: Option<InFlight>,
}

#[derive(Debug)]
pub(crate) struct SlotTable {
    slots: Box<[Slot]>,
    /// Indices of free slots, used as a stack. Its capacity is fixed at `slots.len()`.
    free: Vec<u32>,
}

impl SlotTable {
    pub(crate) fn new(capacity: u32) -> Self {
        assert!(capacity > 0);
        let slots: Box<[Slot]> = (0..capacity)
            .map(|_| Slot {
                generation: 0,
                in_flight: None,
            })
            .collect();
        // Reversed so that index 0 is taken first: easier to read in traces.
        let free: Vec<u32> = (0..capacity).rev().collect();
        assert_eq!(free.len(), slots.len());
        SlotTable { slots, free }
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    pub(crate) fn in_flight(&self) -> u32 {
        debug_assert!(self.free.len() <= self.slots.len());
        (self.slots.len() - self.free.len()) as u32
    }

    /// Takes a free slot, or returns `None` when all are in flight.
    pub(crate) fn insert(&mut self, in_flight: InFlight) -> Option<OperationId> {
        let index = self.free.pop()?;
        let slot = &mut self.slots[index as usize];
        assert!(slot.in_flight.is_none(), "free list held a used slot");
        slot.in_flight = Some(in_flight);
        Some(OperationId {
            index,
            generation: slot.generation,
        })
    }

    pub(crate) fn get_mut(&mut self, id: OperationId) -> Option<&mut InFlight> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.in_flight.as_mut()
    }

    /// Frees the slot of `id` and hands back its operation, or `None` if `id` is stale.
    pub(crate) fn remove(&mut self, id: OperationId) -> Option<InFlight> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let in_flight = slot.in_flight.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        assert!(self.free.len() < self.slots.len());
        self.free.push(id.index);
        Some(in_flight)
    }

    /// Forgets the owned memory of every operation still in flight, so that the kernel can never
    /// write into freed memory. Returns how many operations were leaked.
    pub(crate) fn leak_all(&mut self) -> u32 {
        let mut leaked = 0;
        for slot in self.slots.iter_mut() {
            if let Some(in_flight) = slot.in_flight.take() {
                std::mem::forget(in_flight.owned);
                leaked += 1;
            }
        }
        leaked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(token: u64) -> InFlight {
        InFlight {
            token: Token(token),
            operation: Operation::Poll,
            owned: Owned::Nothing,
            cancel_requested: false,
        }
    }

    #[test]
    fn insert_is_bounded_and_remove_frees() {
        let mut table = SlotTable::new(2);
        let a = table.insert(poll(1)).expect("slot a");
        let b = table.insert(poll(2)).expect("slot b");
        assert_ne!(a, b);
        assert_eq!(table.in_flight(), 2);
        assert!(table.insert(poll(3)).is_none());

        assert_eq!(table.remove(a).map(|op| op.token), Some(Token(1)));
        assert_eq!(table.in_flight(), 1);
        let c = table.insert(poll(3)).expect("slot c");
        assert_eq!(c.index, a.index);
        assert_ne!(c.generation, a.generation);
    }

    #[test]
    fn stale_ids_match_nothing() {
        let mut table = SlotTable::new(1);
        let a = table.insert(poll(1)).expect("slot a");
        assert!(table.remove(a).is_some());
        assert!(table.remove(a).is_none());
        let b = table.insert(poll(2)).expect("slot b");
        assert!(table.get_mut(a).is_none());
        assert!(table.remove(a).is_none());
        assert_eq!(table.get_mut(b).map(|op| op.token), Some(Token(2)));
        let out_of_range = OperationId {
            index: 7,
            generation: 0,
        };
        assert!(table.get_mut(out_of_range).is_none());
        assert!(table.remove(out_of_range).is_none());
    }
}
