//! The subcommands: each builds its client from the arguments, does one thing, prints, and
//! returns the exit status.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use futures_util::StreamExt;
use serde_json::{Value, json};
use translation_status::{Client, CreateRequest, JobStatus, WaitOptions};

use crate::args::{Cli, Command, CreateArgs, StatusArgs, Unusable, WaitArgs};
use crate::learn;
use crate::summary::{Summary, progress_line, word};

/// Runs the command; its exit status.
pub(crate) async fn run(cli: Cli) -> u8 {
    let env = |var: &str| std::env::var(var).ok();
    match cli.command {
        Command::Wait(args) => wait(args, env).await,
        Command::Watch(args) => watch(args, env).await,
        Command::Status(args) => status(args, env).await,
        Command::Create(args) => create(args, env).await,
    }
}

/// Says why nothing could be done — with `--json`, as the one line too (the command's
/// fields, `outcome` `error`, the problem as `message`): exit status 2.
fn unusable(json: Option<Value>, Unusable(problem): Unusable) -> u8 {
    if let Some(mut line) = json {
        line["outcome"] = "error".into();
        line["message"] = problem.clone().into();
        println!("{line}");
    }
    eprintln!("translation-status: {problem}");
    2
}

/// The one line of a `wait` or `watch` that could not start.
fn no_wait(json: bool) -> Option<Value> {
    json.then(|| Summary::failed_to_start().json())
}

fn options(args: &WaitArgs) -> WaitOptions {
    WaitOptions::new()
        .deadline(args.deadline)
        .cancel_on_give_up(args.cancel_on_give_up)
}

/// Prints how the wait ended: the JSON line, or the result URL on stdout and a line for
/// people on stderr.
fn finish(summary: &Summary, json: bool) -> u8 {
    if json {
        println!("{}", summary.json());
    } else {
        if let Some(url) = summary.status.as_ref().and_then(|s| s.result_url.as_ref())
            && summary.outcome == "completed"
        {
            println!("{url}");
        }
        eprintln!("{}", summary.line());
    }
    summary.exit_code()
}

/// Where this wait's learned durations are kept (see `learn`): `None` with `--no-learn`, or
/// when no cache directory is known.
fn learned_path(args: &WaitArgs, env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if args.no_learn {
        return None;
    }
    let profile = args.api.profile().ok()?;
    let base = args
        .api
        .base_url
        .clone()
        .or_else(|| profile.base_url().map(str::to_owned))
        .unwrap_or_else(|| args.job.clone());
    let name = match &args.api.profile_file {
        Some(_) => format!("file-{}", profile.name()),
        None => profile.name().to_owned(),
    };
    learn::path(&name, &learn::host(&base), env)
}

/// The client for a wait, starting from the durations kept at `kept`.
fn wait_client(
    args: &WaitArgs,
    env: impl Fn(&str) -> Option<String>,
    kept: Option<&PathBuf>,
) -> Result<Client, Unusable> {
    let learned = kept.map(|path| learn::load(path));
    args.api.client_learning(Some(&args.job), env, learned)
}

/// Keeps what the client has learned (nothing when learning is off).
fn keep(client: &Client, kept: Option<&PathBuf>) {
    if let Some(path) = kept {
        learn::save(path, client.learned_durations());
    }
}

async fn wait(args: WaitArgs, env: impl Fn(&str) -> Option<String>) -> u8 {
    let kept = learned_path(&args, &env);
    let client = match wait_client(&args, env, kept.as_ref()) {
        Ok(client) => client,
        Err(problem) => return unusable(no_wait(args.json), problem),
    };
    let result = client.wait_with(args.job.as_str(), &options(&args)).await;
    keep(&client, kept.as_ref());
    finish(&Summary::of(result), args.json)
}

async fn watch(args: WaitArgs, env: impl Fn(&str) -> Option<String>) -> u8 {
    let kept = learned_path(&args, &env);
    let client = match wait_client(&args, env, kept.as_ref()) {
        Ok(client) => client,
        Err(problem) => return unusable(no_wait(args.json), problem),
    };
    // The live line goes where it does not mix with the one JSON line.
    let live = Live::new(args.json);
    let mut watch = client.watch_with(args.job.as_str(), options(&args));
    let mut last: Option<JobStatus> = None;
    let mut failure = None;
    while let Some(item) = watch.next().await {
        match item {
            Ok(status) => {
                live.show(&status);
                last = Some(status);
            }
            Err(error) => failure = Some(error),
        }
    }
    live.done();
    keep(&client, kept.as_ref());
    let summary = match failure {
        Some(error) => Summary::failed(error),
        None => Summary::watched(last, watch.report().cloned()),
    };
    finish(&summary, args.json)
}

/// The live progress line: rewritten in place on a terminal, one line per change otherwise.
struct Live {
    to_stderr: bool,
    terminal: bool,
}

impl Live {
    fn new(json: bool) -> Self {
        let terminal = if json {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        Live {
            to_stderr: json,
            terminal,
        }
    }

    fn show(&self, status: &JobStatus) {
        let line = progress_line(status);
        let text = if self.terminal {
            format!("\r{line:<60}")
        } else {
            format!("{line}\n")
        };
        let _ = if self.to_stderr {
            std::io::stderr().write_all(text.as_bytes())
        } else {
            let mut out = std::io::stdout();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
    }

    fn done(&self) {
        if self.terminal {
            let _ = if self.to_stderr {
                writeln!(std::io::stderr())
            } else {
                writeln!(std::io::stdout())
            };
        }
    }
}

async fn status(args: StatusArgs, env: impl Fn(&str) -> Option<String>) -> u8 {
    let shape = args.json.then(|| json!({"outcome": null, "message": null}));
    let client = match args.api.client(Some(&args.job), env) {
        Ok(client) => client,
        Err(problem) => return unusable(shape, problem),
    };
    match client.status(args.job.as_str()).await {
        Ok(status) => {
            if args.json {
                let message = match &status.state {
                    translation_status::JobState::Failed(f) => {
                        f.message.clone().or_else(|| f.code.clone())
                    }
                    _ => None,
                };
                println!(
                    "{}",
                    json!({
                        "outcome": "read",
                        "state": word(&status),
                        "canonical": status.state.canonical(),
                        "terminal": status.is_terminal(),
                        "id": status.id,
                        "progress": status.progress,
                        "result_url": status.result_url,
                        "message": message,
                    })
                );
            } else {
                println!("{}", progress_line(&status));
                if let Some(url) = &status.result_url {
                    println!("{url}");
                }
            }
            0
        }
        Err(error) => unusable(shape, Unusable(error.to_string())),
    }
}

async fn create(args: CreateArgs, env: impl Fn(&str) -> Option<String>) -> u8 {
    let shape = args
        .json
        .then(|| json!({"outcome": null, "ids": [], "message": null}));
    let client: Client = match args.api.client(None, env) {
        Ok(client) => client,
        Err(problem) => return unusable(shape, problem),
    };
    let mut request = CreateRequest::new();
    if let Some(url) = &args.video_url {
        request = request.param("video_url", url.as_str());
    }
    if let Some(first) = args.languages.first() {
        request = request
            .param("language", first.as_str())
            .param("languages", args.languages.clone());
    }
    if let Some(title) = &args.title {
        request = request.param("title", title.as_str());
    }
    if let Some(url) = &args.callback_url {
        request = request.param("callback_url", url.as_str());
    }
    if let Some(duration) = args.duration {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        request = request.param("duration_ms", ms);
    }
    if let Some(outcome) = &args.outcome {
        request = request.param("outcome", outcome.as_str());
    }
    for (name, value) in &args.params {
        request = request.param(name.as_str(), value.clone());
    }
    if let Some(body) = &args.body {
        request = request.body(body.clone());
    }
    if let Some(key) = &args.idempotency_key {
        request = request.idempotency_key(key.as_str());
    }
    match client.create(&request).await {
        Ok(jobs) => {
            if args.json {
                let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
                let urls: Vec<&str> = jobs.iter().map(|j| j.status_url.as_str()).collect();
                println!(
                    "{}",
                    json!({"outcome": "created", "ids": ids, "status_urls": urls})
                );
            } else {
                for job in &jobs {
                    println!("{}", job.id);
                }
            }
            0
        }
        Err(error) => unusable(shape, Unusable(error.to_string())),
    }
}
