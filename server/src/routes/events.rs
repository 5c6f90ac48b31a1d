//! `GET /v1/jobs/{id}/events`: Server-Sent Events.
//!
//! The stream sends the current status at once (unless `Last-Event-ID` says the client has it),
//! `progress` events while pending, the terminal `status` event, and then ends. Like a
//! long-poll, it sleeps until the job's completion instant, or until the job is canceled or
//! replaced (or, for a job of a shared log, until the log says it ended); nothing ticks for it
//! but the optional progress interval and the keep-alive. A stream holds one timer, set to the
//! earliest of the three instants (its memory is what a held stream costs: docs/benchmarks.md).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::path::JobId;
use crate::AppState;
use crate::error::ApiError;
use crate::sim::job::{Channel, Job, State as JobState};
use crate::time::later;

/// Keeps the `sim_sse_streams` gauge and the stream cap right however the stream ends.
struct Open {
    state: AppState,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.state.inner.metrics.sse_streams(-1.0);
    }
}

struct Stream_ {
    open: Open,
    id: String,
    job: Arc<Job>,
    /// Version the client already has.
    seen: u64,
    started: bool,
    done: bool,
    next_progress: Option<Instant>,
    progress_every: Duration,
    /// A comment this long after the last event (`sse.keepalive`).
    keep_alive: Duration,
}

/// `GET /v1/jobs/{id}/events`
pub(crate) async fn events(
    State(state): State<AppState>,
    JobId(id): JobId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    if !inner.settings.sse.enabled {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server does not serve events (sse.enabled = false); poll the status URL",
        ));
    }
    let job = state.find(&id).await?;
    let permit = Arc::clone(&inner.sse_permits)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "too many event streams are open (sse.max_streams); poll instead or retry later",
            )
            .with_retry_after(Duration::from_secs(1))
        })?;
    job.count_request();
    inner.metrics.sse_streams(1.0);
    let seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let progress_every = inner.settings.sse.progress_interval;
    let stream = Stream_ {
        open: Open {
            state: state.clone(),
            _permit: permit,
        },
        id,
        job,
        seen,
        started: false,
        done: false,
        next_progress: (!progress_every.is_zero()).then(|| later(Instant::now(), progress_every)),
        progress_every,
        keep_alive: inner.settings.sse.keepalive,
    };
    Ok(Sse::new(events_of(stream)).into_response())
}

fn status_event(s: &Stream_, now: Instant) -> (Event, bool) {
    let snap = s.job.snapshot(now);
    let body = s.job.body(&snap, s.open.state.inner.settings.hints.eta);
    let event = Event::default()
        .event("status")
        .id(snap.version.to_string())
        .json_data(body)
        .unwrap_or_else(|_| Event::default().comment("unserializable"));
    (event, snap.state != JobState::Pending)
}

fn events_of(s: Stream_) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(s, |mut s| async move {
        if s.done {
            return None;
        }
        let state = s.open.state.clone();
        if !s.started {
            s.started = true;
            let now = Instant::now();
            let snap = s.job.snapshot(now);
            if snap.version > s.seen {
                let (event, terminal) = status_event(&s, now);
                s.seen = snap.version;
                state
                    .inner
                    .metrics
                    .status_response(Channel::Sse.as_str(), snap.state.as_str());
                if terminal {
                    state.report_terminal(&s.job, Channel::Sse, now);
                    s.done = true;
                }
                return Some((Ok(event), s));
            }
            if snap.state != JobState::Pending {
                return None;
            }
        }
        let mut closing = state.inner.closing.subscribe();
        // Armed before the completion instant is read, so a cancel in between is never missed.
        let job = Arc::clone(&s.job);
        let changed = job.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // A job of a shared log wakes when the log decides its end (`changed`), not by the clock.
        let completes = s.job.wakes_at();
        let progress_at = s.next_progress.filter(|p| completes.is_none_or(|c| *p < c));
        let quiet_until = later(Instant::now(), s.keep_alive);
        let wake = [completes, progress_at]
            .into_iter()
            .flatten()
            .fold(quiet_until, Instant::min);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if completes.is_some_and(|c| c <= now) {
                    let (event, _) = status_event(&s, now);
                    let result = s.job.snapshot(now).state.as_str();
                    state.inner.metrics.status_response(Channel::Sse.as_str(), result);
                    state.report_terminal(&s.job, Channel::Sse, now);
                    s.done = true;
                    return Some((Ok(event), s));
                }
                if progress_at.is_some_and(|p| p <= now) {
                    s.next_progress = progress_at.map(|p| later(p, s.progress_every));
                    let snap = s.job.snapshot(now);
                    let body = s.job.body(&snap, state.inner.settings.hints.eta);
                    let event = Event::default()
                        .event("progress")
                        .json_data(body)
                        .unwrap_or_else(|_| Event::default().comment("unserializable"));
                    return Some((Ok(event), s));
                }
                Some((Ok(Event::default().comment("keep-alive")), s))
            }
            _ = changed => {
                // Canceled (the same job, now terminal) or replaced (legacy reset: follow the
                // new one from its start).
                match state.inner.store.get(&s.id) {
                    Some(job) => {
                        s.job = job;
                        let now = Instant::now();
                        let (event, terminal) = status_event(&s, now);
                        if terminal {
                            let result = s.job.snapshot(now).state.as_str();
                            state.inner.metrics.status_response(Channel::Sse.as_str(), result);
                            state.report_terminal(&s.job, Channel::Sse, now);
                        }
                        s.done = terminal;
                        Some((Ok(event), s))
                    }
                    None => None,
                }
            }
            _ = closing.wait_for(|c| *c) => None,
        }
    })
}
