//! Errors: [`ApiError`] is what a client is told (one `IntoResponse` impl for every route);
//! [`Error`] is what stops the server from starting.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::settings::ConfigError;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// An error answer: status, machine-readable code, human message, optional retry hint.
#[derive(Debug, Clone)]
pub struct ApiError(Box<Parts>);

#[derive(Debug, Clone)]
struct Parts {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    headers: HeaderMap,
}

impl ApiError {
    /// A new error answer.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError(Box::new(Parts {
            status,
            code,
            message: message.into(),
            retry_after: None,
            headers: HeaderMap::new(),
        }))
    }

    /// Adds `Retry-After` (seconds, rounded up) and `retry-after-ms`.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// Adds one header.
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The error code.
    pub fn code(&self) -> &'static str {
        self.0.code
    }

    /// 404 for a job id that does not exist (or has expired).
    pub fn job_not_found(id: &str) -> Self {
        let shown: String = id.chars().take(64).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job with id `{shown}` (unknown, or expired after its TTL)"),
        )
    }

    /// `503 store_unavailable`: the shared store (Redis) cannot be reached; retry after
    /// `retry_after` (`store.retry_after`).
    pub fn unavailable(retry_after: Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the simulator's shared store cannot be reached; retry after the Retry-After delay",
        )
        .with_retry_after(retry_after)
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 with a code and message.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
}

/// Writes the delay `after` into `headers` twice, each rounded up so that no client is told to
/// come back early: `retry-after-ms` in whole milliseconds and `Retry-After` (RFC 9110) in
/// whole seconds. No floor is added here: a zero delay is written as `0` in both (the floors
/// are settings, e.g. `hints.min_retry_after`), and a delay too large for a `u64` saturates.
pub fn insert_retry_after(headers: &mut HeaderMap, after: Duration) {
    let ms = crate::time::millis_ceil(after);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
    headers.insert("retry-after-ms", HeaderValue::from(ms));
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let parts = *self.0;
        let body = json!({ "error": { "code": parts.code, "message": parts.message } });
        let mut response = (parts.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.extend(parts.headers);
        if let Some(after) = parts.retry_after {
            insert_retry_after(headers, after);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_in_both_units_and_saturates() {
        let table = [
            (Duration::from_millis(1200), "2", "1200"),
            (Duration::from_micros(1), "1", "1"),
            (Duration::ZERO, "0", "0"),
            (Duration::MAX, "18446744073709552", "18446744073709551615"),
        ];
        for (after, secs, ms) in table {
            let mut h = HeaderMap::new();
            insert_retry_after(&mut h, after);
            assert_eq!(h[header::RETRY_AFTER], secs, "{after:?}");
            assert_eq!(h["retry-after-ms"], ms, "{after:?}");
        }
    }
}
