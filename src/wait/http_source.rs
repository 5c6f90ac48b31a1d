//! The status source over HTTP: one job's endpoints, the transport, and the route memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::FallbackReason;
use super::capabilities::Capabilities;
use super::source::{Fact, Meta, ReadOutcome, ReadRequest, Reading, Source, Subscribed};
use crate::job::Endpoints;
use crate::model::{JobState, JobStatus};
use crate::transport::{Classification, Exchange, ReadOptions, Transport, classify, headers};

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

/// What a status answer means (shared by one-off reads and the wait loop).
pub(crate) fn interpret(exchange: Exchange) -> ReadOutcome {
    let meta = Meta {
        etag: headers::etag(&exchange.headers),
        retry_after: headers::retry_after(&exchange.headers),
        applied_hold: headers::applied_wait(&exchange.headers),
    };
    match exchange.status {
        StatusCode::NOT_MODIFIED => ReadOutcome::NotModified { meta },
        status if status.is_success() => match JobStatus::from_json(&exchange.body) {
            Ok(job) => match &job.state {
                JobState::Unknown(result) => {
                    let message = format!(
                        "the job reports result {result:?}, which this version does not know (expected pending, completed or error)"
                    );
                    ReadOutcome::Unknown {
                        status: job,
                        error: exchange.into_error(Some(message)),
                    }
                }
                _ => ReadOutcome::Status { status: job, meta },
            },
            Err(e) => ReadOutcome::Malformed(
                exchange.into_error(Some(format!("the body is not a status document: {e}"))),
            ),
        },
        status => match classify(status, &exchange.headers) {
            Classification::Throttled { retry_after } => ReadOutcome::Throttled {
                retry_after: Some(retry_after),
                error: exchange.into_error(None),
            },
            _ if status == StatusCode::TOO_MANY_REQUESTS => ReadOutcome::Throttled {
                retry_after: None,
                error: exchange.into_error(None),
            },
            Classification::Transient => ReadOutcome::Unavailable {
                error: exchange.into_error(None),
                resume_at: None,
                answered: true,
            },
            _ => ReadOutcome::Failed(exchange.into_error(None)),
        },
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
                let resume_at = failure
                    .refused_for()
                    .and_then(|retry_after| Instant::now().checked_add(retry_after));
                let (attempts, hedges) = (failure.attempts, failure.hedges);
                let outcome = match failure.into_error() {
                    // The server answered with something unusable (a body over the limit,
                    // malformed HTTP, a redirect not followed): like a body that does not parse.
                    error @ crate::Error::UnexpectedResponse(_) => ReadOutcome::Malformed(error),
                    error => ReadOutcome::Unavailable {
                        error,
                        resume_at,
                        answered: self.transport.answered(&self.endpoints.status),
                    },
                };
                Reading {
                    outcome,
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
                    let reason = match sub.status.as_u16() {
                        404 | 405 | 406 | 501 | 200..=299 => FallbackReason::NotSupported,
                        401 | 403 => {
                            let exchange = Exchange {
                                url: url.clone(),
                                status: sub.status,
                                headers: sub.headers,
                                body: sub.body,
                                attempts: sub.attempts,
                                hedges: 0,
                            };
                            return Subscribed::Failed {
                                error: exchange.into_error(None),
                                attempts: sub.attempts,
                            };
                        }
                        429 | 503 => FallbackReason::Refused,
                        _ => FallbackReason::Unreachable,
                    };
                    if reason == FallbackReason::NotSupported {
                        self.learned(Fact::SseMissing);
                    }
                    Subscribed::Fallback {
                        reason,
                        attempts: sub.attempts,
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
