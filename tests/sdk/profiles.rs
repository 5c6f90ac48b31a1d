//! Status profiles end to end: the simulator's HeyGen v2/v3 and `/status` dialects read by the
//! built-in profiles, creation under the running-job limit, and made-up APIs — served by tiny
//! servers here — read by profiles loaded from files.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use translation_status::jobset::{JobEvent, JobSetOptions};
use translation_status::poll::{Basis, Fixed};
use translation_status::{Client, CreateRequest, Error, JobState, Mechanism, Profile, WaitOptions};

use crate::support::{job, job_ending, metric, sim};

const VIDEO: &str = "https://videos.example/source.mp4";

fn client_for(server: &translation_sim::RunningServer, profile: &str) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .profile(Profile::builtin(profile).unwrap())
        .build()
        .unwrap()
}

fn deadline(secs: u64) -> WaitOptions {
    WaitOptions::new().deadline(Duration::from_secs(secs))
}

/// A wait that polls every 250 ms: where the schedule is not what a test is about, the cold
/// start's first pause (seconds) is not waited out.
fn brisk() -> WaitOptions {
    deadline(20).policy(Fixed::new(Duration::from_millis(250)))
}

fn created(server: &translation_sim::RunningServer) -> f64 {
    metric(
        &server.state().render_metrics(),
        "sim_jobs_created_total",
        &[],
    )
}

#[tokio::test]
async fn heygen_v2_is_created_watched_and_read_with_its_signed_url() {
    let server = sim(|s| s.heygen.queued_fraction = 0.5).await;
    let client = client_for(&server, "heygen-v2");
    let jobs = client
        .create(
            &CreateRequest::new()
                .param("video_url", VIDEO)
                .param("language", "Spanish (Spain)")
                .param("duration_ms", 1200),
        )
        .await
        .unwrap();
    let [job] = jobs.as_slice() else {
        panic!("one job: {jobs:?}");
    };
    assert!(
        job.status_url
            .ends_with(&format!("/v2/video_translate/{}", job.id)),
        "{job:?}"
    );
    assert_eq!(job.events_url, None, "v2 has no event stream");
    let seen: Vec<_> = client.watch_with(job, deadline(20)).collect().await;
    let states: Vec<&str> = seen
        .iter()
        .map(|s| s.as_ref().unwrap().state.canonical())
        .collect();
    assert_eq!(states.first(), Some(&"queued"), "{states:?}");
    assert_eq!(states.last(), Some(&"succeeded"), "{states:?}");
    let last = seen.last().unwrap().as_ref().unwrap();
    assert_eq!(last.raw_state.as_deref(), Some("success"));
    let url = last.result_url.as_deref().unwrap();
    assert!(url.starts_with("https://") && url.contains("sig="), "{url}");
    assert!(
        !format!("{last:?}").contains("sig="),
        "Debug never shows the signature"
    );

    // A read after the end is signed anew: the same status for a watcher, another URL.
    let again = client.status(job.id.as_str()).await.unwrap();
    assert_eq!(again.state, JobState::Completed);
    assert_ne!(again.result_url.as_deref(), Some(url));

    // Waits poll: no stream was tried, no long-poll offered.
    let done = client.wait_with(job, &deadline(5)).await.unwrap();
    assert!(done.report.fallbacks.is_empty(), "{:?}", done.report);
    assert_eq!(done.report.requests, 1);
}

#[tokio::test]
async fn a_failed_heygen_job_surfaces_its_message() {
    let server = sim(|_| {}).await;
    for profile in ["heygen-v2", "heygen-v3"] {
        let client = client_for(&server, profile);
        let languages = ["German (Germany)"];
        let request = CreateRequest::new()
            .param("video_url", VIDEO)
            .param("language", languages[0])
            .param("languages", languages.as_slice())
            .param("duration_ms", 300)
            .param("outcome", "error");
        let jobs = client.create(&request).await.unwrap();
        match client.wait_with(&jobs[0], &brisk()).await {
            Err(Error::JobFailed(failed)) => {
                let message = failed.message.as_deref().unwrap_or_default();
                assert!(!message.is_empty(), "{profile}: {failed:?}");
                assert!(failed.to_string().contains(message), "{failed}");
                assert_eq!(failed.status.raw_state.as_deref(), Some("failed"));
            }
            other => panic!("{profile}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn heygen_v3_creates_one_job_per_language_and_each_is_waited_for() {
    let server = sim(|_| {}).await;
    let client = client_for(&server, "heygen-v3");
    let languages = ["German (Germany)", "Japanese (Japan)", "French (France)"];
    let before = created(&server);
    let jobs = client
        .create(
            &CreateRequest::new()
                .param("video_url", VIDEO)
                .param("languages", languages.as_slice())
                .param("title", "Launch")
                .param("duration_ms", 800),
        )
        .await
        .unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert_eq!(created(&server) - before, 3.0);
    let options = deadline(20);
    let waits = jobs.iter().map(|job| client.wait_with(job, &options));
    for (done, job) in futures_util::future::join_all(waits)
        .await
        .into_iter()
        .zip(&jobs)
    {
        let done = done.unwrap();
        assert_eq!(done.status.id.as_deref(), Some(job.id.as_str()));
        assert_eq!(done.status.raw_state.as_deref(), Some("completed"));
        assert!(done.status.result_url.is_some(), "{:?}", done.status);
        // v3 reports when the job ended: the delay is measured (to the second).
        assert!(done.report.detection_delay.is_some(), "{:?}", done.report);
    }
    // The same three in a job set, which reads through the same profile.
    let mut set = client.job_set(JobSetOptions::new()).unwrap();
    for job in &jobs {
        set.add(job).unwrap();
    }
    let mut completed = 0;
    while let Some(event) = set.next().await {
        if let JobEvent::Finished { result, .. } = event {
            assert_eq!(result.unwrap().status.state, JobState::Completed);
            completed += 1;
        }
    }
    assert_eq!(completed, 3);

    // The same key again replays the first answer: the same jobs, nothing created.
    let keyed = CreateRequest::new()
        .param("video_url", VIDEO)
        .param("languages", languages.as_slice())
        .idempotency_key("launch-1");
    let first = client.create(&keyed).await.unwrap();
    let before = created(&server);
    let again = client.create(&keyed).await.unwrap();
    assert_eq!(
        first.iter().map(|j| &j.id).collect::<Vec<_>>(),
        again.iter().map(|j| &j.id).collect::<Vec<_>>()
    );
    assert_eq!(created(&server), before);
}

#[tokio::test]
async fn at_the_running_job_limit_creation_waits_its_turn_and_nothing_is_lost() {
    let server = sim(|s| s.heygen.max_concurrent_jobs = 2).await;
    let client = client_for(&server, "heygen-v2");
    let before = created(&server);
    let started = Instant::now();
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let request = CreateRequest::new()
            .param("video_url", VIDEO)
            .param("language", "German")
            .param("duration_ms", 700);
        jobs.extend(client.create(&request).await.unwrap());
    }
    // The third and fourth waited for the first two to end (a 429 with Retry-After of at
    // least a second, waited out by the transport): none failed, none was duplicated.
    assert!(started.elapsed() >= Duration::from_millis(700), "{jobs:?}");
    assert_eq!(jobs.len(), 4);
    assert_eq!(created(&server) - before, 4.0);
    let throttled = metric(
        &server.state().render_metrics(),
        "sim_http_requests_total",
        &[("status", "429")],
    );
    assert!(throttled >= 1.0, "a create met the limit");
    for job in &jobs {
        let done = client.wait_with(job, &brisk()).await.unwrap();
        assert_eq!(done.status.state, JobState::Completed);
    }
}

#[tokio::test]
async fn the_original_status_shape_is_read_by_the_result_profile() {
    let server = sim(|_| {}).await;
    let client = client_for(&server, "result");
    let id = job(&server, 600);
    let done = client.wait_with(id.as_str(), &brisk()).await.unwrap();
    assert_eq!(done.status.raw_state.as_deref(), Some("completed"));
    assert_eq!(
        done.status.progress, None,
        "the plain shape has nothing else"
    );
    assert!(done.report.fallbacks.is_empty(), "no stream, no long-poll");
    let failed = job_ending(&server, 300, translation_sim::Outcome::Error);
    let err = client
        .wait_with(failed.as_str(), &brisk())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::JobFailed(_)), "{err:?}");
    // A canceled job is canceled in this shape too.
    let canceled = job(&server, 60_000);
    server.state().cancel_job(&canceled).unwrap();
    let err = client
        .wait_with(canceled.as_str(), &brisk())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::JobCanceled(_)), "{err:?}");
}

// ----- Made-up APIs, served here -----------------------------------------------------------

/// A made-up task API: `GET /api/tasks/{id}` → `{"task": {"phase", "pct", "artifact":
/// {"href"}}}` behind `Authorization: Bearer s3cret`. Task `slow` is done 600 ms after the
/// server starts, `stuck` reports a phase no profile knows, `broken` failed.
struct Tasks {
    url: String,
    hits: Arc<Mutex<Vec<String>>>,
}

async fn tasks() -> Tasks {
    #[derive(Clone)]
    struct St {
        start: Instant,
        hits: Arc<Mutex<Vec<String>>>,
    }
    async fn task(
        State(st): State<St>,
        Path(id): Path<String>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        st.hits.lock().unwrap().push(id.clone());
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some("Bearer s3cret") {
            return (StatusCode::UNAUTHORIZED, "{}").into_response();
        }
        let done = st.start.elapsed() >= Duration::from_millis(600);
        let body = match (id.as_str(), done) {
            ("slow", false) => json!({"task": {"phase": "BUSY", "pct": 40}}),
            ("slow", true) => json!({"task": {"phase": "DONE", "pct": 100,
                "artifact": {"href": "https://files.example/slow.mp4?token=t"}}}),
            ("stuck", _) => json!({"task": {"phase": "PAUSED", "pct": 10}}),
            ("broken", _) => json!({"task": {"phase": "BROKEN", "reason": "bad input"}}),
            _ => return (StatusCode::NOT_FOUND, "{}").into_response(),
        };
        axum::Json(body).into_response()
    }
    let hits = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/api/tasks/{id}", get(task))
        .with_state(St {
            start: Instant::now(),
            hits: Arc::clone(&hits),
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Tasks { url, hits }
}

const TASKS_PROFILE: &str = r#"
name = "tasks"
status = "/api/tasks/{id}"
unknown_limit = 2

[fields]
state = "/task/phase"
progress = "/task/pct"
result_url = "/task/artifact/href"
error_message = "/task/reason"

[states]
running = ["BUSY"]
succeeded = ["DONE"]
failed = ["BROKEN"]

[auth]
scheme = "bearer"
"#;

fn profile_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ts-sdk-profiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_profile_from_a_file_reads_a_made_up_api() {
    let server = tasks().await;
    let path = profile_file("tasks.toml", TASKS_PROFILE);
    let profile = Profile::from_file(&path).unwrap();
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    let client = Client::builder()
        .base_url(&server.url)
        .profile(profile)
        .api_key("s3cret")
        .build()
        .unwrap();
    let seen: Vec<_> = client.watch_with("slow", brisk()).collect().await;
    let last = seen.last().unwrap().as_ref().unwrap();
    assert_eq!(last.state, JobState::Completed);
    assert_eq!(
        last.result_url.as_deref(),
        Some("https://files.example/slow.mp4?token=t")
    );
    assert!(
        seen.iter()
            .any(|s| s.as_ref().unwrap().progress == Some(0.4)),
        "{seen:?}"
    );

    // A word the profile does not know: a typed error naming it, after the profile's limit of
    // two in a row — two requests, not a poll for ever.
    let before = server.hits.lock().unwrap().len();
    let err = client.wait_with("stuck", &brisk()).await.unwrap_err();
    match &err {
        Error::UnknownState(u) => {
            assert_eq!((u.word.as_str(), u.in_a_row), ("PAUSED", 2));
            assert_eq!(u.profile, "tasks");
            assert_eq!(u.report.requests, 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hits.lock().unwrap().len() - before, 2);

    let err = client.wait_with("broken", &brisk()).await.unwrap_err();
    let Error::JobFailed(failed) = err else {
        panic!("{err:?}")
    };
    assert_eq!(failed.message.as_deref(), Some("bad input"));

    // The wrong key: refused, and the key is in no error.
    let wrong = Client::builder()
        .base_url(&server.url)
        .profile(Profile::from_toml_str(TASKS_PROFILE).unwrap())
        .api_key("not-the-key")
        .build()
        .unwrap();
    let err = wrong.status("slow").await.unwrap_err();
    assert_eq!(err.http_status(), Some(401));
    assert!(!format!("{err} {err:?} {wrong:?}").contains("not-the-key"));
}

/// Answers `GET /v1/videos/{id}` in OpenAI's shape with `openai-poll-after-ms: 250`, and
/// `GET /exports/{id}` with `202` until done, then `200` and a body: done 900 ms after start.
async fn hinted_and_coded() -> (String, Arc<Mutex<Vec<Instant>>>) {
    #[derive(Clone)]
    struct St {
        start: Instant,
        hits: Arc<Mutex<Vec<Instant>>>,
    }
    async fn video(State(st): State<St>) -> axum::response::Response {
        st.hits.lock().unwrap().push(Instant::now());
        let elapsed = st.start.elapsed().as_millis() as u64;
        let body = if elapsed >= 900 {
            json!({"id": "video_1", "status": "completed", "progress": 100})
        } else {
            json!({"id": "video_1", "status": "in_progress", "progress": elapsed * 100 / 900})
        };
        ([("openai-poll-after-ms", "250")], axum::Json(body)).into_response()
    }
    async fn export(State(st): State<St>) -> axum::response::Response {
        if st.start.elapsed() >= Duration::from_millis(900) {
            axum::Json(json!({"output": [{"url": "https://files.example/e.ndjson"}]}))
                .into_response()
        } else {
            StatusCode::ACCEPTED.into_response()
        }
    }
    let hits = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/videos/{id}", get(video))
        .route("/exports/{id}", get(export))
        .with_state(St {
            start: Instant::now(),
            hits: Arc::clone(&hits),
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test]
async fn the_hint_a_profile_names_is_honoured_and_a_status_code_can_be_the_state() {
    let (url, hits) = hinted_and_coded().await;
    let client = Client::builder()
        .base_url(&url)
        .profile(Profile::builtin("openai-video").unwrap())
        .build()
        .unwrap();
    // A policy that would poll every 100 ms: the server's 250 ms pause sets the pace.
    let options = deadline(20).policy(Fixed::new(Duration::from_millis(100)));
    let done = client.wait_with("video_1", &options).await.unwrap();
    assert_eq!(done.status.state, JobState::Completed);
    assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::Hints));
    // Every 250 ms as asked, over 900 ms: a handful of polls, none closer than the hint.
    let times = hits.lock().unwrap().clone();
    assert!((3..=6).contains(&times.len()), "{times:?}");
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(240), "{times:?}");
    }

    let coded = Profile::builder("exports", "/exports/{id}")
        .status_code(202, translation_status::profile::Canonical::Running)
        .status_code(200, translation_status::profile::Canonical::Succeeded)
        .result_url("/output/0/url")
        .build()
        .unwrap();
    let client = Client::builder()
        .base_url(&url)
        .profile(coded)
        .build()
        .unwrap();
    let done = client.wait_with("e-1", &brisk()).await.unwrap();
    assert_eq!(
        done.status.result_url.as_deref(),
        Some("https://files.example/e.ndjson")
    );
    assert_eq!(done.status.raw_state.as_deref(), Some("200"));
}

#[tokio::test]
async fn a_profile_without_credentials_refuses_a_key_and_basic_needs_a_user() {
    let none = Profile::builtin("result").unwrap();
    let err = Client::builder()
        .profile(none)
        .api_key("k")
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(c) if c.setting == "api_key"),
        "{err}"
    );
    let basic = Profile::builder("b", "/j/{id}")
        .state("/s")
        .words(translation_status::profile::Canonical::Succeeded, ["ok"])
        .auth_basic()
        .build()
        .unwrap();
    let err = Client::builder()
        .profile(basic.clone())
        .api_key("no-colon")
        .build()
        .unwrap_err();
    assert!(!err.to_string().contains("no-colon"), "{err}");
    let client = Client::builder()
        .profile(basic)
        .api_key("user:pw")
        .build()
        .unwrap();
    assert!(!format!("{client:?}").contains("pw"));
    // A profile's public base is the default base URL.
    let heygen = Client::builder()
        .profile(Profile::builtin("heygen-v2").unwrap())
        .build()
        .unwrap();
    assert_eq!(heygen.profile().base_url(), Some("https://api.heygen.com/"));
    let value: Value = serde_json::to_value(heygen.profile()).unwrap();
    assert_eq!(value["name"], "heygen-v2");
}
