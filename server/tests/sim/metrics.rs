//! `/metrics` after real traffic carries the poll-efficiency numbers.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::common::{client, create, sample, spawn_with};

#[tokio::test]
async fn poll_efficiency_series_carry_the_right_values() {
    let server = spawn_with(|s| s.sse.progress_interval = Duration::ZERO).await;
    let c = client();

    // A job polled three times: twice pending, once completed.
    let polled = create(&server, json!({"duration_ms": 300})).await;
    let url = server.url(&format!("/v1/jobs/{polled}/status"));
    for _ in 0..2 {
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.get(&url).send().await.unwrap();
    // A fourth read of the finished job changes nothing in the per-job series.
    c.get(&url).send().await.unwrap();

    // A job waited on by long-poll: one request, learned at once.
    let held = create(&server, json!({"duration_ms": 200, "outcome": "error"})).await;
    let r = c
        .get(server.url(&format!("/v1/jobs/{held}/status")))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["preference-applied"], "wait=10");

    // A job watched by SSE.
    let streamed = create(&server, json!({"duration_ms": 200})).await;
    let mut body = c
        .get(server.url(&format!("/v1/jobs/{streamed}/events")))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    while body.next().await.is_some() {}

    let r = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();

    // Three jobs reported terminal: after 3, 1 and 1 requests.
    assert_eq!(
        sample(&text, "sim_status_polls_per_job_count"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "sim_status_polls_per_job_sum"), Some(5.0));
    assert_eq!(
        sample(&text, "sim_status_polls_per_job_bucket{le=\"1\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "sim_status_polls_per_job_bucket{le=\"3\"}"),
        Some(3.0)
    );

    // Detection delay, once per job per channel: the polled job was seen ~100 ms late; the
    // long-polled and streamed ones within a few milliseconds.
    for channel in ["poll", "longpoll", "sse"] {
        let count = format!("sim_detection_delay_seconds_count{{channel=\"{channel}\"}}");
        assert_eq!(sample(&text, &count), Some(1.0), "{channel}");
    }
    let poll_delay = sample(&text, "sim_detection_delay_seconds_sum{channel=\"poll\"}").unwrap();
    assert!((0.05..5.0).contains(&poll_delay), "{poll_delay}");
    let fast = "sim_detection_delay_seconds_bucket{channel=\"longpoll\",le=\"0.1\"}";
    assert_eq!(sample(&text, fast), Some(1.0), "long-poll learns at once");
    let fast = "sim_detection_delay_seconds_bucket{channel=\"sse\",le=\"0.1\"}";
    assert_eq!(sample(&text, fast), Some(1.0), "SSE learns at once");

    assert_eq!(
        sample(
            &text,
            "sim_status_responses_total{channel=\"poll\",result=\"pending\"}"
        ),
        Some(2.0),
        "two wasted polls"
    );
    assert_eq!(
        sample(
            &text,
            "sim_status_responses_total{channel=\"poll\",result=\"completed\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "sim_status_responses_total{channel=\"longpoll\",result=\"error\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "sim_jobs_created_total"),
        Some(4.0),
        "3 + the legacy job"
    );
    assert_eq!(
        sample(&text, "sim_jobs_finished_total{outcome=\"error\"}"),
        Some(1.0)
    );
    let ok =
        "sim_http_requests_total{route=\"/v1/jobs/{id}/status\",method=\"GET\",status=\"200\"}";
    assert_eq!(sample(&text, ok), Some(5.0));
    assert!(text.contains("# TYPE sim_http_request_duration_seconds histogram"));
    assert!(text.contains("# HELP sim_status_polls_per_job "));
    assert_eq!(sample(&text, "sim_longpoll_waiters"), Some(0.0));
}

#[tokio::test]
async fn metrics_can_be_disabled() {
    let server = spawn_with(|s| s.metrics.enabled = false).await;
    let r = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The series the dashboards' change-stream row reads exist before any stream, batch or
/// long-poll was served, so panels show zero rather than "no data".
#[tokio::test]
async fn change_stream_series_exist_from_the_start() {
    let server = spawn_with(|_| {}).await;
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Retained changes (the legacy job's creation, at least) are counted by the sweeper.
    assert!(sample(&text, "sim_change_log_entries").is_some(), "{text}");
    for series in [
        "sim_change_streams",
        "sim_change_stream_jobs_count",
        "sim_change_stream_jobs_bucket{le=\"+Inf\"}",
        "sim_batch_read_size_count",
        "sim_batch_read_size_bucket{le=\"+Inf\"}",
        "sim_change_stream_resumes_total",
        "sim_change_resets_total{channel=\"stream\"}",
        "sim_change_resets_total{channel=\"changes\"}",
        "sim_change_bookmarks_total{kind=\"idle\"}",
        "sim_change_bookmarks_total{kind=\"final\"}",
        "sim_changes_longpolls_total{outcome=\"changes\"}",
        "sim_changes_longpolls_total{outcome=\"empty\"}",
        "sim_changes_longpolls_total{outcome=\"reset\"}",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in {text}");
    }
}
