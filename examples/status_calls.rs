//! N status reads of one job on an in-process simulator, through the SDK's `Client::status`
//! or a bare `reqwest` call, on one thread: a fixed workload to count instructions with, where
//! timings on a shared machine are too noisy to compare.
//!
//! ```sh
//! cargo build --release --example status_calls
//! for mode in sdk raw; do for n in 1000 3000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$mode.$n \
//!     target/release/examples/status_calls $mode $n 2>&1 | grep Collected
//! done; done
//! ```
//!
//! (instructions at 3000 − at 1000) / 2000 is the cost of one read, client and server; the
//! ratio of the two modes is the SDK's overhead in work (docs/benchmarks.md).
//!
//! `status_calls pair N` times instead: N rounds of one SDK read and one bare read, in
//! alternating order, on a multi-threaded runtime as the criterion bench uses; both see the
//! same moment of a shared machine, so their ratio holds still where separate timings drift.
//! It prints the median of each and their ratio. `STATUS_CALLS_BARE=hedge` turns the SDK
//! client's hedging off, `=both` hedging and its circuit breaker: what those two cost.

use std::time::{Duration, Instant};

use anyhow::Context;
use translation_status::{Client, JobRef, JobStatus};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Sdk,
    Raw,
    Pair,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: status_calls sdk|raw|pair N";
    let mode = match args.next().as_deref() {
        Some("sdk") => Mode::Sdk,
        Some("raw") => Mode::Raw,
        Some("pair") => Mode::Pair,
        _ => anyhow::bail!(usage),
    };
    let n: usize = args.next().context(usage)?.parse().context(usage)?;
    let runtime = match mode {
        Mode::Pair => tokio::runtime::Runtime::new()?,
        Mode::Sdk | Mode::Raw => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(mode, n))
}

async fn run(mode: Mode, n: usize) -> anyhow::Result<()> {
    let mut settings = translation_sim::Settings::default();
    settings.server.bind = "127.0.0.1:0".parse()?;
    // The job never ends: every read is the same answer.
    settings.legacy.delay = Duration::from_secs(3600);
    let server = translation_sim::spawn(settings).await?;
    let url = server.url("/status");
    let client = match std::env::var("STATUS_CALLS_BARE").as_deref() {
        Ok("hedge") => Client::builder()
            .base_url(server.base_url())
            .without_hedging()
            .build()?,
        Ok("both") => Client::builder()
            .base_url(server.base_url())
            .without_hedging()
            .without_circuit_breaker()
            .build()?,
        _ => Client::new(&server.base_url())?,
    };
    let job = JobRef::status_url(url.clone());
    let raw = reqwest::Client::new();

    let sdk_read = || async {
        client
            .status(job.clone())
            .await
            .map_err(anyhow::Error::from)
    };
    let raw_read = || async {
        let body = raw.get(&url).send().await?.bytes().await?;
        Ok::<_, anyhow::Error>(JobStatus::from_json(&body)?)
    };
    // Both warmed up (connections open, first allocations made), whichever is counted.
    for _ in 0..20 {
        sdk_read().await?;
        raw_read().await?;
    }
    if mode == Mode::Pair {
        let (mut sdk, mut raw) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for round in 0..n {
            for first in [round % 2 == 0, round % 2 == 1] {
                let started = Instant::now();
                if first {
                    std::hint::black_box(sdk_read().await?);
                    sdk.push(started.elapsed());
                } else {
                    std::hint::black_box(raw_read().await?);
                    raw.push(started.elapsed());
                }
            }
        }
        let median = |mut times: Vec<Duration>| {
            times.sort();
            times[times.len() / 2]
        };
        let (sdk, raw) = (median(sdk), median(raw));
        println!(
            "sdk {:.1} µs, raw {:.1} µs, ratio {:.3}",
            sdk.as_secs_f64() * 1e6,
            raw.as_secs_f64() * 1e6,
            sdk.as_secs_f64() / raw.as_secs_f64()
        );
    } else {
        for _ in 0..n {
            let status = if mode == Mode::Sdk {
                sdk_read().await?
            } else {
                raw_read().await?
            };
            std::hint::black_box(status);
        }
    }
    server.shutdown().await;
    Ok(())
}
