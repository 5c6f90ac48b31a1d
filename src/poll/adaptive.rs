//! The default policy: server hints, then learned durations, then a cold-start schedule.
//!
//! # The three sources, best first
//!
//! 1. **Hints.** A pending answer may carry `eta_ms` (or `retry-after-ms` / `Retry-After`).
//!    Estimates are noisy, so the predicted end `T` becomes a window of plausible ends
//!    `[T / (1 + tolerance), T / (1 − tolerance)]`. The policy jumps straight to the earliest
//!    plausible end, then tightens: it polls the window in four equal steps. A hint
//!    contradicted by what is observed — the job is still pending past the window — is
//!    dropped, and the next source decides.
//! 2. **Learned durations.** Once the client has seen enough jobs end
//!    ([`DurationModel`]), each next look goes where the expected detection delay accrued
//!    since the last one reaches what a request is worth (see `balanced`): looks are dense
//!    where jobs end, and the first one jumps past the stretch where none do. A request is
//!    worth a fixed fraction (3 % by default, [`Adaptive::delay_worth`]) of the learned
//!    median duration, or of the job's age once it is older: the same trade at every scale.
//!    Once fewer than five of the learned jobs (or 5 % of them, if fewer than a hundred are
//!    known) ran longer than this one has, the model knows too little about the rest — an
//!    outlier, or a batch whose short jobs finished first — and the cold-start schedule
//!    takes over.
//! 3. **Cold start.** Nothing is known, not even the scale: a job may take a second or an
//!    hour. So the cold start is scale-free (see `prior`): the first look after the initial
//!    one comes between 0.6 s and 0.85 s (a random point of that range, drawn once per
//!    wait), and every later one at √2 times the age of the one before — two looks per
//!    doubling of the job's age, never more than two minutes apart.
//!
//! Every delay is at least the minimum interval (100 ms by default).

use std::time::Duration;

use super::compose::{Opinion, OrElse};
use super::{
    Basis, DurationModel, PollDecision, PollPolicy, PollState, balanced, hints, prior, seconds,
};

/// Hints first, then learned durations, then a cold-start schedule.
///
/// The three are schedules of their own, composed: each of the first two decides when it
/// knows (hints inside their window, a model that knows enough jobs this old), and passes
/// otherwise; [`use_hints`](Self::use_hints) and [`use_learned`](Self::use_learned) take one
/// out of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Adaptive {
    schedule: OrElse<Option<Hints>, OrElse<Option<Learned>, ColdStart>>,
}

/// Learned jobs that must have run longer than this one for the model to place its end:
/// five, or 5 % of them when fewer than a hundred are known.
const TAIL_SAMPLES: f64 = 5.0;
const TAIL_FRACTION: f64 = 0.05;
/// The default tolerance of server estimates.
const HINT_TOLERANCE: f64 = 0.25;
/// Learned samples needed by default before the learned schedule is used.
const MIN_SAMPLES: usize = 10;
/// The detection delay a request is worth by default, as a fraction of the job's typical
/// duration (see [`Adaptive::delay_worth`]).
const DELAY_WORTH: f64 = 0.03;

/// The server's hints: jump to the earliest plausible end, then tighten.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hints {
    tolerance: f64,
    min_interval: Duration,
}

impl Opinion for Hints {
    fn opinion(&self, state: &PollState) -> Option<PollDecision> {
        let window = hints::window(state, self.tolerance)?;
        let after = hints::step(state.age.as_secs_f64(), window, self.min_interval)?;
        Some(PollDecision::Poll {
            after,
            basis: Basis::Hints,
        })
    }
}

/// The schedule learned from past jobs, while the model knows enough jobs this old.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Learned {
    min_samples: usize,
    min_interval: Duration,
    /// The detection delay a request is worth, as a fraction of the typical duration.
    worth: f64,
}

impl Learned {
    /// The detection delay (in seconds) one request is worth for a job of `age` seconds: a
    /// fraction of the learned median, or of the age once the job is older. Scale-free: jobs
    /// ten times longer are looked at a tenth as often, for ten times the delay.
    fn worth(&self, model: &DurationModel, age: f64) -> f64 {
        self.worth * model.typical().unwrap_or(age).max(age)
    }
}

impl Opinion for Learned {
    fn opinion(&self, state: &PollState) -> Option<PollDecision> {
        let model = state.learned.as_deref()?;
        let age = state.age.as_secs_f64();
        let known = model.ended() as f64;
        let tail = TAIL_SAMPLES.min(TAIL_FRACTION * known);
        if model.ended() < self.min_samples || model.samples_after(age) < tail {
            return None;
        }
        let next = balanced::next_look(model, age, self.worth(model, age))?;
        Some(PollDecision::Poll {
            after: seconds(next - age).max(self.min_interval),
            basis: Basis::Learned,
        })
    }
}

/// The scale-free cold start (see `prior`): a first look between `first` and `√2 · first`,
/// then one at √2 times each age, at most `max` apart.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ColdStart {
    first: Duration,
    max: Duration,
    min_interval: Duration,
}

impl PollPolicy for ColdStart {
    fn next(&self, state: &PollState) -> PollDecision {
        let age = state.age.as_secs_f64();
        let next = prior::next_look(age, state.polls, state.random, self.first.as_secs_f64());
        // (Not `clamp`: a minimum interval set after the cold start may exceed its maximum.)
        PollDecision::Poll {
            after: seconds(next - age).min(self.max).max(self.min_interval),
            basis: Basis::ColdStart,
        }
    }
}

impl Default for Adaptive {
    fn default() -> Self {
        let min_interval = Duration::from_millis(100);
        Adaptive {
            schedule: OrElse {
                first: Some(Hints {
                    tolerance: HINT_TOLERANCE,
                    min_interval,
                }),
                then: OrElse {
                    first: Some(Learned {
                        min_samples: MIN_SAMPLES,
                        min_interval,
                        worth: DELAY_WORTH,
                    }),
                    then: ColdStart {
                        first: prior::FIRST,
                        max: prior::MAX_INTERVAL,
                        min_interval,
                    },
                },
            },
        }
    }
}

impl Adaptive {
    /// The default: ±25 % hint tolerance, 100 ms minimum interval, learned schedule after 10
    /// samples with a request worth 3 % of the typical duration, and the scale-free cold
    /// start (first look between 0.6 s and 0.85 s, then √2 times each age, at most 2 min
    /// apart).
    pub fn new() -> Self {
        Self::default()
    }

    fn hints_mut(&mut self) -> &mut Option<Hints> {
        &mut self.schedule.first
    }

    fn learned_mut(&mut self) -> &mut Option<Learned> {
        &mut self.schedule.then.first
    }

    fn cold_mut(&mut self) -> &mut ColdStart {
        &mut self.schedule.then.then
    }

    /// How wrong server estimates may be, as a fraction (clamped to `0..=0.9`). Applies to
    /// the hints in use (see [`use_hints`](Self::use_hints)).
    pub fn hint_tolerance(mut self, tolerance: f64) -> Self {
        let tolerance = if tolerance.is_finite() {
            tolerance.clamp(0.0, 0.9)
        } else {
            HINT_TOLERANCE
        };
        if let Some(hints) = self.hints_mut() {
            hints.tolerance = tolerance;
        }
        self
    }

    /// The shortest delay this policy will ask for (at least 1 ms).
    pub fn min_interval(mut self, interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        if let Some(hints) = self.hints_mut() {
            hints.min_interval = interval;
        }
        if let Some(learned) = self.learned_mut() {
            learned.min_interval = interval;
        }
        self.cold_mut().min_interval = interval;
        self
    }

    /// How many learned samples (waits that saw their job end) are needed before the learned
    /// schedule is used. Applies to the learned schedule in use (see
    /// [`use_learned`](Self::use_learned)).
    pub fn min_samples(mut self, samples: usize) -> Self {
        if let Some(learned) = self.learned_mut() {
            learned.min_samples = samples.max(1);
        }
        self
    }

    /// What one request is worth in the learned schedule, in detection delay, as a fraction
    /// of the typical job's duration (the learned median, or the job's age once it is older;
    /// clamped to `0.001..=1`; default 0.03). Smaller: more requests, less delay. Applies
    /// to the learned schedule in use (see [`use_learned`](Self::use_learned)).
    pub fn delay_worth(mut self, fraction: f64) -> Self {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.001, 1.0)
        } else {
            DELAY_WORTH
        };
        if let Some(learned) = self.learned_mut() {
            learned.worth = fraction;
        }
        self
    }

    /// Whether to follow server hints. Taking them out and putting them back restores the
    /// default tolerance.
    pub fn use_hints(mut self, yes: bool) -> Self {
        let min_interval = self.schedule.then.then.min_interval;
        let hints = self.hints_mut();
        *hints = match (yes, *hints) {
            (false, _) => None,
            (true, Some(kept)) => Some(kept),
            (true, None) => Some(Hints {
                tolerance: HINT_TOLERANCE,
                min_interval,
            }),
        };
        self
    }

    /// Whether to follow learned durations. Taking them out and putting them back restores
    /// the default number of samples needed and worth of a request.
    pub fn use_learned(mut self, yes: bool) -> Self {
        let min_interval = self.schedule.then.then.min_interval;
        let learned = self.learned_mut();
        *learned = match (yes, *learned) {
            (false, _) => None,
            (true, Some(kept)) => Some(kept),
            (true, None) => Some(Learned {
                min_samples: MIN_SAMPLES,
                min_interval,
                worth: DELAY_WORTH,
            }),
        };
        self
    }

    /// The cold-start schedule: the first look after the initial one lands between `first`
    /// and `√2 · first` (at least the minimum interval; default 0.6 s), each later one at √2
    /// times the age of the one before, and no two are more than `max` apart (at least
    /// `first`; default 2 min). Scaling both scales the whole schedule.
    pub fn cold_start(mut self, first: Duration, max: Duration) -> Self {
        let cold = self.cold_mut();
        cold.first = first.max(cold.min_interval);
        cold.max = max.max(cold.first);
        self
    }
}

impl PollPolicy for Adaptive {
    fn next(&self, state: &PollState) -> PollDecision {
        self.schedule.next(state)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::poll::{Estimate, ProgressReading, Sample};

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    fn decide(p: &Adaptive, state: &PollState) -> (f64, Basis) {
        match p.next(state) {
            PollDecision::Poll { after, basis } => (after.as_secs_f64(), basis),
            other => panic!("{other:?}"),
        }
    }

    /// Simulates a wait on a job ending at age `end` with an initial poll at age 0: returns
    /// the number of polls and the detection delay. `eta_bias` scales the server's estimate
    /// of the total duration, as the simulator's noise does.
    fn simulate(
        p: &Adaptive,
        end: f64,
        eta_bias: Option<f64>,
        model: Option<Arc<DurationModel>>,
    ) -> (u32, f64) {
        let mut age = 0.0;
        let mut polls = 1;
        let mut eta = None;
        loop {
            if age >= end {
                return (polls, age - end);
            }
            if let Some(bias) = eta_bias {
                let remaining = (end * bias - age).max(0.0);
                if remaining > 0.0 {
                    eta = Some(Estimate::new(s(age), s(remaining)));
                }
            }
            let mut state = PollState::new().with_polls(polls).with_elapsed(s(age));
            state.eta = eta;
            state.learned = model.clone();
            let (after, _) = decide(p, &state);
            age += after;
            polls += 1;
            assert!(polls < 500, "runaway");
        }
    }

    /// Progress as the simulator reports it: elapsed ÷ duration, floored to 0.001.
    fn floored(age: f64, end: f64) -> f64 {
        (age / end * 1000.0).floor() / 1000.0
    }

    /// Like `simulate`, with the job's age known and progress read on every pending answer;
    /// the first look is at age `first` (a job is never read at exactly its creation). The
    /// estimate is the first answer's only. Returns the ages polled at and the delay.
    fn simulate_progress(
        p: &Adaptive,
        end: f64,
        estimated_end: Option<f64>,
        first: f64,
        progress: impl Fn(f64) -> f64,
    ) -> (Vec<f64>, f64) {
        let mut age = first;
        let mut ages = vec![age];
        let mut reading: Option<ProgressReading> = None;
        let eta = estimated_end.map(|e| Estimate::new(s(first), s(e - first)));
        while age < end {
            let now = ProgressReading::new(progress(age), s(age));
            reading = Some(reading.map_or(now, |r| r.then(now)));
            let mut state = PollState::new()
                .with_polls(ages.len() as u32)
                .with_elapsed(s(age))
                .with_progress_reading(now);
            state.progress_reading = reading;
            state.eta = eta;
            let (after, _) = decide(p, &state);
            assert!(after >= 0.1 - 1e-9, "{after} at {age}");
            age += after;
            ages.push(age);
            assert!(ages.len() < 500, "runaway");
        }
        (ages, age - end)
    }

    #[test]
    fn steady_progress_finds_the_end_in_three_looks() {
        let p = Adaptive::new();
        let (mut looks, mut runs) = (0, 0);
        for end in [3.0, 10.0, 34.0, 60.0] {
            for i in 0..=40 {
                let bias = 0.8 + 0.01 * f64::from(i);
                let (ages, delay) =
                    simulate_progress(&p, end, Some(end * bias), 0.002, |a| floored(a, end));
                // At once, at the estimate's earliest plausible end, at the end the reading
                // there implies; one more when that reading ends in a zero (0.72 could be
                // [0.72, 0.73)) and the first one did not show thousandths.
                assert!(ages.len() <= 4, "{end} s, bias {bias}: {ages:?}");
                // The reading's resolution (0.001 of the job) and the doubt about the job's age
                // (2 ms), divided by the progress read (at least 0.64).
                assert!(
                    delay <= (end * 0.001 + 0.002) / 0.63,
                    "{end}, {bias}: {delay}"
                );
                looks += ages.len();
                runs += 1;
            }
        }
        assert!(looks as f64 / f64::from(runs) <= 3.2, "{looks} / {runs}");
        // Without an estimate, the first reading (0.001 at 3 ms of a 3 s job, ±2 ms: the end is
        // within [0.5, 5] s) is refined by one more look, early in the job, so the end it
        // implies is looser (the age's doubt is divided by a small progress).
        let (ages, delay) = simulate_progress(&p, 3.0, None, 0.003, |a| floored(a, 3.0));
        assert!(ages.len() <= 4, "{ages:?}");
        assert!(delay < 0.03, "{delay}");
    }

    #[test]
    fn a_job_stuck_at_99_percent_costs_one_extra_look() {
        let p = Adaptive::new();
        // Planned for 10 s (and estimated so), stuck at 0.99 from 9.9 s, done at 30 s.
        let stuck = |a: f64| floored(a, 10.0).min(0.99);
        let (ages, _) = simulate_progress(&p, 30.0, Some(10.0), 0.002, stuck);
        let (blind, _) = simulate_progress(&p, 30.0, Some(10.0), 0.002, |_| 0.0);
        // Within the estimate's window [8, 13.3] s: its own four steps, plus the one look at
        // the end the progress implied.
        let inside = |ages: &[f64]| ages.iter().filter(|&&a| (8.0..13.5).contains(&a)).count();
        assert!(inside(&ages) <= inside(&blind) + 1, "{ages:?} vs {blind:?}");
        assert!(ages.iter().any(|a| (a - 10.0).abs() < 0.005), "{ages:?}");
        // Progress running ahead (done "at 100 %" long before the end) is dropped as fast.
        let ahead = |a: f64| floored(a, 5.0).min(1.0);
        let (ages, _) = simulate_progress(&p, 30.0, Some(10.0), 0.002, ahead);
        assert!(inside(&ages) <= inside(&blind) + 1, "{ages:?} vs {blind:?}");
    }

    #[test]
    fn progress_says_nothing_at_age_zero_or_without_the_age() {
        let p = Adaptive::new();
        let zero = PollState::new()
            .with_polls(1)
            .with_elapsed(s(0.002))
            .with_progress_reading(ProgressReading::new(0.0, s(0.002)));
        assert_eq!(decide(&p, &zero).1, Basis::ColdStart);
        // A value without an age anchor (no `created_at`) is not extrapolated.
        let mut unknown = PollState::new().with_polls(2).with_elapsed(s(2.0));
        unknown.progress = Some(0.4);
        assert_eq!(decide(&p, &unknown).1, Basis::ColdStart);
    }

    /// The cold start on a job of `end` seconds with phase `u`: requests and delay.
    fn cold(p: &Adaptive, end: f64, u: f64) -> (u32, f64) {
        let (mut age, mut polls) = (0.0, 1);
        while age < end {
            let state = PollState::new()
                .with_polls(polls)
                .with_elapsed(s(age))
                .with_random(u);
            let (after, basis) = decide(p, &state);
            assert_eq!(basis, Basis::ColdStart);
            age += after;
            polls += 1;
            assert!(polls < 500, "runaway");
        }
        (polls, age - end)
    }

    #[test]
    fn cold_start_is_geometric_from_its_first_look() {
        let p = Adaptive::new();
        let next = |age: f64, polls: u32, u: f64| {
            let state = PollState::new()
                .with_polls(polls)
                .with_elapsed(s(age))
                .with_random(u);
            decide(&p, &state).0
        };
        // The first look: 0.6 s · √2ᵘ.
        assert!((next(0.0, 1, 0.0) - 0.6).abs() < 1e-9);
        assert!((next(0.0, 1, 0.5) - 0.6 * 2f64.powf(0.25)).abs() < 1e-9);
        assert!((next(0.0, 1, 1.0) - 0.6 * 2f64.sqrt()).abs() < 1e-9);
        // A job already old at the first answer: the next point of the same grid.
        for u in [0.0, 0.3, 0.99] {
            let at = 10.0 + next(10.0, 1, u);
            let k = (at / 0.6).log(2f64.sqrt()) - u;
            assert!((k - k.round()).abs() < 1e-9, "{u}: {at}");
            assert!((10.0..=10.0 * 2f64.sqrt()).contains(&at), "{u}: {at}");
        }
        // Later: √2 times the age, whatever the random number says.
        for age in [1.0, 7.0, 100.0] {
            for u in [0.0, 0.9] {
                let after = next(age, 4, u);
                assert!(
                    (after - age * (2f64.sqrt() - 1.0)).abs() < 1e-9,
                    "{age}: {after}"
                );
            }
        }
        // Never more than two minutes apart; scaled by `cold_start`.
        assert!((next(3600.0, 9, 0.5) - 120.0).abs() < 1e-9);
        let scaled = Adaptive::new().cold_start(s(0.06), s(12.0));
        let state = PollState::new().with_polls(1).with_random(0.0);
        assert!(
            (decide(&scaled, &state).0 - 0.1).abs() < 1e-9,
            "the minimum interval"
        );
        let state = PollState::new().with_polls(3).with_elapsed(s(360.0));
        assert!((decide(&scaled, &state).0 - 12.0).abs() < 1e-9);
    }

    /// The documented rule, checked at every scale over evenly spread phases: on average
    /// about 19.5 % of the duration late (at most a quarter of it plus 100 ms), with at most
    /// `4 + 2.5 · log₂(T / 1 s)` requests.
    #[test]
    fn cold_start_meets_its_bounds_at_every_scale() {
        let p = Adaptive::new();
        // (Up to 15 min, the longest translations: past about five minutes the two-minute cap
        // sets the pace, one request per two minutes.)
        for end in [
            1.0, 1.7, 3.0, 5.5, 10.0, 30.0, 64.0, 100.0, 250.0, 600.0, 900.0,
        ] {
            let (mut requests, mut delay) = (0.0, 0.0);
            let n = 64;
            for i in 0..n {
                let u = (f64::from(i) + 0.5) / f64::from(n);
                let (polls, late) = cold(&p, end, u);
                requests += f64::from(polls) / f64::from(n);
                delay += late / f64::from(n);
            }
            let max_requests = 4.0 + 2.5 * end.log2();
            assert!(requests <= max_requests, "{end} s: {requests} requests");
            assert!(delay <= 0.25 * end + 0.1, "{end} s: {delay} s late");
            if end <= 250.0 {
                // Below the two-minute cap: the closed forms of the module docs.
                let want = 2.0 + 2.0 * (end / 0.6).log2();
                assert!(
                    (requests - want).abs() < 0.1,
                    "{end} s: {requests} vs {want}"
                );
                assert!((delay / end - 0.195).abs() < 0.01, "{end} s: {delay}");
            }
        }
    }

    #[test]
    fn hints_jump_to_the_earliest_plausible_end_then_tighten() {
        let p = Adaptive::new();
        // eta 4 s seen at age 0 → window [3.2, 5.33].
        let state = PollState::new()
            .with_polls(1)
            .with_eta(Estimate::new(s(0.0), s(4.0)));
        let (after, basis) = decide(&p, &state);
        assert_eq!(basis, Basis::Hints);
        assert!((after - 3.2).abs() < 1e-6, "{after}");
        // At the window's start: a quarter-window step.
        let state = state.with_elapsed(s(3.2));
        let (after, _) = decide(&p, &state);
        assert!((after - 0.5333).abs() < 1e-3, "{after}");
        // Past the window: the hint is contradicted and dropped.
        let state = state.with_elapsed(s(5.6));
        assert_eq!(decide(&p, &state).1, Basis::ColdStart);
    }

    #[test]
    fn five_second_jobs_with_twenty_percent_noise_take_at_most_seven_polls() {
        let p = Adaptive::new();
        for bias in [0.8, 0.85, 0.9, 1.0, 1.1, 1.15, 1.2] {
            let (polls, delay) = simulate(&p, 5.0, Some(bias), None);
            assert!(polls <= 7, "bias {bias}: {polls} polls");
            assert!(delay <= 0.9, "bias {bias}: {delay} s late");
        }
    }

    #[test]
    fn retry_after_is_a_hint_when_there_is_no_eta() {
        let p = Adaptive::new();
        let state = PollState::new()
            .with_polls(1)
            .with_retry_after(Estimate::new(s(0.0), s(1.0)));
        let (after, basis) = decide(&p, &state);
        assert_eq!(basis, Basis::Hints);
        assert!((after - 0.8).abs() < 1e-6, "{after}");
        let p = p.use_hints(false);
        assert_eq!(decide(&p, &state).1, Basis::ColdStart);
    }

    #[test]
    fn learned_schedule_needs_enough_samples() {
        let p = Adaptive::new();
        let few = Arc::new(DurationModel::fit(&[Sample::exact(s(2.0)); 9]));
        let state = PollState::new().with_polls(1).with_learned(few);
        assert_eq!(decide(&p, &state).1, Basis::ColdStart);
        let enough = Arc::new(DurationModel::fit(&[Sample::exact(s(2.0)); 10]));
        let state = PollState::new().with_polls(1).with_learned(enough);
        let (after, basis) = decide(&p, &state);
        assert_eq!(basis, Basis::Learned);
        // Just past the learned end, by what a request is worth: 3 % of 2 s.
        let worth: f64 = 0.03 * 2.0;
        assert!((after - 2.0 - worth).abs() < 0.01, "{after}");
    }

    #[test]
    fn learned_fixed_durations_cost_three_polls() {
        let p = Adaptive::new();
        let samples: Vec<Sample> = (0..20)
            .map(|i| {
                Sample::between(
                    s(1.98 + 0.001 * f64::from(i % 3)),
                    s(2.02 + 0.001 * f64::from(i % 5)),
                )
            })
            .collect();
        let model = Arc::new(DurationModel::fit(&samples));
        for end in [1.985, 2.0, 2.015] {
            let (polls, delay) = simulate(&p, end, None, Some(model.clone()));
            assert!(polls <= 3, "{end}: {polls}");
            assert!(delay <= 0.3, "{end}: {delay}");
        }
    }

    #[test]
    fn learned_spread_durations_are_polled_where_they_end_then_fall_back() {
        let p = Adaptive::new();
        // A request is worth 3 % of the median (15 s) in delay.
        let worth: f64 = 0.03 * 15.0;
        // Uniform in [10, 20] s, known exactly.
        let samples: Vec<Sample> = (0..100)
            .map(|i| Sample::exact(s(10.0 + f64::from(i) / 10.0)))
            .collect();
        let model = Arc::new(DurationModel::fit(&samples));
        // Nothing ends before 10 s: the first look jumps past the empty start, to where
        // (x − 10)² / 20 = worth, give or take the smoothing (±12 % here).
        let state = PollState::new().with_polls(1).with_learned(model.clone());
        let (after, basis) = decide(&p, &state);
        assert_eq!(basis, Basis::Learned);
        let exact = 10.0 + (20.0 * worth).sqrt();
        assert!(
            (exact - 1.0..exact + 0.2).contains(&after),
            "{after} vs {exact}"
        );
        // At 15 s the rest is about uniform on [15, 20]: (x − 15)² / 10 = worth.
        let state = state.with_elapsed(s(15.0));
        let (after, _) = decide(&p, &state);
        let exact = (10.0 * worth).sqrt();
        assert!((after - exact).abs() < 0.2 * exact, "{after} vs {exact}");
        // The hazard rises towards the end, and the looks get denser (though a request is
        // worth more there: 3 % of the age).
        let (near_end, _) = decide(&p, &state.clone().with_elapsed(s(19.0)));
        assert!(
            (0.1..after * 0.8).contains(&near_end),
            "{near_end} vs {after}"
        );
        // Past all but a handful of the learned jobs, the cold start takes over.
        assert_eq!(
            decide(&p, &state.clone().with_elapsed(s(19.7))).1,
            Basis::ColdStart
        );
        assert_eq!(decide(&p, &state.with_elapsed(s(25.0))).1, Basis::ColdStart);
        // Across the range: fewer polls than any fixed interval with the same mean delay
        // (`E[D] / I + 1.5` polls at `I / 2`), by far.
        let (mut polls, mut delay) = (0.0, 0.0);
        for i in 0..50 {
            let end: f64 = 10.1 + f64::from(i) / 5.5;
            let (n, late) = simulate(&p, end, None, Some(model.clone()));
            assert!(late < 0.3 * end, "{end}: {late}");
            polls += f64::from(n) / 50.0;
            delay += late / 50.0;
        }
        let fixed = 15.0 / (2.0 * delay) + 1.5;
        assert!(
            polls < 0.6 * fixed,
            "{polls} polls, {delay} s late; fixed: {fixed}"
        );
    }

    #[test]
    fn hints_take_precedence_over_learned() {
        let p = Adaptive::new();
        let model = Arc::new(DurationModel::fit(&[Sample::exact(s(2.0)); 20]));
        let state = PollState::new()
            .with_polls(1)
            .with_learned(model)
            .with_eta(Estimate::new(s(0.0), s(8.0)));
        assert_eq!(decide(&p, &state).1, Basis::Hints);
    }

    #[test]
    fn delays_never_go_below_the_minimum_interval() {
        let p = Adaptive::new().min_interval(Duration::from_millis(250));
        let state = PollState::new()
            .with_polls(3)
            .with_elapsed(s(3.9))
            .with_eta(Estimate::new(s(3.8), s(0.2)));
        let (after, _) = decide(&p, &state);
        assert!(after >= 0.25, "{after}");
        // Even above the cold start's maximum, set after it.
        let p = Adaptive::new().min_interval(Duration::from_secs(200));
        for age in [0.0, 30.0, 3600.0] {
            let (after, basis) = decide(&p, &PollState::new().with_polls(1).with_elapsed(s(age)));
            assert_eq!(basis, Basis::ColdStart);
            assert!((after - 200.0).abs() < 1e-9, "{age}: {after}");
        }
    }
}
