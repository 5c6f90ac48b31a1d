//! `GET /v1/events`: the multiplexed change stream — one connection for many jobs.
//!
//! A stream follows a *scope*: its client's own jobs, or a watch set (`?watch=ID`). It starts
//! in one of two ways:
//!
//! * **fresh** (no cursor): a `snapshot` event per job, each as the change log says it was at
//!   the head `H` read with the list (see `JobStore::at_head`), then `snapshot_end` with id
//!   `H`, then every change after `H`;
//! * **resumed** (`Last-Event-ID`, else `?since=`): every change after that cursor — or, when
//!   the log cannot continue from it (history gone, another epoch), a `reset` event and a fresh
//!   start. Never a silent gap, never an error for a cursor that merely aged.
//!
//! Only the events a client may resume *after* carry an id: changes, `snapshot_end` and
//! bookmarks. A snapshot event carries none, so a client cut off mid-snapshot reconnects with
//! the cursor it had before (or none) and gets the snapshot again, never half of one.
//!
//! Nothing ticks per job or per stream: a stream sleeps until the log's head moves, its
//! bookmark is due (`changes.bookmark_interval` after the last event it sent), its jittered
//! lifetime (`changes.max_lifetime`) ends, its watch set is deleted, or the server shuts down;
//! the last three send a final bookmark and end the stream. A change is read out of the log
//! only when the client has taken the previous events (the body is polled by hyper as the
//! socket drains), so a slow client holds at most one batch; one that falls behind the
//! retained history gets a reset, as a resume would.
//!
//! Every append wakes every open stream, and each filters what it reads by its scope: a cost of
//! streams × changes, cheap to thousands of streams (a filter is a hash lookup). Past that, an
//! index of streams by client and by job would wake only the ones a change concerns.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::feed::{
    change_view, count_change, count_reported, enabled, limits, resume_from, scope, snapshot,
};
use super::jobs::client_of;
use crate::AppState;
use crate::error::ApiError;
use crate::sim::changes::{Change, Cursor, Read, ReadLimits};
use crate::sim::client::ClientId;
use crate::sim::job::{Channel, Job};
use crate::sim::streams::{Full, lifetime};
use crate::sim::watch::Scope;
use crate::time::later;

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    /// Resume after this cursor (`Last-Event-ID` wins).
    since: Option<String>,
    /// Follow this watch set instead of the client's own jobs.
    watch: Option<String>,
}

/// `GET /v1/events[?watch=ID][&since=CURSOR]`
pub(crate) async fn events(
    State(state): State<AppState>,
    client: Option<Extension<ClientId>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let client = client_of(client);
    let since = resume_from(&headers, query.since.as_deref())?;
    if let Some(cursor) = since {
        // Another replica's cursor, ahead of this one's copy of the log: catch up first.
        state.reach(cursor.epoch, cursor.offset).await?;
    }
    let scope = scope(&state, client, query.watch.as_deref()).await?;
    let slot = Slot::take(&state, client)?;
    let feed = Feed::open(slot, scope, since);
    let mut response = Sse::new(feed.events()).into_response();
    // Tells a buffering proxy (nginx) to pass the events on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// A stream's slot in `changes.max_streams` and `max_streams_per_client`, and its place in
/// `sim_change_streams`, however the stream ends.
struct Slot {
    state: AppState,
    client: ClientId,
}

impl Slot {
    fn take(state: &AppState, client: ClientId) -> Result<Self, ApiError> {
        state.inner.change_streams.take(client).map_err(|full| {
            let (status, message) = match full {
                Full::Client => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "this client has changes.max_streams_per_client change streams open; \
                     close one, or retry later",
                ),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "changes.max_streams change streams are open; retry later, or long-poll \
                     GET /v1/changes",
                ),
            };
            ApiError::new(status, "too_many_streams", message)
                .with_retry_after(Duration::from_secs(1))
        })?;
        state.inner.metrics.change_streams(1.0);
        Ok(Slot {
            state: state.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.inner.change_streams.release(self.client);
        self.state.inner.metrics.change_streams(-1.0);
    }
}

/// A snapshot being sent: the jobs left, as of `at`.
struct Snapshot {
    at: Cursor,
    jobs: std::vec::IntoIter<Arc<Job>>,
    sent: usize,
}

/// Why a stream ends, as its final bookmark says.
#[derive(Debug, Clone, Copy)]
enum End {
    Lifetime,
    Shutdown,
    WatchDeleted,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Lifetime => "lifetime",
            End::Shutdown => "shutdown",
            End::WatchDeleted => "watch_deleted",
        }
    }
}

/// One open stream.
struct Feed {
    /// Held for the stream's life; its state is the server's.
    slot: Slot,
    /// What it follows.
    scope: Scope,
    /// Everything up to here has been reported (or skipped as out of scope).
    pos: Cursor,
    /// A snapshot in progress.
    snapshot: Option<Snapshot>,
    /// Events ready to send, oldest first: at most one read's worth.
    queue: VecDeque<Event>,
    /// The log's head, to sleep until it moves.
    head: watch::Receiver<u64>,
    /// Turns true at shutdown.
    closing: watch::Receiver<bool>,
    /// Turns true when the watch set is deleted or expires.
    deleted: Option<watch::Receiver<bool>>,
    /// When a bookmark is due if nothing else is sent.
    bookmark_at: Instant,
    /// When the stream ends.
    ends_at: Instant,
    /// The final bookmark is queued: end once the queue is sent.
    done: bool,
    /// A resumed stream that has sent nothing yet: it greets with a bookmark at once, so
    /// that every connection's first event comes without delay and a client can tell a
    /// silent connection from a quiet one at once.
    greet: bool,
}

impl Feed {
    fn open(slot: Slot, scope: Scope, since: Option<Cursor>) -> Self {
        let state = slot.state.clone();
        let inner = &state.inner;
        let settings = &inner.settings.changes;
        let now = Instant::now();
        let mut feed = Feed {
            head: inner.store.changes().subscribe(),
            closing: inner.closing.subscribe(),
            deleted: scope.set().map(|set| set.deleted()),
            pos: inner.store.changes().head(),
            snapshot: None,
            queue: VecDeque::new(),
            bookmark_at: later(now, settings.bookmark_interval),
            ends_at: later(now, lifetime(settings)),
            done: false,
            greet: false,
            scope,
            slot,
        };
        let log = inner.store.changes();
        let resumed = since.filter(|&cursor| {
            let probe = log.read(cursor, ReadLimits { keep: 0, scan: 0 }, |_| false);
            matches!(probe, Read::Changes { .. })
        });
        match (since, resumed) {
            (_, Some(cursor)) => {
                inner.metrics.change_stream_resumed();
                let watched = match feed.scope.set() {
                    Some(set) => set.len(),
                    None => inner.store.held_by(feed.scope.client()),
                };
                inner.metrics.change_stream_jobs(watched);
                feed.pos = cursor;
                feed.greet = true;
            }
            (Some(stale), None) => {
                feed.reset(stale);
                inner
                    .metrics
                    .change_stream_jobs(feed.snapshot.as_ref().map_or(0, |s| s.jobs.len()));
            }
            (None, None) => {
                feed.start_snapshot();
                inner
                    .metrics
                    .change_stream_jobs(feed.snapshot.as_ref().map_or(0, |s| s.jobs.len()));
            }
        }
        feed
    }

    fn state(&self) -> &AppState {
        &self.slot.state
    }

    fn start_snapshot(&mut self) {
        let (at, jobs) = snapshot(self.state(), &self.scope);
        self.snapshot = Some(Snapshot {
            at,
            jobs: jobs.into_iter(),
            sent: 0,
        });
    }

    /// Tells the client its cursor cannot be continued (`stale`), and starts a snapshot.
    fn reset(&mut self, stale: Cursor) {
        self.state().inner.metrics.change_reset("stream");
        let head = self.state().inner.store.changes().head();
        let reason = if stale.epoch == head.epoch {
            "history"
        } else {
            "epoch"
        };
        self.queue
            .push_back(data_event("reset", None, &json!({ "reason": reason })));
        self.start_snapshot();
    }

    fn bookmark(&mut self, end: Option<End>) {
        let pos = self.pos.to_string();
        let data = match end {
            None => json!({ "cursor": pos }),
            Some(end) => json!({ "cursor": pos, "end": end.as_str() }),
        };
        let kind = match (end, self.greet) {
            (Some(_), _) => "final",
            (None, true) => "resume",
            (None, false) => "idle",
        };
        self.greet = false;
        self.state().inner.metrics.change_bookmark(kind);
        self.queue
            .push_back(data_event("bookmark", Some(self.pos), &data));
        self.done |= end.is_some();
    }

    fn change_event(&self, change: &Change) -> Event {
        count_change(self.state(), Channel::Stream, change);
        let (name, data) = change_view(change);
        data_event(
            name,
            Some(Cursor::new(self.pos.epoch, change.offset)),
            &data,
        )
    }

    /// The next event to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                self.bookmark_at = later(
                    Instant::now(),
                    self.state().inner.settings.changes.bookmark_interval,
                );
                return Some(event);
            }
            if self.done {
                return None;
            }
            if let Some(snap) = self.snapshot.as_mut() {
                let at = snap.at;
                match snap.jobs.next() {
                    Some(job) => {
                        let Some(body) = job.body_as_of(at.offset, Instant::now()) else {
                            continue;
                        };
                        snap.sent += 1;
                        let event = data_event("snapshot", None, &body);
                        let terminal = body.result != "pending";
                        count_reported(
                            self.state(),
                            Channel::Stream,
                            body.result,
                            terminal.then_some(&*job),
                        );
                        self.queue.push_back(event);
                    }
                    None => {
                        let data = json!({ "cursor": at.to_string(), "jobs": snap.sent });
                        self.queue
                            .push_back(data_event("snapshot_end", Some(at), &data));
                        self.pos = at;
                        self.snapshot = None;
                    }
                }
                continue;
            }
            // A stream that always has something to send still ends on time.
            if *self.closing.borrow() {
                self.bookmark(Some(End::Shutdown));
                continue;
            }
            if Instant::now() >= self.ends_at {
                self.bookmark(Some(End::Lifetime));
                continue;
            }
            let limits = limits(self.state());
            // Marked seen before reading, so a change logged meanwhile wakes the wait below.
            self.head.borrow_and_update();
            let read = {
                let scope = &self.scope;
                self.state()
                    .inner
                    .store
                    .changes()
                    .read(self.pos, limits, |c| scope.admits(c))
            };
            match read {
                Read::Reset { .. } => {
                    let stale = self.pos;
                    self.reset(stale);
                    continue;
                }
                Read::Changes {
                    changes,
                    next,
                    more,
                } => {
                    for change in &changes {
                        let event = self.change_event(change);
                        self.queue.push_back(event);
                    }
                    self.pos = next;
                    if !self.queue.is_empty() || more {
                        self.greet = false;
                        continue;
                    }
                }
            }
            if self.greet {
                // Resumed with nothing to catch up on: say so at once.
                self.bookmark(None);
                continue;
            }
            self.wait().await;
        }
    }

    /// Sleeps until there is something to do, queueing a bookmark when one is due.
    async fn wait(&mut self) {
        let deleted = self.deleted.as_mut();
        let deleted = async move {
            match deleted {
                Some(rx) => {
                    let _ = rx.wait_for(|d| *d).await;
                }
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            biased;
            _ = self.closing.wait_for(|c| *c) => Some(End::Shutdown),
            () = deleted => Some(End::WatchDeleted),
            () = tokio::time::sleep_until(self.ends_at) => Some(End::Lifetime),
            Ok(()) = self.head.changed() => return,
            () = tokio::time::sleep_until(self.bookmark_at) => None,
        };
        self.bookmark(end);
    }

    fn events(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures_util::stream::unfold(self, |mut feed| async move {
            let event = feed.next().await?;
            Some((Ok(event), feed))
        })
    }
}

/// An event named `name`, with `id` if given, and `data` as JSON.
fn data_event(name: &'static str, id: Option<Cursor>, data: &impl Serialize) -> Event {
    let event = Event::default().event(name);
    let event = match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    };
    event
        .json_data(data)
        .unwrap_or_else(|_| Event::default().comment("unserializable"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use futures_util::StreamExt;
    use tower::ServiceExt;

    use crate::sim::client::ClientId;
    use crate::{AppState, JobSpec, Settings, app};

    /// The names of the next `n` events of an event-stream body, read only when asked for: the
    /// server cannot read ahead of this client.
    async fn names(body: &mut axum::body::BodyDataStream, n: usize) -> Vec<String> {
        let mut names = Vec::new();
        let mut text = String::new();
        while names.len() < n {
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .expect("an event")
                .expect("the stream goes on")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if let Some(name) = block.lines().find_map(|l| l.strip_prefix("event: ")) {
                    names.push(name.to_owned());
                }
            }
        }
        names
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_the_history_gets_a_reset_and_a_new_snapshot() {
        let mut settings = Settings::default();
        settings.changes.history = 4;
        let state = AppState::new(settings).unwrap();
        // Requests without connection info are the `Unknown` client's.
        let job = || JobSpec {
            duration: Some(Duration::from_secs(3600)),
            client: Some(ClientId::Unknown),
            ..JobSpec::default()
        };
        state.create_job(job()).unwrap();
        let request = Request::get("/v1/events").body(Body::empty()).unwrap();
        let response = app(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body().into_data_stream();
        assert_eq!(names(&mut body, 2).await, ["snapshot", "snapshot_end"]);
        // More changes than the history holds, while the client reads nothing.
        for _ in 0..6 {
            state.create_job(job()).unwrap();
        }
        let mut want = vec!["reset".to_owned()];
        want.extend(std::iter::repeat_n("snapshot".to_owned(), 7));
        want.push("snapshot_end".to_owned());
        assert_eq!(names(&mut body, 9).await, want);
        let text = state.render_metrics();
        assert!(
            text.contains("sim_change_resets_total{channel=\"stream\"} 1"),
            "{text}"
        );
    }
}
