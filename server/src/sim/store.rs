//! The job store: bounded, with expiry.
//!
//! Memory per job is a few hundred bytes and fixed. The store refuses new jobs past
//! `jobs.max_jobs` (after first dropping what has expired), and the sweeper forgets finished
//! jobs `jobs.ttl` after they end, so no sequence of requests can grow it without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, LogNormal};
use tokio::time::Instant;
use url::Url;

use super::job::Job;
use crate::settings::{DurationKind, DurationSettings, Outcome, Settings};

/// Id of the job behind `GET /status`.
pub const LEGACY_ID: &str = "legacy";

/// What a new job should be; unset fields are drawn from the configuration.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// How long it runs.
    pub duration: Option<Duration>,
    /// How it ends.
    pub outcome: Option<Outcome>,
    /// Webhook target.
    pub callback: Option<Url>,
    /// Stay pending forever, progress frozen (a stuck job, for stall detection).
    pub hang: bool,
}

/// The store is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFull;

/// What a sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Jobs that turned terminal since they were last looked at.
    pub newly_finished: Vec<Outcome>,
    /// Jobs forgotten after their TTL.
    pub expired: usize,
    /// Jobs still held.
    pub held: usize,
}

/// All jobs, by id.
#[derive(Debug)]
pub struct JobStore {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    rng: Mutex<SmallRng>,
    max_jobs: usize,
    ttl: Duration,
    error_rate: f64,
    eta_noise: f64,
    duration: DurationSettings,
    /// Generation of the next legacy job: starts at the start-up wall clock in microseconds,
    /// so that neither a reset nor a restart repeats a version a client has seen.
    legacy_generation: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (single operations).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Draws one duration from the configured distribution.
pub fn sample_duration(d: &DurationSettings, rng: &mut impl Rng) -> Duration {
    match d.kind {
        DurationKind::Fixed => d.value,
        DurationKind::Uniform => {
            let (lo, hi) = (d.min.as_secs_f64(), d.max.as_secs_f64());
            if hi <= lo {
                d.min
            } else {
                Duration::from_secs_f64(rng.random_range(lo..=hi))
            }
        }
        DurationKind::Lognormal => {
            let mu = d.median.as_secs_f64().ln();
            match LogNormal::new(mu, d.sigma) {
                // Cap at a day so that a huge sigma cannot overflow a Duration.
                Ok(dist) => Duration::from_secs_f64(dist.sample(rng).min(86_400.0)),
                Err(_) => d.median,
            }
        }
    }
}

impl JobStore {
    /// An empty store configured by `settings`.
    pub fn new(settings: &Settings, rng: SmallRng) -> Self {
        JobStore {
            jobs: Mutex::new(HashMap::new()),
            rng: Mutex::new(rng),
            max_jobs: settings.jobs.max_jobs,
            ttl: settings.jobs.ttl,
            error_rate: settings.jobs.error_rate,
            eta_noise: settings.hints.eta_noise,
            duration: settings.jobs.duration.clone(),
            legacy_generation: AtomicU64::new(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0)),
            ),
        }
    }

    /// Creates a job with a fresh id.
    pub fn create(&self, spec: JobSpec) -> Result<Arc<Job>, StoreFull> {
        let id = format!("j-{:016x}", lock(&self.rng).random::<u64>());
        self.insert(id, spec, false)
    }

    /// Creates (or replaces) the legacy job.
    pub fn reset_legacy(&self, spec: JobSpec) -> Result<Arc<Job>, StoreFull> {
        self.insert(LEGACY_ID.to_string(), spec, true)
    }

    fn insert(&self, id: String, spec: JobSpec, replace: bool) -> Result<Arc<Job>, StoreFull> {
        let (duration, outcome, bias) = {
            let mut rng = lock(&self.rng);
            let duration = spec
                .duration
                .unwrap_or_else(|| sample_duration(&self.duration, &mut *rng));
            let outcome = spec.outcome.unwrap_or_else(|| {
                if rng.random_bool(self.error_rate) {
                    Outcome::Error
                } else {
                    Outcome::Completed
                }
            });
            let bias = if self.eta_noise > 0.0 {
                rng.random_range(1.0 - self.eta_noise..=1.0 + self.eta_noise)
            } else {
                1.0
            };
            (duration, outcome, bias)
        };
        let mut job = Job::new(id, duration, outcome, bias, spec.callback);
        if replace {
            job = job.with_generation(self.legacy_generation.fetch_add(1, Ordering::Relaxed));
        }
        let job = Arc::new(if spec.hang { job.hanging() } else { job });
        let mut jobs = lock(&self.jobs);
        if jobs.len() >= self.max_jobs && !(replace && jobs.contains_key(&job.id)) {
            let now = Instant::now();
            let ttl = self.ttl;
            jobs.retain(|_, j| !expired(j, now, ttl));
            if jobs.len() >= self.max_jobs {
                return Err(StoreFull);
            }
        }
        if let Some(old) = jobs.insert(job.id.clone(), Arc::clone(&job)) {
            old.changed.notify_waiters();
        }
        Ok(job)
    }

    /// The job with this id, if held.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.jobs).get(id).cloned()
    }

    /// Number of jobs held.
    pub fn len(&self) -> usize {
        lock(&self.jobs).len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets expired jobs and reports the ones that turned terminal. The legacy job never
    /// expires: `GET /status` always answers. Neither does a hanging job, which never ends:
    /// only `jobs.max_jobs` bounds how many of those are held.
    pub fn sweep(&self, now: Instant) -> SweepReport {
        let mut report = SweepReport::default();
        let ttl = self.ttl;
        let mut jobs = lock(&self.jobs);
        jobs.retain(|id, job| {
            if job.is_done(now) && job.take_finish() {
                report.newly_finished.push(job.outcome);
            }
            let keep = id == LEGACY_ID || !expired(job, now, ttl);
            if !keep {
                report.expired += 1;
            }
            keep
        });
        report.held = jobs.len();
        report
    }
}

fn expired(job: &Job, now: Instant, ttl: Duration) -> bool {
    now >= crate::time::later(job.completes_at(), ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn store_with_error_rate(rate: f64) -> JobStore {
        let mut s = Settings::default();
        s.jobs.error_rate = rate;
        JobStore::new(&s, SmallRng::seed_from_u64(7))
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_is_enforced_and_expired_jobs_make_room() {
        let mut s = Settings::default();
        s.jobs.max_jobs = 2;
        s.jobs.ttl = Duration::from_secs(1);
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        let short = JobSpec {
            duration: Some(Duration::from_millis(10)),
            ..JobSpec::default()
        };
        store.create(short.clone()).unwrap();
        store.create(short.clone()).unwrap();
        assert_eq!(store.create(short.clone()).unwrap_err(), StoreFull);
        tokio::time::advance(Duration::from_secs(2)).await;
        store.create(short).unwrap();
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_reports_each_finish_once_and_expires_after_ttl() {
        let mut s = Settings::default();
        s.jobs.ttl = Duration::from_secs(5);
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        store
            .reset_legacy(JobSpec {
                duration: Some(Duration::ZERO),
                ..JobSpec::default()
            })
            .unwrap();
        store
            .create(JobSpec {
                duration: Some(Duration::from_secs(1)),
                outcome: Some(Outcome::Error),
                ..JobSpec::default()
            })
            .unwrap();
        let r = store.sweep(Instant::now() + Duration::from_secs(2));
        assert_eq!(r.newly_finished.len(), 2);
        assert!(r.newly_finished.contains(&Outcome::Error));
        let r = store.sweep(Instant::now() + Duration::from_secs(3));
        assert!(r.newly_finished.is_empty());
        let r = store.sweep(Instant::now() + Duration::from_secs(7));
        assert_eq!((r.expired, r.held), (1, 1), "legacy never expires");
    }

    #[test]
    fn outcome_follows_error_rate() {
        let all_err = store_with_error_rate(1.0);
        let none_err = store_with_error_rate(0.0);
        for _ in 0..20 {
            assert_eq!(
                all_err.create(JobSpec::default()).unwrap().outcome,
                Outcome::Error
            );
            assert_eq!(
                none_err.create(JobSpec::default()).unwrap().outcome,
                Outcome::Completed
            );
        }
    }

    #[test]
    fn durations_follow_their_distribution() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut d = Settings::default().jobs.duration;
        d.kind = DurationKind::Uniform;
        d.min = Duration::from_secs(2);
        d.max = Duration::from_secs(4);
        for _ in 0..100 {
            let x = sample_duration(&d, &mut rng);
            assert!(x >= d.min && x <= d.max, "{x:?}");
        }
        d.kind = DurationKind::Lognormal;
        d.median = Duration::from_secs(3);
        d.sigma = 0.5;
        let mut xs: Vec<f64> = (0..2001)
            .map(|_| sample_duration(&d, &mut rng).as_secs_f64())
            .collect();
        xs.sort_by(f64::total_cmp);
        let median = xs[1000];
        assert!((2.7..3.3).contains(&median), "median {median}");
        d.kind = DurationKind::Fixed;
        d.value = Duration::from_millis(1234);
        assert_eq!(sample_duration(&d, &mut rng), Duration::from_millis(1234));
    }
}
