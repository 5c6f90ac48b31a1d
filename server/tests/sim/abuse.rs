//! What a hostile client or callback receiver can make the simulator do, and the bounds that
//! stop it: webhooks that never leave the allow-list, a store that refuses cheaply and is shared
//! fairly, a rate limit that cannot be dodged, bounded per-job memory, and deliveries that one
//! slow receiver cannot hold up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use tokio::net::TcpListener;

use crate::common::{client, client_from, create, error_code, sample, spawn_with, status_json};

/// A stand-in on `127.0.0.1:0` that counts every request it receives and answers with
/// `answer`. Returns its address (`host:port`) and the count.
async fn counting_stand_in(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback({
        let hits = Arc::clone(&hits);
        move || {
            let hits = Arc::clone(&hits);
            let answer = answer.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                answer()
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

/// Polls the simulator's metrics until `series` reaches `at_least` (or about 10 s pass).
async fn wait_for_metric(
    server: &translation_sim::RunningServer,
    series: &str,
    at_least: f64,
) -> Option<f64> {
    let mut seen = None;
    for _ in 0..400 {
        seen = sample(&server.state().render_metrics(), series);
        if seen.is_some_and(|v| v >= at_least) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen
}

#[tokio::test]
async fn a_webhook_redirect_is_never_followed_off_the_allow_list() {
    // The target of the redirects: reachable, but on a host the allow-list does not name.
    let (outside, outside_hits) =
        counting_stand_in(|| StatusCode::NO_CONTENT.into_response()).await;
    let outside_port = outside.rsplit(':').next().unwrap().to_string();
    let elsewhere = format!("http://localhost:{outside_port}/stolen");
    let redirects = [
        StatusCode::FOUND,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    let server = spawn_with(|s| {
        s.webhooks.allow_hosts = vec!["127.0.0.1".into()];
        s.webhooks.initial_backoff = Duration::from_millis(20);
    })
    .await;
    let mut callbacks = Vec::new();
    for status in redirects {
        let location = elsewhere.clone();
        let (addr, hits) = counting_stand_in(move || {
            (status, [(header::LOCATION, location.clone())]).into_response()
        })
        .await;
        let r = client()
            .post(server.url("/v1/jobs"))
            .json(&json!({"duration_ms": 0, "callback_url": format!("http://{addr}/hook")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        callbacks.push(hits);
    }
    let refused = wait_for_metric(
        &server,
        "sim_webhook_deliveries_total{outcome=\"redirected\"}",
        3.0,
    )
    .await;
    // Give a wrongly followed or retried delivery the chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        outside_hits.load(Ordering::SeqCst),
        0,
        "a redirect led the simulator off the allow-list"
    );
    assert_eq!(refused, Some(3.0), "each redirect is a failed delivery");
    for hits in &callbacks {
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a redirect is not retried");
    }
}

#[tokio::test]
async fn a_callback_url_is_bounded_as_stored() {
    const MAX: usize = 2048;
    let server = spawn_with(|s| s.webhooks.max_callback_url_len = MAX).await;
    let base = "http://127.0.0.1:9/";
    let post = |url: String| {
        client()
            .post(server.url("/v1/jobs"))
            .json(&json!({"duration_ms": 60_000, "callback_url": url}))
            .send()
    };
    // Exactly at the bound: accepted.
    let r = post(format!("{base}{}", "a".repeat(MAX - base.len())))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // One byte over, and far over (15 KB, near the body limit): refused, nothing stored.
    for len in [MAX + 1, 15 * 1024] {
        let r = post(format!("{base}{}", "a".repeat(len - base.len())))
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{len}");
        assert_eq!(error_code(r).await, "callback_url_too_long", "{len}");
    }
    // Short as sent, long as stored: every `é` is percent-encoded into six bytes.
    let raw = format!("{base}{}", "é".repeat(500));
    assert!(raw.len() < MAX);
    let r = post(raw).await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await, "callback_url_too_long");
    assert_eq!(
        server.state().job_count(),
        2,
        "the legacy job and the one accepted"
    );
}

#[tokio::test]
async fn a_hung_job_is_forgotten_after_hang_ttl() {
    let server = spawn_with(|s| s.jobs.hang_ttl = Duration::from_millis(300)).await;
    let id = create(&server, json!({"hang": true})).await;
    assert_eq!(status_json(&server, &id).await["result"], "pending");
    assert_eq!(server.state().job_count(), 2);
    let url = server.url(&format!("/v1/jobs/{id}/status"));
    let mut answers = Vec::new();
    for _ in 0..100 {
        let r = client().get(&url).send().await.unwrap();
        answers.push(r.status().as_u16());
        if r.status() == StatusCode::NOT_FOUND && server.state().job_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answers.last(), Some(&404), "{answers:?}");
    assert_eq!(server.state().job_count(), 1, "only the legacy job is left");
}

#[tokio::test]
async fn rotating_api_keys_do_not_dodge_the_rate_limit() {
    let server = spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rps = 0.5;
        s.rate_limit.burst = 3;
    })
    .await;
    let c = client();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = c
            .get(server.url("/status"))
            .header("x-api-key", format!("made-up-{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    // No key is configured, so none was checked: they are all one peer.
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn wrong_api_keys_are_counted_against_their_peer() {
    let server = spawn_with(|s| {
        s.auth.api_key = Some("k3y".into());
        s.rate_limit.enabled = true;
        s.rate_limit.rps = 0.5;
        s.rate_limit.burst = 3;
    })
    .await;
    let c = client();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = c
            .get(server.url("/status"))
            .header("x-api-key", format!("guess-{i}-{}", "x".repeat(60 * 1024)))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // The key holder is its own client, with its own bucket.
    let r = c
        .get(server.url("/status"))
        .header("x-api-key", "k3y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn one_client_cannot_take_more_than_its_share_of_the_store() {
    let server = spawn_with(|s| {
        s.jobs.max_jobs_per_client = 3;
        // Long enough that nothing expires before the counts below, on a loaded machine too.
        s.jobs.ttl = Duration::from_millis(1500);
    })
    .await;
    let post = |c: reqwest::Client, body: serde_json::Value| {
        c.post(server.url("/v1/jobs")).json(&body).send()
    };
    let greedy = client();
    for _ in 0..3 {
        let r = post(greedy.clone(), json!({"duration_ms": 0}))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    for _ in 0..5 {
        let r = post(greedy.clone(), json!({"hang": true})).await.unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("retry-after").is_some());
        assert_eq!(error_code(r).await, "too_many_jobs");
    }
    // Another peer still can, up to its own cap.
    let other = client_from("127.0.0.2");
    for _ in 0..3 {
        let r = post(other.clone(), json!({"duration_ms": 60_000}))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = post(other.clone(), json!({})).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(server.state().job_count(), 1 + 3 + 3);
    // Once the first client's jobs have expired, it has room again.
    let mut status = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = post(greedy.clone(), json!({"duration_ms": 0}))
            .await
            .unwrap();
        status = r.status().as_u16();
        if status == 201 {
            break;
        }
    }
    assert_eq!(status, 201);
}

/// A callback receiver that accepts connections and never reads or answers; it holds every
/// connection open. Returns its address and the number of connections accepted.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn({
        let accepted = Arc::clone(&accepted);
        async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_black_hole_receiver_does_not_delay_other_webhooks() {
    const STUCK: usize = 64;
    const PER_HOST: usize = 4;
    let server = spawn_with(|s| {
        s.webhooks.timeout = Duration::from_secs(2);
        s.webhooks.max_in_flight_per_host = PER_HOST;
    })
    .await;
    let (hole, accepted) = black_hole().await;
    let c = client();
    for _ in 0..STUCK {
        let body = json!({"duration_ms": 0, "callback_url": format!("http://{hole}/hook")});
        let r = c
            .post(server.url("/v1/jobs"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // The stuck deliveries have started before the healthy job exists.
    for _ in 0..200 {
        if accepted.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(accepted.load(Ordering::SeqCst) > 0);
    let (healthy, got) = counting_stand_in(|| StatusCode::NO_CONTENT.into_response()).await;
    let started = tokio::time::Instant::now();
    let body = json!({"duration_ms": 0, "callback_url": format!("http://{healthy}/hook")});
    let r = c
        .post(server.url("/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // 64 deliveries × 2 s timeout × 5 attempts stand in front of it if they are served in
    // turn; with them isolated it arrives at once. The bound leaves a loaded machine room.
    while got.load(Ordering::SeqCst) == 0 && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = started.elapsed();
    assert_eq!(
        got.load(Ordering::SeqCst),
        1,
        "not delivered after {waited:?}"
    );
    // At most PER_HOST connections to the black hole at a time: one wave before the first
    // attempts time out (2 s), two if this machine took longer than that.
    let stuck_connections = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=2 * PER_HOST).contains(&stuck_connections),
        "{stuck_connections} connections to one host after {waited:?}"
    );
}

#[tokio::test]
async fn a_retry_waits_without_holding_its_receivers_slot() {
    // One slot for the receiver. The first job's deliveries fail; while its retry waits out a
    // long backoff, the second job's delivery to the same receiver goes through.
    let server = spawn_with(|s| {
        s.webhooks.max_in_flight_per_host = 1;
        s.webhooks.max_attempts = 2;
        s.webhooks.initial_backoff = Duration::from_secs(20);
    })
    .await;
    let failing = Arc::new(std::sync::Mutex::new(String::new()));
    // Counts: attempts for the failing job, deliveries of any other.
    let attempts = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback({
        let (failing, attempts, delivered) = (failing.clone(), attempts.clone(), delivered.clone());
        move |body: String| async move {
            let fail = body.contains(failing.lock().unwrap().as_str());
            if fail {
                attempts.fetch_add(1, Ordering::SeqCst);
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                delivered.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Until the first job's id is known every delivery fails (every body contains "").
    let first = create(&server, json!({"duration_ms": 0, "callback_url": hook})).await;
    *failing.lock().unwrap() = first;
    while attempts.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    create(&server, json!({"duration_ms": 0, "callback_url": hook})).await;
    for _ in 0..300 {
        if delivered.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(delivered.load(Ordering::SeqCst), 1);
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "the retry is still waiting"
    );
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_webhook_deliveries_total{outcome=\"retried\"}"),
        Some(1.0)
    );
}
