//! The mechanism: time the original, send the duplicate when due and allowed, take the first
//! usable answer, cancel the other. The decisions are the tracker's (`tracker.rs`).

use std::sync::{Mutex, MutexGuard, PoisonError};

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use super::HedgeConfig;
use super::tracker::{HedgeDecision, HedgePlan, HedgeTracker};
use crate::telemetry;
use crate::transport::RequestKind;
use crate::transport::attempts::Attempts;
use crate::transport::classify::{Classification, classify, classify_error};
use crate::transport::hosts::PerHost;

/// Marks the duplicate of a hedged pair (a request extension): the attempt layer gives it
/// the original's attempt number and does not count it as a retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HedgeLeg {
    pub(crate) attempt: u32,
}

/// Hedges slow status reads; passes every other request through.
#[derive(Debug)]
pub(crate) struct HedgeLayer {
    trackers: PerHost<Mutex<HedgeTracker>>,
}

impl HedgeLayer {
    pub(crate) fn new(config: HedgeConfig) -> Self {
        HedgeLayer {
            trackers: PerHost::new(move |_| Mutex::new(HedgeTracker::new(config, Instant::now()))),
        }
    }
}

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

#[async_trait::async_trait]
impl Middleware for HedgeLayer {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let kind = RequestKind::of(extensions);
        if kind != RequestKind::Status {
            return next.run(req, extensions).await;
        }
        let tracker = self.trackers.get(req.url());
        let started = Instant::now();
        let plan = lock(&tracker).start(started);
        let record = |latency| lock(&tracker).record(Instant::now(), latency);
        let hedgeable = match plan {
            HedgePlan::After(delay) => req.try_clone().map(|duplicate| (delay, duplicate)),
            HedgePlan::NotYet => None,
        };
        let Some((delay, mut duplicate)) = hedgeable else {
            let result = next.run(req, extensions).await;
            record(started.elapsed());
            return result;
        };
        let attempts = extensions.get::<Attempts>().cloned();
        let attempt = attempts.as_ref().map_or(1, |a| a.get() + 1);
        let timeout = req.timeout().copied();

        let mut original = next.clone().run(req, extensions);
        tokio::select! {
            biased;
            result = &mut original => {
                record(started.elapsed());
                return result;
            }
            () = tokio::time::sleep(delay) => {}
        }

        // Still out at the delay: a duplicate is due. It gets what is left of the timeout.
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let decision = lock(&tracker).hedge(Instant::now());
        if decision == HedgeDecision::BudgetExhausted || left.is_some_and(|l| l.is_zero()) {
            if decision == HedgeDecision::BudgetExhausted {
                telemetry::hedge("budget_exhausted");
            }
            let result = original.await;
            record(started.elapsed());
            return result;
        }
        if left.is_some() {
            *duplicate.timeout_mut() = left;
        }
        telemetry::hedge("sent");
        if let Some(attempts) = &attempts {
            attempts.hedged();
        }
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            path = duplicate.url().path(),
            "hedging a slow status read"
        );
        let mut leg = Extensions::new();
        leg.insert(kind);
        leg.insert(HedgeLeg { attempt });
        let mut hedge = next.run(duplicate, &mut leg);

        tokio::select! {
            result = &mut original => {
                record(started.elapsed());
                if !failed(&result) {
                    return result;
                }
                let other = hedge.await;
                if failed(&other) {
                    result
                } else {
                    telemetry::hedge("won");
                    other
                }
            }
            result = &mut hedge => {
                if !failed(&result) {
                    // The original is cancelled; it had been out this long at least.
                    record(started.elapsed());
                    telemetry::hedge("won");
                    return result;
                }
                let other = original.await;
                record(started.elapsed());
                other
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// The far side of the stack, in paused time: answers each request after the next
    /// scripted latency and logs when each arrived and whether it was a hedge.
    struct Script {
        latencies: Mutex<Vec<Duration>>,
        log: Arc<Mutex<Vec<(Instant, bool)>>>,
    }

    #[async_trait::async_trait]
    impl Middleware for Script {
        async fn handle(
            &self,
            _req: Request,
            extensions: &mut Extensions,
            _next: Next<'_>,
        ) -> reqwest_middleware::Result<Response> {
            let hedge = extensions.get::<HedgeLeg>().is_some();
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
            Ok(Response::from(http::Response::new(body)))
        }
    }

    type Log = Arc<Mutex<Vec<(Instant, bool)>>>;

    fn stack(
        config: HedgeConfig,
        latencies: Vec<Duration>,
    ) -> (reqwest_middleware::ClientWithMiddleware, Log) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(HedgeLayer::new(config))
            .with(Script {
                latencies: Mutex::new(latencies),
                log: Arc::clone(&log),
            })
            .build();
        (client, log)
    }

    async fn call(client: &reqwest_middleware::ClientWithMiddleware) -> String {
        let response = client
            .get("http://upstream.test/status")
            .with_extension(RequestKind::Status)
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
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
            .with_extension(RequestKind::LongPoll)
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "original");
        assert_eq!(log.lock().unwrap().len(), 2);
    }
}
