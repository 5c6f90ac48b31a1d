//! The resilience layers against the simulator's fault injection: hedging cuts the slow tail
//! within its budget, the circuit breaker pauses waits through an outage instead of
//! hammering the service, and injected server errors never change an outcome.
//!
//! Timing assertions have wide margins: the machine may be loaded.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::time::Instant;
use translation_sim::{Faults, Outcome};
use translation_status::poll::Fixed;
use translation_status::transport::BreakerConfig;
use translation_status::{Client, Error, JobState, WaitOptions, telemetry};

use crate::support::{Reply, job, job_ending, json, metric, scripted, sim};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The sum of a counter over the series whose labels include every given pair.
fn counter(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(key, _, _, _)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    let rank = (latencies.len() * 99).div_ceil(100).max(1);
    latencies[rank - 1]
}

/// `calls` status reads of one pending job, 16 at a time; the latency of each.
async fn time_status_calls(client: &Client, job: &str, calls: usize) -> Vec<Duration> {
    futures_util::stream::iter(0..calls)
        .map(|_| async move {
            let started = Instant::now();
            let status = client.status(job).await.unwrap();
            assert!(matches!(status.state, JobState::Pending { .. }));
            started.elapsed()
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// A slow tail of 3 % of status calls at +500 ms: unhedged, the p99 is in the tail; hedged
/// (the defaults: after the observed p95, never before 50 ms, at most 5 % of calls), it is
/// not — and the hedges stay within their 5 % budget.
///
/// (A tail as large as the budget — 5 % at 5 % — can only be partly cut: the budget is spent
/// on the slowest 5 %, and chance decides which slow calls find it spent.)
#[test]
fn hedging_cuts_the_status_p99_within_its_budget() {
    const CALLS: usize = 1000;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (unhedged, hedged, tail) = metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let faults = Faults {
                slow_tail_probability: 0.03,
                slow_tail_delay: Duration::from_millis(500),
                seed: Some(5),
                ..Faults::default()
            };
            let plain = sim(|s| s.faults = faults.clone()).await;
            let client = Client::builder()
                .base_url(plain.base_url())
                .without_hedging()
                .build()
                .unwrap();
            let id = job(&plain, 3_600_000);
            let unhedged = time_status_calls(&client, &id, CALLS).await;

            let hedging = sim(|s| s.faults = faults.clone()).await;
            let client = Client::builder()
                .base_url(hedging.base_url())
                .build()
                .unwrap();
            let id = job(&hedging, 3_600_000);
            let hedged = time_status_calls(&client, &id, CALLS).await;
            let tail = metric(
                &hedging.state().render_metrics(),
                "sim_faults_injected_total",
                &[("kind", "slow_tail")],
            );
            (unhedged, hedged, tail)
        })
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let sent = counter(&snapshot, telemetry::HEDGES_TOTAL, &[("outcome", "sent")]);
    let won = counter(&snapshot, telemetry::HEDGES_TOTAL, &[("outcome", "won")]);
    let refused = counter(
        &snapshot,
        telemetry::HEDGES_TOTAL,
        &[("outcome", "budget_exhausted")],
    );
    let (p99_unhedged, p99_hedged) = (p99(unhedged), p99(hedged));
    eprintln!(
        "hedging: p99 {p99_unhedged:?} unhedged, {p99_hedged:?} hedged; {sent} hedges sent \
         ({won} won, {refused} refused by the budget) for {CALLS} calls; {tail} slow answers"
    );
    assert!(
        p99_unhedged >= Duration::from_millis(500),
        "the tail shows unhedged: {p99_unhedged:?}"
    );
    assert!(
        p99_hedged * 2 < p99_unhedged,
        "hedged p99 {p99_hedged:?} vs unhedged {p99_unhedged:?}"
    );
    assert!(sent as f64 <= 0.05 * CALLS as f64, "{sent} hedges");
    assert!(sent > 0 && won > 0, "hedges were sent and won");
}

struct Fleet {
    outcomes: Vec<(Outcome, Result<translation_status::Completion, Error>)>,
    /// Requests the simulator answered `503 outage`.
    during_outage: f64,
    /// How long the waits took in all.
    took: Duration,
}

/// 20 waits polling every 250 ms, started 12 ms apart (a fleet is not in lockstep); 600 ms
/// in, a 3 s outage.
async fn fleet_through_an_outage(breaker: bool) -> Fleet {
    let server = sim(|s| s.sse.enabled = false).await;
    let mut builder = Client::builder().base_url(server.base_url());
    if !breaker {
        builder = builder.without_circuit_breaker();
    }
    let client = builder.build().unwrap();
    let jobs: Vec<(String, Outcome)> = (0..20u64)
        .map(|i| {
            let outcome = if i % 5 == 4 {
                Outcome::Error
            } else {
                Outcome::Completed
            };
            (job_ending(&server, 1_500 + i * 150, outcome), outcome)
        })
        .collect();
    let options = WaitOptions::new()
        .long_poll(false)
        .policy(Fixed::new(Duration::from_millis(250)))
        .deadline(Duration::from_secs(40));
    let started = Instant::now();
    let waits = jobs.iter().enumerate().map(|(i, (id, _))| {
        let (client, options) = (&client, &options);
        async move {
            tokio::time::sleep(Duration::from_millis(12) * i as u32).await;
            client.wait_with(id.as_str(), options).await
        }
    });
    let outage = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        server.state().start_outage(Duration::from_secs(3));
    };
    let (results, ()) = tokio::join!(join_all(waits), outage);
    let took = started.elapsed();
    let during_outage = metric(
        &server.state().render_metrics(),
        "sim_faults_injected_total",
        &[("kind", "outage")],
    );
    Fleet {
        outcomes: jobs.into_iter().map(|(_, o)| o).zip(results).collect(),
        during_outage,
        took,
    }
}

fn assert_right_outcomes(fleet: &Fleet, what: &str) {
    for (i, (expected, result)) in fleet.outcomes.iter().enumerate() {
        match (expected, result) {
            (Outcome::Completed, Ok(done)) => assert_eq!(done.status.state, JobState::Completed),
            (Outcome::Error, Err(Error::JobFailed(_))) => {}
            (expected, got) => panic!("{what}: job {i} should end {expected:?}, got {got:?}"),
        }
    }
}

/// A 3 s outage during 20 waits: with the breaker, the waits pause instead of polling a dead
/// service — at least 90 % fewer requests reach it — and every wait still ends with its
/// job's real outcome once it is back.
#[test]
fn an_outage_opens_the_breaker_pauses_waits_and_spares_the_service() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (with, without) = metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            tokio::join!(
                fleet_through_an_outage(true),
                fleet_through_an_outage(false)
            )
        })
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let opened = counter(
        &snapshot,
        telemetry::BREAKER_TRANSITIONS_TOTAL,
        &[("to", "open")],
    );
    let closed = counter(
        &snapshot,
        telemetry::BREAKER_TRANSITIONS_TOTAL,
        &[("to", "closed")],
    );
    let rejected = counter(&snapshot, telemetry::BREAKER_REJECTED_TOTAL, &[]);
    eprintln!(
        "outage: {} requests reached the dead service with the breaker, {} without \
         ({:.1} % fewer); breaker opened {opened}×, closed {closed}×, refused {rejected} \
         requests; waits took {:?} with, {:?} without",
        with.during_outage,
        without.during_outage,
        100.0 * (1.0 - with.during_outage / without.during_outage),
        with.took,
        without.took,
    );
    assert!(
        opened >= 1 && closed >= 1,
        "the breaker opened and closed again"
    );
    assert!(rejected > 0, "the breaker refused requests");
    assert!(
        with.during_outage <= 0.1 * without.during_outage,
        "{} vs {} requests during the outage",
        with.during_outage,
        without.during_outage
    );
    assert_right_outcomes(&with, "with the breaker");
    // Without a breaker the waits survive too (they are not failed by an outage), at the
    // service's expense.
    assert_right_outcomes(&without, "without the breaker");
}

/// A single read on an open breaker is not sent: it fails at once, saying when to try again;
/// after the cool-down one probe goes out, and an answer closes the breaker.
#[tokio::test]
async fn a_status_read_on_an_open_breaker_fails_fast_and_says_when_to_try_again() {
    let failing = json(500, r#"{"error":{"code":"boom","message":"down"}}"#);
    let server = scripted(vec![failing; 3], json(200, r#"{"result":"pending"}"#)).await;
    let client = Client::builder()
        .max_retries(0)
        .circuit_breaker(
            BreakerConfig::new()
                .consecutive_failures(3)
                .cool_down(Duration::from_secs(2), Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    let url = server.url("/status");
    for _ in 0..3 {
        let err = client.status(url.as_str()).await.unwrap_err();
        assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    }
    let started = Instant::now();
    let err = client.status(url.as_str()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(500), "fast");
    assert_eq!(server.count(), 3, "nothing was sent");
    let Error::Unavailable(u) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(u.host, server.addr.to_string());
    let after = err.retry_after().unwrap();
    assert!(
        after > Duration::from_secs(1) && after <= Duration::from_secs(2),
        "{after:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("Try again in"), "{err}");
    // Clones share the breaker.
    let clone = client.clone();
    assert!(matches!(
        clone.status(url.as_str()).await,
        Err(Error::Unavailable(_))
    ));

    tokio::time::sleep(after).await;
    let status = clone.status(url.as_str()).await.unwrap();
    assert!(matches!(status.state, JobState::Pending { .. }));
    assert_eq!(server.count(), 4, "one probe");
    client.status(url.as_str()).await.unwrap();
    assert_eq!(server.count(), 5, "closed again");
}

/// A `404`, a job that ended in `error` and `304`s are answers: they never open the breaker.
#[tokio::test]
async fn answers_the_caller_does_not_like_are_not_failures() {
    let not_found = json(404, r#"{"error":{"code":"not_found","message":"no job"}}"#);
    let server = scripted(vec![not_found; 10], json(200, r#"{"result":"error"}"#)).await;
    let client = Client::builder()
        .max_retries(0)
        .circuit_breaker(BreakerConfig::new().consecutive_failures(2))
        .build()
        .unwrap();
    let url = server.url("/status");
    for _ in 0..10 {
        assert_eq!(
            client.status(url.as_str()).await.unwrap_err().http_status(),
            Some(404)
        );
    }
    for _ in 0..5 {
        let status = client.status(url.as_str()).await.unwrap();
        assert!(matches!(status.state, JobState::Failed(_)));
    }
    assert_eq!(server.count(), 15, "every request was sent");

    let server = sim(|_| {}).await;
    let client = Client::builder()
        .base_url(server.base_url())
        .max_retries(0)
        .circuit_breaker(BreakerConfig::new().consecutive_failures(2))
        .build()
        .unwrap();
    let failed = job_ending(&server, 0, Outcome::Error);
    for _ in 0..3 {
        let err = client.wait(failed.as_str()).await.unwrap_err();
        assert!(matches!(err, Error::JobFailed(_)), "{err:?}");
    }
}

/// 20 % of requests answered `500`: every wait still ends with its job's real outcome.
#[tokio::test]
async fn injected_server_errors_never_change_an_outcome() {
    let server = sim(|s| s.sse.enabled = false).await;
    server
        .state()
        .set_faults(Faults {
            error_rate: 0.2,
            seed: Some(11),
            ..Faults::default()
        })
        .unwrap();
    let client = Client::builder()
        .base_url(server.base_url())
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .unwrap();
    let jobs: Vec<(String, Outcome)> = (0..20u64)
        .map(|i| {
            let outcome = if i % 3 == 0 {
                Outcome::Error
            } else {
                Outcome::Completed
            };
            (job_ending(&server, 500 + i * 50, outcome), outcome)
        })
        .collect();
    let options = WaitOptions::new()
        .long_poll(false)
        .policy(Fixed::new(Duration::from_millis(100)))
        .deadline(Duration::from_secs(30));
    let results = join_all(
        jobs.iter()
            .map(|(id, _)| client.wait_with(id.as_str(), &options)),
    )
    .await;
    let retries: u32 = results
        .iter()
        .map(|r| match r {
            Ok(done) => done.report.retries,
            Err(Error::JobFailed(f)) => f.report.retries,
            _ => 0,
        })
        .sum();
    let injected = metric(
        &server.state().render_metrics(),
        "sim_faults_injected_total",
        &[("kind", "error")],
    );
    eprintln!("5xx at 20 %: {injected} injected, {retries} retries over 20 waits");
    assert!(injected > 0.0 && retries > 0);
    let fleet = Fleet {
        outcomes: jobs.into_iter().map(|(_, o)| o).zip(results).collect(),
        during_outage: 0.0,
        took: Duration::ZERO,
    };
    assert_right_outcomes(&fleet, "5xx at 20 %");
}

/// A hedge is one attempt: it is not a retry in the report, and the duplicate's answer
/// is used when it comes first.
#[tokio::test]
async fn a_hedged_read_is_one_request_in_the_report() {
    // Twenty quick answers teach the latency; the next is slow, its duplicate quick.
    let pending = json(200, r#"{"result":"pending"}"#);
    let mut script = vec![pending; 20];
    script.push(Reply::Late(
        Duration::from_secs(3),
        Box::new(json(200, r#"{"result":"pending"}"#)),
    ));
    let server = scripted(script, json(200, r#"{"result":"completed"}"#)).await;
    let client = Client::builder().build().unwrap();
    let url = server.url("/status");
    for _ in 0..20 {
        client.status(url.as_str()).await.unwrap();
    }
    let started = Instant::now();
    let done = client
        .wait_with(
            url.as_str(),
            &WaitOptions::new()
                .long_poll(false)
                .policy(Fixed::new(Duration::from_millis(50))),
        )
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the duplicate answered: {:?}",
        started.elapsed()
    );
    assert_eq!(done.report.requests, 1);
    assert_eq!(done.report.retries, 0, "a hedge is not a retry");
    assert_eq!(done.report.hedges, 1, "but it is counted");
    assert_eq!(server.count(), 22);
}

/// Two simulator replicas on one Redis (`store.backend = "redis"`); Redis stops mid-run and
/// comes back 2 s later. Jobs created through replica A are waited for through replica B: the
/// replicas answer `503 store_unavailable` with `Retry-After` meanwhile, the waits pause as it
/// says rather than fail (an answer with `Retry-After` is the throttle's business; the
/// breaker counts it only when the throttle hands it back, so it need not open), and
/// every wait ends with its job's real outcome.
#[test]
fn a_redis_outage_behind_two_replicas_pauses_waits_and_loses_none() {
    use translation_sim::redis_server::{Persistence, RedisServer};
    use translation_sim::settings::StoreBackend;
    use translation_status::NewJob;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (outcomes, unavailable) = metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let mut redis = RedisServer::start(Persistence::Aof)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let replica = || {
                let url = redis.url();
                sim(move |s| {
                    s.sse.enabled = false;
                    s.store.backend = StoreBackend::Redis;
                    s.store.redis_url = url;
                    s.store.reconnect_min = Duration::from_millis(50);
                    s.store.reconnect_max = Duration::from_millis(400);
                })
            };
            let (a, b) = (replica().await, replica().await);
            let on_a = Client::builder().base_url(a.base_url()).build().unwrap();
            let on_b = Client::builder().base_url(b.base_url()).build().unwrap();
            let mut jobs = Vec::new();
            for i in 0..8u64 {
                let outcome = if i % 4 == 3 {
                    Outcome::Error
                } else {
                    Outcome::Completed
                };
                let new = NewJob::new()
                    .duration(Duration::from_millis(1_000 + i * 100))
                    .outcome(match outcome {
                        Outcome::Error => translation_status::Outcome::Error,
                        Outcome::Completed => translation_status::Outcome::Completed,
                    });
                jobs.push((on_a.create_job(&new).await.unwrap().id, outcome));
            }
            let options = WaitOptions::new()
                .long_poll(false)
                .policy(Fixed::new(Duration::from_millis(200)))
                .deadline(Duration::from_secs(40));
            let waits = jobs
                .iter()
                .map(|(id, _)| on_b.wait_with(id.as_str(), &options));
            let outage = async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                redis.stop().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                redis.restart().await.unwrap();
            };
            let (results, ()) = tokio::join!(join_all(waits), outage);
            let unavailable = metric(
                &b.state().render_metrics(),
                "sim_store_unavailable_total",
                &[],
            );
            let outcomes: Vec<_> = jobs.into_iter().map(|(_, o)| o).zip(results).collect();
            (outcomes, unavailable)
        })
    });
    for (i, (expected, result)) in outcomes.iter().enumerate() {
        match (expected, result) {
            (Outcome::Completed, Ok(done)) => assert_eq!(done.status.state, JobState::Completed),
            (Outcome::Error, Err(Error::JobFailed(_))) => {}
            (expected, got) => panic!("job {i} should end {expected:?}, got {got:?}"),
        }
    }
    let snapshot = snapshotter.snapshot().into_vec();
    let opened = counter(
        &snapshot,
        telemetry::BREAKER_TRANSITIONS_TOTAL,
        &[("to", "open")],
    );
    let paused = counter(&snapshot, telemetry::THROTTLED_TOTAL, &[]);
    eprintln!(
        "redis outage: {unavailable} answers 503 store_unavailable, {paused} Retry-After \
         pauses, breaker opened {opened}×"
    );
    assert!(
        unavailable >= 1.0,
        "the replica answered 503 during the outage"
    );
    assert!(paused >= 1, "the waits paused on Retry-After");
}
