//! The hedge decision for one host: when to hedge a status call, and whether the budget
//! allows it. Time is an input; the layer owns the clock and the requests.

use std::time::Duration;

use tokio::time::Instant;

use super::HedgeConfig;
use super::histogram::RotatingHistogram;
use crate::transport::window::Window;

/// Recompute the hedge delay after this many new samples (a quantile reads every bucket).
const REFRESH_EVERY: u32 = 16;

/// When to hedge a call that just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HedgePlan {
    /// Too few latency samples yet to know what "slow" is: never.
    NotYet,
    /// If the call is still outstanding after this long.
    After(Duration),
}

/// Whether a due hedge may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HedgeDecision {
    /// Send the duplicate (counted against the budget).
    Send,
    /// The budget is spent: keep waiting for the original.
    BudgetExhausted,
}

#[derive(Debug)]
pub(crate) struct HedgeTracker {
    config: HedgeConfig,
    latencies: RotatingHistogram,
    /// Calls and hedges over the budget window.
    budget: Window,
    /// The delay as last computed, and how many samples ago.
    delay: Option<Duration>,
    stale: u32,
}

impl HedgeTracker {
    pub(crate) fn new(config: HedgeConfig, now: Instant) -> Self {
        HedgeTracker {
            config,
            latencies: RotatingHistogram::new(config.period, now),
            budget: Window::new(config.budget_window, now),
            delay: None,
            stale: 0,
        }
    }

    /// A status call starts: it counts towards the budget. Returns when to hedge it.
    pub(crate) fn start(&mut self, now: Instant) -> HedgePlan {
        self.budget.call(now);
        if self.latencies.rotate(now) {
            self.delay = None;
        }
        if self.latencies.samples() < u64::from(self.config.min_samples) {
            return HedgePlan::NotYet;
        }
        let delay = match self.delay {
            Some(delay) if self.stale < REFRESH_EVERY => delay,
            _ => {
                let observed = self
                    .latencies
                    .quantile(self.config.percentile)
                    .unwrap_or_default();
                // Timers tick in whole milliseconds: say so rather than be rounded silently.
                let millis = u64::try_from(observed.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
                let delay = Duration::from_millis(millis).max(self.config.min_delay);
                self.delay = Some(delay);
                self.stale = 0;
                delay
            }
        };
        HedgePlan::After(delay)
    }

    /// The call is still outstanding at its hedge delay: may a duplicate go?
    pub(crate) fn hedge(&mut self, now: Instant) -> HedgeDecision {
        let (calls, hedges) = self.budget.totals(now);
        if f64::from(hedges) + 1.0 <= self.config.budget * f64::from(calls) {
            self.budget.mark(now);
            HedgeDecision::Send
        } else {
            HedgeDecision::BudgetExhausted
        }
    }

    /// The original request's latency (a lower bound when the hedge won and it was
    /// cancelled).
    pub(crate) fn record(&mut self, now: Instant, latency: Duration) {
        if self.latencies.rotate(now) {
            self.delay = None;
        }
        self.latencies.record(latency);
        self.stale = self.stale.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn no_hedge_before_enough_samples_then_the_percentile_or_the_floor() {
        let config = HedgeConfig::new()
            .min_samples(10)
            .min_delay(ms(5))
            .percentile(0.9);
        let mut t = HedgeTracker::new(config, Instant::now());
        for n in 1..=9 {
            assert_eq!(t.start(Instant::now()), HedgePlan::NotYet);
            t.record(Instant::now(), ms(n * 10));
        }
        assert_eq!(t.start(Instant::now()), HedgePlan::NotYet);
        t.record(Instant::now(), ms(100));
        // p90 of 10..=100 ms is 90 ms, reported at its bucket's upper edge (90.112 ms), in
        // whole milliseconds.
        assert_eq!(t.start(Instant::now()), HedgePlan::After(ms(91)));

        // Fast samples: the floor wins.
        let mut t = HedgeTracker::new(config, Instant::now());
        for _ in 0..10 {
            t.record(Instant::now(), Duration::from_micros(300));
        }
        assert_eq!(t.start(Instant::now()), HedgePlan::After(ms(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_hedges_at_its_share_of_calls() {
        let config = HedgeConfig::new().budget(0.05, Duration::from_secs(10));
        let mut t = HedgeTracker::new(config, Instant::now());
        let mut sent = 0;
        let mut refused = 0;
        for _ in 0..1000 {
            t.start(Instant::now());
            // Every call is slow: each asks for a hedge.
            match t.hedge(Instant::now()) {
                HedgeDecision::Send => sent += 1,
                HedgeDecision::BudgetExhausted => refused += 1,
            }
            tokio::time::advance(ms(5)).await;
        }
        assert_eq!(sent + refused, 1000);
        assert!(sent <= 50, "5 % of 1000 calls: {sent}");
        assert!(sent >= 45, "the budget is usable: {sent}");
        // The 19 calls before the first hedge are the price of a hard cap.
        let mut t = HedgeTracker::new(config, Instant::now());
        for n in 1..=20 {
            t.start(Instant::now());
            let want = if n < 20 {
                HedgeDecision::BudgetExhausted
            } else {
                HedgeDecision::Send
            };
            assert_eq!(t.hedge(Instant::now()), want, "call {n}");
        }
        assert_eq!(t.hedge(Instant::now()), HedgeDecision::BudgetExhausted);
        // The window slides: after it, the earlier calls no longer pay for hedges.
        tokio::time::advance(Duration::from_secs(11)).await;
        t.start(Instant::now());
        assert_eq!(t.hedge(Instant::now()), HedgeDecision::BudgetExhausted);
    }

    #[tokio::test(start_paused = true)]
    async fn the_delay_follows_the_latency_within_two_periods() {
        let config = HedgeConfig::new()
            .min_samples(5)
            .min_delay(Duration::ZERO)
            .histogram_period(Duration::from_secs(10));
        let mut t = HedgeTracker::new(config, Instant::now());
        for _ in 0..50 {
            t.record(Instant::now(), ms(10));
        }
        let HedgePlan::After(before) = t.start(Instant::now()) else {
            panic!()
        };
        assert!(before <= ms(11), "{before:?}");
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..50 {
            t.record(Instant::now(), ms(200));
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let HedgePlan::After(after) = t.start(Instant::now()) else {
            panic!()
        };
        assert!(after >= ms(200), "{after:?}");
    }
}
