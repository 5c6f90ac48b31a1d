//! The deadline is honoured whatever the mechanism; dropping a wait leaves nothing behind.

use std::time::Duration;

use tokio::time::Instant;
use translation_status::GiveUpReason;
use translation_status::{Error, JobState, WaitOptions};

use crate::support::{client, eventually, job, metric, sim};

#[tokio::test]
async fn a_ten_second_job_with_a_one_second_deadline_gives_up_at_one_second() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let cases = [
        ("sse", WaitOptions::new()),
        ("long-poll", WaitOptions::new().sse(false)),
        ("polling", WaitOptions::new().sse(false).long_poll(false)),
    ];
    for (name, options) in cases {
        let id = job(&server, 10_000);
        let started = Instant::now();
        let result = client
            .wait_with(id.as_str(), &options.deadline(Duration::from_secs(1)))
            .await;
        let elapsed = started.elapsed();
        let Err(Error::GaveUp(g)) = result else {
            panic!("{name}: expected GaveUp, got {result:?}");
        };
        eprintln!("deadline ({name}): {elapsed:?}, {:?}", g.report);
        assert!(
            elapsed >= Duration::from_millis(950) && elapsed <= Duration::from_millis(1100),
            "{name}: {elapsed:?}"
        );
        assert_eq!(g.reason, GiveUpReason::Deadline);
        // A stream open at the deadline is cut there, and what it said last is current;
        // polling takes a last look, sent to be answered by the deadline.
        let least = if name == "sse" { 1 } else { 2 };
        assert!(
            g.requests() >= least,
            "{name}: {} request(s), expected at least {least}",
            g.requests()
        );
        assert!(matches!(
            g.last_status.as_ref().map(|s| &s.state),
            Some(JobState::Pending { .. })
        ));
        let text = g.to_string();
        assert!(text.contains("wait again"), "{text}");
        assert!(Error::GaveUp(g).is_timeout());
    }
}

#[tokio::test]
async fn dropping_a_wait_closes_its_stream() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let id = job(&server, 30_000);
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.wait(id.as_str()).await }
    });
    eventually(&server, "an open stream", |m| {
        metric(m, "sim_sse_streams", &[]) == 1.0
    })
    .await;
    waiting.abort();
    eventually(&server, "no open stream", |m| {
        metric(m, "sim_sse_streams", &[]) == 0.0
    })
    .await;
}

#[tokio::test]
async fn dropping_a_wait_releases_its_held_request() {
    let server = sim(|s| s.sse.enabled = false).await;
    let client = client(&server);
    let id = job(&server, 30_000);
    let wait = client.wait(id.as_str());
    // Dropping the future (here: by the timeout) cancels the held request.
    let waited = tokio::time::timeout(Duration::from_millis(600), async {
        tokio::join!(wait, async {
            eventually(&server, "a held request", |m| {
                metric(m, "sim_longpoll_waiters", &[]) == 1.0
            })
            .await;
        })
    })
    .await;
    assert!(waited.is_err(), "the wait cannot have finished");
    eventually(&server, "no held request", |m| {
        metric(m, "sim_longpoll_waiters", &[]) == 0.0
    })
    .await;
    let requests = metric(
        &server.state().render_metrics(),
        "sim_http_requests_total",
        &[],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = metric(
        &server.state().render_metrics(),
        "sim_http_requests_total",
        &[],
    );
    assert_eq!(requests, later, "nothing was sent after the drop");
}

#[tokio::test]
async fn a_poll_budget_gives_up_with_the_count() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let options = WaitOptions::new()
        .sse(false)
        .long_poll(false)
        .policy(translation_status::poll::Fixed::new(Duration::from_millis(
            100,
        )))
        .max_polls(3);
    match client
        .wait_with(job(&server, 10_000).as_str(), &options)
        .await
    {
        Err(Error::GaveUp(g)) => {
            assert_eq!(g.reason, GiveUpReason::MaxPolls);
            assert_eq!(g.requests(), 3);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wait_that_gives_up_cancels_its_job_when_asked_and_only_a_little_late() {
    use translation_status::RemoteCancel;
    use translation_status::wait::CANCEL_BOUND;

    let server = sim(|_| {}).await;
    let client = client(&server);
    let stuck = server
        .state()
        .create_job(translation_sim::JobSpec {
            hang: true,
            ..translation_sim::JobSpec::default()
        })
        .unwrap();
    let options = WaitOptions::new()
        .deadline(Duration::from_millis(800))
        .cancel_on_give_up(true);
    let started = Instant::now();
    let err = client
        .wait_with(stuck.as_str(), &options)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let Error::GaveUp(g) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(g.remote_cancel, Some(RemoteCancel::Canceled));
    assert!(err.to_string().contains("canceled on the service"), "{err}");
    assert!(
        elapsed < Duration::from_millis(800) + CANCEL_BOUND,
        "{elapsed:?}"
    );
    // Canceled, sticky: the service says so to every reader.
    let status = client.status(stuck.as_str()).await.unwrap();
    assert_eq!(status.state, JobState::Canceled);
    eventually(&server, "the cancel counted", |text| {
        metric(text, "sim_jobs_finished_total", &[("outcome", "canceled")]) >= 1.0
    })
    .await;

    // A service that never answers the cancel: the wait still ends within the bound.
    let (url, cancels) = silent_cancel().await;
    let client = translation_status::Client::new(&url).unwrap();
    let started = Instant::now();
    let err = client.wait_with("j-1", &options).await.unwrap_err();
    let elapsed = started.elapsed();
    let Error::GaveUp(g) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(g.remote_cancel, Some(RemoteCancel::NoAnswer));
    assert_eq!(*cancels.lock().unwrap(), 1, "one request, not retried");
    assert!(
        elapsed >= Duration::from_millis(800) + CANCEL_BOUND - Duration::from_millis(100),
        "it did wait for an answer: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(800) + CANCEL_BOUND + Duration::from_secs(2),
        "{elapsed:?}"
    );
}

/// Pending for ever on `GET /v1/jobs/{id}/status`; a cancel is counted and never answered.
async fn silent_cancel() -> (String, std::sync::Arc<std::sync::Mutex<u32>>) {
    use axum::routing::{get, post};
    use std::sync::{Arc, Mutex};
    let cancels = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&cancels);
    let app = axum::Router::new()
        .route(
            "/v1/jobs/{id}/status",
            get(|| async { axum::Json(serde_json::json!({"result": "pending"})) }),
        )
        .route(
            "/v1/jobs/{id}/cancel",
            post(move || {
                *counted.lock().unwrap() += 1;
                async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, cancels)
}
