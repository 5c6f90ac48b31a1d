//! The reorder fault's decision: which delivery is held back, and which one overtakes it —
//! without I/O or a clock of its own.
//!
//! Real senders do not promise order: a delivery stalls in a queue or on a retry while a later
//! one gets through. To play that, a due delivery the dice picked is held back here until the
//! next due delivery comes by; that one goes first and takes the held one along, to be sent
//! when its own attempt has ended, so the receiver sees the later one first whatever the
//! concurrency. One delivery is held at a time (a second pick that finds one held simply
//! overtakes it), and never longer than its window: with nothing else due, it goes anyway.

use std::time::Duration;

use tokio::time::Instant;

use crate::time::later;

/// What [`HoldBack::pass`] decided for a due item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pass<T> {
    /// Send it now.
    Go(T),
    /// Send it now, and `behind` once it has been sent: `behind` was held back.
    Overtake {
        /// The item that goes first.
        ahead: T,
        /// The held item, to go after it.
        behind: T,
    },
    /// Held back, until the next item passes or its window ends ([`HoldBack::expired`]).
    Held,
}

/// At most one item held back, and when it must go anyway.
#[derive(Debug)]
pub(crate) struct HoldBack<T> {
    held: Option<(Instant, T)>,
}

impl<T> Default for HoldBack<T> {
    fn default() -> Self {
        HoldBack { held: None }
    }
}

impl<T> HoldBack<T> {
    /// A due `item`, which the dice picked to be held back for at most `hold` (`None`: not
    /// picked).
    pub(crate) fn pass(&mut self, item: T, hold: Option<Duration>, now: Instant) -> Pass<T> {
        if let Some((_, behind)) = self.held.take() {
            return Pass::Overtake {
                ahead: item,
                behind,
            };
        }
        match hold {
            Some(window) => {
                self.held = Some((later(now, window), item));
                Pass::Held
            }
            None => Pass::Go(item),
        }
    }

    /// The held item, if its window has ended by `now`.
    pub(crate) fn expired(&mut self, now: Instant) -> Option<T> {
        match &self.held {
            Some((until, _)) if *until <= now => self.held.take().map(|(_, item)| item),
            _ => None,
        }
    }

    /// When the held item must go, if one is held.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.held.as_ref().map(|(until, _)| *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Option<Duration> = Some(Duration::from_secs(1));

    #[test]
    fn a_held_item_goes_behind_the_next_one() {
        let now = Instant::now();
        let mut h = HoldBack::default();
        assert_eq!(h.pass(1, None, now), Pass::Go(1));
        assert_eq!(h.pass(2, WINDOW, now), Pass::Held);
        assert_eq!(h.deadline(), Some(now + Duration::from_secs(1)));
        // The next one overtakes it, even one the dice picked too: one is held at a time.
        assert_eq!(
            h.pass(3, WINDOW, now),
            Pass::Overtake {
                ahead: 3,
                behind: 2
            }
        );
        assert_eq!(h.deadline(), None);
        assert_eq!(h.pass(4, None, now), Pass::Go(4));
    }

    #[test]
    fn a_held_item_goes_anyway_when_its_window_ends() {
        let now = Instant::now();
        let mut h = HoldBack::default();
        assert_eq!(h.pass(1, WINDOW, now), Pass::Held);
        assert_eq!(h.expired(now + Duration::from_millis(999)), None);
        assert_eq!(h.expired(now + Duration::from_secs(1)), Some(1));
        assert_eq!(h.expired(now + Duration::from_secs(2)), None);
        assert_eq!(h.deadline(), None);
        assert_eq!(h.pass(2, None, now), Pass::Go(2));
    }
}
