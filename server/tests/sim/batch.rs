//! `GET /v1/jobs?ids=a,b,c`: batched status reads.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{client, create, error_code, sample, spawn_with, status_json};

#[tokio::test]
async fn a_batch_answers_each_job_as_its_own_read_and_lists_the_unknown() {
    let server = spawn_with(|s| s.legacy.delay = Duration::from_secs(3600)).await;
    let done = create(&server, json!({"duration_ms": 0, "outcome": "error"})).await;
    let pending = create(&server, json!({"duration_ms": 60_000})).await;
    let url = server.url(&format!(
        "/v1/jobs?ids={done},j-nope,{pending},{done},legacy"
    ));
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\"b-"), "{etag}");
    // The soonest hint of the pending jobs: the one-minute job's, not the legacy job's hour.
    let hint: u64 = r.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((30_000..=60_000).contains(&hint), "{hint}");
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [done.as_str(), pending.as_str(), "legacy"],
        "asked order, once each"
    );
    assert_eq!(v["not_found"], json!(["j-nope"]));
    // Each as its own status read says, with its own ETag.
    for job in v["jobs"].as_array().unwrap() {
        let id = job["id"].as_str().unwrap();
        let mut alone = status_json(&server, id).await;
        let r = client()
            .get(server.url(&format!("/v1/jobs/{id}/status")))
            .send()
            .await
            .unwrap();
        assert_eq!(job["etag"], r.headers()["etag"].to_str().unwrap());
        let mut job = job.clone();
        job.as_object_mut().unwrap().remove("etag");
        for body in [&mut job, &mut alone] {
            // Progress and the estimate move between two reads; the rest must not.
            let obj = body.as_object_mut().unwrap();
            obj.remove("progress");
            obj.remove("eta_ms");
        }
        assert_eq!(job, alone, "{id}");
    }
    assert_eq!(v["jobs"][0]["error"]["code"], "translation_failed");
    let text = server.state().render_metrics();
    assert_eq!(sample(&text, "sim_batch_read_size_count"), Some(1.0));
    assert_eq!(sample(&text, "sim_batch_read_size_sum"), Some(4.0));
    assert_eq!(
        sample(
            &text,
            "sim_status_responses_total{channel=\"batch\",result=\"error\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_batch_whose_jobs_did_not_change_is_not_modified() {
    let server = spawn_with(|_| {}).await;
    // Long enough that the first reads all happen before it ends, on a loaded machine too.
    let soon = create(&server, json!({"duration_ms": 2000})).await;
    let later = create(&server, json!({"duration_ms": 60_000})).await;
    let url = server.url(&format!("/v1/jobs?ids={soon},{later}"));
    let first = client().get(&url).send().await.unwrap();
    let etag = first.headers()["etag"].clone();
    let again = client()
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.bytes().await.unwrap().is_empty());
    // Another set of ids is another answer.
    let other = client()
        .get(server.url(&format!("/v1/jobs?ids={later},{soon}")))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    // Once a job ends, the tag moves.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let moved = client()
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    assert_ne!(moved.headers()["etag"], etag);
    let v: Value = moved.json().await.unwrap();
    assert_eq!(v["jobs"][0]["result"], "completed");
    assert_eq!(v["not_found"], json!([]));
}

#[tokio::test]
async fn a_batch_is_bounded_and_its_query_checked() {
    let server = spawn_with(|s| s.jobs.max_batch_ids = 3).await;
    let cases = [
        "/v1/jobs".to_owned(),
        "/v1/jobs?ids=".to_owned(),
        "/v1/jobs?ids=a,,b".to_owned(),
        "/v1/jobs?ids=a,b,c,d".to_owned(),
        format!("/v1/jobs?ids={}", "j".repeat(65)),
    ];
    for path in cases {
        let r = client().get(server.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(error_code(r).await, "invalid_ids", "{path}");
    }
    // Three distinct ids are fine, however often each is named.
    let r = client()
        .get(server.url("/v1/jobs?ids=a,b,c,a,b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["not_found"], json!(["a", "b", "c"]));
}
