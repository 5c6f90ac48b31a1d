//! The single wait's driver: one async loop that sends what the ledger asks for, sleeps until
//! it says, and hands it what came back.

use std::time::Duration;

use std::future::Future;

use futures_util::StreamExt;
use futures_util::future::Either;
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use super::http_source::HttpSource;
use super::ledger::{
    Answer, Break, Clocks, Decision, Ending, Ledger, Look, Offer, Parts, Pause, STREAM_IDLE,
};
use super::source::Source;
use super::wire::Wire;
use super::{Completion, RemoteCancel, WaitOptions};
use crate::context::Context;
use crate::error::Error;
use crate::job::ChangeFilter;
use crate::job::{Endpoints, JobRef};
use crate::model::JobStatus;
use crate::poll::learned::InFlight;
use crate::poll::{LearnedDurations, PollPolicy};
use crate::profile::Profile;
use crate::transport::sse;

/// What the loop needs besides the source and the policy.
#[derive(Debug, Clone)]
pub(crate) struct WaitPlan {
    /// The job as the caller named it.
    pub(crate) job: String,
    /// The job API's dialect.
    pub(crate) profile: Profile,
    pub(crate) deadline: Option<Duration>,
    /// `Prefer: wait` to ask for.
    pub(crate) hold: Duration,
    /// When the job was created, if known locally.
    pub(crate) created: Option<Instant>,
    pub(crate) learned: Option<LearnedDurations>,
    /// Uniform in `[0, 1)`; injected for tests.
    pub(crate) random: fn() -> f64,
}

/// Waits for `job` with `options`, on the parts of `context`: the single wait of a client.
pub(crate) async fn wait_for<W: Wire>(
    context: &Context<W>,
    job: JobRef,
    options: &WaitOptions,
    observer: &mut (dyn FnMut(&JobStatus) + Send + Sync),
) -> Result<Completion, Error> {
    options.validate()?;
    let endpoints = job.resolve(context.base_url.as_ref(), &context.profile)?;
    let source = HttpSource {
        wire: &context.wire,
        endpoints: &endpoints,
        profile: &context.profile,
        capabilities: &context.capabilities,
        sse: options.sse,
        long_poll: options.long_poll,
    };
    let policy = options.composed_policy();
    let plan = WaitPlan {
        job: endpoints.label.clone(),
        profile: context.profile.clone(),
        deadline: options.deadline,
        hold: options.long_poll_hold,
        created: job.created(),
        learned: Some(context.learned.clone()),
        random: rand::random::<f64>,
    };
    let result = run(&source, &plan, policy.as_ref(), observer)
        .await
        .map_err(|error| error.with_status_url(&endpoints.status_label));
    match result {
        Err(Error::GaveUp(mut gave_up)) if options.cancel_on_give_up => {
            gave_up.remote_cancel = Some(cancel_job(&context.wire, &endpoints).await);
            Err(Error::GaveUp(gave_up))
        }
        other => other,
    }
}

/// Cancels a job whose wait gave up, on its cancel endpoint, within
/// [`CANCEL_BOUND`](super::CANCEL_BOUND): both drivers' one way of doing it.
pub(crate) fn cancel_job<W: Wire>(
    wire: &W,
    endpoints: &Endpoints,
) -> impl Future<Output = RemoteCancel> + Send + 'static {
    match &endpoints.cancel {
        Some(url) => Either::Left(wire.cancel(url, super::CANCEL_BOUND)),
        None => Either::Right(std::future::ready(RemoteCancel::Unsupported)),
    }
}

/// Waits until the job is terminal, the policy gives up, or the deadline passes.
pub(crate) async fn run<S: Source>(
    source: &S,
    plan: &WaitPlan,
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
    // A deadline too far to represent is no deadline.
    let deadline = plan.deadline.and_then(|d| start.checked_add(d));
    let mut driver = Driver {
        source,
        plan,
        policy,
        observer,
        filter: ChangeFilter::default(),
        ledger: Ledger::new(start, deadline, plan.created),
        why: "initial",
        in_flight: plan.learned.as_ref().map(LearnedDurations::track),
        changes: plan.learned.as_ref().map(LearnedDurations::changes),
        random: 0.5,
        decided_at: start,
    };
    async move {
        let ending = driver.drive().await;
        driver.ended(&ending);
        ending.result
    }
    .instrument(span)
    .await
}

struct Driver<'a, S> {
    source: &'a S,
    plan: &'a WaitPlan,
    policy: &'a dyn PollPolicy,
    observer: &'a mut (dyn FnMut(&JobStatus) + Send + Sync),
    /// Passes distinct changes to the observer.
    filter: ChangeFilter,
    ledger: Ledger,
    /// Why the next look goes out (the `poll` span's `basis`).
    why: &'static str,
    /// This wait, counted by the learned durations while it runs.
    in_flight: Option<InFlight>,
    /// Tells a sleep on the policy's schedule that the learned durations changed.
    changes: Option<tokio::sync::watch::Receiver<u64>>,
    /// The random number of the latest step, and when it was taken: a sleep planned again
    /// is planned for the same answer.
    random: f64,
    decided_at: Instant,
}

impl<S: Source> Driver<'_, S> {
    async fn drive(&mut self) -> Ending {
        loop {
            let look = self.ledger.next_look(Instant::now(), &self.offer());
            let decision = match look {
                Look::Subscribe => self.stream().await,
                look => self.read(look).await,
            };
            match decision {
                Decision::Finish(ending) => return *ending,
                Decision::Sleep { until, pause } => self.sleep(until, pause).await,
                Decision::Expire { at } => {
                    tokio::time::sleep_until(at).await;
                    if let Decision::Finish(ending) = self.take(Answer::Deadline) {
                        return *ending;
                    }
                }
                Decision::Listen => {}
            }
        }
    }

    fn offer(&self) -> Offer {
        Offer {
            stream: self.source.sse_available(),
            hold: self.source.long_poll_available(),
            max_hold: self.plan.hold,
            hold_until: None,
        }
    }

    /// Hands the ledger what came back, and does what it learned: tells the source about
    /// the route, the observer about a change.
    fn take(&mut self, answer: Answer) -> Decision {
        self.random = (self.plan.random)();
        let parts = Parts {
            job: &self.plan.job,
            profile: &self.plan.profile,
            policy: self.policy,
            learned: self.plan.learned.as_ref(),
            random: self.random,
            offer: self.offer(),
        };
        let step = self.ledger.step(answer, Clocks::now(), &parts);
        self.decided_at = Instant::now();
        if let (Some(in_flight), Some(age)) = (&self.in_flight, self.ledger.pending_age()) {
            in_flight.pending(age);
        }
        for fact in step.facts() {
            self.source.learned(fact);
        }
        if step.seen
            && let Some(status) = self.ledger.last()
            && self.filter.accept(status)
        {
            (self.observer)(status);
        }
        step.decision
    }

    async fn read(&mut self, look: Look) -> Decision {
        let request = self.ledger.request(look);
        let (requests, _, _) = self.ledger.counts();
        let span = tracing::info_span!(
            "poll",
            n = requests + 1,
            kind = look.as_str(),
            basis = if look == Look::Final {
                "deadline"
            } else {
                self.why
            },
        );
        self.ledger.sent();
        let sent = Instant::now();
        let deadline = self.ledger.deadline();
        match cut(deadline, self.source.read(request).instrument(span)).await {
            Some(reading) => self.take(Answer::Read {
                look,
                sent,
                reading,
            }),
            // A held read is cut at the deadline, and what it said last is current; a plain
            // one is still out, and there is no time left for another.
            None => self.take(Answer::Deadline),
        }
    }

    async fn stream(&mut self) -> Decision {
        let (requests, _, _) = self.ledger.counts();
        let last_id = self.ledger.last_event_id();
        let span = tracing::info_span!("events", n = requests + 1, resume = last_id.as_deref());
        self.ledger.sent();
        let deadline = self.ledger.deadline();
        let subscribe = self.source.subscribe(last_id, deadline);
        let Some(subscribed) = cut(deadline, subscribe.instrument(span.clone())).await else {
            return self.take(Answer::Deadline);
        };
        let (events, opened) = subscribed.split();
        let mut decision = self.take(Answer::Subscribed(opened));
        let Some(mut events) = events else {
            return decision;
        };
        while let Decision::Listen = decision {
            let next = cut(deadline, tokio::time::timeout(STREAM_IDLE, events.next()));
            let answer = match next.instrument(span.clone()).await {
                None => Answer::Deadline,
                Some(Err(_idle)) => Answer::Broke(Break::Idle),
                Some(Ok(None)) => Answer::Broke(Break::Ended),
                Some(Ok(Some(Err(e)))) if sse::oversized(&e) => Answer::Broke(Break::Oversized),
                Some(Ok(Some(Err(e)))) => {
                    tracing::debug!(parent: &span, error = %e, "event stream failed");
                    Answer::Broke(Break::Failed)
                }
                Some(Ok(Some(Ok(event)))) => Answer::Event(event),
            };
            decision = self.take(answer);
        }
        // Dropping the stream closes its connection.
        decision
    }

    async fn sleep(&mut self, mut until: Instant, pause: Pause) {
        self.why = pause.as_str();
        let now = Instant::now();
        if until <= now {
            return;
        }
        let span = tracing::info_span!(
            "sleep",
            basis = pause.as_str(),
            ms = until.duration_since(now).as_millis() as u64
        );
        // Only a sleep on the policy's schedule is planned again when the learned durations
        // change; one the server or the loop asked for stands.
        let mut changes = match (&mut self.changes, pause) {
            (Some(changes), Pause::Policy(_)) => Some(changes.clone()),
            _ => None,
        };
        if let Some(changes) = &mut changes {
            changes.borrow_and_update();
        }
        loop {
            let Some(watching) = &mut changes else {
                tokio::time::sleep_until(until).instrument(span).await;
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                changed = watching.changed() => {
                    if changed.is_err() {
                        changes = None;
                        continue;
                    }
                }
            }
            if let Some(Decision::Sleep { until: next, pause }) = self.replan() {
                tracing::debug!(
                    parent: &span,
                    basis = pause.as_str(),
                    "learned durations changed: next look planned again"
                );
                until = next;
                self.why = pause.as_str();
            }
        }
    }

    /// The latest step's decision on the policy's schedule, taken again with the learned
    /// durations as they are now.
    fn replan(&mut self) -> Option<Decision> {
        let parts = Parts {
            job: &self.plan.job,
            profile: &self.plan.profile,
            policy: self.policy,
            learned: self.plan.learned.as_ref(),
            random: self.random,
            offer: self.offer(),
        };
        self.ledger.replan(self.decided_at, &parts)
    }

    /// Records the ending: the span's fields, one log line, the lesson, the metrics.
    fn ended(&self, ending: &Ending) {
        let report = &ending.report;
        let (outcome, mechanism) = (ending.outcome, report.mechanism.as_str());
        let span = tracing::Span::current();
        span.record("mechanism", mechanism);
        span.record("requests", report.requests);
        span.record("retries", report.retries);
        span.record("hedges", report.hedges);
        span.record("outcome", outcome);
        tracing::info!(
            outcome,
            mechanism,
            requests = report.requests,
            retries = report.retries,
            hedges = report.hedges,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "wait finished"
        );
        ending.record(self.plan.learned.as_ref());
    }
}

/// `future`, cut at the deadline (`None` when it was).
async fn cut<F: std::future::Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}
