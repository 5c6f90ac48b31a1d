//! A queue of things due at instants, soonest first.
//!
//! The store's finishes and expiries and the webhooks' deliveries are all "do this at that
//! instant", for many items at once. A binary heap gives each an `O(log n)` push and pop and
//! an `O(1)` look at the next one, so whoever drains it only ever touches what is due: no scan,
//! no task per item. Items due at the same instant come out in the order they went in.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tokio::time::Instant;

/// Items by the instant they are due.
#[derive(Debug)]
pub(crate) struct Timeline<T> {
    heap: BinaryHeap<Reverse<Slot<T>>>,
    seq: u64,
}

/// One item, ordered by `(at, seq)` only.
#[derive(Debug)]
struct Slot<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Slot<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> Timeline<T> {
    /// Adds `item`, due at `at`.
    pub(crate) fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Slot {
            at,
            seq: self.seq,
            item,
        }));
    }

    /// When the next item is due, if any.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(s)| s.at)
    }

    /// Takes the next item if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(s)| s.item)
    }

    /// Items held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn items_come_out_when_due_soonest_first_ties_in_order() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut q = Timeline::default();
        for (ms, name) in [(30, "c"), (10, "a"), (20, "b1"), (20, "b2")] {
            q.push(at(ms), name);
        }
        assert_eq!(q.next_at(), Some(at(10)));
        assert_eq!(q.pop_due(at(5)), None);
        assert_eq!(q.pop_due(at(20)), Some("a"));
        assert_eq!(q.pop_due(at(20)), Some("b1"));
        assert_eq!(q.pop_due(at(20)), Some("b2"));
        assert_eq!(q.pop_due(at(20)), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(at(99)), Some("c"));
        assert_eq!((q.pop_due(at(99)), q.next_at()), (None, None));
    }
}
