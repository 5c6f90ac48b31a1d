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
//! Exit status: 0 when the job completed, 1 when it failed, 2 when the wait did (gave up,
//! unreachable, unexpected answer).
//!
//! Environment: `TRANSLATION_STATUS_URL` (base URL for ids, default `http://127.0.0.1:8080`),
//! `TRANSLATION_STATUS_API_KEY` (optional), `TRANSLATION_STATUS_DEADLINE` (seconds, default 600).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures_util::StreamExt;
use translation_status::{Client, Error, JobState, JobStatus, WaitOptions, WaitReport};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let Some(job) = args.iter().find(|a| !a.starts_with("--")) else {
        anyhow::bail!("usage: wait <job-id-or-status-url> [--json]");
    };
    let base =
        std::env::var("TRANSLATION_STATUS_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let deadline = std::env::var("TRANSLATION_STATUS_DEADLINE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(600.0);
    let mut builder = Client::builder().base_url(base);
    if let Ok(key) = std::env::var("TRANSLATION_STATUS_API_KEY") {
        builder = builder.api_key(key);
    }
    let client = builder.build()?;
    let options = WaitOptions::new().deadline(Duration::from_secs_f64(deadline.max(0.0)));

    let draw = !json && std::io::stderr().is_terminal();
    let mut watch = client.watch_with(job.as_str(), options);
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
    let last = watch.completion().map(|c| c.status.clone());
    let outcome = match (&failure, watch.completion()) {
        (None, Some(_)) => "completed",
        (None, None) => "failed",
        (Some(Error::GaveUp(_)), _) => "gave_up",
        (Some(_), _) => "error",
    };
    match watch.report() {
        Some(report) if json => println!("{}", summary(outcome, report)),
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
        None if json => println!("{}", serde_json::json!({ "outcome": outcome })),
        None => {}
    }
    if let Some(e) = failure {
        eprintln!("{e}");
        std::process::exit(2);
    }
    if last.is_none() {
        std::process::exit(1);
    }
    Ok(())
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
