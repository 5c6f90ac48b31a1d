//! The `silent` fault: a held request stays open and says nothing — and still ends.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use translation_sim::{Faults, RunningServer};

use crate::common::{client, create, error_code, sample, spawn_with};

fn silent() -> Faults {
    Faults {
        silent_rate: 1.0,
        ..Faults::default()
    }
}

/// Bytes of `r`'s body until it ends or `within` passes: `(bytes, ended)`.
async fn read_for(r: reqwest::Response, within: Duration) -> (usize, bool) {
    let mut body = r.bytes_stream();
    let until = tokio::time::Instant::now() + within;
    let mut n = 0;
    loop {
        match tokio::time::timeout_at(until, body.next()).await {
            Ok(Some(Ok(chunk))) => n += chunk.len(),
            Ok(_) => return (n, true),
            Err(_) => return (n, false),
        }
    }
}

fn silent_count(server: &RunningServer) -> f64 {
    sample(
        &server.state().render_metrics(),
        "sim_faults_injected_total{kind=\"silent\"}",
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_silent_stream_sends_its_head_then_nothing_until_its_lifetime_ends_it() {
    let server = spawn_with(|s| {
        s.faults = silent();
        s.changes.max_lifetime = Duration::from_millis(800);
        s.changes.lifetime_jitter = 0.0;
        s.changes.bookmark_interval = Duration::from_millis(50);
        s.sse.keepalive = Duration::from_millis(50);
    })
    .await;
    let job = create(&server, json!({"duration_ms": 100})).await;
    for path in ["/v1/events".to_owned(), format!("/v1/jobs/{job}/events")] {
        let opened = Instant::now();
        let r = client().get(server.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        // Bookmarks, keep-alives and the job's end would all have come by now: nothing does.
        let (bytes, ended) = read_for(r, Duration::from_secs(10)).await;
        assert_eq!(bytes, 0, "{path}");
        assert!(ended, "{path}: its lifetime ends it");
        let open_for = opened.elapsed();
        assert!(
            open_for >= Duration::from_millis(700),
            "{path}: {open_for:?}"
        );
    }
    assert_eq!(silent_count(&server), 2.0);
    // No stream was counted as open: the fault answered in place of the handler.
    let text = server.state().render_metrics();
    assert_eq!(sample(&text, "sim_change_streams"), Some(0.0));
}

#[tokio::test]
async fn a_silent_long_poll_gets_nothing_until_the_request_timeout() {
    let server = spawn_with(|s| {
        s.faults = silent();
        s.server.request_timeout = Duration::from_millis(1200);
        s.longpoll.max_wait = Duration::from_millis(500);
    })
    .await;
    let job = create(&server, json!({"duration_ms": 100})).await;
    let paths = [
        format!("/v1/jobs/{job}/status"),
        format!("/v1/jobs/{job}"),
        "/v1/changes?since=1:0".to_owned(),
    ];
    for path in &paths {
        let asked = Instant::now();
        let r = client()
            .get(server.url(path))
            .header("prefer", "wait=5")
            .send()
            .await
            .unwrap();
        let took = asked.elapsed();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(error_code(r).await, "timeout", "{path}");
        assert!(took >= Duration::from_millis(1100), "{path}: {took:?}");
    }
    assert_eq!(silent_count(&server), 3.0);
    // Only held requests go silent: a plain read is answered.
    let r = client()
        .get(server.url(&format!("/v1/jobs/{job}/status")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(silent_count(&server), 3.0);
}

#[tokio::test]
async fn silent_requests_end_at_shutdown() {
    let server = spawn_with(|s| s.faults = silent()).await;
    let job = create(&server, json!({"duration_ms": 60_000})).await;
    let stream = client().get(server.url("/v1/events")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let stream = tokio::spawn(read_for(stream, Duration::from_secs(20)));
    let poll = tokio::spawn({
        let url = server.url(&format!("/v1/jobs/{job}/status"));
        async move {
            match client().get(url).header("prefer", "wait=10").send().await {
                Ok(r) => r.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not wait for silent requests");
    let (bytes, ended) = stream.await.unwrap();
    assert_eq!((bytes, ended), (0, true));
    assert!(
        !poll.await.unwrap(),
        "the held request is cut, not answered"
    );
    assert!(asked.elapsed() < Duration::from_secs(10));
}
