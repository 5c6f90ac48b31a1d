//! What status reads said: the budget's signals, the job's state, its next poll, its stalls.

use std::time::Duration;

use tokio::time::Instant;

use super::{BOUND_REFRESH, Done, MAX_MALFORMED, Message, NEVER, Op, Scheduler};
use crate::jobset::tracked::Tracked;
use crate::jobset::{JobEvent, JobKey, Stall};
use crate::poll::{Basis, MIN_PAUSE, PollDecision};
use crate::telemetry;
use crate::transport::answer::{ReadOutcome, interpret};
use crate::transport::signals::Signals;
use crate::wait::{FallbackReason, Mechanism};

impl Scheduler {
    pub(super) fn done(&mut self, done: Done) {
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
                if matches!(op, Op::Poll | Op::Final)
                    && result.as_ref().is_ok_and(|exchange| exchange.attempts > 0)
                {
                    self.round_trip = Some(now.saturating_duration_since(sent));
                }
                let (attempts, hedges) = match &result {
                    Ok(exchange) => {
                        self.listen(Signals::read(exchange.status, &exchange.headers), sent, now);
                        (exchange.attempts, exchange.hedges)
                    }
                    Err(failure) => (failure.attempts, failure.hedges),
                };
                self.charge(attempts, hedges);
                let Some(job) = self.current(key, generation) else {
                    return;
                };
                job.abort = None;
                job.attempts(attempts, hedges);
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
    pub(super) fn current(&mut self, key: JobKey, generation: u32) -> Option<&mut Tracked> {
        self.jobs
            .get_mut(&key)
            .map(|job| &mut **job)
            .filter(|job| job.generation == generation)
    }

    /// Feeds the budget what an answer said about the rate limit.
    pub(super) fn listen(&mut self, signals: Signals, sent: Instant, now: Instant) {
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

    /// Transport retries and hedges went out without a grant: they are paid back.
    pub(super) fn charge(&mut self, attempts: u32, hedges: u32) {
        let unpaid = attempts.saturating_sub(1).saturating_add(hedges);
        if unpaid > 0 {
            self.client.budget().lock().charge(unpaid);
        }
    }

    /// A status read came back (the job's current operation).
    pub(super) fn answered(
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
            ReadOutcome::Unavailable {
                error,
                resume_at,
                answered,
                ..
            } => {
                if !answered {
                    // Never answered over HTTP: a wrong URL or a dead host, not an outage.
                    self.fail(key, error);
                    return;
                }
                // An outage is not the job's fault: look again when the breaker allows, or
                // after a short pause; the job's deadline still bounds the wait.
                tracing::debug!(job = %job.endpoints.label, error = %error, "service unavailable");
                let after = resume_at
                    .map(|at| at.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(1));
                forced = Some((after, Basis::Unavailable));
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
            self.expire(key, now);
            return;
        }
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        if job
            .deadline
            .is_some_and(|deadline| now >= self.last_look_at(deadline))
        {
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
                // Whatever asked for the pause, it is at least the floor (`poll::MIN_PAUSE`).
                let (after, basis) = match forced {
                    Some((after, basis)) => (after.max(MIN_PAUSE), basis),
                    // Re-issue a held request at once, while the server keeps holding: it took
                    // its time already, so the floor counts from when it was sent.
                    None if trusted_hold && can_hold => (
                        MIN_PAUSE.saturating_sub(now.saturating_duration_since(sent)),
                        basis,
                    ),
                    None => (after.max(MIN_PAUSE), basis),
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

    pub(super) fn note_long_poll(&mut self, key: JobKey, held: bool) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let route = &job.endpoints.capability_key;
        self.client.capabilities().set_long_poll(route, held);
        if !held {
            job.fall_back(Mechanism::LongPoll, FallbackReason::NotApplied);
        }
    }

    /// The stall bound now (recomputed from learned durations at most once a second).
    pub(super) fn bound(&mut self, now: Instant) -> Option<Duration> {
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
    pub(super) fn stall_evidence(
        &mut self,
        key: JobKey,
        progress: Option<f64>,
        now: Instant,
    ) -> bool {
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
}
