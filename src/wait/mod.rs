//! Waiting for one job: mechanism negotiation, the rules of a wait, and its report.
//!
//! A wait is one state machine and a driver. The state machine (`ledger`) holds what the
//! wait knows and decides, answer by answer, what happens next; it is pure (time is an
//! input). Two drivers hold one each: the single wait's async loop (`run`, behind
//! [`Client::wait`](crate::Client::wait)) and, one per job, the job set's scheduler
//! ([`jobset`](crate::jobset)). Both read through the same network trait (`wire`), so the
//! rules below are the job set's too; the few ways a set acts differently on the same
//! decisions are its scheduler's, listed in [`jobset`](crate::jobset).
//!
//! # Best mechanism first, each with its own fallback
//!
//! | mechanism | used when | falls back when |
//! | --- | --- | --- |
//! | Server-Sent Events | the job has an events URL (id-addressed, v1 status URL, or given) | `404`/`405`/`406`/`501` or not an event stream (remembered per server), `429`/`503` (this wait only), a stream that keeps breaking, at once on a line or an event over 1 MiB |
//! | long-poll (`Prefer: wait=N`) | always offered, unless the server is known not to hold requests | the answer lacks `Preference-Applied` (remembered per route when it never worked) |
//! | hint-driven polling | pending answers carry `eta_ms` or `Retry-After` / `retry-after-ms` | the job outlives the hint's plausible window |
//! | learned schedule | the client has seen enough jobs end | fewer than five learned jobs ran as long as this one |
//! | cold start | always | — |
//!
//! The last three are the default [`Adaptive`](crate::poll::Adaptive) policy; replace it with
//! [`WaitOptions::policy`]. Offering long-poll costs nothing against a server that ignores
//! it: the answer is an ordinary poll, and the missing `Preference-Applied` tells the client
//! not to trust it. So a server with nothing but `GET /status` sees no probe at all, only polls.
//!
//! Which mechanism delivered the answer, and which were given up on the way, is in the
//! [`WaitReport`], in the `wait` span and in the metrics.
//!
//! # The rules
//!
//! The state machine applies them; the drivers own time, I/O and memory:
//!
//! * The first look is immediate; after that the policy decides, except while the server
//!   holds requests (long-poll), when the next request goes out as soon as one returns.
//! * A deadline is honoured exactly: the wait ends on it, neither later nor earlier. Sleeps
//!   are clamped so that the last look goes out early enough to be answered by then (twice
//!   the latest round trip ahead of it, between 100 ms and 1 s); a request, held request or
//!   event stream still open at the deadline is cut there, and the wait gives up with what it
//!   saw last — what a stream or held request said last is current, so no poll follows it.
//! * No pause is shorter than [`MIN_PAUSE`](crate::poll::MIN_PAUSE) (50 ms), whoever asked
//!   for it: a policy, a server, a breaker. A held request the server answered at once (a
//!   claimed hold of zero) is no exception; one it did hold is reissued at once.
//! * A throttled answer (`429`, `503` + `Retry-After`) is waited out — exactly as long as
//!   asked, at least the floor, clamped to the deadline — and never ends the wait. The poll
//!   after such a pause is still on the policy's schedule (and reported with its basis). A
//!   body that does not parse is retried twice, then ends it.
//! * An unavailable service does not end a wait either. A read that fails after transport
//!   retries (a transport error, a `5xx`) is an outage once the service has answered at all:
//!   the wait keeps its schedule, and while the circuit breaker is open it stops polling
//!   until the breaker lets requests through again. At its deadline it ends with
//!   [`Error::Unavailable`](crate::Error::Unavailable). Only when nothing ever answered — a
//!   wrong URL, a dead host — does a failed read end the wait at once
//!   ([`Error::Unreachable`](crate::Error::Unreachable)).
//! * Dropping the future drops every request in flight with it.

mod capabilities;
mod http_source;
pub(crate) mod ledger;
mod options;
mod run;
#[cfg(test)]
pub(crate) mod script;
pub(crate) mod source;
mod watch;
pub(crate) mod wire;

use std::fmt;
use std::time::Duration;

use crate::model::JobStatus;
use crate::poll::Basis;

pub(crate) use capabilities::Capabilities;
pub use options::WaitOptions;
#[cfg(test)]
pub(crate) use run::{WaitPlan, run};
pub(crate) use run::{cancel_job, wait_for};
pub use watch::Watch;
pub(crate) use wire::Wire;

/// The least the last look of a wait goes out ahead of its deadline: between sending a
/// request and reading its answer stand not only the round trip but a busy machine's
/// scheduling.
pub(crate) const MIN_FINAL_LEAD: Duration = Duration::from_millis(100);
/// The most the last look of a wait goes out ahead of its deadline.
pub(crate) const MAX_FINAL_LEAD: Duration = Duration::from_secs(1);

/// How long before the deadline the last look of a wait goes out, so that it is answered by
/// then: twice the round trip of the latest plain read, between [`MIN_FINAL_LEAD`] and
/// [`MAX_FINAL_LEAD`].
pub(crate) fn final_lead(round_trip: Option<Duration>) -> Duration {
    round_trip
        .unwrap_or_default()
        .saturating_mul(2)
        .clamp(MIN_FINAL_LEAD, MAX_FINAL_LEAD)
}

/// How a job's terminal state was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// A Server-Sent Events stream.
    Sse,
    /// A request the server held until the job changed (`Prefer: wait`).
    LongPoll,
    /// A poll scheduled on this basis.
    Polling(Basis),
    /// A webhook delivered to a [`JobSet`](crate::jobset::JobSet) (see
    /// [`JobSetOptions::webhooks`](crate::jobset::JobSetOptions::webhooks)).
    Webhook,
}

impl Mechanism {
    /// A short, stable name: `sse`, `long_poll`, `webhook`, or the polling basis (`hints`,
    /// `learned`, `cold_start`, `initial`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Sse => "sse",
            Mechanism::LongPoll => "long_poll",
            Mechanism::Webhook => "webhook",
            Mechanism::Polling(basis) => basis.as_str(),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mechanism given up during a wait, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fallback {
    /// What was given up.
    pub from: Mechanism,
    /// Why.
    pub reason: FallbackReason,
}

/// Why a mechanism was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The server does not offer it (`404`, `405`, `406`, `501`, or not an event stream).
    NotSupported,
    /// The server did not confirm holding the request (no `Preference-Applied`).
    NotApplied,
    /// The server refused for now (`429`/`503`, for example too many streams).
    Refused,
    /// The stream kept ending or failing before the job finished, or broke a size limit at
    /// once: a line, or an event (its `data`, type and id together), over 1 MiB.
    StreamBroken,
    /// The service could not be reached for it.
    Unreachable,
}

impl FallbackReason {
    /// A short, stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::NotSupported => "not_supported",
            FallbackReason::NotApplied => "not_applied",
            FallbackReason::Refused => "refused",
            FallbackReason::StreamBroken => "stream_broken",
            FallbackReason::Unreachable => "unreachable",
        }
    }
}

/// How a wait went.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WaitReport {
    /// The mechanism that delivered the last answer.
    pub mechanism: Mechanism,
    /// Logical status reads and event streams opened: one per poll, long-poll or
    /// subscription, however many attempts it took (a read cut at the deadline counts; a read
    /// the circuit breaker refused, which sent nothing, does not).
    pub requests: u32,
    /// Extra attempts on the wire, across all requests: transport retries of a failed
    /// attempt, and resends after a `429`/`503` + `Retry-After` the throttle waited out
    /// (attempts after the first of each request).
    pub retries: u32,
    /// Hedges: duplicates of slow status reads (see
    /// [`HedgeConfig`](crate::transport::HedgeConfig)), requests on the wire that are neither
    /// a request of their own nor a retry.
    ///
    /// `requests + retries + hedges` is every HTTP request the wait sent: the number the
    /// server's access log shows for it (less any the network lost before they arrived, and
    /// any attempt still out when a read was cut at the deadline).
    pub hedges: u32,
    /// Pauses the poll policy ([`WaitOptions::policy`]) chose between plain polls. `0` when
    /// push mechanisms carried the wait — an event stream, or long-polls the server held,
    /// which go out again at once — or the server's hints set every pause: the policy was
    /// never consulted for its timing.
    pub policy_pauses: u32,
    /// From the start of the wait to its end.
    pub elapsed: Duration,
    /// From the job's `completed_at` to the moment the client learned it, when the server
    /// reports `completed_at` (wall clocks; clamped at zero).
    pub detection_delay: Option<Duration>,
    /// Mechanisms given up along the way, in order.
    pub fallbacks: Vec<Fallback>,
}

/// The longest a wait that gives up spends canceling its job on the service
/// ([`WaitOptions::cancel_on_give_up`]): one `POST`, cut after this (or after the request
/// timeout, if shorter). A wait that cancels ends at most this long after its deadline.
pub const CANCEL_BOUND: Duration = Duration::from_secs(2);

/// What became of the job when a wait that gave up canceled it on the service
/// ([`WaitOptions::cancel_on_give_up`]), as [`GaveUp::remote_cancel`](crate::GaveUp::remote_cancel)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteCancel {
    /// The service canceled the job (a `2xx` to the cancel request): it will not finish.
    Canceled,
    /// The service refused to cancel it: `409` when it finished meanwhile (the simulator's
    /// `job_finished`: read its status), `404` when it is gone, …
    Refused {
        /// The HTTP status of the refusal.
        status: u16,
        /// The `error.code` of its body, when there was one.
        code: Option<String>,
    },
    /// No answer within [`CANCEL_BOUND`] (or the service could not be reached): the job may
    /// still be running.
    NoAnswer,
    /// Nothing was sent: the client's profile has no cancel endpoint, or the job was
    /// addressed by a status URL whose id the profile cannot read.
    Unsupported,
}

impl RemoteCancel {
    /// A short, stable name: `canceled`, `refused`, `no_answer`, `unsupported`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RemoteCancel::Canceled => "canceled",
            RemoteCancel::Refused { .. } => "refused",
            RemoteCancel::NoAnswer => "no_answer",
            RemoteCancel::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for RemoteCancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteCancel::Canceled => f.write_str("the job was canceled on the service"),
            RemoteCancel::Refused { status, code } => {
                write!(f, "the service refused to cancel the job (HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, ", {code}")?;
                }
                f.write_str(")")
            }
            RemoteCancel::NoAnswer => {
                f.write_str("the cancel request got no answer in time: the job may still run")
            }
            RemoteCancel::Unsupported => f.write_str(
                "the job could not be canceled (the profile has no cancel endpoint, or the job's id is not known)",
            ),
        }
    }
}

/// A job that completed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Completion {
    /// The terminal status.
    pub status: JobStatus,
    /// How the wait went.
    pub report: WaitReport,
}

#[cfg(test)]
mod tests;
