//! The deadline is honoured whatever the mechanism; dropping a wait leaves nothing behind.

use std::time::Duration;

use tokio::time::Instant;
use translation_status::poll::GiveUpReason;
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
