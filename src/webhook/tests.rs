//! Verification against the published Standard Webhooks vector and vectors computed here for
//! the other schemes; every refusal; events read as status reads are; and a property test that
//! no bytes make it panic or pass.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::json;
use sha2::Sha256;

use super::*;
use crate::model::{JobFailure, JobState};
use crate::profile::Canonical;

/// The Standard Webhooks specification's test vector.
const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const VECTOR_TS: u64 = 1_614_265_330;
const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

const HEYGEN_SECRET: &str = "heygen-simulator-development-secret";
const NOW: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn whsec_key(secret: &str) -> Vec<u8> {
    BASE64.decode(secret.trim_start_matches("whsec_")).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// A Standard Webhooks delivery, signed as the specification says.
fn standard(secret: &str, id: &str, ts: u64, body: &[u8]) -> HeaderMap {
    let ts_text = ts.to_string();
    let tag = mac(
        &whsec_key(secret),
        &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body],
    );
    let signature = format!("v1,{}", BASE64.encode(tag));
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", &ts_text),
        ("webhook-signature", &signature),
    ])
}

fn heygen_headers(secret: &str, body: &[u8]) -> HeaderMap {
    headers(&[("signature", &scheme::hex(&mac(secret.as_bytes(), &[body])))])
}

fn timestamped_tag(secret: &str, ts: u64, body: &[u8]) -> String {
    scheme::hex(&mac(
        secret.as_bytes(),
        &[ts.to_string().as_bytes(), b".", body],
    ))
}

fn standard_receiver() -> Receiver {
    Receiver::standard_webhooks(Secret::whsec(VECTOR_SECRET).unwrap())
        .build()
        .unwrap()
}

fn heygen_receiver() -> Receiver {
    Receiver::heygen(Secret::raw(HEYGEN_SECRET).unwrap())
        .build()
        .unwrap()
}

fn sim_body(id: &str, result: &str) -> Vec<u8> {
    let mut body = json!({
        "id": id, "result": result, "progress": 1.0,
        "created_at": "2026-01-01T00:00:00Z", "completed_at": "2026-01-01T00:01:00Z",
    });
    if result == "error" {
        body["error"] = json!({"code": "translation_failed", "message": "no speech found"});
    }
    serde_json::to_vec(&body).unwrap()
}

fn heygen_event(id: &str, success: bool) -> Vec<u8> {
    let body = if success {
        json!({"event_type": "video_translate.success", "event_data": {
            "video_translate_id": id, "url": "https://cdn.example/v.mp4?sig=1",
            "callback_id": "cb", "output_language": "German"}})
    } else {
        json!({"event_type": "video_translate.fail", "event_data": {
            "video_translate_id": id, "message": "no face detected",
            "callback_id": null, "output_language": "German"}})
    };
    serde_json::to_vec(&body).unwrap()
}

#[test]
fn the_standard_webhooks_test_vector_verifies() {
    let receiver = standard_receiver();
    let delivery = headers(&[
        ("webhook-id", VECTOR_ID),
        ("webhook-timestamp", &VECTOR_TS.to_string()),
        ("webhook-signature", VECTOR_SIGNATURE),
    ]);
    assert_eq!(
        receiver.verify(&delivery, VECTOR_BODY, at(VECTOR_TS)),
        Ok(VECTOR_ID.to_owned())
    );
    // The helper the other tests sign with computes the same signature.
    assert_eq!(
        standard(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)["webhook-signature"],
        VECTOR_SIGNATURE
    );
    // One byte changed anywhere fails.
    assert_eq!(
        receiver.verify(&delivery, br#"{"test": 2432232315}"#, at(VECTOR_TS)),
        Err(WebhookError::BadSignature)
    );
    let mut other_id = delivery.clone();
    other_id.insert("webhook-id", HeaderValue::from_static("msg_other"));
    assert_eq!(
        receiver.verify(&other_id, VECTOR_BODY, at(VECTOR_TS)),
        Err(WebhookError::BadSignature)
    );
    let mut other_ts = delivery.clone();
    other_ts.insert("webhook-timestamp", HeaderValue::from_static("1614265331"));
    assert_eq!(
        receiver.verify(&other_ts, VECTOR_BODY, at(VECTOR_TS)),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn several_signatures_and_unknown_versions_are_allowed() {
    let receiver = standard_receiver();
    let listed = format!("v1a,c29tZXRoaW5nIGVsc2U= v1,bm9wZQ== {VECTOR_SIGNATURE} v2,xyz");
    let delivery = headers(&[
        ("webhook-id", VECTOR_ID),
        ("webhook-timestamp", &VECTOR_TS.to_string()),
        ("webhook-signature", &listed),
    ]);
    assert!(
        receiver
            .verify(&delivery, VECTOR_BODY, at(VECTOR_TS))
            .is_ok()
    );
}

#[test]
fn rotated_secrets_verify_old_and_new() {
    let old = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==";
    let new = VECTOR_SECRET;
    let receiver = Receiver::standard_webhooks(Secret::whsec(new).unwrap())
        .secret(Secret::whsec(old).unwrap())
        .without_replay_cache()
        .build()
        .unwrap();
    let body = sim_body("j-1", "completed");
    for secret in [old, new] {
        let delivery = standard(secret, "msg_1", NOW, &body);
        assert!(
            receiver.receive(&delivery, &body, at(NOW)).is_ok(),
            "{secret}"
        );
    }
    // A sender mid-rotation signs with both; a receiver with only one of them accepts it.
    let both = format!(
        "{} {}",
        standard(old, "msg_2", NOW, &body)["webhook-signature"]
            .to_str()
            .unwrap(),
        standard(new, "msg_2", NOW, &body)["webhook-signature"]
            .to_str()
            .unwrap()
    );
    let delivery = headers(&[
        ("webhook-id", "msg_2"),
        ("webhook-timestamp", &NOW.to_string()),
        ("webhook-signature", &both),
    ]);
    assert!(
        standard_receiver()
            .receive(&delivery, &body, at(NOW))
            .is_ok()
    );
    // A secret that is neither is refused.
    let other = standard("whsec_b3RoZXI=", "msg_3", NOW, &body);
    assert_eq!(
        receiver.receive(&other, &body, at(NOW)),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn timestamps_outside_the_tolerance_are_refused_both_ways() {
    let receiver = Receiver::standard_webhooks(Secret::whsec(VECTOR_SECRET).unwrap())
        .tolerance(Duration::from_secs(300))
        .without_replay_cache()
        .build()
        .unwrap();
    let body = sim_body("j-1", "completed");
    let delivery = standard(VECTOR_SECRET, "msg_1", NOW, &body);
    for now in [NOW - 300, NOW, NOW + 300] {
        assert!(receiver.receive(&delivery, &body, at(now)).is_ok(), "{now}");
    }
    assert_eq!(
        receiver.receive(&delivery, &body, at(NOW + 301)),
        Err(WebhookError::StaleTimestamp {
            age: Duration::from_secs(301),
            tolerance: Duration::from_secs(300)
        })
    );
    assert_eq!(
        receiver.receive(&delivery, &body, at(NOW - 301)),
        Err(WebhookError::FutureTimestamp {
            ahead: Duration::from_secs(301),
            tolerance: Duration::from_secs(300)
        })
    );
    // The timestamp is judged before the signature: a stale forgery costs no HMAC, and says
    // stale, not forged.
    let mut forged = delivery.clone();
    forged.insert("webhook-signature", HeaderValue::from_static("v1,bm9wZQ=="));
    assert!(matches!(
        receiver.receive(&forged, &body, at(NOW + 10_000)),
        Err(WebhookError::StaleTimestamp { .. })
    ));
}

#[test]
fn a_delivery_is_received_once_and_a_forgotten_one_again() {
    let receiver = standard_receiver();
    let body = sim_body("j-1", "completed");
    let delivery = standard(VECTOR_SECRET, "msg_1", NOW, &body);
    let event = receiver.receive(&delivery, &body, at(NOW)).unwrap();
    assert_eq!(event.delivery_id, "msg_1");
    let again = receiver.receive(&delivery, &body, at(NOW + 1));
    assert_eq!(
        again,
        Err(WebhookError::Replay {
            delivery_id: "msg_1".into()
        })
    );
    let e = again.unwrap_err();
    assert!(e.is_replay());
    assert_eq!(e.status(), http::StatusCode::OK);
    // A retry with a fresh timestamp and the same id is the same delivery.
    let retry = standard(VECTOR_SECRET, "msg_1", NOW + 30, &body);
    assert!(
        receiver
            .receive(&retry, &body, at(NOW + 30))
            .unwrap_err()
            .is_replay()
    );
    // Clones share the cache.
    assert!(
        receiver
            .clone()
            .receive(&delivery, &body, at(NOW + 2))
            .unwrap_err()
            .is_replay()
    );
    receiver.forget("msg_1");
    assert!(receiver.receive(&delivery, &body, at(NOW + 3)).is_ok());
    // A refused delivery is not remembered: the genuine one is still received after it.
    let other = sim_body("j-2", "completed");
    let genuine = standard(VECTOR_SECRET, "msg_2", NOW, &other);
    assert_eq!(
        receiver.receive(&genuine, b"{}", at(NOW)),
        Err(WebhookError::BadSignature)
    );
    assert!(receiver.receive(&genuine, &other, at(NOW)).is_ok());
}

#[test]
fn the_replay_cache_is_bounded_and_forgets_the_oldest() {
    let receiver = Receiver::standard_webhooks(Secret::whsec(VECTOR_SECRET).unwrap())
        .replay_cache(2, Duration::from_secs(3600))
        .build()
        .unwrap();
    let body = sim_body("j-1", "completed");
    let send = |id: &str| {
        let delivery = standard(VECTOR_SECRET, id, NOW, &body);
        receiver.receive(&delivery, &body, at(NOW))
    };
    assert!(send("a").is_ok());
    assert!(send("b").is_ok());
    assert!(send("c").is_ok(), "evicts a");
    assert!(send("c").unwrap_err().is_replay());
    assert!(send("a").is_ok(), "a was evicted, the oldest");
}

#[test]
fn bodies_over_the_limit_are_refused_before_anything_else() {
    let receiver = Receiver::standard_webhooks(Secret::whsec(VECTOR_SECRET).unwrap())
        .max_body(64)
        .build()
        .unwrap();
    let body = vec![b' '; 65];
    assert_eq!(
        receiver.receive(&HeaderMap::new(), &body, at(NOW)),
        Err(WebhookError::BodyTooLarge { len: 65, limit: 64 })
    );
    assert_eq!(
        WebhookError::BodyTooLarge { len: 65, limit: 64 }.status(),
        http::StatusCode::PAYLOAD_TOO_LARGE
    );
    // The default is 1 MiB.
    let big = vec![b' '; DEFAULT_MAX_BODY + 1];
    assert!(matches!(
        standard_receiver().receive(&HeaderMap::new(), &big, at(NOW)),
        Err(WebhookError::BodyTooLarge { .. })
    ));
}

#[test]
fn malformed_and_missing_headers_are_named() {
    let receiver = standard_receiver();
    let ts = NOW.to_string();
    let ok_sig = standard(VECTOR_SECRET, "m", NOW, b"{}")["webhook-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let long_id = "i".repeat(MAX_DELIVERY_ID + 1);
    let many = vec![VECTOR_SIGNATURE; MAX_SIGNATURES + 1].join(" ");
    let huge = format!("v1,{}", "A".repeat(DEFAULT_MAX_HEADER));
    let cases: Vec<(Vec<(&str, &str)>, WebhookError)> = vec![
        (
            vec![("webhook-timestamp", &ts), ("webhook-signature", &ok_sig)],
            WebhookError::MissingHeader("webhook-id"),
        ),
        (
            vec![("webhook-id", "m"), ("webhook-signature", &ok_sig)],
            WebhookError::MissingHeader("webhook-timestamp"),
        ),
        (
            vec![("webhook-id", "m"), ("webhook-timestamp", &ts)],
            WebhookError::MissingHeader("webhook-signature"),
        ),
        (
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", "soon"),
                ("webhook-signature", &ok_sig),
            ],
            WebhookError::malformed("webhook-timestamp", "the timestamp must be Unix seconds"),
        ),
        (
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", "-1"),
                ("webhook-signature", &ok_sig),
            ],
            WebhookError::malformed("webhook-timestamp", "the timestamp must be Unix seconds"),
        ),
        (
            vec![
                ("webhook-id", &long_id),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &ok_sig),
            ],
            WebhookError::malformed("webhook-id", "must have 1 to 256 bytes"),
        ),
        (
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", "v2,abc"),
            ],
            WebhookError::malformed(
                "webhook-signature",
                "no signature of a version this receiver verifies",
            ),
        ),
        (
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", "v1,%%%"),
            ],
            WebhookError::malformed("webhook-signature", "a `v1,` signature is not base64"),
        ),
        (
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &many),
            ],
            WebhookError::malformed("webhook-signature", "more than 16 signatures"),
        ),
        (
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &huge),
            ],
            WebhookError::malformed(
                "webhook-signature",
                "longer than the receiver's header limit",
            ),
        ),
        (
            vec![
                ("webhook-id", "m"),
                ("webhook-id", "n"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &ok_sig),
            ],
            WebhookError::malformed("webhook-id", "sent more than once"),
        ),
    ];
    for (pairs, expected) in cases {
        let got = receiver.receive(&headers(&pairs), b"{}", at(NOW));
        assert_eq!(got.as_ref().err(), Some(&expected), "{pairs:?}");
        assert_eq!(expected.status(), http::StatusCode::BAD_REQUEST);
    }
    let mut binary = headers(&[("webhook-timestamp", &ts), ("webhook-signature", &ok_sig)]);
    binary.insert("webhook-id", HeaderValue::from_bytes(b"m\xff").unwrap());
    assert_eq!(
        receiver.receive(&binary, b"{}", at(NOW)),
        Err(WebhookError::malformed("webhook-id", "not visible ASCII"))
    );
}

#[test]
fn heygen_events_read_as_heygen_status_reads_do() {
    let receiver = heygen_receiver();
    let status_read = crate::Profile::builtin("heygen-v2").unwrap();
    // Success: the event and a status read of the same job say the same.
    let event_body = heygen_event("vt-1", true);
    let event = receiver
        .receive(
            &heygen_headers(HEYGEN_SECRET, &event_body),
            &event_body,
            at(NOW),
        )
        .unwrap();
    let read = status_read
        .decode(
            200,
            br#"{"code": 100, "data": {"video_translate_id": "vt-1", "status": "success", "url": "https://cdn.example/v.mp4?sig=1"}}"#,
        )
        .unwrap();
    assert_eq!(event.job_id, "vt-1");
    assert_eq!(event.status.state, JobState::Completed);
    assert_eq!(event.status.state, read.state);
    assert_eq!(event.status.result_url, read.result_url);
    assert_eq!(event.status.id, read.id);
    assert_eq!(event.signed_at, None, "HeyGen signs no timestamp");
    assert_eq!(event.delivery_id.len(), 64, "the signature, in hex");
    // Failure: the message, as a status read gives it.
    let event_body = heygen_event("vt-2", false);
    let event = receiver
        .receive(
            &heygen_headers(HEYGEN_SECRET, &event_body),
            &event_body,
            at(NOW),
        )
        .unwrap();
    let read = status_read
        .decode(
            200,
            br#"{"data": {"video_translate_id": "vt-2", "status": "failed", "message": "no face detected"}}"#,
        )
        .unwrap();
    assert_eq!(
        event.status.state,
        JobState::Failed(JobFailure {
            code: None,
            message: Some("no face detected".into())
        })
    );
    assert_eq!(event.status.state, read.state);
    // The same delivery twice is a replay; a tampered one or another secret's is forged.
    let again = receiver.receive(
        &heygen_headers(HEYGEN_SECRET, &event_body),
        &event_body,
        at(NOW),
    );
    assert!(again.unwrap_err().is_replay());
    let mut tampered = event_body.clone();
    tampered[10] ^= 1;
    assert_eq!(
        receiver.receive(
            &heygen_headers(HEYGEN_SECRET, &event_body),
            &tampered,
            at(NOW)
        ),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        receiver.receive(
            &heygen_headers("another", &event_body),
            &event_body,
            at(NOW)
        ),
        Err(WebhookError::BadSignature)
    );
    // Upper-case hex is hex; anything else is malformed.
    let body = heygen_event("vt-3", true);
    let upper = scheme::hex(&mac(HEYGEN_SECRET.as_bytes(), &[&body])).to_uppercase();
    assert!(
        receiver
            .receive(&headers(&[("signature", &upper)]), &body, at(NOW))
            .is_ok()
    );
    let not_hex = "g".repeat(64);
    for bad in ["", "abc", not_hex.as_str()] {
        assert!(matches!(
            receiver.receive(&headers(&[("signature", bad)]), &body, at(NOW)),
            Err(WebhookError::MalformedHeader {
                header: "signature",
                ..
            })
        ));
    }
}

#[test]
fn the_header_of_the_hex_scheme_is_configurable() {
    let receiver = Receiver::builder(
        Scheme::hex_body(HeaderName::from_static("x-heygen-signature")),
        Secret::raw(HEYGEN_SECRET).unwrap(),
    )
    .profile(heygen_event_profile())
    .build()
    .unwrap();
    let body = heygen_event("vt-1", true);
    let tag = scheme::hex(&mac(HEYGEN_SECRET.as_bytes(), &[&body]));
    assert!(
        receiver
            .receive(&headers(&[("x-heygen-signature", &tag)]), &body, at(NOW))
            .is_ok()
    );
    assert!(matches!(
        receiver.receive(&headers(&[("signature", &tag)]), &body, at(NOW)),
        Err(WebhookError::MissingHeader("signature header"))
    ));
}

#[test]
fn simulator_webhooks_read_as_its_status_reads_do() {
    let receiver = standard_receiver();
    let body = sim_body("j-9", "error");
    let event = receiver
        .receive(
            &standard(VECTOR_SECRET, "msg_j-9", NOW, &body),
            &body,
            at(NOW),
        )
        .unwrap();
    assert_eq!(event.job_id, "j-9");
    assert_eq!(
        event.status,
        crate::Profile::simulator().decode(200, &body).unwrap()
    );
    assert_eq!(
        event.status.state,
        JobState::Failed(JobFailure {
            code: Some("translation_failed".into()),
            message: Some("no speech found".into())
        })
    );
    assert_eq!(event.signed_at, Some(at(NOW)));
}

#[test]
fn standard_webhooks_of_another_api_read_through_its_profile() {
    // An OpenAI-style event: `{"type": "video.completed", "data": {"id": ...}}`.
    let profile = crate::Profile::builder("videos-webhook", "/v1/videos/{id}")
        .state("/type")
        .id("/data/id")
        .words(Canonical::Succeeded, ["video.completed"])
        .words(Canonical::Failed, ["video.failed"])
        .build()
        .unwrap();
    let receiver = Receiver::standard_webhooks(Secret::whsec(VECTOR_SECRET).unwrap())
        .profile(profile)
        .build()
        .unwrap();
    let body = br#"{"object": "event", "type": "video.failed", "data": {"id": "video_1"}}"#;
    let event = receiver
        .receive(&standard(VECTOR_SECRET, "evt_1", NOW, body), body, at(NOW))
        .unwrap();
    assert_eq!(event.job_id, "video_1");
    assert!(matches!(event.status.state, JobState::Failed(_)));
    // Signed, but no job id where the profile looks: undecodable, and not remembered.
    let body = br#"{"type": "video.completed", "data": {}}"#;
    let delivery = standard(VECTOR_SECRET, "evt_2", NOW, body);
    for _ in 0..2 {
        assert!(matches!(
            receiver.receive(&delivery, body, at(NOW)),
            Err(WebhookError::Undecodable(_))
        ));
    }
}

#[test]
fn synthesia_signatures_are_hex_over_the_timestamp_and_body() {
    let secret = "synthesia-subscription-secret";
    let receiver = Receiver::builder(Scheme::synthesia(), Secret::raw(secret).unwrap())
        .profile(sim_profile())
        .build()
        .unwrap();
    let body = sim_body("j-1", "completed");
    let tag = timestamped_tag(secret, NOW, &body);
    let ts = NOW.to_string();
    let delivery = headers(&[("synthesia-timestamp", &ts), ("synthesia-signature", &tag)]);
    let event = receiver.receive(&delivery, &body, at(NOW)).unwrap();
    assert_eq!(
        (event.job_id.as_str(), event.delivery_id.as_str()),
        ("j-1", tag.as_str())
    );
    assert!(
        receiver
            .receive(&delivery, &body, at(NOW))
            .unwrap_err()
            .is_replay()
    );
    // The timestamp is signed: another one fails.
    let moved = headers(&[
        ("synthesia-timestamp", "1700000001"),
        ("synthesia-signature", &tag),
    ]);
    assert_eq!(
        receiver.receive(&moved, &body, at(NOW)),
        Err(WebhookError::BadSignature)
    );
    assert!(matches!(
        receiver.receive(&delivery, &body, at(NOW + 3600)),
        Err(WebhookError::StaleTimestamp { .. })
    ));
    assert_eq!(
        receiver.receive(&headers(&[("synthesia-signature", &tag)]), &body, at(NOW)),
        Err(WebhookError::MissingHeader("synthesia-timestamp"))
    );
}

#[test]
fn elevenlabs_signatures_are_read_from_one_header() {
    let secret = "wsec_elevenlabs";
    let receiver = Receiver::builder(Scheme::elevenlabs(), Secret::raw(secret).unwrap())
        .profile(sim_profile())
        .without_replay_cache()
        .build()
        .unwrap();
    let body = sim_body("j-1", "completed");
    let tag = timestamped_tag(secret, NOW, &body);
    let other = timestamped_tag("old-secret", NOW, &body);
    for value in [
        format!("t={NOW},v0={tag}"),
        format!("v0={tag},t={NOW}"),
        format!("t={NOW}, v0={other}, v0={tag}, v1=ignored"),
    ] {
        let delivery = headers(&[("elevenlabs-signature", &value)]);
        assert!(
            receiver.receive(&delivery, &body, at(NOW)).is_ok(),
            "{value}"
        );
    }
    for (value, problem) in [
        (format!("v0={tag}"), "no `t=` timestamp"),
        (format!("t={NOW},t={NOW},v0={tag}"), "more than one `t=`"),
        (format!("t={NOW},v0"), "expected `key=value` pairs"),
        (
            format!("t={NOW}"),
            "no signature of a version this receiver verifies",
        ),
        (
            format!("t=now,v0={tag}"),
            "the timestamp must be Unix seconds",
        ),
    ] {
        let delivery = headers(&[("elevenlabs-signature", &value)]);
        assert_eq!(
            receiver.receive(&delivery, &body, at(NOW)),
            Err(WebhookError::malformed("elevenlabs-signature", problem)),
            "{value}"
        );
    }
    let forged = headers(&[("elevenlabs-signature", &format!("t={NOW},v0={other}"))]);
    assert_eq!(
        receiver.receive(&forged, &body, at(NOW)),
        Err(WebhookError::BadSignature)
    );
    assert!(matches!(
        receiver.receive(
            &headers(&[(
                "elevenlabs-signature",
                &format!("t={},v0={tag}", NOW + 3600)
            )]),
            &body,
            at(NOW)
        ),
        Err(WebhookError::FutureTimestamp { .. })
    ));
}

fn sim_profile() -> crate::Profile {
    crate::Profile::simulator()
}

#[test]
fn settings_are_checked_when_the_receiver_is_built() {
    let builder = || Receiver::standard_webhooks(Secret::whsec(VECTOR_SECRET).unwrap());
    let setting = |r: Result<Receiver, WebhookError>| match r {
        Err(WebhookError::Config { setting, .. }) => setting,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        setting(builder().tolerance(Duration::ZERO).build()),
        "tolerance"
    );
    assert_eq!(setting(builder().max_body(0).build()), "max_body");
    assert_eq!(setting(builder().max_header(10).build()), "max_header");
    assert_eq!(
        setting(builder().body_timeout(Duration::ZERO).build()),
        "body_timeout"
    );
    assert_eq!(
        setting(builder().replay_cache(0, Duration::from_secs(60)).build()),
        "replay_cache.capacity"
    );
    assert_eq!(
        setting(builder().replay_cache(10, Duration::ZERO).build()),
        "replay_cache.ttl"
    );
    let comma = Scheme::timestamped_combined(HeaderName::from_static("x-sig"), "v,0");
    assert_eq!(
        setting(Receiver::builder(comma, Secret::raw("k").unwrap()).build()),
        "scheme.version"
    );
    let mut many = builder();
    for _ in 0..MAX_SECRETS {
        many = many.secret(Secret::raw("k").unwrap());
    }
    assert!(matches!(many.build(), Err(WebhookError::BadSecret(_))));
}

#[test]
fn no_secret_shows_in_debug_or_errors() {
    let secret = "heygen-very-private-key-42";
    let receiver = Receiver::heygen(Secret::raw(secret).unwrap())
        .build()
        .unwrap();
    let body = heygen_event("vt-1", true);
    let shown = format!("{receiver:?} {receiver:#?}");
    assert!(
        !shown.contains(secret) && !shown.contains("very-private"),
        "{shown}"
    );
    let errors = [
        receiver.receive(&heygen_headers("wrong", &body), &body, at(NOW)),
        receiver.receive(&HeaderMap::new(), &body, at(NOW)),
    ];
    for e in errors {
        let e = e.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains(secret), "{text}");
    }
}

proptest! {
    /// Whatever the headers and body, a receiver answers — never panics — and nothing that was
    /// not signed with its secret passes.
    #[test]
    fn arbitrary_deliveries_never_panic_and_never_pass(
        pairs in proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "webhook-id", "webhook-timestamp", "webhook-signature", "signature",
                    "synthesia-timestamp", "synthesia-signature", "elevenlabs-signature",
                    "x-other",
                ]),
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..80),
                    "[tv0-9=, ,a-fA-F]{0,140}".prop_map(String::into_bytes),
                    "v1,[A-Za-z0-9+/=]{0,60}( v1,[A-Za-z0-9+/=]{0,60}){0,3}".prop_map(String::into_bytes),
                    "1[0-9]{9}".prop_map(String::into_bytes),
                ],
            ),
            0..8,
        ),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        now in 0u64..4_000_000_000,
    ) {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let receivers = [
            Receiver::standard_webhooks(Secret::whsec(secret).unwrap()).build().unwrap(),
            Receiver::heygen(Secret::raw(secret).unwrap()).build().unwrap(),
            Receiver::builder(Scheme::synthesia(), Secret::raw(secret).unwrap()).build().unwrap(),
            Receiver::builder(Scheme::elevenlabs(), Secret::raw(secret).unwrap()).build().unwrap(),
        ];
        let mut map = HeaderMap::new();
        for (name, value) in &pairs {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                map.append(*name, value);
            }
        }
        for receiver in &receivers {
            let got = receiver.receive(&map, &body, at(now));
            prop_assert!(
                matches!(
                    got,
                    Err(WebhookError::MissingHeader(_)
                        | WebhookError::MalformedHeader { .. }
                        | WebhookError::BadSignature
                        | WebhookError::StaleTimestamp { .. }
                        | WebhookError::FutureTimestamp { .. })
                ),
                "{:?}: {got:?}", receiver.scheme()
            );
        }
    }
}

proptest! {
    /// Whatever the body and the id, a delivery signed as each scheme says verifies, and the
    /// same delivery with one byte of its body changed does not.
    #[test]
    fn signed_deliveries_verify_whatever_the_body(
        body in proptest::collection::vec(any::<u8>(), 1..600),
        id in "[a-zA-Z0-9_.-]{1,64}",
        flip in any::<prop::sample::Index>(),
    ) {
        let raw = || Secret::raw(HEYGEN_SECRET).unwrap();
        let ts = NOW.to_string();
        let timestamped = timestamped_tag(HEYGEN_SECRET, NOW, &body);
        let cases = [
            (
                Receiver::standard_webhooks(Secret::whsec(VECTOR_SECRET).unwrap()).build().unwrap(),
                standard(VECTOR_SECRET, &id, NOW, &body),
            ),
            (Receiver::heygen(raw()).build().unwrap(), heygen_headers(HEYGEN_SECRET, &body)),
            (
                Receiver::builder(Scheme::synthesia(), raw()).build().unwrap(),
                headers(&[("synthesia-timestamp", &ts), ("synthesia-signature", &timestamped)]),
            ),
            (
                Receiver::builder(Scheme::elevenlabs(), raw()).build().unwrap(),
                headers(&[("elevenlabs-signature", &format!("t={ts},v0={timestamped}"))]),
            ),
        ];
        let mut tampered = body.clone();
        tampered[flip.index(body.len())] ^= 0x20;
        for (receiver, delivery) in &cases {
            prop_assert!(receiver.verify(delivery, &body, at(NOW)).is_ok(), "{:?}", receiver.scheme());
            prop_assert_eq!(
                receiver.verify(delivery, &tampered, at(NOW)),
                Err(WebhookError::BadSignature)
            );
        }
    }
}
