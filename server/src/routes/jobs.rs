//! `POST /v1/jobs`, `POST /v1/jobs/{id}/cancel` and `POST /v1/reset`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::body::optional_json;
use super::path::JobId;
use crate::AppState;
use crate::error::ApiError;
use crate::settings::Outcome;
use crate::sim::client::ClientId;
use crate::sim::job::{Cancel, Job, rfc3339};
use crate::sim::store::{JobSpec, Refused, StoreFull};
use crate::sim::webhooks::check_callback;

/// Body of `POST /v1/jobs` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateJob {
    duration_ms: Option<u64>,
    outcome: Option<Outcome>,
    callback_url: Option<String>,
    hang: Option<bool>,
}

/// Body of `POST /v1/reset` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetLegacy {
    duration_ms: Option<u64>,
    outcome: Option<Outcome>,
}

fn duration(state: &AppState, ms: Option<u64>) -> Result<Option<Duration>, ApiError> {
    let max = state.inner.settings.jobs.max_duration;
    match ms.map(Duration::from_millis) {
        Some(d) if d > max => Err(ApiError::unprocessable(
            "invalid_job",
            format!(
                "duration_ms must be at most {} (jobs.max_duration)",
                max.as_millis()
            ),
        )),
        d => Ok(d),
    }
}

fn store_full() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_full",
        "the simulator holds jobs.max_jobs jobs already; retry when some have expired",
    )
    .with_retry_after(Duration::from_secs(1))
}

fn refused(why: Refused) -> ApiError {
    match why {
        Refused::ClientFull => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_jobs",
            "this client holds jobs.max_jobs_per_client jobs already; retry when some of them \
             have expired (jobs.ttl after they end)",
        )
        .with_retry_after(Duration::from_secs(1)),
        Refused::StoreFull => store_full(),
    }
}

fn created_body(job: &Job) -> serde_json::Value {
    json!({
        "id": job.id,
        "status_url": format!("/v1/jobs/{}/status", job.id),
        "events_url": format!("/v1/jobs/{}/events", job.id),
        "created_at": rfc3339(job.created_wall),
    })
}

/// `POST /v1/jobs`
pub(crate) async fn create(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CreateJob = optional_json(&headers, body)?.unwrap_or_default();
    let hang = req.hang.unwrap_or(false);
    if hang && (req.duration_ms.is_some() || req.outcome.is_some()) {
        return Err(ApiError::unprocessable(
            "invalid_job",
            "a hanging job never ends: give it no duration_ms and no outcome",
        ));
    }
    let callback = match &req.callback_url {
        Some(raw) => Some(check_callback(raw, &state.inner.settings.webhooks)?),
        None => None,
    };
    let spec = JobSpec {
        duration: duration(&state, req.duration_ms)?,
        outcome: req.outcome,
        callback,
        hang,
        client: client.map(|Extension(c)| c),
        heygen: None,
    };
    let job = state.create(spec).map_err(refused)?;
    let mut response = (StatusCode::CREATED, Json(created_body(&job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `POST /v1/jobs/{id}/cancel`: `200` with the canceled job's status (also when it was
/// canceled before), `409 job_finished` when it had already ended on its own.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    let (job, found) = state
        .cancel(&id)
        .ok_or_else(|| ApiError::job_not_found(&id))?;
    if let Cancel::Finished(outcome) = found {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_finished",
            format!(
                "the job already ended on its own ({}); a finished job cannot be canceled",
                outcome.as_str()
            ),
        ));
    }
    let snap = job.snapshot(tokio::time::Instant::now());
    let mut response = Json(job.body(&snap, false)).into_response();
    if let Ok(v) = HeaderValue::from_str(&job.etag(snap.version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// `POST /v1/reset`: re-creates the job behind `GET /status`.
pub(crate) async fn reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ResetLegacy = optional_json(&headers, body)?.unwrap_or_default();
    let d = duration(&state, req.duration_ms)?;
    let id = state
        .reset_legacy(d, req.outcome)
        .map_err(|StoreFull| store_full())?;
    let job = state.inner.store.get(&id).ok_or_else(store_full)?;
    Ok(Json(created_body(&job)).into_response())
}
