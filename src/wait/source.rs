//! What the wait loop needs from the outside world, so that it can be tested without one.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::FallbackReason;
use super::ledger::Opened;
use crate::error::Error;
pub(crate) use crate::transport::answer::ReadOutcome;
use crate::transport::signals::Signals;
use crate::transport::sse::EventStream;

pub(crate) use super::ledger::Fact;

/// Where one job's statuses come from.
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

#[derive(Debug, Clone, Default)]
pub(crate) struct ReadRequest {
    pub(crate) etag: Option<String>,
    pub(crate) hold: Option<Duration>,
    /// The instant after which the read is of no use: a throttled answer whose pause would
    /// end later is handed back at once instead of waited out.
    pub(crate) deadline: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Reading {
    /// What the answer means for the wait.
    pub(crate) outcome: ReadOutcome,
    /// Attempts on the wire (1 + transport retries + throttle pauses).
    pub(crate) attempts: u32,
    /// Hedges sent on top of the attempts.
    pub(crate) hedges: u32,
    /// What the answer said about the server's rate limit (none: there was no answer).
    pub(crate) signals: Option<Signals>,
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

impl Subscribed {
    /// The stream, if one opened, and what the ledger is told.
    pub(crate) fn split(self) -> (Option<EventStream>, Opened) {
        match self {
            Subscribed::Stream { events, attempts } => (Some(events), Opened::Stream { attempts }),
            Subscribed::Fallback { reason, attempts } => {
                (None, Opened::Fallback { reason, attempts })
            }
            Subscribed::Failed { error, attempts } => (None, Opened::Failed { error, attempts }),
        }
    }
}

impl std::fmt::Debug for Subscribed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subscribed::Stream { attempts, .. } => f
                .debug_struct("Stream")
                .field("attempts", attempts)
                .finish_non_exhaustive(),
            Subscribed::Fallback { reason, attempts } => f
                .debug_struct("Fallback")
                .field("reason", reason)
                .field("attempts", attempts)
                .finish(),
            Subscribed::Failed { error, attempts } => f
                .debug_struct("Failed")
                .field("error", error)
                .field("attempts", attempts)
                .finish(),
        }
    }
}
