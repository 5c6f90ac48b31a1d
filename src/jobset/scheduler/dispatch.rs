//! Whose turn it is: tokens to ready jobs, first come first served, and what each one sends.

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::abortable;
use tokio::time::Instant;

use super::{Done, Scheduler};
use crate::jobset::JobKey;
use crate::jobset::budget::Grant;
use crate::jobset::tracked::{Stage, Tracked};
use crate::wait::Wire;
use crate::wait::ledger::{Answer, Look, Offer};

impl<W: Wire> Scheduler<W> {
    /// Hands tokens to ready jobs, first come first served.
    ///
    /// The order of mechanisms: a job the set's change stream can follow joins it (no
    /// request of its own); else a job whose look is a read goes into a batched read with
    /// every other job due now; else it looks for itself (its stream, a held read, a read).
    pub(super) fn dispatch(&mut self, now: Instant) {
        self.budget_wake = None;
        let mut batch: Vec<JobKey> = Vec::new();
        while let Some(&key) = self.ready.front() {
            let Some(job) = self.jobs.get(&key).filter(|j| j.stage == Stage::Ready) else {
                self.ready.pop_front();
                continue;
            };
            let look = job.ledger.next_look(now, &self.offer(job));
            if look == Look::Final {
                self.ready.pop_front();
                self.last_look(key, now);
                continue;
            }
            if self.feed_join(key) {
                self.ready.pop_front();
                continue;
            }
            if self.batchable(key) {
                if batch.is_empty() && self.polls >= self.options.max_in_flight {
                    break;
                }
                self.ready.pop_front();
                batch.push(key);
                if batch.len() >= self.options.max_batch
                    && !self.send_batch(std::mem::take(&mut batch), now)
                {
                    return;
                }
                continue;
            }
            if look == Look::Poll && self.polls >= self.options.max_in_flight {
                break;
            }
            if let Grant::After(wait) = self.ctx.budget.lock().acquire(now) {
                self.budget_wake = now.checked_add(wait);
                break;
            }
            self.ready.pop_front();
            self.start(key, look, now);
        }
        if !batch.is_empty() {
            self.send_batch(batch, now);
        }
    }

    /// What a job's next look can be, as the set stands: a stream or a held read while a
    /// slot is free and the route is not known to lack it; never a held first look (it
    /// learns at once where the job is — its hints, its progress, whether it is already
    /// done — and starts its stall clock); no hold past its stall check (the answer is the
    /// evidence).
    pub(super) fn offer(&self, job: &Tracked) -> Offer {
        let wait = &self.options.wait;
        // Jobs that expect webhooks are only read, on the safety net.
        let free = self.held < self.options.max_held && self.hooks.is_none();
        let route = &job.endpoints.capability_key;
        let capabilities = &self.ctx.capabilities;
        Offer {
            stream: free && wait.sse && job.endpoints.events.is_some() && capabilities.sse(route),
            hold: free
                && wait.long_poll
                && self.ctx.profile.long_poll()
                && job.ledger.last().is_some()
                && capabilities.long_poll(route),
            max_hold: wait.long_poll_hold,
            hold_until: job.stall.due(self.bound),
        }
    }

    /// Starts a job's look, which holds a token.
    pub(super) fn start(&mut self, key: JobKey, look: Look, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.abandon();
        job.ledger.sent();
        job.check = false;
        job.ahead = Duration::ZERO;
        let generation = job.generation;
        match look {
            Look::Poll | Look::Final | Look::Hold(_) => {
                let mut request = job.ledger.request(look);
                // The scheduler waits out throttling itself, with every other job: the
                // transport hands a throttled answer back at once.
                request.deadline = Some(now);
                let read = self
                    .ctx
                    .wire
                    .read(&job.endpoints.status, request, &self.ctx.profile);
                let (read, handle) = abortable(read);
                job.abort = Some(handle);
                job.stage = match look {
                    Look::Hold(hold) => Stage::Holding {
                        silent_at: now + hold + (hold / 2).max(Duration::from_secs(1)),
                    },
                    _ => Stage::Polling,
                };
                match look {
                    Look::Poll => self.polls += 1,
                    Look::Hold(_) => self.held += 1,
                    _ => {}
                }
                self.in_flight.push(
                    async move {
                        Done::Read {
                            key,
                            generation,
                            look,
                            sent: now,
                            result: read.await,
                        }
                    }
                    .boxed(),
                );
            }
            Look::Subscribe => {
                let Some(url) = &job.endpoints.events else {
                    return;
                };
                let subscribe =
                    self.ctx
                        .wire
                        .subscribe(url, job.ledger.last_event_id(), job.ledger.deadline());
                let (subscribe, handle) = abortable(subscribe);
                job.abort = Some(handle);
                job.stage = Stage::Streaming { last_event: now };
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

    /// At the time of the last look (shortly before the deadline, see `wait::final_lead`): one
    /// last plain read if the budget allows it now; the wait ends at the deadline either way,
    /// unless that read finds the job ended.
    pub(super) fn last_look(&mut self, key: JobKey, now: Instant) {
        let grant = self.ctx.budget.lock().acquire(now);
        match grant {
            Grant::Now => self.start(key, Look::Final, now),
            Grant::After(_) => self.expire(key, now),
        }
    }

    /// Nothing more can be learned in time: the wait ends on its deadline, not before.
    pub(super) fn expire(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.ledger.deadline().is_some_and(|deadline| now < deadline) {
            job.stage = Stage::Expiring;
            self.arm(key);
        } else {
            self.take(key, Answer::Deadline, now);
        }
    }
}
