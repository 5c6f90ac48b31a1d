//! The hang fault: a job created with `"hang": true` stays pending forever with its progress
//! frozen, on every channel — what a stuck backend job looks like to its clients.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::{client, create, error_code, spawn_with, status_json};

#[tokio::test]
async fn a_hanging_job_stays_pending_with_frozen_progress() {
    let server = spawn_with(|s| s.sse.progress_interval = Duration::from_millis(100)).await;
    let c = client();
    let id = create(&server, json!({"hang": true})).await;
    let status = server.url(&format!("/v1/jobs/{id}/status"));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let v: Value = c.get(&status).send().await.unwrap().json().await.unwrap();
        seen.push((v["result"].clone(), v["progress"].clone()));
        assert!(
            v.get("eta_ms").is_none(),
            "a stuck job has no estimate: {v}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        seen.iter().all(|s| *s == (json!("pending"), json!(0.0))),
        "{seen:?}"
    );

    // A long-poll is held for its whole wait and answers pending.
    let asked = Instant::now();
    let r = c
        .get(&status)
        .header("prefer", "wait=1")
        .send()
        .await
        .unwrap();
    assert!(asked.elapsed() >= Duration::from_millis(900));
    assert_eq!(r.headers()["preference-applied"], "wait=1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], "pending");

    // The event stream keeps reporting the same progress and never ends.
    let r = c
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let until = Instant::now() + Duration::from_millis(450);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(until, body.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.matches("event: progress").count() >= 2, "{text}");
    assert!(text.contains("\"progress\":0.0"), "{text}");
    assert!(!text.contains("completed"), "{text}");
}

#[tokio::test]
async fn a_hanging_job_has_no_duration_or_outcome() {
    let server = spawn_with(|_| {}).await;
    for body in [
        json!({"hang": true, "duration_ms": 100}),
        json!({"hang": true, "outcome": "error"}),
    ] {
        let r = client()
            .post(server.url("/v1/jobs"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        assert_eq!(error_code(r).await, "invalid_job");
    }
    // `"hang": false` is an ordinary job.
    let id = create(&server, json!({"hang": false, "duration_ms": 0})).await;
    let v: Value = status_json(&server, &id).await;
    assert_eq!(v["result"], "completed");
}
