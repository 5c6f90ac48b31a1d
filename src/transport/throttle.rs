//! Obey `Retry-After` exactly: the rule; the guard (`transport::guard`) sleeps and resends.
//!
//! reqwest-retry schedules its own backoff and does not look at `Retry-After`. A server that
//! says "429, come back in 1 s" means exactly that: sooner is rude and gets another 429,
//! later wastes time. The guard sleeps exactly the requested time and sends the request
//! again, a bounded number of times, and only while the pause ends before the request's
//! deadline, when it carries one. Never sooner than [`MIN_PAUSE`] though: `Retry-After: 0`
//! answered at once, over and over, is a hot loop, not a schedule.
//! What it does not absorb it returns as is; the wait loop then treats it as throttling too —
//! a `429` never ends a wait. Each throttled answer handed back because it asked for more
//! than one request absorbs counts as one failure for the host's circuit breaker; a
//! throttled answer that was waited out does not.

use std::time::Duration;

use reqwest::Response;
use tokio::time::Instant;

use super::RequestKind;
use super::classify::{Classification, classify};
use crate::poll::MIN_PAUSE;

/// How much throttling one request absorbs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throttle {
    /// How many throttled answers one request absorbs before handing one back.
    pub(crate) max_waits: u32,
    /// The longest single pause this layer takes; a longer `Retry-After` goes back to the
    /// caller.
    pub(crate) max_delay: Duration,
}

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not throttled, or nothing to absorb it with: hand it back.
    Pass,
    /// Throttled past what one request absorbs: hand it back, and count it against the
    /// host's breaker.
    Refused,
    /// Sleep this long and send the request again.
    Wait(Duration),
}

impl Throttle {
    /// Whether a request of this kind could ever be sent again (an event stream that is
    /// refused falls back to polling at once rather than wait).
    pub(crate) fn resends(&self, kind: RequestKind) -> bool {
        self.max_waits > 0 && !kind.is_stream()
    }

    /// What to do with the answer to a request that has waited `waits` times already.
    pub(crate) fn judge(
        &self,
        result: &reqwest_middleware::Result<Response>,
        waits: u32,
        kind: RequestKind,
        deadline: Option<Instant>,
    ) -> Verdict {
        let Ok(response) = result else {
            return Verdict::Pass;
        };
        let Classification::Throttled { retry_after } =
            classify(response.status(), response.headers())
        else {
            return Verdict::Pass;
        };
        if kind.is_stream() {
            // A refused event stream only means "poll instead".
            return Verdict::Pass;
        }
        if waits >= self.max_waits || retry_after > self.max_delay {
            return Verdict::Refused;
        }
        let pause = retry_after.max(MIN_PAUSE);
        let fits =
            deadline.is_none_or(|d| Instant::now().checked_add(pause).is_some_and(|at| at < d));
        if fits {
            Verdict::Wait(pause)
        } else {
            Verdict::Pass
        }
    }
}
