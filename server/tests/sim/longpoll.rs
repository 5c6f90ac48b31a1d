//! `Prefer: wait` long-polling.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{client, create, sample, spawn, spawn_with};

#[tokio::test]
async fn held_request_returns_when_the_job_completes() {
    let server = spawn().await;
    let id = create(&server, json!({"duration_ms": 300})).await;
    let started = Instant::now();
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.headers()["preference-applied"], "wait=10");
    assert_eq!(r.json::<Value>().await.unwrap()["result"], "completed");
    assert!(
        took >= Duration::from_millis(250),
        "held until completion: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "woken by completion, not the wait: {took:?}"
    );
}

#[tokio::test]
async fn held_request_times_out_pending_and_wait_is_capped() {
    let server = spawn_with(|s| s.longpoll.max_wait = Duration::from_secs(1)).await;
    let id = create(&server, json!({"duration_ms": 60_000})).await;
    let started = Instant::now();
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .header("prefer", "wait=30")
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        r.headers()["preference-applied"],
        "wait=1",
        "capped by longpoll.max_wait"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["result"], "pending");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test]
async fn no_preference_applied_when_long_poll_is_off_or_prefer_is_malformed() {
    let off = spawn_with(|s| s.longpoll.enabled = false).await;
    let id = create(&off, json!({"duration_ms": 60_000})).await;
    let started = Instant::now();
    let r = client()
        .get(off.url(&format!("/v1/jobs/{id}/status")))
        .header("prefer", "wait=5")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("preference-applied").is_none());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at once"
    );

    let on = spawn().await;
    let id = create(&on, json!({"duration_ms": 60_000})).await;
    let started = Instant::now();
    let r = client()
        .get(on.url(&format!("/v1/jobs/{id}/status")))
        .header("prefer", "wait=later")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("preference-applied").is_none());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "malformed Prefer is ignored"
    );
}

#[tokio::test]
async fn stale_if_none_match_is_answered_at_once_and_current_one_gets_304_on_timeout() {
    let server = spawn_with(|s| s.longpoll.max_wait = Duration::from_secs(1)).await;
    let id = create(&server, json!({"duration_ms": 60_000})).await;
    let c = client();
    let url = server.url(&format!("/v1/jobs/{id}/status"));
    let started = Instant::now();
    let r = c
        .get(&url)
        .header("prefer", "wait=5")
        .header("if-none-match", "W/\"old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "stale tag: no hold"
    );
    let etag = r.headers()["etag"].clone();
    let r = c
        .get(&url)
        .header("prefer", "wait=5")
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304, "held, nothing changed");
    assert_eq!(r.headers()["preference-applied"], "wait=1");
}

#[tokio::test]
async fn waiter_cap_degrades_to_an_immediate_answer_and_gauge_tracks_held_requests() {
    let server = spawn_with(|s| s.longpoll.max_waiters = 1).await;
    let id = create(&server, json!({"duration_ms": 60_000})).await;
    let url = server.url(&format!("/v1/jobs/{id}/status"));
    let held = tokio::spawn({
        let url = url.clone();
        async move { client().get(url).header("prefer", "wait=15").send().await }
    });
    // Wait until the server holds it.
    let mut waiters = 0.0;
    for _ in 0..100 {
        waiters = sample(&server.state().render_metrics(), "sim_longpoll_waiters").unwrap_or(0.0);
        if waiters == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiters, 1.0);
    let started = Instant::now();
    let r = client()
        .get(&url)
        .header("prefer", "wait=15")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("preference-applied").is_none(),
        "over the cap: not held"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The client goes away: the held request is released and the gauge drops.
    held.abort();
    let mut after = 1.0;
    for _ in 0..100 {
        after = sample(&server.state().render_metrics(), "sim_longpoll_waiters").unwrap_or(1.0);
        if after == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(after, 0.0);
}
