//! Hedged status reads: a slow status request gets one duplicate, and the first answer wins.
//!
//! # Why hedge, and why only status reads
//!
//! Most status requests are fast; a few are slow for reasons that have nothing to do with the
//! job — a busy instance, a lost packet, a garbage-collection pause. Waiting out such a
//! request delays the moment the caller learns the job ended, by exactly the tail latency.
//! A hedge sends the same request again once the first has been out longer than almost all
//! requests take (the observed 95th percentile, by default, and never sooner than a floor);
//! whichever answers first is used and the other is cancelled. Only plain status reads are
//! hedged: they are idempotent GETs, so a duplicate is harmless. Long-polls are slow on
//! purpose, event streams are not requests, and creating a job twice would create two jobs.
//!
//! # Why a hard budget
//!
//! Hedging adds load exactly when the service is slow, so it must not be able to snowball.
//! Hedges are capped at a share of calls (5 % by default) over a sliding window (10 s): past
//! it, a due hedge is not sent and the call waits for its original answer. The cap is hard,
//! not a token bucket with a reserve, so it holds at any traffic level — at the price that a
//! client needs 20 calls in the window before its first hedge. The budget can only cut a tail
//! thinner than itself: at the 95th percentile with a 5 % budget it is spent on the slowest
//! 5 % of calls, so a slow tail as large as the budget is only partly cut.
//!
//! # What the steps above see
//!
//! A hedged pair is one attempt: the retry layer retries it once, the circuit breaker judges
//! it once, and the wait's report counts one request. The duplicate gets only what is left of
//! the original's timeout, so hedging never extends a call or a wait's deadline. A leg that
//! failed does not win while the other is still out.
//!
//! The latency of each original request is recorded in a rotating histogram per host (the
//! last one to two periods of 10 s); an original cancelled because the hedge won is recorded
//! as the time it had been out, which is above the hedge delay, so hedging does not talk the
//! percentile down.

mod histogram;
mod race;
mod tracker;

use std::time::Duration;

use crate::error::Error;

pub(crate) use race::{HedgeLeg, Hedger, Raced};

/// Settings of status-read hedging ([`ClientBuilder::hedging`](crate::ClientBuilder::hedging)).
///
/// A plain status read still outstanding after the observed percentile of recent status
/// latencies to its host gets one duplicate; the first usable answer wins and the other is
/// cancelled. Long-polls, event streams and job creation are never hedged. A hard budget caps
/// hedges at a share of calls over a sliding window; note that a budget can only cut a tail
/// thinner than itself (at the 95th percentile with a 5 % budget, it is spent on the slowest
/// 5 %). A hedged pair is one attempt to the retry layer, the breaker and the
/// [`WaitReport`](crate::WaitReport), and the duplicate only gets what is left of the
/// original's timeout.
///
/// The defaults: hedge a status read still outstanding after the 95th percentile of recent
/// status latencies to its host, and never before 50 ms; only once 20 latencies are known;
/// at most 5 % of calls over a 10 s window; latencies kept for one to two periods of 10 s.
///
/// ```
/// use std::time::Duration;
/// use translation_status::Client;
/// use translation_status::transport::HedgeConfig;
///
/// let client = Client::builder()
///     .base_url("http://localhost:8080")
///     .hedging(
///         HedgeConfig::new()
///             .percentile(0.99)
///             .min_delay(Duration::from_millis(20))
///             .budget(0.02, Duration::from_secs(30)),
///     )
///     .build()?;
/// # Ok::<(), translation_status::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    pub(crate) percentile: f64,
    pub(crate) min_delay: Duration,
    pub(crate) min_samples: u32,
    pub(crate) budget: f64,
    pub(crate) budget_window: Duration,
    pub(crate) period: Duration,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            percentile: 0.95,
            min_delay: Duration::from_millis(50),
            min_samples: 20,
            budget: 0.05,
            budget_window: Duration::from_secs(10),
            period: Duration::from_secs(10),
        }
    }
}

impl HedgeConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latency percentile after which a status read is hedged, in `(0, 1)` (default
    /// 0.95).
    pub fn percentile(mut self, percentile: f64) -> Self {
        self.percentile = percentile;
        self
    }

    /// Never hedge sooner than this (default 50 ms): on a fast network the percentile is a
    /// millisecond, and duplicating requests over noise buys nothing.
    pub fn min_delay(mut self, delay: Duration) -> Self {
        self.min_delay = delay;
        self
    }

    /// Latency samples needed before the first hedge (default 20).
    pub fn min_samples(mut self, samples: u32) -> Self {
        self.min_samples = samples;
        self
    }

    /// At most `share` of status calls over the last `window` are hedged (default 5 % of
    /// 10 s).
    pub fn budget(mut self, share: f64, window: Duration) -> Self {
        self.budget = share;
        self.budget_window = window;
        self
    }

    /// How long latency samples count: between one and two of these periods (default 10 s).
    pub fn histogram_period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let setting = "hedging";
        if !(self.percentile > 0.0 && self.percentile < 1.0) {
            return Err(Error::config(
                setting,
                format!(
                    "the percentile must be in (0, 1), e.g. 0.95; got {}",
                    self.percentile
                ),
            ));
        }
        if self.min_samples == 0 {
            return Err(Error::config(setting, "min_samples must be at least 1"));
        }
        if !(self.budget > 0.0 && self.budget <= 1.0) {
            return Err(Error::config(
                setting,
                format!(
                    "the budget is a share of calls in (0, 1], e.g. 0.05; got {}",
                    self.budget
                ),
            ));
        }
        if self.budget_window < Duration::from_millis(10) || self.period < Duration::from_millis(10)
        {
            return Err(Error::config(
                setting,
                "the budget window and the histogram period must be at least 10 ms",
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
        assert!(HedgeConfig::new().validate().is_ok());
        let second = Duration::from_secs(1);
        for bad in [
            HedgeConfig::new().percentile(1.0),
            HedgeConfig::new().percentile(0.0),
            HedgeConfig::new().percentile(f64::NAN),
            HedgeConfig::new().min_samples(0),
            HedgeConfig::new().budget(0.0, second),
            HedgeConfig::new().budget(1.5, second),
            HedgeConfig::new().budget(0.05, Duration::ZERO),
            HedgeConfig::new().histogram_period(Duration::ZERO),
        ] {
            let Err(Error::Config(c)) = bad.validate() else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(c.setting, "hedging");
        }
    }
}
