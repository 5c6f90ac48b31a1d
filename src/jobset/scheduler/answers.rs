//! What came back: the budget hears the server, the job's ledger decides, the scheduler
//! does what it decided — and watches for stalls.

use futures_util::StreamExt;
use futures_util::future::Aborted;
use futures_util::stream;
use tokio::time::Instant;

use super::{BOUND_REFRESH, Done, Message, Scheduler, StreamItem};
use crate::clock::Clocks;
use crate::error::{Error, Stalled};
use crate::jobset::tracked::{Membership, Stage};
use crate::jobset::{JobEvent, JobKey, Stall};
use crate::telemetry;
use crate::transport::signals::Signals;
use crate::transport::sse;
use crate::wait::Wire;
use crate::wait::ledger::{Answer, Break, Decision, Look, Parts, Pause};
use crate::wait::source::Subscribed;

impl<W: Wire> Scheduler<W> {
    pub(super) fn done(&mut self, done: Done) {
        match done {
            Done::Read {
                key,
                generation,
                look,
                sent,
                result,
            } => {
                match look {
                    Look::Poll => self.polls = self.polls.saturating_sub(1),
                    Look::Hold(_) => self.held = self.held.saturating_sub(1),
                    Look::Final | Look::Subscribe => {}
                }
                let Ok(reading) = result else {
                    return;
                };
                let now = Instant::now();
                if let Some(signals) = reading.signals {
                    self.listen(signals, sent, now);
                }
                self.charge(reading.attempts, reading.hedges);
                if self.current(key, generation) {
                    let answer = Answer::Read {
                        look,
                        sent,
                        reading,
                    };
                    self.take(key, answer, now);
                }
            }
            Done::Subscribed {
                key,
                generation,
                sent,
                result,
            } => self.subscribed(key, generation, sent, result),
            Done::Watch {
                ids,
                creating,
                sent,
                result,
            } => self.watch_answered(ids, creating, sent, result),
            Done::Follow {
                generation,
                resumed,
                fresh,
                sent,
                result,
            } => self.follow_answered(generation, (resumed, fresh), sent, result),
            Done::Batch { jobs, sent, result } => self.batch_answered(jobs, sent, result),
            Done::Canceled {
                key,
                job,
                status_url,
                mut result,
                outcome,
            } => {
                if let Err(Error::GaveUp(gave_up)) = &mut result {
                    gave_up.remote_cancel = Some(outcome);
                }
                self.send(Message::Event(Box::new(JobEvent::finished(
                    key, job, status_url, result,
                ))));
            }
        }
    }

    /// Whether `generation` is the job's current operation (and clears its abort handle:
    /// the operation is over).
    pub(super) fn current(&mut self, key: JobKey, generation: u32) -> bool {
        match self.jobs.get_mut(&key) {
            Some(job) if job.generation == generation => {
                job.abort = None;
                true
            }
            _ => false,
        }
    }

    /// Feeds the budget what an answer said about the rate limit.
    pub(super) fn listen(&mut self, signals: Signals, sent: Instant, now: Instant) {
        let mut budget = self.ctx.budget.lock();
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
            self.ctx.budget.lock().charge(unpaid);
        }
    }

    fn subscribed(
        &mut self,
        key: JobKey,
        generation: u32,
        sent: Instant,
        result: Result<(Subscribed, Option<Signals>), Aborted>,
    ) {
        let Ok((subscribed, signals)) = result else {
            self.held = self.held.saturating_sub(1);
            return;
        };
        let now = Instant::now();
        if let Some(signals) = signals {
            self.listen(signals, sent, now);
        }
        let attempts = match &subscribed {
            Subscribed::Stream { attempts, .. }
            | Subscribed::Fallback { attempts, .. }
            | Subscribed::Failed { attempts, .. } => *attempts,
        };
        // Event streams are never hedged.
        self.charge(attempts, 0);
        if !self.current(key, generation) {
            // The stream, if any, is dropped here.
            self.held = self.held.saturating_sub(1);
            return;
        }
        let (events, opened) = subscribed.split();
        match events {
            Some(events) => {
                // The slot is given back when the stream ends, however it ends: aborted, it
                // still yields its last item.
                let (events, handle) = stream::abortable(events);
                if let Some(job) = self.jobs.get_mut(&key) {
                    job.abort = Some(handle);
                }
                let tagged = events
                    .map(move |event| (key, generation, Some(event)))
                    .chain(stream::once(async move { (key, generation, None) }));
                self.streams.push(tagged.boxed());
            }
            None => self.held = self.held.saturating_sub(1),
        }
        self.take(key, Answer::Subscribed(opened), now);
    }

    pub(super) fn streamed(&mut self, (key, generation, item): StreamItem) {
        let now = Instant::now();
        let Some(item) = item else {
            self.held = self.held.saturating_sub(1);
            if self.current(key, generation) {
                self.take(key, Answer::Broke(Break::Ended), now);
            }
            return;
        };
        let Some(job) = self
            .jobs
            .get_mut(&key)
            .filter(|j| j.generation == generation)
        else {
            return;
        };
        let answer = match item {
            Ok(event) => Answer::Event(event),
            Err(error) => {
                tracing::debug!(job = %job.endpoints.label, error = %error, "event stream failed");
                job.abandon();
                Answer::Broke(if sse::oversized(&error) {
                    Break::Oversized
                } else {
                    Break::Failed
                })
            }
        };
        self.take(key, answer, now);
    }

    /// Hands the job's ledger what came back, and does what it decides.
    pub(super) fn take(&mut self, key: JobKey, answer: Answer, now: Instant) {
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        let offer = self.offer(job);
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let parts = Parts {
            job: &job.endpoints.label,
            profile: &self.ctx.profile,
            policy: self.policy.as_ref(),
            learned: Some(&self.ctx.learned),
            random: rand::random::<f64>(),
            offer,
        };
        let clocks = Clocks {
            now,
            wall: crate::clock::now(),
        };
        let step = job.ledger.step(answer, clocks, &parts);
        for fact in step.facts() {
            self.ctx
                .capabilities
                .learned(&job.endpoints.capability_key, fact);
        }
        let decision = match step.decision {
            Decision::Finish(ending) => return self.finish(key, *ending),
            decision => decision,
        };
        if step.seen && self.stall_evidence(key, now) {
            return;
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        match decision {
            Decision::Listen if matches!(job.member, Membership::Joining | Membership::Member) => {
                // A status from the change stream: the job goes on following it.
                job.stage = Stage::Following;
                self.arm(key);
            }
            Decision::Listen => {
                job.stage = Stage::Streaming { last_event: now };
                self.arm(key);
            }
            Decision::Sleep { until, pause } => {
                if matches!(job.stage, Stage::Streaming { .. }) {
                    // Dropping the stream closes its connection.
                    job.abandon();
                }
                // A look a batched read took early keeps the job's cadence: the next one is
                // as far from when the look was due as the schedule says.
                let ahead = std::mem::take(&mut job.ahead);
                let until = match pause {
                    Pause::Policy(_) => until.checked_add(ahead).unwrap_or(until),
                    _ => until,
                };
                self.sleep_until(key, until, now);
            }
            Decision::Expire { .. } => self.expire(key, now),
            Decision::Finish(_) => {}
        }
    }

    /// The stall bound now (recomputed from learned durations at most once a second).
    pub(super) fn bound(&mut self, now: Instant) -> Option<std::time::Duration> {
        if self
            .bound_at
            .is_none_or(|at| now.saturating_duration_since(at) >= BOUND_REFRESH)
        {
            let model = self.ctx.learned.model();
            self.bound = self.options.stall.bound(&model);
            self.bound_at = Some(now);
        }
        self.bound
    }

    /// A reading of a pending job: reports a stall when it shows one. Returns `true` when
    /// the job's wait ended on it.
    fn stall_evidence(&mut self, key: JobKey, now: Instant) -> bool {
        let bound = self.bound(now);
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        let progress = job.ledger.last().and_then(|status| status.progress);
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
            status_url: job.endpoints.status_label.clone(),
            last_status: job.ledger.last().cloned(),
            unchanged_for,
            bound,
        };
        let stop = self.options.stop_on_stall;
        let ending = stop.then(|| {
            let report = job.ledger.report(now, None);
            let error = Error::Stalled(Box::new(Stalled {
                job: job.endpoints.label.clone(),
                status_url: job.endpoints.status_label.clone(),
                unchanged_for,
                bound,
                last_status: job.ledger.last().cloned(),
                report,
            }));
            job.ledger.ending(Err(error), "stalled", now)
        });
        self.send(Message::Event(Box::new(JobEvent::Stalled(stall))));
        if let Some(ending) = ending {
            self.finish(key, ending);
        }
        stop
    }
}
