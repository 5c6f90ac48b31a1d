//! The job API: legacy route, creation, status fields, hints, ETags, bad input.

use std::time::Duration;

use serde_json::{Value, json};
use translation_sim::settings::DurationKind;

use crate::common::{client, create, error_code, spawn, spawn_with, status_json};

#[tokio::test]
async fn legacy_status_is_plain_and_reset_restarts_it() {
    let server = spawn().await;
    let c = client();
    let r = c.get(server.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("retry-after").is_none(),
        "plain route has no hints"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"result": "pending"})
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let v: Value = c
        .get(server.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"result": "completed"}));

    let r = c
        .post(server.url("/v1/reset"))
        .json(&json!({"duration_ms": 150, "outcome": "error"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = c
        .get(server.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"result": "pending"}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let v: Value = c
            .get(server.url("/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            v,
            json!({"result": "error"}),
            "terminal outcome never changes"
        );
    }
}

#[tokio::test]
async fn legacy_route_reports_any_job_in_plain_shape() {
    let server = spawn().await;
    let id = create(&server, json!({"duration_ms": 0, "outcome": "error"})).await;
    let c = client();
    let v: Value = c
        .get(server.url(&format!("/status?job={id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"result": "error"}));
    let r = c.get(server.url("/status?job=nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "not_found");
}

#[tokio::test]
async fn created_jobs_report_fields_hints_and_terminal_state() {
    let server = spawn().await;
    let c = client();
    let r = c
        .post(server.url("/v1/jobs"))
        .json(&json!({"duration_ms": 400}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert_eq!(created["status_url"], format!("/v1/jobs/{id}/status"));
    assert_eq!(created["events_url"], format!("/v1/jobs/{id}/events"));

    let r = c
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let retry_ms: u64 = r.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "seconds, rounded up, at least 1");
    assert!((100..=400).contains(&retry_ms), "{retry_ms}");
    assert!(r.headers()["etag"].to_str().unwrap().starts_with("W/\""));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], id);
    assert_eq!(v["result"], "pending");
    let progress = v["progress"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&progress));
    let eta = v["eta_ms"].as_u64().unwrap();
    assert!(
        eta <= 400 && eta + 5 >= retry_ms.saturating_sub(100),
        "eta {eta}"
    );
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(v.get("completed_at").is_none());

    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c
        .get(server.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("retry-after").is_none(),
        "no hint once terminal"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], "completed");
    assert_eq!(v["progress"], 1.0);
    assert!(v.get("eta_ms").is_none());
    let created_at = humantime::parse_rfc3339(v["created_at"].as_str().unwrap()).unwrap();
    let completed_at = humantime::parse_rfc3339(v["completed_at"].as_str().unwrap()).unwrap();
    let took = completed_at.duration_since(created_at).unwrap();
    assert!((399..=401).contains(&took.as_millis()), "{took:?}");

    let failed = create(&server, json!({"duration_ms": 0, "outcome": "error"})).await;
    let v: Value = status_json(&server, &failed).await;
    assert_eq!(v["result"], "error");
    assert_eq!(v["error"]["code"], "translation_failed");
}

#[tokio::test]
async fn hints_can_be_switched_off() {
    let server = spawn_with(|s| {
        s.hints.eta = false;
        s.hints.retry_after = false;
    })
    .await;
    let id = create(&server, json!({"duration_ms": 5000})).await;
    let r = client()
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("retry-after").is_none());
    assert!(r.headers().get("retry-after-ms").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], "pending");
    assert!(v.get("eta_ms").is_none());
}

#[tokio::test]
async fn eta_noise_biases_the_estimate_within_bounds() {
    let server = spawn_with(|s| s.hints.eta_noise = 0.2).await;
    let mut etas = Vec::new();
    for _ in 0..30 {
        let id = create(&server, json!({"duration_ms": 10_000})).await;
        let v: Value = status_json(&server, &id).await;
        etas.push(v["eta_ms"].as_u64().unwrap());
    }
    assert!(
        etas.iter().all(|e| (7_500..=12_000).contains(e)),
        "{etas:?}"
    );
    let distinct: std::collections::HashSet<_> = etas.iter().map(|e| e / 100).collect();
    assert!(distinct.len() > 3, "noise is applied: {etas:?}");
}

#[tokio::test]
async fn etag_and_if_none_match_give_304_until_the_version_changes() {
    let server = spawn().await;
    let id = create(&server, json!({"duration_ms": 300})).await;
    let c = client();
    let url = server.url(&format!("/v1/jobs/{id}/status"));
    let r = c.get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = c
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(
        r.headers().get("retry-after-ms").is_some(),
        "hints on 304 too"
    );
    assert!(r.bytes().await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.json::<Value>().await.unwrap()["result"], "completed");
}

#[tokio::test]
async fn configured_distribution_and_error_rate_apply_to_jobs_created_without_them() {
    let server = spawn_with(|s| {
        s.jobs.error_rate = 1.0;
        s.jobs.duration.kind = DurationKind::Fixed;
        s.jobs.duration.value = Duration::from_millis(100);
    })
    .await;
    let c = client();
    let r = c.post(server.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 201, "an empty body is fine");
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = server.url(&format!("/v1/jobs/{id}/status"));
    let v: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["result"], "pending");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["result"], "error");
    // An explicit outcome wins over the error rate.
    let ok = create(&server, json!({"duration_ms": 0, "outcome": "completed"})).await;
    let v: Value = status_json(&server, &ok).await;
    assert_eq!(v["result"], "completed");
}

#[tokio::test]
async fn bad_input_gets_typed_json_errors() {
    let server = spawn().await;
    let c = client();
    let post = |body: &'static str, ct: Option<&'static str>| {
        let mut rb = c.post(server.url("/v1/jobs")).body(body);
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        rb.send()
    };
    let json_ct = Some("application/json");
    let table: Vec<(&str, Option<&str>, u16, &str)> = vec![
        ("{\"duration_ms\": ", json_ct, 400, "bad_request"),
        ("[1,2", json_ct, 400, "bad_request"),
        ("{\"duration_ms\": \"soon\"}", json_ct, 422, "invalid_job"),
        ("{\"duration_ms\": -5}", json_ct, 422, "invalid_job"),
        ("{\"outcome\": \"maybe\"}", json_ct, 422, "invalid_job"),
        ("{\"colour\": \"red\"}", json_ct, 422, "invalid_job"),
        (
            "{\"duration_ms\": 99999999999}",
            json_ct,
            422,
            "invalid_job",
        ),
        (
            "{\"callback_url\": \"http://192.0.2.1/hook\"}",
            json_ct,
            422,
            "callback_not_allowed",
        ),
        (
            "{\"callback_url\": \"not a url\"}",
            json_ct,
            422,
            "invalid_job",
        ),
        ("{\"duration_ms\": 5}", None, 415, "unsupported_media_type"),
        (
            "{\"duration_ms\": 5}",
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, ct, status, code) in table {
        let r = post(body, ct).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(error_code(r).await, code, "{body}");
    }
    let huge = format!(
        "{{\"callback_url\": \"http://127.0.0.1/{}\"}}",
        "a".repeat(20_000)
    );
    let r = c
        .post(server.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "payload_too_large");

    for path in [
        "/v1/jobs/j-nope/status",
        "/v1/jobs/j-nope/events",
        "/v1/jobs/j-nope",
        "/nowhere",
    ] {
        let r = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(error_code(r).await, "not_found", "{path}");
    }
    // Nothing above created a job or broke the server.
    assert_eq!(server.state().job_count(), 1, "only the legacy job");
    assert_eq!(
        c.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn junk_input_never_gets_a_5xx() {
    use rand::{Rng, SeedableRng};
    let server = spawn().await;
    let id = create(&server, json!({"duration_ms": 50})).await;
    let c = client();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(2026);
    let junk = |rng: &mut rand::rngs::SmallRng, n: usize| -> String {
        (0..rng.random_range(0..n))
            .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
            .collect()
    };
    for i in 0..300 {
        let path_junk: String = junk(&mut rng, 12)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.~%".contains(*c))
            .collect();
        let (method, path) = match i % 6 {
            0 => ("POST", "/v1/jobs".to_string()),
            1 => ("POST", "/v1/reset".to_string()),
            2 => ("GET", format!("/v1/jobs/{path_junk}/status")),
            3 => ("GET", format!("/v1/jobs/{id}/status")),
            4 => ("GET", format!("/status?job={path_junk}")),
            _ => ("PUT", "/admin/faults".to_string()),
        };
        let rb = c
            .request(method.parse().unwrap(), server.url(&path))
            .header(
                "content-type",
                if i % 2 == 0 {
                    "application/json"
                } else {
                    "x/y"
                },
            )
            .header("prefer", format!("wait={}", junk(&mut rng, 6)))
            .header("if-none-match", junk(&mut rng, 20))
            .header("last-event-id", junk(&mut rng, 5))
            .body(junk(&mut rng, 200));
        let r = rb.send().await.unwrap();
        assert!(r.status().as_u16() < 500, "{method} {path}: {}", r.status());
        if !r.status().is_success() && r.status() != 304 {
            let v: Value = r.json().await.unwrap();
            assert!(
                v["error"]["code"].is_string(),
                "JSON error for {method} {path}"
            );
        }
    }
}
