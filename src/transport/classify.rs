//! Classify, then schedule: what one HTTP exchange means for retrying it.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use reqwest_retry::{RetryError, Retryable, RetryableStrategy};

use super::attempts::BodyTooLarge;
use super::guard::TimedOut;
use super::headers::retry_after;
use super::redirect::RedirectRefused;

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
/// not be built, a failed middleware, a redirect not followed and an answer that is not valid
/// HTTP (a garbled status line, too many headers) are fatal: the server answered, and asking
/// again would get the same.
pub fn classify_error(error: &reqwest_middleware::Error) -> Classification {
    match error {
        // The client's own timeout, kept by the guard: no answer in time, like reqwest's.
        reqwest_middleware::Error::Middleware(_) if find::<TimedOut>(error).is_some() => {
            Classification::Transient
        }
        reqwest_middleware::Error::Middleware(_) => Classification::Fatal,
        reqwest_middleware::Error::Reqwest(e) if e.is_builder() || e.is_redirect() => {
            Classification::Fatal
        }
        reqwest_middleware::Error::Reqwest(_) if unusable(error).is_some() => Classification::Fatal,
        reqwest_middleware::Error::Reqwest(_) => Classification::Transient,
    }
}

/// Whether a failure is a request that timed out: reqwest's own timeout, or the client's,
/// which the guard keeps for requests without one of their own.
pub(crate) fn timed_out(error: &reqwest_middleware::Error) -> bool {
    match error {
        reqwest_middleware::Error::Reqwest(e) => e.is_timeout(),
        reqwest_middleware::Error::Middleware(_) => {
            find::<TimedOut>(error).is_some()
                || find::<reqwest::Error>(error).is_some_and(reqwest::Error::is_timeout)
        }
    }
}

/// The server answered, but with nothing usable as an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unusable {
    /// The answer's status, when one could be read.
    pub(crate) status: Option<StatusCode>,
    /// What is wrong, in words.
    pub(crate) problem: String,
}

/// Whether a failure is an answer the client could not use — a body over the limit, a
/// redirect it does not follow, malformed HTTP — rather than no answer at all. Such a host
/// is up: the failure is the answer's, reported as
/// [`Error::UnexpectedResponse`](crate::Error::UnexpectedResponse), never as unreachable.
pub(crate) fn unusable(error: &reqwest_middleware::Error) -> Option<Unusable> {
    if let Some(large) = find::<BodyTooLarge>(error) {
        return Some(Unusable {
            status: Some(large.status),
            problem: large.to_string(),
        });
    }
    if let Some(refused) = find::<RedirectRefused>(error) {
        return Some(Unusable {
            status: Some(refused.status()),
            problem: refused.to_string(),
        });
    }
    let malformed = find::<hyper::Error>(error).filter(|e| e.is_parse())?;
    Some(Unusable {
        status: None,
        problem: format!("the answer is not valid HTTP ({malformed})"),
    })
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
/// are retried quickly; throttled answers are left to the throttle step under it, which
/// waits exactly as long as the server asked.
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

    #[test]
    fn unusable_answers_are_found_through_the_wrapping() {
        let large = BodyTooLarge {
            status: StatusCode::OK,
            limit: 1024,
        };
        let bare = reqwest_middleware::Error::middleware(large.clone());
        let wrapped = reqwest_middleware::Error::middleware(RetryError::WithRetries {
            retries: 1,
            err: reqwest_middleware::Error::middleware(large),
        });
        for error in [&bare, &wrapped] {
            let found = unusable(error).map(|u| u.status);
            assert_eq!(found, Some(Some(StatusCode::OK)), "{error}");
            assert_eq!(classify_error(error), Classification::Fatal);
        }
        let refused = reqwest_middleware::Error::middleware(RedirectRefused::OtherOrigin {
            status: StatusCode::FOUND,
            location: "http://elsewhere/".into(),
        });
        let found = unusable(&refused).map(|u| u.status);
        assert_eq!(found, Some(Some(StatusCode::FOUND)));
        let other = reqwest_middleware::Error::middleware(std::io::Error::other("x"));
        assert_eq!(unusable(&other), None);
    }
}
