//! The simulator's agenda: what happens next, earliest first; items due at the same instant come out in
//! the order they were scheduled.
//!
//! The heap holds only `(due, serial, slot)`; the items themselves stay put in a slab of reused slots, so
//! neither a heap sift nor a hash lookup moves or hashes an item.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Items by due time, ties in scheduling order.
#[derive(Debug)]
pub(crate) struct Agenda<T> {
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    serial: u64,
}

impl<T> Default for Agenda<T> {
    fn default() -> Self {
        Agenda {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            serial: 0,
        }
    }
}

impl<T> Agenda<T> {
    /// Schedules `item` at `at`, after everything already scheduled at `at`.
    pub(crate) fn push(&mut self, at: Instant, item: T) {
        self.serial += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(item);
                slot
            }
            None => {
                self.slots.push(Some(item));
                self.slots.len() - 1
            }
        };
        self.heap.push(Reverse((at, self.serial, slot)));
    }

    /// When the next item is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next item, taken off the agenda.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let Reverse((_, _, slot)) = self.heap.pop()?;
        self.free.push(slot);
        self.slots[slot].take()
    }

    /// True when nothing is scheduled.
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_ties_in_scheduling_order() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut a = Agenda::default();
        for (at, what) in [(5, "c"), (1, "a"), (5, "d"), (3, "b"), (5, "e")] {
            a.push(ms(at), what);
        }
        assert_eq!(a.next_due(), Some(ms(1)));
        assert_eq!(a.pop(), Some("a"));
        // A slot freed by "a" is reused; the order still follows due time, then scheduling order.
        a.push(ms(5), "f");
        a.push(ms(2), "a2");
        let rest: Vec<_> = std::iter::from_fn(|| a.pop()).collect();
        assert_eq!(rest, ["a2", "b", "c", "d", "e", "f"]);
        assert!(a.is_empty() && a.next_due().is_none());
    }
}
