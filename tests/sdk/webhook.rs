//! Webhooks end to end: the real simulator delivers to an axum receiver built on
//! `webhook::axum::route`, and each event arrives verified, as a status read would give it;
//! and the handler's answers to forged, replayed, oversized and undeliverable requests.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use translation_sim::RunningServer;
use translation_status::webhook::axum::route;
use translation_status::webhook::{Receiver, Secret, WebhookEvent};
use translation_status::{Client, CreateRequest, JobState, Profile};

use crate::support::{metric, sim};

const VIDEO: &str = "https://videos.example/source.mp4";
const HEYGEN_SECRET: &str = "endpoint-secret-for-tests";
const WHSEC: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2tz";

/// Serves `receiver` at `/hook` on 127.0.0.1:0: its URL and the events it takes.
async fn receiver(receiver: Receiver) -> (String, mpsc::Receiver<WebhookEvent>) {
    let (events, arrived) = mpsc::channel(64);
    // Mounted on a router with a state of its own, as an application's would be.
    let app = Router::new()
        .route("/hook", route(receiver, events))
        .route(
            "/",
            get(|State(name): State<&'static str>| async move { name }),
        )
        .with_state("receiver");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, arrived)
}

fn client_for(server: &RunningServer, profile: &str) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .profile(Profile::builtin(profile).unwrap())
        .build()
        .unwrap()
}

async fn next(arrived: &mut mpsc::Receiver<WebhookEvent>) -> WebhookEvent {
    tokio::time::timeout(Duration::from_secs(20), arrived.recv())
        .await
        .expect("a webhook within 20 s")
        .expect("the handler holds the sender")
}

fn hex_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn heygen_webhooks_from_the_simulator_arrive_verified_as_status_reads() {
    let server = sim(|s| {
        s.heygen.webhook_secret = HEYGEN_SECRET.into();
        s.webhooks.initial_backoff = Duration::from_millis(50);
    })
    .await;
    let heygen = Receiver::heygen(Secret::raw(HEYGEN_SECRET).unwrap())
        .build()
        .unwrap();
    let (hook, mut arrived) = receiver(heygen).await;
    let client = client_for(&server, "heygen-v2");
    let mut created = Vec::new();
    for outcome in ["completed", "error"] {
        let request = CreateRequest::new()
            .param("video_url", VIDEO)
            .param("language", "German (Germany)")
            .param("duration_ms", 150)
            .param("outcome", outcome)
            .param("callback_url", hook.as_str());
        let jobs = client.create(&request).await.unwrap();
        created.push(jobs[0].id.clone());
    }
    let mut events = [next(&mut arrived).await, next(&mut arrived).await];
    events.sort_by_key(|e| created.iter().position(|id| *id == e.job_id));
    let (ok, failed) = (&events[0], &events[1]);
    assert_eq!((&ok.job_id, &failed.job_id), (&created[0], &created[1]));

    // The same canonical status as a HeyGen status read of the same job.
    let read = client.status(&created[0]).await.unwrap();
    assert_eq!(ok.status.state, JobState::Completed);
    assert_eq!(ok.status.state, read.state);
    let url = ok.status.result_url.as_deref().unwrap();
    assert!(url.contains(&created[0]), "{url}");
    let read = client.status(&created[1]).await.unwrap();
    assert!(matches!(failed.status.state, JobState::Failed(_)));
    assert_eq!(failed.status.state, read.state);
    assert_eq!(failed.signed_at, None);

    // The simulator saw each delivery taken (`2xx`), once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(arrived.try_recv().is_err(), "no third event");
    let text = server.state().render_metrics();
    assert_eq!(
        metric(
            &text,
            "sim_webhook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "sim_webhook_deliveries_total",
            &[("outcome", "retried")]
        ),
        0.0
    );
}

#[tokio::test]
async fn standard_webhooks_from_the_simulator_arrive_verified_as_status_reads() {
    let server = sim(|s| s.webhooks.secret = WHSEC.into()).await;
    let standard = Receiver::standard_webhooks(Secret::whsec(WHSEC).unwrap())
        .build()
        .unwrap();
    let (hook, mut arrived) = receiver(standard).await;
    let client = client_for(&server, "simulator");
    let request = CreateRequest::new()
        .param("duration_ms", 100)
        .param("outcome", "error")
        .param("callback_url", hook.as_str());
    let id = client.create(&request).await.unwrap()[0].id.clone();
    let event = next(&mut arrived).await;
    assert_eq!(event.job_id, id);
    assert_eq!(event.delivery_id, format!("msg_{id}"));
    let read = client.status(&id).await.unwrap();
    assert_eq!(event.status.state, read.state);
    assert!(matches!(event.status.state, JobState::Failed(_)));
    assert_eq!(event.status.completed_at, read.completed_at);
    let signed = event.signed_at.unwrap();
    let skew = SystemTime::now()
        .duration_since(signed)
        .unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(60), "{skew:?}");
}

/// A HeyGen-style receiver at `/hook`, with a body limit of 1 KiB.
async fn small_receiver() -> (String, mpsc::Receiver<WebhookEvent>) {
    let heygen = Receiver::heygen(Secret::raw(HEYGEN_SECRET).unwrap())
        .max_body(1024)
        .build()
        .unwrap();
    receiver(heygen).await
}

fn heygen_event(id: &str) -> Vec<u8> {
    format!(
        r#"{{"event_type": "video_translate.success", "event_data": {{"video_translate_id": "{id}", "url": "https://cdn.example/{id}.mp4"}}}}"#
    )
    .into_bytes()
}

async fn post(url: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body);
    if let Some(signature) = signature {
        request = request.header("signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn the_handler_answers_forgeries_replays_and_oversized_bodies() {
    let (hook, mut arrived) = small_receiver().await;
    let body = heygen_event("vt-1");
    let signature = hex_hmac(HEYGEN_SECRET, &body);

    let (status, _) = post(&hook, Some(&signature), body.clone()).await;
    assert_eq!(status, 204);
    assert_eq!(next(&mut arrived).await.job_id, "vt-1");
    // The same delivery again: acknowledged, not handed on.
    let (status, _) = post(&hook, Some(&signature), body.clone()).await;
    assert_eq!(status, 200);

    let forged = hex_hmac("not-the-secret", &body);
    let (status, error) = post(&hook, Some(&forged), body.clone()).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (401, &"bad_signature".into())
    );
    let (status, error) = post(&hook, None, body.clone()).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (400, &"missing_header".into())
    );
    let mut tampered = body.clone();
    tampered[20] ^= 1;
    let (status, _) = post(&hook, Some(&signature), tampered).await;
    assert_eq!(status, 401);

    // Over the limit, declared…
    let big = vec![b' '; 2048];
    let (status, error) = post(&hook, Some(&signature), big).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (413, &"body_too_large".into())
    );
    // …or streamed without a length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..3).map(|_| Ok(vec![b' '; 512])).collect();
    let response = reqwest::Client::new()
        .post(&hook)
        .header("signature", &signature)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    // Nothing refused reached the sink.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(arrived.try_recv().is_err());
}

#[tokio::test]
async fn an_event_the_sink_cannot_take_is_refused_so_that_the_sender_retries() {
    let (hook, arrived) = small_receiver().await;
    drop(arrived);
    let body = heygen_event("vt-2");
    let signature = hex_hmac(HEYGEN_SECRET, &body);
    for _ in 0..2 {
        // Not `200` the second time: the id was forgotten, so a retry is received again.
        let (status, error) = post(&hook, Some(&signature), body.clone()).await;
        assert_eq!((status, &error["error"]["code"]), (503, &"sink".into()));
    }
}
