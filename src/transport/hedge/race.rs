//! The mechanism: time the original, send the duplicate when due and allowed, take the first
//! usable answer, cancel the other. The decisions are the tracker's (`tracker.rs`); the
//! requests are the guard's (`transport::guard`), which hands in the original's future and a
//! way to make the duplicate.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::Response;
use tokio::time::Instant;
use url::Url;

use super::HedgeConfig;
use super::tracker::{HedgeDecision, HedgePlan, HedgeTracker};
use crate::telemetry;
use crate::transport::classify::{Classification, classify, classify_error};
use crate::transport::hosts::PerHost;

/// Marks the duplicate of a hedged pair (a request extension, for what runs below the guard).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HedgeLeg;

/// Hedges slow status reads: one latency tracker and budget per host.
#[derive(Debug)]
pub(crate) struct Hedger {
    trackers: PerHost<Mutex<HedgeTracker>>,
}

/// How a hedged read ended.
#[derive(Debug)]
pub(crate) enum Raced {
    /// The answer (or failure) to return.
    Answer(reqwest_middleware::Result<Response>),
    /// The deadline passed with `out` legs still out (cancelled now, unreported).
    Expired { out: u32 },
}

/// One host's tracker, for one read.
pub(crate) struct HostHedge(Arc<Mutex<HedgeTracker>>);

fn lock(tracker: &Mutex<HedgeTracker>) -> MutexGuard<'_, HedgeTracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A leg that failed in a way the retry layer would retry does not win while the other is
/// still out.
fn failed(result: &reqwest_middleware::Result<Response>) -> bool {
    let class = match result {
        Ok(response) => classify(response.status(), response.headers()),
        Err(error) => classify_error(error),
    };
    class == Classification::Transient
}

impl Hedger {
    pub(crate) fn new(config: HedgeConfig) -> Self {
        Hedger {
            trackers: PerHost::new(move |_| Mutex::new(HedgeTracker::new(config, Instant::now()))),
        }
    }

    /// The tracker of the URL's host.
    pub(crate) fn host(&self, url: &Url) -> HostHedge {
        HostHedge(self.trackers.get(url))
    }
}

impl HostHedge {
    /// Runs `original`, a status read; if it is still out when the host's tracker says a
    /// hedge is due and its budget allows one, runs `duplicate(elapsed)` beside it (it gives
    /// `None` when it cannot: no copy of the request, or no time left) and returns the first
    /// usable answer of the two — or [`Raced::Expired`] once `deadline` passes with a leg
    /// still out (one timer serves the hedge's delay and the deadline).
    pub(crate) async fn race<O, D, F>(
        self,
        mut original: Pin<&mut O>,
        duplicate: D,
        deadline: Option<Instant>,
    ) -> Raced
    where
        O: Future<Output = reqwest_middleware::Result<Response>>,
        D: FnOnce(Duration) -> Option<F>,
        F: Future<Output = reqwest_middleware::Result<Response>> + Unpin,
    {
        let tracker = &self.0;
        let started = Instant::now();
        let plan = lock(tracker).start(started);
        let record = |latency| lock(tracker).record(Instant::now(), latency);
        let due = match plan {
            HedgePlan::After(delay) => started.checked_add(delay),
            HedgePlan::NotYet => None,
        };
        // Whichever comes first; with neither, no timer at all.
        let wake = match (due, deadline) {
            (Some(due), Some(deadline)) => Some(due.min(deadline)),
            (at, None) | (None, at) => at,
        };
        let Some(wake) = wake else {
            let result = original.await;
            record(started.elapsed());
            return Raced::Answer(result);
        };
        let mut timer = std::pin::pin!(tokio::time::sleep_until(wake));
        tokio::select! {
            biased;
            result = &mut original => {
                record(started.elapsed());
                return Raced::Answer(result);
            }
            () = &mut timer => {}
        }
        let now = Instant::now();
        let expired = deadline.is_some_and(|d| now >= d);
        let hedge = match due {
            Some(due) if !expired && now >= due => {
                // Still out at the delay: a duplicate is due.
                let decision = lock(tracker).hedge(now);
                match decision {
                    HedgeDecision::Send => duplicate(started.elapsed()),
                    HedgeDecision::BudgetExhausted => {
                        telemetry::hedge("budget_exhausted");
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(deadline) = deadline {
            timer.as_mut().reset(deadline);
        }
        let Some(mut hedge) = hedge else {
            // The original alone, until the deadline.
            let result = tokio::select! {
                biased;
                result = &mut original => Raced::Answer(result),
                () = &mut timer, if deadline.is_some() => Raced::Expired { out: 1 },
            };
            record(started.elapsed());
            return result;
        };
        telemetry::hedge("sent");
        tracing::debug!(
            delay_ms = started.elapsed().as_millis() as u64,
            "hedging a slow status read"
        );

        // Both out. A leg that failed does not win while the other is still out; when both
        // fail, the original's answer is the one returned; at the deadline, with a leg still
        // out, the exchange timed out (each leg had the same deadline).
        let mut hedge_out = true;
        // The original's answer once it came, a failure (a success returns at once).
        let mut original_failed: Option<reqwest_middleware::Result<Response>> = None;
        loop {
            let original_out = original_failed.is_none();
            tokio::select! {
                result = &mut original, if original_out => {
                    record(started.elapsed());
                    if !failed(&result) || !hedge_out {
                        return Raced::Answer(result);
                    }
                    original_failed = Some(result);
                }
                result = &mut hedge, if hedge_out => {
                    hedge_out = false;
                    if !failed(&result) {
                        if original_out {
                            // The original is cancelled; it had been out this long at least.
                            record(started.elapsed());
                        }
                        telemetry::hedge("won");
                        return Raced::Answer(result);
                    }
                    if let Some(original) = original_failed.take() {
                        return Raced::Answer(original);
                    }
                }
                () = &mut timer, if deadline.is_some() => {
                    if original_out {
                        record(started.elapsed());
                    }
                    return Raced::Expired {
                        out: u32::from(original_out) + u32::from(hedge_out),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::Extensions;
    use reqwest::Request;
    use reqwest_middleware::{Middleware, Next};

    use super::*;
    use crate::transport::{Call, RequestKind};

    /// The far side of the stack, in paused time: answers each request after the next
    /// scripted latency and logs when each arrived and whether it was a hedge; the answer
    /// says the request's own timeout, if it had one, in `x-timeout-ms`.
    struct Script {
        latencies: Mutex<Vec<Duration>>,
        log: Arc<Mutex<Vec<(Instant, bool)>>>,
        /// The duplicates answer `503`.
        hedges_fail: bool,
    }

    #[async_trait::async_trait]
    impl Middleware for Script {
        async fn handle(
            &self,
            req: Request,
            extensions: &mut Extensions,
            _next: Next<'_>,
        ) -> reqwest_middleware::Result<Response> {
            let hedge = extensions.get::<HedgeLeg>().is_some();
            let timeout = req.timeout().map(|t| t.as_millis().to_string());
            self.log.lock().unwrap().push((Instant::now(), hedge));
            let latency = {
                let mut latencies = self.latencies.lock().unwrap();
                if latencies.is_empty() {
                    Duration::from_millis(10)
                } else {
                    latencies.remove(0)
                }
            };
            tokio::time::sleep(latency).await;
            let body = if hedge { "hedge" } else { "original" };
            let mut answer = http::Response::new(body);
            if hedge && self.hedges_fail {
                *answer.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            if let Some(ms) = timeout {
                answer
                    .headers_mut()
                    .insert("x-timeout-ms", ms.parse().unwrap());
            }
            Ok(Response::from(answer))
        }
    }

    type Log = Arc<Mutex<Vec<(Instant, bool)>>>;

    fn stack(
        config: HedgeConfig,
        latencies: Vec<Duration>,
    ) -> (reqwest_middleware::ClientWithMiddleware, Log) {
        script(config, latencies, false)
    }

    fn script(
        config: HedgeConfig,
        latencies: Vec<Duration>,
        hedges_fail: bool,
    ) -> (reqwest_middleware::ClientWithMiddleware, Log) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let guard = crate::transport::guard::Guard {
            throttle: crate::transport::throttle::Throttle {
                max_waits: 0,
                max_delay: Duration::ZERO,
            },
            breakers: None,
            hedger: Some(Hedger::new(config)),
            request_timeout: Duration::from_secs(30),
            max_body: 1 << 20,
        };
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(guard)
            .with(Script {
                latencies: Mutex::new(latencies),
                log: Arc::clone(&log),
                hedges_fail,
            })
            .build();
        (client, log)
    }

    /// One status read through the stack.
    async fn read(
        client: &reqwest_middleware::ClientWithMiddleware,
    ) -> reqwest_middleware::Result<Response> {
        client
            .get("http://upstream.test/status")
            .with_extension(Call::new(RequestKind::Status))
            .send()
            .await
    }

    async fn call(client: &reqwest_middleware::ClientWithMiddleware) -> String {
        let response = read(client).await.unwrap();
        let body = crate::transport::attempts::body(response).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn the_hedge_fires_exactly_at_the_observed_percentile() {
        // Twenty answers of 1..=20 ms, then one that takes a second.
        let mut latencies: Vec<Duration> = (1..=20).map(ms).collect();
        latencies.push(Duration::from_secs(1));
        let config = HedgeConfig::new().min_delay(Duration::ZERO);
        let (client, log) = stack(config, latencies);
        for _ in 0..20 {
            assert_eq!(call(&client).await, "original");
        }
        assert!(
            log.lock().unwrap().iter().all(|(_, hedge)| !hedge),
            "too few samples to hedge"
        );

        let started = Instant::now();
        assert_eq!(call(&client).await, "hedge", "the first answer wins");
        let log = log.lock().unwrap().clone();
        let (original, hedge) = (log[20], log[21]);
        assert!(!original.1 && hedge.1);
        // p95 of 1..=20 ms is the 19th sample, 19 ms, reported at its bucket's upper edge
        // (19.456 ms) in whole milliseconds.
        let delay = hedge.0 - original.0;
        assert_eq!(delay, ms(20), "exactly when due");
        assert_eq!(
            Instant::now() - started,
            delay + ms(10),
            "the hedge's own latency"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_duplicate_gets_what_is_left_of_the_timeout() {
        let mut latencies = vec![ms(1); 20];
        latencies.extend([Duration::from_secs(1), ms(10)]);
        let config = HedgeConfig::new().min_delay(ms(50));
        let (client, _) = stack(config, latencies);
        for _ in 0..20 {
            call(&client).await;
        }
        let timeout_of = |response: &Response| {
            let header = response.headers().get("x-timeout-ms");
            header.map(|v| v.to_str().unwrap().to_owned())
        };
        // A plain read has no timeout of its own: the client's (30 s here), which the guard
        // keeps, bounds both legs, and the duplicate gets none.
        let plain = read(&client).await.unwrap();
        assert_eq!(timeout_of(&plain), None);
        // One with its own timeout: what is left of that one.
        let mut latencies = vec![ms(1); 20];
        latencies.extend([Duration::from_secs(1), ms(10)]);
        let (client, _) = stack(config, latencies);
        for _ in 0..20 {
            call(&client).await;
        }
        let own = client
            .get("http://upstream.test/status")
            .with_extension(Call::new(RequestKind::Status))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .unwrap();
        assert_eq!(timeout_of(&own).as_deref(), Some("1950"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clients_timeout_bounds_both_legs() {
        let mut latencies = vec![ms(1); 20];
        latencies.extend([Duration::from_secs(60), Duration::from_secs(60)]);
        let config = HedgeConfig::new().min_delay(ms(50));
        let (client, log) = stack(config, latencies);
        for _ in 0..20 {
            call(&client).await;
        }
        let started = Instant::now();
        let error = read(&client).await.unwrap_err();
        assert_eq!(Instant::now() - started, Duration::from_secs(30));
        assert_eq!(
            log.lock().unwrap().len(),
            22,
            "the original and its duplicate"
        );
        assert!(crate::transport::timed_out(&error), "{error}");
        assert_eq!(classify_error(&error), Classification::Transient);
        // Without a hedge (too few samples yet), the same timeout.
        let (client, _) = stack(config, vec![Duration::from_secs(60)]);
        let started = Instant::now();
        let error = read(&client).await.unwrap_err();
        assert_eq!(Instant::now() - started, Duration::from_secs(30));
        assert!(crate::transport::timed_out(&error), "{error}");
        // A duplicate that fails fast does not stand for an original still out at the
        // deadline: the exchange timed out.
        let mut latencies = vec![ms(1); 20];
        latencies.extend([Duration::from_secs(60), ms(10)]);
        let (client, _) = script(config, latencies, true);
        for _ in 0..20 {
            call(&client).await;
        }
        let error = read(&client).await.unwrap_err();
        assert!(crate::transport::timed_out(&error), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_original_is_never_hedged_and_the_floor_holds() {
        let config = HedgeConfig::new().min_samples(5).min_delay(ms(50));
        let mut latencies = vec![ms(1); 5];
        latencies.extend([ms(49), ms(60)]);
        let (client, log) = stack(config, latencies);
        for _ in 0..5 {
            call(&client).await;
        }
        assert_eq!(
            call(&client).await,
            "original",
            "49 ms is under the 50 ms floor"
        );
        let started = Instant::now();
        // The budget (5 % of 7 calls) allows no hedge yet: the original is awaited.
        assert_eq!(call(&client).await, "original");
        assert_eq!(Instant::now() - started, ms(60));
        assert_eq!(log.lock().unwrap().len(), 7, "no duplicate");
    }

    #[tokio::test(start_paused = true)]
    async fn the_original_wins_when_it_answers_first_and_the_duplicate_is_cancelled() {
        let config = HedgeConfig::new().min_delay(ms(50));
        // 20 fast calls, then an original of 70 ms whose duplicate would take 100 ms.
        let mut latencies = vec![ms(1); 20];
        latencies.extend([ms(70), ms(100)]);
        let (client, log) = stack(config, latencies);
        for _ in 0..20 {
            call(&client).await;
        }
        let started = Instant::now();
        assert_eq!(call(&client).await, "original");
        assert_eq!(Instant::now() - started, ms(70));
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 22, "one duplicate was sent at 50 ms");
        assert_eq!(log[21].0 - log[20].0, ms(50));
    }

    #[tokio::test(start_paused = true)]
    async fn other_kinds_are_never_hedged() {
        let config = HedgeConfig::new().min_samples(1).min_delay(Duration::ZERO);
        let (client, log) = stack(config, vec![ms(1), ms(500)]);
        call(&client).await;
        let response = client
            .get("http://upstream.test/v1/jobs/a/status")
            .with_extension(Call::new(RequestKind::LongPoll))
            .send()
            .await
            .unwrap();
        let body = crate::transport::attempts::body(response).await.unwrap();
        assert_eq!(body, "original");
        assert_eq!(log.lock().unwrap().len(), 2);
    }
}
