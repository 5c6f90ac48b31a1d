//! The wait loop's bookkeeping: what was observed, what it teaches, how the wait ends.

use std::time::Duration;

use tokio::time::Instant;

use super::{Down, Waiter};
use crate::clock;
use crate::error::{BoxError, Error, GaveUp, JobFailed, Unavailable};
use crate::model::{JobState, JobStatus};
use crate::poll::learned::Observed;
use crate::poll::{Estimate, GiveUpReason, LearnedDurations, PollState, ProgressReading, Sample};
use crate::telemetry;
use crate::wait::source::{Meta, Source};
use crate::wait::{Completion, Fallback, FallbackReason, Mechanism, WaitReport};

/// How much earlier than the local creation time a reported `created_at` may be trusted.
const ANCHOR_SLACK: Duration = Duration::from_secs(1);

impl<S: Source> Waiter<'_, S> {
    pub(super) fn count(&mut self, attempts: u32) {
        if attempts > 0 {
            self.requests += 1;
            self.retries += attempts - 1;
        }
    }

    pub(super) fn fall_back(&mut self, from: Mechanism, reason: FallbackReason) {
        let fallback = Fallback { from, reason };
        if !self.fallbacks.contains(&fallback) {
            tracing::info!(
                from = from.as_str(),
                reason = reason.as_str(),
                "falling back"
            );
            telemetry::fallback(from, reason.as_str());
            self.fallbacks.push(fallback);
        }
    }

    pub(super) fn age_at(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin.unwrap_or(self.start))
    }

    pub(super) fn observe(&mut self, status: &JobStatus, received: Instant, meta: &Meta) {
        if let Some(created) = status.created_at {
            // Server clock against ours: a skewed clock reads as a brand-new job.
            // (Read the two clocks together: a busy runtime may resume this task well after
            // the answer was received.)
            let (now, age) = (Instant::now(), clock::since(created).unwrap_or_default());
            let reported = now.checked_sub(age).unwrap_or(received);
            match (self.origin, self.plan.created) {
                _ if age >= Duration::from_secs(7 * 24 * 3600) => {}
                (None, _) => {
                    self.origin = Some(reported);
                    self.origin_known = true;
                }
                // A local creation time is when the creation was *answered*: a reported one
                // up to a second earlier is the truer origin (ages feed `a / p`, where being
                // young by the creation's round trip would make a steady job look finished
                // early); one later, or much earlier, is a skewed clock. Taken once, so that
                // readings already made keep their ages.
                (Some(origin), Some(local))
                    if origin == local
                        && reported < local
                        && local.duration_since(reported) < ANCHOR_SLACK =>
                {
                    self.origin = Some(reported);
                }
                _ => {}
            }
        }
        if let Some(p) = status.progress.filter(|_| !status.is_terminal()) {
            let reading = ProgressReading::new(p, self.age_at(received));
            self.progress = Some(match self.progress {
                Some(before) => before.then(reading),
                None => reading,
            });
        }
        self.keep_tag(meta);
        if let Some(eta) = status.eta().filter(|e| !e.is_zero()) {
            self.eta = Some(Estimate::new(self.age_at(received), eta));
        }
        if !status.is_terminal() {
            self.absorb_hints(meta, received);
        }
        if self.filter.accept(status) {
            (self.observer)(status);
        }
        self.last = Some(status.clone());
    }

    pub(super) fn absorb_hints(&mut self, meta: &Meta, received: Instant) {
        self.keep_tag(meta);
        if let Some(hint) = meta.retry_after {
            self.retry_after = Some(Estimate::new(self.age_at(received), hint));
        }
    }

    /// Remembers the entity tag for conditional reads, unless the job reports progress and its
    /// age is known: a `304` has no body, and the progress in the body is what places the end
    /// of the job (see `poll::ProgressReading`). Reading it costs bytes, not requests.
    fn keep_tag(&mut self, meta: &Meta) {
        if self.origin_known && self.progress.is_some() {
            self.etag = None;
        } else if let Some(tag) = &meta.etag {
            self.etag = Some(tag.clone());
        }
    }

    pub(super) fn state(&self) -> PollState {
        let now = Instant::now();
        let mut state = PollState::new()
            .with_polls(self.requests)
            .with_elapsed(now.duration_since(self.start))
            .with_age(self.age_at(now))
            .with_random((self.plan.random)());
        state.eta = self.eta;
        state.retry_after = self.retry_after;
        state.progress = self.progress.map(|reading| reading.value);
        // Age ÷ progress predicts the end only from the job's true age.
        state.progress_reading = self.progress.filter(|_| self.origin_known);
        state.learned = self.plan.learned.as_ref().map(LearnedDurations::model);
        state
    }

    pub(super) fn report(&self, detection_delay: Option<Duration>) -> WaitReport {
        WaitReport {
            mechanism: self.mechanism(),
            requests: self.requests,
            retries: self.retries,
            hedges: self.hedges,
            elapsed: self.start.elapsed(),
            detection_delay,
            fallbacks: self.fallbacks.clone(),
        }
    }

    pub(super) fn mechanism(&self) -> Mechanism {
        self.current
    }

    pub(super) fn record_span(
        &self,
        outcome: &'static str,
        mechanism: Mechanism,
        report: &WaitReport,
    ) {
        let span = tracing::Span::current();
        span.record("mechanism", mechanism.as_str());
        span.record("requests", report.requests);
        span.record("retries", report.retries);
        span.record("hedges", report.hedges);
        span.record("outcome", outcome);
        tracing::info!(
            outcome,
            mechanism = mechanism.as_str(),
            requests = report.requests,
            retries = report.retries,
            hedges = report.hedges,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "wait finished"
        );
        telemetry::wait_finished(
            outcome,
            mechanism,
            report.requests,
            report.elapsed,
            report.detection_delay,
        );
    }

    pub(super) fn finish(
        &mut self,
        status: JobStatus,
        mechanism: Mechanism,
        received: Instant,
        prompt: bool,
    ) -> Result<Completion, Error> {
        self.observe(&status, received, &Meta::default());
        self.record_sample(&status, received, prompt);
        let detection_delay = status
            .completed_at
            .map(|completed| clock::since(completed).unwrap_or_default());
        let mut report = self.report(detection_delay);
        report.mechanism = mechanism;
        match &status.state {
            JobState::Failed(failure) => {
                self.record_span("failed", mechanism, &report);
                Err(Error::JobFailed(Box::new(JobFailed {
                    job: self.plan.job.clone(),
                    code: failure.code.clone(),
                    message: failure.message.clone(),
                    status,
                    report,
                })))
            }
            _ => {
                self.record_span("completed", mechanism, &report);
                Ok(Completion { status, report })
            }
        }
    }

    pub(super) fn give_up(&mut self, reason: GiveUpReason) -> Result<Completion, Error> {
        if let (Some(learned), Some(pending)) = (&self.plan.learned, self.last_pending) {
            learned.record(Sample::at_least(self.age_at(pending)));
        }
        let report = self.report(None);
        if reason == GiveUpReason::Deadline
            && let Some(down) = self.down.take()
        {
            self.record_span("unavailable", report.mechanism, &report);
            let retry_after = down
                .resume_at
                .map(|at| at.saturating_duration_since(Instant::now()))
                .filter(|left| !left.is_zero());
            return Err(Error::Unavailable(Box::new(Unavailable {
                host: down.host,
                retry_after,
                job: Some(self.plan.job.clone()),
                last_status: self.last.clone(),
                report: Some(report),
                source: down.cause.map(|e| Box::new(e) as BoxError),
            })));
        }
        self.record_span("gave_up", report.mechanism, &report);
        Err(Error::GaveUp(Box::new(GaveUp {
            job: self.plan.job.clone(),
            reason,
            last_status: self.last.clone(),
            report,
        })))
    }

    /// The service (`host`) failed or was refused at this look.
    pub(super) fn note_down(&mut self, error: Error, host: String, resume_at: Option<Instant>) {
        // A refusal of the breaker sent nothing: the failure before it is still the cause.
        let cause = match error {
            Error::Unavailable(_) => self.down.take().and_then(|d| d.cause),
            other => Some(other),
        };
        self.down = Some(Down {
            host,
            resume_at,
            cause,
        });
    }

    pub(super) fn fail(&mut self, error: Error) -> Result<Completion, Error> {
        let report = self.report(None);
        self.record_span("error", report.mechanism, &report);
        Err(error)
    }

    /// Teaches the learned schedule how long this job took (see `poll::learned`).
    pub(super) fn record_sample(&self, status: &JobStatus, received: Instant, prompt: bool) {
        let Some(learned) = &self.plan.learned else {
            return;
        };
        // Steady progress read while pending bounds the end from below far more tightly than
        // the last pending poll does (see `poll::ProgressReading`).
        let progress_floor = self
            .progress
            .filter(|_| self.origin_known)
            .and_then(|reading| reading.steady_window())
            .map(|(start, _)| start);
        let observed = Observed {
            exact: status.duration(),
            last_pending: self.last_pending.map(|at| self.age_at(at)),
            origin_known: self.origin_known,
            terminal: self.age_at(received),
            prompt,
            progress_floor,
        };
        if let Some((lo, hi)) = observed.bracket() {
            learned.record(Sample::between(lo, hi));
        }
    }
}
