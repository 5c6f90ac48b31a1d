//! Middleware of the job API (their order and its reasons are in the parent module's docs).

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::sim::faults::Fault;
use crate::sim::ratelimit::Decision;
use crate::sim::webhooks::constant_time_eq;

/// Counts and times every answer by route template.
pub(crate) async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    state.inner.metrics.http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Injected faults (see [`crate::sim::faults`]).
pub(crate) async fn faults(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let m = &state.inner.metrics;
    let roll = state.inner.faults.roll(Instant::now());
    if !roll.delay.is_zero() {
        m.fault(if roll.slow_tail {
            "slow_tail"
        } else {
            "latency"
        });
        tokio::time::sleep(roll.delay).await;
    }
    if let Some(kind) = roll.fault.kind() {
        m.fault(kind);
    }
    match roll.fault {
        Fault::None => next.run(req).await,
        Fault::Outage => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outage",
            "the service is unavailable (injected outage)",
        )
        .into_response(),
        Fault::Error => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected_error",
            "internal error (injected fault)",
        )
        .into_response(),
        Fault::Throttle(after) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "injected_throttle",
            "too many requests (injected fault); retry after the Retry-After delay",
        )
        .with_retry_after(after)
        .into_response(),
        Fault::Drop => {
            // Headers may or may not reach the client; the body never completes and the
            // connection is closed: what a client sees when a connection is cut mid-answer.
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("injected connection drop"))
            });
            Response::new(Body::from_stream(broken))
        }
        Fault::Malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"result\": \"pend",
        )
            .into_response(),
    }
}

/// `X-Api-Key`, when `auth.api_key` is set.
pub(crate) async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &state.inner.settings.auth.api_key {
        let given = req.headers().get("x-api-key").map(HeaderValue::as_bytes);
        if !given.is_some_and(|g| constant_time_eq(g, expected.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong X-Api-Key header",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Per-client token bucket, with the IETF `RateLimit` / `RateLimit-Policy` headers.
pub(crate) async fn rate_limit(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(limiter) = &state.inner.limiter else {
        return next.run(req).await;
    };
    let client = match req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(key) => format!("key:{key}"),
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| format!("ip:{}", ci.0.ip()))
            .unwrap_or_else(|| "unknown".to_string()),
    };
    let (quota, window) = limiter.policy();
    let policy = HeaderValue::from_str(&format!("\"default\";q={quota};w={window}"));
    match limiter.check(&client, Instant::now()) {
        Decision::Allow { remaining } => {
            let mut response = next.run(req).await;
            let h = response.headers_mut();
            if let Ok(p) = policy {
                h.insert("ratelimit-policy", p);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("\"default\";r={remaining};t={window}")) {
                h.insert("ratelimit", v);
            }
            response
        }
        Decision::Deny { retry_after } => {
            state.inner.metrics.rate_limited();
            let t = retry_after.as_millis().div_ceil(1000).max(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded; retry after the Retry-After delay",
            )
            .with_retry_after(retry_after);
            if let Ok(p) = policy {
                e = e.with_header("ratelimit-policy", p);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("\"default\";r=0;t={t}")) {
                e = e.with_header("ratelimit", v);
            }
            e.into_response()
        }
    }
}

/// Bounds a handler by `server.request_timeout`.
pub(crate) async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.inner.settings.server.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than server.request_timeout",
        )
        .into_response(),
    }
}
