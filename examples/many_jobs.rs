//! Tracks many jobs at once with one `JobSet`, under a request budget, and shows what it cost.
//!
//! ```sh
//! cargo run --release --example many_jobs                          # an in-process simulator, 1,000 jobs
//! cargo run --release --example many_jobs -- --json                # the same, one JSON summary line
//! cargo run --release --example many_jobs -- http://127.0.0.1:8080 --jobs 300
//! ```
//!
//! Without a base URL it starts the simulator in-process (rate-limited at 250 requests per
//! second) and creates the jobs in the same instant, lasting 2 to 6 s, one in ten failing;
//! with one, it creates them there (`POST /v1/jobs`). Either way it then waits for all of
//! them with one job set and prints, per second, the requests sent; `--json` ends with one
//! line: `jobs`, `completed`, `failed`, `gave_up`, `errors`, `requests`, `throttled`,
//! `peak_rps`, `mean_rps`, `stalls`, `elapsed_ms`.
//!
//! Flags: `--jobs N` (default 1000), `--rate R` and `--burst B` (the client's request budget,
//! default 200 and 20), `--stall-after SECONDS` (default: learned).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tokio::time::Instant;
use translation_status::jobset::{JobEvent, JobSetOptions, RequestBudget};
use translation_status::{Client, Error, NewJob, Outcome, telemetry};

struct Args {
    base: Option<String>,
    jobs: usize,
    rate: f64,
    burst: u32,
    stall_after: Option<f64>,
    json: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        base: None,
        jobs: 1000,
        rate: 200.0,
        burst: 20,
        stall_after: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
        };
        match arg.as_str() {
            "--json" => args.json = true,
            "--jobs" => args.jobs = value("--jobs")?.parse()?,
            "--rate" => args.rate = value("--rate")?.parse()?,
            "--burst" => args.burst = value("--burst")?.parse()?,
            "--stall-after" => args.stall_after = Some(value("--stall-after")?.parse()?),
            flag if flag.starts_with("--") => anyhow::bail!(
                "unknown flag {flag}; usage: many_jobs [BASE_URL] [--jobs N] [--rate R] [--burst B] [--stall-after S] [--json]"
            ),
            url => args.base = Some(url.to_owned()),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let requests = Requests::default();
    metrics::set_global_recorder(requests.clone())
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;

    // The server: the one given, or a simulator right here.
    let (base, local) = match &args.base {
        Some(base) => (base.clone(), None),
        None => {
            let mut settings = translation_sim::Settings::default();
            settings.server.bind = "127.0.0.1:0".parse()?;
            settings.rate_limit.enabled = true;
            settings.rate_limit.rps = 250.0;
            settings.rate_limit.burst = 250;
            let server = translation_sim::spawn(settings).await?;
            (server.base_url(), Some(server))
        }
    };
    let client = Client::builder()
        .base_url(&base)
        .request_budget(RequestBudget::new(args.rate, args.burst))
        .build()?;

    // The jobs, created in the same instant: 2 to 6 s, one in ten failing.
    let specs: Vec<(Duration, Outcome)> = (0..args.jobs)
        .map(|i| {
            let ms = 2000 + (i as u64 * 7919) % 4000;
            let outcome = if i % 10 == 3 {
                Outcome::Error
            } else {
                Outcome::Completed
            };
            (Duration::from_millis(ms), outcome)
        })
        .collect();
    let ids: Vec<String> = match &local {
        Some(server) => specs
            .iter()
            .map(|&(duration, outcome)| {
                let outcome = match outcome {
                    Outcome::Error => translation_sim::Outcome::Error,
                    _ => translation_sim::Outcome::Completed,
                };
                server.state().create_job(translation_sim::JobSpec {
                    duration: Some(duration),
                    outcome: Some(outcome),
                    ..translation_sim::JobSpec::default()
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("the simulator's store is full"))?,
        None => {
            futures_util::stream::iter(specs.iter().map(|&(duration, outcome)| {
                create(
                    client.clone(),
                    NewJob::new().duration(duration).outcome(outcome),
                )
            }))
            .buffer_unordered(16)
            .try_collect()
            .await?
        }
    };

    let mut options = JobSetOptions::new().deadline(Duration::from_secs(120));
    if let Some(secs) = args.stall_after {
        let bound = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--stall-after {secs}: expected a positive, finite number of seconds"
                )
            })?;
        options = options.stall_after(bound);
    }
    let started = Instant::now();
    let mut set = client.job_set(options)?;
    for id in &ids {
        set.add(id.as_str())?;
    }
    let (mut completed, mut failed, mut gave_up, mut errors, mut stalls) = (0, 0, 0, 0, 0);
    while let Some(event) = set.next().await {
        match event {
            JobEvent::Finished { result: Ok(_), .. } => completed += 1,
            JobEvent::Finished {
                result: Err(Error::JobFailed(_)),
                ..
            } => failed += 1,
            JobEvent::Finished {
                result: Err(Error::GaveUp(_)),
                ..
            } => gave_up += 1,
            JobEvent::Finished {
                job,
                result: Err(e),
                ..
            } => {
                errors += 1;
                eprintln!("{job}: {e}");
            }
            JobEvent::Stalled(stall) => {
                stalls += 1;
                eprintln!(
                    "{} stalled: unchanged for {:?}",
                    stall.job, stall.unchanged_for
                );
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed();

    let (per_second, throttled) = requests.since(started);
    let total: u64 = per_second.iter().sum();
    let (peak, mean) = peak_and_mean(&per_second);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "jobs": ids.len(),
                "completed": completed,
                "failed": failed,
                "gave_up": gave_up,
                "errors": errors,
                "requests": total,
                "throttled": throttled,
                "peak_rps": peak,
                "mean_rps": (mean * 10.0).round() / 10.0,
                "stalls": stalls,
                "elapsed_ms": elapsed.as_millis() as u64,
            })
        );
    } else {
        println!("requests per second: {per_second:?}");
        println!(
            "{} jobs against {base}: {completed} completed, {failed} failed, {gave_up} gave up, {errors} errors, {stalls} stalls",
            ids.len()
        );
        println!(
            "{total} requests ({:.2} per job, {throttled} answered 429) in {:.1} s: peak {peak}/s, mean {mean:.1}/s",
            total as f64 / ids.len().max(1) as f64,
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// Creates a job, waiting out the server's rate limit: a refused creation created nothing,
/// so it is safe to send again.
async fn create(client: Client, job: NewJob) -> Result<String, Error> {
    loop {
        match client.create_job(&job).await {
            Ok(created) => return Ok(created.id),
            Err(Error::UnexpectedResponse(refused)) if refused.status == 429 => {
                // However short the server's hint, never a pause below the SDK's floor.
                let pause = refused
                    .retry_after
                    .unwrap_or(Duration::from_secs(1))
                    .max(translation_status::poll::MIN_PAUSE);
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Peak and mean requests per second, the mean over the busy span (first to last busy second).
fn peak_and_mean(per_second: &[u64]) -> (u64, f64) {
    let first = per_second.iter().position(|&n| n > 0);
    let last = per_second.iter().rposition(|&n| n > 0);
    let (Some(a), Some(b)) = (first, last) else {
        return (0, 0.0);
    };
    let span = &per_second[a..=b];
    let peak = span.iter().copied().max().unwrap_or(0);
    (peak, span.iter().sum::<u64>() as f64 / span.len() as f64)
}

/// A metrics recorder that keeps when each request on the wire was sent (its answer time
/// minus its duration), and when each `429` came back.
#[derive(Clone, Default)]
struct Requests(Arc<Mutex<Log>>);

#[derive(Default)]
struct Log {
    sent: Vec<Instant>,
    throttled: Vec<Instant>,
}

impl Requests {
    /// Requests sent per second from `start` on, and the 429s answered since.
    fn since(&self, start: Instant) -> (Vec<u64>, usize) {
        let log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut per_second = Vec::new();
        for sent in log.sent.iter().filter(|t| **t >= start) {
            let second = sent.duration_since(start).as_secs() as usize;
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
        }
        let throttled = log.throttled.iter().filter(|t| **t >= start).count();
        (per_second, throttled)
    }
}

struct Sample(Arc<Mutex<Log>>);

impl HistogramFn for Sample {
    fn record(&self, seconds: f64) {
        let now = Instant::now();
        let sent = Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|took| now.checked_sub(took))
            .unwrap_or(now);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sent
            .push(sent);
    }
}

impl CounterFn for Sample {
    fn increment(&self, _: u64) {
        let now = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .throttled
            .push(now);
    }
    fn absolute(&self, _: u64) {}
}

impl Recorder for Requests {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let throttled = key.name() == telemetry::REQUESTS_TOTAL
            && key
                .labels()
                .any(|l| l.key() == "outcome" && l.value() == "throttled");
        if throttled {
            Counter::from_arc(Arc::new(Sample(Arc::clone(&self.0))))
        } else {
            Counter::noop()
        }
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == telemetry::REQUEST_DURATION_SECONDS {
            Histogram::from_arc(Arc::new(Sample(Arc::clone(&self.0))))
        } else {
            Histogram::noop()
        }
    }
}
