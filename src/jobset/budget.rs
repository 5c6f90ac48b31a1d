//! The request budget: one token bucket per client, which the server can shrink.
//!
//! # Why a bucket, and why it moves
//!
//! A job set polls on behalf of hundreds of jobs, and a server that rate-limits counts them
//! all against one client. So every request a job set sends — polls, long-polls, stream
//! openings, final looks at a deadline — takes a token from one bucket shared by all the job
//! sets of a [`Client`](crate::Client): at most `burst` at once, refilled at `rate` per second.
//! Transport retries and hedges the bucket did not grant are charged afterwards, as debt.
//!
//! The configured rate is what the caller *allows*; the server decides what it *accepts*. The
//! bucket listens to it and shrinks — multiplicative decrease — then grows back slowly —
//! additive increase — the way TCP shares a link:
//!
//! | signal | effect |
//! | --- | --- |
//! | `429` (or `503`) with `Retry-After` | nothing is sent until the pause is over; the rate halves, at most once per round trip (only an answer to a request sent *after* the last cut cuts again) |
//! | `RateLimit-Policy: "p";q=200;w=1` | the rate is capped at 90 % of `q / w` and the burst at half of `q`, for as long as the server keeps saying so (a minute after the last time) |
//! | `RateLimit: "p";r=0;t=1` | the bucket empties: the server's quota is spent |
//! | no signal | a halving is undone over [`RequestBudget::recovery`] (default 10 s), up to the cap |
//! | no answer yet | no burst: until the first answer, requests are paced at the rate (the server's quota may already be spent by others) |
//!
//! The type below is pure: every method takes `now`, so its tests run without a clock, and
//! one of them plays a rate-limited server against it for a minute of virtual time.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// How fast the job sets of one client may send requests: a token bucket.
///
/// ```
/// use std::time::Duration;
/// use translation_status::{Client, jobset::RequestBudget};
///
/// let client = Client::builder()
///     .base_url("http://localhost:8080")
///     .request_budget(RequestBudget::new(200.0, 20).recovery(Duration::from_secs(30)))
///     .build()?;
/// # Ok::<(), translation_status::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestBudget {
    rate: f64,
    burst: u32,
    recovery: Duration,
}

impl Default for RequestBudget {
    fn default() -> Self {
        RequestBudget {
            rate: 50.0,
            burst: 50,
            recovery: Duration::from_secs(10),
        }
    }
}

impl RequestBudget {
    /// `rate` requests per second on average, at most `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        RequestBudget {
            rate,
            burst,
            ..RequestBudget::default()
        }
    }

    /// How long it takes to undo a halving of the rate once the server stops throttling
    /// (default 10 s).
    pub fn recovery(mut self, recovery: Duration) -> Self {
        self.recovery = recovery;
        self
    }

    /// The configured rate, requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The configured burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(Error::config(
                "request_budget",
                format!(
                    "the rate must be a positive number of requests per second, not {}",
                    self.rate
                ),
            ));
        }
        if self.burst == 0 {
            return Err(Error::config(
                "request_budget",
                "the burst must be at least 1",
            ));
        }
        if self.recovery.is_zero() {
            return Err(Error::config(
                "request_budget",
                "the recovery time must be greater than zero",
            ));
        }
        Ok(())
    }

    /// The slowest the bucket ever goes: a throttling server can slow it down to this.
    fn floor(&self) -> f64 {
        self.rate.min(1.0)
    }
}

/// What the bucket says to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Send it: a token was taken.
    Now,
    /// Not yet: a token will be there after this long.
    After(Duration),
}

/// Why the bucket shrank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adjustment {
    /// A `429`/`503` with `Retry-After`.
    Throttled,
    /// The server's `RateLimit-Policy` is below the current rate.
    Policy,
    /// The server's `RateLimit` says the quota is spent.
    Exhausted,
}

impl Adjustment {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Adjustment::Throttled => "throttled",
            Adjustment::Policy => "policy",
            Adjustment::Exhausted => "exhausted",
        }
    }
}

/// Share of the server's advertised rate the bucket allows itself.
const HEADROOM: f64 = 0.9;
/// An advertised policy is trusted for this long after it was last seen.
const POLICY_TTL: Duration = Duration::from_secs(60);
/// The pause after a `429` that did not say for how long.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause one answer can impose.
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// The token bucket and its adaptation (pure: every method takes `now`).
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    config: RequestBudget,
    /// Tokens now; negative while retries are being paid back.
    tokens: f64,
    /// Refill rate now (requests per second).
    rate: f64,
    /// The most the rate may grow to: the configured rate, or the server's policy.
    ceiling: f64,
    /// The most tokens the bucket holds.
    burst: f64,
    /// Additive increase, per second, after the last cut.
    step: f64,
    /// When the server's policy was last seen.
    policy_seen: Option<Instant>,
    /// Nothing is sent before this instant (`Retry-After`).
    paused_until: Option<Instant>,
    /// When the rate was last halved.
    last_cut: Option<Instant>,
    last: Instant,
    /// Total time spent paused by the server.
    throttled: Duration,
    /// No answer has come back yet: no bursts until the server has had its say.
    probing: bool,
}

impl Budget {
    pub(crate) fn new(config: RequestBudget, now: Instant) -> Self {
        Budget {
            config,
            tokens: f64::from(config.burst),
            rate: config.rate,
            ceiling: config.rate,
            burst: f64::from(config.burst),
            step: config.rate / config.recovery.as_secs_f64(),
            policy_seen: None,
            paused_until: None,
            last_cut: None,
            last: now,
            throttled: Duration::ZERO,
            probing: true,
        }
    }

    /// Takes a token, or says when one will be there.
    pub(crate) fn acquire(&mut self, now: Instant) -> Grant {
        self.refill(now);
        if let Some(until) = self.paused_until.filter(|u| *u > now) {
            return Grant::After(until - now);
        }
        if self.probing {
            self.tokens = self.tokens.min(1.0);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Grant::Now
        } else {
            Grant::After(crate::poll::seconds((1.0 - self.tokens) / self.rate))
        }
    }

    /// An answer came back: from now on the bucket may burst.
    pub(crate) fn heard(&mut self) {
        self.probing = false;
    }

    /// Charges requests that went out without a grant (transport retries, hedges), as debt.
    pub(crate) fn charge(&mut self, requests: u32) {
        self.tokens = (self.tokens - f64::from(requests)).max(-self.burst);
    }

    /// The server throttled a request sent at `sent`: pause, and halve the rate unless this
    /// answer is to a request sent before the last cut.
    pub(crate) fn throttled(
        &mut self,
        now: Instant,
        sent: Instant,
        retry_after: Option<Duration>,
    ) -> Option<Adjustment> {
        self.refill(now);
        let pause = retry_after
            .unwrap_or(DEFAULT_PAUSE)
            .clamp(crate::poll::MIN_PAUSE, MAX_PAUSE);
        let until = now + pause;
        let from = self.paused_until.filter(|u| *u > now).unwrap_or(now);
        if until > from {
            self.throttled += until - from;
            self.paused_until = Some(until);
        }
        self.tokens = self.tokens.min(0.0);
        if self.last_cut.is_some_and(|cut| sent < cut) {
            return None;
        }
        let before = self.rate;
        self.rate = (self.rate / 2.0).max(self.config.floor());
        self.step =
            (before - self.rate).max(self.config.floor()) / self.config.recovery.as_secs_f64();
        self.last_cut = Some(now);
        Some(Adjustment::Throttled)
    }

    /// The server advertised its policy: `quota` requests per `window`.
    pub(crate) fn policy(
        &mut self,
        now: Instant,
        quota: f64,
        window: Duration,
    ) -> Option<Adjustment> {
        let advertised = quota / window.as_secs_f64();
        if !(advertised.is_finite() && advertised > 0.0) {
            return None;
        }
        self.refill(now);
        self.policy_seen = Some(now);
        self.ceiling = self
            .config
            .rate
            .min(advertised * HEADROOM)
            .max(self.config.floor());
        self.burst = f64::from(self.config.burst).min((quota / 2.0).max(1.0));
        self.tokens = self.tokens.min(self.burst);
        if self.rate > self.ceiling {
            self.rate = self.ceiling;
            Some(Adjustment::Policy)
        } else {
            None
        }
    }

    /// The server said how many requests its quota has left.
    pub(crate) fn remaining(&mut self, now: Instant, remaining: u64) -> Option<Adjustment> {
        self.refill(now);
        let remaining = remaining as f64;
        if remaining < self.tokens {
            self.tokens = remaining;
            return (remaining < 1.0).then_some(Adjustment::Exhausted);
        }
        None
    }

    /// Tokens available now (negative while paying back retries).
    pub(crate) fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// The refill rate now.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// Total time the server has paused this bucket.
    pub(crate) fn throttled_total(&self) -> Duration {
        self.throttled
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        if self
            .policy_seen
            .is_some_and(|seen| now.saturating_duration_since(seen) > POLICY_TTL)
        {
            self.policy_seen = None;
            self.ceiling = self.config.rate;
            self.burst = f64::from(self.config.burst);
        }
        // No tokens accrue, and the rate does not recover, while the server asked for a pause.
        let from = match self.paused_until {
            Some(until) if until >= now => {
                self.last = now;
                return;
            }
            Some(until) if until > self.last => until,
            _ => self.last,
        };
        let dt = now.saturating_duration_since(from).as_secs_f64();
        self.tokens = (self.tokens + self.rate * dt).min(self.burst);
        if self.rate < self.ceiling {
            self.rate = (self.rate + self.step * dt).min(self.ceiling);
        } else {
            self.rate = self.ceiling;
        }
        self.last = now;
    }
}

/// The bucket shared by the job sets of one client.
#[derive(Clone)]
pub(crate) struct SharedBudget {
    inner: Arc<Mutex<Budget>>,
}

impl SharedBudget {
    pub(crate) fn new(config: RequestBudget) -> Self {
        SharedBudget {
            inner: Arc::new(Mutex::new(Budget::new(config, Instant::now()))),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Budget> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let budget = self.lock();
        f.debug_struct("SharedBudget")
            .field("config", &budget.config)
            .field("rate", &budget.rate)
            .field("tokens", &budget.tokens)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bursts_then_paces() {
        let t0 = Instant::now();
        let mut b = Budget::new(RequestBudget::new(10.0, 3), t0);
        b.heard();
        for _ in 0..3 {
            assert_eq!(b.acquire(t0), Grant::Now);
        }
        assert_eq!(b.acquire(t0), Grant::After(ms(100)));
        assert_eq!(b.acquire(t0 + ms(50)), Grant::After(ms(50)));
        assert_eq!(b.acquire(t0 + ms(100)), Grant::Now);
        // Idle time refills up to the burst, never beyond.
        assert_eq!(b.tokens(t0 + Duration::from_secs(60)), 3.0);
    }

    #[test]
    fn no_burst_before_the_first_answer() {
        let t0 = Instant::now();
        let mut b = Budget::new(RequestBudget::new(10.0, 5), t0);
        assert_eq!(b.acquire(t0), Grant::Now);
        assert_eq!(b.acquire(t0), Grant::After(ms(100)));
        assert_eq!(b.acquire(t0 + Duration::from_secs(60)), Grant::Now);
        assert_eq!(
            b.acquire(t0 + Duration::from_secs(60)),
            Grant::After(ms(100))
        );
        b.heard();
        let later = t0 + Duration::from_secs(120);
        for _ in 0..5 {
            assert_eq!(b.acquire(later), Grant::Now);
        }
    }

    #[test]
    fn retries_are_paid_back() {
        let t0 = Instant::now();
        let mut b = Budget::new(RequestBudget::new(10.0, 2), t0);
        b.heard();
        assert_eq!(b.acquire(t0), Grant::Now);
        b.charge(3);
        assert_eq!(b.tokens(t0), -2.0, "debt is bounded by the burst");
        assert_eq!(b.acquire(t0), Grant::After(ms(300)));
    }

    #[test]
    fn a_429_pauses_and_halves_once_per_round_trip() {
        let t0 = Instant::now();
        let mut b = Budget::new(RequestBudget::new(100.0, 10), t0);
        assert_eq!(
            b.throttled(t0 + ms(5), t0, Some(ms(200))),
            Some(Adjustment::Throttled)
        );
        assert_eq!(b.rate(), 50.0);
        assert_eq!(b.acquire(t0 + ms(100)), Grant::After(ms(105)));
        // Another answer to a request sent before the cut: pause, no second cut.
        assert_eq!(b.throttled(t0 + ms(6), t0 + ms(1), Some(ms(200))), None);
        assert_eq!(b.rate(), 50.0);
        // A request sent after the cut and throttled again: cut again.
        assert_eq!(
            b.throttled(t0 + ms(300), t0 + ms(250), None),
            Some(Adjustment::Throttled)
        );
        assert!(
            (b.rate() - 25.0).abs() < 0.5,
            "halved after a little recovery: {}",
            b.rate()
        );
        assert_eq!(b.acquire(t0 + ms(300)), Grant::After(DEFAULT_PAUSE));
        assert_eq!(b.throttled_total(), ms(201) + DEFAULT_PAUSE);
    }

    #[test]
    fn the_rate_recovers_gradually_after_the_pause() {
        let t0 = Instant::now();
        let config = RequestBudget::new(100.0, 10).recovery(Duration::from_secs(10));
        let mut b = Budget::new(config, t0);
        b.throttled(t0, t0, Some(Duration::from_secs(1)));
        assert_eq!(b.rate(), 50.0);
        b.tokens(t0 + Duration::from_secs(1));
        assert_eq!(b.rate(), 50.0, "no recovery while paused");
        b.tokens(t0 + Duration::from_secs(6));
        assert!((b.rate() - 75.0).abs() < 1e-9, "{}", b.rate());
        b.tokens(t0 + Duration::from_secs(60));
        assert_eq!(b.rate(), 100.0, "never above the configured rate");
    }

    #[test]
    fn rate_never_falls_below_the_floor() {
        let t0 = Instant::now();
        let mut b = Budget::new(RequestBudget::new(4.0, 1), t0);
        for i in 0..10 {
            let at = t0 + Duration::from_secs(i);
            b.throttled(at, at, Some(ms(1)));
        }
        assert_eq!(b.rate(), 1.0);
        let mut slow = Budget::new(RequestBudget::new(0.5, 1), t0);
        slow.throttled(t0, t0, None);
        assert_eq!(slow.rate(), 0.5);
    }

    #[test]
    fn an_advertised_policy_caps_rate_and_burst_while_fresh() {
        let t0 = Instant::now();
        let mut b = Budget::new(RequestBudget::new(1000.0, 500), t0);
        assert_eq!(
            b.policy(t0, 200.0, Duration::from_secs(1)),
            Some(Adjustment::Policy)
        );
        assert_eq!(b.rate(), 180.0);
        assert_eq!(b.tokens(t0), 100.0, "burst capped at half the quota");
        assert_eq!(b.policy(t0 + ms(10), 200.0, Duration::from_secs(1)), None);
        // Refreshed, it holds; forgotten, the configured budget comes back gradually.
        b.tokens(t0 + Duration::from_secs(50));
        assert_eq!(b.rate(), 180.0);
        b.tokens(t0 + Duration::from_secs(75));
        assert!(b.rate() > 180.0, "{}", b.rate());
        // A nonsensical policy is ignored.
        assert_eq!(b.policy(t0, 0.0, Duration::from_secs(1)), None);
        assert_eq!(b.policy(t0, 5.0, Duration::ZERO), None);
    }

    #[test]
    fn remaining_zero_empties_the_bucket() {
        let t0 = Instant::now();
        let mut b = Budget::new(RequestBudget::new(10.0, 10), t0);
        assert_eq!(b.remaining(t0, 50), None);
        assert_eq!(b.remaining(t0, 4), None);
        assert_eq!(b.tokens(t0), 4.0);
        assert_eq!(b.remaining(t0, 0), Some(Adjustment::Exhausted));
        assert_eq!(b.acquire(t0), Grant::After(ms(100)));
    }

    #[test]
    fn invalid_budgets_are_refused() {
        for bad in [
            RequestBudget::new(0.0, 1),
            RequestBudget::new(f64::NAN, 1),
            RequestBudget::new(-3.0, 1),
            RequestBudget::new(10.0, 0),
            RequestBudget::new(10.0, 1).recovery(Duration::ZERO),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(RequestBudget::default().validate().is_ok());
    }

    /// What a client with this budget does against a server whose token bucket allows
    /// `limit` requests per second, with unlimited demand, for a minute of virtual time.
    struct Run {
        sent: u64,
        throttled: u64,
        sent_after_first_cut: u64,
        throttled_after_first_cut: u64,
        /// Most requests in any one second.
        peak: u64,
    }

    fn play(budget: RequestBudget, limit: f64, advertise: bool) -> Run {
        const LATENCY: Duration = Duration::from_millis(5);
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(60);
        let mut client = Budget::new(budget, t0);
        let (mut server_tokens, mut server_last) = (limit, t0);
        let mut in_flight: VecDeque<(Instant, Instant, Option<Duration>)> = VecDeque::new();
        let mut first_cut: Option<Instant> = None;
        let mut per_second = vec![0u64; 61];
        let mut run = Run {
            sent: 0,
            throttled: 0,
            sent_after_first_cut: 0,
            throttled_after_first_cut: 0,
            peak: 0,
        };
        let mut now = t0;
        while now < end {
            while let Some(&(arrives, sent, refused)) = in_flight.front() {
                if arrives > now {
                    break;
                }
                in_flight.pop_front();
                client.heard();
                if advertise {
                    client.policy(arrives, limit, Duration::from_secs(1));
                }
                if let Some(retry_after) = refused {
                    run.throttled += 1;
                    if first_cut.is_some() {
                        run.throttled_after_first_cut += 1;
                    }
                    if client.throttled(arrives, sent, Some(retry_after)).is_some() {
                        first_cut.get_or_insert(arrives);
                    }
                }
            }
            match client.acquire(now) {
                Grant::Now => {
                    let dt = now.duration_since(server_last).as_secs_f64();
                    server_tokens = (server_tokens + dt * limit).min(limit);
                    server_last = now;
                    let refused = if server_tokens >= 1.0 {
                        server_tokens -= 1.0;
                        None
                    } else {
                        Some(Duration::from_secs_f64((1.0 - server_tokens) / limit))
                    };
                    run.sent += 1;
                    if first_cut.is_some() {
                        run.sent_after_first_cut += 1;
                    }
                    per_second[now.duration_since(t0).as_secs() as usize] += 1;
                    in_flight.push_back((now + LATENCY, now, refused));
                }
                Grant::After(wait) => {
                    let next_answer = in_flight.front().map_or(end, |a| a.0);
                    now = (now + wait)
                        .min(next_answer)
                        .max(now + Duration::from_micros(1));
                }
            }
        }
        run.peak = per_second.iter().copied().max().unwrap_or(0);
        run
    }

    /// Without any header, AIMD alone: after the first cut fewer than 1 % of requests are
    /// refused, and the client still uses most of what the server allows.
    #[test]
    fn against_a_rate_limited_server_few_requests_are_refused() {
        let run = play(RequestBudget::new(1000.0, 50), 200.0, false);
        let share = run.throttled_after_first_cut as f64 / run.sent_after_first_cut as f64;
        eprintln!(
            "sent {} (429: {}), after the first cut {} (429: {}, {:.3} %), peak {}/s",
            run.sent,
            run.throttled,
            run.sent_after_first_cut,
            run.throttled_after_first_cut,
            share * 100.0,
            run.peak
        );
        assert!(share < 0.01, "{:.3} %", share * 100.0);
        assert!(
            run.sent as f64 > 0.6 * 200.0 * 60.0,
            "uses the server's capacity: {}",
            run.sent
        );
    }

    /// With the server's policy advertised, the client settles below it and is never refused
    /// after the first answer.
    #[test]
    fn an_advertised_policy_avoids_429_altogether() {
        let run = play(RequestBudget::new(1000.0, 50), 200.0, true);
        eprintln!(
            "sent {}, 429 {}, peak {}/s",
            run.sent, run.throttled, run.peak
        );
        assert_eq!(run.throttled, 0);
        assert!(run.sent as f64 > 0.85 * 200.0 * 60.0, "{}", run.sent);
        assert!(run.peak <= 200 + 50, "{}", run.peak);
    }
}
