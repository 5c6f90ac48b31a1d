//! The HeyGen dialect: `POST/GET /v2/video_translate` and `POST/GET /v3/video-translations`.
//!
//! Same store, same ids, same limits as `/v1`: a HeyGen create makes ordinary jobs that carry
//! a few more bounded strings (`sim::heygen::HeyGenJob`), and every status route reads every
//! job. What the dialect adds is its shapes (`sim::heygen` maps our states to its words), its
//! per-client limit on running jobs (`heygen.max_concurrent_jobs`, `429
//! rate_limit_exceeded`), and its webhook envelope.
//!
//! Bodies are HeyGen's: the fields the simulator reads are checked (types, lengths, URLs) and
//! refused with `422 invalid_parameter` naming the field; HeyGen's other options (`mode`,
//! `speaker_num`, ...) are accepted and ignored, as the body limit bounds them. The
//! simulator's own `duration_ms`, `outcome`, `hang` and `callback_url` steer the jobs as on
//! `/v1`. Errors on `/v2` carry `"data": null` beside `error` (`layers::heygen_v2_envelope`).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::body::optional_json_as;
use super::idempotent::{Created, create_once};
use super::jobs::{client_of, not_created, simulated_spec};
use super::path::JobId;
use crate::AppState;
use crate::backend::CreateError;
use crate::error::ApiError;
use crate::settings::Outcome;
use crate::sim::client::ClientId;
use crate::sim::heygen::{HeyGenApi, HeyGenJob, Phase};
use crate::sim::job::{Channel, Job, Snapshot};
use crate::sim::store::JobSpec;

/// The code of a HeyGen body that parses but does not fit.
const INVALID: &str = "invalid_parameter";

/// Longest `video_url` / `video.url` / `video.asset_id` accepted (they are checked, not kept).
const MAX_SOURCE_LEN: usize = 2048;

/// Body of `POST /v2/video_translate`.
#[derive(Debug, Deserialize)]
struct V2Create {
    video_url: String,
    output_language: String,
    title: Option<String>,
    callback_id: Option<String>,
    callback_url: Option<String>,
    duration_ms: Option<u64>,
    outcome: Option<Outcome>,
    hang: Option<bool>,
}

/// Body of `POST /v3/video-translations`.
#[derive(Debug, Deserialize)]
struct V3Create {
    video: V3Video,
    output_languages: Vec<String>,
    title: Option<String>,
    callback_id: Option<String>,
    callback_url: Option<String>,
    duration_ms: Option<u64>,
    outcome: Option<Outcome>,
    hang: Option<bool>,
}

/// `video` of a v3 create: `{"type": "url", "url"}` or `{"type": "asset_id", "asset_id"}`.
#[derive(Debug, Deserialize)]
struct V3Video {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    asset_id: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(INVALID, message)
}

/// Refuses `value` of `field` unless it is `min` to `max` bytes, naming `setting` if any.
fn bounded(
    field: &str,
    value: &str,
    (min, max): (usize, usize),
    setting: &str,
) -> Result<(), ApiError> {
    if (min..=max).contains(&value.len()) {
        return Ok(());
    }
    let setting = if setting.is_empty() {
        String::new()
    } else {
        format!(" ({setting})")
    };
    Err(invalid(format!(
        "{field} must be {min} to {max} bytes{setting}"
    )))
}

fn source_url(field: &str, raw: &str) -> Result<(), ApiError> {
    bounded(field, raw, (1, MAX_SOURCE_LEN), "")?;
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(invalid(format!("{field} must be an http(s) URL"))),
    }
}

/// The parts every HeyGen create shares, checked.
struct Common<'a> {
    title: Option<&'a String>,
    callback_id: Option<&'a String>,
    callback_url: Option<&'a str>,
    duration_ms: Option<u64>,
    outcome: Option<Outcome>,
    hang: Option<bool>,
}

impl Common<'_> {
    /// One spec per language, for `client`.
    fn specs(
        &self,
        state: &AppState,
        client: ClientId,
        api: HeyGenApi,
        languages: &[String],
    ) -> Result<Vec<JobSpec>, ApiError> {
        let s = &state.inner.settings.heygen;
        if let Some(title) = self.title {
            bounded("title", title, (0, s.max_title_len), "heygen.max_title_len")?;
        }
        if let Some(id) = self.callback_id {
            bounded(
                "callback_id",
                id,
                (0, s.max_callback_id_len),
                "heygen.max_callback_id_len",
            )?;
        }
        for language in languages {
            bounded(
                "output language",
                language,
                (1, s.max_language_len),
                "heygen.max_language_len",
            )?;
        }
        let base = simulated_spec(
            state,
            client,
            self.duration_ms,
            self.outcome,
            self.hang,
            self.callback_url,
        )?;
        Ok(languages
            .iter()
            .map(|language| JobSpec {
                heygen: Some(HeyGenJob {
                    api,
                    title: self.title.cloned(),
                    output_language: language.clone(),
                    callback_id: self.callback_id.cloned(),
                }),
                ..base.clone()
            })
            .collect())
    }
}

/// Creates `specs` (of one client) within its share of running jobs.
async fn start(state: &AppState, specs: Vec<JobSpec>) -> Result<Vec<String>, ApiError> {
    let n = specs.len();
    let max = state.inner.settings.heygen.max_concurrent_jobs;
    let jobs = state
        .create_jobs(specs, true)
        .await
        .map_err(|why| match why {
            CreateError::Busy(retry_after) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                format!(
                    "this client may run heygen.max_concurrent_jobs ({max}) jobs at once and its \
                     running jobs leave no room for {n} more; retry after the Retry-After delay"
                ),
            )
            .with_retry_after(retry_after),
            other => not_created(state, other),
        })?;
    Ok(jobs.iter().map(|j| j.id.clone()).collect())
}

/// A body is required: the message names the fields that are.
fn required<T>(body: Option<T>, fields: &str) -> Result<T, ApiError> {
    body.ok_or_else(|| invalid(format!("a JSON body with {fields} is required")))
}

/// `POST /v2/video_translate`
pub(crate) async fn v2_create(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    request: Request,
) -> Result<Response, ApiError> {
    let client = client_of(client);
    create_once(
        &state,
        client,
        "POST /v2/video_translate",
        request,
        async |headers, body| {
            let req: V2Create = required(
                optional_json_as(headers, body, INVALID)?,
                "video_url and output_language",
            )?;
            source_url("video_url", &req.video_url)?;
            let common = Common {
                title: req.title.as_ref(),
                callback_id: req.callback_id.as_ref(),
                callback_url: req.callback_url.as_deref(),
                duration_ms: req.duration_ms,
                outcome: req.outcome,
                hang: req.hang,
            };
            let specs = common.specs(
                &state,
                client,
                HeyGenApi::V2,
                std::slice::from_ref(&req.output_language),
            )?;
            let ids = start(&state, specs).await?;
            let id = ids.first().cloned().unwrap_or_default();
            Ok(Created::json(
                StatusCode::OK,
                None,
                &json!({"error": null, "data": {"video_translate_id": id}}),
            ))
        },
    )
    .await
}

/// `POST /v3/video-translations`
pub(crate) async fn v3_create(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    request: Request,
) -> Result<Response, ApiError> {
    let client = client_of(client);
    create_once(
        &state,
        client,
        "POST /v3/video-translations",
        request,
        async |headers, body| {
            let req: V3Create = required(
                optional_json_as(headers, body, INVALID)?,
                "video and output_languages",
            )?;
            match (req.video.kind.as_str(), &req.video.url, &req.video.asset_id) {
                ("url", Some(url), _) => source_url("video.url", url)?,
                ("asset_id", _, Some(asset)) => {
                    bounded("video.asset_id", asset, (1, MAX_SOURCE_LEN), "")?
                }
                _ => {
                    return Err(invalid(
                        "video must be {\"type\": \"url\", \"url\": ...} or \
                     {\"type\": \"asset_id\", \"asset_id\": ...}",
                    ));
                }
            }
            let s = &state.inner.settings.heygen;
            let n = req.output_languages.len();
            if n == 0 || n > s.max_output_languages {
                return Err(invalid(format!(
                    "output_languages must hold 1 to {} languages (heygen.max_output_languages)",
                    s.max_output_languages
                )));
            }
            if n > s.max_concurrent_jobs {
                return Err(invalid(format!(
                    "output_languages asks for {n} jobs at once, more than one client may run \
                 (heygen.max_concurrent_jobs = {})",
                    s.max_concurrent_jobs
                )));
            }
            let common = Common {
                title: req.title.as_ref(),
                callback_id: req.callback_id.as_ref(),
                callback_url: req.callback_url.as_deref(),
                duration_ms: req.duration_ms,
                outcome: req.outcome,
                hang: req.hang,
            };
            let specs = common.specs(&state, client, HeyGenApi::V3, &req.output_languages)?;
            let ids = start(&state, specs).await?;
            Ok(Created::json(
                StatusCode::OK,
                None,
                &json!({"data": {"video_translation_ids": ids}}),
            ))
        },
    )
    .await
}

/// Reads a job for a status route: counted as a poll, its terminal state reported.
async fn read(
    state: &AppState,
    id: &str,
) -> Result<(std::sync::Arc<Job>, Snapshot, Phase), ApiError> {
    let inner = &state.inner;
    let job = state.find(id).await?;
    job.count_request();
    let now = Instant::now();
    let snap = job.snapshot(now);
    inner
        .metrics
        .status_response(Channel::Poll.as_str(), snap.state.as_str());
    state.report_terminal(&job, Channel::Poll, now);
    let phase = Phase::of(&job, &snap, inner.settings.heygen.queued_fraction);
    Ok((job, snap, phase))
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /v2/video_translate/{id}`
pub(crate) async fn v2_status(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    let (job, _, phase) = read(&state, &id).await?;
    let meta = job.heygen.as_deref();
    let url = (phase == Phase::Success).then(|| state.inner.urls.sign(&job.id));
    let body = json!({
        "error": null,
        "data": {
            "video_translate_id": job.id,
            "title": meta.and_then(|m| m.title.as_deref()),
            "status": phase.v2(),
            "url": url,
            "message": phase.message(),
        }
    });
    Ok(Json(body).into_response())
}

/// `GET /v3/video-translations/{id}`
pub(crate) async fn v3_status(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    let (job, snap, phase) = read(&state, &id).await?;
    let meta = job.heygen.as_deref();
    let done = phase == Phase::Success;
    let terminal = snap.state.is_terminal();
    let body: Value = json!({
        "data": {
            "id": job.id,
            "title": meta.and_then(|m| m.title.as_deref()),
            "output_language": meta.map(|m| m.output_language.as_str()),
            "status": phase.v3(),
            "video_url": done.then(|| state.inner.urls.sign(&job.id)),
            "failure_message": phase.message(),
            "duration": done.then(|| job.duration.as_secs_f64()),
            "created_at": unix_seconds(job.created_wall),
            "completed_at": terminal.then(|| unix_seconds(job.completed_wall())),
        }
    });
    Ok(Json(body).into_response())
}
