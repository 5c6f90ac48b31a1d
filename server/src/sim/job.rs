//! One job and the status derived from it.
//!
//! A job is `(created, duration, outcome)` fixed at creation. Its status at any instant is a
//! pure function of those and the clock, so the server needs no ticker per job: a reader
//! computes the status, a waiter sleeps until `completes_at`. Besides counters used for
//! metrics (requests seen, channels that reported the terminal state), the only mutable part
//! is one word that records how the job *ended*, and it is written at most once.
//!
//! ## Cancellation: one word, written once
//!
//! A cancel is the one thing the clock cannot derive, so it is recorded: the word `end` holds
//! either "undecided", "ended on its own" or "canceled at `t`" (an offset from creation). It
//! moves out of "undecided" exactly once, by compare-and-swap, and never again:
//!
//! * a cancel at `t` writes "canceled at `t`", but only while the job has not ended by the
//!   clock (`t` before its natural end) and the word is still undecided;
//! * a reader that finds the job past its natural end writes "ended on its own" before it
//!   reports the job's outcome, so that no cancel can land afterwards.
//!
//! Whichever of the two swaps first decides, and every later reader and cancel sees that
//! decision: a cancel racing the natural end either wins (and no one has reported the natural
//! outcome, since reporting it takes the swap) or finds the job finished (`409`). So exactly
//! one terminal state is ever reported, and it never changes. Every operation is `O(1)` and
//! lock-free.
//!
//! ## A job of a shared log
//!
//! With the Redis backend, the job a replica holds is a copy, built from Redis and kept by the
//! replicated change log (`sim::redis`). Its end is decided in Redis, once, by one clock (the
//! Redis server's), and reaches every replica as an `ended` change ([`Job::decide`]). Such a
//! job ([`Job::shared`]) never decides anything by its reader's clock: until its end is logged it
//! reads as pending (progress below `1`), as a change log snapshot reports it, and it wakes its
//! waiters when the log decides ([`Job::wakes_at`] is `None` until then).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use url::Url;

use super::heygen::HeyGenJob;
use crate::settings::Outcome;
use crate::time::{later, millis, scaled};

/// Version of a pending job's status, in its generation 0.
pub const VERSION_PENDING: u64 = 1;
/// Version of a terminal job's status, in its generation 0.
pub const VERSION_TERMINAL: u64 = 2;

/// How far away a hanging job's end is: far enough never to come.
const HANG_HORIZON: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `Job::end`: nothing decided yet.
const END_OPEN: u64 = u64::MAX;
/// `Job::end`: the job ended on its own (its natural end was reported or looked at).
const END_NATURAL: u64 = u64::MAX - 1;
/// Largest offset `Job::end` records for a cancel (in nanoseconds after creation, ~584 years).
const END_MAX_OFFSET: u64 = u64::MAX - 2;

/// Where a client learned a job's status. Used as the `channel` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `GET /status`.
    Legacy,
    /// `GET /v1/jobs/{id}/status` answered at once.
    Poll,
    /// `GET /v1/jobs/{id}/status` held by `Prefer: wait`.
    LongPoll,
    /// `GET /v1/jobs/{id}/events`.
    Sse,
    /// A webhook delivery.
    Webhook,
    /// `GET /v1/events`, the multiplexed change stream.
    Stream,
    /// `GET /v1/changes`, its long-poll fallback.
    Changes,
    /// `GET /v1/jobs?ids=...`, a batched status read.
    Batch,
}

impl Channel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Legacy => "legacy",
            Channel::Poll => "poll",
            Channel::LongPoll => "longpoll",
            Channel::Sse => "sse",
            Channel::Webhook => "webhook",
            Channel::Stream => "stream",
            Channel::Changes => "changes",
            Channel::Batch => "batch",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Channel::Legacy => 1,
            Channel::Poll => 2,
            Channel::LongPoll => 4,
            Channel::Sse => 8,
            Channel::Webhook => 16,
            Channel::Stream => 32,
            Channel::Changes => 64,
            Channel::Batch => 128,
        }
    }
}

/// A job held by the store.
#[derive(Debug)]
pub struct Job {
    /// Public id.
    pub id: String,
    /// When it was created (monotonic clock).
    pub created: Instant,
    /// When it was created (wall clock, for `created_at`).
    pub created_wall: SystemTime,
    /// How long it runs.
    pub duration: Duration,
    /// How it ends.
    pub outcome: Outcome,
    /// Factor applied to `duration` when estimating `eta_ms` (1.0 = exact).
    pub eta_bias: f64,
    /// Webhook target, if any.
    pub callback: Option<Url>,
    /// A stuck job: pending forever, progress frozen at 0, no estimate (see [`Job::hanging`]).
    pub hang: bool,
    /// Which creation of its id this job is (see [`Job::with_generation`]); 0 for an id
    /// created once.
    pub generation: u64,
    /// What a job created in the HeyGen dialect carries for it (its webhook then speaks
    /// HeyGen's envelope); `None` for every other job.
    pub heygen: Option<Box<HeyGenJob>>,
    /// Status requests received (any channel but webhooks).
    requests: AtomicU64,
    /// Channels that have reported the terminal state (bit set).
    reported: AtomicU8,
    /// Whether the terminal state has been reported on any channel.
    first_report_done: AtomicBool,
    /// Whether `sim_jobs_finished_total` has counted this job.
    finish_counted: AtomicBool,
    /// How the job ended: [`END_OPEN`], [`END_NATURAL`], or canceled that many nanoseconds
    /// after `created`. Leaves `END_OPEN` once, never to change again (see the module docs).
    end: AtomicU64,
    /// Woken when the job is replaced (legacy reset), so held readers look again.
    pub changed: Notify,
    /// Where its changes sit in the change log (see [`LogMarks`]).
    pub marks: LogMarks,
    /// A copy of a job of a shared log: its end is decided by the log only (see the module
    /// docs).
    shared: bool,
}

/// How a job of a shared log ended, as the log decided it (see [`Job::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// On its own, at its natural end.
    Natural,
    /// Canceled this long after its creation.
    CanceledAfter(Duration),
}

/// Where a job's changes sit in the change log: the offset of its `created`, `ended` and
/// `gone` changes in the log's epoch, `0` until logged. Written by the store while it holds
/// its lock, when it appends the change, so that anyone who read the log's head under that
/// lock can tell what the job looked like *as of* that head ([`Job::as_of`]).
#[derive(Debug, Default)]
pub struct LogMarks {
    created: AtomicU64,
    ended: AtomicU64,
    gone: AtomicU64,
}

/// Which of a job's changes a [`LogMarks`] entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Created (or, for the legacy job, re-created): pending.
    Created,
    /// Became terminal: completed, error or canceled.
    Ended,
    /// Forgotten after its TTL.
    Gone,
}

impl LogMarks {
    fn slot(&self, mark: Mark) -> &AtomicU64 {
        match mark {
            Mark::Created => &self.created,
            Mark::Ended => &self.ended,
            Mark::Gone => &self.gone,
        }
    }

    /// The offset of `mark`'s change, if logged.
    pub fn get(&self, mark: Mark) -> Option<u64> {
        Some(self.slot(mark).load(Ordering::Acquire)).filter(|o| *o != 0)
    }

    /// Records where `mark`'s change was logged (by the store, as it appends it).
    pub(crate) fn set(&self, mark: Mark, offset: u64) {
        self.slot(mark).store(offset, Ordering::Release);
    }
}

/// What a job looked like as of a position in the change log (see [`Job::as_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Its creation was not logged yet: it did not exist then.
    Unborn,
    /// Created, not ended.
    Pending,
    /// Ended (how: [`Job::snapshot`] says, and it never changes).
    Ended,
    /// Forgotten.
    Gone,
}

/// What a job looks like at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Pending, or how it ended.
    pub state: State,
    /// 0..1.
    pub progress: f64,
    /// Estimated time left (pending only).
    pub eta: Option<Duration>,
    /// [`VERSION_PENDING`] or [`VERSION_TERMINAL`], moved up by the job's generation (see
    /// [`Job::with_generation`]).
    pub version: u64,
}

/// Pending or terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Still running.
    Pending,
    /// Finished on its own, this way.
    Done(Outcome),
    /// Canceled before it finished (`POST /v1/jobs/{id}/cancel`).
    Canceled,
}

impl State {
    /// Wire name of the result.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Done(o) => o.as_str(),
            State::Canceled => "canceled",
        }
    }

    /// Whether the job has ended, whichever way.
    pub fn is_terminal(self) -> bool {
        self != State::Pending
    }
}

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The job was pending and is now canceled, by this call.
    Canceled,
    /// The job had been canceled before: nothing changed.
    AlreadyCanceled,
    /// The job had already finished on its own, this way: nothing changed.
    Finished(Outcome),
}

/// The `error` object of a failed job.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: &'static str,
    /// Human message.
    pub message: &'static str,
}

impl ErrorBody {
    /// The error of a job in `state`: set for `error` only.
    pub fn of(state: State) -> Option<Self> {
        matches!(state, State::Done(Outcome::Error)).then_some(ErrorBody {
            code: "translation_failed",
            message: "the video could not be translated (simulated failure)",
        })
    }
}

/// JSON body of `GET /v1/jobs/{id}/status` (and SSE/webhook payloads).
#[derive(Debug, Serialize)]
pub struct StatusBody<'a> {
    /// Job id.
    pub id: &'a str,
    /// `pending`, `completed`, `error`, `canceled`.
    pub result: &'static str,
    /// 0..1.
    pub progress: f64,
    /// Estimated milliseconds left (pending, hints on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, terminal only: when it ended, whichever way (for a canceled job, when it was
    /// canceled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Error details, `error` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Formats a wall-clock time as RFC 3339 UTC with milliseconds, clamped to the years RFC 3339
/// can write (1970 to 9999).
pub fn rfc3339(t: SystemTime) -> String {
    const LAST: Duration = Duration::from_millis(253_402_300_799_999); // 9999-12-31T23:59:59.999Z
    let since_epoch = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST);
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

impl Job {
    /// A new job created now.
    pub fn new(
        id: String,
        duration: Duration,
        outcome: Outcome,
        eta_bias: f64,
        callback: Option<Url>,
    ) -> Self {
        Job {
            id,
            created: Instant::now(),
            created_wall: SystemTime::now(),
            duration,
            outcome,
            eta_bias,
            callback,
            hang: false,
            generation: 0,
            heygen: None,
            requests: AtomicU64::new(0),
            reported: AtomicU8::new(0),
            first_report_done: AtomicBool::new(false),
            finish_counted: AtomicBool::new(false),
            end: AtomicU64::new(END_OPEN),
            changed: Notify::new(),
            marks: LogMarks::default(),
            shared: false,
        }
    }

    /// A copy of a job of a shared log, created at `created` (`created_wall` on the wall clock):
    /// see the module docs. Its finish is counted where its end is logged, so
    /// [`Job::take_finish`] never returns true for it.
    pub fn shared(
        id: String,
        created: Instant,
        created_wall: SystemTime,
        duration: Duration,
        outcome: Outcome,
        eta_bias: f64,
        callback: Option<Url>,
    ) -> Self {
        Job {
            created,
            created_wall,
            shared: true,
            finish_counted: AtomicBool::new(true),
            ..Job::new(id, duration, outcome, eta_bias, callback)
        }
    }

    /// Whether this is a copy of a job of a shared log.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Records how the shared log decided this job ended; `false` when that was known already.
    /// A job's end is decided once: a second, different decision is ignored.
    pub fn decide(&self, end: End) -> bool {
        let word = match end {
            End::Natural => END_NATURAL,
            End::CanceledAfter(after) => u64::try_from(after.as_nanos())
                .unwrap_or(END_MAX_OFFSET)
                .min(END_MAX_OFFSET),
        };
        self.end
            .compare_exchange(END_OPEN, word, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// When a waiter on this job should look again by the clock: when it completes; `None` for
    /// a job of a shared log whose end is not logged yet (the log wakes its waiters through
    /// [`Job::changed`]).
    pub fn wakes_at(&self) -> Option<Instant> {
        if self.shared && self.end.load(Ordering::Acquire) == END_OPEN {
            None
        } else {
            Some(self.completes_at())
        }
    }

    /// Makes this job hang: it stays pending forever, its progress frozen at 0 and with no
    /// `eta_ms`, as a job stuck in a backend queue looks to its clients. Its duration and
    /// outcome are never reached.
    pub fn hanging(mut self) -> Self {
        self.hang = true;
        self
    }

    /// Marks this job as created in the HeyGen dialect, with what that dialect needs of it.
    pub fn with_heygen(mut self, heygen: HeyGenJob) -> Self {
        self.heygen = Some(Box::new(heygen));
        self
    }

    /// Marks this job as creation number `generation` of an id that is re-created (the legacy
    /// job, by `POST /v1/reset`): its versions are `2 × generation + 1` while pending and
    /// `2 × generation + 2` once terminal, so that an `ETag` or SSE event id of an earlier
    /// creation never matches this one, and a later creation's versions are always greater.
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// The version of this job's status, pending or terminal.
    fn version(&self, terminal: bool) -> u64 {
        let phase = if terminal {
            VERSION_TERMINAL
        } else {
            VERSION_PENDING
        };
        self.generation.saturating_mul(2).saturating_add(phase)
    }

    /// When the job was canceled, as an offset from its creation, if it was.
    fn canceled_after(&self) -> Option<Duration> {
        match self.end.load(Ordering::Acquire) {
            END_OPEN | END_NATURAL => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Whether the job was canceled.
    pub fn is_canceled(&self) -> bool {
        self.canceled_after().is_some()
    }

    /// How long after its creation the job ends on its own (practically never, for a hanging
    /// job).
    fn natural_after(&self) -> Duration {
        if self.hang {
            HANG_HORIZON
        } else {
            self.duration
        }
    }

    /// The instant the job becomes terminal: when it was canceled, if it was, else its natural
    /// end (practically never, for a hanging job). A waiter that read it before a cancel is
    /// woken by [`Job::changed`].
    pub fn completes_at(&self) -> Instant {
        later(
            self.created,
            self.canceled_after()
                .unwrap_or_else(|| self.natural_after()),
        )
    }

    /// Wall-clock time the job ended or will end (the creation time, for a duration past any
    /// calendar).
    pub fn completed_wall(&self) -> SystemTime {
        let after = self.canceled_after().unwrap_or(self.duration);
        self.created_wall
            .checked_add(after)
            .unwrap_or(self.created_wall)
    }

    /// Whether the job is terminal at `now`.
    pub fn is_done(&self, now: Instant) -> bool {
        now >= self.completes_at()
    }

    /// Cancels the job at `now` unless it has ended by then: see the module docs for how a
    /// cancel racing the natural end is decided. Sticky: a canceled job stays canceled, and a
    /// finished job is left as it was.
    pub fn cancel(&self, now: Instant) -> Cancel {
        let elapsed = now.saturating_duration_since(self.created);
        loop {
            match self.end.load(Ordering::Acquire) {
                END_NATURAL => return Cancel::Finished(self.outcome),
                END_OPEN if elapsed >= self.natural_after() => {
                    // Past its end by this clock reading: it ended on its own. Decide that,
                    // unless a cancel got in first (then the loop reports it).
                    let _ = self.seal_natural();
                }
                END_OPEN => {
                    let at = u64::try_from(elapsed.as_nanos())
                        .unwrap_or(END_MAX_OFFSET)
                        .min(END_MAX_OFFSET);
                    if self
                        .end
                        .compare_exchange(END_OPEN, at, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Cancel::Canceled;
                    }
                }
                _ => return Cancel::AlreadyCanceled,
            }
        }
    }

    /// Records that the job ended on its own; `Err` with the word found if something else was
    /// decided first (a cancel).
    fn seal_natural(&self) -> Result<(), u64> {
        match self
            .end
            .compare_exchange(END_OPEN, END_NATURAL, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(END_NATURAL) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// What the job looked like as of `offset` in the change log: by the changes logged at or
    /// before it, whatever the clock says now.
    pub fn as_of(&self, offset: u64) -> AsOf {
        let by = |mark| self.marks.get(mark).is_some_and(|at| at <= offset);
        if by(Mark::Gone) {
            AsOf::Gone
        } else if by(Mark::Ended) {
            AsOf::Ended
        } else if by(Mark::Created) {
            AsOf::Pending
        } else {
            AsOf::Unborn
        }
    }

    /// The body of this job as the change log says it was as of `offset` (read at `now`):
    /// `None` if it did not exist then or was already gone.
    pub fn body_as_of(&self, offset: u64, now: Instant) -> Option<StatusBody<'_>> {
        match self.as_of(offset) {
            AsOf::Unborn | AsOf::Gone => None,
            AsOf::Pending => Some(self.pending_body(now)),
            AsOf::Ended => Some(self.body(&self.snapshot(now), false)),
        }
    }

    /// The body of this job as pending at `now`, whatever the clock says: how a job whose end
    /// is not logged yet is reported by a snapshot of the change log (progress stops short of
    /// `1`; no estimate).
    pub fn pending_body(&self, now: Instant) -> StatusBody<'_> {
        let elapsed = now.saturating_duration_since(self.created);
        StatusBody {
            id: &self.id,
            result: State::Pending.as_str(),
            progress: self.progress_at(elapsed).min(0.999),
            eta_ms: None,
            created_at: rfc3339(self.created_wall),
            completed_at: None,
            error: None,
        }
    }

    /// Progress at `elapsed`, floored to a thousandth (0 for a hanging job).
    fn progress_at(&self, elapsed: Duration) -> f64 {
        if self.hang || self.duration.is_zero() {
            return 0.0;
        }
        let progress = (elapsed.as_secs_f64() / self.duration.as_secs_f64()).min(1.0);
        (progress * 1000.0).floor() / 1000.0
    }

    /// The status at `now`. A job past its natural end is decided as ended on its own here,
    /// unless it was canceled first (see the module docs).
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let elapsed = now.saturating_duration_since(self.created);
        let canceled = |at: Duration| Snapshot {
            state: State::Canceled,
            progress: self.progress_at(at),
            eta: None,
            version: self.version(true),
        };
        if let Some(at) = self.canceled_after() {
            // A job of a shared log is as its log says, whatever this clock reads.
            if elapsed >= at || self.shared {
                return canceled(at);
            }
            // A clock reading from before the cancel: the job was pending then.
        } else if self.shared {
            if self.end.load(Ordering::Acquire) == END_NATURAL {
                return Snapshot {
                    state: State::Done(self.outcome),
                    progress: 1.0,
                    eta: None,
                    version: self.version(true),
                };
            }
        } else if elapsed >= self.natural_after() {
            if let Err(word) = self.seal_natural() {
                // A cancel got in first; it was before the natural end.
                return canceled(Duration::from_nanos(word));
            }
            return Snapshot {
                state: State::Done(self.outcome),
                progress: 1.0,
                eta: None,
                version: self.version(true),
            };
        }
        if self.hang {
            return Snapshot {
                state: State::Pending,
                progress: 0.0,
                eta: None,
                version: self.version(false),
            };
        }
        let estimate = scaled(self.duration, self.eta_bias);
        Snapshot {
            state: State::Pending,
            // Below 1 until the end is decided (a job of a shared log past its end by the
            // clock, whose end is not logged yet).
            progress: self.progress_at(elapsed).min(0.999),
            eta: Some(estimate.saturating_sub(elapsed)),
            version: self.version(false),
        }
    }

    /// The JSON body for `snap`; `eta_ms` only when `with_eta`.
    pub fn body(&self, snap: &Snapshot, with_eta: bool) -> StatusBody<'_> {
        let done = snap.state.is_terminal();
        StatusBody {
            id: &self.id,
            result: snap.state.as_str(),
            progress: snap.progress,
            eta_ms: if with_eta { snap.eta.map(millis) } else { None },
            created_at: rfc3339(self.created_wall),
            completed_at: done.then(|| rfc3339(self.completed_wall())),
            error: ErrorBody::of(snap.state),
        }
    }

    /// The weak entity tag of a version.
    pub fn etag(&self, version: u64) -> String {
        format!("W/\"{}-{}\"", self.id, version)
    }

    /// Counts one status request; returns the count including it.
    pub fn count_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Status requests so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Records that `channel` reported the terminal state. Returns `(first on this channel,
    /// first on any channel)`.
    pub fn mark_reported(&self, channel: Channel) -> (bool, bool) {
        let before = self.reported.fetch_or(channel.bit(), Ordering::AcqRel);
        let first_on_channel = before & channel.bit() == 0;
        let first_any = first_on_channel && !self.first_report_done.swap(true, Ordering::AcqRel);
        (first_on_channel, first_any)
    }

    /// Returns true exactly once, the first time it is called on a terminal job.
    pub fn take_finish(&self) -> bool {
        !self.finish_counted.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn status_is_derived_from_the_clock() {
        let job = Job::new(
            "j".into(),
            Duration::from_secs(10),
            Outcome::Error,
            1.2,
            None,
        );
        let t0 = job.created;
        let s = job.snapshot(t0 + Duration::from_secs(4));
        assert_eq!(s.state, State::Pending);
        assert_eq!(s.version, VERSION_PENDING);
        assert!((s.progress - 0.4).abs() < 1e-9);
        assert_eq!(s.eta, Some(Duration::from_secs(8)));
        // Past its biased estimate but not done: eta bottoms out at zero.
        let job2 = Job::new(
            "k".into(),
            Duration::from_secs(10),
            Outcome::Completed,
            0.5,
            None,
        );
        let s = job2.snapshot(job2.created + Duration::from_secs(6));
        assert_eq!(s.eta, Some(Duration::ZERO));
        let s = job.snapshot(t0 + Duration::from_secs(10));
        assert_eq!(s.state, State::Done(Outcome::Error));
        assert_eq!(s.version, VERSION_TERMINAL);
        let body = serde_json::to_value(job.body(&s, true)).unwrap();
        assert_eq!(body["result"], "error");
        assert_eq!(body["error"]["code"], "translation_failed");
        assert!(body.get("eta_ms").is_none());
        assert!(body["completed_at"].as_str().unwrap().ends_with('Z'));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_job_never_moves() {
        let job = Job::new(
            "h".into(),
            Duration::from_millis(10),
            Outcome::Completed,
            1.0,
            None,
        )
        .hanging();
        let far = job.created + Duration::from_secs(30 * 24 * 3600);
        for at in [job.created, job.created + Duration::from_secs(1), far] {
            let s = job.snapshot(at);
            assert_eq!(s.state, State::Pending);
            assert_eq!((s.progress, s.eta, s.version), (0.0, None, VERSION_PENDING));
            assert!(!job.is_done(at));
        }
        let body = serde_json::to_value(job.body(&job.snapshot(far), true)).unwrap();
        assert!(body.get("eta_ms").is_none(), "{body}");
        assert!(body.get("completed_at").is_none(), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_duration_past_any_clock_is_pending_forever_without_panicking() {
        let job = Job::new("m".into(), Duration::MAX, Outcome::Completed, 1.2, None);
        assert!(job.completes_at() > job.created + Duration::from_secs(20 * 365 * 24 * 3600));
        let s = job.snapshot(job.created + Duration::from_secs(3600));
        assert_eq!((s.state, s.version), (State::Pending, VERSION_PENDING));
        assert_eq!(s.eta, Some(Duration::MAX - Duration::from_secs(3600)));
        let body = serde_json::to_value(job.body(&s, true)).unwrap();
        assert_eq!(body["eta_ms"], u64::MAX);
        assert!(rfc3339(job.completed_wall()).ends_with('Z'));
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999Z");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_ends_a_pending_job_for_good() {
        let job = Job::new(
            "c".into(),
            Duration::from_secs(10),
            Outcome::Completed,
            1.0,
            None,
        );
        let t0 = job.created;
        assert_eq!(job.cancel(t0 + Duration::from_secs(4)), Cancel::Canceled);
        assert!(job.is_canceled());
        assert_eq!(job.completes_at(), t0 + Duration::from_secs(4));
        assert_eq!(
            job.completed_wall(),
            job.created_wall + Duration::from_secs(4)
        );
        // Later readers see it canceled, progress frozen where it stopped; the natural end
        // changes nothing.
        for at in [4, 9, 10, 3600] {
            let s = job.snapshot(t0 + Duration::from_secs(at));
            assert_eq!(s.state, State::Canceled, "at {at}s");
            assert_eq!((s.progress, s.eta), (0.4, None));
            assert_eq!(s.version, VERSION_TERMINAL);
        }
        // A reader whose clock reading predates the cancel saw it pending then.
        assert_eq!(
            job.snapshot(t0 + Duration::from_secs(3)).state,
            State::Pending
        );
        assert_eq!(
            job.cancel(t0 + Duration::from_secs(5)),
            Cancel::AlreadyCanceled
        );
        assert_eq!(
            job.cancel(t0 + Duration::from_secs(50)),
            Cancel::AlreadyCanceled
        );
        let body = serde_json::to_value(job.body(&job.snapshot(t0 + Duration::from_secs(6)), true))
            .unwrap();
        assert_eq!(body["result"], "canceled");
        assert!(body["completed_at"].is_string(), "{body}");
        assert!(
            body.get("error").is_none() && body.get("eta_ms").is_none(),
            "{body}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_job_cannot_be_canceled() {
        let job = Job::new(
            "f".into(),
            Duration::from_secs(2),
            Outcome::Error,
            1.0,
            None,
        );
        let t0 = job.created;
        // At its end instant a job has ended, whether or not anyone looked.
        assert_eq!(
            job.cancel(t0 + Duration::from_secs(2)),
            Cancel::Finished(Outcome::Error)
        );
        assert!(!job.is_canceled());
        assert_eq!(job.completes_at(), t0 + Duration::from_secs(2));
        let s = job.snapshot(t0 + Duration::from_secs(3));
        assert_eq!(
            (s.state, s.version),
            (State::Done(Outcome::Error), VERSION_TERMINAL)
        );
        // Once a reader reported the natural end, even a clock reading from before it cannot
        // cancel: the decision is taken.
        let job = Job::new(
            "g".into(),
            Duration::from_secs(2),
            Outcome::Completed,
            1.0,
            None,
        );
        let t0 = job.created;
        assert!(
            job.snapshot(t0 + Duration::from_secs(2))
                .state
                .is_terminal()
        );
        assert_eq!(
            job.cancel(t0 + Duration::from_secs(1)),
            Cancel::Finished(Outcome::Completed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_job_can_be_canceled() {
        let job = Job::new("h".into(), Duration::ZERO, Outcome::Completed, 1.0, None).hanging();
        let at = job.created + Duration::from_secs(3600);
        assert_eq!(job.cancel(at), Cancel::Canceled);
        assert_eq!(job.completes_at(), at);
        let s = job.snapshot(at);
        assert_eq!((s.state, s.progress), (State::Canceled, 0.0));
    }

    /// A cancel racing the natural end, on real threads: every reader reports the same
    /// terminal state, the one the cancel's answer implies, and never another.
    #[test]
    fn a_cancel_racing_the_natural_end_yields_one_terminal_state() {
        const ROUNDS: u32 = 300;
        const READERS: usize = 3;
        let (mut canceled, mut finished) = (0, 0);
        for round in 0..ROUNDS {
            let duration = Duration::from_micros(300 + u64::from(round % 7) * 50);
            let job = Job::new(format!("r{round}"), duration, Outcome::Completed, 1.0, None);
            let end = job.created + duration;
            let (answer, seen) = std::thread::scope(|scope| {
                let readers: Vec<_> = (0..READERS)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut seen = Vec::new();
                            // Read until well past the end, remembering every terminal state.
                            while Instant::now() < end + Duration::from_millis(1) {
                                let s = job.snapshot(Instant::now());
                                if s.state.is_terminal() {
                                    seen.push((s.state, s.version));
                                }
                            }
                            seen
                        })
                    })
                    .collect();
                let canceler = scope.spawn(|| {
                    // Aim at the natural end, a little either side of it.
                    let aim = end - Duration::from_micros(60)
                        + Duration::from_micros(u64::from(round % 5) * 30);
                    while Instant::now() < aim {
                        std::hint::spin_loop();
                    }
                    job.cancel(Instant::now())
                });
                let seen: Vec<_> = readers
                    .into_iter()
                    .flat_map(|r| r.join().unwrap())
                    .collect();
                (canceler.join().unwrap(), seen)
            });
            let expected = match answer {
                Cancel::Canceled => {
                    canceled += 1;
                    assert!(
                        job.completes_at() < end,
                        "a cancel only wins before the end"
                    );
                    State::Canceled
                }
                Cancel::Finished(o) => {
                    finished += 1;
                    State::Done(o)
                }
                Cancel::AlreadyCanceled => panic!("one cancel cannot find another"),
            };
            let odd: Vec<_> = seen
                .iter()
                .filter(|s| **s != (expected, VERSION_TERMINAL))
                .take(3)
                .collect();
            assert!(
                odd.is_empty(),
                "round {round}: cancel answered {answer:?}, readers also saw {odd:?}"
            );
            assert_eq!(job.snapshot(end + Duration::from_secs(1)).state, expected);
        }
        assert_eq!(canceled + finished, ROUNDS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_of_a_shared_log_ends_when_the_log_says_so_and_not_before() {
        let job = Job::shared(
            "s".into(),
            Instant::now(),
            SystemTime::now(),
            Duration::from_secs(2),
            Outcome::Error,
            1.0,
            None,
        );
        let t0 = job.created;
        assert_eq!(job.wakes_at(), None, "woken by the log, not the clock");
        // Past its end by this clock, not logged yet: pending, progress short of 1.
        let s = job.snapshot(t0 + Duration::from_secs(3));
        assert_eq!((s.state, s.progress), (State::Pending, 0.999));
        assert!(!job.take_finish(), "counted where its end is logged");
        assert!(job.decide(End::Natural));
        assert!(
            !job.decide(End::CanceledAfter(Duration::from_secs(1))),
            "once"
        );
        assert_eq!(job.wakes_at(), Some(t0 + Duration::from_secs(2)));
        // Decided: whatever this clock says.
        let s = job.snapshot(t0 + Duration::from_secs(1));
        assert_eq!(
            (s.state, s.version),
            (State::Done(Outcome::Error), VERSION_TERMINAL)
        );
        let canceled = Job::shared(
            "c".into(),
            t0,
            SystemTime::now(),
            Duration::from_secs(9),
            Outcome::Completed,
            1.0,
            None,
        );
        canceled.decide(End::CanceledAfter(Duration::from_secs(3)));
        let s = canceled.snapshot(t0 + Duration::from_secs(2));
        assert_eq!((s.state, s.progress), (State::Canceled, 0.333));
    }

    #[test]
    fn reports_are_first_once_per_channel_and_once_overall() {
        let job = Job::new("j".into(), Duration::ZERO, Outcome::Completed, 1.0, None);
        assert_eq!(job.mark_reported(Channel::Poll), (true, true));
        assert_eq!(job.mark_reported(Channel::Poll), (false, false));
        assert_eq!(job.mark_reported(Channel::Sse), (true, false));
        assert!(job.take_finish());
        assert!(!job.take_finish());
    }
}
