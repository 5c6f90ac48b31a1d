//! Job durations learned from past waits.
//!
//! # Why intervals, and why Turnbull
//!
//! A poller never sees when a job ended, only that it was still pending at one poll and
//! finished at the next: every observation is an *interval* `(lo, hi]` of job age. Recording
//! `hi` alone would bias the model late by the polling gap, and a schedule built from it would
//! keep polling late (a fixed point of its own bias). Instead the model is the
//! non-parametric maximum-likelihood estimate for interval-censored data (Turnbull's
//! self-consistency algorithm): probability mass on the *innermost* intervals that the
//! observations pin down. For jobs of a fixed length the intervals intersect and the mass
//! collapses onto their intersection, so a handful of waits that poll inside the current
//! window narrow it quickly; for spread-out durations the mass spreads accordingly. Waits that
//! gave up are right-censored samples `(lo, ∞)`, which keeps slow jobs from being forgotten.
//!
//! Exact durations (when the server reports both `created_at` and `completed_at`) are
//! 1 ms-wide intervals.
//!
//! Waits still in flight are right-censored samples `(age, ∞)` of the same fit, and a new
//! sample tells them to plan again (see [`LearnedDurations`]); saving and restoring the
//! history is in `saved`.
//!
//! (About 500 lines: what a wait observed, the sample it becomes, the fit and the shared,
//! bounded history with its waits in flight are one concept — splitting them would scatter
//! the one algorithm they serve.)

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// What one wait taught about a job's duration: it ended at an age in `(lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    lo: f64,
    hi: f64,
}

const EXACT_WIDTH: f64 = 0.001;

/// When a push channel (a held request, an event) reports the end, the job ended at most this
/// long before the answer arrived.
pub(crate) const PROMPT_WINDOW: Duration = Duration::from_millis(50);

/// What one finished wait observed about its job, in the job's age.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Evidence {
    /// `completed_at − created_at`, when the server reported both.
    pub(crate) exact: Option<Duration>,
    /// Age of the last answer that was still pending.
    pub(crate) last_pending: Option<Duration>,
    /// Whether the job's start is known (so "done at the first look" still bounds it).
    pub(crate) origin_known: bool,
    /// Age of the answer that reported the end.
    pub(crate) terminal: Duration,
    /// Whether that answer was pushed (held request, event): the end is then within
    /// [`PROMPT_WINDOW`] of it.
    pub(crate) prompt: bool,
    /// A lower bound on the end from steady progress read while pending, if any.
    pub(crate) progress_floor: Option<Duration>,
}

impl Evidence {
    /// The ages between which the job ended: exact when the server said, otherwise the
    /// tightest bracket the answers allow; `None` when the job was done at the first look and
    /// its start is unknown. `Sample::between` of it is what the wait teaches.
    pub(crate) fn bracket(&self) -> Option<(Duration, Duration)> {
        if let Some(exact) = self.exact {
            return Some((exact, exact));
        }
        let hi = self.terminal;
        let mut lo = match self.last_pending {
            Some(age) => age,
            None if self.origin_known => Duration::ZERO,
            None => return None,
        };
        if self.prompt {
            lo = lo.max(hi.saturating_sub(PROMPT_WINDOW));
        }
        if let Some(floor) = self.progress_floor.filter(|f| *f < hi) {
            lo = lo.max(floor);
        }
        Some((lo, hi))
    }
}

impl Sample {
    /// The age after which the job ended.
    pub(crate) fn lo(&self) -> Duration {
        super::seconds(self.lo)
    }

    /// The age by which the job had ended; `None`: it was still running when its wait
    /// stopped.
    pub(crate) fn hi(&self) -> Option<Duration> {
        self.hi.is_finite().then(|| super::seconds(self.hi))
    }

    /// The job ended after age `lo` and no later than age `hi` (swapped if reversed; widened
    /// to 1 ms if equal).
    pub fn between(lo: Duration, hi: Duration) -> Self {
        let (a, b) = (lo.as_secs_f64(), hi.as_secs_f64());
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        if hi - lo < EXACT_WIDTH {
            Sample {
                lo: (hi - EXACT_WIDTH).max(0.0),
                hi: hi.max(EXACT_WIDTH),
            }
        } else {
            Sample { lo, hi }
        }
    }

    /// The job took exactly `duration`.
    pub fn exact(duration: Duration) -> Self {
        Self::between(duration, duration)
    }

    /// The job was still running at age `lo` when the wait stopped.
    pub fn at_least(lo: Duration) -> Self {
        Sample {
            lo: lo.as_secs_f64(),
            hi: f64::INFINITY,
        }
    }
}

/// A fitted distribution of job durations (piecewise uniform on disjoint intervals).
#[derive(Clone, PartialEq, Default)]
pub struct DurationModel {
    /// `(lo, hi, mass)`, sorted, disjoint; `hi` may be infinite.
    pieces: Vec<(f64, f64, f64)>,
    /// The same mass, smoothed into the density the learned schedule reads (see
    /// `balanced::density`).
    smoothed: Vec<(f64, f64, f64)>,
    samples: usize,
    /// How many of the samples saw their job end (the rest were still running).
    ended: usize,
}

const MAX_ITERATIONS: usize = 200;
const TOLERANCE: f64 = 1e-6;
/// A large history is refitted at most this often (a fit of 1,000 spread brackets takes tens
/// of milliseconds); a small one on every new sample.
const REFIT_EVERY: Duration = Duration::from_secs(1);
const ALWAYS_REFIT_BELOW: usize = 64;
/// The grid the ages of waits in flight are rounded down to: steps of 5 % from 1 ms.
const CENSOR_FLOOR: f64 = 0.001;
const CENSOR_STEP: f64 = 1.05;

impl DurationModel {
    /// Fits the non-parametric maximum-likelihood distribution to `samples`.
    pub fn fit(samples: &[Sample]) -> Self {
        let weighed: Vec<(Sample, f64)> = samples.iter().map(|&s| (s, 1.0)).collect();
        Self::fit_weighed(&weighed)
    }

    /// [`fit`](Self::fit), each sample counting `weight` times (equal samples merged cost
    /// one sample's work).
    fn fit_weighed(samples: &[(Sample, f64)]) -> Self {
        let (samples, weights): (Vec<Sample>, Vec<f64>) = samples
            .iter()
            .copied()
            .filter(|(s, w)| s.lo.is_finite() && s.lo >= 0.0 && s.hi > s.lo && *w > 0.0)
            .unzip();
        if samples.is_empty() {
            return DurationModel::default();
        }

        // Innermost intervals: a left endpoint immediately followed by a right endpoint, with
        // right endpoints sorted first on ties, because (a, x] and (x, b] do not overlap.
        let mut ends: Vec<(f64, bool)> = Vec::with_capacity(samples.len() * 2);
        for s in &samples {
            ends.push((s.lo, true));
            ends.push((s.hi, false));
        }
        ends.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let innermost: Vec<(f64, f64)> = ends
            .windows(2)
            .filter(|w| w[0].1 && !w[1].1)
            .map(|w| (w[0].0, w[1].0))
            .collect();
        let m = innermost.len();
        if m == 0 {
            return DurationModel::default();
        }

        // Each sample covers a contiguous run of innermost intervals.
        let cover: Vec<(usize, usize)> = samples
            .iter()
            .map(|s| {
                let start = innermost.partition_point(|&(a, _)| a < s.lo);
                let end = innermost.partition_point(|&(_, b)| b <= s.hi);
                (start, end.max(start))
            })
            .collect();

        let n: f64 = weights.iter().sum();
        let mut mass = vec![1.0 / m as f64; m];
        let mut next = vec![0.0; m];
        for _ in 0..MAX_ITERATIONS {
            next.iter_mut().for_each(|x| *x = 0.0);
            for (&(start, end), &weight) in cover.iter().zip(&weights) {
                let total: f64 = mass[start..end].iter().sum();
                if total > 0.0 {
                    for j in start..end {
                        next[j] += weight * mass[j] / total / n;
                    }
                }
            }
            let change = mass
                .iter()
                .zip(&next)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            std::mem::swap(&mut mass, &mut next);
            if change < TOLERANCE {
                break;
            }
        }

        let total: f64 = mass.iter().sum();
        let pieces: Vec<(f64, f64, f64)> = innermost
            .iter()
            .zip(&mass)
            .filter(|(_, p)| **p > 1e-6)
            .map(|(&(a, b), &p)| (a, b, p / total))
            .collect();
        let mut model = DurationModel {
            pieces,
            smoothed: Vec::new(),
            samples: n.round() as usize,
            ended: samples
                .iter()
                .zip(&weights)
                .filter(|(s, _)| s.hi.is_finite())
                .map(|(_, w)| w)
                .sum::<f64>()
                .round() as usize,
        };
        model.smoothed = super::balanced::density(&model);
        model
    }

    /// How many samples the model was fitted to.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// How many of them saw their job end (the others are jobs still running when their
    /// waits stopped or, while they run, waits still in flight).
    pub fn ended(&self) -> usize {
        self.ended
    }

    /// The typical duration, in seconds: the median, or, while more than half the jobs are
    /// still running, the latest end seen (the median is at least that). `None` when no job
    /// was seen to end.
    pub(super) fn typical(&self) -> Option<f64> {
        if let Some(median) = self.quantile(0.5) {
            return Some(median.as_secs_f64());
        }
        self.pieces
            .iter()
            .rev()
            .find(|p| p.1.is_finite())
            .map(|p| p.1)
    }

    /// The age by which a fraction `q` of jobs had ended; `None` when that falls in the mass
    /// of jobs that were still running when their waits stopped, or the model is empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let q = q.clamp(0.0, 1.0);
        let mut cumulative = 0.0;
        for &(lo, hi, p) in &self.pieces {
            if cumulative + p >= q - 1e-12 {
                if !hi.is_finite() {
                    return None;
                }
                let within = if p > 0.0 {
                    ((q - cumulative) / p).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                return Some(super::seconds(lo + (hi - lo) * within));
            }
            cumulative += p;
        }
        None
    }

    /// The fraction of jobs that had ended by `age`.
    pub fn cdf(&self, age: Duration) -> f64 {
        self.cdf_secs(age.as_secs_f64())
    }

    /// A model made of `pieces` (sorted, disjoint, masses summing to 1), read as is by the
    /// schedule: a prior, not a fit.
    #[cfg(test)]
    pub(super) fn from_pieces(pieces: Vec<(f64, f64, f64)>) -> Self {
        DurationModel {
            smoothed: pieces.clone(),
            pieces,
            samples: 0,
            ended: 0,
        }
    }

    /// The fitted pieces `(lo, hi, mass)`: sorted, disjoint, uniform within, the last `hi`
    /// possibly infinite.
    pub(super) fn pieces(&self) -> &[(f64, f64, f64)] {
        &self.pieces
    }

    /// The same mass smoothed for the schedule, in the same form.
    pub(super) fn smoothed(&self) -> &[(f64, f64, f64)] {
        &self.smoothed
    }

    /// How many of the fitted samples' worth of jobs were seen to end after `age` (mass on
    /// finite pieces beyond it, times the sample count): what the model knows about the rest
    /// of a job that is still running at `age`.
    pub(super) fn samples_after(&self, age: f64) -> f64 {
        let mass: f64 = self
            .pieces
            .iter()
            .filter(|&&(_, hi, _)| hi.is_finite() && hi > age)
            .map(|&(lo, hi, p)| p * ((hi - age.max(lo)) / (hi - lo)).min(1.0))
            .sum();
        mass * self.samples as f64
    }

    /// [`cdf`](Self::cdf), in seconds.
    pub(super) fn cdf_secs(&self, t: f64) -> f64 {
        self.pieces
            .iter()
            .map(|&(lo, hi, p)| {
                if t >= hi {
                    p
                } else if t <= lo {
                    0.0
                } else {
                    p * (t - lo) / (hi - lo)
                }
            })
            .sum()
    }
}

impl fmt::Debug for DurationModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurationModel")
            .field("samples", &self.samples)
            .field("p05", &self.quantile(0.05))
            .field("p50", &self.quantile(0.5))
            .field("p95", &self.quantile(0.95))
            .finish()
    }
}

/// A bounded history of samples and the model fitted to it, shared by clones of a client.
///
/// Give the same value to several clients ([`ClientBuilder::learned_durations`]) to pool
/// what they learn, or start from a pre-filled one.
///
/// [`ClientBuilder::learned_durations`]: crate::ClientBuilder::learned_durations
///
/// # Waits in flight
///
/// A wait that has not ended yet knows something too: its job ran at least as long as it was
/// last seen pending. Every single wait ([`Client::wait`](crate::Client::wait)) registers
/// itself while it runs, and the fit counts each such wait as a right-censored sample
/// `(age, ∞)` — so a batch started together, whose short jobs end first, does not teach that
/// all jobs are short. When a finished wait records its sample, every single wait still
/// sleeping on the policy's schedule is told, and plans its next look again with the new
/// model: learning reaches the waits already running, not only those started later. (A job
/// set's waits take the new model at their next answer.)
#[derive(Clone)]
pub struct LearnedDurations {
    inner: Arc<Mutex<History>>,
    /// Bumped whenever a finished wait records a sample.
    changes: watch::Sender<u64>,
}

/// A wait in flight, as the learned durations count it (see
/// [`LearnedDurations::track`]): dropping it forgets the wait.
pub(crate) struct InFlight {
    learned: LearnedDurations,
    id: Option<u64>,
}

impl InFlight {
    /// The job was still running at `age`.
    pub(crate) fn pending(&self, age: Duration) {
        let Some(id) = self.id else { return };
        let mut history = self.learned.lock();
        if let Some(lo) = history.in_flight.get_mut(&id) {
            let age = age.as_secs_f64();
            if age > *lo {
                *lo = age;
                history.stale = true;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut history = self.learned.lock();
            if history.in_flight.remove(&id).is_some_and(|lo| lo > 0.0) {
                history.stale = true;
            }
        }
    }
}

struct History {
    samples: VecDeque<Sample>,
    /// Waits in flight: the age at which each last saw its job pending (at most `capacity`).
    in_flight: HashMap<u64, f64>,
    next_id: u64,
    capacity: usize,
    model: Arc<DurationModel>,
    /// Samples arrived since the last fit: refit on the next read, so a burst of finishing
    /// waits costs one fit, not one each.
    stale: bool,
    fitted_at: Option<Instant>,
    /// A caller is fitting the model outside the lock.
    fitting: bool,
    /// Bumped by `clear`: a fit begun before it is not kept.
    epoch: u64,
}

impl LearnedDurations {
    /// Keeps the latest `capacity` samples (at least 1; the default is 1,024).
    pub fn new(capacity: usize) -> Self {
        LearnedDurations {
            changes: watch::Sender::new(0),
            inner: Arc::new(Mutex::new(History {
                samples: VecDeque::new(),
                in_flight: HashMap::new(),
                next_id: 0,
                capacity: capacity.max(1),
                model: Arc::new(DurationModel::default()),
                stale: false,
                fitted_at: None,
                fitting: false,
                epoch: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a sample (the oldest goes when full), and tells the waits in flight.
    pub fn record(&self, sample: Sample) {
        self.record_all(&[sample]);
    }

    /// Adds samples in one go (see [`record`](Self::record)).
    pub(super) fn record_all(&self, samples: &[Sample]) {
        if samples.is_empty() {
            return;
        }
        {
            let mut history = self.lock();
            for &sample in samples {
                if history.samples.len() == history.capacity {
                    history.samples.pop_front();
                }
                history.samples.push_back(sample);
            }
            history.stale = true;
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Counts a wait in flight until the guard is dropped (see
    /// [the type's docs](Self#waits-in-flight)). No more than the history's capacity are
    /// counted at once; a wait beyond that is simply not.
    pub(crate) fn track(&self) -> InFlight {
        let mut history = self.lock();
        let id = (history.in_flight.len() < history.capacity).then(|| {
            let id = history.next_id;
            history.next_id = id.wrapping_add(1);
            history.in_flight.insert(id, 0.0);
            id
        });
        InFlight {
            learned: self.clone(),
            id,
        }
    }

    /// Changes whenever a finished wait records a sample: what a sleeping wait watches to
    /// plan again.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The model fitted to the current samples (refitted only when samples arrived since).
    ///
    /// The fit runs outside the lock, and a large one on the runtime's blocking pool:
    /// meanwhile, callers get the model of the last fit instead of waiting for it.
    pub fn model(&self) -> Arc<DurationModel> {
        let mut history = self.lock();
        // Waits in flight count too: a thousand of them, each seen pending again and again,
        // must not cost a fit per step.
        let due = history.samples.len() + history.in_flight.len() < ALWAYS_REFIT_BELOW
            || history
                .fitted_at
                .is_none_or(|at| at.elapsed() >= REFIT_EVERY);
        if history.stale && due && !history.fitting {
            // Waits in flight are censored samples; one not yet seen pending says nothing.
            // Their ages are rounded down to a grid of 5 % steps, still lower bounds, and the
            // waits on one step are one sample of their number: a thousand in flight cost
            // the fit a few dozen samples' work.
            let mut running: Vec<(u32, f64)> = history
                .in_flight
                .values()
                .filter(|&&lo| lo > CENSOR_FLOOR)
                .map(|&lo| {
                    let step = ((lo / CENSOR_FLOOR).ln() / CENSOR_STEP.ln()).floor();
                    (step as u32, 1.0)
                })
                .collect();
            running.sort_by_key(|r| r.0);
            running.dedup_by(|b, a| {
                let same = a.0 == b.0;
                if same {
                    a.1 += b.1;
                }
                same
            });
            let samples: Vec<(Sample, f64)> = history
                .samples
                .iter()
                .map(|&s| (s, 1.0))
                .chain(running.into_iter().map(|(step, weight)| {
                    let lo = CENSOR_FLOOR * CENSOR_STEP.powi(step as i32);
                    (Sample::at_least(super::seconds(lo)), weight)
                }))
                .collect();
            let small = samples.len() < ALWAYS_REFIT_BELOW;
            let first = history.fitted_at.is_none();
            history.stale = false;
            history.fitted_at = Some(Instant::now());
            history.fitting = true;
            let epoch = history.epoch;
            drop(history);
            // A large fit (tens of milliseconds) is not done on an async worker: the waits
            // it serves would stall behind it. It runs on the blocking pool, and callers get
            // the last model until it is done — unless there is none yet.
            if let (false, false, Ok(runtime)) =
                (small, first, tokio::runtime::Handle::try_current())
            {
                let learned = self.clone();
                runtime.spawn_blocking(move || learned.store(epoch, &samples));
                return Arc::clone(&self.lock().model);
            }
            return self.store(epoch, &samples);
        }
        Arc::clone(&history.model)
    }

    /// Fits `samples` and keeps the model, unless the history was cleared since `epoch`;
    /// returns the model now kept.
    fn store(&self, epoch: u64, samples: &[(Sample, f64)]) -> Arc<DurationModel> {
        let model = Arc::new(DurationModel::fit_weighed(samples));
        let mut history = self.lock();
        history.fitting = false;
        if history.epoch == epoch {
            history.model = model;
        }
        Arc::clone(&history.model)
    }

    /// The latest `n` samples, oldest first.
    pub(crate) fn recent(&self, n: usize) -> Vec<Sample> {
        let history = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = history.samples.len().saturating_sub(n);
        history.samples.iter().skip(skip).copied().collect()
    }

    /// Forgets every sample.
    pub fn clear(&self) {
        let mut history = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        history.samples.clear();
        history.model = Arc::new(DurationModel::default());
        history.stale = false;
        history.epoch = history.epoch.wrapping_add(1);
    }
}

impl Default for LearnedDurations {
    /// A history of 1,024 samples: enough that a batch of a few hundred jobs started together,
    /// whose short ones finish first, does not push out everything learned before it.
    fn default() -> Self {
        Self::new(1024)
    }
}

impl fmt::Debug for LearnedDurations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LearnedDurations")
            .field(&self.model())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn what_a_finished_wait_teaches() {
        let ms = Duration::from_millis;
        let base = Evidence {
            exact: None,
            last_pending: Some(ms(1000)),
            origin_known: true,
            terminal: ms(3000),
            prompt: false,
            progress_floor: None,
        };
        let table = [
            (base, Some((ms(1000), ms(3000)))),
            (
                Evidence {
                    exact: Some(ms(2500)),
                    ..base
                },
                Some((ms(2500), ms(2500))),
            ),
            (
                Evidence {
                    prompt: true,
                    ..base
                },
                Some((ms(2950), ms(3000))),
            ),
            (
                Evidence {
                    progress_floor: Some(ms(2000)),
                    ..base
                },
                Some((ms(2000), ms(3000))),
            ),
            (
                Evidence {
                    progress_floor: Some(ms(4000)),
                    ..base
                },
                Some((ms(1000), ms(3000))),
            ),
            (
                Evidence {
                    last_pending: None,
                    ..base
                },
                Some((ms(0), ms(3000))),
            ),
            (
                Evidence {
                    last_pending: None,
                    origin_known: false,
                    ..base
                },
                None,
            ),
        ];
        for (observed, want) in table {
            assert_eq!(observed.bracket(), want, "{observed:?}");
        }
    }

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    fn q(model: &DurationModel, p: f64) -> f64 {
        model.quantile(p).unwrap().as_secs_f64()
    }

    /// A deterministic stand-in for a random source (xorshift), so the tests are exact.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// What a poller on a fixed grid of `step` seconds (random phase) would record.
    fn bracket(duration: f64, step: f64, phase: f64) -> Sample {
        let k = ((duration - phase) / step).floor();
        let lo = (phase + k * step).max(0.0);
        Sample::between(s(lo), s(lo + step))
    }

    #[test]
    fn empty_and_degenerate() {
        let m = DurationModel::fit(&[]);
        assert_eq!(m.samples(), 0);
        assert_eq!(m.quantile(0.5), None);
        assert_eq!(m.cdf(s(10.0)), 0.0);
        let m = DurationModel::fit(&[Sample::exact(s(2.0))]);
        assert!((q(&m, 0.5) - 2.0).abs() < 0.001);
    }

    #[test]
    fn fixed_durations_collapse_onto_the_intersection() {
        // Wide, overlapping brackets around 2.0 s, as a cold-start poller records them.
        let samples = [
            Sample::between(s(1.0), s(2.5)),
            Sample::between(s(1.5), s(3.0)),
            Sample::between(s(1.9), s(2.1)),
            Sample::between(s(0.0), s(2.05)),
        ];
        let m = DurationModel::fit(&samples);
        assert!(q(&m, 0.05) >= 1.9 - 1e-9, "{m:?}");
        assert!(q(&m, 0.95) <= 2.05 + 1e-9, "{m:?}");
    }

    #[test]
    fn random_phase_brackets_pin_a_fixed_duration() {
        let mut rng = Rng(7);
        let samples: Vec<Sample> = (0..20).map(|_| bracket(2.0, 1.0, rng.uniform())).collect();
        let m = DurationModel::fit(&samples);
        let (lo, hi) = (q(&m, 0.0), q(&m, 1.0));
        assert!(lo <= 2.0 && 2.0 <= hi, "{lo}..{hi}");
        assert!(hi - lo < 0.25, "{lo}..{hi}");
    }

    #[test]
    fn uniform_durations_are_recovered() {
        // Durations uniform in [10, 20] s, polled every 0.5 s with random phase: the fit
        // matches the empirical quantiles of the true durations to within the polling step.
        let mut rng = Rng(42);
        let mut durations = Vec::new();
        let samples: Vec<Sample> = (0..200)
            .map(|_| {
                let d = 10.0 + 10.0 * rng.uniform();
                durations.push(d);
                bracket(d, 0.5, 0.5 * rng.uniform())
            })
            .collect();
        durations.sort_by(f64::total_cmp);
        let m = DurationModel::fit(&samples);
        for p in [0.05, 0.25, 0.5, 0.75, 0.95] {
            let want = durations[(p * 200.0) as usize];
            let got = q(&m, p);
            assert!((got - want).abs() < 0.3, "q{p}: {got} vs {want}");
            assert!((10.0..=20.0).contains(&got), "q{p}: {got}");
        }
        let below_15 = durations.iter().filter(|&&d| d < 15.0).count() as f64 / 200.0;
        assert!((m.cdf(s(15.0)) - below_15).abs() < 0.03);
    }

    #[test]
    fn bimodal_durations_keep_both_modes() {
        let mut rng = Rng(3);
        let samples: Vec<Sample> = (0..100)
            .map(|i| {
                let d = if i % 4 == 0 { 30.0 } else { 5.0 };
                bracket(d, 1.0, rng.uniform())
            })
            .collect();
        let m = DurationModel::fit(&samples);
        assert!(q(&m, 0.5) < 6.0, "{m:?}");
        assert!(q(&m, 0.9) > 29.0, "{m:?}");
        assert!((m.cdf(s(10.0)) - 0.75).abs() < 0.01, "{}", m.cdf(s(10.0)));
    }

    #[test]
    fn right_censored_waits_are_remembered() {
        let mut samples: Vec<Sample> = (0..8).map(|_| Sample::between(s(1.9), s(2.1))).collect();
        samples.push(Sample::at_least(s(5.0)));
        samples.push(Sample::at_least(s(5.0)));
        let m = DurationModel::fit(&samples);
        assert!(q(&m, 0.5) < 2.2);
        assert_eq!(m.quantile(0.95), None, "{m:?}");
        assert!((m.cdf(s(3.0)) - 0.8).abs() < 1e-6);
    }

    #[test]
    fn the_schedule_reads_a_smoothed_fit() {
        let total = |p: &[(f64, f64, f64)]| p.iter().map(|c| c.2).sum::<f64>();
        let widest_gap =
            |p: &[(f64, f64, f64)]| p.windows(2).map(|w| w[1].0 - w[0].1).fold(0.0, f64::max);
        // Misaligned 2 s brackets of durations spread over [10, 50] s: the fit is spiky (a
        // few narrow pieces with gaps between), the smoothed density is not.
        let mut rng = Rng(5);
        let samples: Vec<Sample> = (0..120)
            .map(|_| bracket(10.0 + 40.0 * rng.uniform(), 2.0, 2.0 * rng.uniform()))
            .collect();
        let m = DurationModel::fit(&samples);
        assert!((total(m.smoothed()) - 1.0).abs() < 1e-6);
        assert!(widest_gap(m.pieces()) > 0.5, "the fit has gaps");
        assert!(
            widest_gap(m.smoothed()) < 1e-9,
            "the smoothed density has none"
        );
        // Less than a hundredth of the mass within 2 s of either end moved more than 5 s.
        let (lo, hi) = (m.smoothed()[0].0, m.smoothed().last().unwrap().1);
        assert!(
            (5.0..10.0).contains(&lo) && (50.0..65.0).contains(&hi),
            "{lo}..{hi}"
        );
        // A collapsed fit stays collapsed.
        let samples = [Sample::between(s(1.9), s(2.0)); 20];
        let m = DurationModel::fit(&samples);
        assert!(
            m.smoothed()
                .iter()
                .all(|c| c.0 >= 1.9 - 1e-9 && c.1 <= 2.0 + 1e-9)
        );
        // Waits that gave up keep their own piece.
        let mut samples: Vec<Sample> = (0..16)
            .map(|i| Sample::exact(s(10.0 + f64::from(i))))
            .collect();
        samples.push(Sample::at_least(s(40.0)));
        let m = DurationModel::fit(&samples);
        let smoothed = m.smoothed();
        assert!((total(smoothed) - 1.0).abs() < 1e-6);
        assert!(smoothed[smoothed.len() - 1].1.is_infinite());
        assert!(smoothed[smoothed.len() - 2].1 < 40.0, "{smoothed:?}");
    }

    #[test]
    fn fitting_a_full_history_is_cheap() {
        // 1024 spread, overlapping brackets: one fit must stay well under a poll interval.
        let mut rng = Rng(11);
        let learned = LearnedDurations::new(1024);
        for _ in 0..1024 {
            let d = 2.0 + 28.0 * rng.uniform();
            learned.record(bracket(d, 2.0, 2.0 * rng.uniform()));
        }
        // And as many waits in flight, seen pending at ages across the range.
        let running: Vec<InFlight> = (0..1024).map(|_| learned.track()).collect();
        for wait in &running {
            wait.pending(s(1.0 + 29.0 * rng.uniform()));
        }
        let started = tokio::time::Instant::now();
        let m = learned.model();
        let took = started.elapsed();
        assert_eq!(m.samples(), 2048);
        eprintln!("fit of 1024 brackets and 1024 waits in flight: {took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(
            Arc::ptr_eq(&m, &learned.model()),
            "not refitted without new samples"
        );
    }

    #[test]
    fn waits_in_flight_are_censored_samples() {
        let learned = LearnedDurations::new(64);
        for _ in 0..10 {
            learned.record(Sample::exact(s(2.0)));
        }
        // A batch: ten jobs ended at 2 s, ten more are still running at 5 s.
        let running: Vec<InFlight> = (0..10).map(|_| learned.track()).collect();
        let unseen = learned.track();
        for wait in &running {
            wait.pending(s(5.0));
        }
        let m = learned.model();
        assert_eq!(
            (m.samples(), m.ended()),
            (20, 10),
            "the unseen one says nothing"
        );
        assert!((m.cdf(s(3.0)) - 0.5).abs() < 1e-6, "{m:?}");
        assert_eq!(m.quantile(0.9), None, "half of them ran past 5 s");
        // Once they end (and say when), they are samples like any other.
        drop(running);
        drop(unseen);
        let m = learned.model();
        assert_eq!((m.samples(), m.ended()), (10, 10));
        assert!((m.cdf(s(3.0)) - 1.0).abs() < 1e-6, "{m:?}");
        // Recording tells the watchers; counting waits in flight does not.
        let mut changes = learned.changes();
        changes.borrow_and_update();
        let _wait = learned.track();
        assert!(!changes.has_changed().unwrap());
        learned.record(Sample::exact(s(2.0)));
        assert!(changes.has_changed().unwrap());
        // No more waits are counted than the history holds.
        let small = LearnedDurations::new(2);
        let waits: Vec<InFlight> = (0..5).map(|_| small.track()).collect();
        waits.iter().for_each(|w| w.pending(s(1.0)));
        assert_eq!(small.model().samples(), 2);
    }

    /// On a runtime, a large refit is done off the caller: it gets the last model at once,
    /// and the new one once the fit is done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_refit_runs_off_the_async_workers() {
        let learned = LearnedDurations::new(1024);
        for i in 0..200 {
            learned.record(Sample::exact(s(1.0 + f64::from(i % 7))));
        }
        assert_eq!(
            learned.model().samples(),
            200,
            "the first fit is the caller's"
        );
        learned.record(Sample::exact(s(9.0)));
        // Once a second at most, for a history this large.
        tokio::time::sleep(REFIT_EVERY).await;
        let seen = learned.model().samples();
        assert!(seen == 200 || seen == 201, "{seen}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while learned.model().samples() != 201 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fit never landed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn history_is_bounded_and_shared() {
        let learned = LearnedDurations::new(3);
        let clone = learned.clone();
        for d in [1.0, 1.0, 1.0, 9.0, 9.0, 9.0] {
            clone.record(Sample::exact(s(d)));
        }
        let m = learned.model();
        assert_eq!(m.samples(), 3);
        assert!((q(&m, 0.05) - 9.0).abs() < 0.01, "{m:?}");
        learned.clear();
        assert_eq!(clone.model().samples(), 0);
    }
}
