//! Hostile input: absurd durations, oversized declared bodies, re-created jobs, wrong methods
//! and undecodable paths.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use translation_sim::{Faults, OutageWindow, RunningServer};

use crate::common::{client, error_code, spawn_with};

const TOKEN: &str = "hardening-admin-token";

/// Writes `request` on a fresh connection and reads until the server closes it, for at most
/// `within`. Returns what was read and whether the server closed the connection in time.
async fn raw_exchange(server: &RunningServer, request: &[u8], within: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// The JSON body of a raw HTTP/1.1 answer (after the blank line).
fn raw_body(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"))
}

// ---- durations: validated, and saturating wherever they are added ----

#[tokio::test]
async fn absurd_fault_durations_are_refused_naming_the_key() {
    let server = spawn_with(|s| s.auth.admin_token = Some(TOKEN.into())).await;
    let before = server.state().faults();
    let c = client();
    let huge = "18446744073709551615s";
    let table = [
        (
            json!({"outages": [{"start": "1s", "duration": huge}]}),
            "faults.outages",
        ),
        (
            json!({"outages": [{"start": huge, "duration": "1s"}]}),
            "faults.outages",
        ),
        (json!({"latency": huge}), "faults.latency"),
        (
            json!({"latency": "1s", "slow_tail_probability": 1.0, "slow_tail_delay": huge}),
            "faults.slow_tail_delay",
        ),
        (
            json!({"throttle_rate": 1.0, "throttle_retry_after": huge}),
            "faults.throttle_retry_after",
        ),
    ];
    for (body, key) in table {
        let r = c
            .put(server.url("/admin/faults"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_faults", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(key), "{body}: {message}");
    }
    let r = c
        .post(server.url("/admin/outage"))
        .bearer_auth(TOKEN)
        .json(&json!({"duration_ms": u64::MAX}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duration_ms"),
        "{v}"
    );
    // Nothing was taken in: the job API answers normally.
    let r = c.get(server.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.state().faults(), before);
}

#[tokio::test]
async fn absurd_configured_durations_name_their_key_before_binding() {
    type Tweak = fn(&mut translation_sim::Settings);
    let table: [(&str, Tweak); 8] = [
        ("legacy.delay", |s| s.legacy.delay = Duration::MAX),
        ("jobs.ttl", |s| s.jobs.ttl = Duration::MAX),
        ("jobs.max_duration", |s| s.jobs.max_duration = Duration::MAX),
        ("jobs.duration.max", |s| s.jobs.duration.max = Duration::MAX),
        ("sse.keepalive", |s| s.sse.keepalive = Duration::MAX),
        ("server.request_timeout", |s| {
            s.server.request_timeout = Duration::MAX
        }),
        ("faults.latency", |s| s.faults.latency = Duration::MAX),
        ("faults.outages", |s| {
            s.faults.outages = vec![OutageWindow {
                start: Duration::from_secs(1),
                duration: Duration::MAX,
            }]
        }),
    ];
    for (key, tweak) in table {
        let mut settings = translation_sim::Settings::default();
        settings.server.bind = "127.0.0.1:0".parse().unwrap();
        tweak(&mut settings);
        let e = translation_sim::spawn(settings)
            .await
            .map(|_| ())
            .expect_err(key)
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[tokio::test]
async fn extreme_durations_from_the_library_api_never_panic() {
    let server = spawn_with(|s| s.sse.progress_interval = Duration::from_millis(50)).await;
    let c = client();
    // A legacy job that practically never ends: every channel answers "pending".
    server
        .state()
        .reset_legacy(Some(Duration::MAX), None)
        .unwrap();
    let r = c.get(server.url("/status")).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"result": "pending"})
    );
    let r = c
        .get(server.url("/v1/jobs/legacy/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ms: u64 = r.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms > 1_000_000_000_000, "a huge hint stays huge: {ms}");
    assert_eq!(secs, ms.div_ceil(1000), "both headers say the same");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], "pending");
    assert!(v["eta_ms"].as_u64().unwrap() > 1_000_000_000_000, "{v}");
    let started = Instant::now();
    let r = c
        .get(server.url("/v1/jobs/legacy/status"))
        .header("prefer", "wait=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["preference-applied"], "wait=1");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let r = c
        .get(server.url("/v1/jobs/legacy/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: progress") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("events keep coming")
            .expect("the stream stays open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"result\":\"pending\""), "{text}");
    drop(body);

    // An outage that never ends refuses requests instead of panicking.
    server.state().start_outage(Duration::MAX);
    let r = c.get(server.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "outage");
    assert_eq!(
        c.get(server.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn retry_after_headers_say_the_same_delay_at_both_precisions() {
    let server = spawn_with(|_| {}).await;
    let c = client();
    let table = [
        (Duration::ZERO, "0", "0"),
        (Duration::from_micros(300), "1", "1"),
        (Duration::from_millis(1500), "2", "1500"),
        (
            Duration::from_secs(365 * 24 * 3600),
            "31536000",
            "31536000000",
        ),
    ];
    for (after, secs, ms) in table {
        server
            .state()
            .set_faults(Faults {
                throttle_rate: 1.0,
                throttle_retry_after: after,
                ..Faults::default()
            })
            .unwrap();
        let r = c.get(server.url("/status")).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], secs, "{after:?}");
        assert_eq!(r.headers()["retry-after-ms"], ms, "{after:?}");
    }
}

// ---- a declared body over the limit is refused before it is read ----

#[tokio::test]
async fn a_declared_content_length_over_the_limit_is_refused_at_once() {
    let server = spawn_with(|_| {}).await;
    for path in ["/v1/jobs", "/v1/reset", "/admin/faults", "/status"] {
        let method = if path == "/admin/faults" {
            "PUT"
        } else {
            "POST"
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
             content-length: 999999999999\r\n\r\n{{\"dura"
        );
        let started = Instant::now();
        let (answer, closed) =
            raw_exchange(&server, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(closed, "{path}: answered and closed at once: {answer:?}");
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer:?}");
        assert_eq!(
            raw_body(&answer)["error"]["code"],
            "payload_too_large",
            "{path}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // A body within the limit is still read.
    let r = client()
        .post(server.url("/v1/jobs"))
        .json(&json!({"duration_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

// ---- versions never repeat for a re-created job ----

#[tokio::test]
async fn a_reset_legacy_job_never_repeats_an_etag_or_event_id() {
    let server = spawn_with(|s| s.sse.progress_interval = Duration::ZERO).await;
    let c = client();
    let reset = |outcome: &'static str| {
        c.post(server.url("/v1/reset"))
            .json(&json!({"duration_ms": 0, "outcome": outcome}))
            .send()
    };
    let status = server.url("/v1/jobs/legacy/status");
    let events = server.url("/v1/jobs/legacy/events");

    assert_eq!(reset("completed").await.unwrap().status(), 200);
    let r = c.get(&status).send().await.unwrap();
    let first = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.json::<Value>().await.unwrap()["result"], "completed");
    let r = c.get(&events).send().await.unwrap();
    let text = r.text().await.unwrap();
    let first_id = text
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().to_string())
        .expect("the terminal event has an id");

    assert_eq!(reset("error").await.unwrap().status(), 200);
    for stale in [first.as_str(), "W/\"legacy-2\"", "W/\"legacy-1\""] {
        let r = c
            .get(&status)
            .header("if-none-match", stale)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "{stale} belongs to the job before the reset"
        );
        assert_ne!(r.headers()["etag"].to_str().unwrap(), first);
        assert_eq!(r.json::<Value>().await.unwrap()["result"], "error");
    }
    // A client resuming with the old job's last event id gets the new job's state.
    let r = c
        .get(&events)
        .header("last-event-id", &first_id)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"result\":\"error\""), "{text}");
    let second_id = text
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().to_string())
        .unwrap();
    assert_ne!(second_id, first_id);
    // The current tag still gives 304.
    let r = c.get(&status).send().await.unwrap();
    let current = r.headers()["etag"].to_str().unwrap().to_string();
    let r = c
        .get(&status)
        .header("if-none-match", &current)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

// ---- every error the application answers is JSON ----

#[tokio::test]
async fn wrong_methods_undecodable_paths_and_unknown_routes_answer_json() {
    let server = spawn_with(|s| s.auth.admin_token = Some(TOKEN.into())).await;
    let c = client();
    let table: &[(&str, &str, u16, &str)] = &[
        ("DELETE", "/status", 405, "method_not_allowed"),
        ("PUT", "/v1/jobs", 405, "method_not_allowed"),
        ("GET", "/v1/reset", 405, "method_not_allowed"),
        ("POST", "/v1/jobs/j-1/status", 405, "method_not_allowed"),
        ("PATCH", "/v1/jobs/j-1/events", 405, "method_not_allowed"),
        ("DELETE", "/v1/jobs/j-1", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("DELETE", "/metrics", 405, "method_not_allowed"),
        ("DELETE", "/admin/faults", 405, "method_not_allowed"),
        ("GET", "/admin/outage", 405, "method_not_allowed"),
        ("GET", "/v1/jobs/%FF/status", 400, "bad_request"),
        ("GET", "/v1/jobs/%FF%FE/events", 400, "bad_request"),
        ("GET", "/v1/jobs/%C3%28", 400, "bad_request"),
        ("GET", "/status?job=a&job=b", 400, "bad_request"),
        ("GET", "/nowhere", 404, "not_found"),
        ("POST", "/v1/nowhere", 404, "not_found"),
    ];
    for (method, path, status, code) in table {
        let r = c
            .request(method.parse().unwrap(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *status, "{method} {path}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: {content_type}"
        );
        if *status == 405 {
            assert!(
                r.headers().contains_key("allow"),
                "{method} {path}: 405 says what is allowed"
            );
        }
        assert_eq!(error_code(r).await, *code, "{method} {path}");
    }
}

#[tokio::test]
async fn the_admin_bearer_scheme_is_case_insensitive() {
    let server = spawn_with(|s| s.auth.admin_token = Some(TOKEN.into())).await;
    let c = client();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = c
            .get(server.url("/admin/faults"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    for wrong in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        format!("Bearer {TOKEN}x"),
        "bearer".to_string(),
    ] {
        let r = c
            .get(server.url("/admin/faults"))
            .header("authorization", &wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{wrong}");
        assert_eq!(error_code(r).await, "unauthorized");
    }
}
