//! The network, as both drivers of a wait see it: a status read and an event-stream
//! subscription, by URL.
//!
//! The single wait reads one job through a [`Source`](super::source::Source) (an
//! [`HttpSource`](super::HttpSource) over this); the job set's scheduler reads thousands
//! through this directly, from futures it owns (hence `'static`). The transport implements
//! it; tests implement it with a script, so that both drivers run in paused time without a
//! socket.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use super::RemoteCancel;
use super::source::{ReadRequest, Reading, Subscribed};
use crate::profile::Profile;
use crate::transport::answer::{failed, interpret, refusal};
use crate::transport::signals::Signals;
use crate::transport::{ReadOptions, RequestKind, Transport};

/// How long a stream with no deadline may stay open.
const STREAM_WITHOUT_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Status reads and event streams.
pub(crate) trait Wire: Send + Sync + 'static {
    /// One status read of `url`, its answer read by `profile`.
    fn read(
        &self,
        url: &Url,
        request: ReadRequest,
        profile: &Profile,
    ) -> impl Future<Output = Reading> + Send + 'static;

    /// Cancels the job at `url` (its cancel endpoint), within `within`.
    fn cancel(
        &self,
        url: &Url,
        within: Duration,
    ) -> impl Future<Output = RemoteCancel> + Send + 'static;

    /// Opens the event stream at `url`, resuming after `last_event_id`; it lives until the
    /// `deadline` (and a request timeout past it: the driver cuts it there) or the job ends.
    fn subscribe(
        &self,
        url: &Url,
        last_event_id: Option<String>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = (Subscribed, Option<Signals>)> + Send + 'static;

    /// Whether the wire can send requests about many jobs ([`exchange`](Self::exchange),
    /// [`follow`](Self::follow)); without them (the default) a job set waits job by job.
    fn many(&self) -> bool {
        false
    }

    /// A JSON request for many jobs at once (a watch set, a batched read). A wire without
    /// it (the default) answers [`Exchanged::Unsupported`] and sends nothing.
    fn exchange(&self, request: ManyRequest) -> impl Future<Output = Exchanged> + Send + 'static {
        drop(request);
        async { Exchanged::Unsupported }
    }

    /// Opens the change stream at `url` (many jobs on one connection), resuming after
    /// `cursor`. A wire without it (the default) falls back at once, sending nothing.
    fn follow(
        &self,
        url: &Url,
        cursor: Option<String>,
    ) -> impl Future<Output = (Subscribed, Option<Signals>)> + Send + 'static {
        let _ = (url, cursor);
        async {
            let subscribed = Subscribed::Fallback {
                reason: super::FallbackReason::NotSupported,
                attempts: 0,
            };
            (subscribed, None)
        }
    }
}

/// A request about many jobs: a batched status read, or a watch set's creation or change.
#[derive(Debug, Clone)]
pub(crate) struct ManyRequest {
    pub(crate) method: http::Method,
    pub(crate) url: Url,
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) kind: RequestKind,
}

/// What came back from a [`ManyRequest`].
#[derive(Debug)]
pub(crate) enum Exchanged {
    /// An answer, its body read (bounded as every body).
    Answered {
        status: http::StatusCode,
        headers: http::HeaderMap,
        body: bytes::Bytes,
        attempts: u32,
    },
    /// No answer (after the transport's retries).
    Unreachable { attempts: u32 },
    /// The wire cannot send it: nothing was sent.
    Unsupported,
}

impl Wire for Transport {
    fn read(
        &self,
        url: &Url,
        request: ReadRequest,
        profile: &Profile,
    ) -> impl Future<Output = Reading> + Send + 'static {
        let (transport, url, profile) = (self.clone(), url.clone(), profile.clone());
        async move {
            let options = ReadOptions {
                etag: request.etag,
                hold: request.hold,
                deadline: request.deadline,
            };
            match transport.read(&url, &options).await {
                Ok(exchange) => Reading {
                    signals: Some(Signals::read(exchange.status, &exchange.headers)),
                    attempts: exchange.attempts,
                    hedges: exchange.hedges,
                    outcome: interpret(exchange, &profile),
                },
                Err(failure) => {
                    let answered = transport.answered(&url);
                    Reading {
                        signals: None,
                        attempts: failure.attempts,
                        hedges: failure.hedges,
                        outcome: failed(failure, answered, Instant::now()),
                    }
                }
            }
        }
    }

    fn cancel(
        &self,
        url: &Url,
        within: Duration,
    ) -> impl Future<Output = RemoteCancel> + Send + 'static {
        let (transport, url) = (self.clone(), url.clone());
        async move {
            let within = within.min(transport.request_timeout);
            let answer = tokio::time::timeout(within, transport.cancel(&url, within)).await;
            let outcome = match answer {
                Ok(Ok(exchange)) if exchange.status.is_success() => RemoteCancel::Canceled,
                Ok(Ok(exchange)) => RemoteCancel::Refused {
                    status: exchange.status.as_u16(),
                    code: exchange
                        .error_code()
                        .map(|c| crate::model::bounded(&c, crate::MAX_WORD)),
                },
                Ok(Err(_)) | Err(_) => RemoteCancel::NoAnswer,
            };
            tracing::info!(
                url = %crate::redact::redact(url.as_str()),
                outcome = outcome.as_str(),
                "canceling the job on the service"
            );
            outcome
        }
    }

    fn subscribe(
        &self,
        url: &Url,
        last_event_id: Option<String>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = (Subscribed, Option<Signals>)> + Send + 'static {
        let (transport, url) = (self.clone(), url.clone());
        async move {
            let timeout = deadline.map_or(STREAM_WITHOUT_DEADLINE, |d| {
                d.saturating_duration_since(Instant::now()) + transport.request_timeout
            });
            match transport
                .subscribe(&url, last_event_id.as_deref(), timeout, RequestKind::Events)
                .await
            {
                Ok(sub) => {
                    let signals = Some(Signals::read(sub.status, &sub.headers));
                    let attempts = sub.attempts;
                    let subscribed = match sub.events {
                        Some(events) => Subscribed::Stream { events, attempts },
                        None => match refusal(&url, sub) {
                            Ok(reason) => Subscribed::Fallback { reason, attempts },
                            Err(error) => Subscribed::Failed { error, attempts },
                        },
                    };
                    (subscribed, signals)
                }
                Err(failure) => {
                    tracing::debug!(error = %crate::error::chain(&failure.error), "event stream unreachable");
                    let subscribed = Subscribed::Fallback {
                        reason: super::FallbackReason::Unreachable,
                        attempts: failure.attempts,
                    };
                    (subscribed, None)
                }
            }
        }
    }

    fn many(&self) -> bool {
        true
    }

    fn exchange(&self, request: ManyRequest) -> impl Future<Output = Exchanged> + Send + 'static {
        let transport = self.clone();
        async move {
            let ManyRequest {
                method,
                url,
                body,
                kind,
            } = request;
            match transport.exchange(method, &url, body.as_ref(), kind).await {
                Ok(exchange) => Exchanged::Answered {
                    status: exchange.status,
                    headers: exchange.headers,
                    body: exchange.body,
                    attempts: exchange.attempts,
                },
                Err(failure) => Exchanged::Unreachable {
                    attempts: failure.attempts,
                },
            }
        }
    }

    fn follow(
        &self,
        url: &Url,
        cursor: Option<String>,
    ) -> impl Future<Output = (Subscribed, Option<Signals>)> + Send + 'static {
        let (transport, url) = (self.clone(), url.clone());
        async move {
            // The connection lives as long as the server keeps it (its lifetime bound ends
            // it) or the job set's watchdog finds it silent.
            let answer = transport
                .subscribe(
                    &url,
                    cursor.as_deref(),
                    STREAM_WITHOUT_DEADLINE,
                    RequestKind::Changes,
                )
                .await;
            match answer {
                Ok(sub) => {
                    let signals = Some(Signals::read(sub.status, &sub.headers));
                    let attempts = sub.attempts;
                    let subscribed = match sub.events {
                        Some(events) => Subscribed::Stream { events, attempts },
                        None => match refusal(&url, sub) {
                            Ok(reason) => Subscribed::Fallback { reason, attempts },
                            Err(error) => Subscribed::Failed { error, attempts },
                        },
                    };
                    (subscribed, signals)
                }
                Err(failure) => {
                    let subscribed = Subscribed::Fallback {
                        reason: super::FallbackReason::Unreachable,
                        attempts: failure.attempts,
                    };
                    (subscribed, None)
                }
            }
        }
    }
}
