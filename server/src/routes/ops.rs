//! Operations: `/metrics`, `/healthz`, and the token-guarded `/admin/*`. With the Redis
//! backend, faults and outages set here reach every replica (through the shared log).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::body::optional_json;
use crate::AppState;
use crate::error::ApiError;
use crate::settings::{Faults, at_most_max};
use crate::sim::webhooks::constant_time_eq;

/// `GET /metrics`
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    if !state.inner.settings.metrics.enabled {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are disabled (metrics.enabled = false)",
        )
        .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.inner.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// The token of `Authorization: Bearer <token>`; the scheme is case-insensitive and may be
/// followed by several spaces (RFC 9110 §11.1, §11.4).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.inner.settings.auth.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin endpoints are disabled; set auth.admin_token to enable them",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <auth.admin_token>`",
        ))
    }
}

/// `GET /admin/faults`
pub(crate) async fn get_faults(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Faults>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.faults()))
}

/// `PUT /admin/faults`: replaces the whole `[faults]` section (missing fields = no fault).
pub(crate) async fn put_faults(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Faults>, ApiError> {
    authorize(&state, &headers)?;
    let faults: Faults = optional_json(&headers, body)?.unwrap_or_default();
    state.put_faults(faults).await?;
    Ok(Json(state.faults()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outage {
    duration_ms: u64,
}

/// `POST /admin/outage {"duration_ms": N}`
pub(crate) async fn outage(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    let Some(req) = optional_json::<Outage>(&headers, body)? else {
        return Err(ApiError::bad_request("send {\"duration_ms\": N}"));
    };
    let length = Duration::from_millis(req.duration_ms);
    at_most_max("duration_ms", length)
        .map_err(|e| ApiError::unprocessable("invalid_outage", e.to_string()))?;
    state.put_outage(length).await?;
    Ok(StatusCode::NO_CONTENT)
}
