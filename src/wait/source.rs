//! What the wait loop needs from the outside world, so that it can be tested without one.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::FallbackReason;
use crate::error::Error;
pub(crate) use crate::transport::answer::{Meta, ReadOutcome};
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
