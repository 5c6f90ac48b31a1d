//! Event streams: opening one, following it, and falling back when it breaks.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::Aborted;
use futures_util::stream;
use tokio::time::Instant;

use super::{MAX_STREAM_BREAKS, Scheduler, StreamItem, abandon};
use crate::jobset::JobKey;
use crate::jobset::tracked::Phase;
use crate::model::{self, JobState, JobStatus};
use crate::transport::answer::{refusal, unknown_event};
use crate::transport::signals::Signals;
use crate::transport::sse;
use crate::transport::{Failure, Subscription};
use crate::wait::{FallbackReason, Mechanism};

impl Scheduler {
    pub(super) fn subscribed(
        &mut self,
        key: JobKey,
        generation: u32,
        sent: Instant,
        result: Result<Result<Subscription, Failure>, Aborted>,
    ) {
        let Ok(result) = result else {
            self.held = self.held.saturating_sub(1);
            return;
        };
        let now = Instant::now();
        if let Ok(sub) = &result {
            self.listen(Signals::read(sub.status, &sub.headers), sent, now);
        }
        let attempts = match &result {
            Ok(sub) => sub.attempts,
            Err(failure) => failure.attempts,
        };
        // Event streams are never hedged.
        self.charge(attempts, 0);
        let Some(job) = self
            .jobs
            .get_mut(&key)
            .filter(|job| job.generation == generation)
        else {
            // The stream, if any, is dropped here.
            self.held = self.held.saturating_sub(1);
            return;
        };
        job.abort = None;
        job.attempts(attempts, 0);
        let sub = match result {
            Ok(sub) => sub,
            Err(failure) => {
                tracing::debug!(job = %job.endpoints.label, error = %crate::error::chain(&failure.error), "event stream unreachable");
                self.held = self.held.saturating_sub(1);
                self.refuse_streams(key, FallbackReason::Unreachable);
                return;
            }
        };
        let Some(events) = sub.events else {
            self.held = self.held.saturating_sub(1);
            let url = job
                .endpoints
                .events
                .clone()
                .unwrap_or_else(|| job.endpoints.status.clone());
            let reason = match refusal(&url, sub) {
                Ok(reason) => reason,
                Err(error) => {
                    self.fail(key, error);
                    return;
                }
            };
            if reason == FallbackReason::NotSupported {
                job.streams.suspect = true;
            }
            self.refuse_streams(key, reason);
            return;
        };
        self.client
            .capabilities()
            .set_sse(&job.endpoints.capability_key, true);
        job.current = Mechanism::Sse;
        job.phase = Phase::Streaming { last_event: now };
        let (events, handle) = stream::abortable(events);
        job.abort = Some(handle);
        let tagged = events
            .map(move |event| (key, generation, Some(event)))
            .chain(stream::once(async move { (key, generation, None) }));
        self.streams.push(tagged.boxed());
        self.arm(key);
    }

    /// This job will not use streams again; it polls from now on.
    pub(super) fn refuse_streams(&mut self, key: JobKey, reason: FallbackReason) {
        if let Some(job) = self.jobs.get_mut(&key) {
            job.streams.refused = true;
            job.fall_back(Mechanism::Sse, reason);
            self.make_ready(key);
        }
    }

    /// A stream ended, failed or went idle before the job ended: reconnect after a pause,
    /// or give up on streams after a few breaks.
    pub(super) fn broke(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.streams.breaks = job.streams.breaks.saturating_add(1);
        if job.streams.breaks > MAX_STREAM_BREAKS {
            self.refuse_streams(key, FallbackReason::StreamBroken);
            return;
        }
        let pause = Duration::from_millis(250) * u32::from(job.streams.breaks);
        job.phase = Phase::Sleeping { until: now };
        self.sleep_until(key, now + pause, now);
    }

    pub(super) fn streamed(&mut self, (key, generation, item): StreamItem) {
        let now = Instant::now();
        let Some(item) = item else {
            self.held = self.held.saturating_sub(1);
            if let Some(job) = self.current(key, generation) {
                job.abort = None;
                tracing::debug!(job = %job.endpoints.label, "event stream ended early");
                self.broke(key, now);
            }
            return;
        };
        let Some(job) = self.current(key, generation) else {
            return;
        };
        let event = match item {
            Ok(event) => event,
            Err(error) if sse::oversized(&error) => {
                // Broken or hostile: not worth reopening.
                tracing::debug!(job = %job.endpoints.label, error = %error, "event stream refused; polling instead");
                abandon(job);
                self.refuse_streams(key, FallbackReason::StreamBroken);
                return;
            }
            Err(error) => {
                tracing::debug!(job = %job.endpoints.label, error = %error, "event stream failed");
                abandon(job);
                self.broke(key, now);
                return;
            }
        };
        job.phase = Phase::Streaming { last_event: now };
        if let Some(id) = &event.id {
            job.streams.last_id = Some(id.as_str().into());
        }
        let status = match event.event.as_str() {
            "status" | "message" => match JobStatus::from_json(event.data.as_bytes()) {
                Ok(status) => status,
                Err(error) => {
                    tracing::debug!(job = %job.endpoints.label, error = %error, "unreadable status event");
                    abandon(job);
                    self.broke(key, now);
                    return;
                }
            },
            "progress" => {
                let progress = model::progress_of(&event.data);
                match (progress, job.last.clone()) {
                    (Some(p), Some(last)) if !last.is_terminal() => last.with_progress(p),
                    _ => {
                        self.arm(key);
                        return;
                    }
                }
            }
            _ => {
                self.arm(key);
                return;
            }
        };
        if status.is_terminal() {
            self.complete(key, status, Mechanism::Sse, now, true);
            return;
        }
        if let JobState::Unknown(result) = &status.state {
            let error = unknown_event(&job.endpoints.label, result, &event.data);
            self.fail(key, error);
            return;
        }
        job.current = Mechanism::Sse;
        job.observe(&status, now, None);
        job.pending_at(now);
        if !self.stall_evidence(key, status.progress, now) {
            self.arm(key);
        }
    }
}
