//! `POST /v1/jobs/{id}/cancel`: a third terminal state, sticky, announced at once on every
//! channel, and decided exactly once when it races the job's natural end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::{client, create, error_code, sample, spawn, spawn_with, status_json};

async fn cancel(server: &translation_sim::RunningServer, id: &str) -> reqwest::Response {
    client()
        .post(server.url(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_canceled_job_is_canceled_for_good_and_cancel_is_idempotent() {
    // The legacy job must not finish during the test: it would count as completed.
    let server = spawn_with(|s| s.legacy.delay = Duration::from_secs(3600)).await;
    let id = create(&server, json!({"duration_ms": 600, "outcome": "completed"})).await;
    let before = client()
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .send()
        .await
        .unwrap();
    let pending_tag = before.headers()["etag"].to_str().unwrap().to_owned();

    let r = cancel(&server, &id).await;
    assert_eq!(r.status(), 200);
    let canceled_tag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(canceled_tag, pending_tag, "a new version");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], "canceled", "{v}");
    assert!(v["completed_at"].is_string(), "{v}");
    assert!(v["progress"].as_f64().unwrap() < 1.0, "{v}");

    // Again: the same answer, nothing changes.
    let r = cancel(&server, &id).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), canceled_tag);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again, v);

    // Past its natural end it is still canceled, in both shapes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = status_json(&server, &id).await;
    assert_eq!(status["result"], "canceled");
    assert_eq!(status["completed_at"], v["completed_at"]);
    let plain: Value = client()
        .get(server.url(&format!("/status?job={id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plain, json!({"result": "canceled"}));
    assert_eq!(cancel(&server, &id).await.status(), 200);
    assert_eq!(
        server.state().cancel_job(&id),
        Some(translation_sim::Cancel::AlreadyCanceled)
    );
    assert_eq!(server.state().cancel_job("j-nope"), None);

    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_jobs_finished_total{outcome=\"canceled\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "sim_jobs_finished_total{outcome=\"completed\"}"),
        None,
        "never counted as completed"
    );
}

#[tokio::test]
async fn a_finished_job_is_not_canceled_and_unknown_jobs_are_404() {
    let server = spawn().await;
    let id = create(&server, json!({"duration_ms": 0, "outcome": "error"})).await;
    let r = cancel(&server, &id).await;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(r).await, "job_finished");
    let v = status_json(&server, &id).await;
    assert_eq!(v["result"], "error", "left as it was: {v}");
    let r = cancel(&server, "j-0000000000000000").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "not_found");
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn a_cancel_wakes_long_polls_and_streams_at_once() {
    let server = spawn().await;
    let id = create(&server, json!({"duration_ms": 60_000})).await;
    let status = server.url(&format!("/v1/jobs/{id}/status"));
    let tag = client().get(&status).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let long_poll = tokio::spawn({
        let status = status.clone();
        async move {
            client()
                .get(status)
                .header("prefer", "wait=15")
                .header("if-none-match", tag)
                .send()
                .await
                .unwrap()
        }
    });
    let events = client()
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    let stream = tokio::spawn(async move {
        let mut body = events.bytes_stream();
        let mut text = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    });
    // Let both get held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let canceled_at = Instant::now();
    assert_eq!(cancel(&server, &id).await.status(), 200);

    let r = tokio::time::timeout(Duration::from_secs(5), long_poll)
        .await
        .expect("the long-poll is answered at the cancel, not at its wait")
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], "canceled");
    let text = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("the stream ends at the cancel")
        .unwrap();
    assert!(canceled_at.elapsed() < Duration::from_secs(5));
    let last = text
        .split("\n\n")
        .filter(|e| e.contains("event: status"))
        .last()
        .unwrap();
    assert!(last.contains("\"result\":\"canceled\""), "{text}");
    assert!(last.contains("id: 2"), "{text}");
}

#[tokio::test]
async fn a_hanging_job_can_be_canceled() {
    let server = spawn().await;
    let id = create(&server, json!({"hang": true})).await;
    assert_eq!(cancel(&server, &id).await.status(), 200);
    let v = status_json(&server, &id).await;
    assert_eq!(
        (v["result"].clone(), v["progress"].clone()),
        (json!("canceled"), json!(0.0))
    );
}

#[tokio::test]
async fn a_cancel_fires_the_webhook_once_with_the_canceled_state() {
    let got: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let app = Router::new().route(
        "/hook",
        post({
            let got = Arc::clone(&got);
            move |body: Bytes| async move {
                got.lock().unwrap().push(body);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = spawn().await;
    let id = create(&server, json!({"duration_ms": 400, "callback_url": hook})).await;
    assert_eq!(cancel(&server, &id).await.status(), 200);
    for _ in 0..200 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the natural end, with time for a wrong second delivery to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one delivery, at the cancel");
    let v: Value = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(
        (v["id"].as_str(), v["result"].as_str()),
        (Some(id.as_str()), Some("canceled"))
    );
}

/// Cancels aimed at the natural end, with readers polling meanwhile: each job reports one
/// terminal state, the one the cancel's answer implies, on every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_the_natural_end_over_http_is_decided_once() {
    const JOBS: u64 = 24;
    let server = Arc::new(spawn().await);
    // One client: its connections are reused, so a request's latency is the server's.
    let c = client();
    let mut rounds = Vec::new();
    for i in 0..JOBS {
        let (server, c) = (Arc::clone(&server), c.clone());
        rounds.push(tokio::spawn(async move {
            let duration = 200 + (i % 6) * 5;
            let asked = Instant::now();
            let r = c
                .post(server.url("/v1/jobs"))
                .json(&json!({"duration_ms": duration, "outcome": "completed"}))
                .send()
                .await
                .unwrap();
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let end = asked + Duration::from_millis(duration);
            let status = server.url(&format!("/v1/jobs/{id}/status"));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let (c, status) = (c.clone(), status.clone());
                    tokio::spawn(async move {
                        let mut seen = Vec::new();
                        while Instant::now() < end + Duration::from_millis(150) {
                            let v: Value =
                                c.get(&status).send().await.unwrap().json().await.unwrap();
                            let result = v["result"].as_str().unwrap().to_owned();
                            if result != "pending" {
                                seen.push(result);
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        seen
                    })
                })
                .collect();
            // Some aim well before the end, some at it, some after.
            let aim = end - Duration::from_millis(60) + Duration::from_millis((i % 6) * 20);
            tokio::time::sleep_until(aim).await;
            let answer = c
                .post(server.url(&format!("/v1/jobs/{id}/cancel")))
                .send()
                .await
                .unwrap()
                .status();
            let mut seen = Vec::new();
            for r in readers {
                seen.extend(r.await.unwrap());
            }
            let v: Value = c.get(&status).send().await.unwrap().json().await.unwrap();
            seen.push(v["result"].as_str().unwrap().to_owned());
            (answer, seen)
        }));
    }
    for round in rounds {
        let (answer, seen) = round.await.unwrap();
        let expected = match answer.as_u16() {
            200 => "canceled",
            409 => "completed",
            other => panic!("cancel answered {other}"),
        };
        assert!(
            seen.iter().all(|s| s == expected),
            "cancel answered {answer}, readers saw {seen:?}"
        );
    }
}
