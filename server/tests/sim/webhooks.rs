//! Signed webhook delivery with retries, against a real receiver on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use translation_sim::sim::webhooks::verify;

use crate::common::{client, error_code, sample, spawn_with};

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
