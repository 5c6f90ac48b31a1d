//! `GET /v1/jobs?ids=a,b,c`: the status of many jobs in one request.
//!
//! A client waiting on many jobs through plain reads merges every job due at the same instant
//! into one request. Why a `GET` with the ids in the query rather than a `POST` with a body:
//! a read is safe and cacheable, so `ETag` / `If-None-Match` mean what they mean for a single
//! status, and any proxy or client library treats it as the read it is. A URL is bounded,
//! so the ids are too: at most `jobs.max_batch_ids` (100 by default, about 2 KiB of URL).
//!
//! Each job is answered as `GET /v1/jobs/{id}/status` answers it, plus its own `etag`; ids that
//! are unknown or expired are listed in `not_found` instead of failing the whole. The answer's
//! `ETag` covers every id asked and the version of each (not progress, as for one job), so
//! `If-None-Match` gets `304` while nothing any of them reports has changed. Pending answers
//! carry the soonest hint of their jobs (`Retry-After`, `retry-after-ms`).

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::status::none_match;
use crate::AppState;
use crate::error::{ApiError, insert_retry_after};
use crate::sim::job::{Channel, State as JobState};
use crate::sim::watch::MAX_ID_LEN;

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchQuery {
    /// Comma-separated job ids.
    ids: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_ids", message)
}

/// The ids asked for, checked, duplicates dropped (the first kept).
fn parse_ids(ids: Option<&str>, max: usize) -> Result<Vec<&str>, ApiError> {
    let ids = ids.ok_or_else(|| {
        invalid("give the jobs to read as ?ids=a,b,c (GET /v1/jobs lists nothing by itself)")
    })?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for id in ids.split(',') {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(invalid(format!(
                "ids are comma-separated job ids of 1 to {MAX_ID_LEN} bytes"
            )));
        }
        if seen.insert(id) {
            out.push(id);
            if out.len() > max {
                return Err(invalid(format!(
                    "at most {max} ids in one read (jobs.max_batch_ids)"
                )));
            }
        }
    }
    Ok(out)
}

/// `GET /v1/jobs?ids=a,b,c`
pub(crate) async fn read(
    State(state): State<AppState>,
    query: Result<Query<BatchQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let inner = &state.inner;
    let ids = parse_ids(query.ids.as_deref(), inner.settings.jobs.max_batch_ids)?;
    inner.metrics.batch_read(ids.len());
    if let Some(redis) = state.redis()
        && ids.iter().any(|id| inner.store.get(id).is_none())
    {
        // Jobs created on another replica a moment ago are here once the copy caught up.
        redis.catch_up().await.map_err(|_| state.unavailable())?;
    }
    let now = Instant::now();
    let hints = &inner.settings.hints;
    let mut digest = Sha256::new();
    let mut jobs = Vec::new();
    let mut not_found = Vec::new();
    let mut soonest: Option<Duration> = None;
    for id in &ids {
        let Some(job) = inner.store.get(id) else {
            digest.update(format!("{id}\0-\n"));
            not_found.push(*id);
            continue;
        };
        job.count_request();
        let snap = job.snapshot(now);
        digest.update(format!("{id}\0{}\n", snap.version));
        if snap.state == JobState::Pending {
            let after = snap.eta.unwrap_or_default().max(hints.min_retry_after);
            soonest = Some(soonest.map_or(after, |s| s.min(after)));
        }
        jobs.push((job, snap));
    }
    let hash = digest.finalize();
    let etag = format!(
        "W/\"b-{}\"",
        hash.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut out = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    if let Some(after) = soonest.filter(|_| hints.retry_after) {
        insert_retry_after(&mut out, after);
    }
    let metrics = &inner.metrics;
    if none_match(&headers, &etag) {
        for _ in &jobs {
            metrics.status_response(Channel::Batch.as_str(), "not_modified");
        }
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let answered: Vec<Value> = jobs
        .iter()
        .map(|(job, snap)| {
            metrics.status_response(Channel::Batch.as_str(), snap.state.as_str());
            state.report_terminal(job, Channel::Batch, now);
            let mut body = serde_json::to_value(job.body(snap, hints.eta)).unwrap_or(Value::Null);
            body["etag"] = json!(job.etag(snap.version));
            body
        })
        .collect();
    Ok((
        out,
        Json(json!({ "jobs": answered, "not_found": not_found })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_counted_and_deduplicated() {
        assert_eq!(parse_ids(Some("a,b,a,c"), 3).unwrap(), ["a", "b", "c"]);
        assert_eq!(parse_ids(Some("legacy"), 1).unwrap(), ["legacy"]);
        let long = "j".repeat(MAX_ID_LEN + 1);
        for bad in [
            None,
            Some(""),
            Some("a,,b"),
            Some("a,"),
            Some(long.as_str()),
            Some("a,b,c,d"),
        ] {
            let e = parse_ids(bad, 3).unwrap_err();
            assert_eq!(
                (e.status(), e.code()),
                (StatusCode::BAD_REQUEST, "invalid_ids"),
                "{bad:?}"
            );
        }
    }
}
