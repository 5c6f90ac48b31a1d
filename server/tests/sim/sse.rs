//! Server-Sent Events.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::{client, create, error_code, sample, spawn, spawn_with};

/// One parsed event: (event name, id, data).
type Ev = (String, Option<String>, String);

/// Reads the whole stream (it must end by itself) and parses events and comments.
async fn read_all(r: reqwest::Response) -> (Vec<Ev>, usize) {
    let mut text = String::new();
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let mut events = Vec::new();
    let mut comments = 0;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
        for line in block.lines() {
            if line.starts_with(':') {
                comments += 1;
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim());
            }
        }
        if !data.is_empty() {
            events.push((name, id, data));
        }
    }
    (events, comments)
}

#[tokio::test]
async fn stream_sends_current_state_progress_terminal_then_ends() {
    let server = spawn_with(|s| {
        s.sse.progress_interval = Duration::from_millis(100);
    })
    .await;
    let id = create(&server, json!({"duration_ms": 450, "outcome": "error"})).await;
    let started = Instant::now();
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (events, _) = read_all(r).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let first = &events[0];
    assert_eq!(
        (first.0.as_str(), first.1.as_deref()),
        ("status", Some("1"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(&first.2).unwrap()["result"],
        "pending"
    );
    let last = events.last().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_deref()), ("status", Some("2")));
    let v: Value = serde_json::from_str(&last.2).unwrap();
    assert_eq!(v["result"], "error");
    assert_eq!(v["error"]["code"], "translation_failed");
    let progress = events.iter().filter(|e| e.0 == "progress").count();
    assert!((1..=6).contains(&progress), "progress events: {progress}");
    assert_eq!(
        events.iter().filter(|e| e.0 == "status").count(),
        2,
        "one per change"
    );
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let server = spawn_with(|s| {
        s.sse.progress_interval = Duration::ZERO;
        s.sse.keepalive = Duration::from_millis(100);
    })
    .await;
    let id = create(&server, json!({"duration_ms": 600})).await;
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    let (events, comments) = read_all(r).await;
    assert_eq!(events.len(), 2, "pending, then terminal: {events:?}");
    assert!(comments >= 2, "keep-alive comments while idle: {comments}");
}

#[tokio::test]
async fn last_event_id_resumes_without_duplicates() {
    let server = spawn_with(|s| s.sse.progress_interval = Duration::ZERO).await;
    let done = create(&server, json!({"duration_ms": 0})).await;
    let r = client()
        .get(server.url(&format!("/v1/jobs/{done}/events")))
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    let (events, _) = read_all(r).await;
    assert!(
        events.is_empty(),
        "client has the terminal event already: {events:?}"
    );

    let pending = create(&server, json!({"duration_ms": 200})).await;
    let r = client()
        .get(server.url(&format!("/v1/jobs/{pending}/events")))
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    let (events, _) = read_all(r).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1.as_deref(), Some("2"));
}

#[tokio::test]
async fn stream_cap_and_disabled_events_answer_with_errors() {
    let server = spawn_with(|s| s.sse.max_streams = 1).await;
    let id = create(&server, json!({"duration_ms": 60_000})).await;
    let url = server.url(&format!("/v1/jobs/{id}/events"));
    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        sample(&server.state().render_metrics(), "sim_sse_streams"),
        Some(1.0)
    );
    let second = client().get(&url).send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert!(second.headers().get("retry-after").is_some());
    assert_eq!(error_code(second).await, "too_many_streams");
    drop(first);
    let mut open = 1.0;
    for _ in 0..100 {
        open = sample(&server.state().render_metrics(), "sim_sse_streams").unwrap_or(1.0);
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open, 0.0, "a closed client frees its stream");

    let off = spawn_with(|s| s.sse.enabled = false).await;
    let id = create(&off, json!({"duration_ms": 10})).await;
    let r = client()
        .get(off.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = spawn().await;
    let id = create(&server, json!({"duration_ms": 60_000})).await;
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(read_all(r));
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not wait for the job");
    let (events, _) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 1, "only the initial pending event");
}

#[tokio::test]
async fn unknown_job_events_is_404() {
    let server = spawn().await;
    let r = client()
        .get(server.url("/v1/jobs/x/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
