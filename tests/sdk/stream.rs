//! One connection for many jobs: a job set on the simulator's change stream — resumed, reset,
//! recovered from silence — and the order it falls back in (stream → batched reads → each
//! job on its own), against the real simulator.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::Instant;
use translation_sim::{RunningServer, Settings};
use translation_status::jobset::{JobEvent, JobKey, JobSetOptions};
use translation_status::{Client, telemetry};

use crate::support::{job, metric, sim};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Recorded = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// Runs `test` with a local metrics recorder; returns what it recorded.
fn recorded(test: impl std::future::Future<Output = ()>) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter: Snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || runtime().block_on(test));
    snapshotter.snapshot().into_vec()
}

/// Sum of a client counter's values whose labels include every pair given.
fn counter(recorded: &Recorded, name: &str, labels: &[(&str, &str)]) -> u64 {
    recorded
        .iter()
        .filter(|(key, ..)| key.key().name() == name)
        .filter(|(key, ..)| {
            labels.iter().all(|(k, v)| {
                key.key()
                    .labels()
                    .any(|label| label.key() == *k && label.value() == *v)
            })
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

/// Requests the simulator answered on `route` (any method, any status).
fn served(server: &RunningServer, route: &str) -> f64 {
    metric(
        &server.state().render_metrics(),
        "sim_http_requests_total",
        &[("route", route)],
    )
}

/// `n` jobs of `base_ms` to `base_ms + spread_ms`, and a set waiting for them; returns how
/// many terminal events each job got, within `within`.
async fn wait_all(
    server: &RunningServer,
    options: JobSetOptions,
    n: u64,
    (base_ms, spread_ms): (u64, u64),
    within: Duration,
) -> HashMap<JobKey, u32> {
    let client = Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    let mut set = client.job_set(options.deadline(within)).unwrap();
    for i in 0..n {
        let id = job(server, base_ms + (i * 7919) % spread_ms.max(1));
        set.add(id.as_str()).unwrap();
    }
    let mut finished: HashMap<JobKey, u32> = HashMap::new();
    let until = Instant::now() + within + Duration::from_secs(5);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, set.next()).await {
        if let JobEvent::Finished {
            key, result, job, ..
        } = event
        {
            assert!(result.is_ok(), "{job}: {result:?}");
            *finished.entry(key).or_default() += 1;
        }
    }
    finished
}

fn exactly_once(finished: &HashMap<JobKey, u32>, n: usize) {
    assert_eq!(finished.len(), n, "every job reported: {finished:?}");
    assert!(
        finished.values().all(|&times| times == 1),
        "each job reported once: {finished:?}"
    );
}

/// The stream's bookmark interval, on both sides, for tests that need it short.
fn quick(settings: &mut Settings, bookmark: Duration) {
    settings.changes.bookmark_interval = bookmark;
}

#[test]
fn a_job_set_follows_its_jobs_on_one_stream() {
    let metrics = recorded(async {
        let server = sim(|_| {}).await;
        let finished = wait_all(
            &server,
            JobSetOptions::new(),
            60,
            (300, 1500),
            Duration::from_secs(20),
        )
        .await;
        exactly_once(&finished, 60);
        // One stream and one watch set request for sixty jobs; no job read on its own.
        assert_eq!(served(&server, "/v1/events"), 1.0);
        let created = metric(
            &server.state().render_metrics(),
            "sim_http_requests_total",
            &[("route", "/v1/watches"), ("method", "POST")],
        );
        assert_eq!(created, 1.0);
        assert_eq!(served(&server, "/v1/jobs/{id}/status"), 0.0);
    });
    assert_eq!(
        counter(
            &metrics,
            telemetry::JOBSET_JOBS_TOTAL,
            &[("mechanism", "changes")]
        ),
        60
    );
    let waiting = counter(&metrics, telemetry::REQUESTS_TOTAL, &[("kind", "changes")])
        + counter(&metrics, telemetry::REQUESTS_TOTAL, &[("kind", "watch")]);
    assert_eq!(waiting, 2, "every request of the wait");
}

#[test]
fn a_stream_that_ends_is_resumed_without_loss_or_repeats() {
    let metrics = recorded(async {
        let server = sim(|s| s.changes.max_lifetime = Duration::from_millis(300)).await;
        let finished = wait_all(
            &server,
            JobSetOptions::new(),
            40,
            (300, 2000),
            Duration::from_secs(20),
        )
        .await;
        exactly_once(&finished, 40);
        let text = server.state().render_metrics();
        assert!(metric(&text, "sim_change_stream_resumes_total", &[]) >= 2.0);
        assert_eq!(metric(&text, "sim_change_resets_total", &[]), 0.0);
        assert_eq!(served(&server, "/v1/jobs/{id}/status"), 0.0);
    });
    assert!(counter(&metrics, telemetry::STREAM_RESUMES_TOTAL, &[]) >= 2);
    assert_eq!(counter(&metrics, telemetry::STREAM_RESETS_TOTAL, &[]), 0);
    assert_eq!(
        counter(
            &metrics,
            telemetry::JOBSET_JOBS_TOTAL,
            &[("mechanism", "changes")]
        ),
        40
    );
}

#[test]
fn a_reset_resyncs_from_the_snapshot_without_loss_or_repeats() {
    let metrics = recorded(async {
        // One change retained, and many jobs ending at once: a stream reconnecting (or
        // reading) while they end is past the history.
        let server = sim(|s| {
            s.changes.history = 1;
            s.changes.max_lifetime = Duration::from_millis(200);
        })
        .await;
        let finished = wait_all(
            &server,
            JobSetOptions::new(),
            120,
            (300, 1000),
            Duration::from_secs(20),
        )
        .await;
        exactly_once(&finished, 120);
        let text = server.state().render_metrics();
        assert!(metric(&text, "sim_change_resets_total", &[("channel", "stream")]) >= 1.0);
        assert_eq!(served(&server, "/v1/jobs/{id}/status"), 0.0);
    });
    assert!(
        counter(
            &metrics,
            telemetry::STREAM_RESETS_TOTAL,
            &[("reason", "history")]
        ) >= 1
    );
    assert_eq!(
        counter(
            &metrics,
            telemetry::JOBSET_JOBS_TOTAL,
            &[("mechanism", "changes")]
        ),
        120
    );
}

#[test]
fn a_silent_stream_is_dropped_and_resumed_within_its_bound() {
    const BOOKMARK: Duration = Duration::from_millis(100);
    let metrics = recorded(async {
        let server = sim(|s| {
            quick(s, BOOKMARK);
            // The server ends a silent stream after a second; the watchdog, long before.
            s.changes.max_lifetime = Duration::from_secs(1);
            s.faults.silent_rate = 0.5;
            s.faults.seed = Some(3);
        })
        .await;
        let started = Instant::now();
        let finished = wait_all(
            &server,
            JobSetOptions::new().bookmark_interval(BOOKMARK),
            40,
            (300, 4000),
            Duration::from_secs(20),
        )
        .await;
        exactly_once(&finished, 40);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        let text = server.state().render_metrics();
        assert!(metric(&text, "sim_faults_injected_total", &[("kind", "silent")]) >= 1.0);
    });
    assert!(
        counter(
            &metrics,
            telemetry::SILENT_DROPS_TOTAL,
            &[("kind", "changes")]
        ) >= 1
    );
    assert!(
        counter(
            &metrics,
            telemetry::JOBSET_JOBS_TOTAL,
            &[("mechanism", "changes")]
        ) >= 30
    );
}

#[test]
fn without_a_stream_jobs_are_read_in_batches_and_without_batches_one_by_one() {
    let metrics = recorded(async {
        let server = sim(|s| s.changes.enabled = false).await;
        let finished = wait_all(
            &server,
            JobSetOptions::new(),
            50,
            (300, 1500),
            Duration::from_secs(20),
        )
        .await;
        exactly_once(&finished, 50);
        assert_eq!(served(&server, "/v1/events"), 0.0);
        assert_eq!(served(&server, "/v1/jobs/{id}/status"), 0.0);
        let batches = served(&server, "/v1/jobs");
        assert!(batches >= 1.0);
        let text = server.state().render_metrics();
        let asked = metric(&text, "sim_batch_read_size_sum", &[]);
        assert!(
            asked >= 2.0 * batches,
            "{asked} ids in {batches} batched reads"
        );
    });
    assert_eq!(
        counter(
            &metrics,
            telemetry::JOBSET_JOBS_TOTAL,
            &[("mechanism", "batch")]
        ),
        50
    );

    let metrics = recorded(async {
        // One id per batched read: a batch of many is refused, and each job is read alone.
        let server = sim(|s| {
            s.changes.enabled = false;
            s.jobs.max_batch_ids = 1;
        })
        .await;
        let finished = wait_all(
            &server,
            JobSetOptions::new().sse(false),
            20,
            (300, 1500),
            Duration::from_secs(20),
        )
        .await;
        exactly_once(&finished, 20);
        assert!(served(&server, "/v1/jobs/{id}/status") >= 20.0);
        assert_eq!(served(&server, "/v1/jobs"), 1.0, "asked once, refused");
    });
    assert_eq!(
        counter(
            &metrics,
            telemetry::JOBSET_JOBS_TOTAL,
            &[("mechanism", "per_job")]
        ),
        20
    );
}

// ----- A stand-in server whose change stream does not play fair ---------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hostile {
    /// One line that never ends.
    Oversized,
    /// Cursors that are not cursors; each connection reports half the jobs, then ends.
    BogusCursors,
    /// A reset, a snapshot, and never its end marker (keep-alive comments instead).
    EndlessSnapshot,
    /// Half the jobs' ends, then the connection cut in the middle of an event; the rest
    /// on the next connection.
    Cut,
}

#[derive(Clone)]
struct Stand {
    mode: Hostile,
    jobs: usize,
    /// `Last-Event-ID` of every stream request (empty: none).
    resumes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Per-job status reads.
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn statuses(ids: impl Iterator<Item = usize>, result: &str) -> Vec<serde_json::Value> {
    ids.map(|i| serde_json::json!({"id": format!("j-{i}"), "result": result}))
        .collect()
}

async fn stand_in(mode: Hostile, jobs: usize) -> (String, Stand) {
    use axum::body::{Body, Bytes};
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, patch, post};

    async fn watch(State(st): State<Stand>) -> Response {
        let body = serde_json::json!({
            "id": "w-1", "cursor": "9:1", "size": st.jobs,
            "jobs": statuses(0..st.jobs, "pending"),
        });
        (StatusCode::CREATED, axum::Json(body)).into_response()
    }
    async fn events(State(st): State<Stand>, headers: HeaderMap) -> Response {
        let resume = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let round = {
            let mut resumes = st.resumes.lock().unwrap();
            resumes.push(resume);
            resumes.len() - 1
        };
        let keep_alive = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Bytes::from_static(b": keep-alive\n\n"), ()))
        });
        let body = match st.mode {
            Hostile::Cut => {
                let mut text = String::new();
                let half = (0..st.jobs).filter(|i| i % 2 == round % 2);
                for (n, status) in statuses(half, "completed").into_iter().enumerate() {
                    text.push_str(&format!(
                        "event: status\nid: 9:{}\ndata: {status}\n\n",
                        10 * round + n + 2
                    ));
                }
                text.push_str("event: status\nid: 9:99\ndata: {\"id\":");
                // The events go out whole first; then the connection breaks mid-event.
                let events = futures_util::stream::iter([Ok(Bytes::from(text))]);
                let cut = futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err(std::io::Error::other("cut"))
                });
                let cut = events.chain(cut);
                Body::from_stream(cut)
            }
            Hostile::Oversized => {
                let head = futures_util::stream::iter([Bytes::from_static(
                    b"event: status\nid: 9:2\ndata: ",
                )]);
                let endless = futures_util::stream::repeat(Bytes::from(vec![b'x'; 64 * 1024]));
                Body::from_stream(head.chain(endless).map(Ok::<_, std::io::Error>))
            }
            Hostile::BogusCursors => {
                let mut text = String::new();
                for status in statuses((0..st.jobs).filter(|i| i % 2 == round % 2), "completed") {
                    text.push_str(&format!(
                        "event: status\nid: 9:2/../../x\ndata: {status}\n\n"
                    ));
                }
                text.push_str("event: bookmark\nid: DROP TABLE\ndata: {\"cursor\":\"x\"}\n\n");
                Body::from(text)
            }
            Hostile::EndlessSnapshot => {
                let mut text = String::from("event: reset\ndata: {\"reason\":\"history\"}\n\n");
                for status in statuses(0..st.jobs, "pending") {
                    text.push_str(&format!("event: snapshot\ndata: {status}\n\n"));
                }
                let head = futures_util::stream::iter([Bytes::from(text)]);
                Body::from_stream(head.chain(keep_alive).map(Ok::<_, std::io::Error>))
            }
        };
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(body)
            .unwrap()
    }
    async fn status(State(st): State<Stand>, Path(id): Path<String>) -> Response {
        st.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        axum::Json(serde_json::json!({"id": id, "result": "completed"})).into_response()
    }
    let stand = Stand {
        mode,
        jobs,
        resumes: Default::default(),
        reads: Default::default(),
    };
    let app = axum::Router::new()
        .route("/v1/watches", post(watch))
        .route("/v1/watches/{id}", patch(watch))
        .route("/v1/events", get(events))
        .route("/v1/jobs/{id}/status", get(status))
        .with_state(stand.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), stand)
}

#[test]
fn a_hostile_change_stream_is_bounded_and_its_jobs_still_end() {
    const JOBS: usize = 10;
    for mode in [
        Hostile::Oversized,
        Hostile::BogusCursors,
        Hostile::EndlessSnapshot,
        Hostile::Cut,
    ] {
        let metrics = recorded(async move {
            let (base, stand) = stand_in(mode, JOBS).await;
            let client = Client::builder().base_url(&base).build().unwrap();
            let options = JobSetOptions::new()
                .bookmark_interval(Duration::from_millis(50))
                .deadline(Duration::from_secs(20));
            let mut set = client.job_set(options).unwrap();
            for i in 0..JOBS {
                set.add(format!("j-{i}").as_str()).unwrap();
            }
            let mut finished = HashMap::new();
            let until = Instant::now() + Duration::from_secs(15);
            while let Ok(Some(event)) = tokio::time::timeout_at(until, set.next()).await {
                if let JobEvent::Finished {
                    key, result, job, ..
                } = event
                {
                    assert!(result.is_ok(), "{mode:?} {job}: {result:?}");
                    *finished.entry(key).or_insert(0) += 1;
                }
            }
            exactly_once(&finished, JOBS);
            let resumes = stand.resumes.lock().unwrap().clone();
            // The stream is given up after a bounded number of tries.
            assert!(
                (1..=6).contains(&resumes.len()),
                "{mode:?}: {} connections",
                resumes.len()
            );
            // Only a cursor the server sent that parses is ever sent back.
            assert!(
                mode == Hostile::Cut || resumes.iter().all(|r| r.is_empty() || r == "9:1"),
                "{mode:?}: {resumes:?}"
            );
            let reads = stand.reads.load(std::sync::atomic::Ordering::SeqCst);
            match mode {
                Hostile::Oversized => assert_eq!(resumes.len(), 1, "given up at once"),
                Hostile::BogusCursors => {
                    assert_eq!(reads, 0, "every job ended on the stream");
                    assert_eq!(resumes, ["9:1", "9:1"]);
                }
                Hostile::EndlessSnapshot => assert!(reads >= JOBS, "{reads}"),
                Hostile::Cut => {
                    // Resumed after the last whole event: nothing lost, nothing repeated.
                    assert_eq!(reads, 0, "every job ended on the stream");
                    assert_eq!(resumes, ["9:1", "9:6"]);
                }
            }
        });
        let by_stream = counter(
            &metrics,
            telemetry::JOBSET_JOBS_TOTAL,
            &[("mechanism", "changes")],
        );
        match mode {
            Hostile::BogusCursors | Hostile::Cut => assert_eq!(by_stream, JOBS as u64),
            _ => assert_eq!(by_stream, 0, "{mode:?}"),
        }
    }
}
