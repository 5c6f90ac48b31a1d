//! What the wait loop needs from the outside world, so that it can be tested without one.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::FallbackReason;
use crate::error::Error;
use crate::model::JobStatus;
use crate::transport::sse::EventStream;

/// Where statuses come from.
pub(crate) trait Source: Sync {
    /// Whether an event stream is worth trying.
    fn sse_available(&self) -> bool;
    /// Whether to ask the server to hold requests.
    fn long_poll_available(&self) -> bool;
    /// Tells the source what the loop learned about the server.
    fn learned(&self, fact: Fact);
    /// One status read.
    fn read(&self, request: ReadRequest) -> impl Future<Output = Reading> + Send;
    /// Opens an event stream.
    fn subscribe(
        &self,
        last_event_id: Option<String>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Subscribed> + Send;
}

/// What the loop observed about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fact {
    StatusWorks,
    SseWorks,
    SseMissing,
    LongPollApplied,
    LongPollIgnored,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ReadRequest {
    pub(crate) etag: Option<String>,
    pub(crate) hold: Option<Duration>,
    pub(crate) deadline: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Reading {
    pub(crate) outcome: ReadOutcome,
    /// Attempts on the wire (1 + transport retries + throttle pauses).
    pub(crate) attempts: u32,
    /// Hedges sent on top of the attempts.
    pub(crate) hedges: u32,
}

/// Headers that matter to the loop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub(crate) etag: Option<String>,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) applied_hold: Option<Duration>,
}

#[derive(Debug)]
pub(crate) enum ReadOutcome {
    Status {
        status: JobStatus,
        meta: Meta,
    },
    NotModified {
        meta: Meta,
    },
    /// `429`/`503` with a hint that the transport did not absorb.
    Throttled {
        retry_after: Option<Duration>,
        error: Error,
    },
    /// A result string this version does not know.
    Unknown {
        status: JobStatus,
        error: Error,
    },
    /// A body that is not a status document.
    Malformed(Error),
    /// The service failed (after transport retries: a transport error, `5xx`, `408`), or its
    /// circuit breaker refused to send. Not the job's fault: a wait keeps going.
    Unavailable {
        error: Error,
        /// Not before this instant: the breaker is open (nothing was sent).
        resume_at: Option<Instant>,
        /// Whether the service ever answered over HTTP (this time, or before): if not, the
        /// URL is more likely wrong than the service down.
        answered: bool,
    },
    /// Could not read, after transport retries, or rejected: ends the wait.
    Failed(Error),
}

pub(crate) enum Subscribed {
    Stream {
        events: EventStream,
        attempts: u32,
    },
    Fallback {
        reason: FallbackReason,
        attempts: u32,
    },
    Failed {
        error: Error,
        attempts: u32,
    },
}
