//! How one request survives: transient failures are retried quickly, fatal answers are not,
//! `Retry-After` is obeyed exactly, and nothing the server sends can make the client panic.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;
use translation_sim::Faults;
use translation_status::{Client, Error, JobState, WaitOptions};

use crate::support::{Reply, client, job, json, scripted, sim, with_header};

const PENDING: &str = r#"{"result":"pending"}"#;
const COMPLETED: &str = r#"{"result":"completed"}"#;

fn quick() -> Client {
    Client::builder()
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .unwrap()
}

fn polling() -> WaitOptions {
    WaitOptions::new()
        .long_poll(false)
        .policy(translation_status::poll::Fixed::new(Duration::from_millis(
            50,
        )))
}

#[tokio::test]
async fn server_errors_are_retried_and_counted_even_on_success() {
    let server = scripted(
        vec![json(500, "{}"), json(503, "{}"), json(502, "oops")],
        json(200, COMPLETED),
    )
    .await;
    let done = quick()
        .wait_with(server.url("/status"), &polling())
        .await
        .unwrap();
    assert_eq!(server.count(), 4);
    assert_eq!(done.report.requests, 1, "one poll");
    assert_eq!(done.report.retries, 3, "three transport retries inside it");
}

#[tokio::test]
async fn dropped_connections_and_timeouts_are_retried() {
    let server = scripted(
        vec![
            Reply::Drop,
            Reply::Late(Duration::from_millis(800), Box::new(json(200, PENDING))),
            Reply::Drop,
        ],
        json(200, COMPLETED),
    )
    .await;
    let client = Client::builder()
        .request_timeout(Duration::from_millis(300))
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .unwrap();
    let status = client.status(server.url("/status")).await.unwrap();
    assert_eq!(status.state, JobState::Completed);
    assert_eq!(server.count(), 4);
}

#[tokio::test]
async fn not_found_is_fatal_at_once() {
    let server = scripted(
        vec![],
        json(
            404,
            r#"{"error":{"code":"not_found","message":"no job j-x"}}"#,
        ),
    )
    .await;
    let err = quick()
        .wait(server.url("/v1/jobs/j-x/status"))
        .await
        .unwrap_err();
    let Error::UnexpectedResponse(e) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(e.status, 404);
    assert_eq!(e.code.as_deref(), Some("not_found"));
    assert!(err.to_string().contains("check the job id"), "{err}");
    assert!(!err.is_retryable());
    // The derived events URL was tried once, then the status URL once: no retries.
    assert_eq!(server.count(), 2);
    for fatal in [400, 401, 422] {
        let server = scripted(vec![], json(fatal, "{}")).await;
        let err = quick().status(server.url("/status")).await.unwrap_err();
        assert_eq!(err.http_status(), Some(fatal));
        assert_eq!(server.count(), 1, "{fatal} retried");
    }
}

#[tokio::test]
async fn retry_after_is_obeyed_exactly() {
    let throttled = with_header(json(429, "{}"), "retry-after", "1");
    let server = scripted(vec![throttled], json(200, COMPLETED)).await;
    let status = quick().status(server.url("/status")).await.unwrap();
    assert_eq!(status.state, JobState::Completed);
    let times = server.times();
    assert_eq!(times.len(), 2);
    let gap = times[1].duration_since(times[0]);
    assert!(gap >= Duration::from_millis(990), "{gap:?}");
    assert!(gap <= Duration::from_millis(1300), "{gap:?}");

    // retry-after-ms takes precedence, at millisecond precision; 503 works the same way.
    let overloaded = with_header(
        with_header(json(503, "{}"), "retry-after", "1"),
        "retry-after-ms",
        "300",
    );
    let server = scripted(vec![overloaded], json(200, COMPLETED)).await;
    quick().status(server.url("/status")).await.unwrap();
    let times = server.times();
    let gap = times[1].duration_since(times[0]);
    assert!(
        gap >= Duration::from_millis(295) && gap <= Duration::from_millis(600),
        "{gap:?}"
    );
}

#[tokio::test]
async fn throttling_never_ends_a_wait() {
    let throttled = with_header(json(429, "{}"), "retry-after-ms", "100");
    // More throttled answers in a row than one request absorbs.
    let server = scripted(vec![throttled; 8], json(200, COMPLETED)).await;
    let done = quick()
        .wait_with(server.url("/status"), &polling())
        .await
        .unwrap();
    assert_eq!(server.count(), 9);
    assert!(done.report.retries >= 6, "{:?}", done.report);
}

#[tokio::test]
async fn a_throttle_longer_than_the_deadline_gives_up_on_time() {
    let throttled = with_header(json(429, "{}"), "retry-after", "30");
    let server = scripted(vec![], throttled).await;
    let started = Instant::now();
    let err = quick()
        .wait_with(
            server.url("/status"),
            &polling().deadline(Duration::from_millis(700)),
        )
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, Error::GaveUp(_)), "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(690) && elapsed < Duration::from_millis(1000),
        "{elapsed:?}"
    );
    assert_eq!(
        server.count(),
        2,
        "the first try, then the final poll on the deadline"
    );
}

#[tokio::test]
async fn malformed_bodies_are_typed_errors() {
    for body in [
        "not json{",
        "",
        "[1,2]",
        r#"{"result":7}"#,
        r#"{"status":"done"}"#,
        "\u{0}\u{ff}",
    ] {
        let server = scripted(vec![], json(200, body)).await;
        let err = quick().status(server.url("/status")).await.unwrap_err();
        let Error::UnexpectedResponse(e) = &err else {
            panic!("{body:?}: {err:?}");
        };
        assert_eq!(e.status, 200);
        assert!(err.to_string().contains("status document"), "{err}");
        // A wait tries twice more, then gives the same kind of error.
        let err = quick()
            .wait_with(server.url("/status"), &polling())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnexpectedResponse(_)), "{err:?}");
        assert_eq!(server.count(), 4);
    }
    let server = scripted(vec![json(200, "garbage")], json(200, COMPLETED)).await;
    quick()
        .wait_with(server.url("/status"), &polling())
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_results_parse_and_stop_a_wait_after_a_few_in_a_row() {
    let server = scripted(vec![], json(200, r#"{"result":"Paused"}"#)).await;
    let status = quick().status(server.url("/status")).await.unwrap();
    assert_eq!(status.state, JobState::Unknown("Paused".into()));
    let before = server.count();
    let err = quick().wait(server.url("/status")).await.unwrap_err();
    let Error::UnknownState(unknown) = &err else {
        panic!("{err:?}");
    };
    assert_eq!((unknown.word.as_str(), unknown.in_a_row), ("Paused", 3));
    assert_eq!(server.count() - before, 3, "bounded: the profile's limit");
    assert!(err.to_string().contains("\"Paused\""), "{err}");
    assert!(!err.is_retryable());

    let server = scripted(vec![], json(200, r#"{"result":"PENDING"}"#)).await;
    let status = quick().status(server.url("/status")).await.unwrap();
    assert!(matches!(status.state, JobState::Pending { .. }));
}

#[tokio::test]
async fn an_unreachable_service_is_reported_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = quick()
        .wait(format!("http://{addr}/status"))
        .await
        .unwrap_err();
    let Error::Unreachable(u) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(u.attempts, 4, "the first try and three retries");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("Check the base URL"), "{err}");

    let server = scripted(vec![], json(500, "{}")).await;
    let err = quick().status(server.url("/status")).await.unwrap_err();
    assert_eq!(err.http_status(), Some(500));
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn the_api_key_is_sent_and_a_wrong_one_is_fatal() {
    let server = sim(|s| s.auth.api_key = Some("s3cret".into())).await;
    let id = job(&server, 0);
    let anonymous = client(&server);
    let err = anonymous.status(id.as_str()).await.unwrap_err();
    assert_eq!(err.http_status(), Some(401));
    assert!(err.to_string().contains("api_key"), "{err}");
    let err = anonymous.wait(id.as_str()).await.unwrap_err();
    assert_eq!(err.http_status(), Some(401));
    let keyed = Client::builder()
        .base_url(server.base_url())
        .api_key("s3cret")
        .build()
        .unwrap();
    assert!(keyed.status(id.as_str()).await.unwrap().is_terminal());
}

#[tokio::test]
async fn waits_survive_injected_faults() {
    let server = sim(|s| s.sse.enabled = false).await;
    server
        .state()
        .set_faults(Faults {
            error_rate: 0.2,
            throttle_rate: 0.1,
            throttle_retry_after: Duration::from_millis(200),
            drop_rate: 0.1,
            malformed_rate: 0.05,
            seed: Some(7),
            ..Faults::default()
        })
        .unwrap();
    let client = Client::builder()
        .base_url(server.base_url())
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .max_retries(5)
        .build()
        .unwrap();
    let ids: Vec<String> = (0..8).map(|_| job(&server, 1500)).collect();
    let options = WaitOptions::new()
        .long_poll(false)
        .policy(translation_status::poll::Fixed::new(Duration::from_millis(
            200,
        )));
    let waits = ids.iter().map(|id| client.wait_with(id.as_str(), &options));
    let mut retries = 0;
    for done in join_all(waits).await {
        let done = done.unwrap();
        retries += done.report.retries;
    }
    eprintln!("faults: {retries} retries over 8 waits");
    assert!(
        retries > 0,
        "faults were injected, so something was retried"
    );
}

#[tokio::test]
async fn requests_carry_the_documented_headers() {
    let pending = with_header(json(200, PENDING), "etag", r#"W/"x-1""#);
    let server = scripted(vec![pending], json(200, COMPLETED)).await;
    let client = Client::builder()
        .api_key("k-1")
        .wait_options(
            WaitOptions::new().policy(translation_status::poll::Fixed::new(Duration::from_millis(
                50,
            ))),
        )
        .build()
        .unwrap();
    client.wait(server.url("/status")).await.unwrap();
    let heads: Vec<String> = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.head.to_ascii_lowercase())
        .collect();
    assert_eq!(heads.len(), 2);
    assert!(heads[0].contains("prefer: wait=30"), "{}", heads[0]);
    assert!(heads[0].contains("x-api-key: k-1"), "{}", heads[0]);
    assert!(
        heads[0].contains("user-agent: translation-status/"),
        "{}",
        heads[0]
    );
    assert!(!heads[0].contains("if-none-match"), "{}", heads[0]);
    // Long-poll was not applied, so it is not offered again; the entity tag is.
    assert!(!heads[1].contains("prefer:"), "{}", heads[1]);
    assert!(
        heads[1].contains(r#"if-none-match: w/"x-1""#),
        "{}",
        heads[1]
    );
}
