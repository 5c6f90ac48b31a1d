//! The change log: every state change of every job, in order, each at a cursor.
//!
//! A job's status is derived from the clock, so nothing *happens* when a job ends — which is
//! what makes a status read cheap, and what a watcher of many jobs cannot live with: it wants
//! to be told. So the store turns each change into an entry of this log when it happens: a
//! job created (or the legacy job re-created), a job ended (completed, error, canceled), a job
//! forgotten after its TTL. Creates and cancels are logged by the request that makes them, the
//! natural ends by one timer task that sleeps until the store's next finish instant (a
//! millisecond late at most), expiries by the sweeper. Every append happens while the store
//! holds its lock, so "the log's head" and "the jobs in the store" can be read together, and
//! each job records the offsets of its own changes ([`LogMarks`](super::job::LogMarks)): a
//! snapshot taken at head `H` reports every job exactly as the log says it was at `H`, and the
//! changes after `H` follow without a gap or a repeat.
//!
//! This is the model Kubernetes watches and etcd revisions made familiar: a list (snapshot)
//! at a version, then every change after it; a resumable position on every change; idle
//! *bookmarks* that move a watcher's position without an event; and when a position is older
//! than what is retained, an explicit *reset* ("410 Gone" there) that tells the watcher to
//! list again — never a silent gap.
//!
//! ## Bounds
//!
//! The history is bounded twice: at most `changes.history` entries, and none older than
//! `changes.history_age`. An entry is a few dozen bytes and owns its data (it keeps no job
//! alive). A cursor older than the history, of another epoch (the log starts a new one at
//! every start-up), or ahead of the head reads as [`Read::Reset`].
//!
//! ## The seam
//!
//! [`ChangeLog`] is what the rest of the simulator talks to; [`MemoryLog`] is the one kind
//! there is. A log shared by replicas (the Redis backend, `sim::redis`) is a Redis Stream whose
//! entry `N-0` is the change at offset `N`, in an epoch kept beside it; each replica keeps a
//! copy of its retained history in its own [`MemoryLog`], appended by the one task that tails
//! the Stream (`ChangeLog::append_at`) at the Stream's offsets and epoch, so a cursor of one
//! replica is a cursor of every other. Readers are the same either way: read after a cursor,
//! and wait for the head to change — a wake-up that is only a hint, since every reader re-reads
//! from its cursor.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::time::Instant;

use super::client::ClientId;
use super::job::{ErrorBody, State, StatusBody, rfc3339};
use crate::settings::ChangeSettings;

mod cursor;
mod memory;

pub use cursor::{BadCursor, Cursor, MAX_LEN as MAX_CURSOR_LEN};
pub use memory::MemoryLog;

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created (or, for the legacy job, re-created): pending.
    Created,
    /// Became terminal: completed, error or canceled.
    Ended,
    /// Forgotten after its TTL: its status answers `404` from now on.
    Gone,
}

impl ChangeKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Ended => "ended",
            ChangeKind::Gone => "gone",
        }
    }
}

/// A job as one change reports it: owned data, so an entry keeps no job alive.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job's id.
    pub id: String,
    /// Whose job it is (`None`: the operator's — the legacy job and jobs created in process).
    pub client: Option<ClientId>,
    /// Pending (created), or how it ended.
    pub state: State,
    /// Progress at the change.
    pub progress: f64,
    /// When it was created (wall clock).
    pub created: SystemTime,
    /// When it ended, if it has.
    pub completed: Option<SystemTime>,
}

impl JobRecord {
    /// The status JSON of the job as this change saw it (no estimate: it is history).
    pub fn body(&self) -> StatusBody<'_> {
        StatusBody {
            id: &self.id,
            result: self.state.as_str(),
            progress: self.progress,
            eta_ms: None,
            created_at: rfc3339(self.created),
            completed_at: self.completed.map(rfc3339),
            error: ErrorBody::of(self.state),
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its position: the changes before it have smaller offsets, in the same epoch.
    pub offset: u64,
    /// When it was appended.
    pub at: Instant,
    /// What happened.
    pub kind: ChangeKind,
    /// To which job, and what it looked like then.
    pub job: JobRecord,
}

/// What reading after a cursor found.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// The changes after the cursor that the reader kept, oldest first, and the cursor up to
    /// which the log was looked at (to send back next time, whatever was kept). `more`: the
    /// read stopped at a limit before the head.
    Changes {
        /// Kept changes, oldest first.
        changes: Vec<Arc<Change>>,
        /// Everything up to here was looked at.
        next: Cursor,
        /// There is more after `next`.
        more: bool,
    },
    /// The log cannot continue from that cursor (its history is gone, or it is of another
    /// epoch, or ahead of the head): the reader must take a new snapshot, at `head` or later.
    Reset {
        /// The head now.
        head: Cursor,
    },
}

/// How much one read may look at and return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most changes kept.
    pub keep: usize,
    /// Most changes looked at (kept or not), so that a reader far behind, keeping few, costs
    /// a bounded time per read.
    pub scan: usize,
}

/// The change log of one simulator: see the module docs.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChangeLog {
    /// In this process's memory; a restart starts a new epoch.
    Memory(MemoryLog),
}

impl ChangeLog {
    /// An empty in-memory log bounded by `settings`, in epoch `epoch`.
    pub fn memory(settings: &ChangeSettings, epoch: u64) -> Self {
        ChangeLog::Memory(MemoryLog::new(settings, epoch))
    }

    /// The cursor of the last change (offset `0` before the first).
    pub fn head(&self) -> Cursor {
        match self {
            ChangeLog::Memory(log) => log.head(),
        }
    }

    /// Appends a change at `now` and returns its offset. The store calls it while holding its
    /// lock (see the module docs).
    pub(crate) fn append(&self, kind: ChangeKind, job: JobRecord, now: Instant) -> u64 {
        match self {
            ChangeLog::Memory(log) => log.append(kind, job, now),
        }
    }

    /// Appends the entry of a shared log at `offset` (see [`MemoryLog::append_at`]). The tail of
    /// the shared log calls it while holding the store's lock, as the store does for
    /// [`ChangeLog::append`].
    pub(crate) fn append_at(
        &self,
        offset: u64,
        at: Instant,
        change: Option<(ChangeKind, JobRecord)>,
    ) {
        match self {
            ChangeLog::Memory(log) => log.append_at(offset, at, change),
        }
    }

    /// Starts over in `epoch` at `head` (a copy of a shared log that lost its place).
    pub(crate) fn restart(&self, epoch: u64, head: u64) {
        match self {
            ChangeLog::Memory(log) => log.restart(epoch, head),
        }
    }

    /// The changes after `after` that `keep` keeps, within `limits`; or a reset.
    pub fn read(
        &self,
        after: Cursor,
        limits: ReadLimits,
        keep: impl FnMut(&Change) -> bool,
    ) -> Read {
        match self {
            ChangeLog::Memory(log) => log.read(after, limits, keep),
        }
    }

    /// Drops what is past the history's bounds at `now`.
    pub fn prune(&self, now: Instant) {
        match self {
            ChangeLog::Memory(log) => log.prune(now),
        }
    }

    /// Changes retained.
    pub fn len(&self) -> usize {
        match self {
            ChangeLog::Memory(log) => log.len(),
        }
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The head's offset, sent after every append and when the log starts over: wait for it to
    /// change for "something new".
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        match self {
            ChangeLog::Memory(log) => log.subscribe(),
        }
    }
}
