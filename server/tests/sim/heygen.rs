//! The HeyGen dialect: v2 and v3 shapes and states, the per-client limit on running jobs,
//! `Idempotency-Key`, authentication, HeyGen's error envelope and webhooks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use translation_sim::RunningServer;

use crate::common::{client, client_from, create, error_code, sample, spawn_with, status_json};

const VIDEO: &str = "https://videos.example/source.mp4";

fn v2_body(extra: Value) -> Value {
    let mut body = json!({"video_url": VIDEO, "output_language": "Spanish (Spain)"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

fn v3_body(languages: &[&str], extra: Value) -> Value {
    let mut body = json!({"video": {"type": "url", "url": VIDEO}, "output_languages": languages});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn post_json(c: &reqwest::Client, url: String, body: &Value) -> reqwest::Response {
    c.post(url).json(body).send().await.unwrap()
}

/// `POST /v2/video_translate`; returns the id.
async fn v2_create(server: &RunningServer, body: Value) -> String {
    let r = post_json(&client(), server.url("/v2/video_translate"), &body).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], Value::Null, "{v}");
    v["data"]["video_translate_id"].as_str().unwrap().to_owned()
}

async fn get(server: &RunningServer, path: String) -> Value {
    let r = client().get(server.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn v2_status(server: &RunningServer, id: &str) -> Value {
    get(server, format!("/v2/video_translate/{id}")).await["data"].clone()
}

async fn v3_status(server: &RunningServer, id: &str) -> Value {
    get(server, format!("/v3/video-translations/{id}")).await["data"].clone()
}

/// Sleeps until `at` after `since`.
async fn at(since: tokio::time::Instant, ms: u64) {
    tokio::time::sleep_until(since + Duration::from_millis(ms)).await;
}

#[tokio::test]
async fn v2_goes_pending_running_success_with_a_url_signed_anew_on_every_read() {
    let server = spawn_with(|s| s.heygen.queued_fraction = 0.5).await;
    let id = v2_create(
        &server,
        v2_body(json!({"duration_ms": 3000, "title": "Launch"})),
    )
    .await;
    // The job was created before this instant: it is at least this old at every later read.
    let t0 = tokio::time::Instant::now();
    let v = v2_status(&server, &id).await;
    assert_eq!(v["status"], "pending", "the first half is queued: {v}");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["message", "status", "title", "url", "video_translate_id"],
        "HeyGen's five fields: {v}"
    );
    assert_eq!(
        (v["title"].as_str(), v["url"].clone(), v["message"].clone()),
        (Some("Launch"), Value::Null, Value::Null)
    );
    at(t0, 2000).await;
    assert_eq!(v2_status(&server, &id).await["status"], "running");
    at(t0, 3100).await;
    let first = v2_status(&server, &id).await;
    let second = v2_status(&server, &id).await;
    for v in [&first, &second] {
        assert_eq!(v["status"], "success", "{v}");
        assert_eq!(v["message"], Value::Null);
        let url = url::Url::parse(v["url"].as_str().unwrap()).unwrap();
        assert!(url.path().ends_with(&format!("/{id}.mp4")), "{url}");
        assert!(
            url.query_pairs().any(|(k, v)| k == "sig" && v.len() == 64),
            "{url}"
        );
    }
    assert_ne!(
        first["url"], second["url"],
        "a fresh signature on every read"
    );
}

#[tokio::test]
async fn failed_jobs_say_why_in_both_versions() {
    let server = spawn_with(|_| {}).await;
    let id = v2_create(
        &server,
        v2_body(json!({"duration_ms": 0, "outcome": "error"})),
    )
    .await;
    let v = v2_status(&server, &id).await;
    assert_eq!(
        (v["status"].as_str(), v["url"].clone()),
        (Some("failed"), Value::Null)
    );
    assert!(!v["message"].as_str().unwrap().is_empty(), "{v}");
    let v = v3_status(&server, &id).await;
    assert_eq!(v["status"], "failed");
    assert!(!v["failure_message"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(
        (v["video_url"].clone(), v["duration"].clone()),
        (Value::Null, Value::Null)
    );
}

#[tokio::test]
async fn a_v3_create_with_n_languages_makes_n_readable_jobs() {
    let server = spawn_with(|_| {}).await;
    let languages = ["German (Germany)", "Japanese (Japan)", "French (France)"];
    let r = post_json(
        &client(),
        server.url("/v3/video-translations"),
        &v3_body(&languages, json!({"duration_ms": 1000, "title": "Batch"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let ids: Vec<String> = v["data"]["video_translation_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{v}");
    assert_ne!(ids[0], ids[1]);
    let v = v3_status(&server, &ids[0]).await;
    assert!(
        matches!(v["status"].as_str(), Some("pending" | "running")),
        "{v}"
    );
    for field in ["video_url", "failure_message", "duration", "completed_at"] {
        assert_eq!(v[field], Value::Null, "{field} while running: {v}");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (id, language) in ids.iter().zip(languages) {
        let v = v3_status(&server, id).await;
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["status"], "completed", "{v}");
        assert_eq!(
            (v["output_language"].as_str(), v["title"].as_str()),
            (Some(language), Some("Batch"))
        );
        assert!(
            v["video_url"].as_str().unwrap().starts_with("https://"),
            "{v}"
        );
        assert_eq!(v["failure_message"], Value::Null);
        assert_eq!(v["duration"], 1.0);
        assert!(v["completed_at"].as_u64().unwrap() >= v["created_at"].as_u64().unwrap());
        // One store, one id space: every dialect reads every job.
        assert_eq!(status_json(&server, id).await["result"], "completed");
        assert_eq!(v2_status(&server, id).await["status"], "success");
    }
    let v1 = create(&server, json!({"duration_ms": 0, "outcome": "error"})).await;
    let v = v2_status(&server, &v1).await;
    assert_eq!(
        (v["status"].as_str(), v["title"].clone()),
        (Some("failed"), Value::Null)
    );
    let text = server.state().render_metrics();
    assert!(
        sample(&text, "sim_jobs_created_total").unwrap() >= 5.0,
        "{text}"
    );
}

#[tokio::test]
async fn bad_bodies_are_refused_in_the_documented_shapes() {
    let server = spawn_with(|s| s.heygen.max_title_len = 8).await;
    let c = client();
    let eleven: Vec<String> = (0..11).map(|i| format!("L{i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    let v3 = [
        json!({}),
        v3_body(&[], json!({})),
        v3_body(&eleven, json!({})),
        json!({"video": {"type": "url"}, "output_languages": ["German"]}),
        json!({"video": {"type": "file", "url": VIDEO}, "output_languages": ["German"]}),
        v3_body(&["German"], json!({"title": "far too long"})),
        v3_body(&[""], json!({})),
        v3_body(&["German"], json!({"callback_url": "http://10.0.0.1/hook"})),
        v3_body(&["German"], json!({"duration_ms": "soon"})),
        json!({"video": {"type": "url", "url": "ftp://x/y"}, "output_languages": ["German"]}),
    ];
    for body in v3 {
        let r = post_json(&c, server.url("/v3/video-translations"), &body).await;
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        let code = v["error"]["code"].as_str().unwrap();
        assert!(
            ["invalid_parameter", "callback_not_allowed"].contains(&code),
            "{body}: {v}"
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let v2 = [
        json!({"output_language": "German"}),
        json!({"video_url": "not a url", "output_language": "German"}),
        v2_body(json!({"callback_id": "x".repeat(300)})),
        v2_body(json!({"hang": true, "duration_ms": 5})),
    ];
    for body in v2 {
        let r = post_json(&c, server.url("/v2/video_translate"), &body).await;
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["code"].is_string(), "{v}");
        assert_eq!(v["data"], Value::Null, "v2's envelope: {v}");
        assert!(v.as_object().unwrap().contains_key("data"), "{v}");
    }
    let r = c
        .post(server.url("/v2/video_translate"))
        .header("content-type", "application/json")
        .body("{\"video_url\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(server.url("/v3/video-translations"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(error_code(r).await, "unsupported_media_type");
    // Unknown ids: 404, with v2's envelope on v2.
    let r = c
        .get(server.url("/v2/video_translate/j-nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["data"].clone()),
        (Some("not_found"), Value::Null)
    );
    let r = c
        .get(server.url("/v3/video-translations/j-nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "not_found");
    // HeyGen's other options are accepted and ignored.
    v2_create(
        &server,
        v2_body(json!({"mode": "precision", "speaker_num": 2, "translate_audio_only": false})),
    )
    .await;
}

#[tokio::test]
async fn at_the_concurrency_limit_creates_get_429_until_jobs_end() {
    let server = spawn_with(|s| s.heygen.max_concurrent_jobs = 3).await;
    let c = client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(v2_create(&server, v2_body(json!({"duration_ms": 1500}))).await);
    }
    let started = tokio::time::Instant::now();
    let r = post_json(&c, server.url("/v2/video_translate"), &v2_body(json!({}))).await;
    assert_eq!(r.status(), 429);
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let ms: u64 = r.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&secs), "until the first job ends: {secs}");
    assert!((500..=1500).contains(&ms), "{ms}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["data"].clone()),
        (Some("rate_limit_exceeded"), Value::Null)
    );
    let r = post_json(
        &c,
        server.url("/v3/video-translations"),
        &v3_body(&["German"], json!({})),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(error_code(r).await, "rate_limit_exceeded");
    // Neither v1 nor another client is limited by it.
    create(&server, json!({"duration_ms": 0})).await;
    let other = client_from("127.0.0.2");
    let r = post_json(
        &other,
        server.url("/v2/video_translate"),
        &v2_body(json!({"duration_ms": 0})),
    )
    .await;
    assert_eq!(r.status(), 200);
    // A canceled job frees its slot at once.
    let r = c
        .post(server.url(&format!("/v1/jobs/{}/cancel", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    v2_create(&server, v2_body(json!({"duration_ms": 1500}))).await;
    let r = post_json(&c, server.url("/v2/video_translate"), &v2_body(json!({}))).await;
    assert_eq!(r.status(), 429);
    // Once the jobs end by the clock, nothing is held: the whole share comes back.
    at(started, 1600).await;
    let r = post_json(
        &c,
        server.url("/v3/video-translations"),
        &v3_body(&["A", "B"], json!({"duration_ms": 10})),
    )
    .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // More languages than may ever run at once is refused as a bad request, not throttled.
    let r = post_json(
        &c,
        server.url("/v3/video-translations"),
        &v3_body(&["A", "B", "C", "D"], json!({})),
    )
    .await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn an_api_key_is_one_account_and_guards_every_heygen_route() {
    let server = spawn_with(|s| {
        s.auth.api_key = Some("k3y".into());
        s.heygen.max_concurrent_jobs = 1;
    })
    .await;
    let r = post_json(
        &client(),
        server.url("/v2/video_translate"),
        &v2_body(json!({})),
    )
    .await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["data"].clone()),
        (Some("unauthorized"), Value::Null)
    );
    let r = client()
        .get(server.url("/v3/video-translations/j-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "unauthorized");
    let r = client()
        .post(server.url("/v2/video_translate"))
        .header("x-api-key", "k3y")
        .json(&v2_body(json!({"duration_ms": 5000})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["data"]["video_translate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another address with the same key is the same account: its share is taken.
    let r = client_from("127.0.0.2")
        .post(server.url("/v3/video-translations"))
        .header("x-api-key", "k3y")
        .json(&v3_body(&["German"], json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = client()
        .get(server.url(&format!("/v2/video_translate/{id}")))
        .header("x-api-key", "k3y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let server = spawn_with(|s| s.legacy.delay = Duration::from_secs(3600)).await;
    let c = client();
    let send = |path: &'static str, key: &str, body: &Value| {
        c.post(server.url(path))
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    for (path, body) in [
        ("/v2/video_translate", v2_body(json!({"duration_ms": 100}))),
        (
            "/v3/video-translations",
            v3_body(&["A", "B"], json!({"duration_ms": 100})),
        ),
        ("/v1/jobs", json!({"duration_ms": 100})),
    ] {
        let before = server.state().job_count();
        let first = send(path, "order-42:try.1", &body).await.unwrap();
        let status = first.status();
        assert!(status.is_success(), "{path}: {status}");
        let location = first.headers().get("location").cloned();
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first_body = first.bytes().await.unwrap();
        let created = server.state().job_count() - before;
        let again = send(path, "order-42:try.1", &body).await.unwrap();
        assert_eq!(again.status(), status, "{path}");
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers().get("location"), location.as_ref());
        assert_eq!(
            again.bytes().await.unwrap(),
            first_body,
            "{path}: the same body"
        );
        assert_eq!(
            server.state().job_count() - before,
            created,
            "{path}: nothing new"
        );
        // Another body with the same key.
        let r = send(path, "order-42:try.1", &json!({"duration_ms": 7}))
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "idempotency_key_reused", "{v}");
        // Another client with the same key is another key.
        let r = client_from("127.0.0.2")
            .post(server.url(path))
            .header("idempotency-key", "order-42:try.1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("idempotent-replayed").is_none(), "{path}");
        assert_ne!(r.bytes().await.unwrap(), first_body);
    }
    for bad in [
        "k".repeat(256),
        "has space".into(),
        "sl/ash".into(),
        "é".into(),
    ] {
        let r = c
            .post(server.url("/v2/video_translate"))
            .header("idempotency-key", bad.as_bytes())
            .json(&v2_body(json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (v["error"]["code"].as_str(), v["data"].clone()),
            (Some("invalid_idempotency_key"), Value::Null)
        );
    }
    // A refused create leaves no trace: its retry is decided afresh.
    let r = send(
        "/v3/video-translations",
        "retry-me",
        &v3_body(&[], json!({})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = send(
        "/v3/video-translations",
        "retry-me",
        &v3_body(&["A"], json!({})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
}

/// Reads one HTTP/1.1 answer with a `Content-Length` from `stream`: `(status, body)`.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                return (status, buf[end + 4..end + 4 + len].to_vec());
            }
        }
    }
}

#[tokio::test]
async fn a_repeat_while_the_first_is_still_being_received_gets_409() {
    let server = spawn_with(|_| {}).await;
    let body = v2_body(json!({"duration_ms": 100})).to_string();
    let (head_part, rest) = body.split_at(body.len() / 2);
    let mut slow = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let head = format!(
        "POST /v2/video_translate HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nidempotency-key: slow-1\r\n\r\n{head_part}",
        server.addr(),
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let send = || {
        client()
            .post(server.url("/v2/video_translate"))
            .header("idempotency-key", "slow-1")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    // The first request is in flight as soon as its head is in (give the server a moment to
    // read it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["data"].clone()),
        (Some("request_in_progress"), Value::Null)
    );
    slow.write_all(rest.as_bytes()).await.unwrap();
    let (status, first) = read_answer(&mut slow).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    let r = send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.bytes().await.unwrap(), first);
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = Router::new().route(
        "/hook",
        post({
            let got = Arc::clone(&got);
            move |headers: HeaderMap, body: Bytes| async move {
                got.lock().unwrap().push((headers, body));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
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
async fn webhooks_speak_heygen_and_are_signed_with_hex_hmac() {
    let secret = "endpoint-secret";
    let server = spawn_with(|s| {
        s.heygen.webhook_secret = secret.into();
        s.heygen.signature_header = "x-heygen-signature".into();
    })
    .await;
    let (hook, got) = receiver().await;
    let ok = v2_create(
        &server,
        v2_body(json!({"duration_ms": 50, "callback_url": hook, "callback_id": "cb-1"})),
    )
    .await;
    let failed = v2_create(
        &server,
        v2_body(json!({"duration_ms": 50, "outcome": "error", "callback_url": hook})),
    )
    .await;
    let r = post_json(
        &client(),
        server.url("/v3/video-translations"),
        &v3_body(
            &["Korean"],
            json!({"duration_ms": 60_000, "callback_url": hook, "callback_id": "cb-3"}),
        ),
    )
    .await;
    let canceled = r.json::<Value>().await.unwrap()["data"]["video_translation_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let r = client()
        .post(server.url(&format!("/v1/jobs/{canceled}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..200 {
        if got.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "one delivery per job");
    let mut events = std::collections::HashMap::new();
    for (headers, body) in &got {
        let sig = headers["x-heygen-signature"].to_str().unwrap();
        assert_eq!(
            sig,
            hex_hmac(secret, body),
            "hex HMAC-SHA256 of the raw body"
        );
        assert_ne!(sig, hex_hmac("another-secret", body));
        assert!(
            headers.get("webhook-signature").is_none(),
            "not Standard Webhooks"
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        let id = v["event_data"]["video_translate_id"]
            .as_str()
            .unwrap()
            .to_owned();
        events.insert(id, v);
    }
    let v = &events[&ok];
    assert_eq!(v["event_type"], "video_translate.success");
    let data = v["event_data"].as_object().unwrap();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "callback_id",
            "output_language",
            "url",
            "video_translate_id"
        ]
    );
    assert_eq!(
        (
            data["callback_id"].as_str(),
            data["output_language"].as_str()
        ),
        (Some("cb-1"), Some("Spanish (Spain)"))
    );
    assert!(data["url"].as_str().unwrap().contains(&ok));
    let v = &events[&failed];
    assert_eq!(v["event_type"], "video_translate.fail");
    assert_eq!(v["event_data"]["callback_id"], Value::Null);
    assert!(!v["event_data"]["message"].as_str().unwrap().is_empty());
    assert!(v["event_data"].get("url").is_none());
    let v = &events[&canceled];
    assert_eq!(v["event_type"], "video_translate.fail");
    assert_eq!(
        (
            v["event_data"]["message"].as_str(),
            v["event_data"]["callback_id"].as_str()
        ),
        (Some("canceled"), Some("cb-3"))
    );
    assert_eq!(
        v3_status(&server, &canceled).await["failure_message"],
        "canceled"
    );
}
