//! A scripted network for tests: replies in order, each after its latency, and a log of what
//! was sent when. Both drivers read through it (the single wait via its source, the job set
//! directly), so the same script can be played to each.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream;
use tokio::time::Instant;
use url::Url;

use super::source::{ReadRequest, Reading, Subscribed};
use super::wire::{Exchanged, ManyRequest, Wire};
use super::{Capabilities, FallbackReason, RemoteCancel};
use crate::context::Context;
use crate::error::{Error, Unavailable, UnexpectedResponse, Unreachable};
use crate::jobset::{RequestBudget, SharedBudget};
use crate::model::{JobState, JobStatus};
use crate::poll::LearnedDurations;
use crate::transport::answer::{Meta, ReadOutcome};
use crate::transport::signals::{Signals, Throttle};
use crate::transport::sse::{EventStream, SseEvent};

/// One scripted answer to a status read.
pub(crate) struct Reply {
    /// How long the answer takes.
    after: Duration,
    /// The answer, made when it arrives.
    make: Box<dyn FnOnce() -> Reading + Send>,
}

impl Reply {
    /// `outcome`, after `after`, in one attempt.
    pub(crate) fn new(
        after: Duration,
        outcome: impl FnOnce() -> ReadOutcome + Send + 'static,
    ) -> Self {
        Reply {
            after,
            make: Box::new(move || Reading {
                outcome: outcome(),
                attempts: 1,
                hedges: 0,
                signals: Some(Signals::default()),
            }),
        }
    }

    /// A reply whose reading is made whole.
    pub(crate) fn reading(
        after: Duration,
        make: impl FnOnce() -> Reading + Send + 'static,
    ) -> Self {
        Reply {
            after,
            make: Box::new(make),
        }
    }
}

/// One scripted answer to a subscription.
pub(crate) enum StreamReply {
    /// Not a stream.
    Refused(FallbackReason),
    /// A stream: each event after its delay (from the one before), then the end.
    Events(Vec<(Duration, SseEvent)>),
}

/// What was sent: when (from the script's start), what, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) at_ms: u64,
    /// The URL's path.
    pub(crate) path: String,
    /// `status`, `long_poll`, `events` or `cancel`.
    pub(crate) kind: &'static str,
    pub(crate) etag: Option<String>,
    pub(crate) hold_s: Option<u64>,
}

struct State {
    start: Instant,
    reads: VecDeque<Reply>,
    streams: VecDeque<StreamReply>,
    /// How a cancel is answered: after how long, with what.
    cancel: (Duration, RemoteCancel),
    /// Whether batched reads are answered (every job named, pending, at once).
    batches: bool,
    sent: Vec<Sent>,
}

/// The scripted network; clones share the script.
#[derive(Clone)]
pub(crate) struct Script(Arc<Mutex<State>>);

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Script").field(&self.sent()).finish()
    }
}

impl Script {
    /// A script that starts now. Reads past its replies are answered "pending" at once;
    /// subscriptions past its stream replies are refused as not supported.
    pub(crate) fn new(reads: Vec<Reply>, streams: Vec<StreamReply>) -> Self {
        Script(Arc::new(Mutex::new(State {
            start: Instant::now(),
            reads: reads.into(),
            streams: streams.into(),
            cancel: (Duration::ZERO, RemoteCancel::Canceled),
            batches: false,
            sent: Vec::new(),
        })))
    }

    /// Answers a cancel with `outcome` after `after` (by default at once, canceled).
    pub(crate) fn on_cancel(self, after: Duration, outcome: RemoteCancel) -> Self {
        self.0.lock().unwrap().cancel = (after, outcome);
        self
    }

    /// Answers batched reads (`GET /v1/jobs?ids=`): every job named is pending, at once.
    /// Each is logged as `batch`, its path `/v1/jobs?ids=` with the ids as sent.
    pub(crate) fn with_batches(self) -> Self {
        self.0.lock().unwrap().batches = true;
        self
    }

    /// Everything sent so far.
    pub(crate) fn sent(&self) -> Vec<Sent> {
        self.0.lock().unwrap().sent.clone()
    }

    fn log(&self, url: &Url, kind: &'static str, request: Option<&ReadRequest>) {
        self.log_path(url.path().to_owned(), kind, request);
    }

    fn log_path(&self, path: String, kind: &'static str, request: Option<&ReadRequest>) {
        let mut state = self.0.lock().unwrap();
        let at_ms = Instant::now().duration_since(state.start).as_millis() as u64;
        state.sent.push(Sent {
            at_ms,
            path,
            kind,
            etag: request.and_then(|r| r.etag.clone()),
            hold_s: request.and_then(|r| r.hold).map(|h| h.as_secs()),
        });
    }
}

impl Wire for Script {
    fn many(&self) -> bool {
        self.0.lock().unwrap().batches
    }

    fn exchange(&self, request: ManyRequest) -> impl Future<Output = Exchanged> + Send + 'static {
        let ids: Vec<String> = request
            .url
            .query_pairs()
            .filter(|(name, _)| name == "ids")
            .flat_map(|(_, ids)| ids.split(',').map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let batches = self.0.lock().unwrap().batches;
        let answer = if batches && request.url.path() == "/v1/jobs" {
            self.log_path(format!("/v1/jobs?ids={}", ids.join(",")), "batch", None);
            let jobs: Vec<serde_json::Value> = ids
                .iter()
                .map(|id| serde_json::json!({ "id": id, "result": "pending", "progress": 0.0 }))
                .collect();
            Exchanged::Answered {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: serde_json::to_vec(&serde_json::json!({ "jobs": jobs }))
                    .unwrap()
                    .into(),
                attempts: 1,
            }
        } else {
            Exchanged::Unsupported
        };
        std::future::ready(answer)
    }

    fn read(
        &self,
        url: &Url,
        request: ReadRequest,
        _profile: &crate::Profile,
    ) -> impl Future<Output = Reading> + Send + 'static {
        let kind = if request.hold.is_some() {
            "long_poll"
        } else {
            "status"
        };
        self.log(url, kind, Some(&request));
        let reply = self.0.lock().unwrap().reads.pop_front();
        let reply = reply.unwrap_or_else(|| Reply::new(Duration::ZERO, pending));
        async move {
            tokio::time::sleep(reply.after).await;
            (reply.make)()
        }
    }

    fn cancel(
        &self,
        url: &Url,
        _within: Duration,
    ) -> impl Future<Output = RemoteCancel> + Send + 'static {
        self.log(url, "cancel", None);
        let (after, outcome) = self.0.lock().unwrap().cancel.clone();
        async move {
            tokio::time::sleep(after).await;
            outcome
        }
    }

    fn subscribe(
        &self,
        url: &Url,
        _last_event_id: Option<String>,
        _deadline: Option<Instant>,
    ) -> impl Future<Output = (Subscribed, Option<Signals>)> + Send + 'static {
        self.log(url, "events", None);
        let reply = self.0.lock().unwrap().streams.pop_front();
        let subscribed = match reply {
            None => Subscribed::Fallback {
                reason: FallbackReason::NotSupported,
                attempts: 1,
            },
            Some(StreamReply::Refused(reason)) => Subscribed::Fallback {
                reason,
                attempts: 1,
            },
            Some(StreamReply::Events(events)) => Subscribed::Stream {
                events: event_stream(events),
                attempts: 1,
            },
        };
        std::future::ready((subscribed, Some(Signals::default())))
    }
}

fn event_stream(events: Vec<(Duration, SseEvent)>) -> EventStream {
    Box::pin(stream::unfold(
        events.into_iter(),
        |mut events| async move {
            let (after, event) = events.next()?;
            tokio::time::sleep(after).await;
            Some((Ok(event), events))
        },
    ))
}

/// A client's parts around a script: its base URL `http://script:8080/`, fresh route memory
/// and learned durations, and `budget`.
pub(crate) fn context(script: Script, budget: RequestBudget) -> Context<Script> {
    Context {
        wire: script,
        profile: crate::Profile::simulator(),
        base_url: Some("http://script:8080/".parse().unwrap()),
        capabilities: Capabilities::default(),
        learned: LearnedDurations::default(),
        budget: SharedBudget::new(budget),
    }
}

// ----- Answers ---------------------------------------------------------------------------

pub(crate) fn secs(x: f64) -> Duration {
    Duration::from_secs_f64(x)
}

pub(crate) fn status(state: JobState) -> ReadOutcome {
    ReadOutcome::Status {
        status: JobStatus::new(state),
        meta: Meta::default(),
    }
}

pub(crate) fn pending() -> ReadOutcome {
    status(JobState::Pending { eta: None })
}

pub(crate) fn completed() -> ReadOutcome {
    status(JobState::Completed)
}

/// Pending at `progress`, with an entity tag, an estimate and a `Retry-After` when given.
pub(crate) fn pending_with(
    progress: Option<f64>,
    etag: Option<&str>,
    eta: Option<f64>,
    retry_after: Option<f64>,
) -> ReadOutcome {
    let mut status = JobStatus::new(JobState::Pending { eta: eta.map(secs) });
    status.progress = progress;
    ReadOutcome::Status {
        status,
        meta: Meta {
            etag: etag.map(str::to_owned),
            retry_after: retry_after.map(secs),
            applied_hold: None,
            pause: None,
        },
    }
}

pub(crate) fn not_modified() -> ReadOutcome {
    ReadOutcome::NotModified {
        meta: Meta::default(),
    }
}

pub(crate) fn unexpected(status: u16) -> Error {
    Error::UnexpectedResponse(Box::new(UnexpectedResponse {
        url: "http://script/status".into(),
        status,
        code: None,
        message: "scripted".into(),
        body_excerpt: String::new(),
        retry_after: None,
        auth_challenge: None,
        url_credentials: false,
    }))
}

/// A `429` with `Retry-After`, as the wire hands it back (the request budget hears it too).
pub(crate) fn throttled(retry_after: f64) -> Reply {
    Reply::reading(Duration::ZERO, move || Reading {
        outcome: ReadOutcome::Throttled {
            retry_after: Some(secs(retry_after)),
            error: unexpected(429),
        },
        attempts: 1,
        hedges: 0,
        signals: Some(Signals {
            throttled: Some(Throttle {
                retry_after: Some(secs(retry_after)),
            }),
            ..Signals::default()
        }),
    })
}

/// A read that failed after retries; `answered`: the service had answered before.
pub(crate) fn failed(answered: bool) -> ReadOutcome {
    ReadOutcome::Unavailable {
        error: Error::Unreachable(Box::new(Unreachable {
            url: "http://script:8080/status".into(),
            attempts: 1,
            status: Some(503),
            timed_out: false,
            source: None,
            creation_not_retried: false,
        })),
        host: "script:8080".into(),
        resume_at: None,
        answered,
    }
}

/// What a read the circuit breaker refused says: open until `resume_at`.
pub(crate) fn refusal(resume_at: Instant) -> ReadOutcome {
    let left = resume_at.saturating_duration_since(Instant::now());
    ReadOutcome::Unavailable {
        error: Error::Unavailable(Box::new(Unavailable::refused("script:8080", left))),
        host: "script:8080".into(),
        resume_at: Some(resume_at),
        answered: true,
    }
}

/// A read the circuit breaker refused: open for `left` more (nothing was sent).
pub(crate) fn refused(left: f64) -> Reply {
    Reply::reading(Duration::ZERO, move || Reading {
        outcome: refusal(Instant::now() + secs(left)),
        attempts: 0,
        hedges: 0,
        signals: None,
    })
}

pub(crate) fn event(data: &str) -> SseEvent {
    SseEvent {
        event: "status".into(),
        data: data.into(),
        id: None,
        retry: None,
    }
}
