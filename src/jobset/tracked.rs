//! One tracked job: what has been seen of it, what its policy is told, how its wait ends.
//!
//! This is the job set's counterpart of the single wait's ledger (`wait::run`): the same
//! observations, the same learning, the same reports and errors — kept as plain data, so that
//! one scheduler can hold thousands of them and save them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::AbortHandle;
use tokio::time::Instant;

use super::JobKey;
use super::stall::StallTracker;
use super::state::History;
use crate::clock;
use crate::error::{Error, GaveUp, JobFailed, Stalled};
use crate::job::Endpoints;
use crate::model::{JobState, JobStatus};
use crate::poll::learned::Evidence;
use crate::poll::{
    Basis, DurationModel, Estimate, GiveUpReason, LearnedDurations, PollState, Sample,
};
use crate::telemetry;
use crate::wait::{Completion, Fallback, FallbackReason, Mechanism, WaitReport};

/// Where a job is in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for its next poll.
    Sleeping { until: Instant },
    /// Due: in the ready queue, waiting for a token or a free slot.
    Ready,
    /// A plain read is in flight.
    Polling,
    /// A long-poll is held by the server.
    Holding,
    /// An event stream is open (or being opened).
    Streaming { last_event: Instant },
    /// The last look is over: nothing more is sent, and the wait gives up at its deadline.
    Expiring,
}

/// What is remembered of a job's event stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Streams {
    /// Given up on for this job.
    pub(crate) refused: bool,
    /// Streams that ended before the job did.
    pub(crate) breaks: u8,
    /// The last event id, to resume.
    pub(crate) last_id: Option<Box<str>>,
    /// The events URL answered 404: the route lacks streams, once its status URL works.
    pub(crate) suspect: bool,
}

#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) key: JobKey,
    pub(crate) endpoints: Endpoints,
    /// When the wait began (both clocks: the wall one survives a restart).
    pub(crate) added: Instant,
    pub(crate) added_wall: SystemTime,
    pub(crate) deadline: Option<Instant>,
    pub(crate) deadline_wall: Option<SystemTime>,
    /// The job's creation, as well as it is known.
    pub(crate) origin: Option<Instant>,
    pub(crate) origin_known: bool,
    pub(crate) requests: u32,
    pub(crate) retries: u32,
    pub(crate) hedges: u32,
    pub(crate) last: Option<JobStatus>,
    eta: Option<Estimate>,
    retry_after: Option<Estimate>,
    progress: Option<f64>,
    /// When the last request that saw the job pending was sent.
    last_pending: Option<Instant>,
    pub(crate) basis: Basis,
    pub(crate) current: Mechanism,
    fallbacks: Vec<Fallback>,
    pub(crate) malformed: u32,
    pub(crate) stall: StallTracker,
    pub(crate) streams: Streams,
    // Scheduling.
    pub(crate) phase: Phase,
    /// Bumped whenever an operation is started or abandoned: answers of older ones are stale.
    pub(crate) generation: u32,
    /// This job's entry in the timer queue.
    pub(crate) armed: Option<Instant>,
    /// Aborts the operation in flight.
    pub(crate) abort: Option<AbortHandle>,
}

impl Tracked {
    pub(crate) fn new(key: JobKey, endpoints: Endpoints, deadline: Option<Duration>) -> Self {
        let (now, wall) = (Instant::now(), clock::now());
        Tracked {
            key,
            endpoints,
            added: now,
            added_wall: wall,
            deadline: deadline.and_then(|d| now.checked_add(d)),
            deadline_wall: deadline.and_then(|d| wall.checked_add(d)),
            origin: None,
            origin_known: false,
            requests: 0,
            retries: 0,
            hedges: 0,
            last: None,
            eta: None,
            retry_after: None,
            progress: None,
            last_pending: None,
            basis: Basis::Initial,
            current: Mechanism::Polling(Basis::Initial),
            fallbacks: Vec::new(),
            malformed: 0,
            stall: StallTracker::new(now),
            streams: Streams::default(),
            phase: Phase::Ready,
            generation: 0,
            armed: None,
            abort: None,
        }
    }

    /// Counts a request (or stream) as it is sent: an answer still in flight when the wait is
    /// saved has been spent all the same.
    pub(crate) fn sent(&mut self) {
        self.requests = self.requests.saturating_add(1);
    }

    /// Counts the extra attempts a request took (transport retries, throttle pauses), and the
    /// hedges sent for it.
    pub(crate) fn attempts(&mut self, attempts: u32, hedges: u32) {
        self.retries = self.retries.saturating_add(attempts.saturating_sub(1));
        self.hedges = self.hedges.saturating_add(hedges);
    }

    pub(crate) fn fall_back(&mut self, from: Mechanism, reason: FallbackReason) {
        let fallback = Fallback { from, reason };
        if !self.fallbacks.contains(&fallback) {
            tracing::debug!(job = %self.endpoints.label, from = from.as_str(), reason = reason.as_str(), "falling back");
            telemetry::fallback(from, reason.as_str());
            self.fallbacks.push(fallback);
        }
    }

    fn age_at(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin.unwrap_or(self.added))
    }

    /// A reading of the job (pending or terminal) received at `received`.
    pub(crate) fn observe(
        &mut self,
        status: &JobStatus,
        received: Instant,
        retry_after: Option<Duration>,
    ) {
        if self.origin.is_none()
            && let Some(created) = status.created_at
        {
            // Server clock against ours: a skewed clock reads as a brand-new job.
            let age = clock::since(created).unwrap_or_default();
            if age < Duration::from_secs(7 * 24 * 3600) {
                self.origin = Some(received.checked_sub(age).unwrap_or(received));
                self.origin_known = true;
            }
        }
        if let Some(p) = status.progress {
            self.progress = Some(p);
        }
        if let Some(eta) = status.eta().filter(|e| !e.is_zero()) {
            self.eta = Some(Estimate::new(self.age_at(received), eta));
        }
        if !status.is_terminal() {
            self.hint(retry_after, received);
        }
        self.last = Some(status.clone());
    }

    pub(crate) fn hint(&mut self, retry_after: Option<Duration>, received: Instant) {
        if let Some(hint) = retry_after {
            self.retry_after = Some(Estimate::new(self.age_at(received), hint));
        }
    }

    /// The job was pending at a request sent at `sent`.
    pub(crate) fn pending_at(&mut self, sent: Instant) {
        self.last_pending = Some(sent);
    }

    /// What the poll policy is told.
    pub(crate) fn poll_state(
        &self,
        now: Instant,
        model: Option<Arc<DurationModel>>,
        random: f64,
    ) -> PollState {
        let mut state = PollState::new()
            .with_polls(self.requests)
            .with_elapsed(now.saturating_duration_since(self.added))
            .with_age(self.age_at(now))
            .with_random(random);
        state.eta = self.eta;
        state.retry_after = self.retry_after;
        state.progress = self.progress;
        state.learned = model;
        state
    }

    pub(crate) fn report(&self, detection_delay: Option<Duration>) -> WaitReport {
        WaitReport {
            mechanism: self.current,
            requests: self.requests,
            retries: self.retries,
            hedges: self.hedges,
            elapsed: self.added.elapsed(),
            detection_delay,
            fallbacks: self.fallbacks.clone(),
        }
    }

    /// The job is terminal: the completion, or the job's failure.
    pub(crate) fn finish(
        &mut self,
        status: JobStatus,
        mechanism: Mechanism,
        received: Instant,
        prompt: bool,
        learned: &LearnedDurations,
        history: &mut History,
    ) -> Result<Completion, Error> {
        self.observe(&status, received, None);
        self.record_sample(&status, received, prompt, learned, history);
        self.current = mechanism;
        let detection_delay = status
            .completed_at
            .map(|completed| clock::since(completed).unwrap_or_default());
        let report = self.report(detection_delay);
        match &status.state {
            JobState::Failed(failure) => {
                self.record("failed", &report);
                Err(Error::JobFailed(Box::new(JobFailed {
                    job: self.endpoints.label.clone(),
                    code: failure.code.clone(),
                    message: failure.message.clone(),
                    status,
                    report,
                })))
            }
            _ => {
                self.record("completed", &report);
                Ok(Completion { status, report })
            }
        }
    }

    /// The wait stops before the job ended.
    pub(crate) fn give_up(
        &mut self,
        reason: GiveUpReason,
        learned: &LearnedDurations,
        history: &mut History,
    ) -> Error {
        if let Some(pending) = self.last_pending {
            let lo = self.age_at(pending);
            learned.record(Sample::at_least(lo));
            history.push(lo, None);
        }
        let report = self.report(None);
        self.record("gave_up", &report);
        Error::GaveUp(Box::new(GaveUp {
            job: self.endpoints.label.clone(),
            reason,
            last_status: self.last.clone(),
            report,
        }))
    }

    /// The wait stops on a stall.
    pub(crate) fn stalled(&mut self, unchanged_for: Duration, bound: Duration) -> Error {
        let report = self.report(None);
        self.record("stalled", &report);
        Error::Stalled(Box::new(Stalled {
            job: self.endpoints.label.clone(),
            unchanged_for,
            bound,
            last_status: self.last.clone(),
            report,
        }))
    }

    /// The wait stops on an error.
    pub(crate) fn fail(&mut self, error: Error) -> Error {
        let report = self.report(None);
        self.record("error", &report);
        error
    }

    fn record(&self, outcome: &'static str, report: &WaitReport) {
        tracing::debug!(
            job = %self.endpoints.label,
            outcome,
            mechanism = report.mechanism.as_str(),
            requests = report.requests,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "wait finished"
        );
        telemetry::wait_finished(
            outcome,
            report.mechanism,
            report.requests,
            report.elapsed,
            report.detection_delay,
        );
    }

    /// Teaches the client how long this job took (see `poll::learned`).
    fn record_sample(
        &self,
        status: &JobStatus,
        received: Instant,
        prompt: bool,
        learned: &LearnedDurations,
        history: &mut History,
    ) {
        let observed = Evidence {
            exact: status.duration(),
            last_pending: self.last_pending.map(|at| self.age_at(at)),
            origin_known: self.origin_known,
            terminal: self.age_at(received),
            prompt,
            progress_floor: None,
        };
        if let Some((lo, hi)) = observed.bracket() {
            learned.record(Sample::between(lo, hi));
            history.push(lo, Some(hi));
        }
    }

    /// Restores what a saved state remembers of the wait.
    pub(crate) fn restore_progress(
        &mut self,
        requests: u32,
        retries: u32,
        hedges: u32,
        last: Option<JobStatus>,
    ) {
        self.requests = requests;
        self.retries = retries;
        self.hedges = hedges;
        if let Some(status) = &last {
            self.progress = status.progress;
        }
        self.last = last;
    }
}
