//! The scheduler: one task, one timer queue, one budget, every job.
//!
//! Each turn of the loop fires the timers that are due (polls, deadlines, idle streams),
//! hands tokens to ready jobs in the order they became ready, then sleeps until the next
//! timer, the next token, an answer, an event or a command. Requests are futures owned by
//! this task, not tasks of their own; a job is a few hundred bytes of state.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::{Aborted, BoxFuture, abortable};
use futures_util::stream::{self, BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::budget::Grant;
use super::queue::Timers;
use super::signals::Signals;
use super::state::{History, SavedJob, SavedJobSet, save_job, saved_set};
use super::tracked::{Phase, Tracked};
use super::{JobEvent, JobKey, JobSetOptions, Shared, Stall};
use crate::client::Client;
use crate::error::{Error, UnexpectedResponse, excerpt};
use crate::model::{JobState, JobStatus};
use crate::poll::{Basis, GiveUpReason, PollDecision};
use crate::telemetry;
use crate::transport::sse::{SseEvent, StreamError};
use crate::transport::{Exchange, Failure, ReadOptions, Subscription};
use crate::wait::{FallbackReason, Mechanism, ReadOutcome, interpret};

/// Malformed bodies tolerated in a row before a job's wait ends.
const MAX_MALFORMED: u32 = 2;
/// Stream breaks tolerated before a job falls back to polling.
const MAX_STREAM_BREAKS: u8 = 2;
/// The shortest pause between two polls of one job, whatever a policy says.
const MIN_GAP: Duration = Duration::from_millis(10);
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
    final_grace: Duration,
}

impl Scheduler {
    pub(crate) fn new(
        client: Client,
        options: JobSetOptions,
        messages: mpsc::UnboundedSender<Message>,
        history: History,
        shared: Arc<Shared>,
    ) -> Self {
        let final_grace = client
            .transport()
            .request_timeout
            .min(Duration::from_secs(2));
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
            final_grace,
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

    /// A job's timer fired: its deadline, its next poll, or its idle stream.
    fn wake(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.deadline.is_some_and(|d| now >= d) {
            match job.phase {
                Phase::Polling { cut: Some(cut) } if now >= cut => {
                    abandon(job);
                    self.give_up(key, GiveUpReason::Deadline);
                }
                Phase::Polling { cut: Some(_) } => self.arm(key),
                Phase::Polling { cut: None } => {
                    // The read in flight is the last look; it gets a short grace.
                    job.phase = Phase::Polling {
                        cut: Some(now + self.final_grace),
                    };
                    self.arm(key);
                }
                Phase::Holding | Phase::Streaming { .. } => {
                    abandon(job);
                    self.last_look(key, now);
                }
                Phase::Sleeping { .. } | Phase::Ready => self.last_look(key, now),
            }
            return;
        }
        match job.phase {
            Phase::Sleeping { until } if until <= now => self.make_ready(key),
            Phase::Streaming { last_event } if now >= last_event + STREAM_IDLE => {
                tracing::debug!(job = %job.endpoints.label, "event stream idle; reconnecting");
                abandon(job);
                self.broke(key, now);
            }
            _ => self.arm(key),
        }
    }

    /// Puts the job's timer where its phase needs it.
    fn arm(&mut self, key: JobKey) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let at = match job.phase {
            Phase::Polling { cut: Some(cut) } => Some(cut),
            phase => {
                let own = match phase {
                    Phase::Sleeping { until } => Some(until),
                    Phase::Streaming { last_event } => last_event.checked_add(STREAM_IDLE),
                    _ => None,
                };
                [own, job.deadline].into_iter().flatten().min()
            }
        };
        self.timers.arm(key, &mut job.armed, at);
    }

    fn make_ready(&mut self, key: JobKey) {
        if let Some(job) = self.jobs.get_mut(&key) {
            job.phase = Phase::Ready;
            self.ready.push_back(key);
            self.arm(key);
        }
    }

    /// Schedules the job's next poll at `at`, brought forward to its stall check and
    /// deadline.
    fn sleep_until(&mut self, key: JobKey, at: Instant, now: Instant) {
        let bound = self.bound(now);
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let mut at = at;
        if let Some(due) = job.stall.due(bound) {
            at = at.min(due.max(now + MIN_GAP));
        }
        if let Some(deadline) = job.deadline {
            at = at.min(deadline);
        }
        if at <= now {
            self.make_ready(key);
        } else {
            job.phase = Phase::Sleeping { until: at };
            self.arm(key);
        }
    }

    // ----- Dispatch ----------------------------------------------------------------------

    /// Hands tokens to ready jobs, first come first served.
    fn dispatch(&mut self, now: Instant) {
        self.budget_wake = None;
        while let Some(&key) = self.ready.front() {
            let Some(job) = self.jobs.get(&key).filter(|j| j.phase == Phase::Ready) else {
                self.ready.pop_front();
                continue;
            };
            let op = self.choose(job, now);
            if op == Op::Poll && self.polls >= self.options.max_in_flight {
                break;
            }
            if let Grant::After(wait) = self.client.budget().lock().acquire(now) {
                self.budget_wake = now.checked_add(wait);
                break;
            }
            self.ready.pop_front();
            self.start(key, op, now);
        }
    }

    /// Stream, long-poll or plain poll, for a due job.
    fn choose(&self, job: &Tracked, now: Instant) -> Op {
        if self.held >= self.options.max_held {
            return Op::Poll;
        }
        let capabilities = self.client.capabilities();
        let route = &job.endpoints.capability_key;
        if self.options.sse
            && !job.streams.refused
            && job.endpoints.events.is_some()
            && capabilities.sse(route)
        {
            return Op::Subscribe;
        }
        // The first look is not held: it learns at once where the job is (its hints, its
        // progress, whether it is already done), and when it last changed.
        if self.options.long_poll
            && job.last.is_some()
            && capabilities.long_poll(route)
            && self.hold_for(job, now).is_some()
        {
            return Op::Hold;
        }
        Op::Poll
    }

    /// How long to ask the server to hold a read: never past the deadline, nor past the
    /// job's stall check (its answer is the evidence), in whole seconds.
    fn hold_for(&self, job: &Tracked, now: Instant) -> Option<Duration> {
        let mut hold = Duration::from_secs(self.options.long_poll_hold.as_secs());
        let due = job.stall.due(self.bound);
        for limit in [job.deadline, due].into_iter().flatten() {
            let left = limit.saturating_duration_since(now);
            hold = hold.min(Duration::from_secs(left.as_secs()));
        }
        (hold >= Duration::from_secs(1)).then_some(hold)
    }

    /// Starts an operation for a job that holds a token.
    fn start(&mut self, key: JobKey, op: Op, now: Instant) {
        let hold = match (op, self.jobs.get(&key)) {
            (Op::Hold, Some(job)) => self.hold_for(job, now),
            _ => None,
        };
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        abandon(job);
        job.sent();
        let generation = job.generation;
        let transport = self.client.transport().clone();
        match op {
            Op::Poll | Op::Final | Op::Hold => {
                let url = job.endpoints.status.clone();
                // The scheduler waits out throttling itself, with every other job: the
                // transport hands a throttled answer back at once.
                let options = ReadOptions {
                    etag: None,
                    hold,
                    deadline: Some(now),
                };
                let (read, handle) = abortable(async move { transport.read(&url, &options).await });
                job.abort = Some(handle);
                job.phase = match op {
                    Op::Final => Phase::Polling {
                        cut: Some(now + self.final_grace),
                    },
                    Op::Hold => Phase::Holding,
                    _ => Phase::Polling { cut: None },
                };
                match op {
                    Op::Poll => self.polls += 1,
                    Op::Hold => self.held += 1,
                    _ => {}
                }
                self.in_flight.push(
                    async move {
                        Done::Read {
                            key,
                            generation,
                            op,
                            sent: now,
                            hold,
                            result: read.await,
                        }
                    }
                    .boxed(),
                );
            }
            Op::Subscribe => {
                let Some(url) = job.endpoints.events.clone() else {
                    return;
                };
                let last_id = job.streams.last_id.clone();
                // The stream lives until the deadline (cut by the timer) or the job ends.
                let timeout = match job.deadline {
                    Some(deadline) => {
                        deadline.saturating_duration_since(now) + transport.request_timeout
                    }
                    None => Duration::from_secs(24 * 3600),
                };
                let (subscribe, handle) = abortable(async move {
                    transport.subscribe(&url, last_id.as_deref(), timeout).await
                });
                job.abort = Some(handle);
                job.phase = Phase::Streaming { last_event: now };
                self.held += 1;
                self.in_flight.push(
                    async move {
                        Done::Subscribed {
                            key,
                            generation,
                            sent: now,
                            result: subscribe.await,
                        }
                    }
                    .boxed(),
                );
            }
        }
        self.arm(key);
    }

    /// At the deadline: one last plain read if the budget allows it now, else give up.
    fn last_look(&mut self, key: JobKey, now: Instant) {
        let grant = self.client.budget().lock().acquire(now);
        match grant {
            Grant::Now => self.start(key, Op::Final, now),
            Grant::After(_) => self.give_up(key, GiveUpReason::Deadline),
        }
    }

    // ----- Answers -----------------------------------------------------------------------

    fn done(&mut self, done: Done) {
        match done {
            Done::Read {
                key,
                generation,
                op,
                sent,
                hold,
                result,
            } => {
                match op {
                    Op::Poll => self.polls = self.polls.saturating_sub(1),
                    Op::Hold => self.held = self.held.saturating_sub(1),
                    Op::Final | Op::Subscribe => {}
                }
                let Ok(result) = result else {
                    return;
                };
                let now = Instant::now();
                let attempts = match &result {
                    Ok(exchange) => {
                        self.listen(Signals::read(exchange.status, &exchange.headers), sent, now);
                        exchange.attempts
                    }
                    Err(failure) => failure.attempts,
                };
                self.charge(attempts);
                let Some(job) = self.current(key, generation) else {
                    return;
                };
                job.abort = None;
                job.attempts(attempts);
                match result {
                    Ok(exchange) => self.answered(key, op, sent, hold, interpret(exchange), now),
                    Err(failure) => self.fail(key, failure.into_error()),
                }
            }
            Done::Subscribed {
                key,
                generation,
                sent,
                result,
            } => self.subscribed(key, generation, sent, result),
        }
    }

    /// The job, if `generation` is its current operation.
    fn current(&mut self, key: JobKey, generation: u32) -> Option<&mut Tracked> {
        self.jobs
            .get_mut(&key)
            .map(|job| &mut **job)
            .filter(|job| job.generation == generation)
    }

    /// Feeds the budget what an answer said about the rate limit.
    fn listen(&mut self, signals: Signals, sent: Instant, now: Instant) {
        let mut budget = self.client.budget().lock();
        budget.heard();
        let mut adjusted = Vec::new();
        if let Some((quota, window)) = signals.policy {
            adjusted.extend(budget.policy(now, quota, window));
        }
        if let Some(remaining) = signals.remaining {
            adjusted.extend(budget.remaining(now, remaining));
        }
        if let Some(throttle) = signals.throttled {
            let before = budget.throttled_total();
            adjusted.extend(budget.throttled(now, sent, throttle.retry_after));
            let paused = budget.throttled_total().saturating_sub(before);
            telemetry::budget_paused(paused);
        }
        drop(budget);
        for adjustment in adjusted {
            tracing::debug!(reason = adjustment.as_str(), "request budget adjusted");
            telemetry::budget_adjusted(adjustment.as_str());
        }
    }

    /// Transport retries went out without a grant: they are paid back.
    fn charge(&mut self, attempts: u32) {
        if attempts > 1 {
            self.client.budget().lock().charge(attempts - 1);
        }
    }

    /// A status read came back (the job's current operation).
    fn answered(
        &mut self,
        key: JobKey,
        op: Op,
        sent: Instant,
        hold: Option<Duration>,
        outcome: ReadOutcome,
        now: Instant,
    ) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let mut forced: Option<(Duration, Basis)> = None;
        let mut trusted_hold = false;
        let mut progress = None;
        match outcome {
            ReadOutcome::Status { status, meta } => {
                job.malformed = 0;
                if std::mem::take(&mut job.streams.suspect) {
                    // The status URL works, so the 404 on the events URL meant "no streams".
                    self.client
                        .capabilities()
                        .set_sse(&job.endpoints.capability_key, false);
                }
                let held = hold.is_some() && meta.applied_hold.is_some();
                let mechanism = if held {
                    Mechanism::LongPoll
                } else {
                    Mechanism::Polling(job.basis)
                };
                if status.is_terminal() {
                    self.complete(key, status, mechanism, now, held);
                    return;
                }
                if hold.is_some() {
                    self.note_long_poll(key, held);
                }
                let Some(job) = self.jobs.get_mut(&key) else {
                    return;
                };
                let asked = hold.unwrap_or_default();
                let applied = meta.applied_hold.unwrap_or(asked).min(asked);
                trusted_hold = held && now.saturating_duration_since(sent) >= applied / 2;
                job.current = mechanism;
                job.observe(&status, now, meta.retry_after);
                job.pending_at(sent);
                progress = Some(status.progress);
            }
            ReadOutcome::NotModified { meta } => {
                job.malformed = 0;
                job.hint(meta.retry_after, now);
                job.pending_at(sent);
            }
            ReadOutcome::Throttled { retry_after, error } => {
                tracing::debug!(job = %job.endpoints.label, error = %error, "throttled");
                forced = Some((
                    retry_after.unwrap_or(Duration::from_secs(1)),
                    Basis::Throttled,
                ));
            }
            ReadOutcome::Malformed(error) => {
                job.malformed += 1;
                if job.malformed > MAX_MALFORMED {
                    self.fail(key, error);
                    return;
                }
                tracing::debug!(job = %job.endpoints.label, error = %error, "unreadable answer; polling again");
                forced = Some((Duration::from_millis(250) * job.malformed, job.basis));
            }
            ReadOutcome::Unknown { error, .. } | ReadOutcome::Failed(error) => {
                self.fail(key, error);
                return;
            }
        }
        if let Some(progress) = progress
            && self.stall_evidence(key, progress, now)
        {
            return;
        }
        if op == Op::Final {
            self.give_up(key, GiveUpReason::Deadline);
            return;
        }
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        if job.deadline.is_some_and(|d| now >= d) {
            self.last_look(key, now);
            return;
        }
        let model = self.client.learned_durations().model();
        let state = job.poll_state(now, Some(model), rand::random::<f64>());
        let can_hold = self.options.long_poll
            && self.held < self.options.max_held
            && self.hold_for(job, now).is_some();
        match self.options.policy.next(&state) {
            PollDecision::GiveUp(reason) => self.give_up(key, reason),
            PollDecision::Poll { after, basis } => {
                let (after, basis) = match forced {
                    Some(forced) => forced,
                    // Re-issue a held request at once, while the server keeps holding.
                    None if trusted_hold && can_hold => (Duration::ZERO, basis),
                    None => (after.max(MIN_GAP), basis),
                };
                if let Some(job) = self.jobs.get_mut(&key) {
                    job.basis = basis;
                }
                // Further than an instant reaches is as good as never: the deadline or the
                // stall check comes first, if there is one.
                let at = now
                    .checked_add(after)
                    .or_else(|| now.checked_add(NEVER))
                    .unwrap_or(now);
                self.sleep_until(key, at, now);
            }
        }
    }

    fn note_long_poll(&mut self, key: JobKey, held: bool) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let route = &job.endpoints.capability_key;
        self.client.capabilities().set_long_poll(route, held);
        if !held {
            job.fall_back(Mechanism::LongPoll, FallbackReason::NotApplied);
        }
    }

    fn subscribed(
        &mut self,
        key: JobKey,
        generation: u32,
        sent: Instant,
        result: Result<Result<Subscription, Failure>, Aborted>,
    ) {
        let Ok(result) = result else {
            self.held = self.held.saturating_sub(1);
            return;
        };
        let now = Instant::now();
        if let Ok(sub) = &result {
            self.listen(Signals::read(sub.status, &sub.headers), sent, now);
        }
        let attempts = match &result {
            Ok(sub) => sub.attempts,
            Err(failure) => failure.attempts,
        };
        self.charge(attempts);
        let Some(job) = self
            .jobs
            .get_mut(&key)
            .filter(|job| job.generation == generation)
        else {
            // The stream, if any, is dropped here.
            self.held = self.held.saturating_sub(1);
            return;
        };
        job.abort = None;
        job.attempts(attempts);
        let sub = match result {
            Ok(sub) => sub,
            Err(failure) => {
                tracing::debug!(job = %job.endpoints.label, error = %crate::error::chain(&failure.error), "event stream unreachable");
                self.held = self.held.saturating_sub(1);
                self.refuse_streams(key, FallbackReason::Unreachable);
                return;
            }
        };
        let Some(events) = sub.events else {
            self.held = self.held.saturating_sub(1);
            let reason = match sub.status.as_u16() {
                404 | 405 | 406 | 501 | 200..=299 => {
                    job.streams.suspect = true;
                    FallbackReason::NotSupported
                }
                401 | 403 => {
                    let error = Exchange {
                        url: job
                            .endpoints
                            .events
                            .clone()
                            .unwrap_or_else(|| job.endpoints.status.clone()),
                        status: sub.status,
                        headers: sub.headers,
                        body: sub.body,
                        attempts: sub.attempts,
                    }
                    .into_error(None);
                    self.fail(key, error);
                    return;
                }
                429 | 503 => FallbackReason::Refused,
                _ => FallbackReason::Unreachable,
            };
            self.refuse_streams(key, reason);
            return;
        };
        self.client
            .capabilities()
            .set_sse(&job.endpoints.capability_key, true);
        job.current = Mechanism::Sse;
        job.phase = Phase::Streaming { last_event: now };
        let (events, handle) = stream::abortable(events);
        job.abort = Some(handle);
        let tagged = events
            .map(move |event| (key, generation, Some(event)))
            .chain(stream::once(async move { (key, generation, None) }));
        self.streams.push(tagged.boxed());
        self.arm(key);
    }

    /// This job will not use streams again; it polls from now on.
    fn refuse_streams(&mut self, key: JobKey, reason: FallbackReason) {
        if let Some(job) = self.jobs.get_mut(&key) {
            job.streams.refused = true;
            job.fall_back(Mechanism::Sse, reason);
            self.make_ready(key);
        }
    }

    /// A stream ended, failed or went idle before the job ended: reconnect after a pause,
    /// or give up on streams after a few breaks.
    fn broke(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.streams.breaks = job.streams.breaks.saturating_add(1);
        if job.streams.breaks > MAX_STREAM_BREAKS {
            self.refuse_streams(key, FallbackReason::StreamBroken);
            return;
        }
        let pause = Duration::from_millis(250) * u32::from(job.streams.breaks);
        job.phase = Phase::Sleeping { until: now };
        self.sleep_until(key, now + pause, now);
    }

    fn streamed(&mut self, (key, generation, item): StreamItem) {
        let now = Instant::now();
        let Some(item) = item else {
            self.held = self.held.saturating_sub(1);
            if let Some(job) = self.current(key, generation) {
                job.abort = None;
                tracing::debug!(job = %job.endpoints.label, "event stream ended early");
                self.broke(key, now);
            }
            return;
        };
        let Some(job) = self.current(key, generation) else {
            return;
        };
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(job = %job.endpoints.label, error = %error, "event stream failed");
                abandon(job);
                self.broke(key, now);
                return;
            }
        };
        job.phase = Phase::Streaming { last_event: now };
        if let Some(id) = &event.id {
            job.streams.last_id = Some(id.as_str().into());
        }
        let status = match event.event.as_str() {
            "status" | "message" => match JobStatus::from_json(event.data.as_bytes()) {
                Ok(status) => status,
                Err(error) => {
                    tracing::debug!(job = %job.endpoints.label, error = %error, "unreadable status event");
                    abandon(job);
                    self.broke(key, now);
                    return;
                }
            },
            "progress" => {
                let progress = JobStatus::from_json(event.data.as_bytes())
                    .ok()
                    .and_then(|s| s.progress)
                    .or_else(|| {
                        serde_json::from_str::<serde_json::Value>(&event.data)
                            .ok()
                            .and_then(|v| v.get("progress").and_then(serde_json::Value::as_f64))
                    });
                match (progress, job.last.clone()) {
                    (Some(p), Some(last)) if !last.is_terminal() => last.with_progress(p),
                    _ => {
                        self.arm(key);
                        return;
                    }
                }
            }
            _ => {
                self.arm(key);
                return;
            }
        };
        if status.is_terminal() {
            self.complete(key, status, Mechanism::Sse, now, true);
            return;
        }
        if let JobState::Unknown(result) = &status.state {
            let error = Error::UnexpectedResponse(Box::new(UnexpectedResponse {
                url: format!("{} (event stream)", job.endpoints.label),
                status: 200,
                code: None,
                message: format!(
                    "the job reports result {result:?}, which this version does not know (expected pending, completed or error)"
                ),
                body_excerpt: excerpt(event.data.as_bytes(), 256),
                retry_after: None,
            }));
            self.fail(key, error);
            return;
        }
        job.current = Mechanism::Sse;
        job.observe(&status, now, None);
        job.pending_at(now);
        if !self.stall_evidence(key, status.progress, now) {
            self.arm(key);
        }
    }

    // ----- Stalls ------------------------------------------------------------------------

    /// The stall bound now (recomputed from learned durations at most once a second).
    fn bound(&mut self, now: Instant) -> Option<Duration> {
        if self
            .bound_at
            .is_none_or(|at| now.saturating_duration_since(at) >= BOUND_REFRESH)
        {
            let model = self.client.learned_durations().model();
            self.bound = self.options.stall.bound(&model);
            self.bound_at = Some(now);
        }
        self.bound
    }

    /// A reading of a pending job: reports a stall when it shows one. Returns `true` when
    /// the job's wait ended on it.
    fn stall_evidence(&mut self, key: JobKey, progress: Option<f64>, now: Instant) -> bool {
        let bound = self.bound(now);
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        let Some(unchanged_for) = job.stall.observe(progress, now, bound) else {
            return false;
        };
        let bound = bound.unwrap_or_default();
        tracing::info!(
            job = %job.endpoints.label,
            unchanged_ms = unchanged_for.as_millis() as u64,
            bound_ms = bound.as_millis() as u64,
            "job stalled"
        );
        telemetry::stalled();
        let stall = Stall {
            key,
            job: job.endpoints.label.clone(),
            last_status: job.last.clone(),
            unchanged_for,
            bound,
        };
        self.send(Message::Event(Box::new(JobEvent::Stalled(stall))));
        if !self.options.stop_on_stall {
            return false;
        }
        if let Some(mut job) = self.remove(key) {
            let error = job.stalled(unchanged_for, bound);
            self.finished(&job, Err(error));
        }
        true
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
