//! Webhooks into a job set: the real simulator delivers — dropping, duplicating and
//! reordering some deliveries — to `webhook::axum::route` with the set's handle as the sink;
//! each job ends once, on its webhook or, when that was lost, on the safety net's read.

use std::collections::HashSet;
use std::time::Duration;

use axum::Router;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use translation_status::jobset::{JobEvent, JobSet, JobSetHandle, JobSetOptions, SafetyNet};
use translation_status::poll::{LearnedDurations, Sample};
use translation_status::webhook::axum::route;
use translation_status::webhook::{Receiver, Secret};
use translation_status::{Client, CreateRequest, Error, JobRef, JobState, Mechanism, Profile};

use crate::support::{job, metric, sim};

const WHSEC: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLWpvYi1zZXQtaG9va3M=";
const HEYGEN_SECRET: &str = "endpoint-secret-for-job-sets";

/// Serves `receiver` at `/hook` on 127.0.0.1:0, handing events to `jobs`: the hook's URL.
async fn hook(receiver: Receiver, jobs: JobSetHandle) -> String {
    let app = Router::new().route("/hook", route(receiver, jobs));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Every event of the set until it has no job left (at most `within`).
async fn drain(jobs: &mut JobSet, within: Duration) -> Vec<JobEvent> {
    let mut events = Vec::new();
    tokio::time::timeout(within, async {
        while let Some(event) = jobs.next().await {
            events.push(event);
        }
    })
    .await
    .expect("every job ends in time");
    events
}

/// The set's next event, within 10 s.
async fn next_event(jobs: &mut JobSet) -> JobEvent {
    tokio::time::timeout(Duration::from_secs(10), jobs.next())
        .await
        .expect("an event in time")
        .expect("a job left")
}

/// Posts a HeyGen `video_translate.success` or `.fail` for `id`, signed, to `url`.
async fn deliver(url: &str, event: &str, id: &str) {
    let data = match event {
        "success" => {
            format!(r#"{{"video_translate_id": "{id}", "url": "https://cdn.example/{id}.mp4"}}"#)
        }
        _ => format!(
            r#"{{"video_translate_id": "{id}", "message": "the voice could not be cloned"}}"#
        ),
    };
    let body = format!(r#"{{"event_type": "video_translate.{event}", "event_data": {data}}}"#);
    let mut mac = Hmac::<Sha256>::new_from_slice(HEYGEN_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = reqwest::Client::new()
        .post(url)
        .header("signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204, "the set took it");
}

/// A HeyGen client whose jobs are never read here (the base URL is closed), and a set of it
/// with `options`, with a receiver in front: the client, the set and the hook's URL.
async fn heygen_set(options: JobSetOptions) -> (Client, JobSet, String) {
    let client = Client::builder()
        .base_url("http://127.0.0.1:9")
        .profile(Profile::builtin("heygen-v2").unwrap())
        .build()
        .unwrap();
    let jobs = client.job_set(options).unwrap();
    let receiver = Receiver::heygen(Secret::raw(HEYGEN_SECRET).unwrap())
        .build()
        .unwrap();
    let url = hook(receiver, jobs.handle()).await;
    (client, jobs, url)
}

/// As far as a duration goes: no job is read in these tests (and nothing overflows).
fn never_read() -> JobSetOptions {
    JobSetOptions::new().webhooks(SafetyNet::After(Duration::MAX))
}

/// A simulator job of `ms` milliseconds, created with a callback to `hook`.
async fn create(client: &Client, hook: &str, ms: u64, outcome: &str) -> String {
    let request = CreateRequest::new()
        .param("duration_ms", ms)
        .param("outcome", outcome)
        .param("callback_url", hook);
    client.create(&request).await.unwrap()[0].id.clone()
}

#[tokio::test]
async fn a_job_set_ends_jobs_on_their_webhooks_and_reads_the_lost_ones_on_its_safety_net() {
    let server = sim(|s| {
        s.webhooks.secret = WHSEC.into();
        s.webhooks.initial_backoff = Duration::from_millis(50);
        s.faults.webhook_drop_rate = 0.3;
        s.faults.webhook_duplicate_rate = 0.3;
        s.faults.webhook_reorder_rate = 0.2;
        s.faults.webhook_reorder_window = Duration::from_millis(200);
    })
    .await;
    let client = Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    let mut jobs = client
        .job_set(JobSetOptions::new().webhooks(SafetyNet::After(Duration::from_secs(4))))
        .unwrap();
    let receiver = Receiver::standard_webhooks(Secret::whsec(WHSEC).unwrap())
        .build()
        .unwrap();
    let url = hook(receiver, jobs.handle()).await;

    let mut ids = HashSet::new();
    for i in 0..40u64 {
        let outcome = if i % 4 == 0 { "error" } else { "completed" };
        let id = create(&client, &url, 100 + 10 * i, outcome).await;
        jobs.add(id.as_str()).unwrap();
        ids.insert(id);
    }
    let events = drain(&mut jobs, Duration::from_secs(30)).await;

    let (mut pushed, mut read) = (0, 0);
    let mut ended = HashSet::new();
    for event in events {
        let JobEvent::Finished { job, result, .. } = event else {
            continue;
        };
        assert!(ended.insert(job.clone()), "{job} ended twice");
        let truth = client.status(job.as_str()).await.unwrap();
        let (state, report) = match &result {
            Ok(done) => (&done.status.state, &done.report),
            Err(Error::JobFailed(failed)) => (&failed.status.state, &failed.report),
            Err(other) => panic!("{job}: {other}"),
        };
        assert_eq!(*state, truth.state, "{job} ended as the server says");
        if report.mechanism == Mechanism::Webhook {
            pushed += 1;
            assert_eq!(report.requests, 0, "{job}: its webhook came first");
        } else {
            read += 1;
            assert!(
                (1..=3).contains(&report.requests),
                "{job}: read on the safety net, {} requests",
                report.requests
            );
        }
    }
    assert_eq!(ended, ids, "every job ended, once");
    let text = server.state().render_metrics();
    let dropped = metric(
        &text,
        "sim_faults_injected_total",
        &[("kind", "webhook_drop")],
    );
    let duplicated = metric(
        &text,
        "sim_faults_injected_total",
        &[("kind", "webhook_duplicate")],
    );
    assert!(
        dropped >= 1.0 && duplicated >= 1.0,
        "{dropped} {duplicated}"
    );
    // A lost webhook is read on the safety net; a job whose webhook came was not read.
    assert_eq!(read, dropped as usize, "{pushed} pushed, {read} read");
}

#[tokio::test]
async fn the_first_terminal_delivery_decides_even_before_its_job_is_added() {
    let (_client, mut jobs, url) = heygen_set(never_read()).await;
    // Delivered first, added second: it ends at once, without a read.
    deliver(&url, "success", "vt-early").await;
    jobs.add("vt-early").unwrap();
    let JobEvent::Finished { job, result, .. } = next_event(&mut jobs).await else {
        panic!("a stall?")
    };
    let done = result.unwrap();
    assert_eq!(job, "vt-early");
    assert_eq!(done.report.mechanism, Mechanism::Webhook);
    assert_eq!(done.report.requests, 0);
    assert_eq!(
        done.status.result_url.as_deref(),
        Some("https://cdn.example/vt-early.mp4")
    );

    // A failure, then a success out of order, then the failure again: the first decides.
    let later = jobs.add("vt-2").unwrap();
    deliver(&url, "fail", "vt-2").await;
    deliver(&url, "success", "vt-2").await;
    let JobEvent::Finished { key, result, .. } = next_event(&mut jobs).await else {
        panic!("a stall?")
    };
    assert_eq!(key, later);
    let Err(Error::JobFailed(failed)) = result else {
        panic!("{result:?}")
    };
    assert!(matches!(failed.status.state, JobState::Failed(_)));
    assert_eq!(failed.report.mechanism, Mechanism::Webhook);
    // Nothing more about vt-2: the next event is the next job's.
    let last = jobs.add("vt-3").unwrap();
    deliver(&url, "success", "vt-3").await;
    let event = next_event(&mut jobs).await;
    assert_eq!(event.key(), last);
    assert_eq!(jobs.tracked(), 0);

    // Two deliveries before the add: the first decides.
    deliver(&url, "fail", "vt-4").await;
    deliver(&url, "success", "vt-4").await;
    jobs.add("vt-4").unwrap();
    let JobEvent::Finished { result, .. } = next_event(&mut jobs).await else {
        panic!("a stall?")
    };
    assert!(matches!(result, Err(Error::JobFailed(_))), "{result:?}");

    // One id added twice: one delivery ends both.
    let (a, b) = (jobs.add("vt-5").unwrap(), jobs.add("vt-5").unwrap());
    deliver(&url, "success", "vt-5").await;
    let mut ended = vec![
        next_event(&mut jobs).await.key(),
        next_event(&mut jobs).await.key(),
    ];
    ended.sort();
    assert_eq!(ended, vec![a, b]);
}

#[tokio::test]
async fn a_restored_set_still_finds_its_jobs_by_their_ids() {
    let (client, jobs, _) = heygen_set(never_read()).await;
    // A created job whose status URL has no id in it: only the saved id names it.
    let created = JobRef::status_url("http://127.0.0.1:9/some/where/else").with_id("vt-saved");
    jobs.add(created).unwrap();
    let saved = jobs.export().await.unwrap();
    assert_eq!(saved.jobs[0].id.as_deref(), Some("vt-saved"));
    drop(jobs);

    let mut restored = client.restore_job_set(&saved, never_read()).unwrap();
    let receiver = Receiver::heygen(Secret::raw(HEYGEN_SECRET).unwrap())
        .build()
        .unwrap();
    let url = hook(receiver, restored.handle()).await;
    deliver(&url, "success", "vt-saved").await;
    let JobEvent::Finished { result, .. } = next_event(&mut restored).await else {
        panic!("a stall?")
    };
    assert_eq!(result.unwrap().report.mechanism, Mechanism::Webhook);
}

#[tokio::test]
async fn a_set_without_a_safety_net_takes_deliveries_too() {
    let server = sim(|_| {}).await;
    let client = Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    let mut jobs = client.job_set(JobSetOptions::new()).unwrap();
    let receiver = Receiver::heygen(Secret::raw(HEYGEN_SECRET).unwrap())
        .build()
        .unwrap();
    let url = hook(receiver, jobs.handle()).await;
    // An hour on the server; its webhook (sent here by hand) ends it now.
    let id = job(&server, 3_600_000);
    jobs.add(id.as_str()).unwrap();
    let id: &'static str = Box::leak(id.into_boxed_str());
    deliver(&url, "success", id).await;
    let JobEvent::Finished { result, .. } = next_event(&mut jobs).await else {
        panic!("a stall?")
    };
    assert_eq!(result.unwrap().report.mechanism, Mechanism::Webhook);
}

#[tokio::test]
async fn lost_webhooks_are_read_when_learned_durations_say_they_are_overdue() {
    let server = sim(|s| {
        s.webhooks.secret = WHSEC.into();
        s.faults.webhook_drop_rate = 1.0;
    })
    .await;
    // Jobs here take 300 ms; before anything is learned the first read would be an hour away.
    let learned = LearnedDurations::new(64);
    for _ in 0..50 {
        learned.record(Sample::exact(Duration::from_millis(300)));
    }
    let client = Client::builder()
        .base_url(server.base_url())
        .learned_durations(learned)
        .build()
        .unwrap();
    let net = SafetyNet::Learned {
        quantile: 0.99,
        floor: Duration::from_millis(10),
        cold: Duration::from_secs(3600),
    };
    let mut jobs = client.job_set(JobSetOptions::new().webhooks(net)).unwrap();
    let receiver = Receiver::standard_webhooks(Secret::whsec(WHSEC).unwrap())
        .build()
        .unwrap();
    let url = hook(receiver, jobs.handle()).await;
    for _ in 0..10 {
        let request = CreateRequest::new()
            .param("duration_ms", 250)
            .param("callback_url", url.as_str());
        let created = client.create(&request).await.unwrap().remove(0);
        jobs.add(created).unwrap();
    }
    let events = drain(&mut jobs, Duration::from_secs(30)).await;
    assert_eq!(events.len(), 10);
    for event in events {
        let JobEvent::Finished { job, result, .. } = event else {
            panic!("a stall?")
        };
        let done = result.unwrap_or_else(|e| panic!("{job}: {e}"));
        assert_ne!(done.report.mechanism, Mechanism::Webhook);
        assert!(
            (1..=2).contains(&done.report.requests),
            "{job}: read near the learned 99th percentile, {} requests",
            done.report.requests
        );
    }
}
