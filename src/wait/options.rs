//! How to wait: the settings of one job's wait, shared by single waits and job sets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::poll::{Adaptive, PollPolicy, PollPolicyExt};

/// How to wait for one job: its deadline, its poll budget, its poll policy, and which push
/// mechanisms to try.
///
/// [`Client::wait_with`](crate::Client::wait_with) takes one; a
/// [`JobSetOptions`](crate::jobset::JobSetOptions) holds one for every job of its set.
#[derive(Clone)]
pub struct WaitOptions {
    pub(crate) deadline: Option<Duration>,
    pub(crate) max_polls: Option<u32>,
    pub(crate) policy: Arc<dyn PollPolicy>,
    pub(crate) sse: bool,
    pub(crate) long_poll: bool,
    pub(crate) long_poll_hold: Duration,
    pub(crate) cancel_on_give_up: bool,
}

/// Options are taken by value; a reference is cloned (the policy is shared, not copied).
impl From<&WaitOptions> for WaitOptions {
    fn from(options: &WaitOptions) -> Self {
        options.clone()
    }
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            deadline: Some(Duration::from_secs(3600)),
            max_polls: None,
            policy: Arc::new(Adaptive::default()),
            sse: true,
            long_poll: true,
            long_poll_hold: Duration::from_secs(30),
            cancel_on_give_up: false,
        }
    }
}

impl WaitOptions {
    /// A one-hour deadline, no poll budget, the [`Adaptive`] policy, SSE and long-poll on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up this long after the wait starts, exactly: the wait ends on its deadline
    /// (unless the job ends first), neither later nor earlier.
    ///
    /// * A request still out at the deadline (a slow poll, a held long-poll, an event stream)
    ///   is cut there, and the wait ends with [`Error::GaveUp`] (reason
    ///   [`Deadline`](crate::GiveUpReason::Deadline)), or [`Error::Unavailable`] when the
    ///   service was failing at its last look.
    /// * While polling, the last look goes out early enough to be answered by the deadline:
    ///   twice the round trip of the wait's latest plain read ahead of it, at least 100 ms and
    ///   at most 1 s. If it finds the job still pending, nothing more is sent.
    /// * A stream or held request open at the deadline is current: no poll follows it.
    ///
    /// A deadline shorter than one round trip can end before any answer came.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Waits without a deadline (until the job ends, the poll budget runs out, or the future
    /// is dropped).
    pub fn no_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// Gives up after this many status requests (at least 1), with
    /// [`GiveUpReason::MaxPolls`](crate::GiveUpReason::MaxPolls). In a job set it
    /// applies to each job.
    pub fn max_polls(mut self, max_polls: u32) -> Self {
        self.max_polls = Some(max_polls);
        self
    }

    /// Decides when to poll when neither SSE nor long-poll is at work.
    ///
    /// **The policy decides *when to poll*; push mechanisms replace polling.** While an
    /// event stream is open, or the server holds long-polls (each goes out again as soon as
    /// the last one answers), the policy is not consulted, and a server's hint that asks for
    /// a longer pause wins over it. To make a custom policy govern every request, turn the
    /// push mechanisms off: `.sse(false).long_poll(false)`.
    /// [`WaitReport::policy_pauses`](crate::WaitReport::policy_pauses) counts the pauses it
    /// actually chose — `0` tells you it did nothing.
    pub fn policy(mut self, policy: impl PollPolicy + 'static) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// Whether to try Server-Sent Events first (default on).
    pub fn sse(mut self, enabled: bool) -> Self {
        self.sse = enabled;
        self
    }

    /// Whether to ask the server to hold requests (default on).
    pub fn long_poll(mut self, enabled: bool) -> Self {
        self.long_poll = enabled;
        self
    }

    /// How long to ask the server to hold one request (whole seconds, at least 1 s; default
    /// 30 s; the server may cap it).
    pub fn long_poll_hold(mut self, hold: Duration) -> Self {
        self.long_poll_hold = hold;
        self
    }

    /// Cancels the job on the service when the wait gives up (its deadline or poll budget):
    /// the caller will not wait for it any longer, so it need not keep running — HeyGen-style
    /// APIs count running jobs against a limit, and some bill for them. Off by default.
    ///
    /// Only when the client's [`Profile`](crate::Profile) has a cancel endpoint (the
    /// simulator's `POST /v1/jobs/{id}/cancel`, Replicate's) and the job's id is known. One
    /// request, not retried, bounded by [`CANCEL_BOUND`](crate::wait::CANCEL_BOUND) (or the
    /// request timeout, if shorter): the wait ends at most that long after its deadline. How
    /// it went is in [`GaveUp::remote_cancel`](crate::GaveUp::remote_cancel). A job set does
    /// the same for each job that gives up.
    pub fn cancel_on_give_up(mut self, enabled: bool) -> Self {
        self.cancel_on_give_up = enabled;
        self
    }

    /// The policy with the options' limits around it: the poll budget. (The deadline is the
    /// wait's own, exact, and needs no decorator.)
    pub(crate) fn composed_policy(&self) -> Arc<dyn PollPolicy> {
        let policy = Arc::clone(&self.policy);
        match self.max_polls {
            Some(n) => Arc::new(policy.with_max_polls(n)),
            None => policy,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.max_polls == Some(0) {
            return Err(Error::config("max_polls", "must be at least 1"));
        }
        if self.long_poll
            && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.long_poll_hold)
        {
            return Err(Error::config(
                "long_poll_hold",
                "must be between 1 s (Prefer: wait takes whole seconds) and 1 h; or turn long_poll off",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for WaitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitOptions")
            .field("deadline", &self.deadline)
            .field("max_polls", &self.max_polls)
            .field("policy", &self.policy)
            .field("sse", &self.sse)
            .field("long_poll", &self.long_poll)
            .field("long_poll_hold", &self.long_poll_hold)
            .field("cancel_on_give_up", &self.cancel_on_give_up)
            .finish()
    }
}
