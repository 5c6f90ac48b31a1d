//! What a refused create costs, and what a stream of them costs everybody else.
//!
//! ```sh
//! cargo bench -p translation-sim --bench store
//! ```
//!
//! The store is filled to `jobs.max_jobs` (100,000 one-hour jobs) in process. Then:
//!
//! 1. `refused create`: the time of one `create_job` that the full store refuses, averaged
//!    over many. The refusal must not grow with the number of jobs held.
//! 2. `GET /status while refused`: the real server on loopback; two clients send creates
//!    that are refused (`503 store_full`) as fast as they are answered while eight clients
//!    read `GET /status`, for a few seconds. Printed: status reads per second, and refused
//!    creates per second. Then the same reads with no creates, for comparison.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use translation_sim::{AppState, JobSpec, Settings};

const JOBS: usize = 100_000;
const REFUSALS: u32 = 2_000;
const READERS: usize = 8;
const WRITERS: usize = 2;
const RUN: Duration = Duration::from_secs(3);

fn settings() -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".parse().unwrap();
    s.jobs.max_jobs = JOBS;
    s
}

fn fill(state: &AppState) {
    let long = JobSpec {
        duration: Some(Duration::from_secs(3600)),
        ..JobSpec::default()
    };
    while state.create_job(long.clone()).is_ok() {}
    assert_eq!(state.job_count(), JOBS);
}

/// Reads `GET /status` from `READERS` clients (and refused creates from `writers`) for `RUN`.
async fn load(base: &str, writers: usize) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..READERS + writers {
        let (stop, reads, refused) = (stop.clone(), reads.clone(), refused.clone());
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                if i < READERS {
                    let r = c.get(format!("{base}/status")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    reads.fetch_add(1, Ordering::Relaxed);
                } else {
                    let r = c.post(format!("{base}/v1/jobs")).send().await.unwrap();
                    assert_eq!(r.status(), 503);
                    r.bytes().await.unwrap();
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    (
        reads.load(Ordering::Relaxed) as f64 / secs,
        refused.load(Ordering::Relaxed) as f64 / secs,
    )
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: this one only measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = AppState::new(settings()).unwrap();
        fill(&state);
        let started = Instant::now();
        for _ in 0..REFUSALS {
            assert!(state.create_job(JobSpec::default()).is_err());
        }
        let per = started.elapsed() / REFUSALS;
        println!("refused create, {JOBS} jobs held: {per:?} each");

        let server = translation_sim::spawn(settings()).await.unwrap();
        fill(server.state());
        let base = server.base_url();
        let (quiet, _) = load(&base, 0).await;
        let (busy, refused) = load(&base, WRITERS).await;
        println!(
            "GET /status: {quiet:.0} req/s alone, {busy:.0} req/s while {WRITERS} clients \
             send creates that are refused ({refused:.0}/s)"
        );
        server.shutdown().await;
    });
}
