//! Whose turn it is: tokens to ready jobs, first come first served, and what each one sends.

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::abortable;
use tokio::time::Instant;

use super::{Done, Op, Scheduler, abandon};
use crate::jobset::JobKey;
use crate::jobset::budget::Grant;
use crate::jobset::tracked::{Phase, Tracked};
use crate::transport::ReadOptions;

impl Scheduler {
    /// Hands tokens to ready jobs, first come first served.
    pub(super) fn dispatch(&mut self, now: Instant) {
        self.budget_wake = None;
        while let Some(&key) = self.ready.front() {
            let Some(job) = self.jobs.get(&key).filter(|j| j.phase == Phase::Ready) else {
                self.ready.pop_front();
                continue;
            };
            let op = self.choose(job, now);
            if op == Op::Poll && self.polls >= self.options.max_in_flight {
                break;
            }
            if let Grant::After(wait) = self.client.budget().lock().acquire(now) {
                self.budget_wake = now.checked_add(wait);
                break;
            }
            self.ready.pop_front();
            self.start(key, op, now);
        }
    }

    /// Stream, long-poll or plain poll, for a due job.
    pub(super) fn choose(&self, job: &Tracked, now: Instant) -> Op {
        if self.held >= self.options.max_held {
            return Op::Poll;
        }
        let capabilities = self.client.capabilities();
        let route = &job.endpoints.capability_key;
        if self.options.sse
            && !job.streams.refused
            && job.endpoints.events.is_some()
            && capabilities.sse(route)
        {
            return Op::Subscribe;
        }
        // The first look is not held: it learns at once where the job is (its hints, its
        // progress, whether it is already done), and when it last changed.
        if self.options.long_poll
            && job.last.is_some()
            && capabilities.long_poll(route)
            && self.hold_for(job, now).is_some()
        {
            return Op::Hold;
        }
        Op::Poll
    }

    /// How long to ask the server to hold a read: never past the deadline, nor past the
    /// job's stall check (its answer is the evidence), in whole seconds.
    pub(super) fn hold_for(&self, job: &Tracked, now: Instant) -> Option<Duration> {
        let mut hold = Duration::from_secs(self.options.long_poll_hold.as_secs());
        let due = job.stall.due(self.bound);
        for limit in [job.deadline, due].into_iter().flatten() {
            let left = limit.saturating_duration_since(now);
            hold = hold.min(Duration::from_secs(left.as_secs()));
        }
        (hold >= Duration::from_secs(1)).then_some(hold)
    }

    /// Starts an operation for a job that holds a token.
    pub(super) fn start(&mut self, key: JobKey, op: Op, now: Instant) {
        let hold = match (op, self.jobs.get(&key)) {
            (Op::Hold, Some(job)) => self.hold_for(job, now),
            _ => None,
        };
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        abandon(job);
        job.sent();
        let generation = job.generation;
        let transport = self.client.transport().clone();
        match op {
            Op::Poll | Op::Final | Op::Hold => {
                let url = job.endpoints.status.clone();
                // The scheduler waits out throttling itself, with every other job: the
                // transport hands a throttled answer back at once.
                let options = ReadOptions {
                    etag: None,
                    hold,
                    deadline: Some(now),
                };
                let (read, handle) = abortable(async move { transport.read(&url, &options).await });
                job.abort = Some(handle);
                job.phase = match op {
                    Op::Hold => Phase::Holding,
                    _ => Phase::Polling,
                };
                match op {
                    Op::Poll => self.polls += 1,
                    Op::Hold => self.held += 1,
                    _ => {}
                }
                self.in_flight.push(
                    async move {
                        Done::Read {
                            key,
                            generation,
                            op,
                            sent: now,
                            hold,
                            result: read.await,
                        }
                    }
                    .boxed(),
                );
            }
            Op::Subscribe => {
                let Some(url) = job.endpoints.events.clone() else {
                    return;
                };
                let last_id = job.streams.last_id.clone();
                // The stream lives until the deadline (cut by the timer) or the job ends.
                let timeout = match job.deadline {
                    Some(deadline) => {
                        deadline.saturating_duration_since(now) + transport.request_timeout
                    }
                    None => Duration::from_secs(24 * 3600),
                };
                let (subscribe, handle) = abortable(async move {
                    transport.subscribe(&url, last_id.as_deref(), timeout).await
                });
                job.abort = Some(handle);
                job.phase = Phase::Streaming { last_event: now };
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
    /// last plain read if the budget allows it now; the wait gives up at the deadline either
    /// way, unless that read finds the job ended.
    pub(super) fn last_look(&mut self, key: JobKey, now: Instant) {
        let grant = self.client.budget().lock().acquire(now);
        match grant {
            Grant::Now => self.start(key, Op::Final, now),
            Grant::After(_) => self.expire(key, now),
        }
    }
}
