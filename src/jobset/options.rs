//! How a job set waits: each job's wait settings, and the set's own knobs.
//!
//! One vocabulary: a job's wait is set with the same [`WaitOptions`] as a single wait —
//! deadline, poll budget, policy, SSE, long-poll and its hold — validated once, with the
//! single wait's rules. On top the set has what only a set has: caps on held connections
//! and plain polls in flight, stall detection, the age of a state it restores.

use std::fmt;
use std::time::Duration;

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
#[derive(Clone)]
pub struct JobSetOptions {
    pub(crate) wait: WaitOptions,
    pub(crate) max_held: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) stall: StallDetection,
    pub(crate) stop_on_stall: bool,
    pub(crate) max_saved_age: Duration,
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
        }
    }
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
    pub fn wait_options(mut self, options: WaitOptions) -> Self {
        self.wait = options;
        self
    }

    /// The deadline of jobs added without one, from the moment they are added. It is exact,
    /// as for [`WaitOptions::deadline`]: a job's wait ends on it unless the job ends first. A
    /// job waiting for its next poll gets one last look shortly before the deadline (twice
    /// its latest round trip, between 100 ms and 1 s) if the budget has a token for it then;
    /// a read, held request or stream still out at the deadline is cut there, and the wait
    /// gives up with what it saw last.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.wait = self.wait.deadline(deadline);
        self
    }

    /// Jobs added without a deadline wait until they end, stall (with
    /// [`stop_on_stall`](Self::stop_on_stall)) or are cancelled.
    pub fn no_deadline(mut self) -> Self {
        self.wait = self.wait.no_deadline();
        self
    }

    /// Each job gives up after this many status requests (at least 1), as
    /// [`WaitOptions::max_polls`].
    pub fn max_polls(mut self, max_polls: u32) -> Self {
        self.wait = self.wait.max_polls(max_polls);
        self
    }

    /// When to poll each job that holds no stream. The default spreads every delay by ±10 %
    /// ([`FLEET_JITTER`]) so that jobs added together do not poll together.
    pub fn policy(mut self, policy: impl PollPolicy + 'static) -> Self {
        self.wait = self.wait.policy(policy);
        self
    }

    /// Whether to follow jobs over Server-Sent Events when the server has them (default on).
    pub fn sse(mut self, enabled: bool) -> Self {
        self.wait = self.wait.sse(enabled);
        self
    }

    /// Whether to ask the server to hold status requests (default on).
    pub fn long_poll(mut self, enabled: bool) -> Self {
        self.wait = self.wait.long_poll(enabled);
        self
    }

    /// How long to ask the server to hold one request (whole seconds, 1 s to 1 h; default 30 s).
    pub fn long_poll_hold(mut self, hold: Duration) -> Self {
        self.wait = self.wait.long_poll_hold(hold);
        self
    }

    /// The most connections held at once — event streams and long-polls together (default
    /// 100). The other jobs poll; a job takes a free slot at its next poll. 0 turns both
    /// mechanisms off.
    pub fn max_held_connections(mut self, max: usize) -> Self {
        self.max_held = max;
        self
    }

    /// The most plain polls in flight at once (default 32, at least 1).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// When a job counts as stalled (default: [`StallDetection::default`]).
    pub fn stall(mut self, detection: StallDetection) -> Self {
        self.stall = detection;
        self
    }

    /// A job is stalled after `bound` without any change of status or progress.
    pub fn stall_after(self, bound: Duration) -> Self {
        self.stall(StallDetection::After(bound))
    }

    /// Whether a stalled job stops being waited for, ending with
    /// [`Error::Stalled`](crate::Error::Stalled) (default: it is reported and waited for).
    pub fn stop_on_stall(mut self, stop: bool) -> Self {
        self.stop_on_stall = stop;
        self
    }

    /// Saved state older than this is refused when restoring (default 24 h): the server may
    /// have forgotten its jobs.
    pub fn max_saved_age(mut self, age: Duration) -> Self {
        self.max_saved_age = age;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.wait.validate()?;
        if self.max_in_flight == 0 {
            return Err(Error::config("max_in_flight", "must be at least 1"));
        }
        self.stall.validate()
    }
}

impl fmt::Debug for JobSetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSetOptions")
            .field("wait", &self.wait)
            .field("max_held", &self.max_held)
            .field("max_in_flight", &self.max_in_flight)
            .field("stall", &self.stall)
            .field("stop_on_stall", &self.stop_on_stall)
            .field("max_saved_age", &self.max_saved_age)
            .finish()
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
