//! `loadtest hold`: holds many long-polls or Server-Sent Event streams open on one simulator and
//! reports what each costs the server in resident memory.
//!
//! The simulator runs in a process of its own — a child of this one (`loadtest hold-server`,
//! with limits raised to fit), or one given by address and pid — so that its resident set
//! (`VmRSS` in `/proc/PID/status`, Linux only) holds nothing of the clients. Every connection
//! asks for one job that never ends (`"hang": true`): a long-poll sends
//! `Prefer: wait=N` and is held until `N`; a stream gets its head and then events. Once the
//! server's own gauges (`sim_longpoll_waiters`, `sim_sse_streams`) count every connection as
//! held, the resident set is read; the cost per connection is its growth since before the
//! first connection, divided by their number.
//!
//! This process holds its end of every connection, so it needs a file for each (and so does
//! the server): keep `--connections` below `ulimit -n` (20,000 on the reference machine).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Connections opened at once; the next batch waits for them (a listen backlog is finite).
const BATCH: usize = 500;

/// What each connection holds open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// `GET /v1/jobs/{id}/status` with `Prefer: wait=N`.
    LongPoll,
    /// `GET /v1/jobs/{id}/events`.
    Sse,
}

impl HoldKind {
    /// The server's gauge of such held requests.
    fn gauge(self) -> &'static str {
        match self {
            HoldKind::LongPoll => "sim_longpoll_waiters",
            HoldKind::Sse => "sim_sse_streams",
        }
    }

    fn request(self, host: SocketAddr, job: &str, wait: Duration) -> String {
        match self {
            HoldKind::LongPoll => format!(
                "GET /v1/jobs/{job}/status HTTP/1.1\r\nhost: {host}\r\naccept: application/json\r\n\
                 prefer: wait={}\r\n\r\n",
                wait.as_secs()
            ),
            HoldKind::Sse => format!(
                "GET /v1/jobs/{job}/events HTTP/1.1\r\nhost: {host}\r\n\
                 accept: text/event-stream\r\n\r\n"
            ),
        }
    }
}

/// What holding the connections cost the server.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    /// What was held.
    pub kind: HoldKind,
    /// Connections opened.
    pub connections: usize,
    /// Held requests the server counted when the resident set was read.
    pub held: usize,
    /// Connections answered (long-poll) or closed before the measurement: none should be.
    pub ended_early: usize,
    /// Time to open them all and see every one held, milliseconds.
    pub opened_ms: f64,
    /// The server's resident set before the first connection, bytes.
    pub rss_before: u64,
    /// The server's resident set with every connection held, bytes.
    pub rss_held: u64,
    /// `(rss_held - rss_before) / connections`, bytes.
    pub bytes_per_connection: f64,
    /// The same cost times 50,000 connections, MiB (the server's resident set at rest aside).
    pub mib_at_50k: f64,
}

impl HoldReport {
    /// Every connection was held when measured, and the measurement is positive.
    pub fn passed(&self) -> bool {
        self.held >= self.connections && self.ended_early == 0 && self.bytes_per_connection > 0.0
    }
}

/// The resident set of process `pid`, bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kb * 1024)
}

/// Creates a job that never ends on the simulator at `base` (`POST /v1/jobs`): its id.
pub async fn hanging_job(base: &str) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Created {
        id: String,
    }
    let created: Created = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({ "hang": true }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(created.id)
}

/// The value of an unlabelled gauge in the Prometheus text at `base/metrics`.
async fn gauge(client: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .find_map(|rest| rest.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no {name} in {base}/metrics"))
}

/// Holds `connections` requests of `kind` for job `job` on the simulator at `addr` (process
/// `pid`), long-polls asking to be held for `wait`; reads the server's resident set once every
/// one is held (at most `patience` after the first connect), then lets them all go.
pub async fn hold(
    addr: SocketAddr,
    pid: u32,
    kind: HoldKind,
    job: &str,
    connections: usize,
    wait: Duration,
    patience: Duration,
) -> anyhow::Result<HoldReport> {
    let base = format!("http://{addr}");
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // A gauge reads 0 before its first change: look once, so the connection to /metrics and
    // the registry are warm before the resident set is read.
    let _ = gauge(&probe, &base, kind.gauge()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss(pid)?;
    let request: Arc<str> = kind.request(addr, job, wait).into();
    let ended = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut held = JoinSet::new();
    let mut opened = 0;
    while opened < connections {
        let mut batch = JoinSet::new();
        for _ in 0..(connections - opened).min(BATCH) {
            batch.spawn(async move { TcpStream::connect(addr).await });
        }
        while let Some(stream) = batch.join_next().await {
            let stream = stream?.with_context(|| {
                format!("connecting to {addr} (is `ulimit -n` too low for this many?)")
            })?;
            let (request, ended) = (Arc::clone(&request), Arc::clone(&ended));
            held.spawn(hold_one(stream, request, kind, ended));
            opened += 1;
        }
    }
    let until = started + patience;
    let mut counted = 0.0;
    while Instant::now() < until {
        counted = gauge(&probe, &base, kind.gauge()).await.unwrap_or(0.0);
        if counted >= connections as f64 || ended.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Let what the last requests started (timers, buffers) settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_held = rss(pid)?;
    let ended_early = ended.load(Ordering::Relaxed);
    held.abort_all();
    while held.join_next().await.is_some() {}
    let bytes_per_connection = rss_held.saturating_sub(rss_before) as f64 / connections as f64;
    Ok(HoldReport {
        kind,
        connections,
        held: counted as usize,
        ended_early,
        opened_ms,
        rss_before,
        rss_held,
        bytes_per_connection,
        mib_at_50k: bytes_per_connection * 50_000.0 / (1024.0 * 1024.0),
    })
}

/// Sends `request` and reads whatever comes until the connection ends or the task is aborted;
/// counts a long-poll that was answered, or any connection that ended, in `ended`.
async fn hold_one(
    mut stream: TcpStream,
    request: Arc<str>,
    kind: HoldKind,
    ended: Arc<AtomicUsize>,
) {
    if stream.write_all(request.as_bytes()).await.is_err() {
        ended.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf).await {
            // A stream's head and events are expected; a long-poll's answer means it was not
            // held.
            Ok(n) if n > 0 && kind == HoldKind::Sse => {}
            _ => {
                ended.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Settings of a simulator that can hold `connections` requests of any kind: connection,
/// long-poll and stream caps above it, everything else the defaults.
pub fn settings_for(connections: usize) -> anyhow::Result<translation_sim::Settings> {
    let mut s = translation_sim::Settings::default();
    s.server.bind = "127.0.0.1:0".parse()?;
    s.server.max_connections = s.server.max_connections.max(connections + 64);
    s.longpoll.max_waiters = s.longpoll.max_waiters.max(connections + 64);
    s.sse.max_streams = s.sse.max_streams.max(connections + 64);
    Ok(s)
}

/// A simulator in a child process (`EXE hold-server --connections N`): its address and the
/// child, which ends when its standard input closes (when this process drops it or ends).
pub async fn spawn_server(
    exe: &std::path::Path,
    connections: usize,
) -> anyhow::Result<(SocketAddr, tokio::process::Child)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(exe)
        .args(["hold-server", "--connections", &connections.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .context("the server did not say its address within 30 s")??;
    let addr = line
        .trim()
        .parse()
        .with_context(|| format!("the server said {line:?}, not its address"))?;
    Ok((addr, child))
}

/// The child's side of [`spawn_server`]: serves until standard input closes.
pub async fn serve_until_stdin_closes(connections: usize) -> anyhow::Result<()> {
    let server = translation_sim::spawn(settings_for(connections)?)
        .await
        .context("starting the simulator")?;
    println!("{}", server.addr());
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    server.shutdown().await;
    Ok(())
}
