//! `POST /v1/watches`, `GET`/`PATCH`/`DELETE /v1/watches/{id}`: watch sets (see
//! [`crate::sim::watch`] for why a set and not a list in the URL, and how a job joins one at a
//! cursor).
//!
//! Every answer that adds jobs carries, for each of them, its status as of the answer's
//! `cursor`; a stream or long-poll on the set reports their changes after it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::body::optional_json_as;
use super::feed::{enabled, find_watch, watch_not_found};
use super::jobs::client_of;
use super::path::JobId;
use crate::AppState;
use crate::error::ApiError;
use crate::sim::client::ClientId;
use crate::sim::job::Job;
use crate::sim::redis::{Op, Redis};
use crate::sim::watch::{MAX_ID_LEN, Refused, WatchSet};

/// Body of `POST /v1/watches` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWatch {
    #[serde(default)]
    jobs: Vec<String>,
}

/// Body of `PATCH /v1/watches/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeWatch {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

fn refused(why: Refused, max_jobs: usize) -> ApiError {
    match why {
        Refused::ClientFull => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_watch_sets",
            "this client holds changes.max_watch_sets_per_client watch sets; delete one it no \
             longer reads, or retry when one expires",
        )
        .with_retry_after(Duration::from_secs(1)),
        Refused::Full => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "watch_sets_full",
            "the server holds changes.max_watch_sets watch sets; retry later",
        )
        .with_retry_after(Duration::from_secs(1)),
        Refused::TooLarge => ApiError::unprocessable(
            "watch_set_too_large",
            format!(
                "a watch set holds at most {max_jobs} jobs (changes.max_watch_jobs); remove \
                 finished ones or use another set"
            ),
        ),
    }
}

/// The ids of a body, each checked, duplicates dropped (first one kept).
fn ids<'a>(field: &str, ids: &'a [String]) -> Result<Vec<&'a str>, ApiError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for id in ids {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(ApiError::unprocessable(
                "invalid_watch",
                format!("`{field}` holds job ids of 1 to {MAX_ID_LEN} bytes"),
            ));
        }
        if seen.insert(id.as_str()) {
            out.push(id.as_str());
        }
    }
    Ok(out)
}

/// What adding jobs to a set found, as of `cursor`.
struct Added {
    cursor: crate::sim::changes::Cursor,
    jobs: Vec<Arc<Job>>,
    not_found: Vec<String>,
    size: usize,
}

/// Adds `add` to `set` and removes `remove`, at the log's head (see the module docs).
fn change(
    state: &AppState,
    set: &WatchSet,
    client: ClientId,
    add: &[&str],
    remove: &[&str],
) -> Result<Added, ApiError> {
    let max = state.inner.watches.max_jobs();
    let now = Instant::now();
    state.inner.store.at_head(|cursor, lookup| {
        let mut jobs = Vec::new();
        let mut not_found = Vec::new();
        for id in add {
            match lookup.get(id) {
                Some((job, owner)) if owner.is_none_or(|o| o == client) => jobs.push(job),
                _ => not_found.push((*id).to_owned()),
            }
        }
        let found: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let gone = |id: &str| lookup.get(id).is_none();
        let size = set
            .change(&found, remove, cursor.offset, max, gone, now)
            .map_err(|why| refused(why, max))?;
        Ok(Added {
            cursor,
            jobs,
            not_found,
            size,
        })
    })
}

/// [`change`] through Redis (the Redis backend): the script decides and logs the change, and
/// the answer is read from this replica's copy once it has applied it. `create`: a new set.
async fn change_shared(
    state: &AppState,
    redis: &Redis,
    id: &str,
    client: ClientId,
    (add, remove): (&[&str], &[&str]),
    create: bool,
) -> Result<(Arc<WatchSet>, Added), ApiError> {
    let s = &state.inner.settings.changes;
    let json = |ids: &[&str]| serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    let args = [
        "change".to_owned(),
        client.key(),
        id.to_owned(),
        if create { "1" } else { "0" }.to_owned(),
        json(add),
        json(remove),
        s.max_watch_jobs.to_string(),
        s.max_watch_sets_per_client.to_string(),
        s.max_watch_sets.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reply = redis
        .run(Op::Watch, &args)
        .await
        .map_err(|_| state.unavailable())?;
    let max = s.max_watch_jobs;
    let why = match reply.first().map(String::as_str) {
        Some("ok") => None,
        Some("client_full") => Some(Refused::ClientFull),
        Some("full") => Some(Refused::Full),
        Some("too_large") => Some(Refused::TooLarge),
        Some("none") => return Err(watch_not_found(id)),
        _ => return Err(state.unavailable()),
    };
    if let Some(why) = why {
        return Err(refused(why, max));
    }
    let field = |i: usize| reply.get(i).map(String::as_str).unwrap_or_default();
    let offset: u64 = field(1).parse().unwrap_or(0);
    let ids = |text: &str| serde_json::from_str::<Vec<String>>(text).unwrap_or_default();
    redis
        .applied(offset)
        .await
        .map_err(|_| state.unavailable())?;
    let set = state
        .inner
        .watches
        .get(id, client)
        .ok_or_else(|| watch_not_found(id))?;
    let mut not_found = ids(field(4));
    let mut jobs = Vec::new();
    for job in ids(field(3)) {
        match state.inner.store.get(&job) {
            Some(found) => jobs.push(found),
            None => not_found.push(job),
        }
    }
    let epoch = state.inner.store.changes().head().epoch;
    Ok((
        set,
        Added {
            cursor: crate::sim::changes::Cursor::new(epoch, offset),
            jobs,
            not_found,
            size: field(2).parse().unwrap_or(0),
        },
    ))
}

fn answer(set: &WatchSet, added: &Added) -> Value {
    let now = Instant::now();
    let mut not_found = added.not_found.clone();
    let jobs: Vec<_> = added
        .jobs
        .iter()
        .filter_map(|job| {
            let body = job.body_as_of(added.cursor.offset, now);
            if body.is_none() {
                not_found.push(job.id.clone());
            }
            body
        })
        .collect();
    json!({
        "id": set.id,
        "cursor": added.cursor.to_string(),
        "size": added.size,
        "jobs": jobs,
        "not_found": not_found,
        "events_url": format!("/v1/events?watch={}", set.id),
        "changes_url": format!("/v1/changes?watch={}", set.id),
    })
}

/// `POST /v1/watches`: `201` with the new set and the status of each job it holds.
pub(crate) async fn create(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let client = client_of(client);
    let req: CreateWatch = optional_json_as(&headers, body, "invalid_watch")?.unwrap_or_default();
    let add = ids("jobs", &req.jobs)?;
    let watches = &state.inner.watches;
    if add.len() > watches.max_jobs() {
        return Err(refused(Refused::TooLarge, watches.max_jobs()));
    }
    if let Some(redis) = state.redis() {
        let id = format!("w-{:016x}", rand::random::<u64>());
        let (set, added) = change_shared(&state, redis, &id, client, (&add, &[]), true).await?;
        return Ok(created(&set, &added));
    }
    let set = watches
        .create(client, Instant::now())
        .map_err(|why| refused(why, watches.max_jobs()))?;
    let added = match change(&state, &set, client, &add, &[]) {
        Ok(added) => added,
        Err(e) => {
            watches.delete(&set.id, client);
            return Err(e);
        }
    };
    Ok(created(&set, &added))
}

/// `201` with the new set.
fn created(set: &WatchSet, added: &Added) -> Response {
    let mut response = (StatusCode::CREATED, Json(answer(set, added))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/watches/{}", set.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `PATCH /v1/watches/{id}`: adds and removes jobs, all or nothing.
pub(crate) async fn patch(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    JobId(id): JobId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let client = client_of(client);
    let req: ChangeWatch = optional_json_as(&headers, body, "invalid_watch")?.unwrap_or_default();
    let (add, remove) = (ids("add", &req.add)?, ids("remove", &req.remove)?);
    if let Some(redis) = state.redis() {
        let (set, added) =
            change_shared(&state, redis, &id, client, (&add, &remove), false).await?;
        return Ok(Json(answer(&set, &added)).into_response());
    }
    let set = state
        .inner
        .watches
        .get(&id, client)
        .ok_or_else(|| watch_not_found(&id))?;
    let added = change(&state, &set, client, &add, &remove)?;
    Ok(Json(answer(&set, &added)).into_response())
}

/// `GET /v1/watches/{id}`: the ids it holds.
pub(crate) async fn get(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let set = find_watch(&state, &id, client_of(client)).await?;
    let jobs = set.members();
    Ok(Json(json!({"id": set.id, "size": jobs.len(), "jobs": jobs})).into_response())
}

/// `DELETE /v1/watches/{id}`: `204`; streams reading it end.
pub(crate) async fn delete(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let client = client_of(client);
    if let Some(redis) = state.redis() {
        let reply = redis
            .run(Op::Watch, &["delete", &client.key(), &id])
            .await
            .map_err(|_| state.unavailable())?;
        let offset = match reply.first().map(String::as_str) {
            Some("ok") => reply.get(1).and_then(|o| o.parse().ok()).unwrap_or(0),
            _ => return Err(watch_not_found(&id)),
        };
        redis
            .applied(offset)
            .await
            .map_err(|_| state.unavailable())?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if state.inner.watches.delete(&id, client) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(watch_not_found(&id))
    }
}
