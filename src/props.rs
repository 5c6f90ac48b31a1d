//! Property tests of every parser that reads bytes from the other side of the wire: the status
//! document (through every built-in profile and generated ones), the profile loader itself,
//! the event-stream decoder, the hint and rate-limit headers, the whole "what does this answer
//! mean" step, and the redaction of URLs a server hands back (`Location`).
//!
//! Each runs a few hundred generated cases (`PROPTEST_CASES` raises it for a longer run) and
//! checks two things: nothing panics or grows past its bound, and what can be read is read
//! right. A failing case proptest finds is written under `proptest-regressions/` and replayed
//! first on every later run; a case worth keeping for ever also gets a named test below.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::model::{JobState, JobStatus, MAX_RESULT_URL, MAX_WORD};
use crate::profile::{Canonical, Profile, ProgressScale};
use crate::transport::answer::{ReadOutcome, interpret};
use crate::transport::headers::{applied_wait, auth_schemes, retry_after};
use crate::transport::signals::Signals;
use crate::transport::sse::{Decoder, Oversized, SseEvent};
use crate::transport::{Exchange, sse};

/// Header names the parsers read, and one they do not.
const NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "preference-applied",
    "etag",
    "www-authenticate",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-other",
];

/// A header value a server could send: visible ASCII, spaces, tabs and obs-text bytes, with
/// the separators and digits the parsers look for over-represented.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"0123456789,;=\" .-wqrtWinf".to_vec()),
        2 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ];
    prop::collection::vec(byte, 0..48)
        .prop_map(|bytes| HeaderValue::from_bytes(&bytes).unwrap_or(HeaderValue::from_static("")))
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((prop::sample::select(NAMES), header_value()), 0..8).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), value);
        }
        map
    })
}

/// A JSON value of any shape, a few levels deep, with the numbers that break naive code.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::num::f64::ANY.prop_map(Value::from),
        prop::sample::select(vec![
            -1.0, 0.0, 0.5, 1.0, 1.5, 43.0, 100.0, 100.5, 1e15, 1e300, -1e300
        ])
        .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A status document of the documented shape, with any value in any field.
fn status_document() -> impl Strategy<Value = Value> {
    let result = prop_oneof![
        4 => prop::sample::select(vec![
            "pending", "completed", "error", " Completed ", "PENDING", "running", ""
        ])
        .prop_map(Value::from),
        1 => json_value(),
    ];
    let field = |value: BoxedStrategy<Value>| prop::option::of(value);
    (
        field(result.boxed()),
        field(json_value().boxed()),
        field(json_value().boxed()),
        field(json_value().boxed()),
        field(json_value().boxed()),
        field(json_value().boxed()),
    )
        .prop_map(|(result, progress, eta_ms, created_at, error, extra)| {
            let mut doc = serde_json::Map::new();
            let fields = [
                ("result", result),
                ("progress", progress),
                ("eta_ms", eta_ms),
                ("created_at", created_at),
                ("error", error),
                ("extra", extra),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    doc.insert(name.to_owned(), value);
                }
            }
            Value::Object(doc)
        })
}

/// The built-in profiles.
fn builtins() -> Vec<Profile> {
    Profile::builtin_names()
        .into_iter()
        .map(|name| Profile::builtin(name).unwrap())
        .collect()
}

/// `doc` with `value` at the JSON pointer `pointer`, objects made on the way.
fn place(doc: &mut Value, pointer: &str, value: Value) {
    let mut at = doc;
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        if !at.is_object() {
            *at = Value::Object(serde_json::Map::new());
        }
        at = at
            .as_object_mut()
            .unwrap()
            .entry(key)
            .or_insert(Value::Null);
    }
    *at = value;
}

/// The state pointer of a profile (every built-in has one).
fn state_pointer(profile: &Profile) -> String {
    let toml: toml::Table = toml::from_str(&profile.to_toml().unwrap()).unwrap();
    toml["fields"]["state"].as_str().unwrap().to_owned()
}

/// Every word a profile maps, with its state.
fn synonyms(profile: &Profile) -> Vec<(Canonical, String)> {
    let toml: toml::Table = toml::from_str(&profile.to_toml().unwrap()).unwrap();
    let mut out = Vec::new();
    for state in Canonical::ALL {
        let words = toml
            .get("states")
            .and_then(|s| s.get(state.as_str()))
            .and_then(|w| w.as_array())
            .cloned()
            .unwrap_or_default();
        out.extend(
            words
                .iter()
                .map(|w| (state, w.as_str().unwrap().to_owned())),
        );
    }
    out
}

fn canonical_of(state: &JobState) -> Option<Canonical> {
    match state {
        JobState::Queued => Some(Canonical::Queued),
        JobState::Pending { .. } => Some(Canonical::Running),
        JobState::Completed => Some(Canonical::Succeeded),
        JobState::Failed(_) => Some(Canonical::Failed),
        JobState::Canceled => Some(Canonical::Canceled),
        _ => None,
    }
}

/// A word a profile could map: short, with the odd space, case and non-ASCII letter.
fn word() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_ é-]{0,12}"
}

/// A profile made up: a state pointer, a few words per state (none twice), a progress pointer
/// and scale, and a result URL pointer.
fn made_up_profile() -> impl Strategy<Value = Profile> {
    (
        "(/[a-z_]{1,6}){1,3}",
        prop::collection::vec((0usize..5, word()), 1..10),
        "(/[a-z_]{1,6}){1,2}",
        prop::sample::select(vec![
            ProgressScale::Auto,
            ProgressScale::Fraction,
            ProgressScale::Percent,
        ]),
        "(/[a-z0-9_]{1,6}){1,3}",
    )
        .prop_filter_map("distinct words", |(state, words, progress, scale, url)| {
            let mut builder = Profile::builder("made-up", "/jobs/{id}")
                .state(state)
                .progress(progress, scale)
                .result_url(url);
            let mut seen = std::collections::HashSet::new();
            for (i, w) in words {
                if !seen.insert(w.trim().to_lowercase()) {
                    return None;
                }
                builder = builder.words(Canonical::ALL[i], [w]);
            }
            builder.build().ok()
        })
}

/// Feeds `chunks` one after the other; the events, and whether a limit was broken.
fn decode(decoder: &mut Decoder, chunks: &[&[u8]]) -> (Vec<SseEvent>, Option<Oversized>) {
    let mut events = Vec::new();
    for chunk in chunks {
        let fed = decoder.feed(chunk);
        while let Some(event) = decoder.next_event() {
            events.push(event);
        }
        if let Err(oversized) = fed {
            return (events, Some(oversized));
        }
    }
    (events, None)
}

/// One event as a server would write it, with the chosen line end.
fn encode(event: &SseEvent, end: &str) -> String {
    let mut out = String::new();
    if event.event != "message" {
        out.push_str(&format!("event: {}{end}", event.event));
    }
    if let Some(id) = &event.id {
        out.push_str(&format!("id: {id}{end}"));
    }
    for line in event.data.split('\n') {
        out.push_str(&format!("data: {line}{end}"));
    }
    out.push_str(end);
    out
}

fn sse_event() -> impl Strategy<Value = SseEvent> {
    (
        "[a-z]{1,8}",
        prop::collection::vec("[^\r\n]{0,16}", 1..4),
        prop::option::of("[^\r\n\0]{0,8}"),
    )
        .prop_map(|(event, lines, id)| SseEvent {
            event,
            data: lines.join("\n"),
            id,
            retry: None,
        })
}

fn exchange(status: StatusCode, headers: HeaderMap, body: Vec<u8>) -> Exchange<'static> {
    static URL: std::sync::LazyLock<url::Url> =
        std::sync::LazyLock::new(|| url::Url::parse("http://127.0.0.1/v1/jobs/j/status").unwrap());
    Exchange {
        url: &URL,
        status,
        headers,
        body: Bytes::from(body),
        attempts: 1,
        hedges: 0,
    }
}

proptest! {
    #[test]
    fn a_status_body_of_any_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = JobStatus::from_json(&body);
        let _ = crate::Profile::simulator().progress_of(&String::from_utf8_lossy(&body));
    }

    #[test]
    fn a_status_document_is_read_field_by_field(doc in status_document()) {
        let body = serde_json::to_vec(&doc).unwrap();
        let parsed = JobStatus::from_json(&body);
        let word = doc.get("result").and_then(Value::as_str).map(|w| w.trim().to_ascii_lowercase());
        match (&word, parsed) {
            (None, parsed) => prop_assert!(parsed.is_err(), "no string result must not parse"),
            (Some(word), Ok(status)) => {
                let expected = match word.as_str() {
                    "queued" => status.state == JobState::Queued,
                    "pending" | "running" => matches!(status.state, JobState::Pending { .. }),
                    "completed" => status.state == JobState::Completed,
                    "error" => matches!(status.state, JobState::Failed(_)),
                    "canceled" | "cancelled" => status.state == JobState::Canceled,
                    _ => matches!(status.state, JobState::Unknown(_)),
                };
                prop_assert!(expected, "{word:?} read as {:?}", status.state);
                if let Some(p) = status.progress {
                    prop_assert!((0.0..=1.0).contains(&p), "progress {p} out of [0, 1]");
                }
                if let Some(eta) = status.eta() {
                    prop_assert!(eta < Duration::from_secs(1_000_000_000_000));
                }
            }
            (Some(_), Err(e)) => prop_assert!(false, "a string result must parse: {e:?}"),
        }
    }

    #[test]
    fn progress_reads_a_fraction_or_a_percentage(p in prop::num::f64::ANY) {
        let body = json!({"result": "pending", "progress": p});
        let status = JobStatus::from_json(&serde_json::to_vec(&body).unwrap()).unwrap();
        let expected = if (0.0..=1.0).contains(&p) {
            Some(p)
        } else if p > 1.0 && p <= 100.0 {
            Some(p / 100.0)
        } else {
            None
        };
        // JSON carries the number in decimal: allow its last bit to change on the way.
        match (status.progress, expected) {
            (Some(read), Some(expected)) => {
                prop_assert!((read - expected).abs() <= expected * 1e-12, "{p} read as {read}");
            }
            (read, expected) => prop_assert_eq!(read, expected, "{}", p),
        }
    }

    #[test]
    fn the_decoder_holds_nothing_past_its_limits(
        bytes in prop::collection::vec(prop::sample::select(b"data: x\r\n:idevnt".to_vec()), 0..2048),
        cut in 1usize..64,
    ) {
        let (max_line, max_event) = (32, 96);
        let mut decoder = Decoder::with_limits(max_line, max_event);
        for chunk in bytes.chunks(cut) {
            let fed = decoder.feed(chunk);
            while let Some(event) = decoder.next_event() {
                prop_assert!(event.data.len() + event.event.len() <= max_event + max_line);
            }
            if fed.is_err() {
                break;
            }
            prop_assert!(decoder.size() <= max_event, "holds {} bytes", decoder.size());
        }
    }

    #[test]
    fn how_bytes_are_chunked_never_changes_the_events(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(0usize..512, 0..8),
    ) {
        let mut whole = Decoder::with_limits(64, 256);
        let expected = decode(&mut whole, &[&bytes]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort_unstable();
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for cut in cuts {
            pieces.push(&bytes[at..cut]);
            at = cut;
        }
        pieces.push(&bytes[at..]);
        let mut chunked = Decoder::with_limits(64, 256);
        prop_assert_eq!(decode(&mut chunked, &pieces), expected);
    }

    #[test]
    fn events_a_server_writes_are_read_back(
        events in prop::collection::vec(sse_event(), 0..6),
        end in prop::sample::select(vec!["\n", "\r\n", "\r"]),
    ) {
        let text: String = events.iter().map(|e| encode(e, end)).collect();
        let mut decoder = Decoder::default();
        let (read, oversized) = decode(&mut decoder, &[text.as_bytes()]);
        prop_assert_eq!(oversized, None);
        prop_assert_eq!(read, events);
    }

    #[test]
    fn hint_headers_of_any_value_never_panic(headers in headers()) {
        if let Some(pause) = retry_after(&headers) {
            // Whatever the server asked for, adding it to a clock saturates instead of panicking.
            let _ = tokio::time::Instant::now().checked_add(pause);
        }
        let _ = applied_wait(&headers);
        if let Some(schemes) = auth_schemes(&headers) {
            prop_assert!(schemes.split(", ").count() <= 4);
            prop_assert!(schemes.split(", ").all(|s| !s.is_empty() && s.len() <= 32));
        }
        let signals = Signals::read(StatusCode::TOO_MANY_REQUESTS, &headers);
        if let Some((quota, window)) = signals.policy {
            prop_assert!(quota.is_finite() && quota > 0.0, "quota {quota}");
            prop_assert!(!window.is_zero(), "window {window:?}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds(secs in any::<u64>(), ms in 0u64..1_000_000_000_000) {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from(secs));
        prop_assert_eq!(retry_after(&headers), Some(Duration::from_secs(secs)));
        headers.insert("retry-after-ms", HeaderValue::from(ms));
        let read = retry_after(&headers).unwrap();
        prop_assert!(read.as_millis().abs_diff(u128::from(ms)) <= 1, "{ms} ms read as {read:?}");
    }

    #[test]
    fn preference_applied_reads_its_wait(secs in any::<u64>(), before in "[a-z]{0,6}") {
        let mut headers = HeaderMap::new();
        let value = if before.is_empty() {
            format!("wait={secs}")
        } else {
            format!("{before}=1, wait={secs}")
        };
        headers.insert("preference-applied", HeaderValue::from_str(&value).unwrap());
        prop_assert_eq!(applied_wait(&headers), Some(Duration::from_secs(secs)));
    }

    #[test]
    fn any_answer_has_a_meaning(
        code in 100u16..600,
        headers in headers(),
        body in prop_oneof![
            status_document().prop_map(|d| serde_json::to_vec(&d).unwrap()),
            prop::collection::vec(any::<u8>(), 0..128),
        ],
    ) {
        let status = StatusCode::from_u16(code).unwrap();
        let parses = JobStatus::from_json(&body).is_ok();
        match interpret(exchange(status, headers, body), &crate::Profile::simulator()) {
            ReadOutcome::NotModified { .. } => prop_assert_eq!(code, 304),
            ReadOutcome::Status { status: job, .. } => {
                prop_assert!(status.is_success());
                prop_assert!(!matches!(job.state, JobState::Unknown(_)));
            }
            ReadOutcome::Unknown { status: job, .. } => {
                prop_assert!(status.is_success());
                prop_assert!(matches!(job.state, JobState::Unknown(_)));
            }
            ReadOutcome::Malformed(_) => prop_assert!(status.is_success() && !parses),
            // Only a failed answer is a failure: a 2xx is never one.
            ReadOutcome::Throttled { .. } | ReadOutcome::Unavailable { .. } | ReadOutcome::Failed(_) => {
                prop_assert!(!status.is_success() && code != 304);
            }
        }
    }

    #[test]
    fn redaction_hides_every_secret(
        user in "[a-z]{1,8}",
        password in "[A-Za-z0-9]{6,16}",
        token in "[A-Za-z0-9]{6,16}",
        host in "[a-z]{1,10}(\\.[a-z]{2,5})?",
        path in "(/[a-z0-9_-]{0,8}){0,3}",
        name in prop::sample::select(vec!["token", "api_key", "sig", "signature", "X-Amz-Signature", "access_token"]),
    ) {
        let url = format!("https://{user}:{password}@{host}{path}?page=2&{name}={token}");
        let text = format!("redirected to {url} (not followed)");
        let shown = crate::redact::redact(&text);
        prop_assert!(!shown.contains(&password), "{shown}");
        prop_assert!(!shown.contains(&format!("={token}")), "{shown}");
        prop_assert!(shown.contains(&host), "the host stays readable: {shown}");
    }

    #[test]
    fn any_answer_through_any_builtin_profile_never_panics(
        code in prop::sample::select(vec![200u16, 201, 202, 206, 299]),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            (json_value(), json_value()).prop_map(|(state, data)| {
                serde_json::to_vec(&json!({"status": state, "result": state, "data": {
                    "status": state, "url": data, "video_url": data, "message": data,
                    "failure_message": data, "created_at": data, "completed_at": data},
                    "progress": data, "output": data, "error": data, "id": data})).unwrap()
            }),
        ],
    ) {
        for profile in builtins() {
            if let Ok(status) = profile.decode(code, &body) {
                prop_assert!(status.raw_state.as_ref().is_none_or(|w| w.len() <= MAX_WORD));
                if let JobState::Unknown(word) = &status.state {
                    prop_assert!(word.len() <= MAX_WORD);
                }
                prop_assert!(status.result_url.as_ref().is_none_or(|u| u.len() <= MAX_RESULT_URL));
                if let Some(p) = status.progress {
                    prop_assert!((0.0..=1.0).contains(&p), "{}: progress {p}", profile.name());
                }
            }
            let _ = profile.progress_of(&String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn every_builtin_synonym_maps_as_declared(
        pick in any::<prop::sample::Index>(),
        upper in prop::collection::vec(any::<bool>(), 16),
        pad in prop::sample::select(vec!["", " ", "  ", "\t"]),
        extra in json_value(),
    ) {
        for profile in builtins() {
            let words = synonyms(&profile);
            let (state, word) = &words[pick.index(words.len())];
            // Any case, any surrounding spaces.
            let written: String = word
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            let written = format!("{pad}{written}{pad}");
            let mut doc = json!({"noise": extra});
            place(&mut doc, &state_pointer(&profile), Value::from(written.clone()));
            let status = profile.decode(200, &serde_json::to_vec(&doc).unwrap()).unwrap();
            prop_assert_eq!(canonical_of(&status.state), Some(*state), "{}: {:?}", profile.name(), written);
            prop_assert_eq!(status.raw_state.as_deref(), Some(written.as_str()));
        }
    }

    #[test]
    fn a_made_up_profile_maps_its_words_and_reads_any_document(
        profile in made_up_profile(),
        pick in any::<prop::sample::Index>(),
        body in json_value(),
        progress in prop::num::f64::ANY,
    ) {
        let words = synonyms(&profile);
        let (state, word) = &words[pick.index(words.len())];
        let pointer = state_pointer(&profile);
        let mut doc = body.clone();
        place(&mut doc, &pointer, Value::from(word.to_uppercase()));
        let status = profile.decode(200, &serde_json::to_vec(&doc).unwrap()).unwrap();
        prop_assert_eq!(canonical_of(&status.state), Some(*state), "{:?}", word);
        // Whatever else is in the document, in any field, reading never fails on it.
        let toml: toml::Table = toml::from_str(&profile.to_toml().unwrap()).unwrap();
        let progress_at = toml["fields"]["progress"].as_str().unwrap().to_owned();
        // (Unless one pointer is inside the other: then one value overwrites the other.)
        let nested = pointer.starts_with(&format!("{progress_at}/"))
            || progress_at.starts_with(&format!("{pointer}/"))
            || pointer == progress_at;
        if !nested {
            place(&mut doc, &progress_at, Value::from(progress));
            let status = profile.decode(200, &serde_json::to_vec(&doc).unwrap()).unwrap();
            if let Some(p) = status.progress {
                prop_assert!((0.0..=1.0).contains(&p), "{progress} read as {p}");
            }
        }
        let _ = profile.decode(200, &serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn the_profile_loader_never_panics_on_any_text(
        text in prop_oneof![
            "\\PC{0,256}",
            // Near misses of a real profile: a built-in with a line cut or doubled.
            (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<bool>()).prop_map(|(p, l, double)| {
                let names = Profile::builtin_names();
                let toml = Profile::builtin(names[p.index(names.len())]).unwrap().to_toml().unwrap();
                let mut lines: Vec<&str> = toml.lines().collect();
                let at = l.index(lines.len());
                if double { lines.insert(at, lines[at]); } else { lines.remove(at); }
                lines.join("\n")
            }),
        ],
    ) {
        let _ = Profile::from_toml_str(&text);
        let _ = Profile::from_json_str(&text);
    }

    #[test]
    fn the_profile_loader_never_panics_on_any_json(value in json_value(), builtin in any::<prop::sample::Index>()) {
        let _ = Profile::from_json_str(&value.to_string());
        // A built-in with one field replaced by anything.
        let names = Profile::builtin_names();
        let profile = Profile::builtin(names[builtin.index(names.len())]).unwrap();
        let mut spec = serde_json::to_value(&profile).unwrap();
        for field in ["status", "fields", "states", "hints", "auth", "create", "unknown_limit", "status_codes"] {
            let mut changed = spec.clone();
            changed[field] = value.clone();
            if let Ok(loaded) = Profile::from_json_str(&changed.to_string()) {
                let _ = loaded.decode(200, br#"{"status": "x", "result": "y"}"#);
            }
        }
        spec["name"] = value;
        let _ = Profile::from_json_str(&spec.to_string());
    }

    #[test]
    fn redaction_of_any_text_never_panics(text in "\\PC{0,64}") {
        let shown = crate::redact::redact(&text);
        if !text.contains('@') && !text.contains('?') && !text.contains('#') {
            prop_assert_eq!(shown.as_ref(), text.as_str());
        }
    }
}

/// The decoder refuses a line or an event at exactly its limit, with the right kind.
#[test]
fn limits_are_refused_by_kind() {
    let mut decoder = Decoder::with_limits(8, 16);
    assert_eq!(decoder.feed(b"data: 123456789"), Err(Oversized::Line));
    let mut decoder = Decoder::with_limits(16, 16);
    let fed = decoder.feed(b"data:1234\ndata:1234\ndata:1234\ndata:1234\n");
    assert_eq!(fed, Err(Oversized::Event));
    let mut decoder = Decoder::default();
    let (events, oversized) = decode(&mut decoder, &[b"data: {}\n\n"]);
    assert_eq!((events.len(), oversized), (1, None));
    const { assert!(sse::MAX_EVENT >= sse::MAX_LINE) };
}
