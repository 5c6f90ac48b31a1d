//! When to look again: pure, synchronous poll policies.
//!
//! # Why a policy is a plain function of its state
//!
//! Deciding *when* to poll is the part of waiting that is worth getting right and worth
//! testing exhaustively, and it needs neither a clock nor a network. So a [`PollPolicy`] is a
//! synchronous function from a [`PollState`] (polls so far, elapsed time, the job's age, the
//! server's hints, the learned duration model, one random number) to a [`PollDecision`] (poll
//! after this long, or give up). The wait loop owns time, I/O and memory; the policy owns
//! judgement. Table tests drive policies directly, and users can write their own.
//!
//! # Polling is not retrying
//!
//! A pending job is not an error, so poll cadence and transport retries are different
//! things with different defaults: the poll schedule has no jitter unless asked for
//! ([`PollPolicyExt::with_jitter`]), while retries of one failed request (inside the
//! transport, see [`crate::transport`]) are short and always jittered.
//!
//! # Limits decorate
//!
//! [`with_deadline`](PollPolicyExt::with_deadline), [`with_max_polls`](PollPolicyExt::with_max_polls)
//! and [`with_jitter`](PollPolicyExt::with_jitter) wrap any policy and return a new one. The
//! deadline decorator shortens the last wait so that the final poll lands exactly on the
//! deadline, then gives up. (The wait loop itself sends that last look a little earlier, so
//! that it is answered by the deadline: see [`WaitOptions::deadline`](crate::WaitOptions::deadline).)
//!
//! # Every pause has a floor
//!
//! However short a pause something asks for, the crate never pauses less than
//! [`MIN_PAUSE`] (50 ms) before the next request for the same job: not for a policy's
//! decision, a `Retry-After: 0` (or `retry-after-ms: 0`), a transport retry's backoff, an
//! event stream's `retry:` field, a circuit breaker about to let requests through, nor after
//! a long-poll the server claims to have held but answered at once (a request the server did
//! hold for the floor or longer is reissued at once: the floor counts from when it was sent).
//! A server that answers every request with "again, now" gets at most twenty requests a
//! second from one wait, not hundreds. The one constant lives here; every pause in the crate
//! — the wait loop, the job set's scheduler and budget, the transport's throttle and retry
//! layers — is clamped to it.
//!
//! # Built-ins
//!
//! | policy | schedule |
//! | --- | --- |
//! | [`Fixed`] | the same interval every time |
//! | [`Exponential`] | `initial × multiplierⁿ`, capped |
//! | [`Adaptive`] (default) | server hints first, then a schedule learned from past jobs, then a cold-start schedule |

mod adaptive;
mod balanced;
mod compose;
mod fixed;
mod hints;
mod jitter;
pub(crate) mod learned;
mod limits;
mod prior;
mod saved;
mod state;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Defined beside the errors ([`GaveUp`](crate::GaveUp) carries it); here for policies that
/// stop.
pub use crate::error::GiveUpReason;
pub use adaptive::Adaptive;
pub use fixed::{Exponential, Fixed};
pub use jitter::{FLEET_JITTER, WithJitter};
pub use learned::{DurationModel, LearnedDurations, Sample};
pub use limits::{WithDeadline, WithMaxPolls};
pub use saved::{
    LearnedStateError, MAX_SAVED_BYTES, MAX_SAVED_SAMPLES, SAVED_FORMAT, SavedDurations,
};
pub use state::{Estimate, PollState, ProgressReading};

/// The shortest pause between two requests for one job, whatever asks for a shorter one (see
/// [the module docs](self#every-pause-has-a-floor)): 50 ms. Below anything a real schedule
/// needs (the [`Adaptive`] policy never polls more often than every 100 ms), and long enough
/// that a server answering every request with "again, at once" costs one wait at most twenty
/// requests a second.
pub const MIN_PAUSE: Duration = Duration::from_millis(50);

/// Decides when to look at a job again. Pure and synchronous: same state in, same decision out.
pub trait PollPolicy: Send + Sync + fmt::Debug {
    /// Called after every answer that left the job pending.
    fn next(&self, state: &PollState) -> PollDecision;
}

/// What a [`PollPolicy`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PollDecision {
    /// Poll again after `after`.
    Poll {
        /// How long to sleep before the next poll (at least [`MIN_PAUSE`], whatever is asked).
        after: Duration,
        /// What the delay is based on (reported as the wait's mechanism).
        basis: Basis,
    },
    /// Stop waiting.
    GiveUp(GiveUpReason),
}

impl PollDecision {
    /// Poll again after `after`, on a schedule of the caller's own.
    pub fn poll_after(after: Duration) -> Self {
        PollDecision::Poll {
            after,
            basis: Basis::Custom,
        }
    }
}

/// What a poll delay is based on: the policy's schedule.
///
/// Only a policy's reasons are here. A pause the loop takes on its own — after a throttled
/// answer, while the circuit breaker is open, after an unreadable answer — is not a way of
/// learning that a job ended: the poll after it is still on the policy's schedule, and is
/// reported with the policy's basis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Basis {
    /// The first look, made at once.
    Initial,
    /// The server's hints (`eta_ms`, `Retry-After`, `retry-after-ms`).
    Hints,
    /// A schedule learned from the durations of this client's past jobs.
    Learned,
    /// The schedule used when nothing is known yet.
    ColdStart,
    /// [`Fixed`].
    Fixed,
    /// [`Exponential`].
    Exponential,
    /// A policy of the caller's own.
    Custom,
}

impl Basis {
    /// A short, stable name (used in metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Initial => "initial",
            Basis::Hints => "hints",
            Basis::Learned => "learned",
            Basis::ColdStart => "cold_start",
            Basis::Fixed => "fixed",
            Basis::Exponential => "exponential",
            Basis::Custom => "custom",
        }
    }
}

/// Decorators available on every policy.
pub trait PollPolicyExt: PollPolicy + Sized {
    /// Gives up once `deadline` has elapsed since the start of the wait; the final poll is
    /// scheduled to land exactly on it.
    fn with_deadline(self, deadline: Duration) -> WithDeadline<Self> {
        WithDeadline::new(self, deadline)
    }

    /// Gives up after `max_polls` status requests.
    fn with_max_polls(self, max_polls: u32) -> WithMaxPolls<Self> {
        WithMaxPolls::new(self, max_polls)
    }

    /// Spreads each delay uniformly by ±`fraction` (clamped to `0..=0.5`), so that many jobs
    /// started together do not poll in lockstep. [`FLEET_JITTER`] (±10 %) suits fleets.
    fn with_jitter(self, fraction: f64) -> WithJitter<Self> {
        WithJitter::new(self, fraction)
    }
}

impl<P: PollPolicy> PollPolicyExt for P {}

/// Seconds to a duration, saturating: negative and NaN are zero, too large is the maximum.
pub(crate) fn seconds(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

impl<P: PollPolicy + ?Sized> PollPolicy for Arc<P> {
    fn next(&self, state: &PollState) -> PollDecision {
        (**self).next(state)
    }
}

impl<P: PollPolicy + ?Sized> PollPolicy for Box<P> {
    fn next(&self, state: &PollState) -> PollDecision {
        (**self).next(state)
    }
}

impl<P: PollPolicy + ?Sized> PollPolicy for &P {
    fn next(&self, state: &PollState) -> PollDecision {
        (**self).next(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Policies of the caller's own may ask for anything; nothing downstream may panic.
    #[test]
    fn extreme_delays_saturate() {
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(-1.0), Duration::ZERO);
        assert_eq!(seconds(f64::INFINITY), Duration::MAX);
        assert_eq!(seconds(1e300), Duration::MAX);
        assert_eq!(seconds(1.5), Duration::from_millis(1500));
        let huge = Fixed::new(Duration::MAX)
            .with_jitter(0.5)
            .with_deadline(Duration::MAX);
        let state = PollState::new().with_polls(1).with_random(1.0);
        assert!(matches!(huge.next(&state), PollDecision::Poll { .. }));
        let far = Estimate::new(Duration::MAX, Duration::MAX);
        let state = PollState::new()
            .with_polls(1)
            .with_retry_after(far)
            .with_eta(far);
        assert!(matches!(
            Adaptive::new().next(&state),
            PollDecision::Poll { .. }
        ));
        let big = Exponential::new(Duration::from_secs(u64::MAX / 4)).multiplier(1e300);
        assert_eq!(big.delay(u32::MAX), Duration::from_secs(u64::MAX / 4));
    }
}
