//! One wait for one job, as a pure state machine: an answer in, a decision out.
//!
//! # Why one state machine and two drivers
//!
//! Waiting for a job is two things that change for different reasons. What an answer
//! *means* for the wait — the job ended, it is pending with a hint, the server throttled, the
//! stream broke, the service is down, the deadline came — and what to do about it is
//! judgement: subtle, worth testing exhaustively, and the same whoever waits. How to send the
//! next request, sleep, hold a stream, share a request budget with a thousand other jobs is
//! mechanism: it differs between a single wait (one async loop) and a job set (one scheduler
//! task, a timer queue, a budget).
//!
//! So, as a smithy-rs waiter splits its *acceptor* (a poll result in, a state out) from its
//! *orchestrator* (loop, sleep, build errors), a [`Ledger`] holds everything one wait knows —
//! when it started, the job's origin, what was sent, what came back, the entity tag, the
//! server's estimates and hints, progress readings, fallbacks, the mechanism, the counts of
//! unreadable answers and broken streams — and has one step: an [`Answer`] in, a [`Step`]
//! out, whose [`Decision`] is to finish with a result, keep listening to a stream, sleep until
//! an instant (and why), or wait for the deadline with nothing more to send. Between steps
//! [`Ledger::next_look`] says what the next request is: a stream, a held read, a plain read,
//! or the last look before the deadline. The ledger reads no clock (time is an input:
//! [`Clocks`]), sends nothing and sleeps never; it logs through `tracing` and counts
//! fallbacks through the `metrics` facade. The two drivers, `wait::run` and the job set's
//! scheduler, only act: they send what it asks for, sleep until it says, and hand it what
//! came back.
//!
//! What a finished wait teaches the learned durations comes back with its ending
//! ([`Ending::lesson`]); the driver records it where it keeps them.
//!
//! The rules themselves are the single wait's, documented in [`crate::wait`]; the few ways a
//! job set acts differently on the same decisions (its first look is never held, a throttled
//! answer pauses the shared budget, the last look needs a token) are the driver's, listed in
//! `docs/sdk.md`.

mod end;
mod observe;
mod step;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::time::Instant;

pub(crate) use crate::clock::Clocks;
use crate::error::Error;
use crate::model::JobStatus;
use crate::poll::{Basis, Estimate, LearnedDurations, PollPolicy, ProgressReading};
use crate::profile::Profile;
use crate::transport::sse::SseEvent;
pub(crate) use end::Ending;

use super::source::{ReadRequest, Reading};
use super::{Fallback, FallbackReason, Mechanism, final_lead};

/// Unreadable answers tolerated in a row before the wait ends.
pub(crate) const MAX_MALFORMED: u8 = 2;
/// Stream breaks tolerated before the wait polls instead.
pub(crate) const MAX_STREAM_BREAKS: u8 = 2;
/// The step of the short pauses after an unreadable answer or a broken stream (the `n`th
/// waits `n` steps), unless the stream's `retry:` field says otherwise.
pub(crate) const STEP: Duration = Duration::from_millis(250);
/// A stream with no event for this long is considered dead (servers send keep-alives).
pub(crate) const STREAM_IDLE: Duration = Duration::from_secs(60);
/// The longest reconnection pause a stream's `retry:` field may ask for.
const MAX_RECONNECT: Duration = Duration::from_secs(30);
/// The pause after a throttled answer that did not say how long.
const THROTTLE_PAUSE: Duration = Duration::from_secs(1);
/// A delay no policy means literally: past it is as good as never.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the driver sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Open (or reopen) the job's event stream.
    Subscribe,
    /// A status read the server is asked to hold this long (`Prefer: wait`, whole seconds).
    Hold(Duration),
    /// A plain status read.
    Poll,
    /// The last look: a plain read sent to be answered by the deadline. Whatever it finds,
    /// nothing follows it.
    Final,
}

impl Look {
    /// The hold asked for, when the look is a held read.
    pub(crate) fn hold(self) -> Option<Duration> {
        match self {
            Look::Hold(hold) => Some(hold),
            _ => None,
        }
    }

    /// A short, stable name (span field).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Look::Subscribe => "events",
            Look::Hold(_) => "long_poll",
            Look::Poll | Look::Final => "status",
        }
    }
}

/// What the driver can offer the job's next look, as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    /// An event stream can be opened for the job now (it has an events URL, the route is not
    /// known to lack streams, the options allow them, a slot is free).
    pub(crate) stream: bool,
    /// A read can be held now (the options allow it, the route is not known to ignore it, a
    /// slot is free).
    pub(crate) hold: bool,
    /// The longest hold to ask for.
    pub(crate) max_hold: Duration,
    /// An instant no hold may outlast besides the deadline (a job set's stall check, whose
    /// evidence is the answer).
    pub(crate) hold_until: Option<Instant>,
}

/// What the step needs besides the answer: the policy that decides when to look again, and
/// what it is told.
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    /// The job as the caller named it (errors and logs).
    pub(crate) job: &'a str,
    /// The job API's dialect: how events read, how many unknown words in a row to bear.
    pub(crate) profile: &'a Profile,
    pub(crate) policy: &'a dyn PollPolicy,
    /// Job durations learned so far, for the policy (`None`: nothing learned, nothing told).
    pub(crate) learned: Option<&'a LearnedDurations>,
    /// Uniform in `[0, 1)`, drawn for this step (for the policy's jitter).
    pub(crate) random: f64,
    /// What the next look could be.
    pub(crate) offer: Offer,
}

/// What came back.
// One answer exists per step, moved once into it and never stored: its size does not add up.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Answer {
    /// A status read came back: the look it answers, sent at `sent`.
    Read {
        look: Look,
        sent: Instant,
        reading: Reading,
    },
    /// A subscription was answered: a stream is open, or it is not.
    Subscribed(Opened),
    /// An event arrived on the open stream.
    Event(SseEvent),
    /// The open stream stopped.
    Broke(Break),
    /// A webhook delivered the job's status (verified and decoded by the caller's receiver).
    Delivered(JobStatus),
    /// The deadline came: whatever was still out is cut.
    Deadline,
}

/// How a subscription was answered (the stream itself stays with the driver).
#[derive(Debug)]
pub(crate) enum Opened {
    /// The stream is open.
    Stream { attempts: u32 },
    /// No stream: poll instead.
    Fallback {
        reason: FallbackReason,
        attempts: u32,
    },
    /// Refused for good (`401`/`403`): the wait ends.
    Failed { error: Error, attempts: u32 },
}

/// How an open stream stopped before the job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Break {
    /// The server ended it.
    Ended,
    /// It failed (a connection error, a malformed frame).
    Failed,
    /// Nothing arrived for [`STREAM_IDLE`].
    Idle,
    /// A line or an event over its size limit: broken or hostile, not worth reopening.
    Oversized,
}

/// What to do now.
#[derive(Debug)]
pub(crate) enum Decision {
    /// The wait is over.
    Finish(Box<Ending>),
    /// Keep reading the open stream.
    Listen,
    /// Send nothing until `until` (dropping any open stream), then take the next look.
    Sleep { until: Instant, pause: Pause },
    /// Nothing more can be learned in time: send nothing, and end at the deadline (with
    /// [`Answer::Deadline`]).
    Expire { at: Instant },
}

/// Why a wait sleeps: the policy's schedule, or something only the loop knows. (The
/// mechanism a report names is never one of the latter: a poll after a throttled answer is
/// still a poll on the policy's schedule.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// The poll policy's schedule.
    Policy(Basis),
    /// A held read came back having held: the next goes out at once (after the floor).
    Reissue,
    /// The server throttled (`429`/`503` + `Retry-After`): exactly as long as asked.
    Throttled,
    /// The circuit breaker is open: until it lets requests through again.
    Unavailable,
    /// An unreadable answer: a short pause before reading again.
    Malformed,
    /// The stream broke: a short pause before reopening it.
    Reconnect,
    /// Streams were given up: poll at once.
    Fallback,
}

impl Pause {
    /// A short, stable name (the `sleep` span's `basis`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Pause::Policy(basis) => basis.as_str(),
            Pause::Reissue => "reissue",
            Pause::Throttled => "throttled",
            Pause::Unavailable => "unavailable",
            Pause::Malformed => "malformed",
            Pause::Reconnect => "reconnect",
            Pause::Fallback => "fallback",
        }
    }
}

/// What the loop learned about the server's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fact {
    /// An event stream opened.
    SseWorks,
    /// The events URL answered "not here" and the status URL works: the route has no streams
    /// (a `404` on both would mean the job is unknown, not that streams are missing).
    SseMissing,
    /// A held read came back with `Preference-Applied`.
    LongPollApplied,
    /// A read asked to be held came back without it.
    LongPollIgnored,
}

/// One step's result.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) decision: Decision,
    /// The answer was a reading of the job's status (pending or terminal, a `304`, an
    /// event): [`Ledger::last`] is what it showed.
    pub(crate) seen: bool,
    /// What the answer taught about the route (at most two facts).
    pub(crate) facts: [Option<Fact>; 2],
}

impl Step {
    fn new(decision: Decision) -> Self {
        Step {
            decision,
            seen: false,
            facts: [None; 2],
        }
    }

    fn learned(&mut self, fact: Fact) {
        if let Some(slot) = self.facts.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(fact);
        }
    }

    /// The facts, in the order they were learned.
    pub(crate) fn facts(&self) -> impl Iterator<Item = Fact> + '_ {
        self.facts.iter().flatten().copied()
    }
}

/// The service was unavailable at the last look.
#[derive(Debug)]
struct Down {
    /// `host:port`.
    host: String,
    /// When the circuit breaker lets requests through again, when it is open.
    resume_at: Option<Instant>,
    /// The last real failure (not a refusal).
    cause: Option<Error>,
}

/// What is remembered of the job's event stream.
#[derive(Debug, Clone)]
struct StreamMemory {
    /// Given up on for this wait.
    refused: bool,
    /// Streams that broke before the job ended.
    breaks: u8,
    /// The events URL answered "not here": confirmed as "no streams" once the status URL
    /// works.
    suspect: bool,
    /// The last event id, to resume.
    last_id: Option<Box<str>>,
    /// The base pause before reopening (the server's `retry:`, floored).
    reconnect: Duration,
}

/// Everything one wait knows about its job, and the one step that decides what to do next.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// When the wait began: elapsed time and the age of a job whose creation is unknown
    /// count from here.
    start: Instant,
    /// When the wait ends, exactly.
    deadline: Option<Instant>,
    /// When the job was created, as the caller said (when the creation was answered).
    created: Option<Instant>,
    /// The job's creation, as well as it is known (else `start`).
    origin: Option<Instant>,
    /// Whether `origin` is the job's creation (the caller's or the server's word), not a
    /// guess: only then do ages predict the end from progress.
    origin_known: bool,
    /// Status reads and streams opened (counted when sent; a read the breaker refused,
    /// which sent nothing, is taken back).
    requests: u32,
    /// Attempts after the first of each request.
    retries: u32,
    /// Duplicates of slow reads.
    hedges: u32,
    /// Pauses the poll policy chose.
    policy_pauses: u32,
    /// How long the latest plain read took, from sending to its answer: it places the last
    /// look ahead of the deadline.
    round_trip: Option<Duration>,
    /// The latest status seen.
    last: Option<JobStatus>,
    /// The entity tag to send as `If-None-Match`.
    etag: Option<String>,
    /// The latest positive `eta_ms`, at the age it was seen.
    eta: Option<Estimate>,
    /// The latest `Retry-After` on a pending answer, at the age it was seen.
    retry_after: Option<Estimate>,
    /// The pause the latest answer asked for before the next poll (a profile's `pause`
    /// hint): the next poll is not sooner.
    pause: Option<Duration>,
    /// Progress readings so far.
    progress: Option<ProgressReading>,
    /// When the last request that saw the job pending was sent.
    last_pending: Option<Instant>,
    /// Mechanisms given up, in order.
    fallbacks: Vec<Fallback>,
    /// Whether the service has answered this wait at all (any HTTP answer, any stream).
    answered: bool,
    /// The service was failing at the last look.
    down: Option<Box<Down>>,
    /// The poll policy's latest basis: it names the mechanism of the next poll.
    basis: Basis,
    /// The mechanism that delivered the latest answer.
    current: Mechanism,
    /// Unreadable answers in a row.
    malformed: u8,
    /// Answers in a row whose state word the profile does not know.
    unknown: u32,
    stream: StreamMemory,
}

impl Ledger {
    /// A wait that starts at `start`, ends at `deadline`, for a job the caller says was
    /// created at `created`.
    pub(crate) fn new(start: Instant, deadline: Option<Instant>, created: Option<Instant>) -> Self {
        Ledger {
            start,
            deadline,
            created,
            origin: created,
            origin_known: created.is_some(),
            requests: 0,
            retries: 0,
            hedges: 0,
            policy_pauses: 0,
            round_trip: None,
            last: None,
            etag: None,
            eta: None,
            retry_after: None,
            pause: None,
            progress: None,
            last_pending: None,
            fallbacks: Vec::new(),
            answered: false,
            down: None,
            basis: Basis::Initial,
            current: Mechanism::Polling(Basis::Initial),
            malformed: 0,
            unknown: 0,
            stream: StreamMemory {
                refused: false,
                breaks: 0,
                suspect: false,
                last_id: None,
                reconnect: STEP,
            },
        }
    }

    /// A wait saved earlier, as far as its saved state tells: requests spent, the last
    /// status seen, the job's creation when it was known.
    pub(crate) fn restored(
        mut self,
        (requests, retries, hedges): (u32, u32, u32),
        last: Option<JobStatus>,
        origin: Option<Instant>,
    ) -> Self {
        self.requests = requests;
        self.retries = retries;
        self.hedges = hedges;
        self.last = last;
        if origin.is_some() {
            self.origin = origin;
            self.origin_known = true;
        }
        self
    }

    /// A request (or stream) goes out: counted now, so that one still in flight when the
    /// wait is saved or cut has been spent all the same.
    pub(crate) fn sent(&mut self) {
        self.requests = self.requests.saturating_add(1);
    }

    /// When the last look goes out: [`final_lead`] before the deadline.
    pub(crate) fn last_look_at(&self) -> Option<Instant> {
        let deadline = self.deadline?;
        Some(
            deadline
                .checked_sub(final_lead(self.round_trip))
                .unwrap_or(deadline),
        )
    }

    /// What to send now: the last look once its time has come, else a stream while one can
    /// be opened and the wait has not given up on streams, else a held read while the server
    /// holds them (and the service was not failing at the last look: a plain read answers at
    /// once, so it can be the breaker's probe), else a plain read.
    pub(crate) fn next_look(&self, now: Instant, offer: &Offer) -> Look {
        if self.last_look_at().is_some_and(|at| now >= at) {
            return Look::Final;
        }
        if offer.stream && !self.stream.refused {
            return Look::Subscribe;
        }
        match self.hold_for(now, offer) {
            Some(hold) => Look::Hold(hold),
            None => Look::Poll,
        }
    }

    /// How long to ask the server to hold a read: in whole seconds, never past the deadline
    /// nor past the offer's limit; `None` when less than a second is left, or holding is not
    /// on offer.
    pub(crate) fn hold_for(&self, now: Instant, offer: &Offer) -> Option<Duration> {
        if !offer.hold || self.down.is_some() {
            return None;
        }
        let mut hold = whole_seconds(offer.max_hold);
        for limit in [self.deadline, offer.hold_until].into_iter().flatten() {
            hold = hold.min(whole_seconds(limit.saturating_duration_since(now)));
        }
        (hold >= Duration::from_secs(1)).then_some(hold)
    }

    /// The read to send for a look: conditional on the entity tag, held as the look says,
    /// cut at the deadline.
    pub(crate) fn request(&self, look: Look) -> ReadRequest {
        ReadRequest {
            etag: self.etag.clone(),
            hold: look.hold(),
            deadline: self.deadline,
        }
    }

    /// The id of the last event seen, to resume a stream with.
    pub(crate) fn last_event_id(&self) -> Option<String> {
        self.stream.last_id.as_deref().map(str::to_owned)
    }

    /// The wait's deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// When the wait began.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// The latest status seen.
    pub(crate) fn last(&self) -> Option<&JobStatus> {
        self.last.as_ref()
    }

    /// The job's age at `at`: since its creation when known, else since the wait began.
    pub(crate) fn age(&self, at: Instant) -> Duration {
        self.age_at(at)
    }

    /// The job's creation, when it is known.
    pub(crate) fn origin(&self) -> Option<Instant> {
        self.origin.filter(|_| self.origin_known)
    }

    /// Requests, retries and hedges so far.
    pub(crate) fn counts(&self) -> (u32, u32, u32) {
        (self.requests, self.retries, self.hedges)
    }
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
