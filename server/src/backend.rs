//! What a request asks of the store, whichever backend holds it.
//!
//! Each method here is one thing a route needs — find a job, create jobs, cancel one, take a
//! token of the rate limit, set the faults — done in this process with the memory backend, or
//! through Redis with the Redis backend (`sim::redis`): there by a script that decides, then a
//! wait until this replica's copy has applied what the script logged (so that the answer, and
//! the next request to this replica, see it). The routes do not know which.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::settings::{Faults, Outcome};
use crate::sim::client::ClientId;
use crate::sim::job::{Cancel, Job, State as JobState};
use crate::sim::ratelimit::Decision;
use crate::sim::redis::record::Record;
use crate::sim::redis::{Op, Redis, Unavailable};
use crate::sim::store::{JobSpec, LEGACY_ID, Refused};

/// Longest duration a job of the shared store is given (beyond it, it never ends anyway): so
/// that its end, in microseconds, is a number Redis's scripts hold exactly.
const MAX_SHARED_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Most natural ends or expiries one script handles before the next round trip.
const BATCH: usize = 1024;

/// Why jobs were not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreateError {
    /// The store (or the client's share of it) is full.
    Refused(Refused),
    /// The client runs `heygen.max_concurrent_jobs` HeyGen jobs: retry after this long
    /// (`Duration::MAX`: no wait makes room).
    Busy(Duration),
    /// The shared store cannot be reached.
    Unavailable,
}

impl From<Unavailable> for CreateError {
    fn from(_: Unavailable) -> Self {
        CreateError::Unavailable
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl AppState {
    /// The Redis backend, if this instance shares its store.
    pub(crate) fn redis(&self) -> Option<&Redis> {
        self.inner.redis.as_ref()
    }

    /// `503 store_unavailable` (counted).
    pub(crate) fn unavailable(&self) -> ApiError {
        self.inner.metrics.store_unavailable();
        ApiError::unavailable(self.inner.settings.store.retry_after)
    }

    /// The job with this id, if held and not expired: `404` if not, `503` when the shared store
    /// cannot be reached. With the Redis backend a job this replica does not know yet (created
    /// on another a moment ago) is looked for again once the copy has caught up.
    pub(crate) async fn find(&self, id: &str) -> Result<Arc<Job>, ApiError> {
        if let Some(job) = self.inner.store.get(id) {
            return Ok(job);
        }
        if let Some(redis) = self.redis() {
            // Boxed: a future is as large as its largest await, and every handler that finds
            // a job (a held long-poll too) would otherwise carry this one's room for nothing
            // with the memory store.
            Box::pin(redis.catch_up())
                .await
                .map_err(|_| self.unavailable())?;
            if let Some(job) = self.inner.store.get(id) {
                return Ok(job);
            }
        }
        Err(ApiError::job_not_found(id))
    }

    /// With the Redis backend, catches the copy up with the log when `offset` (of the copy's
    /// epoch) is ahead of what it has applied: another replica's cursor.
    pub(crate) async fn reach(&self, epoch: u64, offset: u64) -> Result<(), ApiError> {
        let Some(redis) = self.redis() else {
            return Ok(());
        };
        let head = self.inner.store.changes().head();
        if epoch == head.epoch && offset > head.offset {
            redis.catch_up().await.map_err(|_| self.unavailable())?;
        }
        Ok(())
    }

    /// Creates one job per spec, all or none, for the first spec's client; `heygen`: within
    /// the client's share of running HeyGen jobs (`heygen.max_concurrent_jobs`).
    pub(crate) async fn create_jobs(
        &self,
        specs: Vec<JobSpec>,
        heygen: bool,
    ) -> Result<Vec<Arc<Job>>, CreateError> {
        let Some(redis) = self.redis() else {
            return self.create_here(specs, heygen);
        };
        let store = &self.inner.store;
        let settings = &self.inner.settings;
        let client = specs.first().and_then(|s| s.client);
        let drawn: Vec<_> = specs
            .iter()
            .map(|spec| {
                let (duration, outcome, bias) = store.draw(spec);
                let record =
                    Record::new(outcome, bias, spec.callback.as_ref(), spec.heygen.as_ref());
                let duration = if spec.hang {
                    0
                } else {
                    micros(duration.min(MAX_SHARED_DURATION))
                };
                (record.to_json(), duration.to_string(), spec.hang)
            })
            .collect();
        let heygen_max = if heygen {
            settings.heygen.max_concurrent_jobs.to_string()
        } else {
            "0".to_owned()
        };
        // A 64-bit id drawn twice is all but impossible; a few draws settle it.
        for _ in 0..4 {
            let ids: Vec<String> = drawn.iter().map(|_| store.draw_id()).collect();
            let mut args = vec![
                settings.jobs.max_jobs.to_string(),
                settings.jobs.max_jobs_per_client.to_string(),
                micros(settings.jobs.ttl).to_string(),
                micros(settings.jobs.hang_ttl).to_string(),
                client.map(|c| c.key()).unwrap_or_default(),
                heygen_max.clone(),
                specs.len().to_string(),
            ];
            for (id, (record, duration, hang)) in ids.iter().zip(&drawn) {
                args.extend([
                    id.clone(),
                    record.clone(),
                    duration.clone(),
                    if *hang { "1" } else { "0" }.to_owned(),
                ]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let reply = redis.run(Op::Create, &args).await?;
            match reply.first().map(String::as_str) {
                Some("ok") => {
                    let last = reply[1..]
                        .iter()
                        .filter_map(|o| o.parse::<u64>().ok())
                        .max()
                        .unwrap_or(0);
                    redis.applied(last).await?;
                    let jobs: Vec<_> = ids.iter().filter_map(|id| store.get(id)).collect();
                    for _ in &jobs {
                        self.inner.metrics.job_created();
                    }
                    return Ok(jobs);
                }
                Some("store_full") => return Err(CreateError::Refused(Refused::StoreFull)),
                Some("client_full") => return Err(CreateError::Refused(Refused::ClientFull)),
                Some("busy") => {
                    let wait = reply
                        .get(1)
                        .and_then(|us| us.parse::<u64>().ok())
                        .map_or(Duration::MAX, Duration::from_micros);
                    return Err(CreateError::Busy(
                        wait.max(crate::sim::concurrency::MIN_RETRY_AFTER),
                    ));
                }
                _ => {}
            }
        }
        Err(CreateError::Unavailable)
    }

    /// [`AppState::create_jobs`] in this process.
    fn create_here(&self, specs: Vec<JobSpec>, heygen: bool) -> Result<Vec<Arc<Job>>, CreateError> {
        if !heygen {
            return self.create_many(specs).map_err(CreateError::Refused);
        }
        let inner = &self.inner;
        let client = specs
            .first()
            .and_then(|s| s.client)
            .unwrap_or(ClientId::Unknown);
        let mut room = inner
            .concurrency
            .admit(client, specs.len(), Instant::now())
            .map_err(|busy| CreateError::Busy(busy.retry_after))?;
        let jobs = self.create_many(specs).map_err(CreateError::Refused)?;
        let hang_ttl = inner.store.hang_ttl();
        for job in &jobs {
            // A hanging job runs until the store forgets it.
            let until = if job.hang {
                crate::time::later(job.created, hang_ttl)
            } else {
                job.completes_at()
            };
            room.count(job, until);
        }
        Ok(jobs)
    }

    /// Cancels the job with this id now (see [`AppState::cancel_job`]); `None` for an unknown
    /// or expired job.
    pub(crate) async fn cancel_now(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<Job>, Cancel)>, Unavailable> {
        let Some(redis) = self.redis() else {
            return Ok(self.cancel(id));
        };
        let ttl = micros(self.inner.settings.jobs.ttl).to_string();
        let reply = redis.run(Op::Cancel, &[&ttl, id]).await?;
        let offset = reply.get(1).and_then(|o| o.parse::<u64>().ok());
        let found = match reply.first().map(String::as_str) {
            Some("canceled") => Cancel::Canceled,
            Some("already") => Cancel::AlreadyCanceled,
            Some("finished") => Cancel::Finished(Outcome::Completed),
            _ => return Ok(None),
        };
        match offset {
            Some(offset) => redis.applied(offset).await?,
            None => redis.catch_up().await?,
        }
        let Some(job) = self.inner.store.get(id) else {
            return Ok(None);
        };
        let found = match found {
            Cancel::Finished(_) => Cancel::Finished(job.outcome),
            other => other,
        };
        if found == Cancel::Canceled {
            self.inner
                .metrics
                .jobs_finished(JobState::Canceled.as_str(), 1);
            self.inner.webhooks.schedule_now(Arc::clone(&job));
        }
        Ok(Some((job, found)))
    }

    /// Re-creates the legacy job now (`POST /v1/reset`); unset fields come from `[legacy]`.
    pub(crate) async fn recreate_legacy(
        &self,
        duration: Option<Duration>,
        outcome: Option<Outcome>,
    ) -> Result<Arc<Job>, ApiError> {
        let full = || {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "store_full",
                "the simulator holds jobs.max_jobs jobs already; retry when some have expired",
            )
            .with_retry_after(Duration::from_secs(1))
        };
        let Some(redis) = self.redis() else {
            let id = self.reset_legacy(duration, outcome).map_err(|_| full())?;
            return self.inner.store.get(&id).ok_or_else(full);
        };
        let legacy = &self.inner.settings.legacy;
        let record = Record::new(outcome.unwrap_or(legacy.outcome), 1.0, None, None).to_json();
        let duration = micros(duration.unwrap_or(legacy.delay).min(MAX_SHARED_DURATION));
        let seed = crate::sim::redis::clock::wall_us(std::time::SystemTime::now()).to_string();
        let reply = redis
            .run(
                Op::Legacy,
                &["1", &record, &duration.to_string(), seed.as_str()],
            )
            .await
            .map_err(|_| self.unavailable())?;
        let offset = reply.get(1).and_then(|o| o.parse().ok()).unwrap_or(0);
        redis
            .applied(offset)
            .await
            .map_err(|_| self.unavailable())?;
        self.inner.metrics.job_created();
        self.inner.store.get(LEGACY_ID).ok_or_else(full)
    }

    /// One token of `client`'s rate limit, when the limit is on (`None` otherwise).
    pub(crate) async fn rate_check(
        &self,
        client: ClientId,
    ) -> Option<Result<Decision, Unavailable>> {
        let limiter = self.inner.limiter.as_ref()?;
        let Some(redis) = self.redis() else {
            return Some(Ok(limiter.check(client, Instant::now())));
        };
        // Boxed, like the catch-up in `find`: the memory store's requests need no room for it.
        Some(Box::pin(self.shared_rate_check(redis, client)).await)
    }

    /// [`rate_check`](Self::rate_check) on the bucket every replica shares.
    async fn shared_rate_check(
        &self,
        redis: &Redis,
        client: ClientId,
    ) -> Result<Decision, Unavailable> {
        let s = &self.inner.settings.rate_limit;
        // A bucket untouched for this long is full again: Redis may forget it.
        let ttl_ms = (f64::from(s.burst) / s.rps * 1000.0).ceil().min(1e12) as u64 + 1000;
        let reply = redis
            .run(
                Op::Rate,
                &[
                    &client.key(),
                    &s.rps.to_string(),
                    &s.burst.to_string(),
                    &ttl_ms.to_string(),
                ],
            )
            .await;
        reply.map(|r| {
            let num = |i: usize| r.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if num(0) == 1 {
                Decision::Allow {
                    remaining: u32::try_from(num(1)).unwrap_or(u32::MAX),
                }
            } else {
                Decision::Deny {
                    retry_after: Duration::from_micros(num(2)),
                }
            }
        })
    }

    /// Replaces the injected faults: for this instance, or with the Redis backend for every
    /// replica (through the log).
    pub(crate) async fn put_faults(&self, faults: Faults) -> Result<(), ApiError> {
        faults
            .validate()
            .map_err(|e| ApiError::unprocessable("invalid_faults", e.to_string()))?;
        let Some(redis) = self.redis() else {
            self.inner.faults.set(faults);
            return Ok(());
        };
        let json = serde_json::to_string(&faults).unwrap_or_default();
        self.through_log(redis, Op::Faults, &["faults", &json])
            .await
    }

    /// Starts an outage of `length` now: on this instance, or on every replica.
    pub(crate) async fn put_outage(&self, length: Duration) -> Result<(), ApiError> {
        let Some(redis) = self.redis() else {
            self.start_outage(length);
            return Ok(());
        };
        let us = micros(length).to_string();
        self.through_log(redis, Op::Faults, &["outage", &us]).await
    }

    /// Runs a script whose reply starts with the offset it logged, and waits for the copy to
    /// apply it.
    async fn through_log(&self, redis: &Redis, op: Op, args: &[&str]) -> Result<(), ApiError> {
        let reply = redis.run(op, args).await.map_err(|_| self.unavailable())?;
        let offset = reply.first().and_then(|o| o.parse().ok()).unwrap_or(0);
        redis.applied(offset).await.map_err(|_| self.unavailable())
    }

    /// Counts and delivers the jobs whose natural end this replica's finisher logged.
    pub(crate) fn ended_here(&self, ids: &[String]) {
        for id in ids {
            let Some(job) = self.inner.store.get(id) else {
                continue;
            };
            let state = job.snapshot(Instant::now()).state;
            if state.is_terminal() {
                self.inner.metrics.jobs_finished(state.as_str(), 1);
            }
            if job.callback.is_some() {
                self.inner.webhooks.schedule_now(job);
            }
        }
    }

    /// One sweep of the shared store: what is due is forgotten in Redis (by whichever replica
    /// gets there first), the watch sets streams read here are marked used, and this replica's
    /// copy of the log is pruned to its age.
    pub(crate) async fn sweep_shared(&self, redis: &Redis) {
        let s = &self.inner.settings;
        let args = [
            BATCH.to_string(),
            micros(s.changes.history_age).to_string(),
            micros(s.changes.watch_ttl).to_string(),
            micros(s.idempotency.ttl).to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for _ in 0..16 {
            match redis.run(Op::Sweep, &args).await {
                Ok(reply) => {
                    let n = |i: usize| {
                        reply
                            .get(i)
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0)
                    };
                    if n(0) < BATCH && n(1) < BATCH {
                        break;
                    }
                }
                Err(Unavailable) => break,
            }
        }
        let read = self.inner.watches.read_now();
        if !read.is_empty() {
            let mut args = vec!["touch", ""];
            args.extend(read.iter().map(String::as_str));
            let _ = redis.run(Op::Watch, &args).await;
        }
        let now = Instant::now();
        let store = &self.inner.store;
        store.changes().prune(now);
        self.inner.metrics.jobs_in_store(store.len());
        self.inner.metrics.change_log(store.changes().len());
        self.inner.metrics.upkeep();
    }
}
