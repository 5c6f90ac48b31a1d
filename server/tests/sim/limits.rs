//! Authentication, rate limits, capacity, expiry and timeouts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use translation_sim::Faults;

use crate::common::{client, client_from, create, error_code, sample, spawn_with};

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let server = spawn_with(|s| s.auth.api_key = Some("k3y".into())).await;
    let c = client();
    for key in [None, Some("wrong")] {
        let mut rb = c.get(server.url("/status"));
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 401, "{key:?}");
        assert_eq!(error_code(r).await, "unauthorized");
    }
    let r = c
        .get(server.url("/status"))
        .header("x-api-key", "k3y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Operations routes stay open to scrapers and health checks.
    assert_eq!(
        c.get(server.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn per_client_rate_limit_answers_429_with_retry_after_and_ratelimit_headers() {
    let server = spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rps = 2.0;
        s.rate_limit.burst = 3;
    })
    .await;
    let c = client();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let r = c
            .get(server.url("/status"))
            .header("x-api-key", "a")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        last = Some(r);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(statuses[4], 429);
    let r = last.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    let ms: u64 = r.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms <= 500, "{ms}");
    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=3;w=2");
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
    assert_eq!(error_code(r).await, "rate_limited");
    // Another client (another peer address: the key is not checked, so not an identity) has
    // its own bucket.
    let r = client_from("127.0.0.2")
        .get(server.url("/status"))
        .header("x-api-key", "b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains("r=2"));
    // Obeying Retry-After works.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = c
        .get(server.url("/status"))
        .header("x-api-key", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = server.state().render_metrics();
    assert!(sample(&text, "sim_rate_limited_total").unwrap() >= 1.0);
}

#[tokio::test]
async fn store_is_bounded_and_finished_jobs_expire() {
    let server = spawn_with(|s| {
        s.jobs.max_jobs = 3; // the legacy job + 2
        s.jobs.ttl = Duration::from_millis(200);
    })
    .await;
    let c = client();
    let a = create(&server, json!({"duration_ms": 0})).await;
    create(&server, json!({"duration_ms": 0})).await;
    let r = c.post(server.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(error_code(r).await, "store_full");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c
        .get(server.url(&format!("/v1/jobs/{a}/status")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "expired after its TTL");
    create(&server, json!({"duration_ms": 0})).await;
    let v: Value = c
        .get(server.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"], "completed", "the legacy job never expires");
}

#[tokio::test]
async fn slow_requests_are_cut_by_the_request_timeout() {
    let server = spawn_with(|s| {
        s.server.request_timeout = Duration::from_millis(600);
        s.longpoll.max_wait = Duration::from_millis(500);
    })
    .await;
    let id = create(&server, json!({"duration_ms": 60_000})).await;
    // A long-poll is capped below the timeout, so it is answered normally...
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .header("prefer", "wait=30")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ...while one slowed down past the limit is cut with a JSON 503.
    server
        .state()
        .set_faults(Faults {
            latency: Duration::from_millis(250),
            ..Faults::default()
        })
        .unwrap();
    let started = Instant::now();
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .header("prefer", "wait=30")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}
