//! What an answer means for a wait: one vocabulary for every reader of status answers.
//!
//! [`classify`](super::classify) says what an answer means for *the request* — retry it
//! quickly, wait out the server's pause, or give up on it. This module says what it means for
//! *the job's wait*, built on that classification: a status, "unchanged", "throttled, come
//! back later", "unreadable", "the service is down", or an error that ends the wait. Every
//! reader goes through it — [`Client::status`](crate::Client::status), the single wait, the
//! job set — so each answer is decided once, in one place:
//!
//! A status document is read by the client's [`Profile`] ([`Profile::decode`]), and its
//! hint headers are the ones the profile names: this is where every dialect plugs in, once.
//!
//! | answer | outcome |
//! | --- | --- |
//! | `2xx` with a status document (or a `2xx` the profile maps to a state) | [`ReadOutcome::Status`] ([`ReadOutcome::Unknown`] for a state word the profile does not know) |
//! | `2xx` that is not a status document | [`ReadOutcome::Malformed`] |
//! | `304` | [`ReadOutcome::NotModified`] |
//! | `429` (with or without `Retry-After`), `503` + `Retry-After` | [`ReadOutcome::Throttled`] ([`throttled`]) |
//! | other `5xx`, `408` | [`ReadOutcome::Unavailable`] |
//! | other statuses | [`ReadOutcome::Failed`] |
//! | no answer after retries | [`ReadOutcome::Unavailable`] ([`failed`]), or [`ReadOutcome::Malformed`] when what came back was not usable HTTP |
//!
//! An event-stream subscription that is not a stream is mapped by [`refusal`].

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use url::Url;

use super::classify::{Classification, classify};
use super::{Exchange, Failure, Subscription, headers, hosts};
use crate::error::{Error, UnexpectedResponse};
use crate::model::{JobState, JobStatus};
use crate::profile::Profile;
use crate::redact::redact;
use crate::wait::FallbackReason;

/// Headers of a status answer that matter to a wait.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub(crate) etag: Option<String>,
    /// The time left the server estimates (`Retry-After`, `retry-after-ms` for the simulator):
    /// a window around the job's end, not a promise.
    pub(crate) retry_after: Option<Duration>,
    /// The pause the server asks for before the next poll (`openai-poll-after-ms`): no poll
    /// goes out sooner.
    pub(crate) pause: Option<Duration>,
    pub(crate) applied_hold: Option<Duration>,
}

/// What one status read said.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    Status {
        status: JobStatus,
        meta: Meta,
    },
    NotModified {
        meta: Meta,
    },
    /// `429`, or `503` with a hint, that the transport did not absorb.
    Throttled {
        retry_after: Option<Duration>,
        error: Error,
    },
    /// A state word the profile does not know: not terminal, counted by the wait.
    Unknown {
        status: JobStatus,
        meta: Meta,
    },
    /// A body that is not a status document, or an answer that is not usable HTTP.
    Malformed(Error),
    /// The service failed (after transport retries: a transport error, `5xx`, `408`), or its
    /// circuit breaker refused to send. Not the job's fault: a wait keeps going.
    Unavailable {
        error: Error,
        /// `host:port` of the service.
        host: String,
        /// Not before this instant: the breaker is open (nothing was sent).
        resume_at: Option<Instant>,
        /// Whether the service ever answered over HTTP (this time, or before): if not, the
        /// URL is more likely wrong than the service down.
        answered: bool,
    },
    /// Rejected (`400`, `401`, `404`, …): ends the wait.
    Failed(Error),
}

impl ReadOutcome {
    /// The outcome as the answer to one status read ([`Client::status`](crate::Client::status)):
    /// the status (also one this version does not know), or the error.
    pub(crate) fn into_status(self, url: &Url) -> Result<JobStatus, Error> {
        match self {
            ReadOutcome::Status { status, .. } | ReadOutcome::Unknown { status, .. } => Ok(status),
            ReadOutcome::Throttled { error, .. }
            | ReadOutcome::Unavailable { error, .. }
            | ReadOutcome::Malformed(error)
            | ReadOutcome::Failed(error) => Err(error),
            ReadOutcome::NotModified { .. } => {
                Err(Error::UnexpectedResponse(Box::new(UnexpectedResponse {
                    url: redact(url.as_str()).into_owned(),
                    status: 304,
                    code: None,
                    message: "304 Not Modified to a request without If-None-Match".into(),
                    body_excerpt: String::new(),
                    retry_after: None,
                    auth_challenge: None,
                    url_credentials: false,
                })))
            }
        }
    }
}

/// Whether an answer refuses the request for now — `429` (with or without `Retry-After`), or
/// `503` with one — and the pause it asked for. The one place a `429` is decided: the wait's
/// [`ReadOutcome::Throttled`] and the request budget's signals both come from here.
pub(crate) fn throttled(status: StatusCode, headers: &HeaderMap) -> Option<Option<Duration>> {
    match classify(status, headers) {
        Classification::Throttled { retry_after } => Some(Some(retry_after)),
        _ if status == StatusCode::TOO_MANY_REQUESTS => Some(None),
        _ => None,
    }
}

/// What a status answer means, read by `profile`.
pub(crate) fn interpret(exchange: Exchange<'_>, profile: &Profile) -> ReadOutcome {
    let (retry_after, pause) = profile.hints(&exchange.headers);
    let meta = Meta {
        etag: headers::etag(&exchange.headers),
        retry_after,
        pause,
        applied_hold: headers::applied_wait(&exchange.headers),
    };
    match exchange.status {
        StatusCode::NOT_MODIFIED => ReadOutcome::NotModified { meta },
        status if status.is_success() => match profile.decode(status.as_u16(), &exchange.body) {
            Ok(job) => match &job.state {
                JobState::Unknown(_) => ReadOutcome::Unknown { status: job, meta },
                _ => ReadOutcome::Status { status: job, meta },
            },
            Err(e) => ReadOutcome::Malformed(
                exchange.into_error(Some(format!("the body is not a status document: {e}"))),
            ),
        },
        status => {
            if let Some(retry_after) = throttled(status, &exchange.headers) {
                return ReadOutcome::Throttled {
                    retry_after,
                    error: exchange.into_error(None),
                };
            }
            match classify(status, &exchange.headers) {
                Classification::Transient => ReadOutcome::Unavailable {
                    host: hosts::label(exchange.url).to_owned(),
                    error: exchange.into_error(None),
                    resume_at: None,
                    answered: true,
                },
                _ => ReadOutcome::Failed(exchange.into_error(None)),
            }
        }
    }
}

/// What a read that got no usable answer means. `answered`: whether the host has ever
/// answered this client over HTTP; `now`: when the failure came back (a breaker's refusal
/// says for how long from then).
pub(crate) fn failed(failure: Failure, answered: bool, now: Instant) -> ReadOutcome {
    let resume_at = failure
        .refused_for()
        .and_then(|retry_after| now.checked_add(retry_after));
    let host = hosts::label(&failure.url).to_owned();
    match failure.into_error() {
        // The server answered with something unusable (a body over the limit, malformed HTTP,
        // a redirect not followed): like a body that does not parse.
        error @ Error::UnexpectedResponse(_) => ReadOutcome::Malformed(error),
        error => ReadOutcome::Unavailable {
            error,
            host,
            resume_at,
            answered,
        },
    }
}

/// What an event-stream subscription that is not a stream means: which fallback, or an error
/// that ends the wait (`401`/`403`: the credentials are wrong for streams as for the rest).
pub(crate) fn refusal(url: &Url, subscription: Subscription) -> Result<FallbackReason, Error> {
    match subscription.status.as_u16() {
        404 | 405 | 406 | 501 | 200..=299 => Ok(FallbackReason::NotSupported),
        401 | 403 => Err(Exchange {
            url,
            status: subscription.status,
            headers: subscription.headers,
            body: subscription.body,
            attempts: subscription.attempts,
            hedges: 0,
        }
        .into_error(None)),
        429 | 503 => Ok(FallbackReason::Refused),
        _ => Ok(FallbackReason::Unreachable),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_429_is_throttled_with_or_without_a_pause_and_a_503_only_with_one() {
        let none = HeaderMap::new();
        let mut hinted = HeaderMap::new();
        hinted.insert("retry-after", http::HeaderValue::from_static("2"));
        let two = Some(Duration::from_secs(2));
        let table = [
            (429, &none, Some(None)),
            (429, &hinted, Some(two)),
            (503, &hinted, Some(two)),
            (503, &none, None),
            (500, &hinted, None),
            (200, &hinted, None),
        ];
        for (code, headers, want) in table {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
            assert_eq!(throttled(status, headers), want, "{code}");
        }
    }

    fn subscription(status: u16) -> Subscription {
        Subscription {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
            headers: HeaderMap::new(),
            events: None,
            body: bytes::Bytes::new(),
            attempts: 1,
        }
    }

    #[test]
    fn refused_subscriptions_fall_back_or_end_the_wait() {
        let url = Url::parse("http://h:1/v1/jobs/j/events").unwrap();
        let table = [
            (404, Some(FallbackReason::NotSupported)),
            (405, Some(FallbackReason::NotSupported)),
            (406, Some(FallbackReason::NotSupported)),
            (501, Some(FallbackReason::NotSupported)),
            (200, Some(FallbackReason::NotSupported)),
            (429, Some(FallbackReason::Refused)),
            (503, Some(FallbackReason::Refused)),
            (500, Some(FallbackReason::Unreachable)),
            (401, None),
            (403, None),
        ];
        for (status, want) in table {
            let got = refusal(&url, subscription(status));
            match want {
                Some(reason) => assert_eq!(got.ok(), Some(reason), "{status}"),
                None => assert_eq!(got.err().and_then(|e| e.http_status()), Some(status)),
            }
        }
    }
}
