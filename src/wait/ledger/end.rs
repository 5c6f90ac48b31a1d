//! How a wait ends: its result, its report, and what it teaches the learned durations.

use std::time::Duration;

use tokio::time::Instant;

use super::{Clocks, Ledger};
use crate::error::{BoxError, Error, GaveUp, JobCanceled, JobFailed, Unavailable};
use crate::model::{JobState, JobStatus};
use crate::poll::learned::Evidence;
use crate::poll::{GiveUpReason, LearnedDurations, Sample};
use crate::telemetry;
use crate::transport::answer::Meta;
use crate::wait::{Completion, Mechanism, WaitReport};

/// A finished wait.
#[derive(Debug)]
pub(crate) struct Ending {
    /// What the caller gets.
    pub(crate) result: Result<Completion, Error>,
    /// How it ended, as a metric label: `completed`, `failed`, `canceled`, `gave_up`,
    /// `unavailable`, `unknown_state`, `error`, `stalled`.
    pub(crate) outcome: &'static str,
    /// How the wait went (also when the error carries no report).
    pub(crate) report: WaitReport,
    /// What the wait teaches the learned durations, if anything.
    pub(crate) lesson: Option<Sample>,
}

impl Ending {
    /// Records the ending where both drivers do: the lesson in the learned durations, the
    /// wait in the metrics.
    pub(crate) fn record(&self, learned: Option<&LearnedDurations>) {
        if let (Some(learned), Some(lesson)) = (learned, self.lesson) {
            learned.record(lesson);
        }
        let report = &self.report;
        telemetry::wait_finished(
            self.outcome,
            report.mechanism,
            report.requests,
            report.elapsed,
            report.detection_delay,
        );
    }
}

impl Ledger {
    /// How the wait went, as of `now`.
    pub(crate) fn report(&self, now: Instant, detection_delay: Option<Duration>) -> WaitReport {
        WaitReport {
            mechanism: self.current,
            requests: self.requests,
            retries: self.retries,
            hedges: self.hedges,
            policy_pauses: self.policy_pauses,
            elapsed: now.saturating_duration_since(self.start),
            detection_delay,
            fallbacks: self.fallbacks.clone(),
        }
    }

    /// An ending of the driver's own (a job set's stall), with this wait's report.
    pub(crate) fn ending(
        &self,
        result: Result<Completion, Error>,
        outcome: &'static str,
        now: Instant,
    ) -> Ending {
        Ending {
            result,
            outcome,
            report: self.report(now, None),
            lesson: None,
        }
    }

    /// The job is terminal (`prompt`: pushed by a stream or a held read, so it ended moments
    /// before): the completion, or the job's failure or cancellation.
    pub(super) fn finish(
        &mut self,
        job: &str,
        status: JobStatus,
        mechanism: Mechanism,
        at: Clocks,
        prompt: bool,
    ) -> Ending {
        self.observe(&status, at, &Meta::default());
        self.current = mechanism;
        let lesson = self.lesson(&status, at.now, prompt);
        let detection_delay = status
            .completed_at
            .map(|completed| at.since(completed).unwrap_or_default());
        let report = self.report(at.now, detection_delay);
        let (result, outcome) = match &status.state {
            JobState::Failed(failure) => (
                Err(Error::JobFailed(Box::new(JobFailed {
                    job: job.to_owned(),
                    status_url: String::new(),
                    code: failure.code.clone(),
                    message: failure.message.clone(),
                    status,
                    report: report.clone(),
                }))),
                "failed",
            ),
            JobState::Canceled => (
                Err(Error::JobCanceled(Box::new(JobCanceled {
                    job: job.to_owned(),
                    status_url: String::new(),
                    status,
                    report: report.clone(),
                }))),
                "canceled",
            ),
            _ => (
                Ok(Completion {
                    status,
                    report: report.clone(),
                }),
                "completed",
            ),
        };
        Ending {
            result,
            outcome,
            report,
            lesson,
        }
    }

    /// The wait stops before the job ended: it gave up, or — at the deadline, while the
    /// service was failing — the service was unavailable.
    pub(crate) fn give_up(&mut self, job: &str, reason: GiveUpReason, now: Instant) -> Ending {
        let lesson = self
            .last_pending
            .map(|pending| Sample::at_least(self.age_at(pending)));
        let report = self.report(now, None);
        if reason == GiveUpReason::Deadline
            && let Some(down) = self.down.take()
        {
            let retry_after = down
                .resume_at
                .map(|at| at.saturating_duration_since(now))
                .filter(|left| !left.is_zero());
            return Ending {
                result: Err(Error::Unavailable(Box::new(Unavailable {
                    host: down.host,
                    retry_after,
                    job: Some(job.to_owned()),
                    status_url: None,
                    last_status: self.last.clone(),
                    report: Some(report.clone()),
                    source: down.cause.map(|e| Box::new(e) as BoxError),
                }))),
                outcome: "unavailable",
                report,
                lesson,
            };
        }
        Ending {
            result: Err(Error::GaveUp(Box::new(GaveUp {
                job: job.to_owned(),
                status_url: String::new(),
                reason,
                last_status: self.last.clone(),
                report: report.clone(),
                remote_cancel: None,
            }))),
            outcome: "gave_up",
            report,
            lesson,
        }
    }

    /// The wait stops on an error.
    pub(super) fn fail(&self, error: Error, now: Instant) -> Ending {
        self.ending(Err(error), "error", now)
    }

    /// What this wait teaches about the job's duration (see `poll::learned`): the bracket its
    /// answers put the end in.
    fn lesson(&self, status: &JobStatus, received: Instant, prompt: bool) -> Option<Sample> {
        // Steady progress read while pending bounds the end from below far more tightly than
        // the last pending poll does (see `poll::ProgressReading`).
        let progress_floor = self
            .progress
            .filter(|_| self.origin_known)
            .and_then(|reading| reading.steady_window())
            .map(|(start, _)| start);
        let evidence = Evidence {
            exact: status.duration(),
            last_pending: self.last_pending.map(|at| self.age_at(at)),
            origin_known: self.origin_known,
            terminal: self.age_at(received),
            prompt,
            progress_floor,
        };
        evidence.bracket().map(|(lo, hi)| Sample::between(lo, hi))
    }
}
