//! The breaker's decision: a state machine with time as an input.
//!
//! Nothing here reads a clock, sleeps or locks: the layer passes `now` in, and tests drive it
//! through every transition in paused time.

use std::time::Duration;

use tokio::time::Instant;

use super::BreakerConfig;
use crate::transport::window::Window;

/// How long a caller refused during half-open (a probe is out) should wait before asking
/// again: the probe's answer decides, and it is usually quick.
pub(crate) const PROBE_RECHECK: Duration = Duration::from_millis(100);

/// Where the breaker stands; the gauge value is the discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed = 0,
    /// The cool-down is over: a bounded number of probes go through; the rest wait.
    HalfOpen = 1,
    /// Nothing is sent until the cool-down ends.
    Open = 2,
}

impl BreakerState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// What one attempt's outcome says about the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A usable answer — including `404`, `304` and a job that ended in `error`.
    Healthy,
    /// A transport error, a `5xx`, a `408` or a `429`.
    Failing,
    /// Says nothing either way: an answer with `Retry-After` (the throttle's business),
    /// a request that could not be built.
    Neutral,
}

/// The answer to "may this request go?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed: go.
    Pass {
        /// The breaker's generation, so that a late outcome is not applied to a later state.
        generation: u64,
    },
    /// Half-open: go, as one of the probes.
    Probe {
        /// As for `Pass`.
        generation: u64,
    },
    /// Open, or half-open with every probe out: do not send.
    Refuse {
        /// When to ask again.
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { out: u32, passed: u32 },
}

/// The state machine of one host's breaker.
#[derive(Debug)]
pub(crate) struct Circuit {
    config: BreakerConfig,
    phase: Phase,
    /// Bumped on every transition; outcomes of older generations are ignored.
    generation: u64,
    consecutive: u32,
    window: Window,
    /// Opens since the breaker last closed: the cool-down doubles with each.
    opens: u32,
}

impl Circuit {
    pub(crate) fn new(config: BreakerConfig, now: Instant) -> Self {
        let window = Window::new(config.rate_window, now);
        Circuit {
            config,
            phase: Phase::Closed,
            generation: 0,
            consecutive: 0,
            window,
            opens: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may go now; moves open → half-open once the cool-down is over.
    /// Returns the transition, when there was one.
    pub(crate) fn admit(&mut self, now: Instant) -> (Admission, Option<BreakerState>) {
        let mut moved = None;
        if let Phase::Open { until } = self.phase
            && now >= until
        {
            self.phase = Phase::HalfOpen { out: 0, passed: 0 };
            self.generation += 1;
            moved = Some(BreakerState::HalfOpen);
        }
        let generation = self.generation;
        let admission = match &mut self.phase {
            Phase::Closed => Admission::Pass { generation },
            Phase::Open { until } => Admission::Refuse {
                retry_after: until.saturating_duration_since(now),
            },
            Phase::HalfOpen { out, passed } if *out + *passed < self.config.probes => {
                *out += 1;
                Admission::Probe { generation }
            }
            Phase::HalfOpen { .. } => Admission::Refuse {
                retry_after: PROBE_RECHECK,
            },
        };
        (admission, moved)
    }

    /// Counts the outcome of a request admitted in `generation`; returns the transition, when
    /// there was one.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        generation: u64,
        verdict: Verdict,
    ) -> Option<BreakerState> {
        if generation != self.generation || verdict == Verdict::Neutral {
            if generation == self.generation {
                self.release(generation);
            }
            return None;
        }
        match &mut self.phase {
            Phase::Closed => {
                let failed = verdict == Verdict::Failing;
                self.window.call(now);
                if failed {
                    self.window.mark(now);
                } else {
                    self.consecutive = 0;
                    return None;
                }
                self.consecutive += 1;
                self.trips(now).then(|| self.open(now))
            }
            Phase::HalfOpen { out, passed } => {
                *out = out.saturating_sub(1);
                if verdict == Verdict::Failing {
                    return Some(self.open(now));
                }
                *passed += 1;
                (*passed >= self.config.probes).then(|| self.close(now))
            }
            // Admitted before the breaker opened, answered after: too late to matter.
            Phase::Open { .. } => None,
        }
    }

    /// A probe that went away without an outcome (cancelled, or neutral) frees its slot.
    pub(crate) fn release(&mut self, generation: u64) {
        if generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { out, .. } = &mut self.phase {
            *out = out.saturating_sub(1);
        }
    }

    /// A throttled answer the throttle could not absorb: the service keeps refusing.
    pub(crate) fn record_throttled(&mut self, now: Instant) -> Option<BreakerState> {
        if self.phase != Phase::Closed {
            return None;
        }
        self.record(now, self.generation, Verdict::Failing)
    }

    fn trips(&self, now: Instant) -> bool {
        if self.consecutive >= self.config.consecutive_failures {
            return true;
        }
        let (calls, failures) = self.window.totals(now);
        calls >= self.config.min_calls
            && f64::from(failures) >= self.config.failure_rate * f64::from(calls)
    }

    fn open(&mut self, now: Instant) -> BreakerState {
        let factor = 1u32.checked_shl(self.opens.min(20)).unwrap_or(u32::MAX);
        let cool_down = self
            .config
            .cool_down
            .saturating_mul(factor)
            .min(self.config.max_cool_down);
        self.opens = self.opens.saturating_add(1);
        let until = now.checked_add(cool_down).unwrap_or(now);
        self.phase = Phase::Open { until };
        self.generation += 1;
        self.consecutive = 0;
        BreakerState::Open
    }

    fn close(&mut self, now: Instant) -> BreakerState {
        self.phase = Phase::Closed;
        self.generation += 1;
        self.consecutive = 0;
        self.opens = 0;
        self.window = Window::new(self.config.rate_window, now);
        BreakerState::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> BreakerConfig {
        BreakerConfig::new()
            .consecutive_failures(3)
            .failure_rate(0.5, Duration::from_secs(10), 10)
            .cool_down(Duration::from_secs(1), Duration::from_secs(5))
            .half_open_probes(2)
    }

    /// Admits a request now and records its verdict.
    fn call(c: &mut Circuit, verdict: Verdict) -> (Admission, Option<BreakerState>) {
        let now = Instant::now();
        let (admission, _) = c.admit(now);
        let moved = match admission {
            Admission::Pass { generation } | Admission::Probe { generation } => {
                c.record(now, generation, verdict)
            }
            Admission::Refuse { .. } => None,
        };
        (admission, moved)
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_then_half_open_then_closed() {
        let mut c = Circuit::new(config(), Instant::now());
        assert_eq!(call(&mut c, Verdict::Failing).1, None);
        assert_eq!(call(&mut c, Verdict::Failing).1, None);
        assert_eq!(
            call(&mut c, Verdict::Healthy).1,
            None,
            "a success resets the run"
        );
        call(&mut c, Verdict::Failing);
        call(&mut c, Verdict::Failing);
        let opened_at = Instant::now();
        assert_eq!(call(&mut c, Verdict::Failing).1, Some(BreakerState::Open));
        assert_eq!(c.state(), BreakerState::Open);

        // Open: refused with the exact time left.
        tokio::time::advance(ms(400)).await;
        assert_eq!(
            c.admit(Instant::now()).0,
            Admission::Refuse {
                retry_after: ms(600)
            }
        );
        // The cool-down ends exactly one second after opening.
        tokio::time::advance(ms(599)).await;
        assert!(matches!(
            c.admit(Instant::now()).0,
            Admission::Refuse { .. }
        ));
        tokio::time::advance(ms(1)).await;
        assert_eq!(Instant::now(), opened_at + ms(1000));
        let (first, moved) = c.admit(Instant::now());
        assert_eq!(moved, Some(BreakerState::HalfOpen));
        let (second, _) = c.admit(Instant::now());
        let (third, _) = c.admit(Instant::now());
        assert!(matches!(first, Admission::Probe { .. }));
        assert!(matches!(second, Admission::Probe { .. }));
        assert_eq!(
            third,
            Admission::Refuse {
                retry_after: PROBE_RECHECK
            },
            "two probes at most"
        );
        let (Admission::Probe { generation: g1 }, Admission::Probe { generation: g2 }) =
            (first, second)
        else {
            unreachable!()
        };
        assert_eq!(c.record(Instant::now(), g1, Verdict::Healthy), None);
        assert_eq!(c.state(), BreakerState::HalfOpen);
        assert_eq!(
            c.record(Instant::now(), g2, Verdict::Healthy),
            Some(BreakerState::Closed),
            "both probes passed"
        );
        assert!(matches!(
            call(&mut c, Verdict::Healthy).0,
            Admission::Pass { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_with_a_doubled_cool_down_capped() {
        let mut c = Circuit::new(config(), Instant::now());
        for _ in 0..3 {
            call(&mut c, Verdict::Failing);
        }
        let mut cool_downs = Vec::new();
        for _ in 0..4 {
            let Admission::Refuse { retry_after } = c.admit(Instant::now()).0 else {
                panic!("open")
            };
            cool_downs.push(retry_after.as_secs());
            tokio::time::advance(retry_after).await;
            assert_eq!(call(&mut c, Verdict::Failing).1, Some(BreakerState::Open));
        }
        assert_eq!(cool_downs, vec![1, 2, 4, 5]);
        // Closing forgets the backoff.
        tokio::time::advance(Duration::from_secs(5)).await;
        call(&mut c, Verdict::Healthy);
        call(&mut c, Verdict::Healthy);
        assert_eq!(c.state(), BreakerState::Closed);
        for _ in 0..3 {
            call(&mut c, Verdict::Failing);
        }
        assert_eq!(
            c.admit(Instant::now()).0,
            Admission::Refuse {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_rate_over_the_window_opens() {
        let config = config().consecutive_failures(100);
        let mut c = Circuit::new(config, Instant::now());
        // 4 of 9 fail: below the minimum number of calls, whatever the rate.
        for i in 0..9 {
            let v = if i % 2 == 0 {
                Verdict::Healthy
            } else {
                Verdict::Failing
            };
            assert_eq!(call(&mut c, v).1, None);
            tokio::time::advance(ms(100)).await;
        }
        // The tenth call brings it to 5 of 10: half.
        assert_eq!(call(&mut c, Verdict::Failing).1, Some(BreakerState::Open));

        // Old outcomes slide out of the window.
        let mut c = Circuit::new(config, Instant::now());
        for _ in 0..9 {
            call(&mut c, Verdict::Failing);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..9 {
            assert_eq!(call(&mut c, Verdict::Healthy).1, None);
        }
        assert_eq!(
            call(&mut c, Verdict::Failing).1,
            None,
            "1 of 10 in the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_and_late_outcomes_do_not_count() {
        let mut c = Circuit::new(config(), Instant::now());
        let now = Instant::now();
        let Admission::Pass { generation: early } = c.admit(now).0 else {
            panic!()
        };
        for _ in 0..10 {
            assert_eq!(call(&mut c, Verdict::Neutral).1, None);
        }
        for _ in 0..3 {
            call(&mut c, Verdict::Failing);
        }
        assert_eq!(c.state(), BreakerState::Open);
        // A request admitted before the breaker opened answers now: ignored.
        assert_eq!(c.record(Instant::now(), early, Verdict::Healthy), None);
        assert_eq!(c.state(), BreakerState::Open);

        // A probe that was cancelled frees its slot.
        tokio::time::advance(Duration::from_secs(1)).await;
        let Admission::Probe { generation } = c.admit(Instant::now()).0 else {
            panic!()
        };
        assert!(matches!(c.admit(Instant::now()).0, Admission::Probe { .. }));
        assert!(matches!(
            c.admit(Instant::now()).0,
            Admission::Refuse { .. }
        ));
        c.release(generation);
        assert!(matches!(c.admit(Instant::now()).0, Admission::Probe { .. }));

        // An unabsorbed throttle counts only while closed.
        assert_eq!(c.record_throttled(Instant::now()), None);
        assert_eq!(c.state(), BreakerState::HalfOpen);
    }
}
