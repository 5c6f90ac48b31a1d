//! The innermost layer: one span, one metric sample and one attempt count per request on the
//! wire (a hedge's duplicate gets a span and a sample, but is not another attempt); reads the
//! whole body (bounded) so that a connection dropped mid-body is a transient failure the
//! layers above can see, not an error after them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;
use tracing::Instrument;

use super::RequestKind;
use super::hedge::HedgeLeg;
use crate::telemetry;

/// Largest body read from a status or creation answer.
pub(crate) const MAX_BODY: usize = 1 << 20;

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

#[derive(Debug, thiserror::Error)]
#[error("response body larger than {MAX_BODY} bytes")]
struct BodyTooLarge;

#[derive(Debug)]
pub(crate) struct AttemptLayer;

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
        async move {
            let result = next.run(req, extensions).await;
            let result = match result {
                Ok(response) if kind.buffered() => buffer(response).await,
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
        }
        .instrument(span)
        .await
    }
}

async fn buffer(mut response: Response) -> reqwest_middleware::Result<Response> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(reqwest_middleware::Error::middleware(BodyTooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    let mut rebuilt = http::Response::new(body.freeze());
    *rebuilt.status_mut() = response.status();
    *rebuilt.version_mut() = response.version();
    *rebuilt.headers_mut() = std::mem::take(response.headers_mut());
    Ok(Response::from(rebuilt))
}
