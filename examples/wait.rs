//! Waits for one job and shows how it went.
//!
//! ```sh
//! cargo run -p translation-sim &                      # a simulator on 127.0.0.1:8080
//! cargo run --example wait -- http://127.0.0.1:8080/status
//! cargo run --example wait -- j-42 --json             # by id, against TRANSLATION_STATUS_URL
//! ```
//!
//! On a terminal it draws a progress bar on stderr. With `--json` it prints one summary line
//! on stdout: `outcome`, `mechanism`, `requests`, `retries`, `hedges`, `elapsed_ms`,
//! `detection_delay_ms`. `requests + retries + hedges` is every HTTP request the wait sent
//! (see `WaitReport`): the number the server's access log shows.
//!
//! `--help` prints the usage. Exit status: 0 when the job completed (or for `--help`), 1 when
//! it failed, 2 when the wait did (gave up, unreachable, unexpected answer) or the command
//! line or environment could not be used (an unknown option, no job or two, a deadline that
//! is not a positive, finite number of seconds, a bad URL): a message, never a panic.
//!
//! Environment: `TRANSLATION_STATUS_URL` (base URL for ids, default `http://127.0.0.1:8080`),
//! `TRANSLATION_STATUS_API_KEY` (optional), `TRANSLATION_STATUS_DEADLINE` (seconds, default 600).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use translation_status::{Client, Error, JobState, JobStatus, WaitOptions, WaitReport};

const USAGE: &str = "\
usage: wait <job-id-or-status-url> [--json]
       wait --help

environment: TRANSLATION_STATUS_URL (base URL for ids, default http://127.0.0.1:8080),
             TRANSLATION_STATUS_API_KEY, TRANSLATION_STATUS_DEADLINE (seconds, default 600)
exit status: 0 the job completed, 1 it failed, 2 the wait failed or an argument was bad";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    /// Print the usage and exit 0.
    Help,
    /// Wait for a job.
    Wait(Args),
}

#[derive(Debug, PartialEq)]
struct Args {
    job: String,
    json: bool,
    base_url: String,
    api_key: Option<String>,
    deadline: Duration,
}

/// A bad argument or setting: the message, printed with the usage, exit status 2.
#[derive(Debug, PartialEq)]
struct Usage(String);

/// Reads the arguments (without the program name) and the environment. Never panics: what it
/// cannot use is a [`Usage`] error.
fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Command, Usage> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    let mut json = false;
    let mut job = None;
    for arg in args {
        match arg.as_str() {
            "--json" => json = true,
            option if option.starts_with('-') => {
                return Err(Usage(format!("unknown option {option:?}")));
            }
            given if job.is_none() => job = Some(given.to_owned()),
            extra => {
                return Err(Usage(format!(
                    "unexpected argument {extra:?}: one job at a time"
                )));
            }
        }
    }
    let job = job.ok_or_else(|| Usage("no job given".into()))?;
    let deadline = match env("TRANSLATION_STATUS_DEADLINE") {
        Some(raw) => seconds(&raw).ok_or_else(|| {
            Usage(format!(
                "TRANSLATION_STATUS_DEADLINE={raw:?}: expected a number of seconds, greater than \
                 zero and finite (for example 600 or 2.5)"
            ))
        })?,
        None => Duration::from_secs(600),
    };
    Ok(Command::Wait(Args {
        job,
        json,
        base_url: env("TRANSLATION_STATUS_URL").unwrap_or_else(|| "http://127.0.0.1:8080".into()),
        api_key: env("TRANSLATION_STATUS_API_KEY"),
        deadline,
    }))
}

/// Seconds as a duration: a positive number a `Duration` can hold, or nothing (not a number,
/// zero, negative, infinite, or too large).
fn seconds(raw: &str) -> Option<Duration> {
    let secs = raw.trim().parse::<f64>().ok()?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args, |name| std::env::var(name).ok()) {
        Ok(Command::Wait(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Usage(problem)) => {
            eprintln!("wait: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Client::builder().base_url(args.base_url);
    if let Some(key) = args.api_key {
        builder = builder.api_key(key);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("wait: {e}");
            return ExitCode::from(2);
        }
    };
    let options = WaitOptions::new().deadline(args.deadline);

    let draw = !args.json && std::io::stderr().is_terminal();
    let mut watch = client.watch_with(args.job.as_str(), options);
    let mut failure = None;
    while let Some(item) = watch.next().await {
        match item {
            Ok(status) if draw => bar(&status),
            Ok(_) => {}
            Err(e) => failure = Some(e),
        }
    }
    if draw {
        eprintln!();
    }
    let completed = watch.completion().is_some();
    let outcome = match (&failure, completed) {
        (None, true) => "completed",
        (None, false) => "failed",
        (Some(Error::GaveUp(_)), _) => "gave_up",
        (Some(_), _) => "error",
    };
    match watch.report() {
        Some(report) if args.json => println!("{}", summary(outcome, report)),
        Some(report) => eprintln!(
            "{outcome} via {} after {} request(s) ({} retries, {} hedges) in {} ms{}",
            report.mechanism,
            report.requests,
            report.retries,
            report.hedges,
            report.elapsed.as_millis(),
            report
                .detection_delay
                .map(|d| format!(", learned {} ms after it ended", d.as_millis()))
                .unwrap_or_default()
        ),
        None if args.json => println!("{}", serde_json::json!({ "outcome": outcome })),
        None => {}
    }
    if let Some(e) = failure {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    if completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn bar(status: &JobStatus) {
    let progress = status.progress.unwrap_or(0.0);
    let filled = (progress * 30.0).round() as usize;
    let eta = match &status.state {
        JobState::Pending { eta: Some(eta) } => format!(" ~{:.1}s left", eta.as_secs_f64()),
        _ => String::new(),
    };
    eprint!(
        "\r[{}{}] {:>3.0}% {}{eta}          ",
        "#".repeat(filled),
        ".".repeat(30 - filled.min(30)),
        progress * 100.0,
        status.state
    );
    let _ = std::io::stderr().flush();
}

fn summary(outcome: &str, report: &WaitReport) -> serde_json::Value {
    serde_json::json!({
        "outcome": outcome,
        "mechanism": report.mechanism.as_str(),
        "requests": report.requests,
        "retries": report.retries,
        "hedges": report.hedges,
        "elapsed_ms": report.elapsed.as_millis() as u64,
        "detection_delay_ms": report.detection_delay.map(|d| d.as_millis() as u64),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn usage(result: Result<Command, Usage>) -> String {
        match result {
            Err(Usage(problem)) => problem,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn help_is_not_an_error() {
        for flag in ["--help", "-h"] {
            assert_eq!(parse(&args(&[flag]), env(&[])), Ok(Command::Help));
            assert_eq!(parse(&args(&["j-1", flag]), env(&[])), Ok(Command::Help));
        }
    }

    #[test]
    fn a_job_and_the_defaults() {
        let Ok(Command::Wait(a)) = parse(&args(&["j-1", "--json"]), env(&[])) else {
            panic!("a job parses");
        };
        assert_eq!(a.job, "j-1");
        assert!(a.json);
        assert_eq!(a.base_url, "http://127.0.0.1:8080");
        assert_eq!(a.deadline, Duration::from_secs(600));
        assert_eq!(a.api_key, None);
        let Ok(Command::Wait(a)) = parse(
            &args(&["http://h/status"]),
            env(&[
                ("TRANSLATION_STATUS_DEADLINE", " 2.5 "),
                ("TRANSLATION_STATUS_URL", "http://h:1"),
                ("TRANSLATION_STATUS_API_KEY", "k"),
            ]),
        ) else {
            panic!("a status URL parses");
        };
        assert!(!a.json);
        assert_eq!(a.deadline, Duration::from_millis(2500));
        assert_eq!(a.base_url, "http://h:1");
        assert_eq!(a.api_key.as_deref(), Some("k"));
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert!(usage(parse(&args(&[]), env(&[]))).contains("no job"));
        assert!(usage(parse(&args(&["--json"]), env(&[]))).contains("no job"));
        assert!(usage(parse(&args(&["--jsn", "j-1"]), env(&[]))).contains("--jsn"));
        assert!(usage(parse(&args(&["-x", "j-1"]), env(&[]))).contains("-x"));
        assert!(usage(parse(&args(&["j-1", "j-2"]), env(&[]))).contains("j-2"));
    }

    #[test]
    fn a_deadline_that_is_not_a_duration_is_a_usage_error_not_a_panic() {
        for raw in [
            "inf", "-inf", "NaN", "1e30", "1e300", "-1", "0", "-0", "soon", "", "10s",
        ] {
            let pairs: &'static [(&str, &str)] =
                Box::leak(vec![("TRANSLATION_STATUS_DEADLINE", raw)].into_boxed_slice());
            let problem = usage(parse(&args(&["j-1"]), env(pairs)));
            assert!(
                problem.contains("TRANSLATION_STATUS_DEADLINE"),
                "{raw}: {problem}"
            );
        }
    }

    /// A real wait, against the simulator in-process, with one read in three failing.
    #[tokio::test]
    async fn the_summary_shows_the_whole_cost() {
        let mut settings = translation_sim::Settings::default();
        settings.server.bind = "127.0.0.1:0".parse().unwrap();
        settings.faults.error_rate = 0.3;
        settings.faults.seed = Some(3);
        let server = translation_sim::spawn(settings).await.unwrap();
        let id = server
            .state()
            .create_job(translation_sim::JobSpec {
                duration: Some(Duration::from_millis(600)),
                ..translation_sim::JobSpec::default()
            })
            .unwrap();
        let client = Client::new(&server.base_url()).unwrap();
        let options = WaitOptions::new().sse(false).long_poll(false).policy(
            translation_status::poll::Fixed::new(Duration::from_millis(50)),
        );
        let done = client.wait_with(id.as_str(), &options).await.unwrap();
        let report = &done.report;
        let line = summary("completed", report);
        assert_eq!(line["outcome"], "completed");
        assert_eq!(line["requests"], report.requests);
        assert_eq!(line["retries"], report.retries);
        assert_eq!(line["hedges"], report.hedges);
        assert!(report.retries > 0, "{report:?}");
    }
}
