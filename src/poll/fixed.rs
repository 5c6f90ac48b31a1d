//! The two textbook schedules.

use std::time::Duration;

use super::{Basis, PollDecision, PollPolicy, PollState};

/// Polls at the same interval every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    interval: Duration,
}

impl Fixed {
    /// Polls every `interval`.
    pub fn new(interval: Duration) -> Self {
        Fixed { interval }
    }
}

impl PollPolicy for Fixed {
    fn next(&self, _state: &PollState) -> PollDecision {
        PollDecision::Poll {
            after: self.interval,
            basis: Basis::Fixed,
        }
    }
}

/// Waits `initial × multiplierⁿ⁻¹` after the n-th poll, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exponential {
    initial: Duration,
    multiplier: f64,
    max: Duration,
}

impl Exponential {
    /// Starts at `initial`, doubles, caps at one minute.
    pub fn new(initial: Duration) -> Self {
        Exponential {
            initial,
            multiplier: 2.0,
            max: Duration::from_secs(60).max(initial),
        }
    }

    /// Sets the growth factor (values below 1, and non-finite values, are taken as 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Sets the cap (never below `initial`).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max.max(self.initial);
        self
    }

    /// The delay after the `polls`-th poll.
    pub fn delay(&self, polls: u32) -> Duration {
        let exponent = polls.saturating_sub(1).min(1_000) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        if secs < self.max.as_secs_f64() {
            super::seconds(secs)
        } else {
            self.max
        }
    }
}

impl PollPolicy for Exponential {
    fn next(&self, state: &PollState) -> PollDecision {
        PollDecision::Poll {
            after: self.delay(state.polls),
            basis: Basis::Exponential,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(decision: PollDecision) -> Duration {
        match decision {
            PollDecision::Poll { after, .. } => after,
            PollDecision::GiveUp(r) => panic!("gave up: {r}"),
        }
    }

    #[test]
    fn fixed_is_fixed() {
        let p = Fixed::new(Duration::from_secs(2));
        for polls in [1, 2, 50] {
            let s = PollState::new().with_polls(polls);
            assert_eq!(after(p.next(&s)), Duration::from_secs(2));
        }
    }

    #[test]
    fn exponential_table() {
        let p = Exponential::new(Duration::from_millis(100))
            .multiplier(2.0)
            .max(Duration::from_secs(1));
        let table = [
            (0, 100),
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
            (u32::MAX, 1000),
        ];
        for (polls, ms) in table {
            let s = PollState::new().with_polls(polls);
            assert_eq!(
                after(p.next(&s)),
                Duration::from_millis(ms),
                "polls={polls}"
            );
        }
        let flat = Exponential::new(Duration::from_secs(1)).multiplier(f64::NAN);
        assert_eq!(flat.delay(10), Duration::from_secs(1));
        let shrinking = Exponential::new(Duration::from_secs(1)).multiplier(0.1);
        assert_eq!(shrinking.delay(10), Duration::from_secs(1));
        let capped_below = Exponential::new(Duration::from_secs(5)).max(Duration::from_secs(1));
        assert_eq!(capped_below.delay(3), Duration::from_secs(5));
    }
}
