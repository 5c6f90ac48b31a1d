//! The job store: bounded, with expiry.
//!
//! Memory per job is a few hundred bytes and fixed. The store refuses new jobs past
//! `jobs.max_jobs`, forgets finished jobs `jobs.ttl` after they end and hanging jobs (which
//! never end) `jobs.hang_ttl` after they were created, so no sequence of requests can grow it
//! without bound or fill it until a restart.
//!
//! Every job's expiry is known when it is created, so the store keeps two timelines beside the
//! map: when each job finishes and when each expires. A timer task drains the finishes as they
//! fall due ([`JobStore::finish_due`], which logs each end in the change log and counts it), the
//! sweeper the expiries, a batch per lock hold, touching only due jobs.
//!
//! The store also keeps the change log ([`super::changes`]): every change of a job is appended
//! while the store's lock is held, so the log's head and the jobs held can be read together
//! ([`JobStore::client_jobs`], [`JobStore::at_head`]). A create that finds the
//! store (or its client's share, `jobs.max_jobs_per_client`) full looks at the soonest expiry
//! only: if it is due, that job makes room; otherwise the refusal is immediate. No path scans
//! the map while holding its lock, so a stream of refused creates costs the readers of other
//! jobs nothing.
//!
//! ## A copy of a shared store
//!
//! With the Redis backend (`sim::redis`) the store is this replica's copy of the jobs in Redis:
//! nothing is created, canceled or forgotten here. The task that tails the shared change log
//! applies each entry (`JobStore::apply`) — the job and the change together, under the lock,
//! at the log's own offset — so every read above (a status, a snapshot at the head, a watch
//! set's addition) works on the copy as it does on a store of its own. The timelines stay
//! empty: Redis keeps when each job ends and expires, and its scripts decide.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, LogNormal};
use tokio::time::Instant;
use url::Url;

use tokio::sync::Notify;

use super::changes::{ChangeKind, ChangeLog, Cursor, JobRecord};
use super::client::ClientId;
use super::heygen::HeyGenJob;
use super::job::{Cancel, End, Job, Mark, State};
use super::timeline::Timeline;
use crate::settings::{DurationKind, DurationSettings, Outcome, Settings};

/// Most expired jobs a create forgets to make room for itself; the sweeper forgets the rest.
const MAX_EXPIRED_PER_CREATE: u64 = 4;

/// Most due finishes or expiries the sweeper handles per hold of the lock.
const SWEEP_BATCH: usize = 1024;

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
    /// Who asks: counted against `jobs.max_jobs_per_client` while the job is held. `None`
    /// (jobs created in process) belongs to no client.
    pub client: Option<ClientId>,
    /// Created in the HeyGen dialect, with what that dialect needs of it.
    pub heygen: Option<HeyGenJob>,
}

/// The store is full (the legacy job has no room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFull;

/// Why the store would not take a new job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// It holds `jobs.max_jobs` jobs, none of them expired.
    #[error("the store holds jobs.max_jobs jobs")]
    StoreFull,
    /// The asking client holds `jobs.max_jobs_per_client` jobs, none of them expired.
    #[error("the client holds jobs.max_jobs_per_client jobs")]
    ClientFull,
    /// The store is shared (`store.backend = "redis"`): jobs are created through the API.
    #[error("the store is shared through Redis: create jobs through the API")]
    Shared,
}

/// What a sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Jobs forgotten after their TTL that had not been counted as finished yet (their
    /// finish came due in the same instant), and how they ended.
    pub newly_finished: Vec<State>,
    /// Jobs forgotten after their TTL.
    pub expired: usize,
    /// Jobs still held.
    pub held: usize,
}

/// What draining the due finishes found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FinishReport {
    /// Jobs that turned terminal since they were last looked at, and how they ended.
    pub newly_finished: Vec<State>,
    /// When the next job finishes, if any is pending.
    pub next: Option<Instant>,
}

/// An entry of a shared change log, as the replica's copy of the store applies it (see the
/// module docs).
#[derive(Debug)]
pub(crate) enum Logged {
    /// A job created (the legacy job: created again), whose it is, and when it is forgotten.
    Created {
        /// The job, a copy ([`Job::shared`]).
        job: Box<Job>,
        /// Whose it is.
        client: Option<ClientId>,
        /// When it expires (`None`: never, the legacy job).
        expires: Option<Instant>,
    },
    /// A job ended: canceled at this wall-clock time, or (`None`) on its own.
    Ended {
        /// Its id.
        id: String,
        /// When it was canceled, if it was.
        canceled_at: Option<SystemTime>,
        /// When it is forgotten now (a cancel brings it forward).
        expires: Option<Instant>,
    },
    /// A job forgotten after its TTL.
    Gone {
        /// Its id.
        id: String,
    },
    /// An entry that is no job's change (a watch set's, the faults'): it takes its offset.
    Other,
}

/// All jobs, by id, bounded and expiring.
#[derive(Debug)]
pub struct JobStore {
    /// The jobs and their timelines, under one lock.
    held: Mutex<Held>,
    /// Draws durations, outcomes, estimate biases and ids.
    rng: Mutex<SmallRng>,
    /// `jobs.max_jobs`: a create past it is refused.
    max_jobs: usize,
    /// `jobs.max_jobs_per_client`: a client's create past it is refused.
    max_per_client: usize,
    /// `jobs.ttl`: how long a finished job is kept.
    ttl: Duration,
    /// `jobs.hang_ttl`: how long a hanging job is kept (it never finishes).
    hang_ttl: Duration,
    /// `jobs.error_rate`.
    error_rate: f64,
    /// `hints.eta_noise`.
    eta_noise: f64,
    /// `jobs.duration`.
    duration: DurationSettings,
    /// Generation of the next legacy job: starts at the start-up wall clock in microseconds,
    /// so that neither a reset nor a restart repeats a version a client has seen.
    legacy_generation: AtomicU64,
    /// Every change of every job, appended while `held` is locked.
    changes: ChangeLog,
    /// Woken when a job is created that finishes before every other pending one, so the timer
    /// task draining the finishes re-arms.
    finishes_moved: Notify,
}

#[derive(Debug, Default)]
struct Held {
    /// Every job, by id.
    jobs: HashMap<String, Entry>,
    /// When each job becomes terminal (a hanging job never does).
    finishes: Timeline<Arc<Job>>,
    /// When each job is forgotten (the legacy job never is).
    expiries: Timeline<Arc<Job>>,
    /// Jobs held per client, by id; a client holding none has no entry, so this is never
    /// larger than `jobs`.
    per_client: HashMap<ClientId, HashMap<String, Arc<Job>>>,
    /// Expiries looked at by creates that found the store full.
    examined: u64,
}

#[derive(Debug)]
struct Entry {
    job: Arc<Job>,
    /// When it is forgotten; `None` for the legacy job.
    expires: Option<Instant>,
    /// Whose it is, if anyone's.
    client: Option<ClientId>,
}

impl Held {
    /// Whose `job` is, if it is the one held under its id (`Some(None)`: the operator's).
    fn owner(&self, job: &Arc<Job>) -> Option<Option<ClientId>> {
        self.jobs
            .get(&job.id)
            .filter(|e| Arc::ptr_eq(&e.job, job))
            .map(|e| e.client)
    }

    fn held_by(&self, client: ClientId) -> usize {
        self.per_client.get(&client).map_or(0, HashMap::len)
    }

    fn release(&mut self, client: ClientId, id: &str) {
        if let Some(jobs) = self.per_client.get_mut(&client) {
            jobs.remove(id);
            if jobs.is_empty() {
                self.per_client.remove(&client);
            }
        }
    }
}

/// What `job` looked like at `now`, as a change of `kind` reports it.
fn record(job: &Job, client: Option<ClientId>, kind: ChangeKind, now: Instant) -> JobRecord {
    let (state, progress) = match kind {
        ChangeKind::Created => (State::Pending, 0.0),
        ChangeKind::Ended | ChangeKind::Gone => {
            let snap = job.snapshot(now);
            (snap.state, snap.progress)
        }
    };
    JobRecord {
        id: job.id.clone(),
        client,
        state,
        progress,
        created: job.created_wall,
        completed: state.is_terminal().then(|| job.completed_wall()),
    }
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

/// Jobs by id, as [`JobStore::at_head`] lets its caller look them up.
#[derive(Debug)]
pub struct Lookup<'a> {
    held: &'a Held,
    now: Instant,
}

impl Lookup<'_> {
    /// The job with this id, if held and not expired, and whose it is (`None`: the
    /// operator's).
    pub fn get(&self, id: &str) -> Option<(Arc<Job>, Option<ClientId>)> {
        self.held
            .jobs
            .get(id)
            .filter(|e| e.expires.is_none_or(|at| self.now < at))
            .map(|e| (Arc::clone(&e.job), e.client))
    }

    /// The job held under this id, expired or not: a snapshot reports it as the change log
    /// says (its `gone` comes when the sweeper forgets it).
    pub fn held(&self, id: &str) -> Option<Arc<Job>> {
        self.held.jobs.get(id).map(|e| Arc::clone(&e.job))
    }
}

impl JobStore {
    /// An empty store configured by `settings`.
    pub fn new(settings: &Settings, mut rng: SmallRng) -> Self {
        // A random epoch (never 0): a cursor of another run, or another simulator, is refused.
        let epoch = rng.random_range(1..1u64 << 53);
        JobStore {
            held: Mutex::default(),
            max_jobs: settings.jobs.max_jobs,
            max_per_client: settings.jobs.max_jobs_per_client,
            ttl: settings.jobs.ttl,
            hang_ttl: settings.jobs.hang_ttl,
            error_rate: settings.jobs.error_rate,
            eta_noise: settings.hints.eta_noise,
            duration: settings.jobs.duration.clone(),
            legacy_generation: AtomicU64::new(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0)),
            ),
            changes: ChangeLog::memory(&settings.changes, epoch),
            finishes_moved: Notify::new(),
            rng: Mutex::new(rng),
        }
    }

    /// The change log.
    pub fn changes(&self) -> &ChangeLog {
        &self.changes
    }

    /// Logs `kind` for `job` (whose client is `client`) at `now` and marks it on the job. Takes
    /// the held jobs to say that the caller holds their lock (see the module docs).
    fn log(
        &self,
        _held: &mut Held,
        job: &Job,
        client: Option<ClientId>,
        kind: ChangeKind,
        now: Instant,
    ) {
        let offset = self
            .changes
            .append(kind, record(job, client, kind, now), now);
        let mark = match kind {
            ChangeKind::Created => Mark::Created,
            ChangeKind::Ended => Mark::Ended,
            ChangeKind::Gone => Mark::Gone,
        };
        job.marks.set(mark, offset);
    }

    /// Logs `job`'s end if it has ended by `now` and its end is not logged yet; returns how it
    /// ended when this call logged it.
    fn log_end(
        &self,
        held: &mut Held,
        job: &Job,
        client: Option<ClientId>,
        now: Instant,
    ) -> Option<State> {
        if job.marks.get(Mark::Ended).is_some() {
            return None;
        }
        let state = job.snapshot(now).state;
        if !state.is_terminal() {
            return None;
        }
        self.log(held, job, client, ChangeKind::Ended, now);
        Some(state)
    }

    /// Forgets `job` if it is still the one held under its id, logging its end (if that was
    /// not logged yet) and then that it is gone.
    fn forget(&self, held: &mut Held, job: &Arc<Job>, now: Instant) -> bool {
        let Some(client) = held.owner(job) else {
            return false;
        };
        self.log_end(held, job, client, now);
        self.log(held, job, client, ChangeKind::Gone, now);
        held.jobs.remove(&job.id);
        if let Some(client) = client {
            held.release(client, &job.id);
        }
        true
    }

    /// Creates a job with a fresh id, for `spec.client` if set.
    pub fn create(&self, spec: JobSpec) -> Result<Arc<Job>, Refused> {
        let mut jobs = self.create_many(vec![spec])?;
        jobs.pop().ok_or(Refused::StoreFull)
    }

    /// Creates one job per spec, all or none: for one client (the first spec's `client`, which
    /// is counted for every job), in one hold of the lock, so that either there is room for
    /// all of them or nothing is created.
    pub fn create_many(&self, specs: Vec<JobSpec>) -> Result<Vec<Arc<Job>>, Refused> {
        let client = specs.first().and_then(|s| s.client);
        let drawn: Vec<_> = specs.iter().map(|spec| self.draw(spec)).collect();
        let now = Instant::now();
        let mut held = lock(&self.held);
        self.make_room(&mut held, now, client, specs.len())?;
        let jobs = specs
            .into_iter()
            .zip(drawn)
            .map(|(spec, drawn)| self.place(&mut held, None, JobSpec { client, ..spec }, drawn))
            .collect();
        Ok(jobs)
    }

    /// Creates (or replaces) the legacy job. It never expires, belongs to no client, and
    /// replacing it needs no room.
    pub fn reset_legacy(&self, spec: JobSpec) -> Result<Arc<Job>, StoreFull> {
        let spec = JobSpec {
            client: None,
            ..spec
        };
        let drawn = self.draw(&spec);
        let mut held = lock(&self.held);
        if !held.jobs.contains_key(LEGACY_ID) {
            self.make_room(&mut held, Instant::now(), None, 1)
                .map_err(|_| StoreFull)?;
        }
        Ok(self.place(&mut held, Some(LEGACY_ID), spec, drawn))
    }

    pub(crate) fn draw_id(&self) -> String {
        format!("j-{:016x}", lock(&self.rng).random::<u64>())
    }

    /// What `spec` leaves to chance, drawn: `(duration, outcome, estimate bias)`.
    pub(crate) fn draw(&self, spec: &JobSpec) -> (Duration, Outcome, f64) {
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
    }

    /// Builds the job and holds it (room was made by the caller).
    fn place(
        &self,
        held: &mut Held,
        legacy: Option<&str>,
        spec: JobSpec,
        (duration, outcome, bias): (Duration, Outcome, f64),
    ) -> Arc<Job> {
        let id = match legacy {
            Some(id) => id.to_string(),
            // A 64-bit id drawn twice is all but impossible; never let it replace a job.
            None => loop {
                let id = self.draw_id();
                if !held.jobs.contains_key(&id) {
                    break id;
                }
            },
        };
        let mut job = Job::new(id, duration, outcome, bias, spec.callback);
        if legacy.is_some() {
            job = job.with_generation(self.legacy_generation.fetch_add(1, Ordering::Relaxed));
        }
        if let Some(heygen) = spec.heygen {
            job = job.with_heygen(heygen);
        }
        let job = Arc::new(if spec.hang { job.hanging() } else { job });
        let expires = match (legacy, spec.hang) {
            (Some(_), _) => None,
            (None, true) => Some(crate::time::later(job.created, self.hang_ttl)),
            (None, false) => Some(crate::time::later(job.completes_at(), self.ttl)),
        };
        if !job.hang {
            let at = job.completes_at();
            if held.finishes.next_at().is_none_or(|next| at < next) {
                self.finishes_moved.notify_one();
            }
            held.finishes.push(at, Arc::clone(&job));
        }
        if let Some(at) = expires {
            held.expiries.push(at, Arc::clone(&job));
        }
        let entry = Entry {
            job: Arc::clone(&job),
            expires,
            client: spec.client,
        };
        if let Some(client) = spec.client {
            held.per_client
                .entry(client)
                .or_default()
                .insert(job.id.clone(), Arc::clone(&job));
        }
        if let Some(old) = held.jobs.insert(job.id.clone(), entry) {
            if let Some(client) = old.client {
                held.release(client, &old.job.id);
            }
            old.job.changed.notify_waiters();
        }
        self.log(held, &job, spec.client, ChangeKind::Created, Instant::now());
        job
    }

    /// Applies the entry of a shared change log at `offset`, appended at `at` (see the module
    /// docs): the job and its change together, while no other change can be appended. Returns
    /// the job it concerns, if it is held.
    pub(crate) fn apply(&self, offset: u64, at: Instant, logged: Logged) -> Option<Arc<Job>> {
        let mut guard = lock(&self.held);
        let held = &mut *guard;
        let now = Instant::now();
        match logged {
            Logged::Created {
                job,
                client,
                expires,
            } => {
                // The same creation already held (loaded when the copy started over): keep it,
                // with what it knows of its end.
                if let Some(same) = held.jobs.get(&job.id).filter(|e| {
                    e.job.generation == job.generation && e.job.created_wall == job.created_wall
                }) {
                    let same = Arc::clone(&same.job);
                    same.marks.set(Mark::Created, offset);
                    let change = record(&same, client, ChangeKind::Created, now);
                    self.changes
                        .append_at(offset, at, Some((ChangeKind::Created, change)));
                    return Some(same);
                }
                let job = Arc::new(*job);
                job.marks.set(Mark::Created, offset);
                let change = record(&job, client, ChangeKind::Created, now);
                self.hold(held, &job, client, expires);
                self.changes
                    .append_at(offset, at, Some((ChangeKind::Created, change)));
                Some(job)
            }
            Logged::Ended {
                id,
                canceled_at,
                expires,
            } => {
                let Some(entry) = held.jobs.get_mut(&id) else {
                    self.changes.append_at(offset, at, None);
                    return None;
                };
                if let (Some(new), Some(old)) = (expires, entry.expires) {
                    entry.expires = Some(new.min(old));
                }
                let (job, client) = (Arc::clone(&entry.job), entry.client);
                job.decide(match canceled_at {
                    None => End::Natural,
                    Some(at) => {
                        End::CanceledAfter(at.duration_since(job.created_wall).unwrap_or_default())
                    }
                });
                job.marks.set(Mark::Ended, offset);
                let change = record(&job, client, ChangeKind::Ended, now);
                self.changes
                    .append_at(offset, at, Some((ChangeKind::Ended, change)));
                job.changed.notify_waiters();
                Some(job)
            }
            Logged::Gone { id } => {
                let Some(entry) = held.jobs.remove(&id) else {
                    self.changes.append_at(offset, at, None);
                    return None;
                };
                if let Some(client) = entry.client {
                    held.release(client, &id);
                }
                entry.job.marks.set(Mark::Gone, offset);
                let change = record(&entry.job, entry.client, ChangeKind::Gone, now);
                self.changes
                    .append_at(offset, at, Some((ChangeKind::Gone, change)));
                entry.job.changed.notify_waiters();
                Some(entry.job)
            }
            Logged::Other => {
                self.changes.append_at(offset, at, None);
                None
            }
        }
    }

    /// Holds a job of a shared store read from it (not from its log): the tail loads every job
    /// when it starts over, each with the log marks Redis keeps for it.
    pub(crate) fn load(&self, job: Job, client: Option<ClientId>, expires: Option<Instant>) {
        let mut held = lock(&self.held);
        self.hold(&mut held, &Arc::new(job), client, expires);
    }

    /// Forgets every job and starts the change log over in `epoch` at `head` (a copy of a
    /// shared store that lost its place: at start-up, or after Redis lost what it had). Held
    /// readers of the jobs forgotten are woken.
    pub(crate) fn restart(&self, epoch: u64, head: u64) {
        let mut held = lock(&self.held);
        for (_, entry) in held.jobs.drain() {
            entry.job.changed.notify_waiters();
        }
        held.per_client.clear();
        self.changes.restart(epoch, head);
    }

    /// Holds `job` (replacing a job of the same id, whose held readers are woken).
    fn hold(
        &self,
        held: &mut Held,
        job: &Arc<Job>,
        client: Option<ClientId>,
        expires: Option<Instant>,
    ) {
        if let Some(client) = client {
            held.per_client
                .entry(client)
                .or_default()
                .insert(job.id.clone(), Arc::clone(job));
        }
        let entry = Entry {
            job: Arc::clone(job),
            expires,
            client,
        };
        if let Some(old) = held.jobs.insert(job.id.clone(), entry) {
            if let Some(old_client) = old.client
                && (client != Some(old_client))
            {
                held.release(old_client, &old.job.id);
            }
            old.job.changed.notify_waiters();
        }
    }

    /// When a hanging job created now would be forgotten: it stops counting anywhere then.
    pub fn hang_ttl(&self) -> Duration {
        self.hang_ttl
    }

    /// Whether there is room for `n` more jobs, for `client` if set, after forgetting at most a
    /// few jobs that have expired (the soonest first). Refusing looks at one expiry, however
    /// many jobs are held. A client at its cap is told so even when the store is full too.
    fn make_room(
        &self,
        held: &mut Held,
        now: Instant,
        client: Option<ClientId>,
        n: usize,
    ) -> Result<(), Refused> {
        let most = MAX_EXPIRED_PER_CREATE + n.saturating_sub(1) as u64;
        let mut looked = 0;
        loop {
            let refused = if client
                .is_some_and(|c| held.held_by(c).saturating_add(n) > self.max_per_client)
            {
                Refused::ClientFull
            } else if held.jobs.len().saturating_add(n) > self.max_jobs {
                Refused::StoreFull
            } else {
                return Ok(());
            };
            if looked == most {
                return Err(refused);
            }
            looked += 1;
            held.examined += 1;
            match held.expiries.pop_due(now) {
                Some(job) => {
                    self.forget(held, &job, now);
                }
                None => return Err(refused),
            }
        }
    }

    /// The job with this id, if held and not expired.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let now = Instant::now();
        lock(&self.held)
            .jobs
            .get(id)
            .filter(|e| e.expires.is_none_or(|at| now < at))
            .map(|e| Arc::clone(&e.job))
    }

    /// Cancels the job with this id at `now` (see [`Job::cancel`]), if it is held and not
    /// expired. A job this call canceled is forgotten `jobs.ttl` from now, unless it was due
    /// sooner. Returns the job, what the cancel found, and whose job it is.
    pub fn cancel(&self, id: &str, now: Instant) -> Option<(Arc<Job>, Cancel, Option<ClientId>)> {
        let mut guard = lock(&self.held);
        let held = &mut *guard;
        let entry = held
            .jobs
            .get_mut(id)
            .filter(|e| e.expires.is_none_or(|at| now < at))?;
        let job = Arc::clone(&entry.job);
        let client = entry.client;
        let found = job.cancel(now);
        if found == Cancel::Canceled {
            if let Some(old) = entry.expires {
                let at = crate::time::later(now, self.ttl);
                if at < old {
                    entry.expires = Some(at);
                    held.expiries.push(at, Arc::clone(&job));
                }
            }
            self.log_end(held, &job, client, now);
        }
        Some((job, found, client))
    }

    /// The log's head and the jobs `client` holds, read together: every change at or before
    /// the head is marked on these jobs, and none after it is (see [`Job::as_of`]).
    pub fn client_jobs(&self, client: ClientId) -> (Cursor, Vec<Arc<Job>>) {
        let held = lock(&self.held);
        let jobs = held
            .per_client
            .get(&client)
            .map(|jobs| jobs.values().cloned().collect())
            .unwrap_or_default();
        (self.changes.head(), jobs)
    }

    /// Jobs `client` holds.
    pub fn held_by(&self, client: ClientId) -> usize {
        lock(&self.held).held_by(client)
    }

    /// Runs `f` with the log's head and a way to look jobs up, while no change can be
    /// appended: what `f` records against the head (a watch set's additions) is exactly
    /// before every later change.
    pub fn at_head<T>(&self, f: impl FnOnce(Cursor, &Lookup<'_>) -> T) -> T {
        let held = lock(&self.held);
        let lookup = Lookup {
            held: &held,
            now: Instant::now(),
        };
        f(self.changes.head(), &lookup)
    }

    /// Expiries looked at, in all, by creates that found the store full.
    pub fn examined(&self) -> u64 {
        lock(&self.held).examined
    }

    /// Number of jobs held.
    pub fn len(&self) -> usize {
        lock(&self.held).jobs.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Logs the end of every job whose finish is due at `now` and reports the ones not
    /// counted as finished before, touching only those, a batch per hold of the lock; and
    /// when the next one is due. A timer task calls it at that instant (see `crate::run`).
    pub fn finish_due(&self, now: Instant) -> FinishReport {
        let mut report = FinishReport::default();
        loop {
            let mut held = lock(&self.held);
            let mut handled = 0;
            while handled < SWEEP_BATCH {
                let Some(job) = held.finishes.pop_due(now) else {
                    break;
                };
                handled += 1;
                // A job replaced (the legacy job) or already forgotten is not followed.
                let Some(client) = held.owner(&job) else {
                    continue;
                };
                self.log_end(&mut held, &job, client, now);
                if job.take_finish() {
                    report.newly_finished.push(job.snapshot(now).state);
                }
            }
            report.next = held.finishes.next_at();
            if handled < SWEEP_BATCH {
                return report;
            }
        }
    }

    /// Woken when a job is created that finishes before every other pending one: the task
    /// waiting for the next finish must look again.
    pub fn finishes_moved(&self) -> &Notify {
        &self.finishes_moved
    }

    /// Forgets expired jobs (logging that they are gone), touching only those, a batch per
    /// hold of the lock, and prunes the change log. The legacy job never expires: `GET
    /// /status` always answers. A hanging job never ends, and expires `jobs.hang_ttl` after its
    /// creation.
    pub fn sweep(&self, now: Instant) -> SweepReport {
        let mut report = SweepReport::default();
        loop {
            let mut held = lock(&self.held);
            let mut handled = 0;
            while handled < SWEEP_BATCH {
                let Some(job) = held.expiries.pop_due(now) else {
                    break;
                };
                handled += 1;
                if self.forget(&mut held, &job, now) {
                    report.expired += 1;
                    if job.snapshot(now).state.is_terminal() && job.take_finish() {
                        report.newly_finished.push(job.snapshot(now).state);
                    }
                }
            }
            report.held = held.jobs.len();
            if handled < SWEEP_BATCH {
                self.changes.prune(now);
                return report;
            }
        }
    }
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
        let first = store.create(short.clone()).unwrap();
        let second = store.create(short.clone()).unwrap();
        assert_eq!(store.create(short.clone()).unwrap_err(), Refused::StoreFull);
        tokio::time::advance(Duration::from_secs(2)).await;
        // Expired jobs answer as unknown at once, before the sweeper forgets them.
        assert!(store.get(&second.id).is_none());
        // A create forgets the soonest expired job to make room, and only what it needs.
        let third = store.create(short).unwrap();
        assert_eq!(store.len(), 2);
        let r = store.sweep(Instant::now());
        assert_eq!((r.expired, r.held), (1, 1), "the sweeper forgets the other");
        assert!(store.get(&first.id).is_none());
        assert!(store.get(&third.id).is_some());
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
        let r = store.finish_due(Instant::now() + Duration::from_secs(2));
        assert_eq!(r.newly_finished.len(), 2);
        assert!(r.newly_finished.contains(&State::Done(Outcome::Error)));
        assert_eq!(r.next, None);
        let r = store.finish_due(Instant::now() + Duration::from_secs(3));
        assert!(r.newly_finished.is_empty());
        let r = store.sweep(Instant::now() + Duration::from_secs(7));
        assert_eq!((r.expired, r.held), (1, 1), "legacy never expires");
        assert!(r.newly_finished.is_empty(), "counted once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_create_looks_at_a_bounded_number_of_jobs() {
        const MAX: usize = 2_000;
        const REFUSALS: u64 = 500;
        let mut s = Settings::default();
        s.jobs.max_jobs = MAX;
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        let long = JobSpec {
            duration: Some(Duration::from_secs(60)),
            ..JobSpec::default()
        };
        for _ in 0..MAX {
            store.create(long.clone()).unwrap();
        }
        let before = store.examined();
        for _ in 0..REFUSALS {
            assert_eq!(store.create(long.clone()).unwrap_err(), Refused::StoreFull);
        }
        let per_refusal = (store.examined() - before) as f64 / REFUSALS as f64;
        assert!(
            per_refusal <= 1.0,
            "a refusal looked at {per_refusal} jobs of {MAX}"
        );
        assert_eq!(store.len(), MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_handles_every_due_job_across_batches_and_keeps_nothing_behind() {
        let n = SWEEP_BATCH * 2 + 10;
        let mut s = Settings::default();
        s.jobs.ttl = Duration::from_secs(1);
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        for _ in 0..n {
            store
                .create(JobSpec {
                    duration: Some(Duration::ZERO),
                    ..JobSpec::default()
                })
                .unwrap();
        }
        let r = store.finish_due(Instant::now());
        assert_eq!((r.newly_finished.len(), r.next), (n, None));
        let r = store.sweep(Instant::now());
        assert_eq!((r.newly_finished.len(), r.expired, r.held), (0, 0, n));
        let r = store.sweep(Instant::now() + Duration::from_secs(1));
        assert_eq!((r.newly_finished.len(), r.expired, r.held), (0, n, 0));
        let held = lock(&store.held);
        assert_eq!((held.finishes.len(), held.expiries.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_job_is_forgotten_after_hang_ttl_and_makes_room() {
        let mut s = Settings::default();
        s.jobs.max_jobs = 1;
        s.jobs.hang_ttl = Duration::from_secs(60);
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        let hang = JobSpec {
            hang: true,
            ..JobSpec::default()
        };
        let stuck = store.create(hang.clone()).unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.get(&stuck.id).is_some());
        assert_eq!(store.create(hang.clone()).unwrap_err(), Refused::StoreFull);
        assert_eq!(store.sweep(Instant::now()).expired, 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(store.get(&stuck.id).is_none(), "expired at hang_ttl");
        let next = store.create(hang).unwrap();
        assert_eq!(store.len(), 1);
        let r = store.sweep(Instant::now() + Duration::from_secs(61));
        assert_eq!((r.newly_finished.len(), r.expired, r.held), (0, 1, 0));
        assert!(store.get(&next.id).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn each_client_holds_at_most_its_cap_and_gets_room_back_as_its_jobs_expire() {
        let mut s = Settings::default();
        s.jobs.max_jobs = 5;
        s.jobs.max_jobs_per_client = 2;
        s.jobs.ttl = Duration::from_secs(1);
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        let (a, b) = (ClientId::ApiKey, ClientId::peer([192, 0, 2, 1].into()));
        let spec = |client: Option<ClientId>, secs: u64| JobSpec {
            duration: Some(Duration::from_secs(secs)),
            client,
            ..JobSpec::default()
        };
        store.create(spec(Some(a), 0)).unwrap();
        store.create(spec(Some(a), 10)).unwrap();
        assert_eq!(
            store.create(spec(Some(a), 0)).unwrap_err(),
            Refused::ClientFull
        );
        store.create(spec(Some(b), 10)).unwrap();
        store.create(spec(None, 10)).unwrap();
        store.create(spec(None, 10)).unwrap();
        assert_eq!(
            store.create(spec(None, 10)).unwrap_err(),
            Refused::StoreFull
        );
        assert_eq!(
            store.create(spec(Some(b), 10)).unwrap_err(),
            Refused::StoreFull
        );
        // A client at its cap is told so, even with the store full as well.
        assert_eq!(
            store.create(spec(Some(a), 0)).unwrap_err(),
            Refused::ClientFull
        );
        // `a`'s first job expires: room for `a`, taken at once.
        tokio::time::advance(Duration::from_secs(1)).await;
        store.create(spec(Some(a), 10)).unwrap();
        assert_eq!(
            store.create(spec(Some(a), 0)).unwrap_err(),
            Refused::ClientFull
        );
        let held = lock(&store.held);
        assert_eq!((held.held_by(a), held.held_by(b)), (2, 1));
        assert_eq!(held.per_client.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_holds_nothing_has_no_entry() {
        let mut s = Settings::default();
        s.jobs.ttl = Duration::ZERO;
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        for i in 0..100u8 {
            store
                .create(JobSpec {
                    duration: Some(Duration::ZERO),
                    client: Some(ClientId::peer([192, 0, 2, i].into())),
                    ..JobSpec::default()
                })
                .unwrap();
        }
        assert_eq!(lock(&store.held).per_client.len(), 100);
        let r = store.sweep(Instant::now());
        assert_eq!(r.expired, 100);
        assert!(lock(&store.held).per_client.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_canceled_job_expires_ttl_after_its_cancel_and_is_reported_canceled() {
        let mut s = Settings::default();
        s.jobs.ttl = Duration::from_secs(5);
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        let spec = |secs| JobSpec {
            duration: Some(Duration::from_secs(secs)),
            ..JobSpec::default()
        };
        let (short, long) = (
            store.create(spec(2)).unwrap(),
            store.create(spec(60)).unwrap(),
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        for job in [&short, &long] {
            let (found_job, found, _) = store.cancel(&job.id, Instant::now()).unwrap();
            assert!(Arc::ptr_eq(&found_job, job));
            assert_eq!(found, Cancel::Canceled);
            assert_eq!(
                store.cancel(&job.id, Instant::now()).unwrap().1,
                Cancel::AlreadyCanceled
            );
        }
        assert!(store.cancel("j-nope", Instant::now()).is_none());
        // The timer reaches the short job's natural end and reports how it really ended.
        let r = store.finish_due(Instant::now() + Duration::from_secs(2));
        assert_eq!(r.newly_finished, vec![State::Canceled]);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(store.get(&long.id).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            store.get(&long.id).is_none(),
            "forgotten ttl after its cancel"
        );
        assert!(store.cancel(&long.id, Instant::now()).is_none());
        let r = store.sweep(Instant::now());
        assert_eq!((r.expired, r.held), (2, 0));
    }

    /// Every change logged so far: (kind, job id, state), oldest first.
    fn logged(store: &JobStore) -> Vec<(ChangeKind, String, State)> {
        use crate::sim::changes::{Read, ReadLimits};
        let start = Cursor::new(store.changes().head().epoch, 0);
        let all = ReadLimits {
            keep: usize::MAX,
            scan: usize::MAX,
        };
        match store.changes().read(start, all, |_| true) {
            Read::Changes { changes, .. } => changes
                .iter()
                .map(|c| (c.kind, c.job.id.clone(), c.job.state))
                .collect(),
            Read::Reset { .. } => panic!("the history starts at 1"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_change_is_logged_once_when_it_happens() {
        use ChangeKind::{Created, Ended, Gone};
        let mut s = Settings::default();
        s.jobs.ttl = Duration::from_secs(5);
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        let spec = |secs, outcome| JobSpec {
            duration: Some(Duration::from_secs(secs)),
            outcome: Some(outcome),
            client: Some(ClientId::ApiKey),
            ..JobSpec::default()
        };
        let done = store.create(spec(1, Outcome::Error)).unwrap();
        let canceled = store.create(spec(3, Outcome::Completed)).unwrap();
        let pending = State::Pending;
        assert_eq!(
            logged(&store),
            [
                (Created, done.id.clone(), pending),
                (Created, canceled.id.clone(), pending)
            ]
        );
        // Nothing is logged before its instant, and each end once, whoever gets there first.
        assert_eq!(
            store.finish_due(Instant::now()).next,
            Some(done.completes_at())
        );
        assert_eq!(logged(&store).len(), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        store.cancel(&canceled.id, Instant::now()).unwrap();
        store.cancel(&canceled.id, Instant::now()).unwrap();
        let r = store.finish_due(Instant::now());
        assert_eq!(r.newly_finished, [State::Done(Outcome::Error)]);
        assert_eq!(r.next, Some(canceled.created + Duration::from_secs(3)));
        tokio::time::advance(Duration::from_secs(2)).await;
        store.finish_due(Instant::now());
        let ended = logged(&store)[2..].to_vec();
        assert_eq!(
            ended,
            [
                (Ended, canceled.id.clone(), State::Canceled),
                (Ended, done.id.clone(), State::Done(Outcome::Error)),
            ]
        );
        // Forgotten after the TTL: gone, once.
        let r = store.sweep(Instant::now() + Duration::from_secs(10));
        assert_eq!(r.expired, 2);
        let gone: Vec<_> = logged(&store)[4..]
            .iter()
            .map(|c| (c.0, c.1.clone()))
            .collect();
        assert_eq!(gone, [(Gone, done.id.clone()), (Gone, canceled.id.clone())]);
        // Marks say where each change sits.
        assert_eq!(done.marks.get(Mark::Created), Some(1));
        assert_eq!(done.marks.get(Mark::Ended), Some(4));
        assert_eq!(done.marks.get(Mark::Gone), Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_forgotten_before_its_end_was_logged_is_logged_ended_then_gone() {
        let mut s = Settings::default();
        s.jobs.ttl = Duration::ZERO;
        let store = JobStore::new(&s, SmallRng::seed_from_u64(1));
        let job = store
            .create(JobSpec {
                duration: Some(Duration::from_secs(1)),
                ..JobSpec::default()
            })
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // The sweeper gets there before the timer.
        let r = store.sweep(Instant::now());
        assert_eq!((r.expired, r.newly_finished.len()), (1, 1));
        let kinds: Vec<_> = logged(&store).iter().map(|c| (c.0, c.2)).collect();
        assert_eq!(
            kinds,
            [
                (ChangeKind::Created, State::Pending),
                (ChangeKind::Ended, State::Done(Outcome::Completed)),
                (ChangeKind::Gone, State::Done(Outcome::Completed)),
            ]
        );
        // The timer then finds nothing to log or count.
        let r = store.finish_due(Instant::now());
        assert!(r.newly_finished.is_empty());
        assert_eq!(logged(&store).len(), 3);
        assert_eq!(job.marks.get(Mark::Gone), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_legacy_job_is_created_again_and_the_replaced_one_never_ends() {
        let store = JobStore::new(&Settings::default(), SmallRng::seed_from_u64(1));
        let spec = || JobSpec {
            duration: Some(Duration::from_secs(1)),
            ..JobSpec::default()
        };
        store.reset_legacy(spec()).unwrap();
        store.reset_legacy(spec()).unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        store.finish_due(Instant::now());
        let kinds: Vec<_> = logged(&store).iter().map(|c| (c.0, c.1.clone())).collect();
        let legacy = || LEGACY_ID.to_string();
        assert_eq!(
            kinds,
            [
                (ChangeKind::Created, legacy()),
                (ChangeKind::Created, legacy()),
                (ChangeKind::Ended, legacy()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_at_the_head_sees_each_job_as_the_log_does() {
        use crate::sim::job::AsOf;
        let store = JobStore::new(&Settings::default(), SmallRng::seed_from_u64(1));
        let mine = ClientId::peer([192, 0, 2, 1].into());
        let spec = |client, secs| JobSpec {
            duration: Some(Duration::from_secs(secs)),
            client,
            ..JobSpec::default()
        };
        let short = store.create(spec(Some(mine), 1)).unwrap();
        let long = store.create(spec(Some(mine), 60)).unwrap();
        store.create(spec(None, 1)).unwrap();
        store.create(spec(Some(ClientId::ApiKey), 1)).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // By the clock `short` has ended; the log does not say so yet.
        let (head, jobs) = store.client_jobs(mine);
        let mut ids: Vec<_> = jobs.iter().map(|j| j.id.clone()).collect();
        ids.sort();
        let mut want = vec![short.id.clone(), long.id.clone()];
        want.sort();
        assert_eq!(ids, want, "only the client's own jobs");
        assert_eq!(short.as_of(head.offset), AsOf::Pending);
        store.finish_due(Instant::now());
        assert_eq!(
            short.as_of(head.offset),
            AsOf::Pending,
            "as of the old head"
        );
        let (head, _) = store.client_jobs(mine);
        assert_eq!(short.as_of(head.offset), AsOf::Ended);
        assert_eq!(long.as_of(head.offset), AsOf::Pending);
        assert_eq!(long.as_of(0), AsOf::Unborn);
        let found = store.at_head(|_, lookup| {
            (
                lookup.get(&long.id).map(|(_, c)| c),
                lookup.get("j-none").is_some(),
            )
        });
        assert_eq!(found, (Some(Some(mine)), false));
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
