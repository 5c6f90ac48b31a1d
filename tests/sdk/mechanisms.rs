//! Each mechanism is chosen when the server offers it, and the next one takes over when it
//! does not. Request counts are checked against the numbers the design promises, with margins
//! only where the network adds time.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;
use translation_status::poll::Basis;
use translation_status::{Client, FallbackReason, JobRef, Mechanism, WaitOptions};

use crate::support::{client, job, metric, plain_server, sim, status_requests};

#[tokio::test]
async fn sse_is_first_choice_one_stream_per_job() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let id = job(&server, 1500);
    let done = client.wait(id.as_str()).await.unwrap();
    eprintln!("sse: {:?}", done.report);
    assert_eq!(done.report.mechanism, Mechanism::Sse);
    assert_eq!(done.report.requests, 1, "one stream");
    assert!(done.report.fallbacks.is_empty());
    let delay = done.report.detection_delay.unwrap();
    assert!(delay < Duration::from_millis(500), "{delay:?}");
    let text = server.state().render_metrics();
    assert_eq!(
        metric(&text, "sim_status_responses_total", &[("channel", "poll")]),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "sim_status_responses_total",
            &[("channel", "longpoll")]
        ),
        0.0
    );
    assert!(metric(&text, "sim_status_responses_total", &[("channel", "sse")]) >= 2.0);
}

#[tokio::test]
async fn without_sse_long_poll_takes_over_within_t_over_h_plus_one() {
    let server = sim(|s| {
        s.sse.enabled = false;
        s.longpoll.max_wait = Duration::from_secs(1);
    })
    .await;
    let client = client(&server);
    // T = 2.5 s, H = 1 s: at most ⌈T/H⌉ + 1 = 4 status requests.
    let first = client.wait(job(&server, 2500).as_str()).await.unwrap();
    eprintln!("long-poll (first): {:?}", first.report);
    assert_eq!(first.report.mechanism, Mechanism::LongPoll);
    assert_eq!(first.report.fallbacks.len(), 1);
    assert_eq!(first.report.fallbacks[0].from, Mechanism::Sse);
    assert_eq!(
        first.report.fallbacks[0].reason,
        FallbackReason::NotSupported
    );
    assert!(status_requests(&first.report) <= 4, "{:?}", first.report);
    // The client remembers that this server has no streams: no probe the second time.
    let second = client.wait(job(&server, 2500).as_str()).await.unwrap();
    eprintln!("long-poll (second): {:?}", second.report);
    assert_eq!(second.report.mechanism, Mechanism::LongPoll);
    assert!(second.report.fallbacks.is_empty(), "{:?}", second.report);
    assert!(second.report.requests <= 4, "{:?}", second.report);
    assert!(second.report.detection_delay.unwrap() < Duration::from_millis(500));
    let text = server.state().render_metrics();
    assert!(
        metric(
            &text,
            "sim_status_responses_total",
            &[("channel", "longpoll")]
        ) <= 8.0
    );
    assert_eq!(
        metric(&text, "sim_status_responses_total", &[("channel", "poll")]),
        0.0
    );
}

#[tokio::test]
async fn refused_streams_fall_back_for_this_wait() {
    let server = sim(|s| s.sse.max_streams = 0).await;
    let client = client(&server);
    let done = client.wait(job(&server, 1200).as_str()).await.unwrap();
    assert_eq!(done.report.mechanism, Mechanism::LongPoll);
    assert_eq!(done.report.fallbacks[0].reason, FallbackReason::Refused);
}

#[tokio::test]
async fn without_long_poll_hints_drive_at_most_seven_requests_for_five_second_jobs() {
    let server = sim(|s| {
        s.sse.enabled = false;
        s.longpoll.enabled = false;
        s.hints.eta_noise = 0.2;
    })
    .await;
    let client = client(&server);
    // Five jobs at once, each with its own ±20 % estimate bias.
    let ids: Vec<String> = (0..5).map(|_| job(&server, 5000)).collect();
    let waits = ids.iter().map(|id| client.wait(id.as_str()));
    for done in join_all(waits).await {
        let done = done.unwrap();
        eprintln!("hints: {:?}", done.report);
        assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::Hints));
        assert!(status_requests(&done.report) <= 7, "{:?}", done.report);
        assert!(
            done.report.detection_delay.unwrap() < Duration::from_millis(1500),
            "{:?}",
            done.report
        );
        assert!(
            done.report
                .fallbacks
                .iter()
                .any(|f| f.from == Mechanism::LongPoll && f.reason == FallbackReason::NotApplied),
            "{:?}",
            done.report
        );
    }
}

#[tokio::test]
async fn without_estimates_progress_alone_places_the_end() {
    let server = sim(|s| {
        s.sse.enabled = false;
        s.longpoll.enabled = false;
        s.hints.eta = false;
        s.hints.retry_after = false;
    })
    .await;
    let client = client(&server);
    let id = job(&server, 2500);
    // Read a few per cent in: at its creation, a job says nothing (progress 0).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done = client.wait(id.as_str()).await.unwrap();
    eprintln!("progress: {:?}", done.report);
    assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::Hints));
    // A look at once, looks at two thirds of the earliest end each reading allows until one
    // is past half-way, one at the end that reading implies.
    assert!(status_requests(&done.report) <= 4, "{:?}", done.report);
    let delay = done.report.detection_delay.unwrap();
    assert!(delay < Duration::from_millis(250), "{delay:?}");
    // Every pending read came back with its progress: none was made conditional.
    let text = server.state().render_metrics();
    let answers = metric(&text, "sim_status_responses_total", &[]);
    assert!(answers >= 2.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "sim_status_responses_total",
            &[("result", "not_modified")]
        ),
        0.0
    );
}

#[tokio::test]
async fn with_nothing_but_plain_polls_the_cold_start_schedule_runs() {
    let server = sim(|s| {
        s.sse.enabled = false;
        s.longpoll.enabled = false;
        s.hints.eta = false;
        s.hints.retry_after = false;
    })
    .await;
    let client = client(&server);
    let plain = format!("{}/status?job={}", server.base_url(), job(&server, 2500));
    let done = client.wait(JobRef::status_url(plain)).await.unwrap();
    eprintln!("cold start: {:?}", done.report);
    assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::ColdStart));
    // Polls at once, then from 0.6–0.85 s on at √2 times each age: 5 or 6 looks for a
    // 2.5 s job (the bound is 4 + 2.5 · log₂ 2.5 = 7.3).
    let n = status_requests(&done.report);
    assert!((5..=7).contains(&n), "{:?}", done.report);
}

#[tokio::test]
async fn a_plain_status_server_works_without_errors_or_probes() {
    let plain = plain_server(Duration::from_millis(2500), "completed").await;
    let client = Client::builder().build().unwrap();
    let url = format!("{}/status", plain.url);
    let status = client.status(url.as_str()).await.unwrap();
    assert!(!status.is_terminal());
    let done = client.wait(url.as_str()).await.unwrap();
    eprintln!("plain: {:?}", done.report);
    let hits = plain.hits.lock().unwrap().clone();
    assert!(
        hits.iter().all(|p| p == "/status"),
        "probed elsewhere: {hits:?}"
    );
    assert_eq!(done.report.retries, 0);
    // One read above, then the cold start's 5 or 6 looks at a 2.5 s job.
    assert!(hits.len() <= 8, "{hits:?}");
    // Offering long-poll cost nothing: the first answer said it was not applied.
    assert_eq!(done.report.fallbacks.len(), 1, "{:?}", done.report);
    assert_eq!(done.report.fallbacks[0].reason, FallbackReason::NotApplied);

    // A second wait on the same server does not offer long-poll any more.
    let again = client.wait(url.as_str()).await.unwrap();
    assert!(again.report.fallbacks.is_empty(), "{:?}", again.report);
    assert_eq!(again.report.requests, 1);
}

#[tokio::test]
async fn a_plain_failed_job_reports_job_failed() {
    let plain = plain_server(Duration::from_millis(300), "ERROR").await;
    let client = Client::builder().build().unwrap();
    match client.wait(format!("{}/status", plain.url)).await {
        Err(translation_status::Error::JobFailed(f)) => {
            assert_eq!(f.message, None);
            assert!(f.to_string().contains("failed"));
        }
        other => panic!("{other:?}"),
    }
}

/// The plain `/status?job=ID` shape gives nothing but the result: after 20 jobs the client
/// knows they take 2 s and finds the 21st with at most 3 requests, within 300 ms.
#[tokio::test]
async fn the_learned_schedule_finds_two_second_jobs_in_three_requests() {
    let server = sim(|_| {}).await;
    let client = Client::builder().build().unwrap();
    let url = |id: &str| format!("{}/status?job={id}", server.base_url());
    // Four rounds of five concurrent jobs: two to learn the rough size, two to narrow it.
    for round in 0..4 {
        let ids: Vec<String> = (0..5).map(|_| job(&server, 2000)).collect();
        let waits = ids
            .iter()
            .map(|id| client.wait(JobRef::status_url(url(id))));
        for done in join_all(waits).await {
            let done = done.unwrap();
            eprintln!("learning round {round}: {:?}", done.report);
        }
    }
    assert_eq!(client.learned_durations().model().samples(), 20);
    let created = Instant::now();
    let id = job(&server, 2000);
    let done = client.wait(JobRef::status_url(url(&id))).await.unwrap();
    let detection = Instant::now().duration_since(created + Duration::from_secs(2));
    eprintln!("learned: {:?}, detection ≤ {detection:?}", done.report);
    assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::Learned));
    assert!(done.report.requests <= 3, "{:?}", done.report);
    assert!(detection <= Duration::from_millis(300), "{detection:?}");
    let text = server.state().render_metrics();
    assert_eq!(
        metric(&text, "sim_status_responses_total", &[("channel", "poll")]),
        0.0
    );
}

#[tokio::test]
async fn a_job_failure_is_a_typed_error_with_the_message() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    for options in [
        WaitOptions::new(),
        WaitOptions::new().sse(false),
        WaitOptions::new().sse(false).long_poll(false),
    ] {
        let id = crate::support::job_ending(&server, 300, translation_sim::Outcome::Error);
        match client.wait_with(id.as_str(), &options).await {
            Err(translation_status::Error::JobFailed(f)) => {
                assert_eq!(f.code.as_deref(), Some("translation_failed"));
                assert!(
                    f.message
                        .as_deref()
                        .unwrap_or("")
                        .contains("could not be translated")
                );
                assert!(f.to_string().contains("create a new job"), "{f}");
            }
            other => panic!("{options:?}: {other:?}"),
        }
        // A failed job is still a successful status read.
        let status = client.status(id.as_str()).await.unwrap();
        assert!(status.is_terminal());
    }
}

/// A custom policy decides when to poll; push mechanisms replace polling. The report says
/// which: `policy_pauses` is 0 while a stream or held long-polls carry the wait, and counts
/// the policy's pauses once both are off.
#[tokio::test]
async fn the_report_says_whether_the_policy_set_the_pace() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let every_100ms = || translation_status::poll::Fixed::new(Duration::from_millis(100));

    let streamed = WaitOptions::new().policy(every_100ms());
    let done = client
        .wait_with(job(&server, 800).as_str(), &streamed)
        .await
        .unwrap();
    assert_eq!(done.report.mechanism, Mechanism::Sse);
    assert_eq!(done.report.policy_pauses, 0, "{:?}", done.report);

    let held = WaitOptions::new().sse(false).policy(every_100ms());
    let done = client
        .wait_with(job(&server, 800).as_str(), &held)
        .await
        .unwrap();
    assert_eq!(done.report.mechanism, Mechanism::LongPoll);
    assert_eq!(done.report.policy_pauses, 0, "{:?}", done.report);

    let polled = WaitOptions::new()
        .sse(false)
        .long_poll(false)
        .policy(every_100ms());
    let done = client
        .wait_with(job(&server, 800).as_str(), &polled)
        .await
        .unwrap();
    assert!(
        matches!(done.report.mechanism, Mechanism::Polling(_)),
        "{:?}",
        done.report
    );
    // Every pause between two polls was the policy's: about 8 in 0.8 s at 100 ms.
    assert!(done.report.policy_pauses >= 4, "{:?}", done.report);
    assert_eq!(
        done.report.policy_pauses,
        done.report.requests - 1,
        "{:?}",
        done.report
    );
}
