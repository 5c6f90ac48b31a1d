//! Which deliveries may start now: the admission policy, without I/O or time.
//!
//! A receiver that is slow or silent holds each delivery to it for a whole timeout. If every
//! delivery drew from one pool, a few dozen callbacks to one such receiver would hold the whole
//! pool and every other receiver would wait behind them. So slots are counted twice: at most
//! `max_in_flight_per_host` in flight to one receiver (its origin: scheme, host and port) and
//! `max_in_flight` in all. A delivery that finds its receiver's slots taken waits in that
//! receiver's queue (in arrival order); one that finds only the shared slots taken waits until
//! one frees, and freed shared slots go to the waiting receivers in turn. A slow receiver thus
//! delays its own deliveries, never another's. The queues are bounded (`max_queued_per_host`
//! each, `queue_size` in all); past them a delivery is dropped, and the caller counts it.
//!
//! Only due deliveries pass through here: a failed attempt waits for its retry in the timer
//! queue, holding no slot.

use std::collections::{HashMap, VecDeque};

use crate::settings::WebhookSettings;

/// A receiver, as slots count it: the callback URL's origin (`scheme://host:port`).
pub(crate) type Origin = String;

/// What [`Slots::offer`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit<T> {
    /// Start it now; it holds a slot until [`Slots::finish`].
    Start(T),
    /// It waits for a slot; [`Slots::finish`] hands it out later.
    Queued,
    /// No room to wait either.
    Dropped(T),
}

#[derive(Debug)]
struct Receiver<T> {
    in_flight: usize,
    queue: VecDeque<T>,
    /// In `Slots::turns`: has waiting deliveries and a free slot of its own.
    has_turn: bool,
}

impl<T> Default for Receiver<T> {
    fn default() -> Self {
        Receiver {
            in_flight: 0,
            queue: VecDeque::new(),
            has_turn: false,
        }
    }
}

/// Slots per receiver and in all, and the deliveries waiting for them.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    per_host: usize,
    total: usize,
    queued_per_host: usize,
    queue_size: usize,
    in_flight: usize,
    queued: usize,
    /// Receivers with something in flight or waiting; an idle one has no entry.
    receivers: HashMap<Origin, Receiver<T>>,
    /// Receivers waiting only for a shared slot, served in turn.
    turns: VecDeque<Origin>,
}

impl<T> Slots<T> {
    /// Empty, with the limits of `s`.
    pub(crate) fn new(s: &WebhookSettings) -> Self {
        Slots {
            per_host: s.max_in_flight_per_host,
            total: s.max_in_flight,
            queued_per_host: s.max_queued_per_host,
            queue_size: s.queue_size,
            in_flight: 0,
            queued: 0,
            receivers: HashMap::new(),
            turns: VecDeque::new(),
        }
    }

    /// A delivery to `origin` is due.
    pub(crate) fn offer(&mut self, origin: &str, item: T) -> Admit<T> {
        let (per_host, queued_per_host) = (self.per_host, self.queued_per_host);
        let shared_free = self.in_flight < self.total;
        let room_to_wait = self.queued < self.queue_size;
        let r = self.receivers.entry(origin.to_owned()).or_default();
        let own_free = r.in_flight < per_host;
        if own_free && shared_free && r.queue.is_empty() {
            r.in_flight += 1;
            self.in_flight += 1;
            return Admit::Start(item);
        }
        if !room_to_wait || r.queue.len() >= queued_per_host {
            if r.in_flight == 0 && r.queue.is_empty() {
                self.receivers.remove(origin);
            }
            return Admit::Dropped(item);
        }
        r.queue.push_back(item);
        self.queued += 1;
        if own_free && !r.has_turn {
            r.has_turn = true;
            self.turns.push_back(origin.to_owned());
        }
        Admit::Queued
    }

    /// A delivery to `origin` has ended; returns the waiting ones that may start now.
    pub(crate) fn finish(&mut self, origin: &str) -> Vec<(Origin, T)> {
        if let Some(r) = self.receivers.get_mut(origin) {
            r.in_flight = r.in_flight.saturating_sub(1);
            self.in_flight = self.in_flight.saturating_sub(1);
            if !r.queue.is_empty() && !r.has_turn {
                r.has_turn = true;
                self.turns.push_back(origin.to_owned());
            } else if r.in_flight == 0 && r.queue.is_empty() && !r.has_turn {
                self.receivers.remove(origin);
            }
        }
        let mut start = Vec::new();
        while self.in_flight < self.total {
            let Some(origin) = self.turns.pop_front() else {
                break;
            };
            let Some(r) = self.receivers.get_mut(&origin) else {
                continue;
            };
            r.has_turn = false;
            if r.in_flight >= self.per_host {
                // Its own finish gives it a turn again.
                continue;
            }
            if let Some(item) = r.queue.pop_front() {
                r.in_flight += 1;
                self.in_flight += 1;
                self.queued -= 1;
                if !r.queue.is_empty() && r.in_flight < self.per_host {
                    r.has_turn = true;
                    self.turns.push_back(origin.clone());
                }
                start.push((origin, item));
            } else if r.in_flight == 0 {
                self.receivers.remove(&origin);
            }
        }
        start
    }

    /// `(in flight, waiting, receivers tracked)`.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        (self.in_flight, self.queued, self.receivers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(
        per_host: usize,
        total: usize,
        queued_per_host: usize,
        queue_size: usize,
    ) -> Slots<u32> {
        Slots::new(&WebhookSettings {
            max_in_flight_per_host: per_host,
            max_in_flight: total,
            max_queued_per_host: queued_per_host,
            queue_size,
            ..crate::Settings::default().webhooks
        })
    }

    #[test]
    fn a_busy_receiver_waits_for_its_own_slots_while_others_start() {
        let mut s = slots(2, 10, 100, 100);
        let admitted: Vec<_> = (0..64).map(|i| s.offer("http://hole", i)).collect();
        assert_eq!(admitted[..2], [Admit::Start(0), Admit::Start(1)]);
        assert!(admitted[2..].iter().all(|a| *a == Admit::Queued));
        assert_eq!(s.offer("http://healthy", 100), Admit::Start(100));
        assert_eq!(s.counts(), (3, 62, 2));
        // The healthy receiver's end frees nothing for the busy one.
        assert!(s.finish("http://healthy").is_empty());
        assert_eq!(s.counts(), (2, 62, 1));
        // The busy one's own end lets its next delivery start, in order.
        assert_eq!(
            s.finish("http://hole"),
            vec![("http://hole".to_string(), 2)]
        );
    }

    #[test]
    fn shared_slots_go_to_waiting_receivers_in_turn() {
        let mut s = slots(2, 2, 100, 100);
        assert_eq!(s.offer("a", 1), Admit::Start(1));
        assert_eq!(s.offer("a", 2), Admit::Start(2));
        for (origin, i) in [("a", 3), ("b", 10), ("b", 11), ("c", 20)] {
            assert_eq!(s.offer(origin, i), Admit::Queued);
        }
        // `a` is at its own limit; `b` and `c` wait for shared slots, in turn.
        let o = |s: &str, i| (s.to_string(), i);
        assert_eq!(s.finish("a"), vec![o("b", 10)]);
        assert_eq!(s.finish("a"), vec![o("c", 20)]);
        assert_eq!(s.finish("b"), vec![o("a", 3)]);
        assert_eq!(s.finish("c"), vec![o("b", 11)]);
        for origin in ["a", "b"] {
            assert!(s.finish(origin).is_empty());
        }
        assert_eq!(s.counts(), (0, 0, 0), "idle receivers are forgotten");
    }

    #[test]
    fn waiting_is_bounded_per_receiver_and_in_all() {
        let mut s = slots(1, 10, 2, 3);
        assert_eq!(s.offer("a", 0), Admit::Start(0));
        assert_eq!(s.offer("a", 1), Admit::Queued);
        assert_eq!(s.offer("a", 2), Admit::Queued);
        assert_eq!(s.offer("a", 3), Admit::Dropped(3), "a's own queue is full");
        assert_eq!(s.offer("b", 10), Admit::Start(10));
        assert_eq!(s.offer("b", 11), Admit::Queued);
        assert_eq!(s.offer("b", 12), Admit::Dropped(12), "all queues are full");
        // A receiver that would start at once is never dropped.
        assert_eq!(s.offer("c", 20), Admit::Start(20));
        assert_eq!(s.offer("d", 30), Admit::Start(30));
        assert_eq!(s.offer("e", 40), Admit::Start(40));
        assert_eq!(s.counts(), (5, 3, 5));
    }
}
