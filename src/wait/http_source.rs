//! The status source over HTTP: one job's endpoints, the transport, and the route memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::FallbackReason;
use super::capabilities::Capabilities;
use super::source::{Fact, ReadRequest, Reading, Source, Subscribed};
use crate::job::Endpoints;
use crate::transport::answer::{failed, interpret, refusal};
use crate::transport::{ReadOptions, Transport};

/// A stream with no byte (not even a keep-alive comment) for this long is considered dead.
pub(crate) const SSE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct HttpSource<'a> {
    pub(crate) transport: &'a Transport,
    pub(crate) endpoints: &'a Endpoints,
    pub(crate) capabilities: &'a Capabilities,
    /// Whether to offer SSE/long-poll at all (the wait options).
    pub(crate) sse: bool,
    pub(crate) long_poll: bool,
    /// An events URL answered 404: confirmed as "no SSE" once the status URL works (a 404 on
    /// both means the job is unknown, not that the server lacks streams).
    pub(crate) sse_suspect: AtomicBool,
}

impl<'a> HttpSource<'a> {
    pub(crate) fn new(
        transport: &'a Transport,
        endpoints: &'a Endpoints,
        capabilities: &'a Capabilities,
        sse: bool,
        long_poll: bool,
    ) -> Self {
        HttpSource {
            transport,
            endpoints,
            capabilities,
            sse,
            long_poll,
            sse_suspect: AtomicBool::new(false),
        }
    }
}

impl Source for HttpSource<'_> {
    fn sse_available(&self) -> bool {
        self.sse
            && self.endpoints.events.is_some()
            && self.capabilities.sse(&self.endpoints.capability_key)
    }

    fn long_poll_available(&self) -> bool {
        self.long_poll && self.capabilities.long_poll(&self.endpoints.capability_key)
    }

    fn learned(&self, fact: Fact) {
        let key = &self.endpoints.capability_key;
        match fact {
            Fact::StatusWorks => {
                if self.sse_suspect.swap(false, Ordering::Relaxed) {
                    self.capabilities.set_sse(key, false);
                }
            }
            Fact::SseWorks => self.capabilities.set_sse(key, true),
            Fact::SseMissing => self.sse_suspect.store(true, Ordering::Relaxed),
            Fact::LongPollApplied => self.capabilities.set_long_poll(key, true),
            Fact::LongPollIgnored => self.capabilities.set_long_poll(key, false),
        }
    }

    async fn read(&self, request: ReadRequest) -> Reading {
        let options = ReadOptions {
            etag: request.etag,
            hold: request.hold,
            deadline: request.deadline,
        };
        match self.transport.read(&self.endpoints.status, &options).await {
            Ok(exchange) => {
                let (attempts, hedges) = (exchange.attempts, exchange.hedges);
                Reading {
                    outcome: interpret(exchange),
                    attempts,
                    hedges,
                }
            }
            Err(failure) => {
                let (attempts, hedges) = (failure.attempts, failure.hedges);
                let answered = self.transport.answered(&self.endpoints.status);
                Reading {
                    outcome: failed(failure, answered, Instant::now()),
                    attempts,
                    hedges,
                }
            }
        }
    }

    async fn subscribe(
        &self,
        last_event_id: Option<String>,
        deadline: Option<Instant>,
    ) -> Subscribed {
        let Some(url) = &self.endpoints.events else {
            return Subscribed::Fallback {
                reason: FallbackReason::NotSupported,
                attempts: 0,
            };
        };
        // The stream lives until the deadline (cut by the loop) or the job ends.
        let timeout = deadline
            .map(|d| d.saturating_duration_since(Instant::now()) + self.transport.request_timeout)
            .unwrap_or(Duration::from_secs(24 * 3600));
        match self
            .transport
            .subscribe(url, last_event_id.as_deref(), timeout)
            .await
        {
            Ok(sub) => match sub.events {
                Some(events) => Subscribed::Stream {
                    events,
                    attempts: sub.attempts,
                },
                None => {
                    let attempts = sub.attempts;
                    match refusal(url, sub) {
                        Ok(reason) => {
                            if reason == FallbackReason::NotSupported {
                                self.learned(Fact::SseMissing);
                            }
                            Subscribed::Fallback { reason, attempts }
                        }
                        Err(error) => Subscribed::Failed { error, attempts },
                    }
                }
            },
            Err(failure) => {
                tracing::debug!(error = %crate::error::chain(&failure.error), "event stream unreachable");
                Subscribed::Fallback {
                    reason: FallbackReason::Unreachable,
                    attempts: failure.attempts,
                }
            }
        }
    }
}
