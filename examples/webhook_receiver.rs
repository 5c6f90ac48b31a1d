//! Receives job results as webhooks: a small axum service that creates jobs with a callback to
//! itself, verifies each delivery and reports each result as it arrives.
//!
//! ```sh
//! cargo run --example webhook_receiver                        # an in-process simulator, 20 jobs
//! cargo run --example webhook_receiver -- --jobs 200 --duplicates 0.5
//! cargo run -p translation-sim &                              # or a simulator of your own
//! cargo run --example webhook_receiver -- --base-url http://127.0.0.1:8080
//! ```
//!
//! It listens on `127.0.0.1` (a free port) and mounts `webhook::axum::route` on `/hooks`: each
//! delivery's Standard-Webhooks signature is verified with the simulator's `webhooks.secret`,
//! its `webhook-id` checked against the replay cache, and its body read as the job's status.
//! The jobs take 0.2 to 2 s and one in five fails.
//!
//! Without `--base-url` it starts a simulator in-process, with a secret of its own and, so that
//! there is something to refuse, duplicated deliveries (`faults.webhook_duplicate_rate`:
//! `--duplicates`, default 0.25). With one, it creates the jobs there and verifies with
//! `--secret` (default: the simulator's default `webhooks.secret`); the simulator must run on
//! this machine, since the callback is on loopback.
//!
//! It prints a line per result, then a summary: results received, duplicates refused (answered
//! `200` by the route and not handed on), deliveries refused (`4xx`), results per outcome, and
//! jobs still without one. It stops once every job has its result (and, in-process, the copies
//! the simulator sent have come in), or after `--timeout` seconds (default 30). Exit status: 0
//! when every job's result arrived, 1 when some did not, 2 for a bad argument.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::map_response;
use axum::response::Response;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use translation_status::webhook::{Receiver, Secret, WebhookEvent, axum::route};
use translation_status::{Client, JobState, NewJob, Outcome};

const USAGE: &str = "\
usage: webhook_receiver [--base-url URL] [--jobs N] [--duplicates RATE] [--secret SECRET]
                        [--timeout SECONDS]

  --base-url URL      a simulator on this machine (default: one in-process)
  --jobs N            jobs to create, 1 to 10000 (default 20)
  --duplicates RATE   in-process only: the share of deliveries sent twice (default 0.25)
  --secret SECRET     the simulator's webhooks.secret (default: its default one)
  --timeout SECONDS   the longest the whole run may take (default 30)";

/// The most jobs one run creates.
const MAX_JOBS: usize = 10_000;

/// The in-process simulator's signing secret (`whsec_` + base64 of its key).
const EXAMPLE_SECRET: &str = "whsec_d2ViaG9vay1yZWNlaXZlci1leGFtcGxlLXNlY3JldA==";

/// The longest the run waits, once every result is in, for the duplicates the in-process
/// simulator sent to come in too.
const LINGER: Duration = Duration::from_secs(2);

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    /// A simulator's base URL (loopback only); `None`: one in-process.
    base_url: Option<String>,
    jobs: usize,
    /// In-process only: `faults.webhook_duplicate_rate`.
    duplicates: f64,
    /// The secret deliveries are verified with; `None`: the simulator's default.
    secret: Option<String>,
    timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            base_url: None,
            jobs: 20,
            duplicates: 0.25,
            secret: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Reads the arguments (without the program name); `Ok(None)` for `--help`. Never panics.
fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--base-url" => {
                let url = value()?;
                if !is_loopback(url) {
                    return Err(format!(
                        "--base-url {url}: the simulator must be on this machine (127.0.0.1, \
                         ::1 or localhost), where the callback can reach this receiver"
                    ));
                }
                options.base_url = Some(url.clone());
            }
            "--jobs" => {
                options.jobs = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_JOBS).contains(n))
                    .ok_or_else(|| format!("--jobs: expected 1 to {MAX_JOBS}"))?;
            }
            "--duplicates" => {
                options.duplicates = value()?
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=1.0).contains(p))
                    .ok_or("--duplicates: expected a rate from 0 to 1")?;
            }
            "--secret" => options.secret = Some(value()?.clone()),
            "--timeout" => {
                options.timeout = value()?
                    .parse()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
                    .ok_or("--timeout: expected seconds, more than 0 and at most 3600")?;
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if options.base_url.is_none() && options.secret.is_some() {
        return Err("--secret is for a simulator given with --base-url".into());
    }
    Ok(Some(options))
}

/// Whether `url` is an http(s) URL on this machine.
fn is_loopback(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https")
        && match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

/// What the run saw.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    jobs: usize,
    /// Results handed on: one per job at most.
    received: usize,
    /// Deliveries answered `200`: received before, refused by the replay cache.
    duplicates_refused: usize,
    /// Deliveries answered `4xx`: a bad signature, a stale timestamp, an unreadable body.
    refused: usize,
    completed: usize,
    failed: usize,
    canceled: usize,
    /// Jobs still without a result when the run stopped.
    missing: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} jobs: {} results received ({} completed, {} failed, {} canceled), \
             {} duplicates refused, {} deliveries refused, {} missing",
            self.jobs,
            self.received,
            self.completed,
            self.failed,
            self.canceled,
            self.duplicates_refused,
            self.refused,
            self.missing
        )
    }
}

/// The route's answers, counted by kind.
#[derive(Debug, Default)]
struct Answers {
    replays: AtomicUsize,
    refused: AtomicUsize,
}

impl Answers {
    fn count(&self, status: StatusCode) {
        if status == StatusCode::OK {
            self.replays.fetch_add(1, Ordering::Relaxed);
        } else if status.is_client_error() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The receiving service: `route` on `/hooks`, its answers counted.
fn app(receiver: Receiver, events: mpsc::Sender<WebhookEvent>, answers: Arc<Answers>) -> Router {
    Router::new()
        .route("/hooks", route(receiver, events))
        .layer(map_response(move |response: Response| {
            answers.count(response.status());
            std::future::ready(response)
        }))
}

/// The job number `i`'s duration and outcome: 0.2 to 2 s, one in five failing.
fn spec(i: usize) -> (Duration, Outcome) {
    let ms = 200 + (i as u64 * 7919) % 1800;
    let outcome = if i % 5 == 4 {
        Outcome::Error
    } else {
        Outcome::Completed
    };
    (Duration::from_millis(ms), outcome)
}

/// Runs it all: the receiver, the simulator (or the one given), the jobs; `report` gets a line
/// per result.
async fn run(options: &Options, mut report: impl FnMut(String)) -> anyhow::Result<Summary> {
    let deadline = Instant::now() + options.timeout;
    let local = match &options.base_url {
        Some(_) => None,
        None => {
            let mut settings = translation_sim::Settings::default();
            settings.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
            settings.webhooks.secret = EXAMPLE_SECRET.into();
            settings.faults.webhook_duplicate_rate = options.duplicates;
            Some(translation_sim::spawn(settings).await?)
        }
    };
    let (base, secret) = match (&local, &options.base_url) {
        (Some(server), _) => (server.base_url(), EXAMPLE_SECRET.to_owned()),
        (None, Some(base)) => (
            base.clone(),
            options
                .secret
                .clone()
                .unwrap_or_else(|| translation_sim::Settings::default().webhooks.secret),
        ),
        (None, None) => anyhow::bail!("no simulator"),
    };

    // The receiver, on loopback.
    let receiver = Receiver::standard_webhooks(Secret::whsec(&secret)?).build()?;
    let (events, mut arrived) = mpsc::channel(options.jobs.clamp(1, 1024));
    let answers = Arc::new(Answers::default());
    let listener = tokio::net::TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0)).await?;
    let callback = format!("http://{}/hooks", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let service = tokio::spawn(
        axum::serve(listener, app(receiver, events, Arc::clone(&answers)))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );

    // The jobs, each with a callback to the receiver.
    let client = Client::builder().base_url(&base).build()?;
    let created: Vec<(String, Instant)> = futures_util::stream::iter((0..options.jobs).map(|i| {
        let (duration, outcome) = spec(i);
        let job = NewJob::new()
            .duration(duration)
            .outcome(outcome)
            .callback_url(&callback);
        let client = client.clone();
        async move {
            let created = client.create_job(&job).await?;
            Ok::<_, translation_status::Error>((created.id, Instant::now()))
        }
    }))
    .buffer_unordered(16)
    .try_collect()
    .await?;
    let mut pending: HashMap<String, Instant> = created.into_iter().collect();

    // The results, as they arrive.
    let mut summary = Summary {
        jobs: options.jobs,
        ..Summary::default()
    };
    while !pending.is_empty() {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, arrived.recv()).await else {
            break;
        };
        let Some(since) = pending.remove(&event.job_id) else {
            report(format!("{}: not one of this run's jobs", event.job_id));
            continue;
        };
        summary.received += 1;
        let outcome = match &event.status.state {
            JobState::Completed => {
                summary.completed += 1;
                "completed".to_owned()
            }
            JobState::Failed(failure) => {
                summary.failed += 1;
                let why = failure.message.as_deref().or(failure.code.as_deref());
                format!("failed ({})", why.unwrap_or("no reason given"))
            }
            JobState::Canceled => {
                summary.canceled += 1;
                "canceled".to_owned()
            }
            other => format!("{other:?}"),
        };
        report(format!(
            "{}: {outcome}, {} ms after its creation (delivery {})",
            event.job_id,
            since.elapsed().as_millis(),
            event.delivery_id
        ));
    }
    summary.missing = pending.len();

    // In-process, the copies the simulator sent are all counted before the summary: once it
    // has seen every result delivered (and so decided every copy), each copy it sent.
    if let Some(server) = &local {
        let linger = deadline.min(Instant::now() + LINGER);
        let settled = || {
            let delivered = counter(
                server,
                "sim_webhook_deliveries_total{outcome=\"delivered\"}",
            );
            let copies = counter(
                server,
                "sim_faults_injected_total{kind=\"webhook_duplicate\"}",
            );
            delivered >= summary.received && answers.replays.load(Ordering::Relaxed) >= copies
        };
        while !settled() && Instant::now() < linger {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    summary.duplicates_refused = answers.replays.load(Ordering::Relaxed);
    summary.refused = answers.refused.load(Ordering::Relaxed);
    let _ = stop.send(());
    let _ = service.await;
    if let Some(server) = local {
        server.shutdown().await;
    }
    Ok(summary)
}

/// A counter of the in-process simulator (`series` as its metrics write it), 0 when unset.
fn counter(server: &translation_sim::RunningServer, series: &str) -> usize {
    let text = server.state().render_metrics();
    translation_sim::metrics::sample(&text, series).map_or(0, |n| n as usize)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("webhook_receiver: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options, |line| println!("{line}")).await {
        Ok(summary) => {
            println!("{summary}");
            if summary.missing == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("webhook_receiver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_are_read_and_bad_ones_refused() {
        assert_eq!(parse(&[]), Ok(Some(Options::default())));
        assert_eq!(parse(&args(&["--help"])), Ok(None));
        let given = parse(&args(&[
            "--base-url",
            "http://localhost:8080",
            "--jobs",
            "5",
            "--secret",
            "whsec_abc",
            "--timeout",
            "2.5",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(given.base_url.as_deref(), Some("http://localhost:8080"));
        assert_eq!(given.jobs, 5);
        assert_eq!(given.secret.as_deref(), Some("whsec_abc"));
        assert_eq!(given.timeout, Duration::from_millis(2500));
        for (bad, says) in [
            (&["--base-url", "http://10.0.0.1:8080"][..], "this machine"),
            (&["--base-url", "not a url"], "this machine"),
            (&["--jobs", "0"], "--jobs"),
            (&["--jobs", "10001"], "--jobs"),
            (&["--duplicates", "1.5"], "--duplicates"),
            (&["--timeout", "0"], "--timeout"),
            (&["--timeout", "nan"], "--timeout"),
            (&["--jobs"], "needs a value"),
            (&["--secret", "whsec_abc"], "--base-url"),
            (&["--verbose"], "unexpected"),
        ] {
            let problem = parse(&args(bad)).unwrap_err();
            assert!(problem.contains(says), "{bad:?}: {problem}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_result_arrives_once_and_every_duplicate_is_refused() {
        let options = Options {
            jobs: 10,
            duplicates: 1.0,
            ..Options::default()
        };
        let mut lines = Vec::new();
        let summary = run(&options, |line| lines.push(line)).await.unwrap();
        assert_eq!(
            summary,
            Summary {
                jobs: 10,
                received: 10,
                duplicates_refused: 10,
                refused: 0,
                completed: 8,
                failed: 2,
                canceled: 0,
                missing: 0,
            },
            "{lines:#?}"
        );
        assert_eq!(lines.len(), 10, "a line per result: {lines:#?}");
        assert_eq!(lines.iter().filter(|l| l.contains(": failed")).count(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_given_simulator_is_used_and_a_wrong_secret_refuses_every_delivery() {
        // A simulator of our own, with its default secret and one attempt per delivery.
        let mut settings = translation_sim::Settings::default();
        settings.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.webhooks.max_attempts = 1;
        let server = translation_sim::spawn(settings).await.unwrap();
        let given = Options {
            base_url: Some(server.base_url()),
            jobs: 3,
            timeout: Duration::from_secs(20),
            ..Options::default()
        };
        let summary = run(&given, |_| {}).await.unwrap();
        assert_eq!(
            (summary.received, summary.missing, summary.refused),
            (3, 0, 0),
            "{summary}"
        );
        assert_eq!(summary.duplicates_refused, 0, "no duplicates asked for");

        // Another secret than the simulator signs with: every delivery refused, the run ends
        // at its timeout.
        let wrong = Options {
            secret: Some(EXAMPLE_SECRET.into()),
            timeout: Duration::from_secs(4),
            ..given
        };
        let summary = run(&wrong, |_| {}).await.unwrap();
        assert_eq!((summary.received, summary.missing), (0, 3), "{summary}");
        assert_eq!(summary.refused, 3, "{summary}");
    }
}
