//! Hostile input: absurd durations, oversized declared bodies, re-created jobs, wrong methods,
//! undecodable paths, and connections that are idle, half-sent or too many.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use translation_sim::{Faults, OutageWindow, RunningServer};

use crate::common::{client, error_code, sample, spawn_with};

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

// ---- connections: timed out when idle or half-sent, capped, drained at shutdown ----

/// Waits (at most `within`) until the server closes `stream`; returns how long that took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// A gauge or counter of the server's own metrics (0 when absent).
fn metric(server: &RunningServer, series: &str) -> f64 {
    sample(&server.state().render_metrics(), series).unwrap_or(0.0)
}

/// Polls `series` until it equals `want`, for at most 10 s.
async fn wait_for_metric(server: &RunningServer, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(server, series) != want {
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {} (want {want})",
            metric(server, series)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that opens a fresh connection per request (none is pooled, so none is idle).
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_half_sent_head_is_cut_after_header_read_timeout() {
    let server = spawn_with(|s| {
        s.server.header_read_timeout = Duration::from_millis(500);
        s.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    // Half a request line, then nothing.
    let mut stalled = TcpStream::connect(server.addr()).await.unwrap();
    stalled.write_all(b"GET /stat").await.unwrap();
    // A byte every 100 ms: trickling does not extend the deadline.
    let mut trickle = TcpStream::connect(server.addr()).await.unwrap();
    let trickled = async {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        for byte in b"GET /status HTTP/1.1\r\nx-slow: ".iter().cycle().take(200) {
            tokio::select! {
                read = trickle.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if trickle.write_all(&[*byte]).await.is_err() { break }
                }
            }
        }
        started.elapsed()
    };
    let (stalled_after, trickled_after) = tokio::join!(
        closed_within(&mut stalled, Duration::from_secs(8)),
        trickled
    );
    let stalled_after = stalled_after.expect("a stalled head is cut");
    for took in [stalled_after, trickled_after] {
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(5),
            "cut after header_read_timeout (500 ms), long before idle_timeout: {took:?}"
        );
    }
    assert_eq!(
        metric(
            &server,
            "sim_connections_closed_total{reason=\"header_timeout\"}"
        ),
        2.0
    );
    // Whole requests are unaffected.
    let r = fresh_client()
        .get(server.url("/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn idle_connections_are_closed_but_held_requests_are_not_idle() {
    let server = spawn_with(|s| {
        s.server.idle_timeout = Duration::from_millis(500);
        s.server.header_read_timeout = Duration::from_secs(10);
        s.sse.progress_interval = Duration::ZERO;
    })
    .await;
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    // A keep-alive connection after one answered request.
    let mut kept = TcpStream::connect(server.addr()).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: sim\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = kept.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    let (silent_after, kept_after) = tokio::join!(
        closed_within(&mut silent, Duration::from_secs(8)),
        closed_within(&mut kept, Duration::from_secs(8)),
    );
    for took in [silent_after, kept_after] {
        let took = took.expect("an idle connection is closed");
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
    assert_eq!(
        metric(
            &server,
            "sim_connections_closed_total{reason=\"idle_timeout\"}"
        ),
        2.0
    );

    // A long-poll held four times the idle timeout is answered, not cut.
    let job = crate::common::create(&server, json!({"duration_ms": 60_000})).await;
    let started = Instant::now();
    let r = client()
        .get(server.url(&format!("/v1/jobs/{job}/status")))
        .header("prefer", "wait=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["preference-applied"], "wait=2");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    // An SSE stream silent for three idle timeouts still delivers its terminal event.
    let job = crate::common::create(&server, json!({"duration_ms": 1500})).await;
    let r = client()
        .get(server.url(&format!("/v1/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"result\":\"completed\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_new_connection_displaces_the_longest_idle_one() {
    let server = spawn_with(|s| {
        s.server.max_connections = 50;
        s.server.reserve_connections = 4;
        s.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let main = "sim_connections_open{pool=\"main\"}";
    let mut oldest = TcpStream::connect(server.addr()).await.unwrap();
    wait_for_metric(&server, main, 1.0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut held = Vec::new();
    for _ in 0..49 {
        held.push(TcpStream::connect(server.addr()).await.unwrap());
    }
    wait_for_metric(&server, main, 50.0).await;

    // Full of idle connections, the server still serves everyone new, at once; each newcomer
    // (kept open) takes the place of the longest-idle connection.
    let started = Instant::now();
    for _ in 0..5 {
        let mut newcomer = TcpStream::connect(server.addr()).await.unwrap();
        newcomer
            .write_all(b"GET /status HTTP/1.1\r\nhost: sim\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 512];
        let n = newcomer.read(&mut head).await.unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
        held.push(newcomer);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closed_within(&mut oldest, Duration::from_secs(2))
            .await
            .is_some(),
        "the longest-idle connection made room"
    );
    assert_eq!(
        metric(
            &server,
            "sim_connections_closed_total{reason=\"displaced\"}"
        ),
        5.0
    );
    let mut newest = held.pop().unwrap();
    assert!(
        closed_within(&mut newest, Duration::from_millis(300))
            .await
            .is_none(),
        "the most recently idle stay open"
    );
    assert_eq!(
        metric(&server, "sim_connections_open{pool=\"reserve\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_connection_busy_healthz_answers_and_the_rest_is_refused_at_once() {
    let server = spawn_with(|s| {
        s.server.max_connections = 50;
        s.server.reserve_connections = 4;
        s.server.header_read_timeout = Duration::from_secs(6);
    })
    .await;
    let main = "sim_connections_open{pool=\"main\"}";
    let reserve = "sim_connections_open{pool=\"reserve\"}";
    // 50 long-polls held 5 s fill every main slot with requests in flight.
    let job = crate::common::create(&server, json!({"duration_ms": 60_000})).await;
    let url = server.url(&format!("/v1/jobs/{job}/status"));
    let polling = client();
    let mut polls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        polls.spawn(polling.get(&url).header("prefer", "wait=5").send());
    }
    wait_for_metric(&server, "sim_longpoll_waiters", 50.0).await;
    wait_for_metric(&server, main, 50.0).await;

    // /healthz still answers, the API says why it does not, both at once.
    let c = fresh_client();
    let started = Instant::now();
    let r = c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = c.get(server.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_code(r).await, "too_many_connections");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    wait_for_metric(&server, reserve, 0.0).await;

    // With the reserve full too, a new connection is closed as soon as it is accepted.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr()).await.unwrap());
    }
    wait_for_metric(&server, reserve, 4.0).await;
    let mut refused = TcpStream::connect(server.addr()).await.unwrap();
    let took = closed_within(&mut refused, Duration::from_secs(2))
        .await
        .expect("closed at once");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(metric(&server, "sim_connections_closed_total{reason=\"refused\"}") >= 1.0);

    // The held requests were served all along, and once they end everything answers again.
    while let Some(r) = polls.join_next().await {
        assert_eq!(r.unwrap().unwrap().status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Refused (closed at once) while the reserve is full, 503 while only the main pool is.
        let status = c
            .get(server.url("/status"))
            .send()
            .await
            .map(|r| r.status());
        if matches!(status, Ok(s) if s == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for mut stream in held {
        assert!(
            closed_within(&mut stream, Duration::from_secs(10))
                .await
                .is_some()
        );
    }
}

/// Files this process may still open (soft limit minus open ones), from `/proc`.
fn file_headroom() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(soft.saturating_sub(open))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_are_reaped_while_healthz_answers() {
    // The test holds both ends of each connection: two files apiece, and room for the tests
    // running beside it.
    let n = file_headroom().map_or(1000, |room| (room / 4).min(3000));
    assert!(n >= 500, "too few files to test with: {n}");
    // Long enough for a loaded machine to open them all before the first is reaped.
    let idle = Duration::from_secs(3);
    let server = spawn_with(|s| {
        s.server.max_connections = 10_000;
        s.server.idle_timeout = idle;
    })
    .await;
    let addr = server.addr();
    let open = "sim_connections_open{pool=\"main\"}";

    // /healthz every 50 ms on its own keep-alive connection, for the whole test.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn({
        let url = server.url("/healthz");
        async move {
            let c = client();
            let mut worst = Duration::ZERO;
            let mut answers = 0;
            loop {
                let t = Instant::now();
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(r.text().await.unwrap(), "ok");
                worst = worst.max(t.elapsed());
                answers += 1;
                tokio::select! {
                    _ = &mut stopped => break (answers, worst),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    });

    // Opened in batches the server accepts before the next: a connect that completes in the
    // kernel's backlog but is never accepted is not the server's to close.
    let accepted = || {
        metric(&server, open)
            + metric(
                &server,
                "sim_connections_closed_total{reason=\"idle_timeout\"}",
            )
    };
    let already = accepted(); // the health checker's connection, if it is up yet
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let mut connecting = tokio::task::JoinSet::new();
        for _ in 0..(n - streams.len()).min(500) {
            connecting.spawn(async move {
                // Taken before connecting, so it is earlier than the server's accept.
                let opened_at = Instant::now();
                let stream = TcpStream::connect(addr).await.unwrap();
                (stream, opened_at)
            });
        }
        while let Some(opened) = connecting.join_next().await {
            streams.push(opened.unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while accepted() - already < streams.len() as f64 {
            assert!(Instant::now() < deadline, "the server stopped accepting");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let opened = started.elapsed();
    // Every connection closes by itself, each no sooner than idle_timeout after it opened.
    let mut closing = tokio::task::JoinSet::new();
    for (mut stream, opened_at) in streams {
        closing.spawn(async move {
            closed_within(&mut stream, Duration::from_secs(20))
                .await
                .map(|_| opened_at.elapsed())
        });
    }
    // Meanwhile: how many the server held at once.
    let mut peak: f64 = 0.0;
    while !closing.is_empty() && started.elapsed() < opened + idle {
        peak = peak.max(metric(&server, open));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut shortest, mut longest) = (Duration::MAX, Duration::ZERO);
    while let Some(lived) = closing.join_next().await {
        let lived = lived.unwrap().expect("every idle connection is closed");
        shortest = shortest.min(lived);
        longest = longest.max(lived);
    }
    let reaped = started.elapsed();
    assert!(
        shortest >= idle - Duration::from_millis(10),
        "none closed before idle_timeout: {shortest:?}"
    );
    assert!(longest < idle + Duration::from_secs(10), "{longest:?}");
    assert!(peak >= n as f64 / 2.0, "held {peak} of {n} at once");
    let _ = stop.send(());
    let (answers, worst) = health.await.unwrap();
    assert!(answers >= 20, "{answers}");
    assert!(worst < Duration::from_secs(2), "/healthz took {worst:?}");
    wait_for_metric(&server, open, 0.0).await; // the health checker's went with it
    assert!(
        metric(
            &server,
            "sim_connections_closed_total{reason=\"idle_timeout\"}"
        ) >= n as f64
    );
    eprintln!(
        "{n} idle connections opened in {opened:?}, {peak} held at once; closed {shortest:?} \
         to {longest:?} after opening (idle_timeout {idle:?}), all within {reaped:?}; \
         /healthz answered {answers} times meanwhile, slowest {worst:?}"
    );
}

#[tokio::test]
async fn shutdown_drains_idle_half_sent_and_held_connections_promptly() {
    let server = spawn_with(|s| {
        s.server.request_timeout = Duration::from_secs(3);
        s.longpoll.max_wait = Duration::from_secs(2);
        s.server.header_read_timeout = Duration::from_secs(30);
        s.server.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let job = crate::common::create(&server, json!({"duration_ms": 60_000})).await;
    let mut idle = TcpStream::connect(server.addr()).await.unwrap();
    let mut half = TcpStream::connect(server.addr()).await.unwrap();
    half.write_all(b"GET /status HTTP/1.1\r\nhost: s")
        .await
        .unwrap();
    let held = tokio::spawn(
        client()
            .get(server.url(&format!("/v1/jobs/{job}/status")))
            .header("prefer", "wait=2")
            .send(),
    );
    let stream = client()
        .get(server.url(&format!("/v1/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown finishes within request_timeout");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(
        closed_within(&mut idle, Duration::from_secs(1))
            .await
            .is_some()
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(1))
            .await
            .is_some()
    );
    let r = held.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the held long-poll is answered");
    let text = tokio::time::timeout(Duration::from_secs(2), stream.text())
        .await
        .expect("the stream ends")
        .unwrap_or_default();
    assert!(text.contains("pending"), "{text}");
}
