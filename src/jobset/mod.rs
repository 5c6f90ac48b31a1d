//! Many jobs at once: one scheduler, one request budget, durable waits, stall detection.
//!
//! ```no_run
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use translation_status::jobset::{JobEvent, JobSetOptions, RequestBudget};
//! use translation_status::{Client, Error};
//!
//! # async fn demo(ids: Vec<String>) -> Result<(), Error> {
//! let client = Client::builder()
//!     .base_url("http://localhost:8080")
//!     .request_budget(RequestBudget::new(100.0, 20)) // shared by every job set of this client
//!     .build()?;
//! let mut jobs = client.job_set(JobSetOptions::new().stall_after(Duration::from_secs(300)))?;
//! for id in &ids {
//!     jobs.add_with_deadline(id.as_str(), Duration::from_secs(1800))?;
//! }
//! let saved = jobs.export().await?.to_json()?; // keep it; `Client::restore_job_set` after a restart
//! while let Some(event) = jobs.next().await {
//!     match event {
//!         JobEvent::Finished { job, result: Ok(done), .. } => println!("{job}: {}", done.status.state),
//!         JobEvent::Finished { job, result: Err(e), .. } => println!("{job}: {e}"),
//!         JobEvent::Stalled(stall) => println!("{} looks stuck", stall.job),
//!         _ => {}
//!     }
//! }
//! # let _ = saved; Ok(()) }
//! ```
//!
//! # Why one timer queue, not a task per job
//!
//! A thousand [`Client::wait`](crate::Client::wait)s are a thousand independent loops: each
//! sleeps on its own timer and wakes on its own schedule, so jobs created together poll
//! together, nobody sees the total request rate, and a `429` slows down only the wait that
//! received it. A [`JobSet`] instead runs *one* scheduler task. Every job is plain data (a
//! few hundred bytes: its URLs and its wait's state) with at most one entry in an ordered
//! timer queue; the task sleeps until the earliest entry, asks each due job's wait what to
//! send, and sends requests as futures it owns. One place sees every request, so one place
//! can hold them to a budget:
//!
//! * **The budget** ([`RequestBudget`], per [`Client`](crate::Client)) is a token bucket.
//!   Due jobs queue for tokens first come, first served. `429`/`Retry-After` pauses it and
//!   halves its rate (once per round trip), the IETF `RateLimit-Policy` caps it below the
//!   server's quota, `RateLimit: r=0` empties it; it recovers gradually (see the `budget`
//!   module's table). Transport retries and hedges are charged afterwards.
//! * **Held connections** — an event stream, a long-poll — cost one token to open and none
//!   while held; at most [`max_held_connections`](JobSetOptions::max_held_connections) are
//!   held, and the other jobs poll until a slot frees.
//! * **Fleet smoothing**: the default policy jitters every delay by ±10 %
//!   ([`FLEET_JITTER`](crate::poll::FLEET_JITTER)), and the budget's small burst spreads
//!   first looks, so jobs created in the same instant do not poll in lockstep.
//!
//! # The same wait as a single wait, with a set's books
//!
//! Each job holds the state machine a single wait holds: the same answers lead to the same
//! requests, the same result and the same [`WaitReport`](crate::WaitReport) — the same
//! mechanisms, hints, entity tags, deadlines and outage handling (see [`crate::wait`]), and
//! its settings are a [`WaitOptions`](crate::WaitOptions). What a set does differently, on
//! purpose:
//!
//! * **A job's first look is never held**: it learns at once where the job is — its hints,
//!   its progress, whether it is already done — and starts its stall clock before spending a
//!   held slot. (A single wait's first look may be held: for one job that is the cheapest.)
//! * **Throttling goes through the budget.** A `429`/`503` + `Retry-After` is handed back at
//!   once rather than waited out inside the request, and pauses the shared budget — every
//!   job — as well as the job that got it.
//! * **Every request needs a token**, the last look before a deadline included: without one
//!   at that moment, the job ends at its deadline without it. Requests sent in the same
//!   instant are paced by the budget.
//! * **Held slots rotate**: a job that polls for want of a free slot streams or holds again
//!   at its next look once one frees; a long-poll is never held past the job's stall check.
//!
//! # Durable waits
//!
//! [`JobSet::export`] returns a [`SavedJobSet`] (serde; JSON with
//! [`to_json`](SavedJobSet::to_json)) holding every job's reference, its *absolute* deadline
//! (wall clock), requests spent, last status and stall history, plus the client's latest
//! learned job durations. [`Client::restore_job_set`](crate::Client::restore_job_set) rebuilds the set
//! after a restart with the original deadlines; a state it cannot trust is refused with
//! [`Error::SavedState`], never half-restored. A single durable
//! wait is a set of one job.
//!
//! # Stalls
//!
//! A job whose status and progress have not changed for longer than a bound (by default
//! the 99 % quantile of learned durations: [`StallDetection`]) is reported with
//! [`JobEvent::Stalled`] — once per stall, separately from its deadline — and, when asked
//! ([`stop_on_stall`](JobSetOptions::stop_on_stall)), its wait ends with
//! [`Error::Stalled`].

mod budget;
mod feed;
mod handle;
mod options;
mod queue;
mod safety;
mod saved;
mod scheduler;
mod stall;
mod tracked;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use budget::RequestBudget;
pub(crate) use budget::SharedBudget;
pub use handle::JobSetHandle;
pub(crate) use handle::Shared;
pub use options::{BatchTiming, JobSetOptions};
pub use safety::SafetyNet;
pub use saved::{FORMAT, SavedDuration, SavedJob, SavedJobSet};
pub use stall::StallDetection;

use crate::context::Context;
use crate::error::Error;
use crate::job::JobRef;
use crate::model::JobStatus;
use crate::wait::{Completion, Wire};
use crate::webhook::{Undelivered, WebhookEvent};
use saved::Clocks;
use scheduler::{Command, Message, Scheduler};
use tracked::Tracked;

/// A job's key in its [`JobSet`]: returned by [`JobSet::add`], carried by every event, kept
/// across save and restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobKey(pub(crate) u64);

impl JobKey {
    /// The key as a number (as saved in [`SavedJob::key`]).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a [`JobSet`] reports, as it happens.
#[derive(Debug)]
#[non_exhaustive]
pub enum JobEvent {
    /// The job's wait ended: it completed, it failed, the wait gave up, could not reach the
    /// service, or stopped on a stall. Exactly one per job that was not cancelled.
    Finished {
        /// The job's key.
        key: JobKey,
        /// The job: its id when the caller gave one (or a [`CreatedJob`](crate::CreatedJob)),
        /// else its status URL (credentials masked).
        job: String,
        /// The job's status URL (credentials masked).
        status_url: String,
        /// As [`Client::wait`](crate::Client::wait) would have returned it.
        result: Result<Completion, Error>,
    },
    /// The job has not changed for longer than the stall bound. It is still waited for,
    /// unless [`stop_on_stall`](JobSetOptions::stop_on_stall) is set (then `Finished` with
    /// [`Error::Stalled`] follows).
    Stalled(Stall),
}

impl JobEvent {
    /// The end of a job's wait, naming the job both ways, in the event and in its error.
    pub(crate) fn finished(
        key: JobKey,
        job: String,
        status_url: String,
        result: Result<Completion, Error>,
    ) -> Self {
        let result = result.map_err(|error| error.with_status_url(&status_url));
        JobEvent::Finished {
            key,
            job,
            status_url,
            result,
        }
    }

    /// The key of the job the event is about.
    pub fn key(&self) -> JobKey {
        match self {
            JobEvent::Finished { key, .. } => *key,
            JobEvent::Stalled(stall) => stall.key,
        }
    }
}

/// A job that stopped changing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stall {
    /// The job's key.
    pub key: JobKey,
    /// The job: its id when the caller gave one, else its status URL.
    pub job: String,
    /// The job's status URL (credentials masked).
    pub status_url: String,
    /// The status it is stuck at.
    pub last_status: Option<JobStatus>,
    /// How long status and progress have been unchanged.
    pub unchanged_for: Duration,
    /// The bound that was exceeded.
    pub bound: Duration,
}

/// Waits for many jobs at once; a [`Stream`] of [`JobEvent`]s as they happen.
///
/// Created by [`Client::job_set`](crate::Client::job_set) or
/// [`Client::restore_job_set`](crate::Client::restore_job_set), inside a Tokio runtime: it
/// runs one scheduler task, which stops when the set is dropped (every request in flight
/// with it). The stream ends when no job is left; adding jobs later starts it again.
///
/// # One connection for many jobs
///
/// Each job is followed by the first of these the server offers (a job whose status URL is
/// not `{base_url}/v1/jobs/{id}/status` goes straight to the last):
///
/// 1. **The change stream** ([`change_stream`](JobSetOptions::change_stream), on by
///    default): the set's jobs go into one watch set and one `GET /v1/events` connection
///    reports all their changes. Creating or growing the watch set (up to 256 jobs per
///    request) is each job's first look; after that a job costs nothing until it ends,
///    besides its stall checks and its last look before a deadline. The stream is resumed
///    from its last cursor when it ends, resynced from the snapshot the server sends after a
///    `reset`, dropped and resumed when it says nothing for 1.5 [bookmark
///    intervals](JobSetOptions::bookmark_interval), and given up for the set's life when
///    the server has none, refuses it, or it fails five times in a row.
/// 2. **Batched reads** ([`batch_reads`](JobSetOptions::batch_reads), on by default): every
///    job due for a plain look in the same turn — and jobs due within half of their pause
///    — go into one `GET /v1/jobs?ids=` of up to [`max_batch`](JobSetOptions::max_batch)
///    jobs; each job takes its part as its own read, on its own schedule (re-planned from an
///    early look, or keeping its cadence: [`BatchTiming`]). Given up for the
///    set when the route is missing; a job the batch names not found is read on its own.
/// 3. **Each job on its own**: its event stream, long-poll or reads, as described above.
///
/// A set whose jobs announce their end by webhook ([`JobSetOptions::webhooks`]) uses none of
/// these while it waits: a delivered terminal status ends a job at once, and a job is read
/// (batched when the server can) only on the [`SafetyNet`], when its webhook is overdue.
///
/// A job's terminal state is decided once, by its wait: the first terminal status from any
/// of them — or from a webhook — ends it. [`Client::wait`](crate::Client::wait) does not share a set's stream: a
/// single wait follows one job on its own connection; for many jobs, use a set (a durable
/// single wait is a set of one job).
pub struct JobSet {
    handle: JobSetHandle,
    messages: mpsc::UnboundedReceiver<Message>,
    task: JoinHandle<()>,
}

impl JobSet {
    /// Starts a set on `ctx`'s parts, with jobs restored from a saved state and the job
    /// durations it had learned.
    pub(crate) fn start<W: Wire>(
        ctx: Arc<Context<W>>,
        options: JobSetOptions,
        restored: Vec<Tracked>,
        durations: &[SavedDuration],
    ) -> Result<JobSet, Error> {
        options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config(
                "job_set",
                "a job set runs a task on a Tokio runtime: create it from inside one",
            )
        })?;
        for duration in durations {
            ctx.learned.record(saved::sample(duration));
        }
        let shared = Arc::new(Shared {
            next_key: AtomicU64::new(
                restored
                    .iter()
                    .map(|j| j.key.0.saturating_add(1))
                    .max()
                    .unwrap_or(0),
            ),
            tracked: AtomicUsize::new(restored.len()),
            closed: AtomicBool::new(false),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let (sender, messages) = mpsc::unbounded_channel();
        for job in restored {
            // The receiver is alive: it is right here.
            let _ = commands.send(Command::Add(Box::new(job)));
        }
        let base_url = ctx.base_url.clone();
        let profile = ctx.profile.clone();
        let deadline = options.wait.deadline;
        let scheduler = Scheduler::new(ctx, options, sender, Arc::clone(&shared));
        let task = runtime.spawn(
            scheduler
                .run(receiver)
                .instrument(tracing::info_span!("job_set")),
        );
        Ok(JobSet {
            handle: JobSetHandle {
                commands,
                shared,
                base_url,
                profile,
                deadline,
            },
            messages,
            task,
        })
    }

    /// Rebuilds a set from a saved state, refused whole when it cannot be trusted.
    pub(crate) fn restore<W: Wire>(
        ctx: Arc<Context<W>>,
        saved: &SavedJobSet,
        options: JobSetOptions,
    ) -> Result<JobSet, Error> {
        options.validate()?;
        let jobs = saved::restore(
            saved,
            ctx.base_url.as_ref(),
            &ctx.profile,
            options.max_saved_age,
            &Clocks::now(),
        )?;
        JobSet::start(ctx, options, jobs, &saved.durations)
    }

    /// A handle to add, cancel and save jobs from elsewhere.
    pub fn handle(&self) -> JobSetHandle {
        self.handle.clone()
    }

    /// Tracks a job (by id or status URL) with the set's default deadline, counted from now.
    pub fn add(&self, job: impl Into<JobRef>) -> Result<JobKey, Error> {
        self.handle.add(job)
    }

    /// Tracks a job that gives up `deadline` from now.
    pub fn add_with_deadline(
        &self,
        job: impl Into<JobRef>,
        deadline: Duration,
    ) -> Result<JobKey, Error> {
        self.handle.add_with_deadline(job, deadline)
    }

    /// Stops waiting for a job (see [`JobSetHandle::cancel`]).
    pub fn cancel(&self, key: JobKey) {
        self.handle.cancel(key);
    }

    /// Stops waiting for every job.
    pub fn cancel_all(&self) {
        self.handle.cancel_all();
    }

    /// Hands the set a verified webhook event (see [`JobSetOptions::webhooks`]; the
    /// set's [`handle`](Self::handle) is an [`EventSink`](crate::webhook::EventSink) too).
    pub fn deliver(&self, event: WebhookEvent) -> Result<(), Undelivered> {
        self.handle.deliver(event)
    }

    /// The state of every job still waited for (see [`SavedJobSet`]).
    pub async fn export(&self) -> Result<SavedJobSet, Error> {
        self.handle.export().await
    }

    /// The state of one job, for a durable single wait.
    pub async fn export_job(&self, key: JobKey) -> Result<Option<SavedJob>, Error> {
        self.handle.export_job(key).await
    }

    /// Jobs added and not yet reported finished (nor cancelled).
    pub fn tracked(&self) -> usize {
        self.handle.tracked()
    }

    /// The next job to finish, skipping stall reports; `None` when no job is left.
    pub async fn next_finished(&mut self) -> Option<(JobKey, Result<Completion, Error>)> {
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await? {
                JobEvent::Finished { key, result, .. } => return Some((key, result)),
                JobEvent::Stalled(_) => {}
            }
        }
    }
}

impl Stream for JobSet {
    type Item = JobEvent;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<JobEvent>> {
        loop {
            match self.messages.poll_recv(cx) {
                Poll::Ready(Some(Message::Event(event))) => {
                    if matches!(*event, JobEvent::Finished { .. }) {
                        self.handle.shared.tracked.fetch_sub(1, Ordering::SeqCst);
                    }
                    return Poll::Ready(Some(*event));
                }
                Poll::Ready(Some(Message::Cancelled(n))) => {
                    self.handle.shared.tracked.fetch_sub(n, Ordering::SeqCst);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending if self.handle.tracked() == 0 => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for JobSet {
    fn drop(&mut self) {
        self.handle.shared.closed.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl fmt::Debug for JobSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSet")
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}
