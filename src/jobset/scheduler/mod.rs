//! The scheduler: one task, one timer queue, one budget, every job.
//!
//! Each turn of the loop fires the timers that are due (looks, deadlines, idle streams),
//! hands tokens to ready jobs in the order they became ready, then sleeps until the next
//! timer, the next token, an answer, an event or a command. Requests are futures owned by
//! this task, not tasks of their own; a job is a few hundred bytes of state.
//!
//! The scheduler decides nothing about a job: each holds a [`Ledger`](crate::wait::ledger),
//! the single wait's state machine, which says what to send and what an answer means. The
//! scheduler sends through the [`Wire`] of its [`Context`], sleeps, and keeps the set's own
//! books: the request budget, the caps on held connections and polls in flight, stalls.

mod answers;
mod batch;
mod dispatch;
mod feed;
mod hooks;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::{Aborted, BoxFuture};
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::queue::Timers;
use super::saved::{Clocks, SavedJob, SavedJobSet, save_job, saved_set};
use super::tracked::{Membership, Stage, Tracked};
use super::{JobEvent, JobKey, JobSetOptions, Shared};
use crate::context::Context;
use crate::error::Error;
use crate::model::JobStatus;
use crate::poll::{MIN_PAUSE, PollPolicy};
use crate::telemetry;
use crate::transport::signals::Signals;
use crate::transport::sse::{SseEvent, StreamError};
use crate::wait::ledger::{Ending, Look, STREAM_IDLE};
use crate::wait::source::{Reading, Subscribed};
use crate::wait::wire::Exchanged;
use crate::wait::{Completion, Mechanism, RemoteCancel, Wire, cancel_job};

/// How often the stall bound is recomputed from learned durations.
const BOUND_REFRESH: Duration = Duration::from_secs(1);
/// How often gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_millis(100);

/// What the handles ask of the scheduler.
pub(crate) enum Command {
    Add(Box<Tracked>),
    Cancel(JobKey),
    CancelAll,
    Export(oneshot::Sender<SavedJobSet>),
    ExportJob(JobKey, oneshot::Sender<Option<SavedJob>>),
    /// A webhook delivered a job's status.
    Deliver {
        id: Box<str>,
        status: Box<JobStatus>,
    },
}

/// What the scheduler tells the stream.
#[derive(Debug)]
pub(crate) enum Message {
    Event(Box<JobEvent>),
    /// Jobs that were cancelled (they emit no event).
    Cancelled(usize),
}

/// An operation that came back.
// Each is made once when its operation ends and handled at once: its size does not add up.
#[allow(clippy::large_enum_variant)]
enum Done {
    Read {
        key: JobKey,
        generation: u32,
        look: Look,
        sent: Instant,
        result: Result<Reading, Aborted>,
    },
    Subscribed {
        key: JobKey,
        generation: u32,
        sent: Instant,
        result: Result<(Subscribed, Option<Signals>), Aborted>,
    },
    /// A watch set request came back (`ids`: the jobs it added).
    Watch {
        ids: Vec<Box<str>>,
        creating: bool,
        sent: Instant,
        result: Exchanged,
    },
    /// The change stream's subscription came back.
    Follow {
        generation: u32,
        resumed: bool,
        fresh: bool,
        sent: Instant,
        result: (Subscribed, Option<Signals>),
    },
    /// A batched read came back, for these jobs (each with its generation when sent).
    Batch {
        jobs: Vec<(JobKey, u32)>,
        sent: Instant,
        result: Exchanged,
    },
    /// A job that gave up was canceled on the service (as the options ask): its ending goes
    /// to the stream now, with what became of the job.
    Canceled {
        key: JobKey,
        job: String,
        status_url: String,
        result: Result<Completion, Error>,
        outcome: RemoteCancel,
    },
}

/// An event of a job's stream; `None` when the stream ended.
type StreamItem = (JobKey, u32, Option<Result<SseEvent, StreamError>>);

pub(crate) struct Scheduler<W: Wire> {
    /// The client's shared parts: the wire, route memory, learned durations, the budget.
    ctx: Arc<Context<W>>,
    options: JobSetOptions,
    /// Every job's poll policy, with the options' limits around it.
    policy: Arc<dyn PollPolicy>,
    /// Boxed: the map keeps spare capacity, which costs a pointer per slot, not a job.
    jobs: HashMap<JobKey, Box<Tracked>>,
    timers: Timers,
    /// Jobs due, in the order they became due; stale entries are skipped.
    ready: VecDeque<JobKey>,
    in_flight: FuturesUnordered<BoxFuture<'static, Done>>,
    streams: SelectAll<BoxStream<'static, StreamItem>>,
    /// Plain polls in flight.
    polls: usize,
    /// Connections held: streams (and their openings) and long-polls.
    held: usize,
    messages: mpsc::UnboundedSender<Message>,
    /// When the budget will have a token for the head of the ready queue.
    budget_wake: Option<Instant>,
    bound: Option<Duration>,
    bound_at: Option<Instant>,
    gauged_at: Option<Instant>,
    /// The held connections last added to the gauge.
    gauged_held: usize,
    /// What the handles share.
    shared: Arc<Shared>,
    /// The change stream all jobs share, when the server has one.
    feed: feed::Feed,
    /// Batched reads, when the server has them.
    batch: batch::Batching,
    /// Webhook deliveries and the safety net, when the jobs expect webhooks.
    hooks: Option<hooks::Hooks>,
}

impl<W: Wire> Scheduler<W> {
    pub(crate) fn new(
        ctx: Arc<Context<W>>,
        options: JobSetOptions,
        messages: mpsc::UnboundedSender<Message>,
        shared: Arc<Shared>,
    ) -> Self {
        // A wire that cannot ask about many jobs (a test's script) waits job by job.
        let base = ctx.base_url.clone().filter(|_| ctx.wire.many());
        Scheduler {
            feed: feed::Feed::new(base.clone(), options.change_stream),
            batch: batch::Batching::new(base, options.batch_reads),
            hooks: options
                .webhooks
                .map(|net| hooks::Hooks::new(net, ctx.learned.model(), ctx.learned.changes())),
            ctx,
            policy: options.wait.composed_policy(),
            options,
            jobs: HashMap::new(),
            timers: Timers::default(),
            ready: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            streams: SelectAll::new(),
            polls: 0,
            held: 0,
            messages,
            budget_wake: None,
            bound: None,
            bound_at: None,
            gauged_at: None,
            gauged_held: 0,
            shared,
        }
    }

    /// Runs until every handle is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            self.fire(now);
            self.dispatch(now);
            self.feed_turn(now);
            self.hooks_turn(now);
            if self.budget_wake.is_none() && !self.ready.is_empty() {
                // Jobs the change stream let go of just now (its watchdog gave it up).
                self.dispatch(now);
            }
            self.gauges(now);
            let wake = [
                self.timers.next(),
                self.budget_wake,
                self.feed_wake(),
                self.hooks_wake(),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(wake) = wake {
                sleep.as_mut().reset(wake);
            }
            // Requests just started are polled first, so that they go out when granted.
            tokio::select! {
                biased;
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => self.done(done),
                Some(item) = self.streams.next(), if !self.streams.is_empty() => self.streamed(item),
                item = feed::Feed::next(&mut self.feed.events), if self.feed.events.is_some() => self.fed(item),
                command = commands.recv() => match command {
                    Some(command) => {
                        self.command(command);
                        // A burst of commands (a thousand jobs added) costs one turn.
                        while let Ok(command) = commands.try_recv() {
                            self.command(command);
                        }
                    }
                    None => return,
                },
                () = &mut sleep, if wake.is_some() => {}
            }
        }
    }

    // ----- Commands ----------------------------------------------------------------------

    fn command(&mut self, command: Command) {
        match command {
            Command::Add(mut job) => {
                let key = job.key;
                job.feed_id = self
                    .ctx
                    .base_url
                    .as_ref()
                    .and_then(|base| super::feed::job_id(base, &job.endpoints.status))
                    .map(String::into_boxed_str);
                job.member = if job.feed_id.is_some() {
                    Membership::Eligible
                } else {
                    Membership::Out
                };
                // Keys are unique by construction; a twin would replace its original.
                self.remove(key);
                telemetry::jobs_tracked(1.0);
                self.jobs.insert(key, job);
                if !self.hook_added(key, Instant::now()) {
                    self.make_ready(key);
                }
            }
            Command::Cancel(key) => {
                if self.remove(key).is_some() {
                    self.send(Message::Cancelled(1));
                }
            }
            Command::CancelAll => {
                let keys: Vec<JobKey> = self.jobs.keys().copied().collect();
                for key in &keys {
                    self.remove(*key);
                }
                self.ready.clear();
                if !keys.is_empty() {
                    self.send(Message::Cancelled(keys.len()));
                }
            }
            Command::Export(reply) => {
                let _ = reply.send(self.export());
            }
            Command::ExportJob(key, reply) => {
                let clocks = Clocks::now();
                let _ = reply.send(self.jobs.get(&key).map(|job| save_job(job, &clocks)));
            }
            Command::Deliver { id, status } => self.delivered(&id, *status),
        }
    }

    fn export(&self) -> SavedJobSet {
        let clocks = Clocks::now();
        let mut jobs: Vec<SavedJob> = self
            .jobs
            .values()
            .map(|job| save_job(job, &clocks))
            .collect();
        jobs.sort_by_key(|job| job.key);
        saved_set(jobs, &self.ctx.learned, &clocks)
    }

    // ----- Timers ------------------------------------------------------------------------

    fn fire(&mut self, now: Instant) {
        while let Some(key) = self.timers.pop_due(now) {
            if let Some(job) = self.jobs.get_mut(&key) {
                job.armed = None;
                self.wake(key, now);
            }
        }
    }

    /// A job's timer fired: its deadline, its last look, its next look, or its idle stream.
    fn wake(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.ledger.deadline().is_some_and(|d| now >= d) {
            // The deadline is exact: whatever is in flight — a read, a held request, a
            // stream — is cut, and the wait ends.
            job.abandon();
            self.take(key, crate::wait::ledger::Answer::Deadline, now);
            return;
        }
        let last_look = job.ledger.last_look_at().is_some_and(|at| now >= at);
        let stall_due = job.stall.due(self.bound).is_some_and(|due| due <= now);
        match job.stage {
            Stage::Sleeping { .. } | Stage::Ready | Stage::Following if last_look => {
                self.last_look(key, now)
            }
            Stage::Sleeping { until, .. } if until <= now => self.make_ready(key),
            Stage::Following if stall_due => {
                // The stream says nothing of a job that does not change: one look of its
                // own is the stall check's evidence.
                job.check = true;
                self.make_ready(key);
            }
            Stage::Holding { silent_at } if now >= silent_at => {
                tracing::debug!(job = %job.endpoints.label, "held read silent past its hold; sending it again");
                telemetry::silent_drop(crate::transport::RequestKind::LongPoll);
                job.abandon();
                self.make_ready(key);
            }
            Stage::Streaming { last_event } if now >= last_event + STREAM_IDLE => {
                tracing::debug!(job = %job.endpoints.label, "event stream idle; reconnecting");
                telemetry::silent_drop(crate::transport::RequestKind::Events);
                job.abandon();
                let idle = crate::wait::ledger::Break::Idle;
                self.take(key, crate::wait::ledger::Answer::Broke(idle), now);
            }
            _ => self.arm(key),
        }
    }

    /// Puts the job's timer where its stage needs it: a job waiting to send wakes for its last
    /// look, one with a request or stream out for its deadline.
    fn arm(&mut self, key: JobKey) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let (last_look, deadline) = (job.ledger.last_look_at(), job.ledger.deadline());
        let (own, limit) = match job.stage {
            Stage::Sleeping { until, .. } => (Some(until), last_look),
            Stage::Ready => (None, last_look),
            Stage::Streaming { last_event } => (last_event.checked_add(STREAM_IDLE), deadline),
            Stage::Holding { silent_at } => (Some(silent_at), deadline),
            Stage::Following => (job.stall.due(self.bound), last_look),
            Stage::Polling | Stage::Expiring => (None, deadline),
        };
        let at = [own, limit].into_iter().flatten().min();
        self.timers.arm(key, &mut job.armed, at);
    }

    fn make_ready(&mut self, key: JobKey) {
        if let Some(job) = self.jobs.get_mut(&key) {
            job.stage = Stage::Ready;
            self.ready.push_back(key);
            self.arm(key);
        }
    }

    /// Schedules the job's next look at `at`, brought forward to its stall check.
    fn sleep_until(&mut self, key: JobKey, at: Instant, now: Instant) {
        let bound = self.bound(now);
        let mut at = at;
        let mut on_safety = false;
        if self.hooks.is_some() {
            let safety = self.not_before_safety(key, at, now);
            on_safety = safety > at;
            at = safety;
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if let Some(due) = job.stall.due(bound) {
            let check = due.max(now + MIN_PAUSE);
            on_safety &= check >= at;
            at = at.min(check);
        }
        job.on_safety = on_safety;
        // A job the stream follows sleeps too after a look of its own (a stall check): at
        // `at` it rejoins the stream without a request, and an event wakes it sooner.
        if at <= now {
            self.make_ready(key);
        } else {
            job.stage = Stage::Sleeping {
                from: now,
                until: at,
            };
            self.arm(key);
        }
    }

    // ----- Endings -----------------------------------------------------------------------

    /// The job's wait ended: recorded, and reported to the stream — once its job is canceled
    /// on the service, when it gave up and the options ask for that.
    fn finish(&mut self, key: JobKey, ending: Ending) {
        let Some(job) = self.remove(key) else {
            return;
        };
        telemetry::jobset_job(if ending.report.mechanism == Mechanism::Webhook {
            "webhook"
        } else if job.member == Membership::Member {
            "changes"
        } else if job.batched {
            "batch"
        } else {
            "per_job"
        });
        ending.record(Some(&self.ctx.learned));
        if self.options.wait.cancel_on_give_up && matches!(ending.result, Err(Error::GaveUp(_))) {
            let cancel = cancel_job(&self.ctx.wire, &job.endpoints);
            let label = job.endpoints.label.clone();
            let status_url = job.endpoints.status_label.clone();
            let result = ending.result;
            self.in_flight.push(
                async move {
                    Done::Canceled {
                        key,
                        job: label,
                        status_url,
                        result,
                        outcome: cancel.await,
                    }
                }
                .boxed(),
            );
            return;
        }
        let report = &ending.report;
        tracing::debug!(
            job = %job.endpoints.label,
            outcome = ending.outcome,
            mechanism = report.mechanism.as_str(),
            requests = report.requests,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "wait finished"
        );
        self.send(Message::Event(Box::new(JobEvent::finished(
            key,
            job.endpoints.label.clone(),
            job.endpoints.status_label.clone(),
            ending.result,
        ))));
    }

    /// Stops tracking a job: its timer, its operation in flight, its place on the stream.
    fn remove(&mut self, key: JobKey) -> Option<Box<Tracked>> {
        let mut job = self.jobs.remove(&key)?;
        self.feed_leave(job.feed_id.as_deref(), job.member);
        self.hook_leave(key, &job);
        self.timers.arm(key, &mut job.armed, None);
        if let Some(handle) = job.abort.take() {
            handle.abort();
        }
        telemetry::jobs_tracked(-1.0);
        Some(job)
    }

    fn send(&self, message: Message) {
        // Nobody listens only once the job set is gone, and then neither is this.
        let _ = self.messages.send(message);
    }

    fn gauges(&mut self, now: Instant) {
        if self
            .gauged_at
            .is_some_and(|at| now.saturating_duration_since(at) < GAUGE_EVERY)
        {
            return;
        }
        self.gauged_at = Some(now);
        let (tokens, rate) = {
            let mut budget = self.ctx.budget.lock();
            (budget.tokens(now), budget.rate())
        };
        telemetry::budget(tokens, rate);
        telemetry::held_connections(self.held as f64 - self.gauged_held as f64);
        self.gauged_held = self.held;
        telemetry::stream_jobs(self.feed.gauge());
        tracing::trace!(
            jobs = self.jobs.len(),
            tracked = self.shared.tracked.load(Ordering::Relaxed),
            timers = self.timers.len(),
            ready = self.ready.len(),
            polls = self.polls,
            held = self.held,
            tokens,
            rate,
            "scheduler"
        );
    }
}

impl<W: Wire> Drop for Scheduler<W> {
    fn drop(&mut self) {
        telemetry::jobs_tracked(-(self.jobs.len() as f64));
        telemetry::held_connections(-(self.gauged_held as f64));
        let (open, members) = self.feed.counted();
        telemetry::streams_open(-open);
        telemetry::stream_jobs(-members);
        if let (Some(farewell), Ok(runtime)) =
            (self.feed.farewell(), tokio::runtime::Handle::try_current())
        {
            drop(runtime.spawn(self.ctx.wire.exchange(farewell)));
        }
    }
}
