//! The replay cache: the ids of deliveries already received, bounded in count and age.
//!
//! A map from id to when it was seen, and the ids in the order they came. Admitting an id
//! first drops the ids older than the time to live from the front, then — when the cache is
//! full — the oldest one: memory never exceeds the capacity, whatever arrives. A forgotten id
//! (a delivery whose event could not be handed on) leaves a stale entry in the order; it is
//! skipped when it reaches the front, and counts toward the capacity until then, so the bound
//! holds.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Whether an id is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Not seen within the time to live: remembered now.
    New,
    /// Seen before, and still remembered.
    Seen,
}

/// Ids seen, at most `capacity`, each for at most `ttl`.
#[derive(Debug)]
pub(super) struct ReplayCache {
    capacity: usize,
    ttl: Duration,
    /// Each remembered id: when it was seen (since the Unix epoch) and its entry's number in
    /// `order`.
    seen: HashMap<Box<str>, (Duration, u64)>,
    /// Ids in the order they were admitted, with their entry's number.
    order: VecDeque<(u64, Box<str>)>,
    /// The next entry's number.
    next: u64,
}

impl ReplayCache {
    pub(super) fn new(capacity: usize, ttl: Duration) -> Self {
        ReplayCache {
            capacity,
            ttl,
            seen: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// Admits `id` at `now` (since the Unix epoch): new, or seen within the time to live.
    pub(super) fn admit(&mut self, id: &str, now: Duration) -> Admission {
        self.expire(now);
        if let Some((at, _)) = self.seen.get(id)
            && now.saturating_sub(*at) < self.ttl
        {
            return Admission::Seen;
        }
        while self.order.len() >= self.capacity {
            self.pop_front();
        }
        let entry = self.next;
        self.next += 1;
        self.seen.insert(id.into(), (now, entry));
        self.order.push_back((entry, id.into()));
        Admission::New
    }

    /// Forgets `id`, so that the sender's next attempt is admitted.
    pub(super) fn forget(&mut self, id: &str) {
        self.seen.remove(id);
    }

    /// How many ids are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }

    /// Drops the ids seen longer than the time to live ago, from the front. (A clock that
    /// stepped back can leave a younger one in front of older ones: those go by capacity.)
    fn expire(&mut self, now: Duration) {
        while let Some((entry, id)) = self.order.front() {
            let current = self.seen.get(id).filter(|(_, e)| e == entry);
            match current {
                Some((at, _)) if now.saturating_sub(*at) < self.ttl => break,
                _ => self.pop_front(),
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some((entry, id)) = self.order.pop_front()
            && self.seen.get(&id).is_some_and(|(_, e)| *e == entry)
        {
            self.seen.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn an_id_is_seen_once_within_its_time_to_live() {
        let mut cache = ReplayCache::new(8, 10 * S);
        assert_eq!(cache.admit("a", S), Admission::New);
        assert_eq!(cache.admit("a", 5 * S), Admission::Seen);
        assert_eq!(cache.admit("b", 5 * S), Admission::New);
        // Ten seconds after it was first seen, `a` is forgotten; `b` is not yet.
        assert_eq!(cache.admit("a", 11 * S), Admission::New);
        assert_eq!(cache.admit("b", 11 * S), Admission::Seen);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_oldest_goes_when_full_and_the_bound_holds() {
        let mut cache = ReplayCache::new(3, 1000 * S);
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert_eq!(cache.admit(id, S * i as u32), Admission::New);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.admit("b", 5 * S), Admission::Seen);
        assert_eq!(cache.admit("a", 5 * S), Admission::New, "evicted first");
        for i in 0..10_000u32 {
            cache.admit(&format!("x{i}"), 6 * S);
            if i % 3 == 0 {
                cache.forget(&format!("x{i}"));
            }
            assert!(cache.order.len() <= 3 && cache.seen.len() <= 3);
        }
    }

    #[test]
    fn a_forgotten_id_is_admitted_again() {
        let mut cache = ReplayCache::new(2, 100 * S);
        assert_eq!(cache.admit("a", S), Admission::New);
        cache.forget("a");
        assert_eq!(cache.admit("a", 2 * S), Admission::New);
        // Full (the first admission's entry still counts): `b` pushes that stale entry out,
        // which must not take the second admission of `a` with it.
        assert_eq!(cache.admit("b", 3 * S), Admission::New);
        assert_eq!(cache.admit("a", 4 * S), Admission::Seen);
    }
}
