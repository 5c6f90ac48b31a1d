//! The circuit breaker: stop sending to a host that keeps failing, and pause waits meanwhile.
//!
//! # Why a breaker, and why it pauses
//!
//! When the service is down, every status request fails and every retry fails too. A fleet
//! of waiting clients that keeps polling through an outage multiplies the load exactly when
//! the service can least take it, and learns nothing it did not know after the first few
//! failures. The breaker notices — a run of consecutive failures, or a failure rate over a
//! sliding window — and *opens*: for a cool-down nothing is sent to that host. Then it lets a
//! bounded number of *probes* through (*half-open*); if they are answered it *closes* and
//! traffic resumes, if not it opens again with a doubled cool-down (capped).
//!
//! A wait is a promise about a job, not about one request, so an open breaker does not fail
//! it: the wait stops polling until the breaker lets requests through again, then resumes,
//! and only its own deadline ends it (with [`Error::Unavailable`](crate::Error::Unavailable),
//! which says the service was unavailable). A single [`Client::status`](crate::Client::status)
//! call has no deadline to wait for, so it fails fast with the same error, saying when to try
//! again. A host that has never answered is not having an outage — it is more likely a wrong
//! URL or a dead host — so requests its breaker holds back are reported as
//! [`Error::Unreachable`](crate::Error::Unreachable), naming the last failure.
//!
//! # What counts as a failure
//!
//! A transport error (connect, timeout, reset), a `5xx`, a `408` or a `429`. A job that ended
//! in `error`, a `404` and a `304` are answers: the service is up. So is an answer the client
//! cannot use — a body over the limit, malformed HTTP, a redirect it does not follow. An answer with
//! `Retry-After` is the throttle's business (it waits exactly that long); it counts as
//! a failure only when the throttle hands it back unabsorbed.
//!
//! The breaker sits *under* the retry layer and judges each attempt, so that it opens after a
//! few failed requests rather than after every caller has spent its whole retry budget, and
//! so that an open breaker ends retry loops already in flight at their next attempt (a
//! refusal is fatal to the retry classifier). The hedge sits under it: a hedged pair is
//! one attempt, judged once.
//!
//! There is one breaker per upstream host (`scheme://host:port`), shared by every clone of a
//! [`Client`](crate::Client).

mod circuit;
mod error;
mod layer;

use std::time::Duration;

use crate::error::Error;

pub(crate) use circuit::BreakerState;
pub(crate) use error::{BreakerOpen, refusal};
pub(crate) use layer::{Breakers, HostBreaker};

/// Settings of the circuit breaker ([`ClientBuilder::circuit_breaker`](crate::ClientBuilder::circuit_breaker)).
///
/// One breaker per upstream host (`scheme://host:port`), shared by every clone of a client,
/// judges each attempt under the retry layer: a transport error, a `5xx`, a `408` or a `429`
/// is a failure; a `404`, a `304` or a job that ended in `error` is an answer. Once open,
/// nothing is sent to the host until the cool-down ends; then a bounded number of probes go
/// through, and answered probes close it. An open breaker *pauses* waits — they stop
/// polling, resume when it lets requests through, and end only at their deadline, with
/// [`Error::Unavailable`](crate::Error::Unavailable) — while a single
/// [`Client::status`](crate::Client::status) fails fast with that error, saying when to try
/// again. For a host that has never answered, the same refusals are
/// [`Error::Unreachable`](crate::Error::Unreachable): a wrong URL or a dead host, not an
/// outage.
///
/// The defaults: open after 5 consecutive failed attempts, or when at least half of at least
/// 20 attempts in the last 10 s failed; stay open 1 s, doubling with each failed probe up to
/// 30 s; one probe in half-open.
///
/// **With retries.** The breaker counts *attempts*, and one read makes up to
/// [`max_retries`](crate::ClientBuilder::max_retries)` + 1` of them (4 by default). So
/// `consecutive_failures` must be above that, or a single failed read — one poll and its own
/// retries — would open the breaker by itself. The default breaker is raised above it on its
/// own; for one given to [`ClientBuilder::circuit_breaker`](crate::ClientBuilder::circuit_breaker),
/// [`ClientBuilder::build`](crate::ClientBuilder::build) refuses such a pair with
/// [`Error::Config`](crate::Error::Config). Lower `max_retries` when the breaker should open
/// sooner.
///
/// ```
/// use std::time::Duration;
/// use translation_status::Client;
/// use translation_status::transport::BreakerConfig;
///
/// let client = Client::builder()
///     .base_url("http://localhost:8080")
///     .circuit_breaker(
///         BreakerConfig::new()
///             .consecutive_failures(10)
///             .cool_down(Duration::from_secs(2), Duration::from_secs(60)),
///     )
///     .build()?;
/// # Ok::<(), translation_status::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_rate: f64,
    pub(crate) rate_window: Duration,
    pub(crate) min_calls: u32,
    pub(crate) cool_down: Duration,
    pub(crate) max_cool_down: Duration,
    pub(crate) probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            rate_window: Duration::from_secs(10),
            min_calls: 20,
            cool_down: Duration::from_secs(1),
            max_cool_down: Duration::from_secs(30),
            probes: 1,
        }
    }
}

impl BreakerConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens after this many failed attempts in a row (default 5). Must be above one read's
    /// attempts, [`max_retries`](crate::ClientBuilder::max_retries)` + 1`: see above.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// Opens when at least `rate` of the attempts in the last `window` failed, once there were
    /// at least `min_calls` of them (default: half of at least 20 in 10 s).
    pub fn failure_rate(mut self, rate: f64, window: Duration, min_calls: u32) -> Self {
        self.failure_rate = rate;
        self.rate_window = window;
        self.min_calls = min_calls;
        self
    }

    /// How long the breaker stays open the first time (default 1 s); each failed probe
    /// doubles it, up to `max` (default 30 s).
    pub fn cool_down(mut self, first: Duration, max: Duration) -> Self {
        self.cool_down = first;
        self.max_cool_down = max;
        self
    }

    /// How many probes half-open lets through; that many answered probes close the breaker
    /// (default 1).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.probes = probes;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let setting = "circuit_breaker";
        if self.consecutive_failures == 0 {
            return Err(Error::config(
                setting,
                "consecutive_failures must be at least 1",
            ));
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(Error::config(
                setting,
                format!(
                    "the failure rate must be in (0, 1], got {}",
                    self.failure_rate
                ),
            ));
        }
        if self.rate_window < Duration::from_millis(10) || self.min_calls == 0 {
            return Err(Error::config(
                setting,
                "the failure-rate window must be at least 10 ms and min_calls at least 1",
            ));
        }
        if self.cool_down.is_zero() || self.max_cool_down < self.cool_down {
            return Err(Error::config(
                setting,
                format!(
                    "the cool-down must be positive and at most its maximum (got {:?} and {:?})",
                    self.cool_down, self.max_cool_down
                ),
            ));
        }
        if !(1..=1000).contains(&self.probes) {
            return Err(Error::config(
                setting,
                "half_open_probes must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_are_refused() {
        assert!(BreakerConfig::new().validate().is_ok());
        let second = Duration::from_secs(1);
        for bad in [
            BreakerConfig::new().consecutive_failures(0),
            BreakerConfig::new().failure_rate(0.0, second, 5),
            BreakerConfig::new().failure_rate(1.5, second, 5),
            BreakerConfig::new().failure_rate(f64::NAN, second, 5),
            BreakerConfig::new().failure_rate(0.5, Duration::ZERO, 5),
            BreakerConfig::new().failure_rate(0.5, second, 0),
            BreakerConfig::new().cool_down(Duration::ZERO, second),
            BreakerConfig::new().cool_down(second * 2, second),
            BreakerConfig::new().half_open_probes(0),
        ] {
            let Err(Error::Config(c)) = bad.validate() else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(c.setting, "circuit_breaker");
        }
    }
}
