//! # translation-sim
//!
//! A simulator of the video-translation backend that the `translation-status` SDK waits on.
//! It speaks the wire contract in `docs/wire.md`: the original `GET /status`, jobs with
//! hints, `ETag`s, long-polling, Server-Sent Events, cancel and signed webhooks, and HeyGen's
//! v2/v3 video-translate dialect over the same jobs, plus fault injection and Prometheus
//! metrics that make every waiting strategy measurable.
//!
//! The server is a library: [`app`] builds the router from an [`AppState`], [`run`] serves it
//! on a bound listener until a shutdown future resolves, and [`spawn`] does both in the
//! background for tests and embedding (bind `127.0.0.1:0` to get a free port).
//!
//! ```no_run
//! # async fn demo() -> Result<(), translation_sim::Error> {
//! let mut settings = translation_sim::Settings::default();
//! settings.server.bind = "127.0.0.1:0".parse().expect("valid address");
//! let server = translation_sim::spawn(settings).await?;
//! println!("simulator at {}", server.base_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! | module | role |
//! | --- | --- |
//! | [`settings`] | layered, validated configuration (`config/default.toml`) |
//! | [`routes`] | the HTTP surface: one file per group of routes, middleware in `routes::layers` |
//! | [`sim`] | the model: jobs derived from the clock, the bounded store, faults, rate limit, webhooks |
//! | [`metrics`] | the per-instance Prometheus registry |
//! | [`error`] | the JSON error answer and start-up errors |
//! | [`telemetry`] | logging and optional OTLP trace export for the binaries |
//! | [`redis_server`] | a private `redis-server` for tests and measurements of the Redis backend |
//!
//! With `store.backend = "redis"` several instances share their jobs, change log and limits
//! through one Redis (`sim::redis`, `docs/scale-out.md`); the in-memory store is the default.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod backend;
pub mod error;
pub mod metrics;
#[cfg(test)]
mod props;
pub mod redis_server;
pub mod routes;
mod serve;
pub mod settings;
pub mod sim;
pub mod telemetry;
mod time;

pub use error::{ApiError, Error};
pub use routes::app;
pub use settings::{ConfigError, Faults, OutageWindow, Outcome, Settings};
pub use sim::job::{Cancel, Channel};
pub use sim::store::{JobSpec, LEGACY_ID, Refused, StoreFull};

use metrics::Metrics;
use sim::concurrency::ConcurrencyLimit;
use sim::faults::FaultInjector;
use sim::heygen::UrlSigner;
use sim::idempotency::Idempotency;
use sim::job::{Job, State as JobState};
use sim::ratelimit::RateLimiter;
use sim::redis::Redis;
use sim::store::JobStore;
use sim::streams::StreamSlots;
use sim::watch::WatchSets;
use sim::webhooks::Webhooks;

/// Shared state of one simulator instance. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The validated settings this instance runs with.
    pub(crate) settings: Settings,
    /// Every job, by id, bounded and expiring.
    pub(crate) store: JobStore,
    /// This instance's own metrics registry.
    pub(crate) metrics: Metrics,
    /// Current faults and their dice.
    pub(crate) faults: FaultInjector,
    /// Webhook timer queue and deliveries.
    pub(crate) webhooks: Webhooks,
    /// Per-client buckets, when the rate limit is on.
    pub(crate) limiter: Option<RateLimiter>,
    /// Running HeyGen jobs per client (`heygen.max_concurrent_jobs`).
    pub(crate) concurrency: ConcurrencyLimit,
    /// Signs the video URLs of finished HeyGen jobs.
    pub(crate) urls: UrlSigner,
    /// The `Idempotency-Key` table of creates.
    pub(crate) idempotency: Idempotency,
    /// The watch sets of change streams.
    pub(crate) watches: WatchSets,
    /// Caps open change streams, per client and in all.
    pub(crate) change_streams: StreamSlots,
    /// Caps concurrently held long-polls.
    pub(crate) longpoll_permits: Arc<Semaphore>,
    /// Caps concurrently open SSE streams.
    pub(crate) sse_permits: Arc<Semaphore>,
    /// Flips to true when the server shuts down, so held requests and streams end.
    pub(crate) closing: watch::Sender<bool>,
    /// The shared store, with `store.backend = "redis"`: `store` is then this replica's copy.
    pub(crate) redis: Option<Redis>,
}

impl AppState {
    /// Validates `settings` and builds the state, with the legacy job created now. With
    /// `store.backend = "redis"` it must be called inside a Tokio runtime; the legacy job is
    /// then created in Redis, if no replica did, once [`run`] follows the shared store.
    pub fn new(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        let redis = match settings.store.backend {
            settings::StoreBackend::Memory => None,
            settings::StoreBackend::Redis => Some(Redis::new(&settings)?),
        };
        let now = Instant::now();
        let store = JobStore::new(&settings, SmallRng::from_rng(&mut rand::rng()));
        let state = AppState {
            inner: Arc::new(Inner {
                store,
                metrics: Metrics::new(),
                faults: FaultInjector::new(settings.faults.clone(), now),
                webhooks: Webhooks::new(&settings.webhooks),
                limiter: settings
                    .rate_limit
                    .enabled
                    .then(|| RateLimiter::new(&settings.rate_limit)),
                concurrency: ConcurrencyLimit::new(settings.heygen.max_concurrent_jobs),
                urls: UrlSigner::new(&settings.heygen),
                idempotency: Idempotency::new(&settings.idempotency),
                watches: WatchSets::new(&settings.changes),
                change_streams: StreamSlots::new(&settings.changes),
                longpoll_permits: Arc::new(Semaphore::new(settings.longpoll.max_waiters)),
                sse_permits: Arc::new(Semaphore::new(settings.sse.max_streams)),
                closing: watch::channel(false).0,
                redis,
                settings,
            }),
        };
        if state.inner.redis.is_some() {
            return Ok(state);
        }
        state.inner.metrics.store_up(true);
        state.reset_legacy(None, None).map_err(|StoreFull| {
            Error::Config(settings::ConfigError::Invalid {
                key: "jobs.max_jobs",
                message: "no room for the legacy job".into(),
            })
        })?;
        Ok(state)
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Creates a job, as `POST /v1/jobs` would; returns its id. In this instance's own store:
    /// with the Redis backend it is refused (`Refused::Shared`); create through the API.
    pub fn create_job(&self, spec: JobSpec) -> Result<String, Refused> {
        self.create(spec).map(|job| job.id.clone())
    }

    pub(crate) fn create(&self, spec: JobSpec) -> Result<Arc<Job>, Refused> {
        let mut jobs = self.create_many(vec![spec])?;
        jobs.pop().ok_or(Refused::StoreFull)
    }

    /// Creates one job per spec, all or none, for the first spec's client (see
    /// [`JobStore::create_many`]).
    pub(crate) fn create_many(&self, specs: Vec<JobSpec>) -> Result<Vec<Arc<Job>>, Refused> {
        if self.inner.redis.is_some() {
            return Err(Refused::Shared);
        }
        let jobs = self.inner.store.create_many(specs)?;
        for job in &jobs {
            self.inner.metrics.job_created();
            if job.callback.is_some() {
                self.inner.webhooks.schedule(Arc::clone(job));
            }
        }
        Ok(jobs)
    }

    /// Re-creates the legacy job now; unset fields come from `[legacy]`. In this instance's own
    /// store: with the Redis backend it is refused; use `POST /v1/reset`.
    pub fn reset_legacy(
        &self,
        duration: Option<Duration>,
        outcome: Option<Outcome>,
    ) -> Result<String, StoreFull> {
        if self.inner.redis.is_some() {
            return Err(StoreFull);
        }
        let legacy = &self.inner.settings.legacy;
        let job = self.inner.store.reset_legacy(JobSpec {
            duration: Some(duration.unwrap_or(legacy.delay)),
            outcome: Some(outcome.unwrap_or(legacy.outcome)),
            ..JobSpec::default()
        })?;
        self.inner.metrics.job_created();
        Ok(job.id.clone())
    }

    /// Replaces the injected faults of this instance (with the Redis backend, of this replica
    /// only: `PUT /admin/faults` sets them for every replica).
    pub fn set_faults(&self, faults: Faults) -> Result<(), ConfigError> {
        faults.validate()?;
        self.inner.faults.set(faults);
        Ok(())
    }

    /// The injected faults in force.
    pub fn faults(&self) -> Faults {
        (*self.inner.faults.current()).clone()
    }

    /// Starts an outage of `length` now: every API request answers `503 outage` until it ends
    /// (with the Redis backend, on this replica only: `POST /admin/outage` reaches every one).
    pub fn start_outage(&self, length: Duration) {
        self.inner.faults.start_outage(Instant::now(), length);
    }

    /// The Prometheus text this instance serves on `/metrics`.
    pub fn render_metrics(&self) -> String {
        self.inner.metrics.render()
    }

    /// Jobs held in the store (with the Redis backend, in this replica's copy).
    pub fn job_count(&self) -> usize {
        self.inner.store.len()
    }

    /// Resolves when this instance can serve: at once with the memory backend; with the Redis
    /// backend once it follows the shared store ([`run`] must be running).
    pub async fn ready(&self) {
        if let Some(redis) = &self.inner.redis {
            redis.until_live().await;
        }
    }

    /// Cancels the job with this id now (`POST /v1/jobs/{id}/cancel`): see [`Cancel`] for what
    /// the answer means. A job this call canceled wakes its held long-polls and streams at once,
    /// is counted as finished (`canceled`), and has its webhook sent now. `None` for an unknown
    /// or expired job (and, with the Redis backend, always: cancel through the API).
    pub fn cancel_job(&self, id: &str) -> Option<Cancel> {
        self.cancel(id).map(|(_, found)| found)
    }

    pub(crate) fn cancel(&self, id: &str) -> Option<(Arc<Job>, Cancel)> {
        if self.inner.redis.is_some() {
            return None;
        }
        let (job, found, client) = self.inner.store.cancel(id, Instant::now())?;
        if found == Cancel::Canceled {
            job.changed.notify_waiters();
            if let Some(client) = client.filter(|_| job.heygen.is_some()) {
                self.inner.concurrency.release(client, &job);
            }
            if job.take_finish() {
                self.inner
                    .metrics
                    .jobs_finished(JobState::Canceled.as_str(), 1);
            }
            self.inner.webhooks.schedule_now(Arc::clone(&job));
        }
        Some((job, found))
    }

    /// Records that `channel` reported `job`'s terminal state at `now` (metrics only; a no-op
    /// for a pending job or a repeated report).
    pub(crate) fn report_terminal(&self, job: &Job, channel: Channel, now: Instant) {
        let state = job.snapshot(now).state;
        if !state.is_terminal() {
            return;
        }
        let m = &self.inner.metrics;
        let (first_on_channel, first_any) = job.mark_reported(channel);
        if first_on_channel {
            m.detection_delay(
                channel.as_str(),
                now.saturating_duration_since(job.completes_at()),
            );
        }
        if first_any {
            m.polls_per_job(job.requests());
        }
        if job.take_finish() {
            m.jobs_finished(state.as_str(), 1);
        }
    }

    /// One sweep: expire jobs, count finishes, refresh gauges.
    fn sweep(&self) {
        let now = Instant::now();
        let report = self.inner.store.sweep(now);
        self.inner.concurrency.prune(now);
        self.inner.watches.sweep(now);
        for state in &report.newly_finished {
            self.inner.metrics.jobs_finished(state.as_str(), 1);
        }
        self.inner.metrics.jobs_in_store(report.held);
        self.inner
            .metrics
            .change_log(self.inner.store.changes().len());
        self.inner.metrics.upkeep();
    }

    /// Logs every job's natural end at its instant (a millisecond late at most): sleeps until
    /// the store's next finish, or until a job is created that finishes sooner. Runs until the
    /// task is aborted.
    async fn finish_jobs(self) {
        let store = &self.inner.store;
        loop {
            let report = store.finish_due(Instant::now());
            for state in &report.newly_finished {
                self.inner.metrics.jobs_finished(state.as_str(), 1);
            }
            let next = async {
                match report.next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = next => {}
                () = store.finishes_moved().notified() => {}
            }
        }
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, with the background tasks (the timer
/// that logs each job's end, the sweeper, webhooks) running alongside.
///
/// Each connection is bounded as `[server]` says: idle ones are closed after `idle_timeout`,
/// a request head must arrive within `header_read_timeout` of its first byte, and at most
/// `max_connections` are served at once: at the cap a new connection displaces the
/// longest-idle one; when all are busy, `reserve_connections` more answer `/healthz`, or `503
/// too_many_connections`, at once; beyond those a connection is closed as soon as it is
/// accepted. Handlers can extract `ConnectInfo<SocketAddr>`.
///
/// At shutdown it stops accepting, closes idle connections, ends held long-polls and open
/// streams, and waits at most `request_timeout` for requests in flight before closing the rest.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let every = state
        .inner
        .settings
        .jobs
        .ttl
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tasks = Background(vec![tokio::spawn(Webhooks::run(state.clone()))]);
    if state.inner.redis.is_some() {
        tasks
            .0
            .push(tokio::spawn(sim::redis::tail::run(state.clone())));
        tasks
            .0
            .push(tokio::spawn(Redis::finish_jobs(state.clone())));
        tasks.0.push(tokio::spawn(every_tick(
            every,
            state.clone(),
            |state| async move {
                if let Some(redis) = state.redis() {
                    state.sweep_shared(redis).await;
                }
            },
        )));
    } else {
        tasks.0.push(tokio::spawn(state.clone().finish_jobs()));
        tasks.0.push(tokio::spawn(every_tick(
            every,
            state.clone(),
            |state| async move {
                state.sweep();
            },
        )));
    }
    let closing = state.inner.closing.clone();
    serve::serve(listener, state, async move {
        shutdown.await;
        closing.send_replace(true);
    })
    .await;
    drop(tasks);
    Ok(())
}

/// The background tasks of [`run`], aborted when it returns or is dropped (a server killed
/// mid-run stops all of its work, as a process would).
struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Runs `tick` every `every` (a tick that runs late delays the next), until aborted.
async fn every_tick<F, Fut>(every: Duration, state: AppState, tick: F)
where
    F: Fn(AppState) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        tick(state.clone()).await;
    }
}

/// A simulator serving in the background. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl RunningServer {
    /// The bound address (with the real port when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The instance's state (faults, jobs, metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, ends held requests and streams, waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `server.bind` with a listen backlog of `server.listen_backlog` (`TcpListener::bind`
/// asks for only 128, so a burst of connections would be dropped by the kernel before the
/// accept loop sees it). Must be called inside a Tokio runtime.
pub fn bind(server: &settings::ServerSettings) -> Result<TcpListener, Error> {
    let addr = server.bind;
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(server.listen_backlog)
    };
    listen().map_err(|source| Error::Bind { addr, source })
}

/// Validates `settings`, binds `settings.server.bind` (see [`bind`]) and serves in a
/// background task. With the Redis backend it returns once the instance follows the shared
/// store, or after `store.redis_timeout` × 5 if it cannot (it then answers `503
/// store_unavailable` until it can).
pub async fn spawn(settings: Settings) -> Result<RunningServer, Error> {
    let state = AppState::new(settings)?;
    let listener = bind(&state.inner.settings.server)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let patience = state.inner.settings.store.redis_timeout.saturating_mul(5);
    let _ = tokio::time::timeout(patience, state.ready()).await;
    Ok(RunningServer {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}
