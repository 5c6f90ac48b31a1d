//! What the ledger takes from an answer: counts, the job's age, its progress, the server's
//! hints, the entity tag, what the route supports, whether the service is down.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Clocks, Down, Fact, Ledger, Step};
use crate::error::Error;
use crate::model::JobStatus;
use crate::poll::{DurationModel, Estimate, PollState, ProgressReading};
use crate::telemetry;
use crate::transport::answer::Meta;
use crate::wait::{Fallback, FallbackReason, Mechanism};

/// How much earlier than the local creation time a reported `created_at` may be trusted.
const ANCHOR_SLACK: Duration = Duration::from_secs(1);
/// A reported creation this long ago is a skewed clock, not a job's age.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

impl Ledger {
    /// What a request cost on the wire: attempts after the first are retries; none at all
    /// (the circuit breaker refused it) takes back the request counted when it was sent.
    pub(super) fn settle(&mut self, attempts: u32, hedges: u32) {
        if attempts == 0 {
            self.requests = self.requests.saturating_sub(1);
        } else {
            self.retries = self.retries.saturating_add(attempts - 1);
        }
        self.hedges = self.hedges.saturating_add(hedges);
    }

    pub(super) fn fall_back(&mut self, job: &str, from: Mechanism, reason: FallbackReason) {
        let fallback = Fallback { from, reason };
        if !self.fallbacks.contains(&fallback) {
            tracing::info!(
                job,
                from = from.as_str(),
                reason = reason.as_str(),
                "falling back"
            );
            telemetry::fallback(from, reason.as_str());
            self.fallbacks.push(fallback);
        }
    }

    /// The status URL answered: an events URL that answered "not here" means no streams.
    pub(super) fn status_works(&mut self, step: &mut Step) {
        if std::mem::take(&mut self.stream.suspect) {
            step.learned(Fact::SseMissing);
        }
    }

    /// A read asked to be held came back, held (`Preference-Applied`) or not.
    pub(super) fn note_long_poll(&mut self, job: &str, held: bool, step: &mut Step) {
        if held {
            step.learned(Fact::LongPollApplied);
        } else {
            step.learned(Fact::LongPollIgnored);
            self.fall_back(job, Mechanism::LongPoll, FallbackReason::NotApplied);
        }
    }

    /// The service (`host`) failed or was refused at this look.
    pub(super) fn note_down(&mut self, error: Error, host: String, resume_at: Option<Instant>) {
        // A refusal of the breaker sent nothing: the failure before it is still the cause.
        let cause = match error {
            Error::Unavailable(_) => self.down.take().and_then(|d| d.cause),
            other => Some(other),
        };
        self.down = Some(Box::new(Down {
            host,
            resume_at,
            cause,
        }));
    }

    pub(super) fn age_at(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin.unwrap_or(self.start))
    }

    /// A reading of the job (pending or terminal), received at `at`.
    pub(super) fn observe(&mut self, status: &JobStatus, at: Clocks, meta: &Meta) {
        if let Some(created) = status.created_at {
            // Server clock against ours: a skewed clock reads as a brand-new job.
            let age = at.since(created).unwrap_or_default();
            let reported = at.now.checked_sub(age).unwrap_or(at.now);
            match (self.origin, self.created) {
                _ if age >= MAX_AGE => {}
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
            let reading = ProgressReading::new(p, self.age_at(at.now));
            self.progress = Some(match self.progress {
                Some(before) => before.then(reading),
                None => reading,
            });
        }
        self.keep_tag(meta);
        if let Some(eta) = status.eta().filter(|e| !e.is_zero()) {
            self.eta = Some(Estimate::new(self.age_at(at.now), eta));
        }
        if !status.is_terminal() {
            self.absorb_hints(meta, at.now);
        }
        self.last = Some(status.clone());
    }

    pub(super) fn absorb_hints(&mut self, meta: &Meta, received: Instant) {
        self.keep_tag(meta);
        self.pause = meta.pause;
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

    /// What the poll policy is told at `now`.
    pub(crate) fn poll_state(
        &self,
        now: Instant,
        learned: Option<Arc<DurationModel>>,
        random: f64,
    ) -> PollState {
        let mut state = PollState::new()
            .with_polls(self.requests)
            .with_elapsed(now.saturating_duration_since(self.start))
            .with_age(self.age_at(now))
            .with_random(random);
        state.eta = self.eta;
        state.retry_after = self.retry_after;
        state.progress = self
            .progress
            .map(|reading| reading.value)
            .or_else(|| self.last.as_ref().and_then(|s| s.progress));
        // Age ÷ progress predicts the end only from the job's true age.
        state.progress_reading = self.progress.filter(|_| self.origin_known);
        state.learned = learned;
        state
    }
}

/// A held answer that came back early (a server restart, a cap) is not a reason to read
/// again at once: it must have held at least half of what was asked and applied.
pub(super) fn held_long_enough(
    meta: &Meta,
    hold: Option<Duration>,
    sent: Instant,
    received: Instant,
) -> bool {
    let asked = hold.unwrap_or_default();
    let applied = meta.applied_hold.unwrap_or(asked).min(asked);
    received.saturating_duration_since(sent) >= applied / 2
}
