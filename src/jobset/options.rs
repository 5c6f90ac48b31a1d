//! How a job set waits: each job's wait settings, and the set's own knobs.
//!
//! One vocabulary: a job's wait is set with the same [`WaitOptions`] as a single wait —
//! deadline, poll budget, policy, SSE, long-poll and its hold — validated once, with the
//! single wait's rules. On top the set has what only a set has: caps on held connections
//! and plain polls in flight, stall detection, the age of a state it restores.

use std::time::Duration;

use super::safety::SafetyNet;
use super::stall::StallDetection;
use crate::error::Error;
use crate::poll::{Adaptive, FLEET_JITTER, PollPolicy, PollPolicyExt};
use crate::wait::WaitOptions;

/// How a [`JobSet`](super::JobSet) waits: every job's [`WaitOptions`], and the set's own
/// knobs — the caps on connections, stall detection, how old a saved state may be.
///
/// The per-job settings can be given whole ([`wait_options`](Self::wait_options)) or one by
/// one ([`deadline`](Self::deadline), [`policy`](Self::policy), …), which set the same
/// [`WaitOptions`]. The request budget is not here: it belongs to the
/// [`Client`](crate::Client), shared by all its job sets
/// ([`ClientBuilder::request_budget`](crate::ClientBuilder::request_budget)).
#[derive(Clone, Debug)]
pub struct JobSetOptions {
    /// Every job's wait: deadline, poll budget, policy, push mechanisms.
    pub(crate) wait: WaitOptions,
    /// The cap on streams and long-polls held at once, all jobs together.
    pub(crate) max_held: usize,
    /// The cap on plain polls in flight at once.
    pub(crate) max_in_flight: usize,
    /// When a job counts as stalled, and whether that ends its wait.
    pub(crate) stall: StallDetection,
    pub(crate) stop_on_stall: bool,
    /// How old a saved state may be and still be restored.
    pub(crate) max_saved_age: Duration,
    /// Follow every job on one change stream when the server has one.
    pub(crate) change_stream: bool,
    /// Read the status of every job due at once in one request when the server can.
    pub(crate) batch_reads: bool,
    /// The most jobs in one batched read.
    pub(crate) max_batch: usize,
    /// What a job read early by a batched read does next.
    pub(crate) batch_timing: BatchTiming,
    /// How often the server says something on a quiet change stream: the watchdog's bound
    /// derives from it.
    pub(crate) bookmark_interval: Duration,
    /// Jobs announce their end by webhook, and are read only on this safety net.
    pub(crate) webhooks: Option<SafetyNet>,
}

impl JobSetOptions {
    /// The defaults: [`WaitOptions`]' defaults for each job (a one-hour deadline, SSE and
    /// long-poll on) except the policy, [`Adaptive`] with ±10 % jitter; at most 100 held
    /// connections and 32 polls in flight; stalls after the 99 % quantile of learned durations
    /// (reported, not fatal).
    pub fn new() -> Self {
        Self::default()
    }

    /// Every job's wait settings at once. Note that [`WaitOptions::new`]'s policy has no
    /// jitter: give it one ([`FLEET_JITTER`]) so that jobs added together do not poll
    /// together.
    pub fn wait_options(self, options: impl Into<WaitOptions>) -> Self {
        let options = options.into();
        self.per_job(|_| options)
    }

    /// Changes every job's wait settings.
    fn per_job(mut self, change: impl FnOnce(WaitOptions) -> WaitOptions) -> Self {
        self.wait = change(self.wait);
        self
    }

    /// The deadline of jobs added without one, from the moment they are added. It is exact,
    /// as for [`WaitOptions::deadline`]: a job's wait ends on it unless the job ends first. A
    /// job waiting for its next poll gets one last look shortly before the deadline (twice
    /// its latest round trip, between 100 ms and 1 s) if the budget has a token for it then;
    /// a read, held request or stream still out at the deadline is cut there, and the wait
    /// gives up with what it saw last.
    pub fn deadline(self, deadline: Duration) -> Self {
        self.per_job(|wait| wait.deadline(deadline))
    }

    /// Jobs added without a deadline wait until they end, stall (with
    /// [`stop_on_stall`](Self::stop_on_stall)) or are cancelled.
    pub fn no_deadline(self) -> Self {
        self.per_job(WaitOptions::no_deadline)
    }

    /// Each job gives up after this many status requests (at least 1), as
    /// [`WaitOptions::max_polls`].
    pub fn max_polls(self, max_polls: u32) -> Self {
        self.per_job(|wait| wait.max_polls(max_polls))
    }

    /// When to poll each job that holds no stream. The default spreads every delay by ±10 %
    /// ([`FLEET_JITTER`]) so that jobs added together do not poll together.
    pub fn policy(self, policy: impl PollPolicy + 'static) -> Self {
        self.per_job(|wait| wait.policy(policy))
    }

    /// Whether to follow jobs over Server-Sent Events when the server has them (default on),
    /// as [`WaitOptions::sse`].
    pub fn sse(self, enabled: bool) -> Self {
        self.per_job(|wait| wait.sse(enabled))
    }

    /// Whether to ask the server to hold status requests (default on), as
    /// [`WaitOptions::long_poll`]. A job's first look is never held.
    pub fn long_poll(self, enabled: bool) -> Self {
        self.per_job(|wait| wait.long_poll(enabled))
    }

    /// How long to ask the server to hold one request, as
    /// [`WaitOptions::long_poll_hold`] (whole seconds, 1 s to 1 h; default 30 s).
    pub fn long_poll_hold(self, hold: Duration) -> Self {
        self.per_job(|wait| wait.long_poll_hold(hold))
    }

    /// The most connections held at once — event streams and long-polls together (default
    /// 100). The other jobs poll; a job takes a free slot at its next poll. 0 turns both
    /// mechanisms off.
    pub fn max_held_connections(self, max: usize) -> Self {
        JobSetOptions {
            max_held: max,
            ..self
        }
    }

    /// The most plain polls in flight at once (default 32, at least 1).
    pub fn max_in_flight(self, max: usize) -> Self {
        JobSetOptions {
            max_in_flight: max,
            ..self
        }
    }

    /// When a job counts as stalled (default: [`StallDetection::default`]).
    pub fn stall(self, detection: StallDetection) -> Self {
        JobSetOptions {
            stall: detection,
            ..self
        }
    }

    /// A job is stalled after `bound` without any change of status or progress.
    pub fn stall_after(self, bound: Duration) -> Self {
        self.stall(StallDetection::After(bound))
    }

    /// Whether a stalled job stops being waited for, ending with
    /// [`Error::Stalled`](crate::Error::Stalled) (default: it is reported and waited for).
    pub fn stop_on_stall(self, stop: bool) -> Self {
        JobSetOptions {
            stop_on_stall: stop,
            ..self
        }
    }

    /// Saved state older than this is refused when restoring (default 24 h): the server may
    /// have forgotten its jobs.
    pub fn max_saved_age(self, age: Duration) -> Self {
        JobSetOptions {
            max_saved_age: age,
            ..self
        }
    }

    /// Whether to follow every job on one change stream (`GET /v1/events` on a watch set)
    /// when the server has one (default on). See the fallback order in
    /// [`JobSet`](super::JobSet#one-connection-for-many-jobs).
    pub fn change_stream(self, enabled: bool) -> Self {
        JobSetOptions {
            change_stream: enabled,
            ..self
        }
    }

    /// Whether jobs polled in the same instant are read in one request (`GET
    /// /v1/jobs?ids=`) when the server can (default on).
    pub fn batch_reads(self, enabled: bool) -> Self {
        JobSetOptions {
            batch_reads: enabled,
            ..self
        }
    }

    /// What a job that a batched read looked at before its time does next (default
    /// [`BatchTiming::Prompt`]).
    pub fn batch_timing(self, timing: BatchTiming) -> Self {
        JobSetOptions {
            batch_timing: timing,
            ..self
        }
    }

    /// The most jobs in one batched read (default 100, the simulator's
    /// `jobs.max_batch_ids`; 1 to 1,000).
    pub fn max_batch(self, max: usize) -> Self {
        JobSetOptions {
            max_batch: max,
            ..self
        }
    }

    /// How often the server sends something on a quiet change stream (its bookmark or
    /// keep-alive interval; default 15 s, the simulator's `changes.bookmark_interval`). A
    /// stream silent for one and a half of these is dropped and resumed — and one that says
    /// nothing for a third of one after it opens (the server's first event comes at once) —;
    /// a held read still
    /// unanswered half its hold (at least a second) after the hold is dropped and sent again.
    /// Between 10 ms and 1 h.
    pub fn bookmark_interval(self, interval: Duration) -> Self {
        JobSetOptions {
            bookmark_interval: interval,
            ..self
        }
    }

    /// Every job of the set announces its end by webhook, handed to the set with
    /// [`JobSet::deliver`](super::JobSet::deliver) or a
    /// [`JobSetHandle`](super::JobSetHandle) as the receiver's
    /// [`EventSink`](crate::webhook::EventSink); the set reads a job only on the safety
    /// `net` (default [`SafetyNet::default`]: when 99 % of learned jobs had ended by its
    /// age), to catch a webhook that never came.
    ///
    /// A terminal status delivered ends the job's wait at once ([`Mechanism::Webhook`]
    /// in its report), whatever read was out; one delivered again, late or out of order
    /// changes nothing, and neither does a state that is not terminal. A delivery that
    /// comes before its job is added is kept (the latest 256 such; the first terminal
    /// status of each) and ends the job when it is. Jobs are matched by their id on the
    /// server: a [`CreatedJob`](crate::CreatedJob)'s, the one given with
    /// [`JobRef::with_id`](crate::JobRef::with_id), the id they were added by, or the one in
    /// a status URL of the client's profile's shape (kept in a saved set); a job without one
    /// is read on the safety net alone. An id added twice: a delivery ends both.
    ///
    /// A set without this option takes deliveries too — a terminal one ends the job with
    /// that id at once, one for no job of the set is dropped — and waits as it would
    /// otherwise.
    ///
    /// A restored set reads at once each job older than its first safety read (webhooks
    /// sent while nothing listened are lost), then goes on on the safety net.
    ///
    /// The safety net's reads are plain reads — batched when the server can
    /// ([`batch_reads`](Self::batch_reads)) — never held: the change stream, event
    /// streams and long-polls are for jobs that do not expect webhooks. Deadlines, the
    /// last look before one, and stall checks are as without webhooks.
    ///
    /// [`Mechanism::Webhook`]: crate::Mechanism::Webhook
    pub fn webhooks(self, net: SafetyNet) -> Self {
        JobSetOptions {
            webhooks: Some(net),
            ..self
        }
    }

    /// How long a change stream may say nothing before the watchdog drops it.
    pub(crate) fn silence_bound(&self) -> Duration {
        self.bookmark_interval + self.bookmark_interval / 2
    }

    /// How long a change stream just opened may take to send its first event (the server
    /// sends one at once: a snapshot, or a bookmark on a resume): a third of the bookmark
    /// interval (5 s by default), so that a connection silent from the start is dropped
    /// long before the silence bound.
    pub(crate) fn first_event_bound(&self) -> Duration {
        self.bookmark_interval / 3
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.wait.validate()?;
        if self.max_in_flight == 0 {
            return Err(Error::config("max_in_flight", "must be at least 1"));
        }
        if !(1..=1000).contains(&self.max_batch) {
            return Err(Error::config("max_batch", "must be between 1 and 1000"));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600))
            .contains(&self.bookmark_interval)
        {
            return Err(Error::config(
                "bookmark_interval",
                "must be between 10 ms and 1 h",
            ));
        }
        if let Some(net) = &self.webhooks {
            net.validate()?;
        }
        self.stall.validate()
    }
}

/// What a job does after a batched read looked at it before its time.
///
/// A batched read with room takes jobs whose next look is due within half of their pause, so
/// that one request reads many. What such an early look means for the job's schedule is a
/// choice between detection and requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BatchTiming {
    /// Its schedule starts again from the early answer, as from any other: the look it
    /// planned — aimed at the server's estimate of the job's end, say — is planned again from
    /// what it just saw, so detection is as prompt as without batching, at the price of more
    /// looks per job (`examples/many_jobs`, 1,000 ten-minute jobs scaled to 30 s: 10 looks per
    /// job against 3.5 polled alone, 0.55 requests per job, detection p50 50 ms).
    #[default]
    Prompt,
    /// It keeps its cadence: its next look is as far from when the early one was due as its
    /// schedule says, so a job is looked at as often as it would be alone (the same run: 3.8
    /// looks per job against 3.5, 0.046 requests per job), but a look aimed at the job's end,
    /// taken early, sees it still running, and the job is found a pause later (detection p50
    /// 1.9 s).
    Economical,
}

/// Options are taken by value; a reference is cloned.
impl From<&JobSetOptions> for JobSetOptions {
    fn from(options: &JobSetOptions) -> Self {
        options.clone()
    }
}

impl Default for JobSetOptions {
    fn default() -> Self {
        JobSetOptions {
            wait: WaitOptions::new().policy(Adaptive::default().with_jitter(FLEET_JITTER)),
            max_held: 100,
            max_in_flight: 32,
            stall: StallDetection::default(),
            stop_on_stall: false,
            max_saved_age: Duration::from_secs(24 * 3600),
            change_stream: true,
            batch_reads: true,
            max_batch: 100,
            batch_timing: BatchTiming::Prompt,
            bookmark_interval: Duration::from_secs(15),
            webhooks: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_job_settings_are_validated_once_with_the_single_waits_rules() {
        let setting = |options: JobSetOptions| match options.validate() {
            Err(Error::Config(c)) => c.setting,
            other => panic!("{other:?}"),
        };
        assert_eq!(setting(JobSetOptions::new().max_polls(0)), "max_polls");
        assert_eq!(
            setting(JobSetOptions::new().long_poll_hold(Duration::from_millis(500))),
            "long_poll_hold"
        );
        assert_eq!(
            setting(JobSetOptions::new().wait_options(WaitOptions::new().max_polls(0))),
            "max_polls"
        );
        assert_eq!(
            setting(JobSetOptions::new().max_in_flight(0)),
            "max_in_flight"
        );
        assert_eq!(setting(JobSetOptions::new().max_batch(0)), "max_batch");
        assert_eq!(setting(JobSetOptions::new().max_batch(1001)), "max_batch");
        assert_eq!(
            setting(JobSetOptions::new().bookmark_interval(Duration::from_millis(5))),
            "bookmark_interval"
        );
        assert_eq!(
            JobSetOptions::new()
                .bookmark_interval(Duration::from_secs(10))
                .silence_bound(),
            Duration::from_secs(15)
        );
        assert!(
            JobSetOptions::new()
                .long_poll(false)
                .long_poll_hold(Duration::ZERO)
                .validate()
                .is_ok(),
            "a hold is not checked when long-poll is off"
        );
    }
}
