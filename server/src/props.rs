//! Property tests of everything the simulator reads from a client: the `Prefer`,
//! `If-None-Match`, `Last-Event-ID` and `Idempotency-Key` headers, cursors, the query strings of
//! batched reads and the change routes, the JSON bodies of the job, watch set, HeyGen and admin
//! routes, and the app as a whole — any sequence of requests of any shape gets
//! an answer, every refusal in the documented JSON shape (with `"data": null` on `/v2`), and
//! nothing panics.
//!
//! The app runs in process on a paused clock (held long-polls, injected latency and timeouts
//! advance virtual time, so a case takes microseconds), a fresh state per case. Each property
//! runs a few hundred cases; `PROPTEST_CASES` raises that for a longer run. A failing case is
//! written under `proptest-regressions/` and replayed first on every later run.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::routes::status::{none_match, prefer_wait};
use crate::sim::changes::{Cursor, MAX_CURSOR_LEN};
use crate::{AppState, JobSpec, Outcome, Settings, app};

const ADMIN_TOKEN: &str = "admin-secret";

/// `default` cases, unless `PROPTEST_CASES` asks for another number.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// A header value a client could send: visible ASCII, tabs and obs-text, with the separators
/// and digits the parsers look for over-represented.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"0123456789,;=\"W/ wait*-".to_vec()),
        2 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ];
    prop::collection::vec(byte, 0..40)
        .prop_map(|bytes| HeaderValue::from_bytes(&bytes).unwrap_or(HeaderValue::from_static("")))
}

fn headers_named(names: &'static [&'static str]) -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((prop::sample::select(names), header_value()), 0..6).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), value);
        }
        map
    })
}

/// A JSON value of any shape, with the numbers and strings that break naive code.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::num::f64::ANY.prop_map(Value::from),
        prop::sample::select(vec![
            "0s",
            "1ms",
            "10s",
            "18446744073709551615s",
            "1y",
            "completed",
            "error",
            "http://127.0.0.1:9/hook",
            "http://example.com/hook",
            "https://videos.example/a.mp4",
            "legacy",
            "{done}",
            "url",
            "asset_id",
            "German (Germany)",
            "",
        ])
        .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body for any route: a JSON object with the fields the routes read (and others), or bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let fields = prop::sample::subsequence(
        vec![
            "duration_ms",
            "outcome",
            "callback_url",
            "hang",
            "latency",
            "slow_tail_probability",
            "slow_tail_delay",
            "error_rate",
            "throttle_rate",
            "throttle_retry_after",
            "outages",
            "seed",
            "video_url",
            "output_language",
            "output_languages",
            "video",
            "title",
            "callback_id",
            "jobs",
            "add",
            "remove",
            "other",
        ],
        0..5,
    );
    let object = (fields, prop::collection::vec(json_value(), 5)).prop_map(|(names, values)| {
        let doc: serde_json::Map<String, Value> = names
            .into_iter()
            .zip(values)
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        serde_json::to_vec(&Value::Object(doc)).unwrap()
    });
    prop_oneof![
        2 => object,
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

/// One request of any shape to the simulator's routes.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A cursor as a client might send one in a query: the head, stale ones, and garbage
/// (percent-encoded, as a client must to send it at all).
fn cursor() -> impl Strategy<Value = String> {
    let encoded = |text: String| url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
    prop_oneof![
        prop::sample::select(vec![
            "{head}",
            "{epoch}:0",
            "{epoch}:99999999",
            "1:0",
            "18446744073709551616:0",
            "1:2:3",
            "%FF",
            "",
        ])
        .prop_map(str::to_owned),
        "[0-9:]{0,24}".prop_map(encoded),
        ".{0,12}".prop_map(encoded),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    let id = prop_oneof![
        Just("legacy".to_owned()),
        Just("{done}".to_owned()),
        Just("{watch}".to_owned()),
        Just("%FF".to_owned()),
        "[a-zA-Z0-9%._-]{0,12}",
    ];
    let path = (
        prop::sample::select(vec![
            "/v1/jobs?ids={id}",
            "/v1/jobs?ids={id},{done},legacy",
            "/v1/jobs?ids=",
            "/v1/events",
            "/v1/events?since={cursor}",
            "/v1/events?watch={id}&since={cursor}",
            "/v1/changes",
            "/v1/changes?since={cursor}",
            "/v1/changes?watch={id}&since={cursor}",
            "/v1/watches",
            "/v1/watches/{id}",
            "/status",
            "/status?job={id}",
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/status",
            "/v1/jobs/{id}/events",
            "/v1/jobs/{id}/cancel",
            "/v1/reset",
            "/v2/video_translate",
            "/v2/video_translate/{id}",
            "/v3/video-translations",
            "/v3/video-translations/{id}",
            "/admin/faults",
            "/admin/outage",
            "/healthz",
            "/metrics",
            "/{id}",
        ]),
        id,
        cursor(),
    )
        .prop_map(|(template, id, cursor)| {
            template.replace("{id}", &id).replace("{cursor}", &cursor)
        });
    let method = prop::sample::select(vec![
        Method::GET,
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ]);
    let headers = (
        headers_named(&[
            "prefer",
            "if-none-match",
            "last-event-id",
            "x-api-key",
            "traceparent",
            "idempotency-key",
        ]),
        prop::option::of(prop::sample::select(vec![
            "application/json",
            "application/problem+json",
            "text/plain",
            "Application/JSON; charset=utf-8",
        ])),
        prop::option::of(prop::sample::select(vec![
            "Bearer admin-secret",
            "bearer   admin-secret",
            "Bearer wrong",
            "Basic YTpi",
            "",
        ])),
        // A few valid keys, so that repeats (replays, other bodies) happen.
        prop::option::of(prop::sample::select(vec!["k1", "k2", "order:42.a_b-c"])),
    )
        .prop_map(|(mut headers, content_type, authorization, key)| {
            if let Some(ct) = content_type {
                headers.insert("content-type", HeaderValue::from_static(ct));
            }
            if let Some(auth) = authorization {
                headers.insert("authorization", HeaderValue::from_static(auth));
            }
            if let Some(key) = key {
                headers.insert("idempotency-key", HeaderValue::from_static(key));
            }
            headers
        });
    (method, path, headers, body()).prop_map(|(method, path, headers, body)| Call {
        method,
        path,
        headers,
        body,
    })
}

fn settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.legacy.delay = Duration::from_secs(3);
    settings.longpoll.max_wait = Duration::from_secs(2);
    settings.server.request_timeout = Duration::from_secs(5);
    settings.sse.keepalive = Duration::from_secs(1);
    settings.changes.bookmark_interval = Duration::from_secs(1);
    settings.changes.max_lifetime = Duration::from_secs(5);
    settings.auth.admin_token = Some(ADMIN_TOKEN.to_owned());
    settings.rate_limit.enabled = true;
    settings
}

/// What a call got: the status and, unless it is a stream, the whole body.
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// What a call's placeholders stand for: `{done}` a finished job, `{watch}` the last watch set
/// created in the sequence, `{head}` the change log's head and `{epoch}` its epoch.
fn fill(text: &str, done: &str, watch: &str, state: &AppState) -> String {
    let head = state.inner.store.changes().head();
    text.replace("{done}", done)
        .replace("{watch}", watch)
        .replace("{head}", &head.to_string())
        .replace("{epoch}", &head.epoch.to_string())
}

/// Sends `call` to the app; a stream is read for at most 64 frames (of virtual time).
async fn send(router: &axum::Router, call: &Call, fill: impl Fn(&str) -> String) -> Answer {
    let uri = fill(&call.path);
    let body = match std::str::from_utf8(&call.body) {
        Ok(text) => fill(text).into_bytes(),
        Err(_) => call.body.clone(),
    };
    let mut request = Request::builder()
        .method(call.method.clone())
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    *request.headers_mut() = call.headers.clone();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut frames = response.into_body().into_data_stream().take(64);
    let mut body = Vec::new();
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(bytes) => body.extend_from_slice(&bytes),
            // An injected dropped connection ends the body with an error: that is its point.
            Err(_) => break,
        }
    }
    Answer {
        status,
        content_type,
        body,
    }
}

/// Runs `calls` against a fresh simulator on a paused clock.
fn exercise(
    calls: &[Call],
    check: impl Fn(&Call, &Answer) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = AppState::new(settings()).unwrap();
        let done = state
            .create_job(JobSpec {
                duration: Some(Duration::ZERO),
                outcome: Some(Outcome::Completed),
                ..JobSpec::default()
            })
            .unwrap();
        let router = app(state.clone());
        let mut watch = String::from("w-none");
        for call in calls {
            let answer = send(&router, call, |text| fill(text, &done, &watch, &state)).await;
            check(call, &answer)?;
            if call.path == "/v1/watches" && answer.status == StatusCode::CREATED {
                let created: Value = serde_json::from_slice(&answer.body).unwrap();
                watch = created["id"].as_str().unwrap().to_owned();
            }
        }
        let most_per_call = state.settings().heygen.max_output_languages;
        prop_assert!(state.job_count() <= 2 + calls.len() * most_per_call);
        Ok(())
    })
}

/// Every refusal is `{"error": {"code", "message"}}` with a non-empty code and message.
fn refusal_is_documented_json(call: &Call, answer: &Answer) -> Result<(), TestCaseError> {
    let status = answer.status;
    prop_assert!(
        status != StatusCode::INTERNAL_SERVER_ERROR
            || answer.body.windows(14).any(|w| w == b"injected_error"),
        "an unplanned 500 for {call:?}"
    );
    if status.is_client_error() || status.is_server_error() {
        prop_assert!(
            answer
                .content_type
                .as_deref()
                .is_some_and(|ct| ct.starts_with("application/json")),
            "{status} without JSON for {call:?}: {:?}",
            answer.content_type
        );
        let value: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            TestCaseError::fail(format!("{status} body is not JSON ({e}) for {call:?}"))
        })?;
        let code = value["error"]["code"].as_str().unwrap_or("");
        let message = value["error"]["message"].as_str().unwrap_or("");
        prop_assert!(
            !code.is_empty() && !message.is_empty(),
            "{value} for {call:?}"
        );
        if call.path.starts_with("/v2/") {
            prop_assert!(
                value.get("data") == Some(&Value::Null),
                "a v2 refusal without \"data\": null: {value} for {call:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    // Each case starts a simulator: fewer cases, each a sequence of requests.
    #![proptest_config(cases(128))]

    #[test]
    fn any_sequence_of_requests_is_answered_in_the_documented_shape(
        calls in prop::collection::vec(call(), 1..6),
    ) {
        exercise(&calls, refusal_is_documented_json)?;
    }
}

proptest! {
    #[test]
    fn a_cursor_of_any_text_parses_or_is_refused_and_reads_back_as_written(
        text in ".{0,48}",
        digits in "[0-9:]{0,48}",
        epoch in any::<u64>(),
        offset in any::<u64>(),
    ) {
        for text in [&text, &digits] {
            if let Ok(cursor) = text.parse::<Cursor>() {
                prop_assert!(text.len() <= MAX_CURSOR_LEN);
                prop_assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
            }
        }
        let cursor = Cursor::new(epoch, offset);
        prop_assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
    }

    #[test]
    fn prefer_of_any_value_never_panics_and_reads_its_wait(
        headers in headers_named(&["prefer"]),
        secs in any::<u64>(),
        other in "[a-z]{1,8}",
    ) {
        let _ = prefer_wait(&headers);
        let mut headers = HeaderMap::new();
        let value = format!("respond-async, {other}=1; wait={secs}");
        headers.insert("prefer", HeaderValue::from_str(&value).unwrap());
        let expected = (other != "wait").then(|| Duration::from_secs(secs));
        if let Some(expected) = expected {
            prop_assert_eq!(prefer_wait(&headers), Some(expected));
        }
    }

    #[test]
    fn if_none_match_of_any_value_never_panics_and_matches_its_tag(
        headers in headers_named(&["if-none-match"]),
        id in "[a-z0-9-]{1,12}",
        version in any::<u64>(),
        weak in any::<bool>(),
    ) {
        let etag = format!("W/\"{id}-{version}\"");
        let _ = none_match(&headers, &etag);
        let sent = if weak { etag.clone() } else { etag.trim_start_matches("W/").to_owned() };
        let mut headers = HeaderMap::new();
        headers.insert("if-none-match", HeaderValue::from_str(&format!("\"x\", {sent}")).unwrap());
        prop_assert!(none_match(&headers, &etag));
        let other = format!("W/\"{id}-{}\"", version.wrapping_add(1));
        prop_assert!(!none_match(&headers, &other));
    }
}

proptest! {
    // Each case starts a simulator: fewer cases, each a whole exchange.
    #![proptest_config(cases(64))]

    #[test]
    fn any_fault_settings_are_refused_or_served_without_a_panic(doc in body()) {
        let faults = Call {
            method: Method::PUT,
            path: "/admin/faults".into(),
            headers: admin_json_headers(),
            body: doc,
        };
        let read = Call {
            method: Method::GET,
            path: "/v1/jobs/{done}/status".into(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        };
        exercise(&[faults, read], |call, answer| {
            refusal_is_documented_json(call, answer)?;
            if call.method == Method::PUT {
                prop_assert!(
                    [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY]
                        .contains(&answer.status),
                    "{} for {:?}", answer.status, String::from_utf8_lossy(&call.body)
                );
            }
            Ok(())
        })?;
    }

    #[test]
    fn any_job_body_creates_a_job_or_is_refused_as_documented(doc in body(), reset in any::<bool>()) {
        let path = if reset { "/v1/reset" } else { "/v1/jobs" };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let create = Call { method: Method::POST, path: path.into(), headers, body: doc };
        exercise(&[create], |call, answer| {
            refusal_is_documented_json(call, answer)?;
            let allowed = [
                StatusCode::OK,
                StatusCode::CREATED,
                StatusCode::BAD_REQUEST,
                StatusCode::UNPROCESSABLE_ENTITY,
            ];
            prop_assert!(allowed.contains(&answer.status), "{} for {:?}", answer.status, String::from_utf8_lossy(&call.body));
            Ok(())
        })?;
    }
}

/// A watch set body: lists of ids (some real, some not), or anything else.
fn watch_body() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        Just(Value::from("{done}")),
        Just(Value::from("legacy")),
        ".{0,70}".prop_map(Value::from),
        json_value(),
    ];
    let ids = prop::collection::vec(id, 0..6).prop_map(Value::Array);
    let doc = prop::collection::btree_map(
        prop::sample::select(vec!["jobs", "add", "remove", "other"]),
        prop_oneof![3 => ids, 1 => json_value()],
        0..3,
    )
    .prop_map(|m| {
        serde_json::to_vec(&Value::Object(
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ))
        .unwrap()
    });
    prop_oneof![4 => doc, 1 => body()]
}

proptest! {
    // Each case starts a simulator: fewer cases, each a whole exchange.
    #![proptest_config(cases(64))]

    #[test]
    fn any_watch_body_makes_or_changes_a_set_or_is_refused_as_documented(
        create in watch_body(),
        change in watch_body(),
    ) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let calls = [
            Call { method: Method::POST, path: "/v1/watches".into(), headers: headers.clone(), body: create },
            Call { method: Method::PATCH, path: "/v1/watches/{watch}".into(), headers, body: change },
            Call { method: Method::GET, path: "/v1/events?watch={watch}".into(), headers: HeaderMap::new(), body: Vec::new() },
        ];
        exercise(&calls, |call, answer| {
            refusal_is_documented_json(call, answer)?;
            let allowed = [
                StatusCode::OK,
                StatusCode::CREATED,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::UNPROCESSABLE_ENTITY,
            ];
            prop_assert!(allowed.contains(&answer.status), "{} for {:?}", answer.status, String::from_utf8_lossy(&call.body));
            Ok(())
        })?;
    }

    #[test]
    fn any_cursor_on_the_change_routes_is_followed_reset_or_refused_as_documented(
        since in cursor(),
        last in header_value(),
        stream in any::<bool>(),
    ) {
        let route = if stream { "/v1/events" } else { "/v1/changes" };
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", last);
        let call = Call { method: Method::GET, path: format!("{route}?since={since}"), headers, body: Vec::new() };
        exercise(&[call], |call, answer| {
            refusal_is_documented_json(call, answer)?;
            prop_assert!(
                [StatusCode::OK, StatusCode::BAD_REQUEST].contains(&answer.status),
                "{} for {:?}", answer.status, call
            );
            if answer.status == StatusCode::BAD_REQUEST {
                let v: Value = serde_json::from_slice(&answer.body).unwrap();
                prop_assert!(["invalid_cursor", "bad_request"].contains(&v["error"]["code"].as_str().unwrap_or("")), "{v}");
            }
            Ok(())
        })?;
    }
}

/// A HeyGen create body: mostly the right shape, with every field sometimes wrong.
fn heygen_body() -> impl Strategy<Value = Vec<u8>> {
    let video = prop_oneof![
        Just(json!({"type": "url", "url": "https://videos.example/a.mp4"})),
        Just(json!({"type": "asset_id", "asset_id": "asset-1"})),
        json_value(),
    ];
    let language = prop_oneof![
        4 => Just(Value::from("German (Germany)")),
        1 => ".{0,80}".prop_map(Value::from),
        1 => json_value(),
    ];
    let languages = prop::collection::vec(language.clone(), 0..13);
    let extras = prop::collection::btree_map(
        prop::sample::select(vec![
            "title",
            "callback_id",
            "callback_url",
            "duration_ms",
            "outcome",
            "hang",
            "mode",
            "speaker_num",
        ]),
        json_value(),
        0..4,
    );
    (video, language, languages, extras, any::<bool>()).prop_map(
        |(video, language, languages, extras, v3)| {
            let mut doc = serde_json::Map::new();
            if v3 {
                doc.insert("video".into(), video);
                doc.insert("output_languages".into(), Value::Array(languages));
            } else {
                doc.insert(
                    "video_url".into(),
                    Value::from("https://videos.example/a.mp4"),
                );
                doc.insert("output_language".into(), language);
            }
            for (k, v) in extras {
                doc.insert(k.into(), v);
            }
            serde_json::to_vec(&Value::Object(doc)).unwrap()
        },
    )
}

fn admin_json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")).unwrap(),
    );
    headers
}

proptest! {
    // Each case starts a simulator: fewer cases, each a whole exchange.
    #![proptest_config(cases(64))]

    #[test]
    fn any_heygen_body_creates_jobs_or_is_refused_as_documented(
        doc in heygen_body(),
        v3 in any::<bool>(),
        repeat in any::<bool>(),
    ) {
        let path = if v3 { "/v3/video-translations" } else { "/v2/video_translate" };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("idempotency-key", HeaderValue::from_static("k"));
        let create = Call { method: Method::POST, path: path.into(), headers, body: doc };
        let calls = if repeat { vec![create.clone(), create] } else { vec![create] };
        exercise(&calls, |call, answer| {
            refusal_is_documented_json(call, answer)?;
            let allowed = [
                StatusCode::OK,
                StatusCode::BAD_REQUEST,
                StatusCode::UNPROCESSABLE_ENTITY,
            ];
            prop_assert!(allowed.contains(&answer.status), "{} for {:?}", answer.status, String::from_utf8_lossy(&call.body));
            if answer.status == StatusCode::OK {
                let v: Value = serde_json::from_slice(&answer.body).unwrap();
                let ids = if v3 {
                    v["data"]["video_translation_ids"].as_array().map_or(0, Vec::len)
                } else {
                    usize::from(v["data"]["video_translate_id"].is_string())
                };
                prop_assert!(ids >= 1, "{v}");
            }
            Ok(())
        })?;
    }
}

/// The inputs that once panicked every request, kept by name.
#[test]
fn absurd_outage_and_latency_are_refused() {
    let cases = [
        json!({"outages": [{"start": "1s", "duration": "18446744073709551615s"}]}),
        json!({"latency": "18446744073709551615s", "slow_tail_probability": 1.0,
               "slow_tail_delay": "18446744073709551615s"}),
    ];
    for doc in cases {
        let faults = Call {
            method: Method::PUT,
            path: "/admin/faults".into(),
            headers: admin_json_headers(),
            body: serde_json::to_vec(&doc).unwrap(),
        };
        exercise(&[faults], |_, answer| {
            prop_assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
            Ok(())
        })
        .unwrap();
    }
}
