//! The input of a poll decision.

use std::sync::Arc;
use std::time::Duration;

use super::learned::DurationModel;

/// Everything a [`PollPolicy`](super::PollPolicy) may base its decision on.
///
/// Built by the wait loop after every pending answer; build one yourself with the `with_*`
/// methods to test a policy.
///
/// ```
/// use std::time::Duration;
/// use translation_status::poll::{Fixed, PollDecision, PollPolicy, PollState};
///
/// let state = PollState::new().with_polls(3).with_elapsed(Duration::from_secs(4));
/// assert!(matches!(Fixed::new(Duration::from_secs(2)).next(&state), PollDecision::Poll { .. }));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PollState {
    /// Status requests made so far in this wait (at least 1 when a policy is asked).
    pub polls: u32,
    /// Time since the wait began.
    pub elapsed: Duration,
    /// Best estimate of the job's age now: time since it was created when that is known
    /// (reported `created_at`, or [`JobRef::with_created_at`](crate::JobRef::with_created_at)),
    /// otherwise time since the wait began.
    pub age: Duration,
    /// The latest positive `eta_ms` the server reported, with the age at which it was seen.
    pub eta: Option<Estimate>,
    /// The latest `retry-after-ms` / `Retry-After` hint on a pending answer.
    pub retry_after: Option<Estimate>,
    /// The latest reported progress (0..=1).
    pub progress: Option<f64>,
    /// Job durations learned from this client's past waits.
    pub learned: Option<Arc<DurationModel>>,
    /// A uniform random number in `[0, 1)`, drawn fresh for this decision (for jitter).
    pub random: f64,
}

impl PollState {
    /// A state before anything is known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`polls`](Self::polls).
    pub fn with_polls(mut self, polls: u32) -> Self {
        self.polls = polls;
        self
    }

    /// Sets [`elapsed`](Self::elapsed), and [`age`](Self::age) when it was smaller.
    pub fn with_elapsed(mut self, elapsed: Duration) -> Self {
        self.elapsed = elapsed;
        self.age = self.age.max(elapsed);
        self
    }

    /// Sets [`age`](Self::age).
    pub fn with_age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// Sets [`eta`](Self::eta).
    pub fn with_eta(mut self, eta: Estimate) -> Self {
        self.eta = Some(eta);
        self
    }

    /// Sets [`retry_after`](Self::retry_after).
    pub fn with_retry_after(mut self, hint: Estimate) -> Self {
        self.retry_after = Some(hint);
        self
    }

    /// Sets [`learned`](Self::learned).
    pub fn with_learned(mut self, model: Arc<DurationModel>) -> Self {
        self.learned = Some(model);
        self
    }

    /// Sets [`random`](Self::random) (clamped to `[0, 1]`, so tests can pin both extremes;
    /// NaN becomes 0.5).
    pub fn with_random(mut self, random: f64) -> Self {
        self.random = if random.is_nan() {
            0.5
        } else {
            random.clamp(0.0, 1.0)
        };
        self
    }
}

/// A server estimate of the time left, with the job age at which it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Estimate {
    /// The job's age when the estimate arrived.
    pub observed_at: Duration,
    /// The time left, as estimated then.
    pub remaining: Duration,
}

impl Estimate {
    /// An estimate of `remaining`, seen at job age `observed_at`.
    pub fn new(observed_at: Duration, remaining: Duration) -> Self {
        Estimate {
            observed_at,
            remaining,
        }
    }

    /// The job age at which the job should end, by this estimate.
    pub fn predicted_end(&self) -> Duration {
        self.observed_at.saturating_add(self.remaining)
    }
}
