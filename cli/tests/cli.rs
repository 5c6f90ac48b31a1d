//! The real `translation-status` binary against the simulator started in process on
//! 127.0.0.1:0 — its v1, `/status` and HeyGen v2/v3 dialects — and against made-up APIs served
//! by tiny servers here, read through profile files.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use translation_sim::{JobSpec, Outcome, RunningServer, Settings};

const VIDEO: &str = "https://videos.example/source.mp4";

async fn sim(tweak: impl FnOnce(&mut Settings)) -> RunningServer {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    tweak(&mut settings);
    translation_sim::spawn(settings).await.unwrap()
}

fn v1_job(server: &RunningServer, ms: u64, outcome: Outcome) -> String {
    server
        .state()
        .create_job(JobSpec {
            duration: Some(Duration::from_millis(ms)),
            outcome: Some(outcome),
            ..JobSpec::default()
        })
        .unwrap()
}

/// What one run of the binary printed, and its exit status.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one JSON line `--json` prints: exactly one line, parsed.
    fn line(&self) -> Value {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line: {self:?}");
        serde_json::from_str(lines[0]).unwrap()
    }

    fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with `args` and only the environment `env` (nothing inherited: no key
/// leaks in from the machine running the tests), at most 60 s.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_translation-status"));
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command ends within 60 s")
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `args` with `--api <profile> --base-url <server>`.
fn at<'a>(server: &'a str, profile: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--api", profile, "--base-url", server]);
    all
}

#[tokio::test]
async fn help_is_everywhere_and_bad_arguments_exit_2() {
    for args in [
        vec!["--help"],
        vec!["wait", "--help"],
        vec!["status", "--help"],
        vec!["watch", "--help"],
        vec!["create", "--help"],
    ] {
        let out = run(&args, &[]).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert!(out.stdout.contains("Usage: translation-status"), "{out:?}");
    }
    let out = run(&["wait", "--help"], &[]).await;
    for flag in [
        "--api",
        "--profile-file",
        "--base-url",
        "--api-key-env",
        "--deadline",
        "--json",
    ] {
        assert!(out.stdout.contains(flag), "{flag}: {out:?}");
    }
    for args in [
        vec!["wait"],
        vec!["wait", "j", "--deadline", "soon"],
        vec!["wait", "j", "--api", "result", "--profile-file", "p.toml"],
        vec!["frobnicate"],
    ] {
        assert_eq!(run(&args, &[]).await.code, 2, "{args:?}");
    }
    // A profile that is not built in: exit 2, and --json still prints its one line.
    let out = run(&["wait", "j", "--api", "heygen-v9", "--json"], &[]).await;
    assert_eq!(out.code, 2);
    assert_eq!(out.line()["outcome"], "error");
    assert!(
        out.line()["message"]
            .as_str()
            .unwrap()
            .contains("heygen-v2")
    );
}

#[tokio::test]
async fn heygen_v2_create_then_wait_and_watch() {
    let server = sim(|s| s.heygen.queued_fraction = 0.5).await;
    let base = server.base_url();
    let out = run(
        &at(
            &base,
            "heygen-v2",
            &[
                "create",
                "--video-url",
                VIDEO,
                "--language",
                "Spanish (Spain)",
                "--duration",
                "3s",
                "--title",
                "Launch",
                "--json",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let created = out.line();
    assert_eq!(created["outcome"], "created");
    let id = created["ids"][0].as_str().unwrap().to_owned();

    // Watch: a live line per change (not a terminal here), then how it ended.
    let out = run(
        &at(&base, "heygen-v2", &["watch", &id, "--deadline", "30s"]),
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.first().unwrap().starts_with("queued (pending)"),
        "{out:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("succeeded (success)")),
        "{out:?}"
    );
    assert!(out.stderr.contains("completed (success)"), "{out:?}");

    let out = run(&at(&base, "heygen-v2", &["wait", &id, "--json"]), &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let line = out.line();
    let keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "detection_delay_ms",
            "elapsed_ms",
            "mechanism",
            "message",
            "outcome",
            "requests",
            "result_url",
            "retries",
            "state"
        ]
    );
    assert_eq!(
        (&line["outcome"], &line["state"], &line["message"]),
        (&json!("completed"), &json!("success"), &Value::Null)
    );
    assert!(
        line["result_url"].as_str().unwrap().contains("sig="),
        "{line}"
    );
    assert!(line["requests"].as_u64().unwrap() >= 1);
    assert!(line["mechanism"].is_string() && line["elapsed_ms"].is_u64());
    // Without --json: the result URL on stdout, for scripts.
    let out = run(&at(&base, "heygen-v2", &["wait", &id]), &[]).await;
    assert!(out.stdout.trim().starts_with("https://"), "{out:?}");

    // A failed job: exit 1, its message surfaced.
    let out = run(
        &at(
            &base,
            "heygen-v2",
            &[
                "create",
                "--video-url",
                VIDEO,
                "--language",
                "German",
                "--duration",
                "200ms",
                "--outcome",
                "error",
            ],
        ),
        &[],
    )
    .await;
    let failed = out.stdout.trim().to_owned();
    let out = run(&at(&base, "heygen-v2", &["wait", &failed, "--json"]), &[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let line = out.line();
    assert_eq!(
        (&line["outcome"], &line["state"]),
        (&json!("failed"), &json!("failed"))
    );
    assert!(!line["message"].as_str().unwrap().is_empty(), "{line}");
}

#[tokio::test]
async fn heygen_v3_one_create_three_languages_three_waits() {
    let server = sim(|_| {}).await;
    let base = server.base_url();
    let out = run(
        &at(
            &base,
            "heygen-v3",
            &[
                "create",
                "--video-url",
                VIDEO,
                "--language",
                "German (Germany)",
                "--language",
                "Japanese (Japan)",
                "--language",
                "French (France)",
                "--duration",
                "1s",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let ids: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), 3, "{out:?}");
    let waits = ids.iter().map(|id| {
        let args = at(
            &base,
            "heygen-v3",
            &["wait", id, "--json", "--deadline", "30s"],
        )
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &[]).await
        }
    });
    for out in futures_util::future::join_all(waits).await {
        assert_eq!(out.code, 0, "{out:?}");
        let line = out.line();
        assert_eq!(
            (&line["outcome"], &line["state"]),
            (&json!("completed"), &json!("completed"))
        );
        assert!(line["result_url"].is_string(), "{line}");
        assert!(
            line["detection_delay_ms"].is_u64(),
            "v3 says when it ended: {line}"
        );
    }
}

#[tokio::test]
async fn creation_at_the_running_job_limit_waits_its_turn_and_nothing_is_lost() {
    let server = sim(|s| s.heygen.max_concurrent_jobs = 1).await;
    let base = server.base_url();
    let before = server.state().job_count();
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = run(
            &at(
                &base,
                "heygen-v3",
                &[
                    "create",
                    "--video-url",
                    VIDEO,
                    "--language",
                    "German",
                    "--duration",
                    "700ms",
                ],
            ),
            &[],
        )
        .await;
        assert_eq!(out.code, 0, "the second waited out its 429: {out:?}");
        ids.push(out.stdout.trim().to_owned());
    }
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(
        server.state().job_count() - before,
        2,
        "no job lost, none duplicated"
    );
    for id in &ids {
        let out = run(&at(&base, "heygen-v3", &["wait", id, "--json"]), &[]).await;
        assert_eq!(out.line()["outcome"], "completed", "{out:?}");
    }
}

#[tokio::test]
async fn the_result_profile_and_the_simulator_tell_every_ending_apart() {
    let server = sim(|_| {}).await;
    let base = server.base_url();
    let done = v1_job(&server, 300, Outcome::Completed);
    let out = run(&at(&base, "result", &["wait", &done, "--json"]), &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.line()["state"], "completed");
    let failed = v1_job(&server, 300, Outcome::Error);
    let out = run(&at(&base, "result", &["wait", &failed, "--json"]), &[]).await;
    assert_eq!((out.code, &out.line()["outcome"]), (1, &json!("failed")));
    let canceled = v1_job(&server, 60_000, Outcome::Completed);
    server.state().cancel_job(&canceled).unwrap();
    let out = run(&at(&base, "simulator", &["wait", &canceled, "--json"]), &[]).await;
    assert_eq!((out.code, &out.line()["outcome"]), (1, &json!("canceled")));

    // `status`: one read, exit 0 whatever it says; 2 when it cannot read.
    let running = v1_job(&server, 60_000, Outcome::Completed);
    let out = run(
        &at(&base, "simulator", &["status", &running, "--json"]),
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let line = out.line();
    assert_eq!(
        (&line["canonical"], &line["state"], &line["terminal"]),
        (&json!("running"), &json!("pending"), &json!(false))
    );
    let out = run(
        &at(&base, "simulator", &["status", "j-none", "--json"]),
        &[],
    )
    .await;
    assert_eq!((out.code, &out.line()["outcome"]), (2, &json!("error")));

    // Giving up, and canceling the job on the service when asked.
    let stuck = server
        .state()
        .create_job(JobSpec {
            hang: true,
            ..JobSpec::default()
        })
        .unwrap();
    let out = run(
        &at(
            &base,
            "simulator",
            &[
                "wait",
                &stuck,
                "--deadline",
                "700ms",
                "--cancel-on-give-up",
                "--json",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    let line = out.line();
    assert_eq!(line["outcome"], "gave_up");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("canceled on the service"),
        "{line}"
    );
    let out = run(&at(&base, "simulator", &["status", &stuck, "--json"]), &[]).await;
    assert_eq!(out.line()["canonical"], "canceled");
}

// ----- A made-up API, read through a profile file ------------------------------------------

/// `GET /api/tasks/{id}` → `{"task": {"phase", "pct", "artifact": {"href"}}}` behind
/// `Authorization: Bearer s3cret-value`: `slow` is done 500 ms after the server starts,
/// `stuck` reports a phase the profile does not know.
async fn tasks() -> (String, Arc<Mutex<u32>>) {
    #[derive(Clone)]
    struct St {
        start: Instant,
        hits: Arc<Mutex<u32>>,
    }
    async fn task(
        State(st): State<St>,
        Path(id): Path<String>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        *st.hits.lock().unwrap() += 1;
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some("Bearer s3cret-value") {
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"error": {"code": "unauthorized"}}"#,
            )
                .into_response();
        }
        let done = st.start.elapsed() >= Duration::from_millis(500);
        let body = match (id.as_str(), done) {
            ("slow", false) => json!({"task": {"phase": "BUSY", "pct": 30}}),
            ("slow", true) => json!({"task": {"phase": "DONE", "pct": 100,
                "artifact": {"href": "https://files.example/slow.mp4"}}}),
            ("stuck", _) => json!({"task": {"phase": "PAUSED"}}),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        // The time left, as the simulator says it: the wait looks again soon.
        ([("retry-after-ms", "200")], axum::Json(body)).into_response()
    }
    let hits = Arc::new(Mutex::new(0));
    let app = axum::Router::new()
        .route("/api/tasks/{id}", get(task))
        .with_state(St {
            start: Instant::now(),
            hits: Arc::clone(&hits),
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

const TASKS: &str = r#"
name = "tasks"
status = "/api/tasks/{id}"
unknown_limit = 2

[fields]
state = "/task/phase"
progress = "/task/pct"
result_url = "/task/artifact/href"

[states]
running = ["BUSY"]
succeeded = ["DONE"]

[auth]
scheme = "bearer"
env = "TASKS_KEY"
"#;

fn profile_file(text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ts-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tasks.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_profile_file_reads_a_made_up_api_with_a_key_from_the_environment() {
    let (url, hits) = tasks().await;
    let file = profile_file(TASKS);
    let with = |job: &'static str, extra: &[&'static str]| {
        let mut args = vec![
            "wait",
            job,
            "--profile-file",
            &file,
            "--base-url",
            &url,
            "--json",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let go = |args: Vec<String>, env: Vec<(&'static str, &'static str)>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &env).await
    };
    // The key from the profile's own variable, and from one named on the command line.
    for (extra, env) in [
        (vec![], vec![("TASKS_KEY", "s3cret-value")]),
        (
            vec!["--api-key-env", "MY_KEY"],
            vec![("MY_KEY", "s3cret-value")],
        ),
    ] {
        let out = go(with("slow", &extra), env).await;
        assert_eq!(out.code, 0, "{out:?}");
        let line = out.line();
        assert_eq!(
            (&line["state"], &line["result_url"]),
            (&json!("DONE"), &json!("https://files.example/slow.mp4"))
        );
        assert!(!out.both().contains("s3cret-value"), "never echoed");
    }

    // A word the profile does not know: a typed error naming it, after two requests.
    let before = *hits.lock().unwrap();
    let out = go(with("stuck", &[]), vec![("TASKS_KEY", "s3cret-value")]).await;
    assert_eq!(out.code, 2, "{out:?}");
    let line = out.line();
    assert_eq!(
        (&line["outcome"], &line["state"], &line["requests"]),
        (&json!("error"), &json!("PAUSED"), &json!(2))
    );
    assert!(
        line["message"].as_str().unwrap().contains("\"PAUSED\""),
        "{line}"
    );
    assert_eq!(*hits.lock().unwrap() - before, 2, "bounded");

    // The wrong key: refused, and neither key is printed.
    let out = go(with("slow", &[]), vec![("TASKS_KEY", "wr0ng-value")]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.line()["message"].as_str().unwrap().contains("401"));
    assert!(!out.both().contains("wr0ng-value"), "{out:?}");
    // A named variable that is not set: said so, by name.
    let out = go(with("slow", &["--api-key-env", "UNSET_KEY"]), vec![]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.line()["message"]
            .as_str()
            .unwrap()
            .contains("UNSET_KEY"),
        "{out:?}"
    );
    std::fs::remove_dir_all(std::path::Path::new(&file).parent().unwrap()).unwrap();
}

/// A cache directory of the test's own, removed when dropped.
struct CacheDir(std::path::PathBuf);

impl CacheDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ts-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        CacheDir(dir)
    }

    fn text(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A learned-state file of earlier runs (twenty 3 s jobs, bracketed within 100 ms) makes the
/// first poll decisions of the next `wait` the learned schedule's: a 3 s job on a plain
/// server is found with two or three requests, promptly; the run adds what it saw to the
/// file. `--no-learn` neither reads nor writes it, and a damaged file is reported and
/// replaced, never fatal.
#[tokio::test]
async fn a_learned_state_file_makes_the_first_decisions_learned() {
    use translation_status::poll::{LearnedDurations, Sample, SavedDurations};
    let server = sim(|s| {
        s.sse.enabled = false;
        s.longpoll.enabled = false;
        s.hints.eta = false;
        s.hints.retry_after = false;
    })
    .await;
    let base = server.base_url();
    let cache = CacheDir::new("learn");
    let host = base.trim_start_matches("http://").replace(':', "_");
    let file = cache.0.join("learned").join(format!("result@{host}.json"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let earlier = LearnedDurations::new(64);
    for i in 0..20 {
        let lo = Duration::from_millis(2950 + 5 * i);
        earlier.record(Sample::between(lo, lo + Duration::from_millis(100)));
    }
    std::fs::write(&file, earlier.export().to_json()).unwrap();
    let env = [("TRANSLATION_STATUS_CACHE_DIR", cache.text())];

    // The original exercise's plain route: `{"result": ...}` and nothing else.
    let plain = |ms| {
        format!(
            "{base}/status?job={}",
            v1_job(&server, ms, Outcome::Completed)
        )
    };
    let job = plain(3000);
    let out = run(&at(&base, "result", &["wait", &job, "--json"]), &env).await;
    let line = out.line();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(line["mechanism"], "learned", "{line}");
    assert!(line["requests"].as_u64().unwrap() <= 3, "{line}");
    // A plain server says nothing of when the job ended: from its creation (just before
    // the command started) to the answer, at most 400 ms past its 3 s.
    assert!(line["elapsed_ms"].as_f64().unwrap() <= 3400.0, "{line}");
    let kept = SavedDurations::from_json(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept.samples.len(), 21, "what this run saw was added");

    // Opted out: the cold start, and the file is left alone.
    let job = plain(3000);
    let args = at(&base, "result", &["wait", &job, "--json", "--no-learn"]);
    let out = run(&args, &env).await;
    assert_eq!(out.line()["mechanism"], "cold_start", "{out:?}");
    let again = SavedDurations::from_json(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(again, kept);

    // A damaged file: said on stderr, the wait runs cold, and the file is whole again.
    std::fs::write(&file, b"{\"format\":1,\"samples\":[[3.0,").unwrap();
    let job = plain(1000);
    let out = run(&at(&base, "result", &["wait", &job, "--json"]), &env).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("ignoring the learned durations"),
        "{out:?}"
    );
    let fresh = SavedDurations::from_json(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(fresh.samples.len(), 1);
}
