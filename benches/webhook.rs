//! Webhook verification of a 1 KB body, per scheme (`webhook_verify`: size, headers,
//! timestamp, constant-time HMAC-SHA256 comparison), and the whole receive (`webhook_receive`:
//! the same, plus reading the event through its profile). The target is at most 10 µs per
//! event.
//!
//! ```sh
//! cargo bench --bench webhook
//! ```
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use serde_json::json;
use sha2::Sha256;
use translation_status::webhook::{Receiver, Scheme, Secret, heygen_event_profile};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const RAW: &str = "heygen-simulator-development-secret";
const NOW: u64 = 1_700_000_000;
const SIZE: usize = 1024;

fn tag(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `doc` padded to exactly `SIZE` bytes with a `note` field.
fn padded(mut doc: serde_json::Value) -> Vec<u8> {
    doc["note"] = json!("");
    let base = serde_json::to_vec(&doc).unwrap().len();
    doc["note"] = json!("x".repeat(SIZE - base));
    let body = serde_json::to_vec(&doc).unwrap();
    assert_eq!(body.len(), SIZE);
    body
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

/// Each scheme's receiver (no replay cache: the same delivery is sent again and again), a
/// signed 1 KB delivery, and its body.
fn deliveries() -> Vec<(&'static str, Receiver, HeaderMap, Vec<u8>)> {
    let sim = padded(json!({
        "id": "j-0123456789abcdef", "result": "completed", "progress": 1.0,
        "created_at": "2026-01-01T00:00:00Z", "completed_at": "2026-01-01T00:01:00Z",
    }));
    let heygen = padded(
        json!({"event_type": "video_translate.success", "event_data": {
        "video_translate_id": "j-0123456789abcdef", "url": "https://cdn.example/v.mp4?sig=1",
        "callback_id": "cb-1", "output_language": "German"}}),
    );
    let ts = NOW.to_string();
    let key = BASE64.decode(WHSEC.trim_start_matches("whsec_")).unwrap();
    let standard = headers(&[
        ("webhook-id", "msg_j-0123456789abcdef".into()),
        ("webhook-timestamp", ts.clone()),
        (
            "webhook-signature",
            format!(
                "v1,{}",
                BASE64.encode(tag(
                    &key,
                    &[b"msg_j-0123456789abcdef.", ts.as_bytes(), b".", &sim]
                ))
            ),
        ),
    ]);
    let hex_body = headers(&[("signature", hex(&tag(RAW.as_bytes(), &[&heygen])))]);
    let timestamped = hex(&tag(RAW.as_bytes(), &[ts.as_bytes(), b".", &sim]));
    let synthesia = headers(&[
        ("synthesia-timestamp", ts.clone()),
        ("synthesia-signature", timestamped.clone()),
    ]);
    let elevenlabs = headers(&[("elevenlabs-signature", format!("t={ts},v0={timestamped}"))]);
    let raw = || Secret::raw(RAW).unwrap();
    vec![
        (
            "standard_webhooks",
            Receiver::standard_webhooks(Secret::whsec(WHSEC).unwrap())
                .without_replay_cache()
                .build()
                .unwrap(),
            standard,
            sim.clone(),
        ),
        (
            "heygen_hex",
            Receiver::builder(Scheme::heygen(), raw())
                .profile(heygen_event_profile())
                .without_replay_cache()
                .build()
                .unwrap(),
            hex_body,
            heygen,
        ),
        (
            "synthesia",
            Receiver::builder(Scheme::synthesia(), raw())
                .without_replay_cache()
                .build()
                .unwrap(),
            synthesia,
            sim.clone(),
        ),
        (
            "elevenlabs",
            Receiver::builder(Scheme::elevenlabs(), raw())
                .without_replay_cache()
                .build()
                .unwrap(),
            elevenlabs,
            sim,
        ),
    ]
}

fn verification(c: &mut Criterion) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let cases = deliveries();
    let mut g = c.benchmark_group("webhook_verify");
    for (name, receiver, headers, body) in &cases {
        assert!(receiver.verify(headers, body, now).is_ok(), "{name}");
        g.bench_function(*name, |b| {
            b.iter(|| black_box(receiver.verify(black_box(headers), black_box(body), now)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("webhook_receive");
    for (name, receiver, headers, body) in &cases {
        assert!(receiver.receive(headers, body, now).is_ok(), "{name}");
        g.bench_function(*name, |b| {
            b.iter(|| black_box(receiver.receive(black_box(headers), black_box(body), now)))
        });
    }
    g.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
