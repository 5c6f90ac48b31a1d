//! What the change log's routes share (`/v1/events`, `/v1/changes`, `/v1/watches`): the switch,
//! the scope of a request, cursors from the wire, and snapshots.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::sim::changes::{Change, ChangeKind, Cursor, ReadLimits};
use crate::sim::client::ClientId;
use crate::sim::job::{Channel, Job};
use crate::sim::watch::{Scope, WatchSet};

/// How many changes a read may look at per change it may keep: a reader far behind, keeping
/// few, still moves on by this much per read.
const SCAN_PER_KEPT: usize = 16;

/// `404` for every route of the change log when `changes.enabled` is off.
pub(super) fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.inner.settings.changes.enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server has no change log routes (changes.enabled = false); poll the jobs",
        ))
    }
}

/// `404` for a watch set that does not exist (for this client).
pub(super) fn watch_not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no watch set with id `{shown}` (unknown, deleted, or expired after \
             changes.watch_ttl)"
        ),
    )
}

/// What a request of `client` follows: `?watch=ID` (a set it created), else its own jobs.
pub(super) async fn scope(
    state: &AppState,
    client: ClientId,
    watch: Option<&str>,
) -> Result<Scope, ApiError> {
    match watch {
        None => Ok(Scope::Client(client)),
        Some(id) => find_watch(state, id, client)
            .await
            .map(|set| Scope::Watch(set.reading())),
    }
}

/// The watch set `id` of `client` (`404` if none; with the Redis backend, a set this replica
/// does not know yet is looked for again once its copy has caught up).
pub(super) async fn find_watch(
    state: &AppState,
    id: &str,
    client: ClientId,
) -> Result<Arc<WatchSet>, ApiError> {
    if let Some(set) = state.inner.watches.get(id, client) {
        return Ok(set);
    }
    if let Some(redis) = state.redis() {
        redis.catch_up().await.map_err(|_| state.unavailable())?;
        if let Some(set) = state.inner.watches.get(id, client) {
            return Ok(set);
        }
    }
    Err(watch_not_found(id))
}

/// The limits of one read, from `changes.max_batch`.
pub(super) fn limits(state: &AppState) -> ReadLimits {
    let keep = state.inner.settings.changes.max_batch;
    ReadLimits {
        keep,
        scan: keep.saturating_mul(SCAN_PER_KEPT),
    }
}

/// A cursor from the wire: empty is none, anything else must parse (`400 invalid_cursor`).
pub(super) fn parse_cursor(text: &str, from: &str) -> Result<Option<Cursor>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            format!("{from}: {e}"),
        )
    })
}

/// Where a request resumes: `Last-Event-ID` (what an event-stream client sends on its own when
/// it reconnects) wins over `?since=`.
pub(super) fn resume_from(
    headers: &HeaderMap,
    since: Option<&str>,
) -> Result<Option<Cursor>, ApiError> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "Last-Event-ID is not a cursor (not visible ASCII)",
            )
        })?;
        if let Some(cursor) = parse_cursor(text, "Last-Event-ID")? {
            return Ok(Some(cursor));
        }
    }
    match since {
        Some(since) => parse_cursor(since, "since"),
        None => Ok(None),
    }
}

/// The log's head and the jobs `scope` follows, read together (see
/// [`crate::sim::store::JobStore::at_head`]): each job is then reported as of the head.
pub(super) fn snapshot(state: &AppState, scope: &Scope) -> (Cursor, Vec<Arc<Job>>) {
    let store = &state.inner.store;
    match scope.set() {
        None => store.client_jobs(scope.client()),
        Some(set) => store.at_head(|head, lookup| (head, set.members_with(|id| lookup.held(id)))),
    }
}

/// A change as clients see it: its event name (`status` or `gone`) and data.
pub(super) fn change_view(change: &Change) -> (&'static str, Value) {
    match change.kind {
        ChangeKind::Created | ChangeKind::Ended => (
            "status",
            serde_json::to_value(change.job.body()).unwrap_or(Value::Null),
        ),
        ChangeKind::Gone => ("gone", json!({ "id": change.job.id, "reason": "expired" })),
    }
}

/// Counts a job status reported on `channel` (a terminal one, of `job`, also as detected).
pub(super) fn count_reported(
    state: &AppState,
    channel: Channel,
    result: &'static str,
    job: Option<&Job>,
) {
    state
        .inner
        .metrics
        .status_response(channel.as_str(), result);
    if let Some(job) = job {
        state.report_terminal(job, channel, Instant::now());
    }
}

/// Counts a change reported on `channel` (see [`count_reported`]).
pub(super) fn count_change(state: &AppState, channel: Channel, change: &Change) {
    match change.kind {
        ChangeKind::Created => count_reported(state, channel, change.job.state.as_str(), None),
        ChangeKind::Ended => {
            let job = state.inner.store.get(&change.job.id);
            count_reported(state, channel, change.job.state.as_str(), job.as_deref());
        }
        ChangeKind::Gone => {}
    }
}
