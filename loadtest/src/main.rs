//! `loadtest`: the harness that drives the SDK against the simulator and compares waiting
//! strategies by request count and time-to-detection. `loadtest` alone runs the demo.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use loadtest::report::{Report, fixed_interval_curve, optimum_at};
use loadtest::scenario::{Arrival, Durations, FaultProfile, Scenario};
use loadtest::strategy::{ServerProfile, Strategy};

/// The simulator binary's allocator (see its `main.rs`): `hold` measures a simulator this
/// binary runs, which must cost what `translation-sim` costs.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Compare ways of waiting for translation jobs: requests per job vs time-to-detection.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Serve this process's metrics (SDK and harness) in Prometheus text on ADDR/metrics.
    #[arg(long, global = true, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The one-command demo: 200 jobs on embedded simulators, every strategy, a table.
    Demo {
        /// Where to write report.json, report.md and plot.svg.
        #[arg(long, default_value = "target/loadtest")]
        out: PathBuf,
    },
    /// A scenario of your own.
    Run(RunArgs),
    /// Faults everywhere (20 % 5xx, 5 % slow tail, 5 % 429, a 10 s outage; 10 % of webhooks
    /// lost and 5 % sent twice): exits non-zero if any job ends with a wrong outcome or is lost.
    Chaos {
        /// Jobs per strategy.
        #[arg(long, default_value_t = 100)]
        jobs: usize,
        /// Time scale (durations, schedules and the outage are multiplied by it).
        #[arg(long, default_value_t = 0.5)]
        time_scale: f64,
        /// Where to write the report.
        #[arg(long, default_value = "target/loadtest/chaos")]
        out: PathBuf,
    },
    /// Simulator `GET /status` throughput vs a bare hyper server, same run, same client.
    Throughput {
        /// Concurrent connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// How long to drive each server in total.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Measure this `/status` URL instead of an embedded simulator.
        #[arg(long)]
        target: Option<String>,
    },
    /// The cost of the Redis store: job status reads and creates on an in-memory simulator and
    /// on one with `store.backend = "redis"` (a private redis-server on loopback), same run,
    /// same client; prints each one's throughput and the ratio redis / memory.
    Backends {
        /// Concurrent connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// How long to drive each kind of request, both simulators together.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Hold many idle connections: `/healthz` latency meanwhile, and how soon the server closes
    /// them all by itself. Exits non-zero if one stays open or `/healthz` fails.
    Idle {
        /// Idle connections to hold (this process needs a file for each, twice when embedded).
        #[arg(long, default_value_t = 3000)]
        connections: usize,
        /// `server.idle_timeout` of the embedded simulator.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        idle_timeout: Duration,
        /// Hold them against this simulator address (host:port) instead of an embedded one.
        #[arg(long)]
        target: Option<SocketAddr>,
        /// Longest wait for the server to close one connection.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        patience: Duration,
    },
    /// Hold many long-polls or event streams on a simulator in its own process and report its
    /// resident memory per held connection. Exits non-zero if one was not held.
    Hold {
        /// Requests to hold (this process needs a file for each, and so does the server).
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// What to hold.
        #[arg(long, value_enum, default_value_t = loadtest::hold::HoldKind::LongPoll)]
        kind: loadtest::hold::HoldKind,
        /// Hold them on this simulator (host:port) instead of one started for the purpose;
        /// needs `--pid`.
        #[arg(long, requires = "pid")]
        target: Option<SocketAddr>,
        /// The process id of the simulator at `--target`, whose resident set is read.
        #[arg(long, requires = "target")]
        pid: Option<u32>,
        /// How long a long-poll asks to be held (`Prefer: wait`; the server caps it at
        /// `longpoll.max_wait`); the measurement must fit in it.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// The simulator `hold` measures, in a process of its own: prints its address, serves until
    /// standard input closes.
    #[command(hide = true)]
    HoldServer {
        /// Requests it must be able to hold.
        #[arg(long)]
        connections: usize,
    },
    /// Steady, gentle traffic of mixed strategies against a simulator (for the dashboards).
    Traffic {
        /// Simulator base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        target: String,
        /// New jobs per second, per strategy.
        #[arg(long, default_value_t = 0.5)]
        rate: f64,
        /// Stop after this long ("0s" = run until stopped).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Simulator base URL, or several comma-separated (replicas on one shared store): jobs are
    /// created on one and waited for on the next, and the report counts each one's requests.
    /// Default: one embedded simulator per strategy on loopback.
    #[arg(long = "target", value_delimiter = ',', value_name = "URL[,URL...]")]
    targets: Vec<String>,
    /// Jobs per strategy.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Most waits in flight per strategy (default: all jobs).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Arrival pattern.
    #[arg(long, value_enum, default_value_t = ArrivalKind::AllAtOnce)]
    arrival: ArrivalKind,
    /// Poisson arrival rate, jobs per second (unscaled).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Duration distribution.
    #[arg(long, value_enum, default_value_t = DurationKind::Lognormal)]
    durations: DurationKind,
    /// Fixed duration or lognormal median.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    median: Duration,
    /// Lognormal sigma.
    #[arg(long, default_value_t = 0.5)]
    sigma: f64,
    /// Uniform lower bound.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    min: Duration,
    /// Uniform upper bound.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    max: Duration,
    /// Probability that a job fails.
    #[arg(long, default_value_t = 0.1)]
    error_rate: f64,
    /// Multiply every duration (jobs, schedules, outages) by this.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Comma-separated strategies (default: all).
    #[arg(long, value_delimiter = ',')]
    strategies: Vec<Strategy>,
    /// Server faults.
    #[arg(long, value_enum, default_value_t = FaultProfile::None)]
    faults: FaultProfile,
    /// Share of webhook deliveries lost (`ours-webhook`; embedded simulators).
    #[arg(long, default_value_t = 0.0)]
    webhook_drop: f64,
    /// Share of webhook deliveries sent twice (`ours-webhook`; embedded simulators).
    #[arg(long, default_value_t = 0.0)]
    webhook_duplicate: f64,
    /// Seed of durations, outcomes, arrivals and fault dice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Per-wait deadline (unscaled).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// Run strategies one after another even on embedded simulators.
    #[arg(long)]
    sequential: bool,
    /// Where to write report.json, report.md and plot.svg.
    #[arg(long, default_value = "target/loadtest")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArrivalKind {
    AllAtOnce,
    Poisson,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurationKind {
    Fixed,
    Uniform,
    Lognormal,
}

impl RunArgs {
    fn scenario(&self) -> Scenario {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Scenario {
            jobs: self.jobs,
            concurrency: self.concurrency.unwrap_or(self.jobs.max(1)),
            arrival: match self.arrival {
                ArrivalKind::AllAtOnce => Arrival::AllAtOnce,
                ArrivalKind::Poisson => Arrival::Poisson { rate: self.rate },
            },
            durations: match self.durations {
                DurationKind::Fixed => Durations::Fixed {
                    ms: ms(self.median),
                },
                DurationKind::Uniform => Durations::Uniform {
                    min_ms: ms(self.min),
                    max_ms: ms(self.max),
                },
                DurationKind::Lognormal => Durations::Lognormal {
                    median_ms: ms(self.median),
                    sigma: self.sigma,
                },
            },
            error_rate: self.error_rate,
            time_scale: self.time_scale,
            faults: self.faults,
            webhook_drop: self.webhook_drop,
            webhook_duplicate: self.webhook_duplicate,
            seed: self.seed,
            parallel: self.targets.is_empty() && !self.sequential,
            targets: self.targets.clone(),
            strategies: if self.strategies.is_empty() {
                Strategy::ALL.to_vec()
            } else {
                self.strategies.clone()
            },
            deadline: self.deadline.mul_f64(self.time_scale),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        translation_sim::telemetry::init_for_binary("loadtest", "warn,reqwest_retry=error")
            .map_err(|e| anyhow::anyhow!("telemetry: {e}"))?;
    if let Some(addr) = cli.metrics_addr {
        let handle = loadtest::exporter::install_recorder()?;
        let bound = loadtest::exporter::serve_metrics(addr, handle).await?;
        eprintln!("metrics on http://{bound}/metrics");
    }
    match cli.command.unwrap_or(Command::Demo {
        out: PathBuf::from("target/loadtest"),
    }) {
        Command::Demo { out } => demo(out).await,
        Command::Run(args) => run(args.scenario(), &args.out).await.map(|_| ()),
        Command::Chaos {
            jobs,
            time_scale,
            out,
        } => chaos(jobs, time_scale, &out).await,
        Command::Throughput {
            connections,
            duration,
            target,
        } => throughput(connections, duration, target).await,
        Command::Backends {
            connections,
            duration,
        } => backends(connections, duration).await,
        Command::Traffic {
            target,
            rate,
            duration,
        } => traffic(target, rate, duration).await,
        Command::Idle {
            connections,
            idle_timeout,
            target,
            patience,
        } => idle(connections, idle_timeout, target, patience).await,
        Command::Hold {
            connections,
            kind,
            target,
            pid,
            wait,
        } => hold(connections, kind, target.zip(pid), wait).await,
        Command::HoldServer { connections } => {
            loadtest::hold::serve_until_stdin_closes(connections).await
        }
    }
}

async fn run(scenario: Scenario, out: &std::path::Path) -> anyhow::Result<Report> {
    eprintln!(
        "{} jobs x {} strategies, {:?} durations, time scale {}, faults {:?}",
        scenario.jobs,
        scenario.strategies.len(),
        scenario.durations,
        scenario.time_scale,
        scenario.faults
    );
    let mut rows = scenario.run().await?;
    let optimum = scenario.optimum();
    for (row, strategy) in rows.iter_mut().zip(&scenario.strategies) {
        if strategy.server() == ServerProfile::Plain {
            row.optimum_ratio = optimum_at(&optimum, row.detection_delay_ms.mean)
                .map(|best| row.requests_per_job.mean / best);
        }
    }
    let report = Report {
        scenario: serde_json::to_value(&scenario)?,
        strategies: rows,
    };
    report.write(
        out,
        &fixed_interval_curve(&scenario.durations_ms()),
        &optimum,
    )?;
    println!("{}", report.markdown());
    println!(
        "wrote {}/report.json, report.md and plot.svg",
        out.display()
    );
    Ok(report)
}

async fn demo(out: PathBuf) -> anyhow::Result<()> {
    let scenario = Scenario {
        jobs: 200,
        concurrency: 200,
        arrival: Arrival::Poisson { rate: 20.0 },
        durations: Durations::Lognormal {
            median_ms: 3000.0,
            sigma: 0.5,
        },
        error_rate: 0.1,
        time_scale: 1.0,
        faults: FaultProfile::None,
        webhook_drop: 0.0,
        webhook_duplicate: 0.0,
        seed: 42,
        targets: Vec::new(),
        strategies: Strategy::DEMO.to_vec(),
        parallel: true,
        deadline: Duration::from_secs(120),
        progress: std::io::stderr().is_terminal(),
    };
    run(scenario, &out).await.map(|_| ())
}

async fn chaos(jobs: usize, time_scale: f64, out: &std::path::Path) -> anyhow::Result<()> {
    let scenario = Scenario {
        jobs,
        concurrency: jobs.max(1),
        arrival: Arrival::Poisson { rate: 20.0 },
        durations: Durations::Lognormal {
            median_ms: 3000.0,
            sigma: 0.5,
        },
        error_rate: 0.2,
        time_scale,
        faults: FaultProfile::Chaos,
        webhook_drop: 0.1,
        webhook_duplicate: 0.05,
        seed: 7,
        targets: Vec::new(),
        strategies: vec![
            Strategy::Naive1s,
            Strategy::OursPlain,
            Strategy::OursHints,
            Strategy::OursLongPoll,
            Strategy::OursAuto,
            Strategy::OursWebhook,
        ],
        parallel: true,
        deadline: Duration::from_secs(600),
        progress: std::io::stderr().is_terminal(),
    };
    let report = run(scenario, out).await?;
    let bad: Vec<_> = report
        .strategies
        .iter()
        .filter(|s| s.wrong_outcomes > 0 || s.gave_up > 0 || s.jobs != jobs)
        .map(|s| {
            format!(
                "{} ({} wrong or lost, {} gave up)",
                s.name, s.wrong_outcomes, s.gave_up
            )
        })
        .collect();
    anyhow::ensure!(bad.is_empty(), "chaos: {}", bad.join("; "));
    println!("chaos: every job ended with its real outcome");
    Ok(())
}

async fn throughput(
    connections: usize,
    duration: Duration,
    target: Option<String>,
) -> anyhow::Result<()> {
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    let mut embedded = None;
    let url = match target {
        Some(t) => t,
        None => {
            let mut settings = translation_sim::Settings::default();
            settings.server.bind = "127.0.0.1:0".parse()?;
            let server = translation_sim::spawn(settings)
                .await
                .context("starting the embedded simulator")?;
            let url = server.url("/status");
            embedded = Some(server);
            url
        }
    };
    eprintln!("driving {url} and a bare hyper server, {connections} connections, {duration:?}");
    let c = loadtest::throughput::compare(&url, connections, duration).await?;
    for t in [&c.simulator, &c.bare] {
        println!(
            "{:<28} {:>10.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {}",
            t.target, t.rps, t.latency_ms.p50, t.latency_ms.p99, t.errors
        );
    }
    println!("ratio simulator/bare: {:.2}", c.ratio);
    if let Some(server) = embedded {
        server.shutdown().await;
    }
    Ok(())
}

async fn idle(
    connections: usize,
    idle_timeout: Duration,
    target: Option<SocketAddr>,
    patience: Duration,
) -> anyhow::Result<()> {
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    let mut embedded = None;
    let addr = match target {
        Some(addr) => addr,
        None => {
            let mut settings = translation_sim::Settings::default();
            settings.server.bind = "127.0.0.1:0".parse()?;
            settings.server.idle_timeout = idle_timeout;
            settings.server.max_connections = settings.server.max_connections.max(connections + 1);
            let server = translation_sim::spawn(settings)
                .await
                .context("starting the embedded simulator")?;
            let addr = server.addr();
            embedded = Some(server);
            addr
        }
    };
    eprintln!("holding {connections} idle connections to {addr}");
    let r = loadtest::idle::hold_idle(
        addr,
        &format!("http://{addr}/healthz"),
        connections,
        patience,
    )
    .await?;
    println!(
        "opened {} connections in {:.0} ms; the server closed {} of them, {:.0}..{:.0} ms after \
         each opened (p50 {:.0} ms), the last {:.0} ms after the first opened",
        r.connections,
        r.opened_ms,
        r.closed,
        r.shortest_lifetime_ms,
        r.lifetime_ms.max,
        r.lifetime_ms.p50,
        r.all_closed_ms
    );
    println!(
        "/healthz meanwhile: {} answers, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
        r.healthz_ms.n, r.healthz_ms.p50, r.healthz_ms.p99, r.healthz_ms.max, r.healthz_errors
    );
    println!("{}", serde_json::to_string(&r)?);
    if let Some(server) = embedded {
        server.shutdown().await;
    }
    anyhow::ensure!(
        r.passed(),
        "{} of {} connections were not closed, or /healthz failed {} times",
        r.connections - r.closed,
        r.connections,
        r.healthz_errors
    );
    Ok(())
}

async fn hold(
    connections: usize,
    kind: loadtest::hold::HoldKind,
    target: Option<(SocketAddr, u32)>,
    wait: Duration,
) -> anyhow::Result<()> {
    use loadtest::hold;
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    let mut child = None;
    let (addr, pid) = match target {
        Some(given) => given,
        None => {
            let exe = std::env::current_exe().context("finding this executable")?;
            let (addr, server) = hold::spawn_server(&exe, connections).await?;
            let pid = server.id().context("the server's pid")?;
            child = Some(server);
            (addr, pid)
        }
    };
    let job = hold::hanging_job(&format!("http://{addr}")).await?;
    eprintln!("holding {connections} {kind:?} requests on {addr} (pid {pid}), job {job}");
    let patience = wait
        .saturating_sub(Duration::from_secs(2))
        .max(Duration::from_secs(1));
    let r = hold::hold(addr, pid, kind, &job, connections, wait, patience).await?;
    println!(
        "{} {:?} held of {} ({} ended early) in {:.0} ms; server RSS {:.1} -> {:.1} MiB: \
         {:.0} bytes per held connection, {:.0} MiB at 50,000",
        r.held,
        r.kind,
        r.connections,
        r.ended_early,
        r.opened_ms,
        r.rss_before as f64 / 1048576.0,
        r.rss_held as f64 / 1048576.0,
        r.bytes_per_connection,
        r.mib_at_50k
    );
    println!("{}", serde_json::to_string(&r)?);
    drop(child);
    anyhow::ensure!(
        r.passed(),
        "{} of {} requests were held, {} ended early",
        r.held,
        r.connections,
        r.ended_early
    );
    Ok(())
}

async fn backends(connections: usize, duration: Duration) -> anyhow::Result<()> {
    use translation_sim::redis_server::{Persistence, RedisServer};
    use translation_sim::settings::StoreBackend;
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    let redis = RedisServer::start(Persistence::None)
        .await
        .context("starting a private redis-server")?;
    let sim = |backend: StoreBackend| {
        let mut s = translation_sim::Settings::default();
        s.server.bind = "127.0.0.1:0".parse().expect("a socket address");
        s.store.backend = backend;
        s.store.redis_url = redis.url();
        // Room for every create of the run, forgotten soon after they end.
        s.jobs.max_jobs = 1_000_000;
        s.jobs.max_jobs_per_client = 1_000_000;
        s.jobs.ttl = Duration::from_secs(5);
        translation_sim::spawn(s)
    };
    let memory = sim(StoreBackend::Memory).await?;
    let shared = sim(StoreBackend::Redis).await?;
    let job = |server: &translation_sim::RunningServer| {
        server.state().create_job(translation_sim::JobSpec {
            duration: Some(Duration::from_secs(3600)),
            ..translation_sim::JobSpec::default()
        })
    };
    let memory_job = job(&memory).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The Redis simulator's job is created through its API (in-process creation is the
    // memory store's); both are read by the same path.
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(shared.url("/v1/jobs"))
        .json(&serde_json::json!({"duration_ms": 3_600_000}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let shared_job = created["id"].as_str().context("a job id")?.to_string();
    eprintln!(
        "memory at {}, redis at {} (redis-server on port {}), {connections} connections, \
         {duration:?} per kind of request",
        memory.base_url(),
        shared.base_url(),
        redis.port()
    );
    let reads = (
        loadtest::throughput::compare_pair(
            (
                &format!("{}/v1/jobs/{memory_job}", memory.base_url()),
                &format!("{}/v1/jobs/{shared_job}", shared.base_url()),
            ),
            "/status",
            None,
            connections,
            duration,
        )
        .await?,
        "GET /v1/jobs/{id}/status",
    );
    let creates = (
        loadtest::throughput::compare_pair(
            (&memory.base_url(), &shared.base_url()),
            "/v1/jobs",
            Some(r#"{"duration_ms":1000}"#),
            connections,
            duration,
        )
        .await?,
        "POST /v1/jobs",
    );
    for (pair, what) in [&reads, &creates] {
        println!("{what}");
        for (name, t) in [("memory", &pair.first), ("redis", &pair.second)] {
            println!(
                "  {name:<7} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {}",
                t.rps, t.latency_ms.p50, t.latency_ms.p99, t.errors
            );
        }
        println!("  ratio redis/memory: {:.2}", pair.ratio);
    }
    shared.shutdown().await;
    memory.shutdown().await;
    Ok(())
}

async fn traffic(target: String, rate: f64, duration: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let until = (!duration.is_zero()).then(|| tokio::time::Instant::now() + duration);
    // Beside the strategies, one job set follows jobs of its own on the change stream, so the
    // dashboards' job-set series have data.
    let sets = tokio::spawn(job_set_traffic(target.clone(), rate, until));
    let mut round = 0u64;
    loop {
        if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
            return Ok(());
        }
        round += 1;
        // A minute of arrivals per round, every strategy at once against the same simulator.
        let scenario = Scenario {
            jobs: (rate * 60.0).ceil().max(1.0) as usize,
            concurrency: 10_000,
            arrival: Arrival::Poisson { rate },
            durations: Durations::Lognormal {
                median_ms: 5000.0,
                sigma: 0.5,
            },
            error_rate: 0.1,
            time_scale: 1.0,
            faults: FaultProfile::None,
            webhook_drop: 0.0,
            webhook_duplicate: 0.0,
            seed: round,
            targets: vec![target.clone()],
            strategies: vec![
                Strategy::Naive1s,
                Strategy::Exponential,
                Strategy::OursPlain,
                Strategy::OursHints,
                Strategy::OursLongPoll,
                Strategy::OursSse,
                Strategy::OursAuto,
            ],
            parallel: true,
            deadline: Duration::from_secs(300),
            progress: false,
        };
        if sets.is_finished() {
            tracing::warn!("the job-set traffic stopped");
        }
        match scenario.run().await {
            Ok(rows) => {
                for r in rows {
                    tracing::info!(
                        strategy = %r.name,
                        requests_per_job = r.requests_per_job.mean,
                        delay_ms = r.detection_delay_ms.mean,
                        "round {round}"
                    );
                }
            }
            Err(e) => {
                tracing::warn!("round {round} failed: {e:#}; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Rounds of jobs followed by one job set (on the change stream where the server has one):
/// a tenth of the traffic's rate, created through the API, until `until`.
async fn job_set_traffic(target: String, rate: f64, until: Option<tokio::time::Instant>) {
    use futures_util::StreamExt;
    use translation_status::jobset::JobSetOptions;
    use translation_status::{Client, NewJob, Outcome};

    let Ok(client) = Client::builder().base_url(target.as_str()).build() else {
        tracing::warn!("job-set traffic: no client for {target}");
        return;
    };
    let per_round = ((rate * 6.0).ceil() as usize).clamp(1, 200);
    let mut round = 0u64;
    while until.is_none_or(|u| tokio::time::Instant::now() < u) {
        round += 1;
        let Ok(mut set) = client.job_set(JobSetOptions::new()) else {
            return;
        };
        for i in 0..per_round {
            let outcome = if i % 10 == 3 {
                Outcome::Error
            } else {
                Outcome::Completed
            };
            let ms = 2_000 + (i as u64 * 7_919 + round * 131) % 6_000;
            let job = NewJob::new()
                .duration(Duration::from_millis(ms))
                .outcome(outcome);
            match client.create_job(&job).await {
                Ok(created) => {
                    let _ = set.add(&created);
                }
                Err(e) => tracing::debug!("job-set traffic: creation failed: {e}"),
            }
        }
        let drained = tokio::time::timeout(Duration::from_secs(120), async {
            while set.next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("job-set traffic: round {round} did not finish in 2 min");
        }
    }
}
