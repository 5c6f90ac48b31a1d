//! Fault injection, from settings and at run time through the admin API.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use translation_sim::{Faults, OutageWindow};

use crate::common::{client, error_code, sample, spawn, spawn_with};

const TOKEN: &str = "test-admin-token";

#[tokio::test]
async fn admin_api_is_guarded_and_changes_faults_at_run_time() {
    let disabled = spawn().await;
    let r = client()
        .get(disabled.url("/admin/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "admin_disabled");

    let server = spawn_with(|s| s.auth.admin_token = Some(TOKEN.into())).await;
    let c = client();
    let r = c
        .put(server.url("/admin/faults"))
        .bearer_auth("wrong")
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        c.get(server.url("/status")).send().await.unwrap().status(),
        200
    );

    let r = c
        .put(server.url("/admin/faults"))
        .bearer_auth(TOKEN)
        .json(&json!({"error_rate": 1.0, "latency": "10ms"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let now: Value = r.json().await.unwrap();
    assert_eq!(now["error_rate"], 1.0);
    assert_eq!(now["latency"], "10ms");
    let r = c.get(server.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(error_code(r).await, "injected_error");
    // Operations routes are never faulted.
    assert_eq!(
        c.get(server.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(server.url("/metrics")).send().await.unwrap().status(),
        200
    );

    let r = c
        .put(server.url("/admin/faults"))
        .bearer_auth(TOKEN)
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "invalid faults are refused");
    let r = c
        .put(server.url("/admin/faults"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(server.url("/status")).send().await.unwrap().status(),
        200
    );

    let r = c
        .post(server.url("/admin/outage"))
        .bearer_auth(TOKEN)
        .json(&json!({"duration_ms": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c.get(server.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "outage");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.get(server.url("/status")).send().await.unwrap().status(),
        200
    );
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_faults_injected_total{kind=\"error\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "sim_faults_injected_total{kind=\"outage\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn each_fault_kind_has_its_effect() {
    let server = spawn().await;
    let state = server.state();
    let c = client();
    let url = server.url("/status");

    state
        .set_faults(Faults {
            throttle_rate: 1.0,
            throttle_retry_after: Duration::from_millis(1500),
            ..Faults::default()
        })
        .unwrap();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(r.headers()["retry-after-ms"], "1500");
    assert_eq!(error_code(r).await, "injected_throttle");

    state
        .set_faults(Faults {
            malformed_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err());

    state
        .set_faults(Faults {
            drop_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let outcome = match c.get(&url).send().await {
        Err(e) => Err(e),
        Ok(r) => r.bytes().await.map(|_| ()),
    };
    assert!(outcome.is_err(), "the answer never completes");

    state
        .set_faults(Faults {
            latency: Duration::from_millis(150),
            slow_tail_probability: 1.0,
            slow_tail_delay: Duration::from_millis(150),
            ..Faults::default()
        })
        .unwrap();
    let started = Instant::now();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    state.set_faults(Faults::default()).unwrap();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    let text = state.render_metrics();
    for kind in ["throttle", "malformed", "drop", "slow_tail"] {
        assert_eq!(
            sample(
                &text,
                &format!("sim_faults_injected_total{{kind=\"{kind}\"}}")
            ),
            Some(1.0),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn configured_outage_window_applies_from_start_up() {
    let server = spawn_with(|s| {
        s.faults.outages = vec![OutageWindow {
            start: Duration::ZERO,
            duration: Duration::from_millis(300),
        }]
    })
    .await;
    let c = client();
    assert_eq!(
        c.get(server.url("/status")).send().await.unwrap().status(),
        503
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.get(server.url("/status")).send().await.unwrap().status(),
        200
    );
}
