//! Signed webhook delivery with retries, and the webhook delivery faults (lost, duplicated,
//! held back, delayed), against a real receiver on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use translation_sim::RunningServer;
use translation_sim::sim::webhooks::verify;

use crate::common::{client, create, error_code, sample, spawn_with};

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver that fails the first `fail_first` deliveries with 500.
async fn receiver(fail_first: usize) -> (String, Received) {
    let got: Received = Arc::default();
    let app = Router::new().route(
        "/hook",
        post({
            let got = Arc::clone(&got);
            move |headers: HeaderMap, body: Bytes| async move {
                let mut g = got.lock().unwrap();
                g.push((headers, body));
                if g.len() <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn terminal_state_is_delivered_signed_and_retried() {
    let secret = "whsec_dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2tz";
    let server = spawn_with(|s| {
        s.webhooks.secret = secret.into();
        s.webhooks.initial_backoff = Duration::from_millis(50);
    })
    .await;
    let (hook, got) = receiver(1).await;
    let r = client()
        .post(server.url("/v1/jobs"))
        .json(&json!({"duration_ms": 100, "outcome": "error", "callback_url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..200 {
        if got.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Give a wrongly repeated delivery the chance to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one failed attempt, one retry that succeeded");
    for (headers, body) in &got {
        let msg_id = headers["webhook-id"].to_str().unwrap();
        let ts: u64 = headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let sig = headers["webhook-signature"].to_str().unwrap();
        assert_eq!(msg_id, format!("msg_{id}"), "stable id across retries");
        assert!(verify(secret, msg_id, ts, body, sig), "signature verifies");
        assert!(!verify("whsec_b3RoZXI=", msg_id, ts, body, sig));
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["result"], "error");
        assert!(v["completed_at"].is_string());
    }
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_webhook_deliveries_total{outcome=\"retried\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "sim_webhook_deliveries_total{outcome=\"delivered\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "sim_detection_delay_seconds_count{channel=\"webhook\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn delivery_gives_up_after_max_attempts() {
    let server = spawn_with(|s| {
        s.webhooks.max_attempts = 3;
        s.webhooks.initial_backoff = Duration::from_millis(20);
    })
    .await;
    let (hook, got) = receiver(usize::MAX).await;
    let r = client()
        .post(server.url("/v1/jobs"))
        .json(&json!({"duration_ms": 0, "callback_url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut gave_up = None;
    for _ in 0..200 {
        gave_up = sample(
            &server.state().render_metrics(),
            "sim_webhook_deliveries_total{outcome=\"gave_up\"}",
        );
        if gave_up.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(gave_up, Some(1.0));
    assert_eq!(got.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn callback_hosts_off_the_allow_list_are_refused() {
    let server = spawn_with(|s| s.webhooks.allow_hosts = vec!["hooks.example".into()]).await;
    let r = client()
        .post(server.url("/v1/jobs"))
        .json(&json!({"callback_url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await, "callback_not_allowed");
    let r = client()
        .post(server.url("/v1/jobs"))
        .json(&json!({"callback_url": "https://hooks.example/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Polls until `got` holds at least `n` deliveries, for at most `within`; returns how many.
async fn arrivals(got: &Received, n: usize, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let len = got.lock().unwrap().len();
        if len >= n || tokio::time::Instant::now() >= deadline {
            return len;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until `series` in `servers`' metrics adds up to `want`, for at most ten seconds;
/// returns the sum.
async fn counted(servers: &[&RunningServer], series: &str, want: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sum: f64 = servers
            .iter()
            .filter_map(|s| sample(&s.state().render_metrics(), series))
            .sum();
        if sum >= want || tokio::time::Instant::now() >= deadline {
            return sum;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The job id in a delivery's body.
fn job_of(body: &Bytes) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Time for a delivery that should not come to show up after all.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn lost_deliveries_never_arrive() {
    let server = spawn_with(|s| s.faults.webhook_drop_rate = 1.0).await;
    let (hook, got) = receiver(0).await;
    for _ in 0..3 {
        create(&server, json!({"duration_ms": 0, "callback_url": hook})).await;
    }
    let lost = "sim_faults_injected_total{kind=\"webhook_drop\"}";
    assert_eq!(counted(&[&server], lost, 3.0).await, 3.0);
    tokio::time::sleep(QUIET).await;
    assert!(
        got.lock().unwrap().is_empty(),
        "a lost delivery is never sent"
    );
    let text = server.state().render_metrics();
    for outcome in ["delivered", "retried", "gave_up"] {
        let series = format!("sim_webhook_deliveries_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), None, "{outcome}");
    }
}

#[tokio::test]
async fn duplicated_deliveries_arrive_twice_with_one_id() {
    let secret = "whsec_dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2tz";
    let server = spawn_with(|s| {
        s.webhooks.secret = secret.into();
        s.auth.admin_token = Some("admin".into());
    })
    .await;
    let c = client();
    // Set at run time, through the admin API; an impossible rate is refused by name.
    let r = c
        .put(server.url("/admin/faults"))
        .bearer_auth("admin")
        .json(&json!({"webhook_duplicate_rate": 1.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_faults");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("faults.webhook_duplicate_rate"),
        "{message}"
    );
    let r = c
        .put(server.url("/admin/faults"))
        .bearer_auth("admin")
        .json(&json!({"webhook_duplicate_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let now: Value = r.json().await.unwrap();
    assert_eq!(now["webhook_duplicate_rate"], 1.0);
    assert_eq!(now["webhook_reorder_window"], "1s");

    let (hook, got) = receiver(0).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(create(&server, json!({"duration_ms": 0, "callback_url": hook})).await);
    }
    assert_eq!(arrivals(&got, 4, Duration::from_secs(10)).await, 4);
    tokio::time::sleep(QUIET).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 4, "each delivery twice, no more");
    for id in &ids {
        let copies: Vec<_> = got.iter().filter(|(_, body)| job_of(body) == *id).collect();
        assert_eq!(copies.len(), 2, "{id}");
        let msg_ids: Vec<_> = copies.iter().map(|(h, _)| &h["webhook-id"]).collect();
        assert_eq!(msg_ids[0], msg_ids[1], "the same delivery id");
        assert_eq!(copies[0].1, copies[1].1, "the same body");
        for (headers, body) in copies {
            let ts: u64 = headers["webhook-timestamp"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let sig = headers["webhook-signature"].to_str().unwrap();
            let msg_id = headers["webhook-id"].to_str().unwrap();
            assert!(
                verify(secret, msg_id, ts, body, sig),
                "both copies are signed"
            );
        }
    }
    let text = server.state().render_metrics();
    let count = |series: &str| sample(&text, series);
    assert_eq!(
        count("sim_faults_injected_total{kind=\"webhook_duplicate\"}"),
        Some(2.0)
    );
    assert_eq!(
        count("sim_webhook_deliveries_total{outcome=\"delivered\"}"),
        Some(2.0),
        "a copy is not a delivery of its own"
    );
    assert_eq!(
        count("sim_detection_delay_seconds_count{channel=\"webhook\"}"),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_held_back_delivery_arrives_after_the_next_one() {
    let server = spawn_with(|s| {
        s.faults.webhook_reorder_rate = 1.0;
        // Far longer than the test: only the next delivery can release it.
        s.faults.webhook_reorder_window = Duration::from_secs(60);
    })
    .await;
    let (hook, got) = receiver(0).await;
    let first = create(&server, json!({"duration_ms": 0, "callback_url": hook})).await;
    let second = create(&server, json!({"duration_ms": 300, "callback_url": hook})).await;
    assert_eq!(arrivals(&got, 2, Duration::from_secs(10)).await, 2);
    let order: Vec<_> = got.lock().unwrap().iter().map(|(_, b)| job_of(b)).collect();
    assert_eq!(
        order,
        [second, first],
        "the later job's delivery arrives first"
    );
    let held = "sim_faults_injected_total{kind=\"webhook_reorder\"}";
    assert_eq!(
        sample(&server.state().render_metrics(), held),
        Some(1.0),
        "one held at a time: the second overtook the first"
    );

    // With nothing behind it, a held delivery goes when its window ends.
    let window = Duration::from_millis(400);
    server
        .state()
        .set_faults(translation_sim::Faults {
            webhook_reorder_rate: 1.0,
            webhook_reorder_window: window,
            ..translation_sim::Faults::default()
        })
        .unwrap();
    let started = tokio::time::Instant::now();
    let alone = create(&server, json!({"duration_ms": 0, "callback_url": hook})).await;
    assert_eq!(arrivals(&got, 3, Duration::from_secs(10)).await, 3);
    assert!(started.elapsed() >= window, "{:?}", started.elapsed());
    assert_eq!(job_of(&got.lock().unwrap()[2].1), alone);
    assert_eq!(sample(&server.state().render_metrics(), held), Some(2.0));
}

#[tokio::test]
async fn delayed_deliveries_wait_for_the_delay() {
    let delay = Duration::from_millis(600);
    let server = spawn_with(|s| s.faults.webhook_delay = delay).await;
    let (hook, got) = receiver(0).await;
    let started = tokio::time::Instant::now();
    create(&server, json!({"duration_ms": 0, "callback_url": hook})).await;
    assert_eq!(arrivals(&got, 1, Duration::from_secs(10)).await, 1);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    tokio::time::sleep(QUIET).await;
    assert_eq!(got.lock().unwrap().len(), 1, "delayed, not repeated");
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_faults_injected_total{kind=\"webhook_delay\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn webhook_faults_set_on_one_replica_apply_on_every_replica() {
    let redis = crate::scaleout::redis(translation_sim::redis_server::Persistence::None).await;
    let (a, b) = (
        crate::scaleout::replica(&redis, |_| {}).await,
        crate::scaleout::replica(&redis, |_| {}).await,
    );
    let r = client()
        .put(a.url("/admin/faults"))
        .bearer_auth("admin")
        .json(&json!({"webhook_drop_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.state().faults().webhook_drop_rate != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "faults never reached B"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (hook, got) = receiver(0).await;
    // Whichever replica logs a job's end delivers it: jobs created on both.
    for server in [&a, &b, &a, &b] {
        create(server, json!({"duration_ms": 0, "callback_url": hook})).await;
    }
    let lost = "sim_faults_injected_total{kind=\"webhook_drop\"}";
    assert_eq!(counted(&[&a, &b], lost, 4.0).await, 4.0);
    tokio::time::sleep(QUIET).await;
    assert!(got.lock().unwrap().is_empty(), "no replica sent one");
}
