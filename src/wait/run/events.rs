//! The event-stream phase of the wait loop.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::{MAX_STREAM_BREAKS, Phase, Waiter, cut, unknown_result};
use crate::model::{self, JobState, JobStatus};
use crate::poll::{Basis, MIN_PAUSE};
use crate::transport::sse;
use crate::wait::http_source::SSE_IDLE_TIMEOUT;
use crate::wait::source::{Fact, Meta, Source, Subscribed};
use crate::wait::{FallbackReason, Mechanism};

impl<S: Source> Waiter<'_, S> {
    pub(super) async fn sse_phase(&mut self) -> Phase {
        let mut last_id: Option<String> = None;
        let mut breaks = 0;
        let mut reconnect = Duration::from_millis(250);
        loop {
            let span =
                tracing::info_span!("events", n = self.requests + 1, resume = last_id.as_deref());
            let subscribed = self
                .source
                .subscribe(last_id.clone(), self.deadline)
                .instrument(span.clone());
            let Some(subscribed) = cut(self.deadline, subscribed).await else {
                self.requests += 1;
                return Phase::Deadline;
            };
            let mut events = match subscribed {
                Subscribed::Stream { events, attempts } => {
                    self.count(attempts);
                    self.answered = true;
                    self.source.learned(Fact::SseWorks);
                    self.current = Mechanism::Sse;
                    events
                }
                Subscribed::Fallback { reason, attempts } => {
                    self.count(attempts);
                    self.fall_back(Mechanism::Sse, reason);
                    return Phase::Fallback;
                }
                Subscribed::Failed { error, attempts } => {
                    self.count(attempts);
                    return Phase::Done(self.fail(error));
                }
            };
            loop {
                let next = cut(
                    self.deadline,
                    tokio::time::timeout(SSE_IDLE_TIMEOUT, events.next()),
                );
                let event = match next.instrument(span.clone()).await {
                    None => return Phase::Deadline,
                    Some(Err(_idle)) => {
                        tracing::debug!(parent: &span, "event stream idle; reconnecting");
                        break;
                    }
                    Some(Ok(None)) => break,
                    Some(Ok(Some(Err(e)))) if sse::oversized(&e) => {
                        // Broken or hostile: not worth reopening. Dropping the stream closes
                        // its connection.
                        tracing::debug!(parent: &span, error = %e, "event stream refused; polling instead");
                        self.fall_back(Mechanism::Sse, FallbackReason::StreamBroken);
                        return Phase::Fallback;
                    }
                    Some(Ok(Some(Err(e)))) => {
                        tracing::debug!(parent: &span, error = %e, "event stream failed");
                        break;
                    }
                    Some(Ok(Some(Ok(event)))) => event,
                };
                if let Some(id) = &event.id {
                    last_id = Some(id.clone());
                }
                if let Some(retry) = event.retry {
                    reconnect = retry.clamp(MIN_PAUSE, Duration::from_secs(30));
                }
                let received = Instant::now();
                match event.event.as_str() {
                    "status" | "message" => match JobStatus::from_json(event.data.as_bytes()) {
                        Ok(status) if status.is_terminal() => {
                            return Phase::Done(self.finish(
                                status,
                                Mechanism::Sse,
                                received,
                                true,
                            ));
                        }
                        Ok(status) => {
                            if let JobState::Unknown(result) = &status.state {
                                let error = unknown_result(&self.plan.job, result, &event.data);
                                return Phase::Done(self.fail(error));
                            }
                            self.observe(&status, received, &Meta::default());
                            self.last_pending = Some(received);
                        }
                        Err(e) => {
                            tracing::debug!(parent: &span, error = %e, "unreadable status event");
                            break;
                        }
                    },
                    "progress" => self.progress_event(&event.data, received),
                    _ => {}
                }
            }
            breaks += 1;
            if breaks > MAX_STREAM_BREAKS {
                self.fall_back(Mechanism::Sse, FallbackReason::StreamBroken);
                return Phase::Fallback;
            }
            if self.sleep(reconnect * breaks, Basis::Initial).await {
                return Phase::LastLook;
            }
        }
    }

    fn progress_event(&mut self, data: &str, received: Instant) {
        let progress = model::progress_of(data);
        if let (Some(p), Some(last)) = (progress, self.last.clone())
            && !last.is_terminal()
        {
            let status = last.with_progress(p);
            self.observe(&status, received, &Meta::default());
            self.last_pending = Some(received);
        }
    }
}
