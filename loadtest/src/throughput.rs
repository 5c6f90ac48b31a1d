//! `loadtest throughput`: how fast the simulator answers `GET /status`, next to the ceiling of
//! this machine — a bare hyper server returning the same bytes — measured in the same run with
//! the same client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::Summary;

/// The bytes both servers answer with.
pub const BODY: &[u8] = br#"{"result":"pending"}"#;

/// One measured target.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// What was measured.
    pub target: String,
    /// Answers per second.
    pub rps: f64,
    /// Successful answers.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency, milliseconds.
    pub latency_ms: Summary,
}

/// Both targets and the ratio simulator / bare.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The simulator's `GET /status`.
    pub simulator: Throughput,
    /// The bare hyper server.
    pub bare: Throughput,
    /// `simulator.rps / bare.rps`.
    pub ratio: f64,
}

/// Starts a bare hyper HTTP/1 server on loopback answering [`BODY`] to everything.
pub async fn bare_server() -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    let mut r = Response::new(Full::new(Bytes::from_static(BODY)));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// Raw measurements of one drive: latencies (ms) of successes, errors, seconds taken.
#[derive(Debug, Default)]
struct Raw {
    latencies: Vec<f64>,
    errors: u64,
    seconds: f64,
}

impl Raw {
    fn add(mut self, other: Raw) -> Raw {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.seconds += other.seconds;
        self
    }

    fn summary(self, target: &str) -> Throughput {
        Throughput {
            target: target.to_string(),
            rps: self.latencies.len() as f64 / self.seconds.max(1e-9),
            requests: self.latencies.len() as u64,
            errors: self.errors,
            latency_ms: Summary::of(self.latencies),
        }
    }
}

/// Drives `url` with `connections` concurrent keep-alive connections for `duration`.
pub async fn drive(
    target: &str,
    url: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    Ok(drive_raw(url, connections, duration).await?.summary(target))
}

async fn drive_raw(url: &str, connections: usize, duration: Duration) -> anyhow::Result<Raw> {
    drive_requests(url, None, connections, duration).await
}

/// Drives `url` like [`drive_raw`]: `GET`, or `POST` of `body` (JSON) when there is one.
async fn drive_requests(
    url: &str,
    body: Option<&'static str>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Raw> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(10))
        .build()?;
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = client.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < until {
                let t = Instant::now();
                let request = match body {
                    Some(body) => client
                        .post(&url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body),
                    None => client.get(&url),
                };
                let ok = match request.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut raw = Raw::default();
    for t in tasks {
        let (l, e) = t.await?;
        raw.latencies.extend(l);
        raw.errors += e;
    }
    raw.seconds = started.elapsed().as_secs_f64();
    Ok(raw)
}

/// Measures the simulator at `sim_url` and a bare server, alternating halves (A B B A) so
/// that neither gets the warmer part of the run.
pub async fn compare(
    sim_url: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Comparison> {
    let (bare_addr, bare_task) = bare_server().await?;
    let bare_url = format!("http://{bare_addr}/status");
    let half = duration / 2;
    let s1 = drive_raw(sim_url, connections, half).await?;
    let b1 = drive_raw(&bare_url, connections, half).await?;
    let b2 = drive_raw(&bare_url, connections, half).await?;
    let s2 = drive_raw(sim_url, connections, half).await?;
    bare_task.abort();
    let simulator = s1.add(s2).summary("simulator GET /status");
    let bare = b1.add(b2).summary("bare hyper, same bytes");
    let ratio = if bare.rps > 0.0 {
        simulator.rps / bare.rps
    } else {
        0.0
    };
    Ok(Comparison {
        simulator,
        bare,
        ratio,
    })
}

/// One request measured on two simulators: the same run, alternating halves (A B B A).
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// The first simulator (the in-memory store).
    pub first: Throughput,
    /// The second (the Redis store).
    pub second: Throughput,
    /// `second.rps / first.rps`.
    pub ratio: f64,
}

/// Measures `path` (a `GET`, or a `POST` of `body`) on the simulators at `first` and `second`
/// (base URLs), alternating halves (A B B A) so that neither gets the warmer part of the run.
pub async fn compare_pair(
    (first, second): (&str, &str),
    path: &str,
    body: Option<&'static str>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Pair> {
    let half = duration / 2;
    let (a_url, b_url) = (format!("{first}{path}"), format!("{second}{path}"));
    let a1 = drive_requests(&a_url, body, connections, half).await?;
    let b1 = drive_requests(&b_url, body, connections, half).await?;
    let b2 = drive_requests(&b_url, body, connections, half).await?;
    let a2 = drive_requests(&a_url, body, connections, half).await?;
    let first = a1.add(a2).summary(first);
    let second = b1.add(b2).summary(second);
    let ratio = if first.rps > 0.0 {
        second.rps / first.rps
    } else {
        0.0
    };
    Ok(Pair {
        first,
        second,
        ratio,
    })
}
