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
    /// This wait's progress readings, anchored at job ages; set only when the job's age is
    /// known from its creation (age ÷ progress predicts the end only from the true age).
    pub progress_reading: Option<ProgressReading>,
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

    /// Sets [`progress_reading`](Self::progress_reading), and [`progress`](Self::progress) to
    /// its value.
    pub fn with_progress_reading(mut self, reading: ProgressReading) -> Self {
        self.progress = Some(reading.value);
        self.progress_reading = Some(reading);
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

/// How far a reading's job age may be off either way: `created_at` is reported to the
/// millisecond, and a reading is computed a little before it arrives.
const AGE_SLACK: Duration = Duration::from_millis(2);
/// Readings below this are not extrapolated. A reading at progress `p` turns any error in
/// the job's age into `1 / p` times that error about its end: early in a job (at age ≈ 0,
/// where the first look usually is) a few milliseconds of latency become seconds.
const STEADY_FROM: f64 = 0.5;

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

/// What a wait's progress readings say about when the job ends, if it progresses in
/// proportion to its age.
///
/// A job at progress `p` at age `a` ends at `a / p` if its progress is steady. Servers round
/// progress down (the simulator floors it to 0.001), so with the age taken at its latest
/// (`a` plus a slack of 2 ms for timestamp precision and latency) that is an upper bound on
/// the end; the lowest such bound over all readings is kept in
/// [`steady_end`](Self::steady_end). Being still pending past it proves the progress
/// unsteady. Only readings from half-way on are extrapolated: the doubt about the age
/// (milliseconds of latency) is multiplied by `1 / p`.
///
/// ```
/// use std::time::Duration;
/// use translation_status::poll::ProgressReading;
///
/// let first = ProgressReading::new(0.5, Duration::from_millis(1998));
/// let later = first.then(ProgressReading::new(0.9, Duration::from_millis(3700)));
/// assert_eq!(later.value, 0.9);
/// assert_eq!(later.steady_end, Some(Duration::from_secs(4)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ProgressReading {
    /// The latest reported progress, in `0..=1`.
    pub value: f64,
    /// The job's age when it was reported.
    pub observed_at: Duration,
    /// The least `observed_at / value` (the age taken at its latest) over the wait's
    /// readings from half-way on; `None` until one.
    pub steady_end: Option<Duration>,
    /// The finest step the wait's positive readings were reported at, read off their digits
    /// (0.42 → 0.01, 0.137 → 0.001; at most 0.1, at least 10⁻⁶), so that a later 0.72 from a
    /// server that reports thousandths is read as `[0.720, 0.721)`. 0.1 until one.
    pub resolution: f64,
}

impl ProgressReading {
    /// A first reading of `value` (clamped to `0..=1`; NaN is 0) at job age `observed_at`.
    pub fn new(value: f64, observed_at: Duration) -> Self {
        let value = if value.is_nan() {
            0.0
        } else {
            value.clamp(0.0, 1.0)
        };
        let late = observed_at.saturating_add(AGE_SLACK).as_secs_f64();
        let steady_end = (value >= STEADY_FROM).then(|| super::seconds(late / value));
        ProgressReading {
            value,
            observed_at,
            steady_end,
            resolution: if value > 0.0 { resolution(value) } else { 0.1 },
        }
    }

    /// `next` as the latest reading, keeping the lowest steady end and the finest resolution
    /// seen so far.
    pub fn then(self, next: ProgressReading) -> Self {
        let steady_end = match (self.steady_end, next.steady_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ProgressReading {
            steady_end,
            resolution: self.resolution.min(next.resolution),
            ..next
        }
    }

    /// The job ages between which a steadily progressing job ends, by this reading and the
    /// ones before: from `observed_at / (value + resolution)` to
    /// [`steady_end`](Self::steady_end). `None` before half-way (see above), or when the
    /// readings contradict steady progress (the job was still pending at or after the end
    /// they implied).
    pub fn steady_window(&self) -> Option<(Duration, Duration)> {
        let end = self.steady_end?;
        if self.value < STEADY_FROM || self.observed_at >= end {
            return None;
        }
        let start = self.earliest_end()?.max(self.observed_at);
        (start <= end).then_some((start, end))
    }

    /// The earliest a steadily progressing job could end, by the latest reading alone:
    /// `observed_at / (value + resolution)`, with the age taken at its earliest. `None` at
    /// progress 0. Before half-way this is a rough bound (see [`Self::steady_window`]
    /// (Self::steady_window)), but it still tells a two-second job from a minute-long one.
    pub fn earliest_end(&self) -> Option<Duration> {
        let early = self.observed_at.saturating_sub(AGE_SLACK).as_secs_f64();
        (self.value > 0.0).then(|| super::seconds(early / (self.value + self.resolution).min(1.0)))
    }

    /// Whether this reading is too early in the job to be extrapolated (see above).
    pub(super) fn is_early(&self) -> bool {
        self.value > 0.0 && self.value < STEADY_FROM
    }
}

/// The resolution a progress value was reported at: the last significant decimal digit, down
/// to 10⁻⁶ (0.42 → 0.01, 0.137 → 0.001, 0.5 → 0.1).
fn resolution(value: f64) -> f64 {
    let mut step = 0.1;
    for _ in 0..6 {
        let scaled = value / step;
        if (scaled - scaled.round()).abs() < 1e-6 {
            return step;
        }
        step /= 10.0;
    }
    1e-6
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn resolution_is_read_off_the_digits() {
        for (value, want) in [
            (0.5, 0.1),
            (0.42, 0.01),
            (0.137, 0.001),
            (0.8, 0.1),
            (0.1345, 1e-4),
            (2.0 / 3.0, 1e-6),
            (1.0, 0.1),
        ] {
            let got = resolution(value);
            assert!((got - want).abs() < want * 1e-6, "{value}: {got}");
        }
    }

    #[test]
    fn a_reading_bounds_the_end_of_a_steady_job() {
        // A 10 s job read at 6.4 s, floored to 0.001: 0.64. The age is taken 2 ms either way.
        let r = ProgressReading::new(0.64, s(6.4));
        let (start, end) = r.steady_window().unwrap();
        assert!(
            (start.as_secs_f64() - 6.398 / 0.65).abs() < 1e-9,
            "{start:?}"
        );
        assert!((end.as_secs_f64() - 6.402 / 0.64).abs() < 1e-9, "{end:?}");
        // A finer reading narrows it to a few milliseconds.
        let r = r.then(ProgressReading::new(0.713, s(7.134)));
        let (start, end) = r.steady_window().unwrap();
        assert!(
            end.as_secs_f64() - start.as_secs_f64() < 0.02,
            "{start:?}..{end:?}"
        );
        assert!(
            end <= s(10.006) && start <= s(10.0) && s(10.0) <= end,
            "{start:?}..{end:?}"
        );
    }

    #[test]
    fn the_finest_resolution_seen_is_kept() {
        // 0.72 alone could be anything in [0.72, 0.73); after 0.137, it is [0.720, 0.721).
        let coarse = ProgressReading::new(0.72, s(7.2));
        assert!((coarse.resolution - 0.01).abs() < 1e-12);
        let fine = ProgressReading::new(0.137, s(1.37)).then(coarse);
        assert!((fine.resolution - 0.001).abs() < 1e-12);
        let (start, end) = fine.steady_window().unwrap();
        assert!(
            (start.as_secs_f64() - 7.198 / 0.721).abs() < 1e-9,
            "{start:?}..{end:?}"
        );
        // Zero says nothing about the resolution either.
        let zero = ProgressReading::new(0.0, s(0.001));
        assert!((zero.then(coarse).resolution - 0.01).abs() < 1e-12);
    }

    #[test]
    fn nothing_is_implied_by_zero_and_unsteady_progress_is_dropped() {
        let zero = ProgressReading::new(0.0, s(0.002));
        assert_eq!(zero.steady_end, None);
        assert_eq!(zero.steady_window(), None);
        assert_eq!(ProgressReading::new(f64::NAN, s(1.0)).value, 0.0);
        // Stuck at 99 %: pending past the end that an earlier reading implied.
        let stuck = ProgressReading::new(0.9, s(9.0)).then(ProgressReading::new(0.99, s(10.5)));
        assert_eq!(stuck.steady_end, Some(s(9.002 / 0.9)));
        assert_eq!(stuck.steady_window(), None);
        // Pending at 100 %: done within the age's doubt, or proved unsteady by the next look.
        let full = ProgressReading::new(1.0, s(3.0));
        assert_eq!(full.steady_window(), Some((s(3.0), s(3.002))));
        let still = full.then(ProgressReading::new(1.0, s(3.1)));
        assert_eq!(still.steady_window(), None);
        // A zero reading after positive ones keeps the bound.
        let later = ProgressReading::new(0.5, s(1.0)).then(zero);
        assert_eq!(later.steady_end, Some(s(2.004)));
    }
}
