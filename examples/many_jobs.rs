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
//! line: `jobs`, `completed`, `failed`, `gave_up`, `errors`, `requests` (every HTTP request
//! made to wait: stream opens and resumes, watch set changes, batched reads, polls, streams
//! and long-polls of single jobs), `requests_per_job`, `by_kind` (those requests by kind),
//! `create_requests` (job creation, apart), `streams` (change stream connections opened),
//! `resumes`, `resets`, `silent_drops`, `lost` (jobs never reported finished),
//! `duplicated` (jobs reported finished twice), `detection_p50_ms` and `detection_p99_ms`
//! (the job's end → its `Finished` event; in-process only, where the end is known),
//! `throttled`, `peak_rps`, `mean_rps`, `stalls`, `elapsed_ms`.
//!
//! Flags: `--jobs N` (default 1000), `--rate R` and `--burst B` (the client's request budget,
//! default 200 and 20), `--stall-after SECONDS` (default: learned). In-process only:
//! `--median SECONDS` and `--sigma S` (lognormal durations instead of 2 to 6 s),
//! `--time-scale F` (multiplies the durations, the server's bookmark interval (15 s), stream
//! lifetime (10 min) and the set's bookmark interval alike), `--kill-every SECONDS` (the
//! server ends every change stream after this long, scaled), `--silent-rate P` (the
//! simulator's `silent` fault), `--no-stream` and `--no-batch` (the set's change stream and
//! batched reads off), `--economical` (`BatchTiming::Economical`), `--poll-only` (no event streams or long-polls of single jobs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tokio::time::Instant;
use translation_status::jobset::{BatchTiming, JobEvent, JobSetOptions, RequestBudget};
use translation_status::{Client, Error, NewJob, Outcome, telemetry};

struct Args {
    base: Option<String>,
    jobs: usize,
    rate: f64,
    burst: u32,
    stall_after: Option<f64>,
    json: bool,
    median: Option<f64>,
    sigma: f64,
    time_scale: f64,
    kill_every: Option<f64>,
    silent_rate: f64,
    stream: bool,
    batch: bool,
    economical: bool,
    poll_only: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        base: None,
        jobs: 1000,
        rate: 200.0,
        burst: 20,
        stall_after: None,
        json: false,
        median: None,
        sigma: 0.5,
        time_scale: 1.0,
        kill_every: None,
        silent_rate: 0.0,
        stream: true,
        batch: true,
        economical: false,
        poll_only: false,
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
            "--median" => args.median = Some(value("--median")?.parse()?),
            "--sigma" => args.sigma = value("--sigma")?.parse()?,
            "--time-scale" => args.time_scale = value("--time-scale")?.parse()?,
            "--kill-every" => args.kill_every = Some(value("--kill-every")?.parse()?),
            "--silent-rate" => args.silent_rate = value("--silent-rate")?.parse()?,
            "--no-stream" => args.stream = false,
            "--no-batch" => args.batch = false,
            "--economical" => args.economical = true,
            "--poll-only" => args.poll_only = true,
            flag if flag.starts_with("--") => anyhow::bail!(
                "unknown flag {flag}; usage: many_jobs [BASE_URL] [--jobs N] [--rate R] [--burst B] [--stall-after S] \
                 [--median S --sigma X] [--time-scale F] [--kill-every S] [--silent-rate P] [--no-stream] [--no-batch] [--economical] [--poll-only] [--json]"
            ),
            url => args.base = Some(url.to_owned()),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale > 0.0,
        "--time-scale must be positive"
    );
    let scaled = |secs: f64| Duration::from_secs_f64(secs * args.time_scale);
    let bookmark = scaled(15.0).max(Duration::from_millis(10));
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
            settings.changes.bookmark_interval = bookmark;
            settings.changes.max_lifetime = scaled(args.kill_every.unwrap_or(600.0));
            if args.kill_every.is_some() {
                settings.changes.lifetime_jitter = 0.0;
            }
            settings.faults.silent_rate = args.silent_rate;
            settings.faults.seed = Some(7);
            settings.jobs.max_jobs = settings.jobs.max_jobs.max(2 * args.jobs);
            settings.jobs.max_jobs_per_client =
                settings.jobs.max_jobs_per_client.max(2 * args.jobs);
            let server = translation_sim::spawn(settings).await?;
            (server.base_url(), Some(server))
        }
    };
    let client = Client::builder()
        .base_url(&base)
        .request_budget(RequestBudget::new(args.rate, args.burst))
        .build()?;

    // The jobs, created in the same instant: 2 to 6 s (or lognormal), one in ten failing.
    let mut draw = Lognormal::new(args.median, args.sigma);
    let specs: Vec<(Duration, Outcome)> = (0..args.jobs)
        .map(|i| {
            let ms = match draw.as_mut() {
                Some(draw) => (draw.sample() * 1000.0 * args.time_scale) as u64,
                None => 2000 + (i as u64 * 7919) % 4000,
            };
            let outcome = if i % 10 == 3 {
                Outcome::Error
            } else {
                Outcome::Completed
            };
            (Duration::from_millis(ms), outcome)
        })
        .collect();
    let created = Instant::now();
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

    let longest = specs.iter().map(|s| s.0).max().unwrap_or_default();
    let mut options = JobSetOptions::new()
        .deadline(Duration::from_secs(120).max(2 * longest))
        .change_stream(args.stream)
        .batch_reads(args.batch)
        .batch_timing(if args.economical {
            BatchTiming::Economical
        } else {
            BatchTiming::Prompt
        })
        .bookmark_interval(bookmark)
        .sse(!args.poll_only)
        .long_poll(!args.poll_only);
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
    let mut ends = std::collections::HashMap::new();
    for (id, spec) in ids.iter().zip(&specs) {
        let key = set.add(id.as_str())?;
        ends.insert(key, created + spec.0);
    }
    let (mut completed, mut failed, mut gave_up, mut errors, mut stalls) = (0, 0, 0, 0, 0);
    let mut reported = std::collections::HashMap::new();
    let mut delays = Vec::new();
    while let Some(event) = set.next().await {
        if let JobEvent::Finished { key, .. } = &event {
            *reported.entry(*key).or_insert(0u32) += 1;
            if local.is_some()
                && let Some(end) = ends.get(key)
            {
                delays.push(Instant::now().saturating_duration_since(*end).as_secs_f64() * 1e3);
            }
        }
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
    let (peak, mean) = peak_and_mean(&per_second);
    let counts = requests.counts();
    let kind = |k: &str| counts.get(k).copied().unwrap_or(0);
    let create_requests = kind("create");
    let total: u64 = counts.values().sum::<u64>() - create_requests;
    let lost = ids.len() - reported.len();
    let duplicated = reported.values().filter(|&&n| n > 1).count();
    // Job looks carried by batched reads, from the embedded simulator's own count: how full
    // a read was, and how often each job was looked at.
    let batch_looks = local.as_ref().and_then(|server| {
        let text = server.state().render_metrics();
        let value = |series| translation_sim::metrics::sample(&text, series);
        Some((
            value("sim_batch_read_size_sum")?,
            value("sim_batch_read_size_count")?,
        ))
    });
    delays.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> Option<f64> {
        let i = ((delays.len() as f64 * q).ceil() as usize).checked_sub(1)?;
        delays.get(i).map(|ms| (ms * 10.0).round() / 10.0)
    };
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
                "requests_per_job": total as f64 / ids.len().max(1) as f64,
                "by_kind": counts.iter().filter(|(k, _)| k.as_str() != "create").collect::<std::collections::BTreeMap<_, _>>(),
                "create_requests": create_requests,
                "streams": requests.opened(),
                "batch_looks_per_job": batch_looks.map(|(sum, _)| sum / ids.len().max(1) as f64),
                "mean_batch": batch_looks.and_then(|(sum, n)| (n > 0.0).then(|| sum / n)),
                "resumes": requests.event(telemetry::STREAM_RESUMES_TOTAL),
                "resets": requests.event(telemetry::STREAM_RESETS_TOTAL),
                "silent_drops": requests.event(telemetry::SILENT_DROPS_TOTAL),
                "lost": lost,
                "duplicated": duplicated,
                "detection_p50_ms": quantile(0.5),
                "detection_p99_ms": quantile(0.99),
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
            "{total} requests to wait ({:.3} per job, {throttled} answered 429; {create_requests} creations apart) in {:.1} s: peak {peak}/s, mean {mean:.1}/s",
            total as f64 / ids.len().max(1) as f64,
            elapsed.as_secs_f64()
        );
        println!(
            "by kind {counts:?}; {} change streams opened; {lost} lost, {duplicated} duplicated; detection p50 {:?} ms, p99 {:?} ms",
            requests.opened(),
            quantile(0.5),
            quantile(0.99)
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

/// Lognormal durations (seconds) around a median, drawn from a fixed seed.
struct Lognormal {
    mu: f64,
    sigma: f64,
    rng: rand::rngs::StdRng,
}

impl Lognormal {
    fn new(median: Option<f64>, sigma: f64) -> Option<Self> {
        use rand::SeedableRng;
        Some(Lognormal {
            mu: median?.ln(),
            sigma,
            rng: rand::rngs::StdRng::seed_from_u64(42),
        })
    }

    fn sample(&mut self) -> f64 {
        use rand::Rng;
        // Box–Muller: one standard normal from two uniforms.
        let (u1, u2): (f64, f64) = (self.rng.random(), self.rng.random());
        let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (self.mu + self.sigma * z).exp()
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
    /// Requests on the wire by kind (attempts, as the SDK counts them).
    by_kind: std::collections::HashMap<String, u64>,
    /// Change stream connections opened.
    opened: u64,
    /// Other counters of interest, by name.
    events: std::collections::HashMap<&'static str, u64>,
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

    fn counts(&self) -> std::collections::HashMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_kind
            .clone()
    }

    fn opened(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).opened
    }

    fn event(&self, name: &'static str) -> u64 {
        let log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        log.events.get(name).copied().unwrap_or(0)
    }
}

/// Counts one counter's increments into the log.
enum Tally {
    Kind { kind: String, opened: bool },
    Event(&'static str),
}

struct Counted(Arc<Mutex<Log>>, Tally);

impl CounterFn for Counted {
    fn increment(&self, n: u64) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &self.1 {
            Tally::Kind { kind, opened } => {
                *log.by_kind.entry(kind.clone()).or_insert(0) += n;
                if *opened {
                    log.opened += n;
                }
            }
            Tally::Event(name) => *log.events.entry(name).or_insert(0) += n,
        }
    }
    fn absolute(&self, _: u64) {}
}

/// Both tallies of one request counter: its kind, and a throttled answer's time.
struct Both(Counted, Option<Sample>);

impl CounterFn for Both {
    fn increment(&self, n: u64) {
        self.0.increment(n);
        if let Some(sample) = &self.1 {
            CounterFn::increment(sample, n);
        }
    }
    fn absolute(&self, _: u64) {}
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
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
        };
        if key.name() == telemetry::REQUESTS_TOTAL {
            let kind = label("kind").unwrap_or_default();
            let outcome = label("outcome").unwrap_or_default();
            let opened = kind == "changes" && outcome == "ok";
            let throttled = (outcome == "throttled").then(|| Sample(Arc::clone(&self.0)));
            let counted = Counted(Arc::clone(&self.0), Tally::Kind { kind, opened });
            return Counter::from_arc(Arc::new(Both(counted, throttled)));
        }
        for name in [
            telemetry::STREAM_RESUMES_TOTAL,
            telemetry::STREAM_RESETS_TOTAL,
            telemetry::SILENT_DROPS_TOTAL,
        ] {
            if key.name() == name {
                return Counter::from_arc(Arc::new(Counted(
                    Arc::clone(&self.0),
                    Tally::Event(name),
                )));
            }
        }
        Counter::noop()
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
