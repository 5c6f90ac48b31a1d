//! `GET /v1/changes`: the change stream's long-poll fallback, for clients that cannot hold an
//! event stream (a proxy that buffers them, a platform without them).
//!
//! One request returns the changes after `?since=` that its scope follows (the client's jobs,
//! or `?watch=`), at most `changes.max_batch`, and the cursor to ask from next. With nothing
//! to return and `Prefer: wait=N`, it is held — like a job's long-poll, capped by
//! `longpoll.max_wait` and counted in `longpoll.max_waiters` — until a change it follows is
//! logged or the wait runs out, then answered (with what came, or with nothing and a cursor
//! moved past what it does not follow). The hold sleeps until the log's head moves; nothing
//! polls. A cursor the log cannot continue is answered at once with `"reset": true`: the
//! client resyncs (a batched read of its jobs) and goes on from the answer's cursor.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::feed::{change_view, count_change, enabled, limits, parse_cursor, scope};
use super::jobs::client_of;
use super::status::{Held, prefer_wait};
use crate::AppState;
use crate::error::ApiError;
use crate::sim::changes::{Cursor, Read};
use crate::sim::client::ClientId;
use crate::sim::job::Channel;
use crate::time::later;

/// Query of `GET /v1/changes`.
#[derive(Debug, Deserialize)]
pub(crate) struct ChangesQuery {
    /// Changes after this cursor; without it, the head (and nothing else) is answered.
    since: Option<String>,
    /// Follow this watch set instead of the client's own jobs.
    watch: Option<String>,
}

/// `GET /v1/changes?since=CURSOR[&watch=ID]`, `Prefer: wait=N`
pub(crate) async fn changes(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let since = match query.since.as_deref() {
        Some(text) => parse_cursor(text, "since")?,
        None => None,
    };
    if let Some(cursor) = since {
        // Another replica's cursor, ahead of this one's copy of the log: catch up first.
        state.reach(cursor.epoch, cursor.offset).await?;
    }
    let scope = scope(&state, client_of(client), query.watch.as_deref()).await?;
    let inner = &state.inner;
    let log = inner.store.changes();
    let metrics = &inner.metrics;
    let Some(mut cursor) = since else {
        metrics.changes_longpoll("empty");
        return Ok(answer(log.head(), false, None, Vec::new(), false, None));
    };
    let limits = limits(&state);
    // The hold, if asked for and a waiter's place is free.
    let wait = prefer_wait(&headers).filter(|_| inner.settings.longpoll.enabled);
    let permit = wait.and_then(|_| Arc::clone(&inner.longpoll_permits).try_acquire_owned().ok());
    let applied = wait
        .filter(|_| permit.is_some())
        .map(|w| w.min(inner.settings.longpoll.max_wait));
    let deadline = later(Instant::now(), applied.unwrap_or_default());
    let mut head = log.subscribe();
    let mut closing = inner.closing.subscribe();
    let mut held = None;
    loop {
        // Looked at before reading, so a change logged meanwhile is seen by the wait below.
        head.borrow_and_update();
        match log.read(cursor, limits, |c| scope.admits(c)) {
            Read::Reset { head } => {
                metrics.change_reset("changes");
                metrics.changes_longpoll("reset");
                let reason = if cursor.epoch == head.epoch {
                    "history"
                } else {
                    "epoch"
                };
                return Ok(answer(head, true, Some(reason), Vec::new(), false, applied));
            }
            Read::Changes {
                changes,
                next,
                more,
            } => {
                cursor = next;
                if !changes.is_empty() || more || Instant::now() >= deadline {
                    let outcome = if changes.is_empty() {
                        "empty"
                    } else {
                        "changes"
                    };
                    metrics.changes_longpoll(outcome);
                    let shown = changes
                        .iter()
                        .map(|change| {
                            count_change(&state, Channel::Changes, change);
                            let (event, data) = change_view(change);
                            let at = Cursor::new(cursor.epoch, change.offset);
                            json!({ "event": event, "cursor": at.to_string(), "data": data })
                        })
                        .collect();
                    return Ok(answer(cursor, false, None, shown, more, applied));
                }
            }
        }
        held.get_or_insert_with(|| Held::new(&state));
        tokio::select! {
            _ = head.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
            _ = closing.wait_for(|c| *c) => {
                metrics.changes_longpoll("empty");
                return Ok(answer(cursor, false, None, Vec::new(), false, applied));
            }
        }
        if state.redis().is_some_and(|redis| !redis.is_live()) {
            // The copy may miss changes while the shared store is away.
            return Err(state.unavailable());
        }
    }
}

/// The answer: `{"cursor", "reset", "changes", "more"}` (and `"reason"` with a reset), with
/// `Preference-Applied` when it was held.
fn answer(
    cursor: Cursor,
    reset: bool,
    reason: Option<&'static str>,
    changes: Vec<Value>,
    more: bool,
    applied: Option<std::time::Duration>,
) -> Response {
    let mut body = json!({
        "cursor": cursor.to_string(),
        "reset": reset,
        "changes": changes,
        "more": more,
    });
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    let mut response = Json(body).into_response();
    if let Some(wait) = applied {
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
            headers.insert("preference-applied", v);
        }
        headers.insert(header::VARY, HeaderValue::from_static("prefer"));
    }
    response
}
