//! The client's surface against the real simulator: reads, creation, watching, addressing.

use std::time::Duration;

use futures_util::StreamExt;
use translation_status::{
    Client, CreateRequest, Error, JobRef, JobState, NewJob, Outcome, Profile, WaitOptions,
};

use crate::support::{client, job, json, scripted, sim};

#[tokio::test]
async fn status_reads_the_typed_state() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let id = job(&server, 60_000);
    let status = client.status(id.as_str()).await.unwrap();
    assert_eq!(status.id.as_deref(), Some(id.as_str()));
    let JobState::Pending { eta } = status.state else {
        panic!("{status:?}");
    };
    let eta = eta.unwrap();
    assert!(
        eta > Duration::from_secs(40) && eta <= Duration::from_secs(72),
        "{eta:?}"
    );
    assert!(status.progress.unwrap() < 0.1);
    assert!(status.created_at.is_some() && status.completed_at.is_none());

    let done = job(&server, 0);
    let status = client.status(done.as_str()).await.unwrap();
    assert_eq!(status.state, JobState::Completed);
    assert!(status.completed_at.is_some());

    // The original `/status` shape, by URL.
    let legacy = client
        .status(format!("{}/status", server.base_url()))
        .await
        .unwrap();
    assert!(matches!(legacy.state, JobState::Pending { eta: None }));
    assert_eq!(legacy.id, None);

    let err = client.status("no-such-job").await.unwrap_err();
    assert_eq!(err.http_status(), Some(404));
}

#[tokio::test]
async fn created_jobs_can_be_waited_on_by_reference() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let created = client
        .create_job(
            &NewJob::new()
                .duration(Duration::from_millis(800))
                .outcome(Outcome::Completed),
        )
        .await
        .unwrap();
    assert!(
        created.status_url.starts_with(&server.base_url()),
        "{created:?}"
    );
    assert!(created.events_url.as_deref().unwrap().ends_with("/events"));
    assert!(created.created_at.is_some());
    let done = client.wait(&created).await.unwrap();
    assert_eq!(done.status.id.as_deref(), Some(created.id.as_str()));
    assert_eq!(done.report.mechanism, translation_status::Mechanism::Sse);

    // Creation errors are typed: a duration over the server's maximum is rejected.
    let err = client
        .create_job(&NewJob::new().duration(Duration::from_secs(10 * 3600)))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), Some(422), "{err}");
    let no_base = Client::builder().build().unwrap();
    assert!(matches!(
        no_base.create_job(&NewJob::new()).await,
        Err(Error::Config(_))
    ));
}

#[tokio::test]
async fn watch_streams_distinct_changes_and_ends_at_terminal() {
    let server = sim(|s| s.sse.progress_interval = Duration::from_millis(300)).await;
    let client = client(&server);
    let id = job(&server, 1500);
    let mut watch = client.watch(id.as_str());
    let mut seen = Vec::new();
    while let Some(item) = watch.next().await {
        seen.push(item.unwrap());
    }
    assert!(seen.len() >= 3, "initial, progress, terminal: {seen:?}");
    assert_eq!(seen.last().unwrap().state, JobState::Completed);
    assert!(seen[..seen.len() - 1].iter().all(|s| !s.is_terminal()));
    let progress: Vec<f64> = seen.iter().filter_map(|s| s.progress).collect();
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "distinct and rising: {progress:?}"
    );
    assert!(watch.completion().is_some());
}

#[tokio::test]
async fn watch_by_polling_and_on_failure() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let options = WaitOptions::new().sse(false).long_poll(false);
    let id = crate::support::job_ending(&server, 700, translation_sim::Outcome::Error);
    let seen: Vec<_> = client.watch_with(id.as_str(), options).collect().await;
    // A failed job ends the stream with its status, not with an error.
    let last = seen.last().unwrap().as_ref().unwrap();
    assert!(matches!(last.state, JobState::Failed(_)), "{seen:?}");
    assert!(seen.iter().all(Result::is_ok));

    // A wait that fails ends the stream with one error.
    let options = WaitOptions::new().deadline(Duration::from_millis(300));
    let seen: Vec<_> = client
        .watch_with(job(&server, 10_000), options)
        .collect()
        .await;
    assert!(
        matches!(seen.last(), Some(Err(Error::GaveUp(_)))),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|r| r.is_err()).count(), 1);
}

#[tokio::test]
async fn jobs_are_addressed_by_id_or_by_url() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let id = job(&server, 200);
    let by_url = format!("{}/v1/jobs/{id}/status", server.base_url());
    let done = client.wait(by_url.as_str()).await.unwrap();
    assert_eq!(
        done.report.mechanism,
        translation_status::Mechanism::Sse,
        "events URL derived"
    );
    let done = client.wait(JobRef::id(id.as_str())).await.unwrap();
    assert_eq!(done.report.requests, 1);
    // An id without a base URL is a configuration error, before any request.
    let no_base = Client::builder().build().unwrap();
    let err = no_base.wait(id.as_str()).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("base_url"));
    let err = client
        .wait_with(id.as_str(), &WaitOptions::new().max_polls(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[tokio::test]
async fn the_legacy_job_of_the_original_exercise() {
    let server = sim(|s| s.legacy.delay = Duration::from_millis(1200)).await;
    let client = Client::builder().build().unwrap();
    let done = client
        .wait(format!("{}/status", server.base_url()))
        .await
        .unwrap();
    assert_eq!(done.status.state, JobState::Completed);
    // A 1.2 s job, cold: at once, then from 0.6–0.85 s on at √2 times each age — 3 to 5
    // looks, found a fraction of a second after it ended, not seconds.
    assert!(done.report.requests <= 5, "{:?}", done.report);
    assert!(
        done.report.elapsed < Duration::from_secs(3),
        "{:?}",
        done.report
    );
}

#[tokio::test]
async fn a_canceled_job_ends_a_wait_with_its_own_error() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let id = job(&server, 60_000);
    let waiting = tokio::spawn({
        let client = client.clone();
        let id = id.clone();
        async move {
            let options = WaitOptions::new().deadline(Duration::from_secs(20));
            client.wait_with(id.as_str(), &options).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.state().cancel_job(&id).is_some());
    match waiting.await.unwrap() {
        Err(Error::JobCanceled(canceled)) => {
            assert_eq!(canceled.status.state, JobState::Canceled);
            assert_eq!(canceled.status.raw_state.as_deref(), Some("canceled"));
            assert!(canceled.report.requests >= 1);
            assert!(canceled.to_string().contains("canceled"), "{canceled}");
        }
        other => panic!("{other:?}"),
    }
    // A single read says so too, and a watch ends with the canceled status.
    let status = client.status(id.as_str()).await.unwrap();
    assert_eq!(status.state, JobState::Canceled);
    let seen: Vec<_> = client.watch(id.as_str()).collect().await;
    assert!(
        matches!(seen.as_slice(), [Ok(s)] if s.state == JobState::Canceled),
        "{seen:?}"
    );
}

/// The `Idempotency-Key` header of each request a stand-in saw.
fn keys(server: &crate::support::Scripted) -> Vec<Option<String>> {
    server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|seen| {
            seen.head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("idempotency-key")
                    .then(|| value.trim().to_owned())
            })
        })
        .collect()
}

/// A server that answers `500` to a creation is reachable: the error says it is failing, not
/// that the URL may be wrong. A keyed creation is retried under one key; one the API cannot
/// replay is sent once, and the error says why and what to do.
#[tokio::test]
async fn a_failed_creation_says_whether_it_was_retried_and_how_to_retry_safely() {
    let failing = json(500, r#"{"error":{"code":"internal","message":"boom"}}"#);

    // The simulator's dialect honours keys: retried, every attempt under the same key.
    let server = scripted(vec![], failing.clone()).await;
    let client = Client::builder()
        .base_url(server.url(""))
        .retry_backoff(Duration::from_millis(100), Duration::from_millis(100))
        .without_circuit_breaker()
        .build()
        .unwrap();
    let err = client.create_job(&NewJob::new()).await.unwrap_err();
    let Error::Unreachable(u) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(u.status, Some(500));
    assert!(!u.creation_not_retried);
    assert_eq!(server.count(), 4, "the first try and three retries");
    let sent = keys(&server);
    assert!(sent[0].is_some(), "{sent:?}");
    assert!(sent.iter().all(|k| k == &sent[0]), "one key: {sent:?}");
    let text = err.to_string();
    assert!(text.contains("answered HTTP 500"), "{text}");
    assert!(text.contains("reachable but failing"), "{text}");
    assert!(!text.contains("Check the base URL"), "{text}");

    // The caller's own key goes out, so the caller's retry is safe too.
    let keyed = NewJob::new().idempotency_key("order-17");
    let _ = client.create_job(&keyed).await.unwrap_err();
    let _ = client.create_job(&keyed).await.unwrap_err();
    let sent = keys(&server);
    assert_eq!(sent.len(), 12);
    assert!(
        sent[4..].iter().all(|k| k.as_deref() == Some("order-17")),
        "{sent:?}"
    );
    assert!(matches!(
        client
            .create_job(&NewJob::new().idempotency_key("no spaces"))
            .await,
        Err(Error::Config(_))
    ));

    // HeyGen v2 creations take no key: sent once, and the error says why.
    let server = scripted(vec![], failing).await;
    let client = Client::builder()
        .base_url(server.url(""))
        .profile(Profile::builtin("heygen-v2").unwrap())
        .api_key("secret-key-123")
        .without_circuit_breaker()
        .build()
        .unwrap();
    let request = CreateRequest::new()
        .param("video_url", "https://example.com/a.mp4")
        .param("language", "German");
    let err = client.create(&request).await.unwrap_err();
    let Error::Unreachable(u) = &err else {
        panic!("{err:?}")
    };
    assert!(u.creation_not_retried);
    assert_eq!(server.count(), 1, "sent once");
    assert_eq!(keys(&server), vec![None]);
    let text = err.to_string();
    assert!(
        text.contains("not retried without an idempotency key"),
        "{text}"
    );
    assert!(text.contains("may already exist"), "{text}");
    assert!(!format!("{err:?}").contains("secret-key-123"));
}

/// Errors and job-set events name a created job by its id and carry its status URL too; a
/// job addressed by URL is named by that URL.
#[tokio::test]
async fn errors_and_events_name_the_job_by_id_and_carry_its_url() {
    let server = sim(|_| {}).await;
    let client = client(&server);
    let failing = || {
        NewJob::new()
            .duration(Duration::from_millis(200))
            .outcome(Outcome::Error)
    };

    let created = client.create_job(&failing()).await.unwrap();
    let err = client.wait(&created).await.unwrap_err();
    let Error::JobFailed(failed) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(failed.job, created.id);
    assert_eq!(failed.status_url, created.status_url);
    assert!(err.to_string().contains(&created.id), "{err}");

    // By URL: named by the URL.
    let by_url = client.create_job(&failing()).await.unwrap();
    let err = client.wait(by_url.status_url.as_str()).await.unwrap_err();
    let Error::JobFailed(failed) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(failed.job, by_url.status_url);
    assert_eq!(failed.status_url, by_url.status_url);

    // A job set: the event and its error both.
    let mut set = client
        .job_set(translation_status::jobset::JobSetOptions::new())
        .unwrap();
    let created = client.create_job(&failing()).await.unwrap();
    set.add(&created).unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), set.next())
        .await
        .unwrap()
        .unwrap();
    let translation_status::jobset::JobEvent::Finished {
        job,
        status_url,
        result,
        ..
    } = event
    else {
        panic!("{event:?}")
    };
    assert_eq!(job, created.id);
    assert_eq!(status_url, created.status_url);
    let Err(Error::JobFailed(failed)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(
        (failed.job.as_str(), failed.status_url.as_str()),
        (created.id.as_str(), created.status_url.as_str())
    );
}
