//! Batched status reads: every job due at once, read in one request (`GET /v1/jobs?ids=`).
//!
//! When the server has no change stream, or the set does not use it, a thousand jobs polled
//! one by one are a thousand requests per round. A batched read answers up to
//! [`max_batch`](crate::jobset::JobSetOptions::max_batch) of them at once, each exactly as its
//! own status read would, so each job's wait takes its part of the answer as its own read:
//! the same ledger, the same schedule, the same ending.
//!
//! Jobs due in the same turn of the scheduler go into one read, and a read with room left
//! takes jobs whose next look is near: due within half of their current pause. Each job's
//! looks follow its own schedule (its hints, its ETA), so jobs are rarely due in the same
//! instant; taking them up to half a pause early is what fills a read (1,000 lognormal jobs:
//! 0.17 requests per job instead of 0.48 with a tenth, at the same detection delay — see
//! docs/benchmarks.md). What the early look means for the job's schedule is the set's
//! [`BatchTiming`]: by default (`Prompt`) its next look is scheduled from the answer, so it
//! is not detected later, but looked at more often; `Economical` keeps its cadence (the next
//! look as far from when the early one was due as its schedule says: `Tracked::ahead`), so it
//! is looked at as often as alone, and reads are fuller, but a look aimed at the job's end and
//! taken early finds it a pause later. Jobs that expect webhooks are never taken early.
//!
//! A job the batched read names not found, or whose part cannot be read, is read on its own
//! from then on (its own read says what became of it). A server without the route (`404`,
//! `405`, `501`, `400` before any batched read worked) or that never answers one is not
//! asked again by this set: every job is read on its own.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::FutureExt;
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::feed::FeedState;
use super::{Done, Scheduler};
use crate::jobset::budget::Grant;
use crate::jobset::feed::{self, status_id};
use crate::jobset::tracked::{Membership, Stage};
use crate::jobset::{BatchTiming, JobKey};
use crate::model::JobState;
use crate::poll::MIN_PAUSE;
use crate::transport::RequestKind;
use crate::transport::answer::{Meta, ReadOutcome, throttled};
use crate::transport::signals::Signals;
use crate::wait::Wire;
use crate::wait::ledger::{Answer, Look};
use crate::wait::source::Reading;
use crate::wait::wire::{Exchanged, ManyRequest};

/// How far ahead a batched read with room looks for jobs due soon.
const PULL_AHEAD: Duration = Duration::from_secs(60);
/// The pause before jobs are read again after a batched read that failed.
const RETRY: Duration = Duration::from_secs(1);
/// The longest entity tag kept from a batched answer.
const MAX_ETAG: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not tried yet.
    Untried,
    /// A batched read has worked.
    Working,
    /// Not used by this set.
    Off,
}

/// Whether the set reads jobs in batches.
#[derive(Debug)]
pub(super) struct Batching {
    state: State,
    /// The batch route (`{base}/v1/jobs`).
    url: Option<Url>,
}

impl Batching {
    pub(super) fn new(base: Option<Url>, enabled: bool) -> Self {
        let url = base
            .as_ref()
            .and_then(|base| feed::route(base, "v1/jobs"))
            .filter(|_| enabled);
        Batching {
            state: if url.is_some() {
                State::Untried
            } else {
                State::Off
            },
            url,
        }
    }
}

#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    jobs: Vec<serde_json::Value>,
}

impl<W: Wire> Scheduler<W> {
    /// Whether a job's next plain look goes into a batched read.
    pub(super) fn batchable(&self, key: JobKey) -> bool {
        let streamed = |member| {
            self.feed.state == FeedState::On
                && matches!(member, Membership::Joining | Membership::Member)
        };
        self.batch.state != State::Off
            && self.jobs.get(&key).is_some_and(|job| {
                job.feed_id.is_some() && !job.unbatched && !job.check && !streamed(job.member)
            })
    }

    /// Sends one batched read for `keys` (taking sleeping jobs due soon while there is
    /// room), or gives them back (`false`) when the budget has no token now.
    pub(super) fn send_batch(&mut self, mut keys: Vec<JobKey>, now: Instant) -> bool {
        if let Grant::After(wait) = self.ctx.budget.lock().acquire(now) {
            self.budget_wake = now.checked_add(wait);
            for key in keys.into_iter().rev() {
                self.ready.push_front(key);
            }
            return false;
        }
        self.pull_ahead(&mut keys, now);
        let Some(mut url) = self.batch.url.clone() else {
            return true;
        };
        let mut ids = String::new();
        let mut jobs = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            let Some(id) = &job.feed_id else {
                continue;
            };
            if !ids.is_empty() {
                ids.push(',');
            }
            ids.push_str(id);
            job.abandon();
            job.stage = Stage::Polling;
            jobs.push((key, job.generation));
            self.arm(key);
        }
        if jobs.is_empty() {
            return true;
        }
        url.query_pairs_mut().append_pair("ids", &ids);
        self.polls += 1;
        let request = ManyRequest {
            method: http::Method::GET,
            url,
            body: None,
            kind: RequestKind::Batch,
        };
        let read = self.ctx.wire.exchange(request);
        self.in_flight.push(
            async move {
                Done::Batch {
                    jobs,
                    sent: now,
                    result: read.await,
                }
            }
            .boxed(),
        );
        true
    }

    /// Fills a batch with sleeping jobs whose look is due within half of their pause.
    fn pull_ahead(&mut self, keys: &mut Vec<JobKey>, now: Instant) {
        let room = self.options.max_batch.saturating_sub(keys.len());
        // A job that expects a webhook is read when its webhook is overdue, not before.
        if room == 0 || self.hooks.is_some() {
            return;
        }
        let mut pulled = Vec::new();
        for (due, key) in self
            .timers
            .due_by(now + PULL_AHEAD)
            .take(8 * self.options.max_batch)
        {
            if pulled.len() >= room {
                break;
            }
            let Some(job) = self.jobs.get(&key) else {
                continue;
            };
            let Stage::Sleeping { from, until } = job.stage else {
                continue;
            };
            let early = until.saturating_duration_since(now);
            let pause = until.saturating_duration_since(from);
            let last_look = job.ledger.last_look_at().is_some_and(|at| due >= at);
            if due == until && !last_look && early <= pause / 2 && self.batchable(key) {
                pulled.push((key, early));
            }
        }
        let keep = self.options.batch_timing == BatchTiming::Economical;
        for (key, early) in pulled {
            if let Some(job) = self.jobs.get_mut(&key) {
                job.ahead = if keep { early } else { Duration::ZERO };
            }
            keys.push(key);
        }
    }

    pub(super) fn batch_answered(
        &mut self,
        jobs: Vec<(JobKey, u32)>,
        sent: Instant,
        result: Exchanged,
    ) {
        self.polls = self.polls.saturating_sub(1);
        let now = Instant::now();
        let current: Vec<JobKey> = jobs
            .into_iter()
            .filter(|&(key, generation)| self.current(key, generation))
            .map(|(key, _)| key)
            .collect();
        let (status, headers, body, attempts) = match result {
            Exchanged::Answered {
                status,
                headers,
                body,
                attempts,
            } => (status, headers, body, attempts),
            Exchanged::Unsupported => return self.unbatch(current, true),
            Exchanged::Unreachable { attempts } => {
                self.charge(attempts, 0);
                let never = self.batch.state == State::Untried;
                return self.batch_failed(current, never, RETRY, now);
            }
        };
        self.charge(attempts, 0);
        self.listen(Signals::read(status, &headers), sent, now);
        if let Some(pause) = throttled(status, &headers) {
            let pause = pause.unwrap_or(RETRY).max(MIN_PAUSE);
            return self.batch_failed(current, false, pause, now);
        }
        match status.as_u16() {
            200 => {}
            400 | 404 | 405 | 501 if self.batch.state == State::Untried => {
                return self.unbatch(current, true);
            }
            400..=499 => return self.unbatch(current, false),
            _ => {
                let never = self.batch.state == State::Untried;
                return self.batch_failed(current, never, RETRY, now);
            }
        }
        let Ok(answer) = serde_json::from_slice::<BatchAnswer>(&body) else {
            return self.unbatch(current, self.batch.state == State::Untried);
        };
        self.batch.state = State::Working;
        let mut found: HashMap<String, serde_json::Value> = HashMap::new();
        for status in answer.jobs {
            if let Some(id) = status_id(&status) {
                found.insert(id.to_owned(), status);
            }
        }
        for key in current {
            let part = self
                .jobs
                .get(&key)
                .and_then(|job| job.feed_id.as_deref())
                .and_then(|id| found.remove(id));
            let outcome = part.and_then(|part| self.part(&part));
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            match outcome {
                Some(outcome) => {
                    job.batched = true;
                    job.ledger.sent();
                    let reading = Reading {
                        outcome,
                        attempts,
                        hedges: 0,
                        signals: None,
                    };
                    let answer = Answer::Read {
                        look: Look::Poll,
                        sent,
                        reading,
                    };
                    self.take(key, answer, now);
                }
                None => {
                    // Not found, or not readable: its own read says what became of it.
                    job.unbatched = true;
                    job.ahead = Duration::ZERO;
                    self.make_ready(key);
                }
            }
        }
    }

    /// One job's part of a batched answer, read as its own status read would be.
    fn part(&self, part: &serde_json::Value) -> Option<ReadOutcome> {
        let bytes = serde_json::to_vec(part).ok()?;
        let status = self.ctx.profile.decode(200, &bytes).ok()?;
        let etag = part
            .get("etag")
            .and_then(|tag| tag.as_str())
            .filter(|tag| tag.len() <= MAX_ETAG)
            .map(str::to_owned);
        let meta = Meta {
            etag,
            ..Meta::default()
        };
        Some(match &status.state {
            JobState::Unknown(_) => ReadOutcome::Unknown { status, meta },
            _ => ReadOutcome::Status { status, meta },
        })
    }

    /// The jobs are read on their own; `off`: every job, from now on.
    fn unbatch(&mut self, keys: Vec<JobKey>, off: bool) {
        if off && self.batch.state != State::Off {
            tracing::info!("batched reads unavailable; reading job by job");
            self.batch.state = State::Off;
        }
        for key in keys {
            if let Some(job) = self.jobs.get_mut(&key) {
                job.unbatched = job.unbatched || !off;
                job.ahead = Duration::ZERO;
                self.make_ready(key);
            }
        }
    }

    /// The read failed: a route that never worked is given up; otherwise its jobs look
    /// again after `pause`.
    fn batch_failed(&mut self, keys: Vec<JobKey>, never: bool, pause: Duration, now: Instant) {
        if never {
            return self.unbatch(keys, true);
        }
        for key in keys {
            if let Some(job) = self.jobs.get_mut(&key) {
                job.ahead = Duration::ZERO;
            }
            self.sleep_until(key, now + pause, now);
        }
    }
}
