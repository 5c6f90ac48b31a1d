//! The scheduler: one task, one timer queue, one budget, every job.
//!
//! Each turn of the loop fires the timers that are due (polls, deadlines, idle streams),
//! hands tokens to ready jobs in the order they became ready, then sleeps until the next
//! timer, the next token, an answer, an event or a command. Requests are futures owned by
//! this task, not tasks of their own; a job is a few hundred bytes of state.

mod dispatch;
mod reads;
mod streams;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{Aborted, BoxFuture};
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::queue::Timers;
use super::state::{History, SavedJob, SavedJobSet, save_job, saved_set};
use super::tracked::{Phase, Tracked};
use super::{JobEvent, JobKey, JobSetOptions, Shared};
use crate::client::Client;
use crate::error::Error;
use crate::model::JobStatus;
use crate::poll::{GiveUpReason, MIN_PAUSE};
use crate::telemetry;
use crate::transport::sse::{SseEvent, StreamError};
use crate::transport::{Exchange, Failure, Subscription};
use crate::wait::{Mechanism, final_lead};

/// Malformed bodies tolerated in a row before a job's wait ends.
const MAX_MALFORMED: u32 = 2;
/// Stream breaks tolerated before a job falls back to polling.
const MAX_STREAM_BREAKS: u8 = 2;
/// A stream with no event for this long is closed (the server sends keep-alives).
const STREAM_IDLE: Duration = Duration::from_secs(60);
/// How often the stall bound is recomputed from learned durations.
const BOUND_REFRESH: Duration = Duration::from_secs(1);
/// A delay no policy means literally.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
/// How often gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_millis(100);

/// What the handles ask of the scheduler.
pub(crate) enum Command {
    Add(Box<Tracked>),
    Cancel(JobKey),
    CancelAll,
    Export(oneshot::Sender<SavedJobSet>),
    ExportJob(JobKey, oneshot::Sender<Option<SavedJob>>),
}

/// What the scheduler tells the stream.
#[derive(Debug)]
pub(crate) enum Message {
    Event(Box<JobEvent>),
    /// Jobs that were cancelled (they emit no event).
    Cancelled(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A plain status read.
    Poll,
    /// The last look at the deadline (a plain read, not held, bypassing the poll cap).
    Final,
    /// A long-poll.
    Hold,
    /// Opening an event stream.
    Subscribe,
}

enum Done {
    Read {
        key: JobKey,
        generation: u32,
        op: Op,
        sent: Instant,
        hold: Option<Duration>,
        result: Result<Result<Exchange, Failure>, Aborted>,
    },
    Subscribed {
        key: JobKey,
        generation: u32,
        sent: Instant,
        result: Result<Result<Subscription, Failure>, Aborted>,
    },
}

/// An event of a job's stream; `None` when the stream ended.
type StreamItem = (JobKey, u32, Option<Result<SseEvent, StreamError>>);

pub(crate) struct Scheduler {
    client: Client,
    options: JobSetOptions,
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
    history: History,
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
    /// How long the latest plain read took, from sending to its answer: it places each job's
    /// last look ahead of its deadline.
    round_trip: Option<Duration>,
}

impl Scheduler {
    pub(crate) fn new(
        client: Client,
        options: JobSetOptions,
        messages: mpsc::UnboundedSender<Message>,
        history: History,
        shared: Arc<Shared>,
    ) -> Self {
        Scheduler {
            client,
            options,
            jobs: HashMap::new(),
            timers: Timers::default(),
            ready: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            streams: SelectAll::new(),
            polls: 0,
            held: 0,
            history,
            messages,
            budget_wake: None,
            bound: None,
            bound_at: None,
            gauged_at: None,
            gauged_held: 0,
            shared,
            round_trip: None,
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
            self.gauges(now);
            let wake = [self.timers.next(), self.budget_wake]
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
            Command::Add(job) => {
                let key = job.key;
                // Keys are unique by construction; a twin would replace its original.
                self.remove(key);
                telemetry::jobs_tracked(1.0);
                self.jobs.insert(key, job);
                self.make_ready(key);
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
                let clocks = super::state::Clocks::now();
                let _ = reply.send(self.jobs.get(&key).map(|job| save_job(job, &clocks)));
            }
        }
    }

    fn export(&self) -> SavedJobSet {
        let clocks = super::state::Clocks::now();
        let mut jobs: Vec<SavedJob> = self
            .jobs
            .values()
            .map(|job| save_job(job, &clocks))
            .collect();
        jobs.sort_by_key(|job| job.key);
        saved_set(jobs, &self.history, &clocks)
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

    /// When a job with this deadline takes its last look: early enough to be answered by the
    /// deadline (see `wait::final_lead`).
    fn last_look_at(&self, deadline: Instant) -> Instant {
        deadline
            .checked_sub(final_lead(self.round_trip))
            .unwrap_or(deadline)
    }

    /// A job's timer fired: its deadline, its last look, its next poll, or its idle stream.
    fn wake(&mut self, key: JobKey, now: Instant) {
        let last_look = self
            .jobs
            .get(&key)
            .and_then(|job| job.deadline)
            .map(|deadline| self.last_look_at(deadline));
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.deadline.is_some_and(|d| now >= d) {
            // The deadline is exact: whatever is in flight — a read, a held request, a
            // stream — is cut, and the wait ends.
            abandon(job);
            self.give_up(key, GiveUpReason::Deadline);
            return;
        }
        match job.phase {
            Phase::Sleeping { .. } | Phase::Ready if last_look.is_some_and(|at| now >= at) => {
                self.last_look(key, now);
            }
            Phase::Sleeping { until } if until <= now => self.make_ready(key),
            Phase::Streaming { last_event } if now >= last_event + STREAM_IDLE => {
                tracing::debug!(job = %job.endpoints.label, "event stream idle; reconnecting");
                abandon(job);
                self.broke(key, now);
            }
            _ => self.arm(key),
        }
    }

    /// Puts the job's timer where its phase needs it: a job waiting to send wakes for its last
    /// look, one with a request or stream out for its deadline.
    fn arm(&mut self, key: JobKey) {
        let last_look = self
            .jobs
            .get(&key)
            .and_then(|job| job.deadline)
            .map(|deadline| self.last_look_at(deadline));
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let (own, limit) = match job.phase {
            Phase::Sleeping { until } => (Some(until), last_look),
            Phase::Ready => (None, last_look),
            Phase::Streaming { last_event } => (last_event.checked_add(STREAM_IDLE), job.deadline),
            Phase::Polling | Phase::Holding | Phase::Expiring => (None, job.deadline),
        };
        let at = [own, limit].into_iter().flatten().min();
        self.timers.arm(key, &mut job.armed, at);
    }

    /// Nothing more can be learned in time: the wait gives up on its deadline, not before.
    fn expire(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.deadline.is_some_and(|deadline| now < deadline) {
            job.phase = Phase::Expiring;
            self.arm(key);
        } else {
            self.give_up(key, GiveUpReason::Deadline);
        }
    }

    fn make_ready(&mut self, key: JobKey) {
        if let Some(job) = self.jobs.get_mut(&key) {
            job.phase = Phase::Ready;
            self.ready.push_back(key);
            self.arm(key);
        }
    }

    /// Schedules the job's next poll at `at`, brought forward to its stall check and last
    /// look.
    fn sleep_until(&mut self, key: JobKey, at: Instant, now: Instant) {
        let bound = self.bound(now);
        let last_look = self
            .jobs
            .get(&key)
            .and_then(|job| job.deadline)
            .map(|deadline| self.last_look_at(deadline));
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let mut at = at;
        if let Some(due) = job.stall.due(bound) {
            at = at.min(due.max(now + MIN_PAUSE));
        }
        if let Some(last_look) = last_look {
            at = at.min(last_look);
        }
        if at <= now {
            self.make_ready(key);
        } else {
            job.phase = Phase::Sleeping { until: at };
            self.arm(key);
        }
    }

    // ----- Endings -----------------------------------------------------------------------

    fn complete(
        &mut self,
        key: JobKey,
        status: JobStatus,
        mechanism: Mechanism,
        received: Instant,
        prompt: bool,
    ) {
        if let Some(mut job) = self.remove(key) {
            let learned = self.client.learned_durations().clone();
            let result = job.finish(
                status,
                mechanism,
                received,
                prompt,
                &learned,
                &mut self.history,
            );
            self.finished(&job, result);
        }
    }

    fn give_up(&mut self, key: JobKey, reason: GiveUpReason) {
        if let Some(mut job) = self.remove(key) {
            let learned = self.client.learned_durations().clone();
            let error = job.give_up(reason, &learned, &mut self.history);
            self.finished(&job, Err(error));
        }
    }

    fn fail(&mut self, key: JobKey, error: Error) {
        if let Some(mut job) = self.remove(key) {
            let error = job.fail(error);
            self.finished(&job, Err(error));
        }
    }

    /// Stops tracking a job: its timer, its operation in flight.
    fn remove(&mut self, key: JobKey) -> Option<Box<Tracked>> {
        let mut job = self.jobs.remove(&key)?;
        self.timers.arm(key, &mut job.armed, None);
        if let Some(handle) = job.abort.take() {
            handle.abort();
        }
        telemetry::jobs_tracked(-1.0);
        Some(job)
    }

    fn finished(&mut self, job: &Tracked, result: Result<crate::wait::Completion, Error>) {
        self.send(Message::Event(Box::new(JobEvent::Finished {
            key: job.key,
            job: job.endpoints.label.clone(),
            result,
        })));
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
            let mut budget = self.client.budget().lock();
            (budget.tokens(now), budget.rate())
        };
        telemetry::budget(tokens, rate);
        telemetry::held_connections(self.held as f64 - self.gauged_held as f64);
        self.gauged_held = self.held;
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

impl Drop for Scheduler {
    fn drop(&mut self) {
        telemetry::jobs_tracked(-(self.jobs.len() as f64));
        telemetry::held_connections(-(self.gauged_held as f64));
    }
}

/// Abandons the job's operation in flight: its answer, when it comes, is stale.
fn abandon(job: &mut Tracked) {
    if let Some(handle) = job.abort.take() {
        handle.abort();
    }
    job.generation = job.generation.wrapping_add(1);
}
