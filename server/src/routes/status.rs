//! `GET /status` (the original exercise) and `GET /v1/jobs/{id}/status` (hints, ETags,
//! long-poll).
//!
//! A held long-poll sleeps until the earliest of: its job's completion instant, the applied
//! wait, the job being replaced or canceled, or shutdown. Nothing polls inside the server and
//! nothing runs for a job nobody is waiting on.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::path::JobId;
use crate::AppState;
use crate::error::{ApiError, insert_retry_after};
use crate::sim::job::{Channel, Job, Snapshot, State as JobState};
use crate::sim::store::LEGACY_ID;
use crate::time::later;

#[derive(Debug, Deserialize)]
pub(crate) struct LegacyQuery {
    job: Option<String>,
}

/// `GET /status[?job=ID]`: `{"result": ...}` and nothing else.
pub(crate) async fn legacy(
    State(state): State<AppState>,
    query: Result<Query<LegacyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = query.job.as_deref().unwrap_or(LEGACY_ID);
    let job = state.find(id).await?;
    job.count_request();
    let now = Instant::now();
    let snap = job.snapshot(now);
    state
        .inner
        .metrics
        .status_response(Channel::Legacy.as_str(), snap.state.as_str());
    state.report_terminal(&job, Channel::Legacy, now);
    let body = match snap.state {
        JobState::Pending => r#"{"result":"pending"}"#,
        JobState::Done(crate::Outcome::Completed) => r#"{"result":"completed"}"#,
        JobState::Done(crate::Outcome::Error) => r#"{"result":"error"}"#,
        JobState::Canceled => r#"{"result":"canceled"}"#,
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Parses `Prefer: wait=N` (RFC 7240); anything malformed is ignored, as the RFC asks.
pub(crate) fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|pref| {
            let (name, value) = pref.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let secs: u64 = value.trim().trim_matches('"').parse().ok()?;
            Some(Duration::from_secs(secs))
        })
        .next()
}

/// Whether `If-None-Match` matches `etag` (weak comparison, `*` matches anything).
pub(crate) fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let ours = opaque(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || opaque(t) == ours)
}

/// `GET /v1/jobs/{id}/status` (also served at `/v1/jobs/{id}`).
pub(crate) async fn job_status(
    State(state): State<AppState>,
    JobId(id): JobId,
    mut headers: HeaderMap,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let mut job = state.find(&id).await?;
    job.count_request();
    let mut snap = job.snapshot(Instant::now());
    let mut applied = None;
    if let Some(wanted) = prefer_wait(&headers).filter(|_| inner.settings.longpoll.enabled)
        && let Ok(permit) = Arc::clone(&inner.longpoll_permits).try_acquire_owned()
    {
        let wait = wanted.min(inner.settings.longpoll.max_wait);
        applied = Some(wait);
        let client_is_current = headers.get(header::IF_NONE_MATCH).is_none()
            || none_match(&headers, &job.etag(snap.version));
        if snap.state == JobState::Pending && client_is_current && !wait.is_zero() {
            headers = detached(&headers);
            let held = Held::new(&state);
            hold(&state, &job, wait).await;
            drop(held);
            if state.redis().is_some_and(|r| !r.is_live()) {
                // The copy may have missed the end while the shared store was away.
                return Err(state.unavailable());
            }
            job = inner.store.get(&id).unwrap_or(job);
            snap = job.snapshot(Instant::now());
        }
        drop(permit);
    }
    let now = Instant::now();
    let channel = if applied.is_some() {
        Channel::LongPoll
    } else {
        Channel::Poll
    };
    let etag = job.etag(snap.version);
    let mut out = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    if let Some(wait) = applied {
        if let Ok(v) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
            out.insert("preference-applied", v);
        }
        out.insert(header::VARY, HeaderValue::from_static("prefer"));
    }
    insert_hints(&state, &snap, &mut out);
    if none_match(&headers, &etag) {
        inner
            .metrics
            .status_response(channel.as_str(), "not_modified");
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    inner
        .metrics
        .status_response(channel.as_str(), snap.state.as_str());
    state.report_terminal(&job, channel, now);
    let body = job.body(&snap, inner.settings.hints.eta);
    Ok((out, Json(body)).into_response())
}

/// The request headers the answer still needs after a hold (`If-None-Match`), copied. hyper
/// parses a request's header values as slices of the connection's read buffer, which lives as
/// long as any of them: a held request that kept them would keep that buffer (8 KiB) besides
/// the one hyper reads the connection with meanwhile.
fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for value in headers.get_all(header::IF_NONE_MATCH) {
        if let Ok(copy) = HeaderValue::from_bytes(value.as_bytes()) {
            kept.append(header::IF_NONE_MATCH, copy);
        }
    }
    kept
}

/// Counts a held request in `sim_longpoll_waiters` for as long as it lives, including when
/// the client goes away and the handler is dropped mid-wait.
pub(super) struct Held<'a>(&'a AppState);

impl<'a> Held<'a> {
    pub(super) fn new(state: &'a AppState) -> Self {
        state.inner.metrics.longpoll_waiters(1.0);
        Held(state)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.inner.metrics.longpoll_waiters(-1.0);
    }
}

/// Sleeps until the job completes, `wait` passes, the job is replaced or canceled (or, for a
/// job of a shared log, its end is logged), or the server closes. The wake-up is armed before
/// the completion instant is read, so a cancel landing in between is never missed.
async fn hold(state: &AppState, job: &Job, wait: Duration) {
    let changed = job.changed.notified();
    tokio::pin!(changed);
    changed.as_mut().enable();
    let deadline = later(Instant::now(), wait);
    let until = job.wakes_at().map_or(deadline, |at| at.min(deadline));
    let mut closing = state.inner.closing.subscribe();
    tokio::select! {
        _ = tokio::time::sleep_until(until) => {}
        _ = changed => {}
        _ = closing.wait_for(|c| *c) => {}
    }
}

/// `Retry-After` / `retry-after-ms` on pending answers, when hints are on.
fn insert_hints(state: &AppState, snap: &Snapshot, out: &mut HeaderMap) {
    let hints = &state.inner.settings.hints;
    if snap.state != JobState::Pending || !hints.retry_after {
        return;
    }
    let after = snap.eta.unwrap_or_default().max(hints.min_retry_after);
    insert_retry_after(out, after);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn prefer_wait_parsing() {
        type Case<'a> = (&'a [(&'static str, &'static str)], Option<u64>);
        let table: &[Case<'_>] = &[
            (&[("prefer", "wait=5")], Some(5)),
            (&[("prefer", "respond-async, wait=10")], Some(10)),
            (&[("prefer", "handling=lenient; WAIT = 3")], Some(3)),
            (&[("prefer", "wait=\"7\"")], Some(7)),
            (&[("prefer", "wait=soon")], None),
            (&[("prefer", "wait=-1")], None),
            (&[("prefer", "return=minimal")], None),
            (&[], None),
        ];
        for (h, want) in table {
            assert_eq!(
                prefer_wait(&headers(h)),
                want.map(Duration::from_secs),
                "{h:?}"
            );
        }
    }

    #[test]
    fn detached_headers_keep_the_conditions_only() {
        let h = headers(&[
            ("if-none-match", "\"a\""),
            ("if-none-match", "W/\"b\""),
            ("prefer", "wait=5"),
            ("x-other", "1"),
        ]);
        let kept = detached(&h);
        assert_eq!(kept.len(), 2);
        assert!(none_match(&kept, "\"b\""));
        assert!(none_match(&kept, "\"a\""));
        assert!(kept.get("x-other").is_none());
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let tag = "W/\"j-1-1\"";
        assert!(none_match(
            &headers(&[("if-none-match", "W/\"j-1-1\"")]),
            tag
        ));
        assert!(none_match(&headers(&[("if-none-match", "\"j-1-1\"")]), tag));
        assert!(none_match(
            &headers(&[("if-none-match", "\"x\", W/\"j-1-1\"")]),
            tag
        ));
        assert!(none_match(&headers(&[("if-none-match", "*")]), tag));
        assert!(!none_match(
            &headers(&[("if-none-match", "W/\"j-1-2\"")]),
            tag
        ));
        assert!(!none_match(&headers(&[]), tag));
    }
}
