//! One job and the status derived from it.
//!
//! A job is `(created, duration, outcome)` fixed at creation. Its status at any instant is a
//! pure function of those and the clock, so the server needs no ticker per job: a reader
//! computes the status, a waiter sleeps until `completes_at`. The only mutable parts are
//! counters used for metrics (requests seen, channels that reported the terminal state).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use url::Url;

use crate::settings::Outcome;
use crate::time::{later, millis, scaled};

/// Version of a pending job's status, in its generation 0.
pub const VERSION_PENDING: u64 = 1;
/// Version of a terminal job's status, in its generation 0.
pub const VERSION_TERMINAL: u64 = 2;

/// How far away a hanging job's end is: far enough never to come.
const HANG_HORIZON: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

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
        }
    }

    fn bit(self) -> u8 {
        match self {
            Channel::Legacy => 1,
            Channel::Poll => 2,
            Channel::LongPoll => 4,
            Channel::Sse => 8,
            Channel::Webhook => 16,
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
    /// Status requests received (any channel but webhooks).
    requests: AtomicU64,
    /// Channels that have reported the terminal state (bit set).
    reported: AtomicU8,
    /// Whether the terminal state has been reported on any channel.
    first_report_done: AtomicBool,
    /// Whether `sim_jobs_finished_total` has counted this job.
    finish_counted: AtomicBool,
    /// Woken when the job is replaced (legacy reset), so held readers look again.
    pub changed: Notify,
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
    /// Finished this way.
    Done(Outcome),
}

impl State {
    /// Wire name of the result.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Done(o) => o.as_str(),
        }
    }
}

/// The `error` object of a failed job.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: &'static str,
    /// Human message.
    pub message: &'static str,
}

/// JSON body of `GET /v1/jobs/{id}/status` (and SSE/webhook payloads).
#[derive(Debug, Serialize)]
pub struct StatusBody<'a> {
    /// Job id.
    pub id: &'a str,
    /// `pending`, `completed`, `error`.
    pub result: &'static str,
    /// 0..1.
    pub progress: f64,
    /// Estimated milliseconds left (pending, hints on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, terminal only.
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
            requests: AtomicU64::new(0),
            reported: AtomicU8::new(0),
            first_report_done: AtomicBool::new(false),
            finish_counted: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Makes this job hang: it stays pending forever, its progress frozen at 0 and with no
    /// `eta_ms`, as a job stuck in a backend queue looks to its clients. Its duration and
    /// outcome are never reached.
    pub fn hanging(mut self) -> Self {
        self.hang = true;
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

    /// The instant the job becomes terminal (practically never, for a hanging job).
    pub fn completes_at(&self) -> Instant {
        let after = if self.hang {
            HANG_HORIZON
        } else {
            self.duration
        };
        later(self.created, after)
    }

    /// Wall-clock completion time (the creation time, for a duration past any calendar).
    pub fn completed_wall(&self) -> SystemTime {
        self.created_wall
            .checked_add(self.duration)
            .unwrap_or(self.created_wall)
    }

    /// Whether the job is terminal at `now`.
    pub fn is_done(&self, now: Instant) -> bool {
        now >= self.completes_at()
    }

    /// The status at `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        if self.hang {
            return Snapshot {
                state: State::Pending,
                progress: 0.0,
                eta: None,
                version: self.version(false),
            };
        }
        let elapsed = now.saturating_duration_since(self.created);
        if elapsed >= self.duration {
            return Snapshot {
                state: State::Done(self.outcome),
                progress: 1.0,
                eta: None,
                version: self.version(true),
            };
        }
        let progress = elapsed.as_secs_f64() / self.duration.as_secs_f64();
        let estimate = scaled(self.duration, self.eta_bias);
        Snapshot {
            state: State::Pending,
            progress: (progress * 1000.0).floor() / 1000.0,
            eta: Some(estimate.saturating_sub(elapsed)),
            version: self.version(false),
        }
    }

    /// The JSON body for `snap`; `eta_ms` only when `with_eta`.
    pub fn body(&self, snap: &Snapshot, with_eta: bool) -> StatusBody<'_> {
        let done = matches!(snap.state, State::Done(_));
        StatusBody {
            id: &self.id,
            result: snap.state.as_str(),
            progress: snap.progress,
            eta_ms: if with_eta { snap.eta.map(millis) } else { None },
            created_at: rfc3339(self.created_wall),
            completed_at: done.then(|| rfc3339(self.completed_wall())),
            error: matches!(snap.state, State::Done(Outcome::Error)).then_some(ErrorBody {
                code: "translation_failed",
                message: "the video could not be translated (simulated failure)",
            }),
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
