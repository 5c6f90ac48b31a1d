//! Classify, then schedule: what one HTTP exchange means for retrying it.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use reqwest_retry::{RetryError, Retryable, RetryableStrategy};

use super::headers::retry_after;

/// What an answer means for the request that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Classification {
    /// A usable answer (`2xx`, `304`).
    Success,
    /// `429`, or `503` with `Retry-After`: the server asked for this exact pause. Never a
    /// reason to end a wait.
    Throttled {
        /// How long the server asked the client to wait.
        retry_after: Duration,
    },
    /// Worth a quick retry: `5xx`, `408`, `429` without `Retry-After`.
    Transient,
    /// Trying again will not help: `400`, `401`, `404`, `422` and other client errors.
    Fatal,
}

/// Classifies an answer by status and headers.
pub fn classify(status: StatusCode, headers: &HeaderMap) -> Classification {
    let hinted = || retry_after(headers);
    match status.as_u16() {
        200..=299 | 304 => Classification::Success,
        429 => match hinted() {
            Some(retry_after) => Classification::Throttled { retry_after },
            None => Classification::Transient,
        },
        503 => match hinted() {
            Some(retry_after) => Classification::Throttled { retry_after },
            None => Classification::Transient,
        },
        408 | 500..=599 => Classification::Transient,
        _ => Classification::Fatal,
    }
}

/// Classifies a failure below HTTP. Status reads are idempotent, so anything that went wrong
/// on the wire (connect, timeout, reset, truncated body) is transient; a request that could
/// not be built, or a failed middleware, is fatal.
pub fn classify_error(error: &reqwest_middleware::Error) -> Classification {
    match error {
        reqwest_middleware::Error::Middleware(_) => Classification::Fatal,
        reqwest_middleware::Error::Reqwest(e) if e.is_builder() || e.is_redirect() => {
            Classification::Fatal
        }
        reqwest_middleware::Error::Reqwest(_) => Classification::Transient,
    }
}

/// The first error of type `T` inside a failure: through reqwest's sources, a middleware's
/// error and its sources, and the retry layer's wrapping.
pub(crate) fn find<T>(error: &reqwest_middleware::Error) -> Option<&T>
where
    T: std::error::Error + 'static,
{
    match error {
        reqwest_middleware::Error::Reqwest(e) => {
            let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(e) = current {
                if let Some(found) = e.downcast_ref::<T>() {
                    return Some(found);
                }
                current = e.source();
            }
            None
        }
        reqwest_middleware::Error::Middleware(inner) => {
            if let Some(RetryError::WithRetries { err, .. } | RetryError::Error(err)) =
                inner.downcast_ref::<RetryError>()
            {
                return find(err);
            }
            inner.chain().find_map(|e| e.downcast_ref::<T>())
        }
    }
}

/// The [`RetryableStrategy`] of the transport's retry layer: transient answers and failures
/// are retried quickly; throttled answers are left to the throttle layer above, which waits
/// exactly as long as the server asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Classifier;

impl RetryableStrategy for Classifier {
    fn handle(
        &self,
        res: &Result<reqwest::Response, reqwest_middleware::Error>,
    ) -> Option<Retryable> {
        let class = match res {
            Ok(response) => classify(response.status(), response.headers()),
            Err(error) => classify_error(error),
        };
        match class {
            Classification::Success | Classification::Throttled { .. } => None,
            Classification::Transient => Some(Retryable::Transient),
            Classification::Fatal => Some(Retryable::Fatal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let none = HeaderMap::new();
        let mut hinted = HeaderMap::new();
        hinted.insert("retry-after", http::HeaderValue::from_static("1"));
        let second = Duration::from_secs(1);
        let table = [
            (200, &none, Classification::Success),
            (201, &none, Classification::Success),
            (304, &none, Classification::Success),
            (400, &none, Classification::Fatal),
            (401, &none, Classification::Fatal),
            (404, &none, Classification::Fatal),
            (413, &none, Classification::Fatal),
            (422, &none, Classification::Fatal),
            (408, &none, Classification::Transient),
            (429, &none, Classification::Transient),
            (
                429,
                &hinted,
                Classification::Throttled {
                    retry_after: second,
                },
            ),
            (500, &none, Classification::Transient),
            (500, &hinted, Classification::Transient),
            (502, &none, Classification::Transient),
            (503, &none, Classification::Transient),
            (
                503,
                &hinted,
                Classification::Throttled {
                    retry_after: second,
                },
            ),
            (302, &none, Classification::Fatal),
        ];
        for (code, headers, want) in table {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
            assert_eq!(classify(status, headers), want, "{code}");
        }
    }
}
