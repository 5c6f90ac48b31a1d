//! Running a scenario: create jobs, wait for them with each strategy, measure.
//!
//! Truth comes from the server: after each wait, one extra read of the job's full status (not
//! counted against the strategy) gives its real outcome and `completed_at`. Detection delay is
//! the wall-clock time from that `completed_at` to the moment the wait returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use translation_sim::{Faults, OutageWindow, RunningServer, Settings};
use translation_status::poll::{LearnedDurations, Sample};
use translation_status::{Client, Error, JobRef, NewJob, Outcome};

use crate::hooks::Rig;
use crate::report::{RequestStats, StrategyResult, TargetRequests, optimum_curve};
use crate::stats::{Summary, peak_and_mean};
use crate::strategy::{ServerProfile, Strategy};

/// Distribution of job durations (before time scaling).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Durations {
    /// Always this many milliseconds.
    Fixed {
        /// Duration.
        ms: f64,
    },
    /// Uniform between two bounds.
    Uniform {
        /// Lower bound.
        min_ms: f64,
        /// Upper bound.
        max_ms: f64,
    },
    /// Lognormal.
    Lognormal {
        /// Median.
        median_ms: f64,
        /// Sigma of the underlying normal.
        sigma: f64,
    },
}

impl Durations {
    fn sample(&self, rng: &mut SmallRng) -> f64 {
        match *self {
            Durations::Fixed { ms } => ms,
            Durations::Uniform { min_ms, max_ms } if max_ms > min_ms => {
                rng.random_range(min_ms..=max_ms)
            }
            Durations::Uniform { min_ms, .. } => min_ms,
            Durations::Lognormal { median_ms, sigma } => LogNormal::new(median_ms.ln(), sigma)
                .map(|d| d.sample(rng))
                .unwrap_or(median_ms),
        }
    }
}

/// When jobs are created.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Arrival {
    /// All in the same instant.
    AllAtOnce,
    /// A Poisson process with this rate (jobs per second, before scaling).
    Poisson {
        /// Jobs per second.
        rate: f64,
    },
}

/// What goes wrong on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FaultProfile {
    /// Nothing.
    None,
    /// 5 % of requests take 500 ms longer.
    SlowTail,
    /// 20 % of requests answer 500.
    Errors,
    /// 10 % of requests answer 429 with `Retry-After: 1`.
    Throttle,
    /// One outage of 3 s, starting 1 s in.
    Outage,
    /// 20 % 5xx, 5 % slow tail, 5 % 429, one 10 s outage 2 s in.
    Chaos,
}

impl FaultProfile {
    /// The simulator faults, with durations multiplied by `scale` (Retry-After excepted: it is
    /// whole seconds on the wire).
    pub fn faults(self, scale: f64, seed: u64) -> Faults {
        let s = |ms: u64| Duration::from_millis(ms).mul_f64(scale);
        let base = Faults {
            seed: Some(seed),
            throttle_retry_after: Duration::from_secs(1),
            ..Faults::default()
        };
        match self {
            FaultProfile::None => base,
            FaultProfile::SlowTail => Faults {
                slow_tail_probability: 0.05,
                slow_tail_delay: Duration::from_millis(500),
                ..base
            },
            FaultProfile::Errors => Faults {
                error_rate: 0.2,
                ..base
            },
            FaultProfile::Throttle => Faults {
                throttle_rate: 0.1,
                ..base
            },
            FaultProfile::Outage => Faults {
                outages: vec![OutageWindow {
                    start: s(1000),
                    duration: s(3000),
                }],
                ..base
            },
            FaultProfile::Chaos => Faults {
                error_rate: 0.2,
                slow_tail_probability: 0.05,
                slow_tail_delay: Duration::from_millis(500),
                throttle_rate: 0.05,
                outages: vec![OutageWindow {
                    start: s(2000),
                    duration: s(10_000),
                }],
                ..base
            },
        }
    }
}

/// A scenario, as run (it goes into the report).
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Jobs per strategy.
    pub jobs: usize,
    /// Most waits in flight at once per strategy.
    pub concurrency: usize,
    /// Arrival pattern.
    pub arrival: Arrival,
    /// Job durations, unscaled.
    pub durations: Durations,
    /// Probability that a job fails.
    pub error_rate: f64,
    /// Every duration (jobs, schedules, faults) is multiplied by this.
    pub time_scale: f64,
    /// Server faults.
    pub faults: FaultProfile,
    /// Share of webhook deliveries the embedded simulators lose (`faults.webhook_drop_rate`).
    pub webhook_drop: f64,
    /// Share of webhook deliveries they send twice (`faults.webhook_duplicate_rate`).
    pub webhook_duplicate: f64,
    /// Seed of job durations, outcomes, arrivals and fault dice.
    pub seed: u64,
    /// External simulator base URLs (replicas of one simulator); empty = one embedded
    /// simulator per strategy. With several, job `i` is created on target `i mod n` and waited
    /// for, and its truth read, on target `i + 1 mod n`: every read crosses replicas.
    pub targets: Vec<String>,
    /// Strategies.
    pub strategies: Vec<Strategy>,
    /// Run the strategies at the same time (the default for embedded simulators, one each);
    /// otherwise one after another, so that a shared target's numbers are not mixed.
    pub parallel: bool,
    /// Per-wait deadline (scaled).
    pub deadline: Duration,
    /// Show progress bars (on a terminal).
    #[serde(skip)]
    pub progress: bool,
}

/// One job to create: when, how long, how it ends.
#[derive(Debug, Clone, Copy)]
struct Plan {
    at: Duration,
    duration: Duration,
    outcome: Outcome,
}

/// What happened to one wait.
#[derive(Debug, Clone)]
struct Observed {
    requests: u32,
    mechanism: &'static str,
    delay_ms: Option<f64>,
    wrong: bool,
    gave_up: bool,
}

impl Scenario {
    fn plans(&self) -> Vec<Plan> {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut at = 0.0f64;
        (0..self.jobs)
            .map(|_| {
                if let Arrival::Poisson { rate } = self.arrival
                    && let Ok(exp) = Exp::new(rate.max(1e-6))
                {
                    at += exp.sample(&mut rng);
                }
                let ms = self.durations.sample(&mut rng).max(0.0) * self.time_scale;
                let outcome = if rng.random_bool(self.error_rate.clamp(0.0, 1.0)) {
                    Outcome::Error
                } else {
                    Outcome::Completed
                };
                Plan {
                    at: Duration::from_secs_f64(at * self.time_scale),
                    duration: Duration::from_secs_f64(ms / 1000.0),
                    outcome,
                }
            })
            .collect()
    }

    /// The known-distribution optimum of plain polling on this scenario's (scaled) duration
    /// distribution (see [`crate::report::optimum_curve`]).
    pub fn optimum(&self) -> Vec<crate::report::CurvePoint> {
        let scale = self.time_scale / 1000.0; // ms → scaled seconds
        match self.durations {
            Durations::Fixed { ms } => {
                let t = ms * scale;
                optimum_curve(|x| if x >= t { 1.0 } else { 0.0 }, &[t])
            }
            Durations::Uniform { min_ms, max_ms } => {
                let (lo, hi) = (min_ms * scale, max_ms.max(min_ms) * scale);
                let grid: Vec<f64> = (1..=400).map(|i| hi * f64::from(i) / 400.0).collect();
                let width = (hi - lo).max(1e-9);
                optimum_curve(|x| ((x - lo) / width).clamp(0.0, 1.0), &grid)
            }
            Durations::Lognormal { median_ms, sigma } => {
                let (median, sigma) = (median_ms * scale, sigma.max(1e-6));
                // From 4 σ below the median to 4 σ above, evenly in log-duration.
                let grid: Vec<f64> = (0..=400)
                    .map(|i| median * (sigma * (-4.0 + 8.0 * f64::from(i) / 400.0)).exp())
                    .collect();
                optimum_curve(|x| normal_cdf((x / median).ln() / sigma), &grid)
            }
        }
    }

    /// The scaled durations of the jobs, in milliseconds (for the reference curve).
    pub fn durations_ms(&self) -> Vec<f64> {
        self.plans()
            .iter()
            .map(|p| p.duration.as_secs_f64() * 1000.0)
            .collect()
    }

    /// Runs every strategy; returns one row each, in the order given.
    pub async fn run(&self) -> anyhow::Result<Vec<StrategyResult>> {
        anyhow::ensure!(self.jobs > 0, "--jobs must be at least 1");
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(
            self.time_scale.is_finite() && self.time_scale > 0.0,
            "--time-scale must be positive"
        );
        let plans = Arc::new(self.plans());
        let bars = MultiProgress::new();
        if !self.progress {
            bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        if !self.parallel {
            let mut rows = Vec::new();
            for s in &self.strategies {
                rows.push(self.run_one(*s, Arc::clone(&plans), &bars).await?);
            }
            return Ok(rows);
        }
        let runs = self
            .strategies
            .iter()
            .map(|s| self.run_one(*s, Arc::clone(&plans), &bars));
        futures_util::future::try_join_all(runs).await
    }

    async fn run_one(
        &self,
        strategy: Strategy,
        plans: Arc<Vec<Plan>>,
        bars: &MultiProgress,
    ) -> anyhow::Result<StrategyResult> {
        let server = match self.targets.is_empty() {
            false => None,
            true => Some(self.embedded(strategy).await?),
        };
        let bases: Vec<String> = match &server {
            Some(s) => vec![s.base_url()],
            None => self
                .targets
                .iter()
                .map(|t| t.trim_end_matches('/').to_string())
                .collect(),
        };
        let mut clients = Vec::with_capacity(bases.len());
        for base in &bases {
            clients.push(self.client(strategy, base)?);
        }
        let truth = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut rigs = Vec::new();
        if strategy.webhooks() {
            let secret = Settings::default().webhooks.secret;
            for client in &clients {
                let wait = strategy.options(self.time_scale, self.deadline);
                rigs.push(Rig::start(client, wait, self.time_scale, &secret).await?);
            }
        }
        let targets = Arc::new(Targets {
            bases,
            clients,
            rigs,
        });
        if strategy.warm_up() {
            // Learn from a first batch of 120 jobs, waited for the same way but not measured.
            let warm: Vec<Plan> = self
                .plans_with_seed(self.seed ^ 0x3a3a, 120)
                .into_iter()
                .map(|p| Plan {
                    at: Duration::ZERO,
                    ..p
                })
                .collect();
            let hidden = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
            self.batch(strategy, &targets, &truth, Arc::new(warm), &hidden)
                .await?;
        }
        let before = requests_by_target(server.as_ref(), &truth, &targets.bases).await;
        let sampler = RateSampler::start(server.as_ref(), &truth, &targets.bases);
        let started = Instant::now();
        let observed = self.batch(strategy, &targets, &truth, plans, bars).await?;
        let wall = started.elapsed();
        let per_second = sampler.stop().await;
        let after = requests_by_target(server.as_ref(), &truth, &targets.bases).await;
        if let Some(s) = server {
            s.shutdown().await;
        }
        let mut row = summarise(strategy, &observed, wall, &per_second);
        // A job whose ending came twice is as wrong as one that ended wrongly.
        row.wrong_outcomes += targets.rigs.iter().map(Rig::duplicated).sum::<usize>();
        if !self.targets.is_empty() {
            row.requests_by_target = targets
                .bases
                .iter()
                .zip(after.iter().zip(&before))
                .map(|(target, (a, b))| TargetRequests {
                    target: target.clone(),
                    requests: (a - b).max(0.0),
                })
                .collect();
        }
        Ok(row)
    }

    /// The SDK client of `strategy` on `base`.
    fn client(&self, strategy: Strategy, base: &str) -> anyhow::Result<Client> {
        let mut builder = Client::builder()
            .base_url(base)
            .user_agent(format!("loadtest/{}", strategy.name()))
            .wait_options(strategy.options(self.time_scale, self.deadline));
        if strategy.oracle() {
            let learned = LearnedDurations::new(1024);
            let mut rng = SmallRng::seed_from_u64(self.seed ^ 0x5eed);
            for _ in 0..1000 {
                let ms = self.durations.sample(&mut rng) * self.time_scale;
                learned.record(Sample::exact(Duration::from_secs_f64(ms.max(0.0) / 1000.0)));
            }
            builder = builder.learned_durations(learned);
        }
        Ok(builder.build()?)
    }

    fn plans_with_seed(&self, seed: u64, jobs: usize) -> Vec<Plan> {
        Scenario {
            seed,
            jobs,
            ..self.clone()
        }
        .plans()
    }

    async fn embedded(&self, strategy: Strategy) -> anyhow::Result<RunningServer> {
        let mut s = Settings::default();
        s.server.bind = "127.0.0.1:0".parse()?;
        s.jobs.max_jobs = (self.jobs * 2 + 1000).max(100_000);
        // The harness is one peer creating every job: it must not meet the per-client cap.
        s.jobs.max_jobs_per_client = s.jobs.max_jobs;
        s.jobs.ttl = Duration::from_secs(3600);
        s.longpoll.max_waiters = 100_000;
        s.sse.max_streams = 100_000;
        s.sse.progress_interval = Duration::ZERO;
        let profile = strategy.server();
        s.hints.eta = profile != ServerProfile::Plain;
        s.hints.retry_after = profile != ServerProfile::Plain;
        s.longpoll.enabled = matches!(profile, ServerProfile::LongPoll | ServerProfile::Full);
        s.sse.enabled = profile == ServerProfile::Full;
        s.faults = self.faults.faults(self.time_scale, self.seed);
        s.faults.webhook_drop_rate = self.webhook_drop;
        s.faults.webhook_duplicate_rate = self.webhook_duplicate;
        // The harness's receiver is one host that takes every job's webhook.
        s.webhooks.max_in_flight_per_host = s.webhooks.max_in_flight;
        s.webhooks.max_queued_per_host = s.webhooks.queue_size;
        translation_sim::spawn(s)
            .await
            .context("starting an embedded simulator")
    }

    async fn batch(
        &self,
        strategy: Strategy,
        targets: &Arc<Targets>,
        truth: &reqwest::Client,
        plans: Arc<Vec<Plan>>,
        bars: &MultiProgress,
    ) -> anyhow::Result<Vec<Observed>> {
        let bar = bars.add(ProgressBar::new(plans.len() as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>16} {bar:30} {pos:>5}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(strategy.name());
        let gate = Arc::new(Semaphore::new(self.concurrency));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(plans.len());
        for (i, plan) in plans.iter().copied().enumerate() {
            let (targets, truth, gate, bar) = (
                Arc::clone(targets),
                truth.clone(),
                Arc::clone(&gate),
                bar.clone(),
            );
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(started + plan.at).await;
                let _permit = gate.acquire_owned().await;
                let observed = wait_one(strategy, &targets, i, &truth, plan).await;
                bar.inc(1);
                observed
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await??);
        }
        bar.finish_with_message("done");
        Ok(out)
    }
}

/// The targets of a run, and a client of the strategy on each.
#[derive(Debug)]
struct Targets {
    bases: Vec<String>,
    clients: Vec<Client>,
    /// For `ours-webhook`: a receiver and job set on each client.
    rigs: Vec<Rig>,
}

async fn wait_one(
    strategy: Strategy,
    targets: &Targets,
    i: usize,
    truth: &reqwest::Client,
    plan: Plan,
) -> anyhow::Result<Observed> {
    let n = targets.bases.len().max(1);
    let (client, reader) = (&targets.clients[i % n], &targets.clients[(i + 1) % n]);
    let base = targets.bases[(i + 1) % n].as_str();
    // Creation is not idempotent, so the SDK never retries it; the harness does, because an
    // injected fault answers before the handler runs (a duplicate job would only be ignored).
    let mut new = NewJob::new().duration(plan.duration).outcome(plan.outcome);
    let rig = targets.rigs.get((i + 1) % n);
    if let Some(rig) = rig {
        new = new.callback_url(rig.callback.as_str());
    }
    let mut attempt = 0u32;
    let created = loop {
        attempt += 1;
        match client.create_job(&new).await {
            Ok(created) => break created,
            Err(e) if attempt < 30 => {
                tracing::debug!("creating a job failed ({e}); trying again");
                // An open breaker (or a Retry-After) says when; otherwise back off a little.
                let pause = e
                    .retry_after()
                    .unwrap_or(Duration::from_millis(50 * u64::from(attempt.min(10))));
                tokio::time::sleep(pause.min(Duration::from_secs(30))).await;
            }
            Err(e) => return Err(e).context("creating a job"),
        }
    };
    let job: JobRef = match strategy.server() {
        ServerProfile::Plain => JobRef::status_url(format!("{base}/status?job={}", created.id))
            .with_created_at(Instant::now()),
        _ if n == 1 => created.job(),
        // Read where it was not created: its URLs on the reading target.
        _ => JobRef::id(created.id.clone()).with_created_at(Instant::now()),
    };
    let result = match rig {
        Some(rig) => rig.wait(job).await?,
        None => reader.wait(job).await,
    };
    let learned_at = SystemTime::now();
    let (requests, mechanism, said, gave_up) = match &result {
        Ok(c) => (
            c.report.requests,
            c.report.mechanism.as_str(),
            Some(Outcome::Completed),
            false,
        ),
        Err(Error::JobFailed(f)) => (
            f.report.requests,
            f.report.mechanism.as_str(),
            Some(Outcome::Error),
            false,
        ),
        Err(Error::GaveUp(g)) => (g.report.requests, g.report.mechanism.as_str(), None, true),
        Err(_) => (0, "lost", None, false),
    };
    let (real, completed_at) = real_outcome(truth, base, &created.id).await?;
    let delay_ms = match (said, completed_at) {
        (Some(_), Some(done)) => Some(
            learned_at
                .duration_since(done)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
                * 1000.0,
        ),
        _ => None,
    };
    let wrong = match said {
        Some(o) => Some(o) != real,
        None => !gave_up,
    };
    record(strategy, requests, delay_ms, &result, wrong);
    Ok(Observed {
        requests,
        mechanism,
        delay_ms,
        wrong,
        gave_up,
    })
}

/// The job's real outcome and completion time, read from its full status (not counted).
async fn real_outcome(
    truth: &reqwest::Client,
    base: &str,
    id: &str,
) -> anyhow::Result<(Option<Outcome>, Option<SystemTime>)> {
    // The server may be faulty on purpose: read until an answer parses, within reason.
    for _ in 0..50 {
        let r = truth
            .get(format!("{base}/v1/jobs/{id}/status"))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
            && let Ok(v) = r.json::<serde_json::Value>().await
        {
            let outcome = match v["result"].as_str() {
                Some("completed") => Some(Outcome::Completed),
                Some("error") => Some(Outcome::Error),
                _ => None,
            };
            let at = v["completed_at"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok());
            return Ok((outcome, at));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("could not read the true status of job {id}")
}

fn record(
    strategy: Strategy,
    requests: u32,
    delay_ms: Option<f64>,
    result: &Result<translation_status::Completion, Error>,
    wrong: bool,
) {
    let name = strategy.name();
    let outcome = match result {
        _ if wrong => "wrong",
        Ok(_) => "completed",
        Err(Error::JobFailed(_)) => "failed",
        Err(Error::GaveUp(_)) => "gave_up",
        Err(_) => "error",
    };
    metrics::counter!("loadtest_jobs_total", "strategy" => name, "outcome" => outcome).increment(1);
    metrics::histogram!("loadtest_requests_per_job", "strategy" => name)
        .record(f64::from(requests));
    if let Some(ms) = delay_ms {
        metrics::histogram!("loadtest_detection_delay_seconds", "strategy" => name)
            .record(ms / 1000.0);
    }
    if wrong {
        metrics::counter!("loadtest_wrong_outcomes_total", "strategy" => name).increment(1);
    }
}

fn summarise(
    strategy: Strategy,
    observed: &[Observed],
    wall: Duration,
    per_second: &[f64],
) -> StrategyResult {
    let requests = Summary::of(observed.iter().map(|o| f64::from(o.requests)));
    let mut mechanisms: HashMap<&str, usize> = HashMap::new();
    for o in observed {
        *mechanisms.entry(o.mechanism).or_default() += 1;
    }
    let mechanism = mechanisms
        .into_iter()
        .max_by_key(|(name, n)| (*n, *name))
        .map(|(m, _)| m.to_string())
        .unwrap_or_default();
    let total: f64 = per_second.iter().sum();
    let (peak_rps, mean_rps) = peak_and_mean(per_second);
    StrategyResult {
        name: strategy.name().to_string(),
        mechanism,
        jobs: observed.len(),
        requests_per_job: RequestStats {
            mean: requests.mean,
            p99: requests.p99,
        },
        detection_delay_ms: Summary::of(observed.iter().filter_map(|o| o.delay_ms)),
        wrong_outcomes: observed.iter().filter(|o| o.wrong).count(),
        gave_up: observed.iter().filter(|o| o.gave_up).count(),
        server_rps: total / wall.as_secs_f64().max(1e-9),
        hedges: 0,
        breaker_opens: 0,
        optimum_ratio: None,
        wall_time_ms: wall.as_millis() as u64,
        peak_rps,
        mean_rps,
        requests_by_target: Vec::new(),
    }
}

/// Samples the server's count of status answers every second, for per-second rates.
struct RateSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl RateSampler {
    fn start(server: Option<&RunningServer>, http: &reqwest::Client, bases: &[String]) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let state = server.map(|s| s.state().clone());
        let (http, bases) = (http.clone(), bases.to_vec());
        let task = tokio::spawn(async move {
            let read = || async {
                let mut sum = 0.0;
                for text in metrics_of(state.as_ref(), &http, &bases).await {
                    sum += status_answers(&text);
                }
                sum
            };
            let mut last = read().await;
            let mut rates = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => {
                        let now = read().await;
                        rates.push((now - last).max(0.0));
                        return rates;
                    }
                }
                let now = read().await;
                rates.push((now - last).max(0.0));
                last = now;
            }
        });
        RateSampler { stop, task }
    }

    async fn stop(self) -> Vec<f64> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The Prometheus text of the embedded simulator, or of each target (empty where it cannot
/// be read).
async fn metrics_of(
    state: Option<&translation_sim::AppState>,
    http: &reqwest::Client,
    bases: &[String],
) -> Vec<String> {
    if let Some(s) = state {
        return vec![s.render_metrics()];
    }
    let mut texts = Vec::with_capacity(bases.len());
    for base in bases {
        texts.push(match http.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        });
    }
    texts
}

/// Each target's count of HTTP requests answered, in the order of `bases`.
async fn requests_by_target(
    server: Option<&RunningServer>,
    http: &reqwest::Client,
    bases: &[String],
) -> Vec<f64> {
    let state = server.map(|s| s.state().clone());
    metrics_of(state.as_ref(), http, bases)
        .await
        .iter()
        .map(|text| sum_of(text, "sim_http_requests_total"))
        .collect()
}

/// Sum of `sim_status_responses_total` over every label set.
pub fn status_answers(prometheus_text: &str) -> f64 {
    sum_of(prometheus_text, "sim_status_responses_total")
}

/// Sum of the samples of `metric` over every label set.
fn sum_of(prometheus_text: &str, metric: &str) -> f64 {
    prometheus_text
        .lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The standard normal distribution function (Abramowitz & Stegun 7.1.26, error below
/// 1.5 × 10⁻⁷); 0 and 1 at the infinities.
fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return 0.5;
    }
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_answers_sums_every_series() {
        let text = "# HELP x\nsim_status_responses_total{channel=\"poll\",result=\"pending\"} 3\n\
                    sim_status_responses_total{channel=\"sse\",result=\"completed\"} 2\n\
                    sim_http_requests_total{route=\"/status\"} 9\n";
        assert_eq!(status_answers(text), 5.0);
    }

    #[test]
    fn the_optimum_is_scale_free_and_beats_every_fixed_interval() {
        for (z, want) in [(0.0, 0.5), (1.0, 0.841_344_746), (-1.96, 0.024_997_895)] {
            assert!((normal_cdf(z) - want).abs() < 2e-7, "{z}");
        }
        let scenario = |median_ms: f64, time_scale: f64| Scenario {
            jobs: 2000,
            concurrency: 1,
            arrival: Arrival::AllAtOnce,
            durations: Durations::Lognormal {
                median_ms,
                sigma: 0.5,
            },
            error_rate: 0.0,
            time_scale,
            faults: FaultProfile::None,
            webhook_drop: 0.0,
            webhook_duplicate: 0.0,
            seed: 3,
            targets: Vec::new(),
            strategies: vec![],
            parallel: true,
            deadline: Duration::from_secs(60),
            progress: false,
        };
        let short = scenario(3000.0, 1.0);
        let optimum = short.optimum();
        // The same jobs ten times longer: the same requests, ten times the delay.
        let long = scenario(3000.0, 10.0).optimum();
        for (a, b) in optimum.iter().zip(&long) {
            assert!((a.1 - b.1).abs() < 1e-6 && (b.2 / a.2 - 10.0).abs() < 1e-6);
        }
        // Against a fixed interval on the same jobs (which does not count the look at 0 that
        // every wait makes), at the same delay: never more requests, counting it.
        let fixed = crate::report::fixed_interval_curve(&short.durations_ms());
        for &(_, requests, delay) in fixed.iter().filter(|c| (50.0..3000.0).contains(&c.2)) {
            let best = crate::report::optimum_at(&optimum, delay)
                .unwrap_or_else(|| panic!("{delay} ms is off {optimum:?}"));
            assert!(
                best < requests + 1.0,
                "{delay} ms: {best} vs {requests} + 1"
            );
        }
    }

    #[test]
    fn plans_are_reproducible_and_scaled() {
        let s = Scenario {
            jobs: 50,
            concurrency: 50,
            arrival: Arrival::Poisson { rate: 10.0 },
            durations: Durations::Lognormal {
                median_ms: 3000.0,
                sigma: 0.5,
            },
            error_rate: 0.2,
            time_scale: 0.1,
            faults: FaultProfile::None,
            webhook_drop: 0.0,
            webhook_duplicate: 0.0,
            seed: 9,
            targets: Vec::new(),
            strategies: vec![],
            parallel: true,
            deadline: Duration::from_secs(60),
            progress: false,
        };
        let a = s.plans();
        let b = s.plans();
        assert_eq!(a.len(), 50);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.duration == y.duration && x.at == y.at)
        );
        let mut ms: Vec<f64> = a
            .iter()
            .map(|p| p.duration.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        assert!((150.0..600.0).contains(&ms[25]), "scaled median {}", ms[25]);
        assert!(
            a.windows(2).all(|w| w[0].at <= w[1].at),
            "arrivals are ordered"
        );
        let errors = a.iter().filter(|p| p.outcome == Outcome::Error).count();
        assert!((2..25).contains(&errors), "{errors}");
    }
}
