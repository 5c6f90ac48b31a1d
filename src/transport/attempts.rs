//! The innermost step of the guard: one span, one metric sample and one attempt count per
//! request on the wire (a hedge's duplicate gets a span and a sample, but is not another
//! attempt); reads the whole body so that a connection dropped mid-body is a transient failure
//! the steps above can see, not an error after them.
//!
//! Every read is bounded. A usable answer (`2xx`) may have a body of at most
//! [`ClientBuilder::max_response_body`](crate::ClientBuilder::max_response_body) bytes (1 MiB
//! by default): past it — or with a `Content-Length` that says so, before reading anything —
//! the attempt fails with [`BodyTooLarge`], which the client reports as
//! [`Error::UnexpectedResponse`](crate::Error::UnexpectedResponse). An error answer is only
//! read for its `{"error": …}` document and an excerpt: its first 64 KiB are kept and the
//! rest is dropped with the connection, so a `503` with a huge page stays a `503`. Event
//! streams are not buffered here (the SSE parser bounds what it keeps).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::{Bytes, BytesMut};
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::Next;
use tokio::time::Instant;
use tracing::Instrument;

use super::RequestKind;
use crate::telemetry;

/// The default largest body read from a status or creation answer
/// ([`ClientBuilder::max_response_body`](crate::ClientBuilder::max_response_body)).
pub(crate) const DEFAULT_MAX_BODY: usize = 1 << 20;

/// The most of an error answer's body that is read: enough for any `{"error": …}` document
/// and an excerpt; the rest is never read (the connection is dropped).
const ERROR_BODY_PREFIX: usize = 64 * 1024;

/// Counts the attempts made for one logical request, across retries and throttle waits, the
/// hedges (duplicates, not attempts) sent for them, and the throttled answers it waited out
/// (bounded per request, not per attempt of the retry layer above the guard).
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempts(Arc<[AtomicU32; 3]>);

impl Attempts {
    pub(crate) fn get(&self) -> u32 {
        self.0[0].load(Ordering::Relaxed)
    }

    fn bump(&self) -> u32 {
        self.0[0].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Hedges sent for this request.
    pub(crate) fn hedges(&self) -> u32 {
        self.0[1].load(Ordering::Relaxed)
    }

    /// A hedge went out for this request.
    pub(crate) fn hedged(&self) {
        self.0[1].fetch_add(1, Ordering::Relaxed);
    }

    /// Throttled answers this request waited out.
    pub(crate) fn throttle_waits(&self) -> u32 {
        self.0[2].load(Ordering::Relaxed)
    }

    /// The request waited out one more throttled answer.
    pub(crate) fn waited(&self) {
        self.0[2].fetch_add(1, Ordering::Relaxed);
    }
}

/// A usable answer (`2xx`) whose body is larger than the client reads.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the body of the answer (HTTP {status}) is larger than {limit} bytes, the most this client reads (ClientBuilder::max_response_body)"
)]
pub(crate) struct BodyTooLarge {
    pub(crate) status: http::StatusCode,
    pub(crate) limit: usize,
}

/// Which request on the wire this is, for the span, the metrics and the attempt count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Leg<'a> {
    /// An attempt: counted here, and a retry when it is not the first.
    Attempt(&'a Attempts),
    /// A hedge's duplicate of the attempt with this number: not counted, not a retry.
    Hedge { attempt: u32 },
}

/// Sends one request on the wire (`next` is the rest of the stack: reqwest, and the trace
/// propagation when enabled) with its span and metric sample, counting an attempt now, and
/// reads a buffered kind's body, bounded by `max_body`.
pub(crate) fn send<'a>(
    next: Next<'a>,
    req: Request,
    extensions: &'a mut Extensions,
    kind: RequestKind,
    leg: Leg<'_>,
    max_body: usize,
) -> impl Future<Output = reqwest_middleware::Result<Response>> + 'a {
    let (attempt, hedge) = match leg {
        Leg::Hedge { attempt } => (attempt, true),
        Leg::Attempt(attempts) => (attempts.bump(), false),
    };
    if attempt > 1 && !hedge {
        telemetry::retry(kind);
    }
    let span = tracing::debug_span!(
        "request",
        kind = kind.as_str(),
        attempt,
        hedge,
        method = %req.method(),
        path = req.url().path(),
        status = tracing::field::Empty,
    );
    // Most applications log at info: the span is then disabled, and entering and leaving it
    // on every poll of the request would be work for nothing (a `none` span's is none).
    let span = if span.is_disabled() {
        tracing::Span::none()
    } else {
        span
    };
    let started = Instant::now();
    async move {
        let result = next.run(req, extensions).await.map_err(without_secrets);
        let result = match result {
            Ok(response) if kind.buffered() => buffer(response, max_body).await,
            other => other,
        };
        let outcome = telemetry::Outcome::of(&result);
        if let Ok(response) = &result {
            tracing::Span::current().record("status", response.status().as_u16());
        }
        tracing::debug!(
            outcome = outcome.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "answered"
        );
        telemetry::request(kind, outcome, started.elapsed());
        result
    }
    .instrument(span)
}

/// reqwest names the URL in its errors; its query may hold a token (user-info never reaches
/// it: reqwest moves it into an `Authorization` header first).
fn without_secrets(error: reqwest_middleware::Error) -> reqwest_middleware::Error {
    match error {
        reqwest_middleware::Error::Reqwest(e) => match e.url().and_then(crate::redact::url) {
            Some(clean) => reqwest_middleware::Error::Reqwest(e.with_url(clean)),
            None => reqwest_middleware::Error::Reqwest(e),
        },
        other => other,
    }
}

/// Reads the body into memory, bounded: a usable answer larger than `max` is an error (a
/// status document cut short cannot be trusted); an error answer is cut to its first bytes.
/// A declared `Content-Length` over the bound fails before any of the body is read.
async fn buffer(mut response: Response, max: usize) -> reqwest_middleware::Result<Response> {
    let status = response.status();
    let usable = status.is_success();
    let limit = if usable {
        max
    } else {
        max.min(ERROR_BODY_PREFIX)
    };
    let too_large = || reqwest_middleware::Error::middleware(BodyTooLarge { status, limit });
    if usable && response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // A status document usually comes in one chunk: kept as it is, not copied.
    let mut first: Option<Bytes> = None;
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - first.as_ref().map_or(body.len(), Bytes::len);
        if chunk.len() > room {
            if usable {
                return Err(too_large());
            }
            if let Some(first) = first.take() {
                body.extend_from_slice(&first);
            }
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        match first.take() {
            None if body.is_empty() => first = Some(chunk),
            Some(first) => {
                body.extend_from_slice(&first);
                body.extend_from_slice(&chunk);
            }
            None => body.extend_from_slice(&chunk),
        }
    }
    let body = first.unwrap_or_else(|| body.freeze());
    // The response itself goes back up, its body read: rebuilding one around the bytes costs
    // more than the read.
    response.extensions_mut().insert(Buffered(body));
    Ok(response)
}

/// The body of an answer, read by the attempt (a response extension). The response's own
/// body is then spent: take it with [`body`].
#[derive(Debug, Clone)]
struct Buffered(Bytes);

/// The body of an answer that came through the guard: the one the attempt read, or (a kind
/// that is not buffered) whatever the response still has.
pub(crate) async fn body(mut response: Response) -> reqwest::Result<Bytes> {
    match response.extensions_mut().remove::<Buffered>() {
        Some(Buffered(body)) => Ok(body),
        None => response.bytes().await,
    }
}
