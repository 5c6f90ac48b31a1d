//! The step: an answer in, a decision out.

use std::time::Duration;

use tokio::time::Instant;

use super::observe::held_long_enough;
use super::{
    Answer, Break, Clocks, Decision, Ending, Fact, Ledger, Look, MAX_MALFORMED, MAX_RECONNECT,
    MAX_STREAM_BREAKS, NEVER, Opened, Parts, Pause, STEP, Step, THROTTLE_PAUSE,
};
use crate::error::{Error, UnknownState};
use crate::model::{JobState, JobStatus};
use crate::poll::{Basis, GiveUpReason, MIN_PAUSE, PollDecision};
use crate::transport::answer::{Meta, ReadOutcome};
use crate::transport::sse::SseEvent;
use crate::wait::source::Reading;
use crate::wait::{FallbackReason, Mechanism};

impl Ledger {
    /// Takes in what came back at `at`, and decides what to do next.
    pub(crate) fn step(&mut self, answer: Answer, at: Clocks, parts: &Parts<'_>) -> Step {
        match answer {
            Answer::Read {
                look,
                sent,
                reading,
            } => self.read(look, sent, reading, at, parts),
            Answer::Subscribed(opened) => self.subscribed(opened, at, parts),
            Answer::Event(event) => self.event(event, at, parts),
            Answer::Broke(broke) => self.broke(broke, at.now, parts),
            Answer::Delivered(status) => self.delivered(status, at, parts),
            Answer::Deadline => finished(self.give_up(parts.job, GiveUpReason::Deadline, at.now)),
        }
    }

    fn read(
        &mut self,
        look: Look,
        sent: Instant,
        reading: Reading,
        at: Clocks,
        parts: &Parts<'_>,
    ) -> Step {
        let now = at.now;
        let Reading {
            outcome,
            attempts,
            hedges,
            ..
        } = reading;
        self.settle(attempts, hedges);
        let hold = look.hold();
        if hold.is_none() && attempts > 0 {
            self.round_trip = Some(now.saturating_duration_since(sent));
        }
        if !matches!(outcome, ReadOutcome::Unavailable { .. }) {
            self.answered = true;
            self.down = None;
        }
        let mut step = Step::new(Decision::Listen);
        let mut forced: Option<(Duration, Pause)> = None;
        let mut trusted_hold = false;
        match outcome {
            ReadOutcome::Status { status, meta } | ReadOutcome::Unknown { status, meta } => {
                self.malformed = 0;
                self.status_works(&mut step);
                let held = hold.is_some() && meta.applied_hold.is_some();
                let mechanism = self.polled(held);
                step.seen = true;
                if status.is_terminal() {
                    let ending = self.finish(parts.job, status, mechanism, at, held);
                    step.decision = Decision::Finish(Box::new(ending));
                    return step;
                }
                if let Some(ending) = self.count_unknown(&status, at.now, parts) {
                    step.decision = Decision::Finish(Box::new(ending));
                    return step;
                }
                if hold.is_some() {
                    self.note_long_poll(parts.job, held, &mut step);
                }
                trusted_hold = held && held_long_enough(&meta, hold, sent, now);
                self.current = mechanism;
                self.observe(&status, at, &meta);
                self.last_pending = Some(sent);
            }
            ReadOutcome::NotModified { meta } => {
                self.malformed = 0;
                // Unchanged is the same word again: an unknown one is counted again, or a
                // server with entity tags would be polled for ever.
                if let Some(last) = self.last.clone()
                    && let Some(ending) = self.count_unknown(&last, now, parts)
                {
                    step.decision = Decision::Finish(Box::new(ending));
                    return step;
                }
                let held = hold.is_some() && meta.applied_hold.is_some();
                if hold.is_some() {
                    self.note_long_poll(parts.job, held, &mut step);
                }
                trusted_hold = held && held_long_enough(&meta, hold, sent, now);
                self.current = self.polled(held);
                self.absorb_hints(&meta, now);
                self.last_pending = Some(sent);
                step.seen = true;
            }
            ReadOutcome::Throttled { retry_after, error } => {
                tracing::debug!(job = parts.job, error = %error, "throttled");
                let pause = retry_after.unwrap_or(THROTTLE_PAUSE);
                forced = Some((pause, Pause::Throttled));
            }
            ReadOutcome::Malformed(error) => {
                self.malformed = self.malformed.saturating_add(1);
                if self.malformed > MAX_MALFORMED {
                    step.decision = Decision::Finish(Box::new(self.fail(error, now)));
                    return step;
                }
                tracing::debug!(job = parts.job, error = %error, "unreadable answer; reading again");
                forced = Some((STEP * u32::from(self.malformed), Pause::Malformed));
            }
            ReadOutcome::Unavailable {
                error,
                host,
                resume_at,
                answered,
            } => {
                // Nothing has ever answered: a wrong URL or a dead host, not an outage.
                if !(self.answered || answered) {
                    step.decision = Decision::Finish(Box::new(self.fail(error, now)));
                    return step;
                }
                tracing::debug!(job = parts.job, error = %error, "service unavailable; the wait goes on");
                if let Some(resume) = resume_at {
                    forced = Some((resume.saturating_duration_since(now), Pause::Unavailable));
                }
                self.note_down(error, host, resume_at);
            }
            ReadOutcome::Failed(error) => {
                step.decision = Decision::Finish(Box::new(self.fail(error, now)));
                return step;
            }
        }
        step.decision = if look == Look::Final {
            // Nothing more can be learned in time: the wait ends on its deadline, not before.
            self.expire(parts.job, now)
        } else {
            self.schedule(forced, trusted_hold, sent, now, parts)
        };
        step
    }

    /// A reading of the job: an unknown state word is counted (any other resets the count),
    /// and ends the wait once the profile's limit of them in a row is reached.
    fn count_unknown(
        &mut self,
        status: &JobStatus,
        now: Instant,
        parts: &Parts<'_>,
    ) -> Option<Ending> {
        let JobState::Unknown(word) = &status.state else {
            self.unknown = 0;
            return None;
        };
        self.unknown = self.unknown.saturating_add(1);
        let limit = parts.profile.unknown_limit();
        if self.unknown < limit {
            tracing::debug!(
                job = parts.job,
                word = %word,
                in_a_row = self.unknown,
                limit,
                "a state word the profile does not know; reading again"
            );
            return None;
        }
        self.last = Some(status.clone());
        let error = Error::UnknownState(Box::new(UnknownState {
            job: parts.job.to_owned(),
            status_url: String::new(),
            word: word.clone(),
            in_a_row: self.unknown,
            profile: parts.profile.name().to_owned(),
            last_status: status.clone(),
            report: self.report(now, None),
        }));
        Some(self.ending(Err(error), "unknown_state", now))
    }

    /// The mechanism of a read that came back (held or not).
    fn polled(&self, held: bool) -> Mechanism {
        if held {
            Mechanism::LongPoll
        } else {
            Mechanism::Polling(self.basis)
        }
    }

    /// When to look again after a pending answer: when the policy says, unless something
    /// forces another pause, or a read the server held goes out again at once. Whatever asked
    /// for the pause, it is at least the floor (`poll::MIN_PAUSE`), and never past the time
    /// of the last look.
    fn schedule(
        &mut self,
        forced: Option<(Duration, Pause)>,
        trusted_hold: bool,
        sent: Instant,
        now: Instant,
        parts: &Parts<'_>,
    ) -> Decision {
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return self.expire(parts.job, now);
        }
        let model = parts.learned.map(|learned| learned.model());
        let state = self.poll_state(now, model, parts.random);
        let (after, basis) = match parts.policy.next(&state) {
            PollDecision::GiveUp(reason) => {
                return Decision::Finish(Box::new(self.give_up(parts.job, reason, now)));
            }
            PollDecision::Poll { after, basis } => (after, basis),
        };
        self.basis = basis;
        let (after, pause) = match forced {
            Some((after, pause)) => (after.max(MIN_PAUSE), pause),
            // Reissue a held read at once, if the next one can be held too: it took its time
            // already, so the floor counts from when it was sent.
            None if trusted_hold && self.hold_for(now, &parts.offer).is_some() => (
                MIN_PAUSE.saturating_sub(now.saturating_duration_since(sent)),
                Pause::Reissue,
            ),
            // The server asked for a longer pause than the policy's: its hint sets the pace.
            None if self.pause.is_some_and(|pause| pause > after) => {
                self.basis = Basis::Hints;
                let pause = self.pause.unwrap_or(after);
                (pause.max(MIN_PAUSE), Pause::Policy(Basis::Hints))
            }
            None => {
                self.policy_pauses += 1;
                (after.max(MIN_PAUSE), Pause::Policy(basis))
            }
        };
        self.sleep(now, after, pause)
    }

    /// The job's age when it was last seen pending: what this wait, still in flight, knows
    /// about its duration.
    pub(crate) fn pending_age(&self) -> Option<Duration> {
        self.last_pending.map(|at| self.age_at(at))
    }

    /// Plans a sleep on the policy's schedule again, after the learned durations changed:
    /// what the policy decides, with what is known now, for the pending answer it decided on
    /// at `decided_at` (the same state, random number included). `None` when the policy
    /// would stop: the sleep it is in stands, and the next answer decides.
    pub(crate) fn replan(&mut self, decided_at: Instant, parts: &Parts<'_>) -> Option<Decision> {
        let model = parts.learned.map(|learned| learned.model());
        let state = self.poll_state(decided_at, model, parts.random);
        let PollDecision::Poll { after, basis } = parts.policy.next(&state) else {
            return None;
        };
        self.basis = basis;
        let decision = match self.pause {
            Some(pause) if pause > after => {
                self.basis = Basis::Hints;
                self.sleep(
                    decided_at,
                    pause.max(MIN_PAUSE),
                    Pause::Policy(Basis::Hints),
                )
            }
            _ => self.sleep(decided_at, after.max(MIN_PAUSE), Pause::Policy(basis)),
        };
        Some(decision)
    }

    /// Sleep `after` from `now`, clamped to the time of the last look.
    fn sleep(&self, now: Instant, after: Duration, pause: Pause) -> Decision {
        // Further than an instant reaches is as good as never: the deadline comes first, if
        // there is one.
        let wake = now
            .checked_add(after)
            .or_else(|| now.checked_add(NEVER))
            .unwrap_or(now);
        let until = match self.last_look_at() {
            Some(last) => wake.min(last),
            None => wake,
        };
        Decision::Sleep { until, pause }
    }

    /// Nothing more to send: wait for the deadline (or end now, if it has passed).
    fn expire(&mut self, job: &str, now: Instant) -> Decision {
        match self.deadline {
            Some(deadline) if now < deadline => Decision::Expire { at: deadline },
            _ => Decision::Finish(Box::new(self.give_up(job, GiveUpReason::Deadline, now))),
        }
    }

    // ----- Streams ---------------------------------------------------------------------

    fn subscribed(&mut self, opened: Opened, at: Clocks, parts: &Parts<'_>) -> Step {
        let now = at.now;
        match opened {
            Opened::Stream { attempts } => {
                self.settle(attempts, 0);
                self.answered = true;
                self.current = Mechanism::Sse;
                let mut step = Step::new(Decision::Listen);
                step.learned(Fact::SseWorks);
                step
            }
            Opened::Fallback { reason, attempts } => {
                self.settle(attempts, 0);
                if reason == FallbackReason::NotSupported {
                    self.stream.suspect = true;
                }
                Step::new(self.refuse_streams(parts.job, reason, now))
            }
            Opened::Failed { error, attempts } => {
                self.settle(attempts, 0);
                finished(self.fail(error, now))
            }
        }
    }

    /// Streams are given up for this wait: poll at once.
    fn refuse_streams(&mut self, job: &str, reason: FallbackReason, now: Instant) -> Decision {
        self.stream.refused = true;
        self.fall_back(job, Mechanism::Sse, reason);
        Decision::Sleep {
            until: now,
            pause: Pause::Fallback,
        }
    }

    fn event(&mut self, event: SseEvent, at: Clocks, parts: &Parts<'_>) -> Step {
        if let Some(id) = &event.id {
            self.stream.last_id = Some(id.as_str().into());
        }
        if let Some(retry) = event.retry {
            self.stream.reconnect = retry.clamp(MIN_PAUSE, MAX_RECONNECT);
        }
        let status = match event.event.as_str() {
            "status" | "message" => match parts.profile.decode(200, event.data.as_bytes()) {
                Ok(status) => status,
                Err(e) => {
                    tracing::debug!(job = parts.job, error = %e, "unreadable status event");
                    return self.broke(Break::Failed, at.now, parts);
                }
            },
            "progress" => match (parts.profile.progress_of(&event.data), &self.last) {
                (Some(p), Some(last)) if !last.is_terminal() => last.clone().with_progress(p),
                _ => return Step::new(Decision::Listen),
            },
            _ => return Step::new(Decision::Listen),
        };
        let mut step = Step::new(Decision::Listen);
        step.seen = true;
        if status.is_terminal() {
            let ending = self.finish(parts.job, status, Mechanism::Sse, at, true);
            step.decision = Decision::Finish(Box::new(ending));
            return step;
        }
        if let Some(ending) = self.count_unknown(&status, at.now, parts) {
            return finished(ending);
        }
        self.current = Mechanism::Sse;
        self.observe(&status, at, &Meta::default());
        self.last_pending = Some(at.now);
        step
    }

    /// A webhook said where the job is. A terminal status ends the wait at once, whatever
    /// was out (the driver drops it). Any other changes nothing (`Listen`: the driver keeps
    /// the job where it is): deliveries come late, twice and out of order, so a pending one
    /// may be older than what a read already saw.
    fn delivered(&mut self, status: JobStatus, at: Clocks, parts: &Parts<'_>) -> Step {
        if !status.is_terminal() {
            return Step::new(Decision::Listen);
        }
        let mut step = Step::new(Decision::Listen);
        step.seen = true;
        // Not prompt: a delivery may be a retry minutes after the end, or kept until its job
        // was added. The job ended by `at` (exactly when the status says when).
        let ending = self.finish(parts.job, status, Mechanism::Webhook, at, false);
        step.decision = Decision::Finish(Box::new(ending));
        step
    }

    /// The stream stopped before the job ended: reopen it after a pause, or — after a few
    /// breaks, or at once when it broke a size limit — poll instead.
    fn broke(&mut self, broke: Break, now: Instant, parts: &Parts<'_>) -> Step {
        if broke == Break::Oversized {
            tracing::debug!(
                job = parts.job,
                "event stream over its limits; polling instead"
            );
            return Step::new(self.refuse_streams(parts.job, FallbackReason::StreamBroken, now));
        }
        tracing::debug!(job = parts.job, ?broke, "event stream stopped");
        self.stream.breaks = self.stream.breaks.saturating_add(1);
        if self.stream.breaks > MAX_STREAM_BREAKS {
            return Step::new(self.refuse_streams(parts.job, FallbackReason::StreamBroken, now));
        }
        let pause = self.stream.reconnect * u32::from(self.stream.breaks);
        Step::new(self.sleep(now, pause, Pause::Reconnect))
    }
}

fn finished(ending: Ending) -> Step {
    Step::new(Decision::Finish(Box::new(ending)))
}
