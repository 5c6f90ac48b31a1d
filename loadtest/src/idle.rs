//! `loadtest idle`: holds many connections that send nothing and watches the server cope —
//! `/healthz` must keep answering while they are held, and the server must close every one of
//! them by itself once its idle timeout passes (`server.idle_timeout` on the simulator).
//!
//! This process holds its end of every connection, so it needs a file per connection (and the
//! server one more when it runs embedded, in the same process): keep `--connections` well below
//! `ulimit -n`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stats::Summary;

/// Connections opened at once; the next batch waits for them (a listen backlog is finite).
const BATCH: usize = 500;

/// What holding the connections showed.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Connections opened.
    pub connections: usize,
    /// Time to open them all, milliseconds.
    pub opened_ms: f64,
    /// Connections the server closed within the patience.
    pub closed: usize,
    /// Connect → closed by the server, milliseconds.
    pub lifetime_ms: Summary,
    /// The shortest of those (none should be shorter than the server's idle timeout).
    pub shortest_lifetime_ms: f64,
    /// From the first connect until the server had closed the last one, milliseconds.
    pub all_closed_ms: f64,
    /// `/healthz` latency while they were held, milliseconds (a fresh connection each time).
    pub healthz_ms: Summary,
    /// `/healthz` requests that failed or did not answer `200`.
    pub healthz_errors: u64,
}

impl IdleReport {
    /// Every connection was closed by the server and every `/healthz` answered.
    pub fn passed(&self) -> bool {
        self.closed == self.connections && self.healthz_errors == 0 && self.healthz_ms.n > 0
    }
}

/// Opens `connections` idle connections to `addr`, probes `healthz_url` every 50 ms while they
/// are open, and waits up to `patience` for the server to close each one.
pub async fn hold_idle(
    addr: SocketAddr,
    healthz_url: &str,
    connections: usize,
    patience: Duration,
) -> anyhow::Result<IdleReport> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let probe = tokio::spawn(probe_healthz(healthz_url.to_string(), stopped));

    let started = Instant::now();
    let mut streams = Vec::with_capacity(connections);
    while streams.len() < connections {
        let mut batch = JoinSet::new();
        for _ in 0..(connections - streams.len()).min(BATCH) {
            batch.spawn(async move {
                let opened_at = Instant::now();
                TcpStream::connect(addr).await.map(|s| (s, opened_at))
            });
        }
        while let Some(opened) = batch.join_next().await {
            streams.push(opened?.with_context(|| {
                format!("connecting to {addr} (is `ulimit -n` too low for this many?)")
            })?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened_ms = ms(started.elapsed());

    let mut closing = JoinSet::new();
    for (mut stream, opened_at) in streams {
        closing.spawn(async move {
            let mut buf = [0u8; 256];
            let closed = tokio::time::timeout(patience, async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            closed.ok().map(|()| opened_at.elapsed())
        });
    }
    let mut lifetimes = Vec::with_capacity(connections);
    while let Some(lived) = closing.join_next().await {
        if let Some(lived) = lived? {
            lifetimes.push(ms(lived));
        }
    }
    let all_closed_ms = ms(started.elapsed());
    let _ = stop.send(());
    let (healthz, healthz_errors) = probe.await?;
    Ok(IdleReport {
        connections,
        opened_ms,
        closed: lifetimes.len(),
        shortest_lifetime_ms: lifetimes.iter().copied().fold(f64::INFINITY, f64::min),
        lifetime_ms: Summary::of(lifetimes),
        all_closed_ms,
        healthz_ms: Summary::of(healthz),
        healthz_errors,
    })
}

/// `GET url` every 50 ms on a fresh connection until `stop`: latencies (ms) and failures.
async fn probe_healthz(
    url: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (Vec<f64>, u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build();
    let Ok(client) = client else {
        return (Vec::new(), 1);
    };
    let (mut latencies, mut errors) = (Vec::new(), 0);
    loop {
        let t = Instant::now();
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => latencies.push(ms(t.elapsed())),
            _ => errors += 1,
        }
        tokio::select! {
            _ = &mut stop => return (latencies, errors),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
