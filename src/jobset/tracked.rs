//! One tracked job: its wait (the same [`Ledger`] a single wait holds) and where it is in
//! the scheduler.
//!
//! Plain data, so that one scheduler can hold thousands and save them: the job's URLs, its
//! wait, its stall history, its place in the timer queue, and a handle on the operation in
//! flight.

use std::time::{Duration, SystemTime};

use futures_util::future::AbortHandle;
use tokio::time::Instant;

use super::JobKey;
use super::stall::StallTracker;
use crate::job::Endpoints;
use crate::wait::ledger::{Clocks, Ledger};

/// Where a job is in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Waiting for its next look, due `until`, since `from`.
    Sleeping { from: Instant, until: Instant },
    /// Due: in the ready queue, waiting for a token or a free slot.
    Ready,
    /// A plain read is in flight.
    Polling,
    /// A long-poll is held by the server; one still out at `silent_at` is silent (the
    /// server answers a held read within its hold) and is dropped.
    Holding { silent_at: Instant },
    /// An event stream is open (or being opened).
    Streaming { last_event: Instant },
    /// The last look is over: nothing more is sent, and the wait ends at its deadline.
    Expiring,
    /// Followed on the set's change stream: nothing is sent for it alone until its last
    /// look or its stall check.
    Following,
}

/// Whether a job is followed on the set's change stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
    /// It can be: it joins at its next look.
    Eligible,
    /// Named in a watch set request not yet answered.
    Joining,
    /// In the watch set: the stream reports its changes.
    Member,
    /// Waited for by other means: not the server's job URL, named not found, gone from the
    /// stream, or the stream was given up.
    Out,
}

/// One job of a set.
pub(crate) struct Tracked {
    /// The job's key in the set: every event about the job carries it, and a restored set
    /// keeps it.
    pub(super) key: JobKey,
    /// Where its status and events are, and how the caller named it (credentials masked,
    /// for errors and logs).
    pub(super) endpoints: Endpoints,
    /// When the wait began and when it ends, on the wall clock: unlike the ledger's
    /// instants, they survive a restart.
    pub(super) added_wall: SystemTime,
    pub(super) deadline_wall: Option<SystemTime>,
    /// The wait itself — what has been seen, what comes next — as a single wait holds it.
    pub(super) ledger: Ledger,
    /// Since when the job has looked the same, and whether that was reported as a stall.
    pub(super) stall: StallTracker,
    /// What it is doing in the scheduler now.
    pub(super) stage: Stage,
    /// Bumped whenever an operation is started or abandoned: answers of older ones are
    /// stale.
    pub(super) generation: u32,
    /// This job's entry in the timer queue.
    pub(super) armed: Option<Instant>,
    /// Aborts the operation in flight.
    pub(super) abort: Option<AbortHandle>,
    /// The job's id on the server, when its change stream can follow it.
    pub(super) feed_id: Option<Box<str>>,
    /// Whether the change stream follows it.
    pub(super) member: Membership,
    /// A look of its own is due (its stall check) although the stream follows it.
    pub(super) check: bool,
    /// Batched reads do not answer for it (they named it not found): it is read alone.
    pub(super) unbatched: bool,
    /// A batched read has answered for it.
    pub(super) batched: bool,
    /// Asleep until its webhook safety read (planned again when learned durations change).
    pub(super) on_safety: bool,
    /// How much earlier than due a batched read took its look: its next look keeps the
    /// cadence it would have had (see the `batch` module).
    pub(super) ahead: Duration,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("key", &self.key)
            .field("job", &self.endpoints.label)
            .field("stage", &self.stage)
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

impl Tracked {
    /// A job added at `clocks`, giving up `deadline` later, created (as the caller says) at
    /// `created`.
    pub(crate) fn new(
        key: JobKey,
        endpoints: Endpoints,
        deadline: Option<Duration>,
        created: Option<Instant>,
        clocks: Clocks,
    ) -> Self {
        let Clocks { now, wall } = clocks;
        // A deadline too far to represent is no deadline.
        let ledger = Ledger::new(now, deadline.and_then(|d| now.checked_add(d)), created);
        Tracked::with_ledger(
            key,
            endpoints,
            wall,
            deadline.and_then(|d| wall.checked_add(d)),
            ledger,
        )
    }

    /// A job whose wait is `ledger`.
    pub(crate) fn with_ledger(
        key: JobKey,
        endpoints: Endpoints,
        added_wall: SystemTime,
        deadline_wall: Option<SystemTime>,
        ledger: Ledger,
    ) -> Self {
        Tracked {
            key,
            endpoints,
            added_wall,
            deadline_wall,
            stall: StallTracker::new(ledger.start()),
            ledger,
            stage: Stage::Ready,
            generation: 0,
            armed: None,
            abort: None,
            feed_id: None,
            member: Membership::Out,
            check: false,
            unbatched: false,
            batched: false,
            on_safety: false,
            ahead: Duration::ZERO,
        }
    }

    /// Abandons the operation in flight: its answer, when it comes, is stale.
    pub(crate) fn abandon(&mut self) {
        if let Some(handle) = self.abort.take() {
            handle.abort();
        }
        self.generation = self.generation.wrapping_add(1);
    }
}
