//! The wait loop: a function of a status source, a policy and a plan.

mod events;
mod ledger;

use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use super::source::{Fact, Meta, ReadOutcome, ReadRequest, Reading, Source};
use super::{Completion, Fallback, FallbackReason, Mechanism, final_lead};
use crate::error::{Error, UnexpectedResponse, excerpt};
use crate::job::ChangeFilter;
use crate::model::JobStatus;
use crate::poll::{
    Basis, Estimate, GiveUpReason, LearnedDurations, MIN_PAUSE, PollDecision, PollPolicy,
};

/// Malformed bodies tolerated in a row before the wait ends.
const MAX_MALFORMED: u32 = 2;
/// Stream breaks tolerated before falling back to polling.
const MAX_STREAM_BREAKS: u32 = 2;

/// What the loop needs besides the source and the policy.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The job as the caller named it.
    pub(crate) job: String,
    pub(crate) deadline: Option<Duration>,
    /// `Prefer: wait` to ask for.
    pub(crate) hold: Duration,
    /// When the job was created, if known locally.
    pub(crate) created: Option<Instant>,
    pub(crate) learned: Option<LearnedDurations>,
    /// Uniform in `[0, 1)`; injected for tests.
    pub(crate) random: fn() -> f64,
}

/// Waits until the job is terminal, the policy gives up, or the deadline passes.
pub(crate) async fn run<S: Source>(
    source: &S,
    plan: &Plan,
    policy: &dyn PollPolicy,
    observer: &mut (dyn FnMut(&JobStatus) + Send + Sync),
) -> Result<Completion, Error> {
    let span = tracing::info_span!(
        "wait",
        job = %plan.job,
        mechanism = Empty,
        requests = Empty,
        retries = Empty,
        hedges = Empty,
        outcome = Empty,
    );
    let start = Instant::now();
    let waiter = Waiter {
        source,
        plan,
        policy,
        observer,
        start,
        // A deadline too far to represent is no deadline.
        deadline: plan.deadline.and_then(|d| start.checked_add(d)),
        origin: plan.created,
        origin_known: plan.created.is_some(),
        requests: 0,
        retries: 0,
        hedges: 0,
        round_trip: None,
        last: None,
        etag: None,
        eta: None,
        retry_after: None,
        progress: None,
        last_pending: None,
        fallbacks: Vec::new(),
        answered: false,
        down: None,
        filter: ChangeFilter::default(),
        basis: Basis::Initial,
        current: Mechanism::Polling(Basis::Initial),
    };
    waiter.run().instrument(span).await
}

enum Phase {
    Done(Result<Completion, Error>),
    /// The deadline cut the stream: what it said last is current.
    Deadline,
    /// The time for the last look came while no stream was open.
    LastLook,
    Fallback,
}

/// The service was unavailable at the last look.
#[derive(Debug)]
struct Down {
    /// `host:port`.
    host: String,
    /// When the circuit breaker lets requests through again, when it is open.
    resume_at: Option<Instant>,
    /// The last real failure (not a refusal).
    cause: Option<Error>,
}

struct Waiter<'a, S> {
    source: &'a S,
    plan: &'a Plan,
    policy: &'a dyn PollPolicy,
    observer: &'a mut (dyn FnMut(&JobStatus) + Send + Sync),
    start: Instant,
    deadline: Option<Instant>,
    /// The job's creation, as well as it is known (else the wait's start is used).
    origin: Option<Instant>,
    origin_known: bool,
    requests: u32,
    retries: u32,
    hedges: u32,
    /// How long the latest plain read took, from sending to its answer.
    round_trip: Option<Duration>,
    last: Option<JobStatus>,
    etag: Option<String>,
    eta: Option<Estimate>,
    retry_after: Option<Estimate>,
    progress: Option<crate::poll::ProgressReading>,
    /// When the last request that saw the job pending was sent.
    last_pending: Option<Instant>,
    fallbacks: Vec<Fallback>,
    /// Whether the service has answered this wait at all (any HTTP answer, any stream).
    answered: bool,
    /// The service was failing at the last look.
    down: Option<Down>,
    filter: ChangeFilter,
    /// What scheduled the next (or current) poll.
    basis: Basis,
    /// The mechanism that delivered the latest answer.
    current: Mechanism,
}

impl<S: Source> Waiter<'_, S> {
    async fn run(mut self) -> Result<Completion, Error> {
        if self.source.sse_available() {
            match self.sse_phase().await {
                Phase::Done(result) => return result,
                Phase::Deadline => return self.give_up(GiveUpReason::Deadline),
                Phase::LastLook => return self.final_poll().await,
                Phase::Fallback => {}
            }
        }
        self.poll_phase().await
    }

    // ----- Polling and long-polling ------------------------------------------------------

    async fn poll_phase(mut self) -> Result<Completion, Error> {
        let mut malformed = 0;
        loop {
            if self.last_look_at().is_some_and(|at| Instant::now() >= at) {
                return self.final_poll().await;
            }
            let hold = self.hold();
            let request = ReadRequest {
                etag: self.etag.clone(),
                hold,
                deadline: self.deadline,
            };
            let span = tracing::info_span!(
                "poll",
                n = self.requests + 1,
                kind = if hold.is_some() {
                    "long_poll"
                } else {
                    "status"
                },
                basis = self.basis.as_str(),
            );
            let sent = Instant::now();
            let Some(reading) =
                cut(self.deadline, self.source.read(request).instrument(span)).await
            else {
                // A held request is cut at the deadline, and what it said last is current; a
                // plain one is still out, and there is no time left for another.
                self.requests += 1;
                return self.give_up(GiveUpReason::Deadline);
            };
            let received = Instant::now();
            let Reading {
                outcome,
                attempts,
                hedges,
            } = reading;
            self.count(attempts);
            self.hedges += hedges;
            if hold.is_none() && attempts > 0 {
                self.round_trip = Some(received.saturating_duration_since(sent));
            }

            let mut forced: Option<(Duration, Basis)> = None;
            let mut trusted_hold = false;
            if !matches!(outcome, ReadOutcome::Unavailable { .. }) {
                self.answered = true;
                self.down = None;
            }
            match outcome {
                ReadOutcome::Status { status, meta } => {
                    malformed = 0;
                    self.source.learned(Fact::StatusWorks);
                    let held = hold.is_some() && meta.applied_hold.is_some();
                    let mechanism = if held {
                        Mechanism::LongPoll
                    } else {
                        Mechanism::Polling(self.basis)
                    };
                    if status.is_terminal() {
                        return self.finish(status, mechanism, received, held);
                    }
                    if hold.is_some() {
                        self.note_long_poll(held);
                    }
                    trusted_hold = held && self.held_long_enough(&meta, hold, sent, received);
                    self.current = mechanism;
                    self.observe(&status, received, &meta);
                    self.last_pending = Some(sent);
                }
                ReadOutcome::NotModified { meta } => {
                    malformed = 0;
                    let held = hold.is_some() && meta.applied_hold.is_some();
                    if hold.is_some() {
                        self.note_long_poll(held);
                    }
                    trusted_hold = held && self.held_long_enough(&meta, hold, sent, received);
                    self.current = if held {
                        Mechanism::LongPoll
                    } else {
                        Mechanism::Polling(self.basis)
                    };
                    self.absorb_hints(&meta, received);
                    self.last_pending = Some(sent);
                }
                ReadOutcome::Throttled { retry_after, error } => {
                    tracing::debug!(error = %error, "throttled");
                    forced = Some((
                        retry_after.unwrap_or(Duration::from_secs(1)),
                        Basis::Throttled,
                    ));
                }
                ReadOutcome::Malformed(error) => {
                    malformed += 1;
                    if malformed > MAX_MALFORMED {
                        return self.fail(error);
                    }
                    tracing::debug!(error = %error, "unreadable answer; polling again");
                    forced = Some((Duration::from_millis(250) * malformed, self.basis));
                }
                ReadOutcome::Unavailable {
                    error,
                    host,
                    resume_at,
                    answered,
                } => {
                    // Nothing has ever answered: a wrong URL or a dead host, not an outage.
                    if !(self.answered || answered) {
                        return self.fail(error);
                    }
                    tracing::debug!(error = %error, "service unavailable; the wait goes on");
                    if let Some(at) = resume_at {
                        let pause = at.saturating_duration_since(Instant::now());
                        forced = Some((pause, Basis::Unavailable));
                    }
                    self.note_down(error, host, resume_at);
                }
                ReadOutcome::Unknown { error, .. } | ReadOutcome::Failed(error) => {
                    return self.fail(error);
                }
            }

            // Whatever asked for the pause, it is at least the floor (`poll::MIN_PAUSE`).
            let (after, basis) = match self.policy.next(&self.state()) {
                PollDecision::GiveUp(reason) => return self.give_up(reason),
                PollDecision::Poll { after, basis } => match forced {
                    Some((after, basis)) => (after.max(MIN_PAUSE), basis),
                    // Re-issue a held request at once, if the next one can be held too: it
                    // took its time already, so the floor counts from when it was sent.
                    None if trusted_hold && self.hold().is_some() => (
                        MIN_PAUSE.saturating_sub(received.saturating_duration_since(sent)),
                        basis,
                    ),
                    None => (after.max(MIN_PAUSE), basis),
                },
            };
            self.basis = basis;
            self.sleep(after, basis).await;
        }
    }

    /// One last plain read, sent in time to be answered by the deadline and cut there.
    async fn final_poll(mut self) -> Result<Completion, Error> {
        // The deadline travels with the request, so a throttled answer is handed back at
        // once instead of waited out.
        let request = ReadRequest {
            etag: self.etag.clone(),
            hold: None,
            deadline: self.deadline,
        };
        let span = tracing::info_span!(
            "poll",
            n = self.requests + 1,
            kind = "status",
            basis = "deadline"
        );
        let read = cut(self.deadline, self.source.read(request));
        let Some(reading) = read.instrument(span).await else {
            self.requests += 1;
            return self.give_up(GiveUpReason::Deadline);
        };
        let received = Instant::now();
        self.count(reading.attempts);
        self.hedges += reading.hedges;
        if !matches!(reading.outcome, ReadOutcome::Unavailable { .. }) {
            self.answered = true;
            self.down = None;
        }
        match reading.outcome {
            ReadOutcome::Status { status, meta } => {
                self.current = Mechanism::Polling(self.basis);
                if status.is_terminal() {
                    return self.finish(status, self.current, received, false);
                }
                self.observe(&status, received, &meta);
            }
            ReadOutcome::Unavailable {
                error,
                host,
                resume_at,
                answered,
            } => {
                if !(self.answered || answered) {
                    return self.fail(error);
                }
                self.note_down(error, host, resume_at);
            }
            ReadOutcome::Unknown { error, .. } | ReadOutcome::Failed(error) => {
                return self.fail(error);
            }
            ReadOutcome::NotModified { .. }
            | ReadOutcome::Throttled { .. }
            | ReadOutcome::Malformed(_) => {}
        }
        // Nothing more can be learned in time; the wait ends on its deadline, not before.
        if let Some(deadline) = self.deadline {
            tokio::time::sleep_until(deadline).await;
        }
        self.give_up(GiveUpReason::Deadline)
    }

    fn hold(&self) -> Option<Duration> {
        // After a failure the next look is a plain read: it answers at once, so it can be the
        // breaker's probe without keeping every other wait paused for a whole hold.
        if !self.source.long_poll_available() || self.down.is_some() {
            return None;
        }
        let mut hold = Duration::from_secs(self.plan.hold.as_secs());
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            hold = hold.min(Duration::from_secs(left.as_secs()));
        }
        (hold >= Duration::from_secs(1)).then_some(hold)
    }

    /// A held answer that came back early (a server restart, a cap) is not a reason to poll
    /// again at once.
    fn held_long_enough(
        &self,
        meta: &Meta,
        hold: Option<Duration>,
        sent: Instant,
        received: Instant,
    ) -> bool {
        let asked = hold.unwrap_or_default();
        let applied = meta.applied_hold.unwrap_or(asked).min(asked);
        received.duration_since(sent) >= applied / 2
    }

    fn note_long_poll(&mut self, held: bool) {
        if held {
            self.source.learned(Fact::LongPollApplied);
        } else {
            self.source.learned(Fact::LongPollIgnored);
            self.fall_back(Mechanism::LongPoll, FallbackReason::NotApplied);
        }
    }

    /// When the last look goes out: [`final_lead`] before the deadline.
    fn last_look_at(&self) -> Option<Instant> {
        let deadline = self.deadline?;
        Some(
            deadline
                .checked_sub(final_lead(self.round_trip))
                .unwrap_or(deadline),
        )
    }

    /// Sleeps `after`, clamped to the time of the last look; `true` when it woke for it.
    async fn sleep(&self, after: Duration, basis: Basis) -> bool {
        let wake = Instant::now().checked_add(after);
        let (wake, on_deadline) = match (wake, self.last_look_at()) {
            (Some(wake), Some(deadline)) if wake < deadline => (Some(wake), false),
            (_, Some(deadline)) => (Some(deadline), true),
            (wake, None) => (wake, false),
        };
        let span = tracing::info_span!(
            "sleep",
            basis = basis.as_str(),
            ms = after.as_millis() as u64
        );
        match wake {
            Some(wake) if wake <= Instant::now() => {}
            Some(wake) => tokio::time::sleep_until(wake).instrument(span).await,
            // Further than an Instant reaches: tokio saturates long sleeps.
            None => tokio::time::sleep(after).instrument(span).await,
        }
        on_deadline
    }
}

async fn cut<F: std::future::Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

fn unknown_result(job: &str, result: &str, body: &str) -> Error {
    Error::UnexpectedResponse(Box::new(UnexpectedResponse {
        url: format!("{job} (event stream)"),
        status: 200,
        code: None,
        message: format!(
            "the job reports result {result:?}, which this version does not know (expected pending, completed or error)"
        ),
        body_excerpt: excerpt(body.as_bytes(), 256),
        retry_after: None,
        auth_challenge: None,
        url_credentials: false,
    }))
}
