//! Opt-in jitter for poll delays.

use super::{PollDecision, PollPolicy, PollState};

/// Spreads each delay of the inner policy uniformly within ±`fraction`.
///
/// The randomness is [`PollState::random`], drawn by the wait loop, so the decorator stays a
/// pure function. Put it *inside* [`with_deadline`](super::PollPolicyExt::with_deadline) so
/// that the deadline clamp applies after the spread.
#[derive(Debug, Clone)]
pub struct WithJitter<P> {
    inner: P,
    fraction: f64,
}

/// ±10 %: enough that a thousand jobs created in the same second spread their polls.
pub const FLEET_JITTER: f64 = 0.1;

impl<P> WithJitter<P> {
    /// Wraps `inner`; `fraction` is clamped to `0..=0.5`.
    pub fn new(inner: P, fraction: f64) -> Self {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        WithJitter { inner, fraction }
    }
}

impl<P: PollPolicy> PollPolicy for WithJitter<P> {
    fn next(&self, state: &PollState) -> PollDecision {
        match self.inner.next(state) {
            PollDecision::Poll { after, basis } => {
                let factor = 1.0 + self.fraction * (2.0 * state.random - 1.0);
                PollDecision::Poll {
                    after: super::seconds(after.as_secs_f64() * factor),
                    basis,
                }
            }
            give_up => give_up,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::poll::{Fixed, PollPolicyExt};

    #[test]
    fn jitter_spreads_within_bounds() {
        let p = Fixed::new(Duration::from_secs(10)).with_jitter(super::FLEET_JITTER);
        let table = [
            (0.0, 9.0),
            (0.25, 9.5),
            (0.5, 10.0),
            (0.75, 10.5),
            (0.999_999, 11.0),
        ];
        for (random, secs) in table {
            let s = PollState::new().with_polls(1).with_random(random);
            match p.next(&s) {
                PollDecision::Poll { after, .. } => {
                    assert!(
                        (after.as_secs_f64() - secs).abs() < 1e-3,
                        "{random}: {after:?}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_thousand_jobs_do_not_poll_in_lockstep() {
        let p = Fixed::new(Duration::from_secs(2)).with_jitter(0.1);
        let mut buckets = [0u32; 10];
        for i in 0..1000 {
            let s = PollState::new()
                .with_polls(1)
                .with_random(i as f64 / 1000.0);
            if let PollDecision::Poll { after, .. } = p.next(&s) {
                let slot = ((after.as_secs_f64() - 1.8) / 0.04).floor() as usize;
                buckets[slot.min(9)] += 1;
            }
        }
        assert!(
            buckets.iter().all(|&n| (80..=120).contains(&n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn bad_fractions_are_clamped() {
        let s = PollState::new().with_polls(1).with_random(0.0);
        let wild = Fixed::new(Duration::from_secs(1)).with_jitter(7.0);
        assert_eq!(
            wild.next(&s),
            PollDecision::Poll {
                after: Duration::from_millis(500),
                basis: crate::poll::Basis::Fixed
            }
        );
        let nan = Fixed::new(Duration::from_secs(1)).with_jitter(f64::NAN);
        assert_eq!(
            nan.next(&s),
            PollDecision::Poll {
                after: Duration::from_secs(1),
                basis: crate::poll::Basis::Fixed
            }
        );
    }
}
