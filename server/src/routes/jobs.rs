//! `POST /v1/jobs`, `POST /v1/jobs/{id}/cancel` and `POST /v1/reset`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::body::optional_json;
use super::idempotent::{Created, create_once};
use super::path::JobId;
use crate::AppState;
use crate::backend::CreateError;
use crate::error::ApiError;
use crate::settings::Outcome;
use crate::sim::client::ClientId;
use crate::sim::job::{Cancel, Job, rfc3339};
use crate::sim::store::{JobSpec, Refused};
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

/// The answer to a create that made nothing (`state` counts a `503 store_unavailable`).
pub(super) fn not_created(state: &AppState, why: CreateError) -> ApiError {
    match why {
        CreateError::Refused(why) => refused(why),
        CreateError::Busy(_) | CreateError::Unavailable => state.unavailable(),
    }
}

pub(super) fn refused(why: Refused) -> ApiError {
    match why {
        Refused::ClientFull => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_jobs",
            "this client holds jobs.max_jobs_per_client jobs already; retry when some of them \
             have expired (jobs.ttl after they end)",
        )
        .with_retry_after(Duration::from_secs(1)),
        Refused::StoreFull | Refused::Shared => store_full(),
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

/// The fields a create of any dialect may carry to steer the simulated job (`duration_ms`,
/// `outcome`, `hang`, `callback_url`), checked, as a spec for `client`.
pub(super) fn simulated_spec(
    state: &AppState,
    client: ClientId,
    duration_ms: Option<u64>,
    outcome: Option<Outcome>,
    hang: Option<bool>,
    callback_url: Option<&str>,
) -> Result<JobSpec, ApiError> {
    let hang = hang.unwrap_or(false);
    if hang && (duration_ms.is_some() || outcome.is_some()) {
        return Err(ApiError::unprocessable(
            "invalid_job",
            "a hanging job never ends: give it no duration_ms and no outcome",
        ));
    }
    let callback = match callback_url {
        Some(raw) => Some(check_callback(raw, &state.inner.settings.webhooks)?),
        None => None,
    };
    Ok(JobSpec {
        duration: duration(state, duration_ms)?,
        outcome,
        callback,
        hang,
        client: Some(client),
        heygen: None,
    })
}

/// The client a request was counted as (see `routes::layers`).
pub(super) fn client_of(client: Option<Extension<ClientId>>) -> ClientId {
    client.map_or(ClientId::Unknown, |Extension(c)| c)
}

/// `POST /v1/jobs`
pub(crate) async fn create(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    request: Request,
) -> Result<Response, ApiError> {
    let client = client_of(client);
    create_once(
        &state,
        client,
        "POST /v1/jobs",
        request,
        async |headers, body| {
            let req: CreateJob = optional_json(headers, body)?.unwrap_or_default();
            let spec = simulated_spec(
                &state,
                client,
                req.duration_ms,
                req.outcome,
                req.hang,
                req.callback_url.as_deref(),
            )?;
            let job = state
                .create_jobs(vec![spec], false)
                .await
                .map_err(|why| not_created(&state, why))?
                .pop()
                .ok_or_else(|| state.unavailable())?;
            let location = format!("/v1/jobs/{}", job.id);
            Ok(Created::json(
                StatusCode::CREATED,
                Some(location),
                &created_body(&job),
            ))
        },
    )
    .await
}

/// `POST /v1/jobs/{id}/cancel`: `200` with the canceled job's status (also when it was
/// canceled before), `409 job_finished` when it had already ended on its own.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    let (job, found) = state
        .cancel_now(&id)
        .await
        .map_err(|_| state.unavailable())?
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
    let job = state.recreate_legacy(d, req.outcome).await?;
    Ok(Json(created_body(&job)).into_response())
}
