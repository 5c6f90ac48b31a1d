//! The innermost layer: one span, one metric sample and one attempt count per request on the
//! wire (a hedge's duplicate gets a span and a sample, but is not another attempt); reads the
//! whole body so that a connection dropped mid-body is a transient failure the layers above
//! can see, not an error after them.
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
use reqwest::{Request, Response, ResponseBuilderExt};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;
use tracing::Instrument;

use super::RequestKind;
use super::hedge::HedgeLeg;
use crate::telemetry;

/// The default largest body read from a status or creation answer
/// ([`ClientBuilder::max_response_body`](crate::ClientBuilder::max_response_body)).
pub(crate) const DEFAULT_MAX_BODY: usize = 1 << 20;

/// The most of an error answer's body that is read: enough for any `{"error": …}` document
/// and an excerpt; the rest is never read (the connection is dropped).
const ERROR_BODY_PREFIX: usize = 64 * 1024;

/// Counts the attempts made for one logical request, across retries and throttle waits, and
/// the hedges (duplicates, not attempts) sent for them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempts(Arc<[AtomicU32; 2]>);

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

#[derive(Debug)]
pub(crate) struct AttemptLayer {
    /// The largest body read from a usable answer.
    pub(crate) max_body: usize,
}

#[async_trait::async_trait]
impl Middleware for AttemptLayer {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let kind = RequestKind::of(extensions);
        // A hedge is the duplicate of an attempt, not another one: it keeps the original's
        // number and is not a retry.
        let hedge = extensions.get::<HedgeLeg>().copied();
        let attempt = match hedge {
            Some(leg) => leg.attempt,
            None => extensions.get::<Attempts>().map_or(1, Attempts::bump),
        };
        if attempt > 1 && hedge.is_none() {
            telemetry::retry(kind);
        }
        let span = tracing::debug_span!(
            "request",
            kind = kind.as_str(),
            attempt,
            hedge = hedge.is_some(),
            method = %req.method(),
            path = req.url().path(),
            status = tracing::field::Empty,
        );
        let started = Instant::now();
        let attempt = async move {
            let result = next.run(req, extensions).await.map_err(without_secrets);
            let result = match result {
                Ok(response) if kind.buffered() => buffer(response, self.max_body).await,
                other => other,
            };
            let outcome = telemetry::request_outcome(&result);
            if let Ok(response) = &result {
                tracing::Span::current().record("status", response.status().as_u16());
            }
            tracing::debug!(
                outcome,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "answered"
            );
            telemetry::request(kind, outcome, started.elapsed());
            result
        };
        // Most applications log at info: the span is then disabled, and entering and leaving
        // it on every poll of the request would be work for nothing.
        if span.is_disabled() {
            attempt.await
        } else {
            attempt.instrument(span).await
        }
    }
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
    // With its URL: a response rebuilt without one is given a placeholder, parsed each time.
    let mut rebuilt = http::Response::builder()
        .status(status)
        .version(response.version())
        .url(response.url().clone())
        .body(body)
        .map_err(reqwest_middleware::Error::middleware)?;
    *rebuilt.headers_mut() = std::mem::take(response.headers_mut());
    Ok(Response::from(rebuilt))
}
