use std::time::Duration;

use serde_json::Value;
use translation_sim::{RunningServer, Settings};

/// Starts a simulator on a free loopback port, with `tweak` applied to the defaults.
pub(crate) async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> RunningServer {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.legacy.delay = Duration::from_millis(200);
    settings.hints.eta_noise = 0.0;
    tweak(&mut settings);
    translation_sim::spawn(settings).await.unwrap()
}

pub(crate) async fn spawn() -> RunningServer {
    spawn_with(|_| {}).await
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A client whose connections come from `local` (any of 127.0.0.0/8 on Linux), so that the
/// simulator counts it as a peer of its own.
pub(crate) fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .local_address(Some(local.parse().unwrap()))
        .build()
        .unwrap()
}

/// `POST /v1/jobs` with `body`; returns the job id.
pub(crate) async fn create(server: &RunningServer, body: Value) -> String {
    let r = client()
        .post(server.url("/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// The error code of a JSON error answer, checking its shape.
pub(crate) async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v["error"]["code"].as_str().unwrap().to_string()
}

/// The value of a sample line `name{labels} value` in Prometheus text (labels as written).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// `GET /v1/jobs/{id}/status` as JSON (any status code).
pub(crate) async fn status_json(server: &RunningServer, id: &str) -> Value {
    client()
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
