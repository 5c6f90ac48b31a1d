//! Memory per tracked job: 20,000 one-hour jobs held by one `JobSet`, each looked at once and
//! now waiting for its next poll — the steady state of a service tracking many long jobs.
//!
//! ```sh
//! cargo bench --bench jobset
//! ```
//!
//! The number is the growth of the process's resident memory (Linux `VmRSS`) while the set
//! takes on the jobs, divided by their number: an upper bound on what a job costs, since the
//! allocator keeps what the scheduler's queues freed on the way. It fails above 2 KiB per job.
//! The jobs are created in the in-process simulator before the baseline is taken, so the
//! simulator's own memory is not counted. One scheduler task holds them all: the runtime's
//! task count is printed too.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use translation_sim::{JobSpec, Settings};
use translation_status::Client;
use translation_status::jobset::{JobSetOptions, RequestBudget};

const JOBS: usize = 20_000;
const LIMIT: u64 = 2048;

/// Resident memory in bytes, where the platform tells.
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: this one only measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut settings = Settings::default();
        settings.server.bind = "127.0.0.1:0".parse().unwrap();
        settings.sse.enabled = false;
        settings.longpoll.enabled = false;
        let server = translation_sim::spawn(settings).await.unwrap();
        let ids: Vec<String> = (0..JOBS)
            .map(|_| {
                server
                    .state()
                    .create_job(JobSpec {
                        duration: Some(Duration::from_secs(3600)),
                        ..JobSpec::default()
                    })
                    .unwrap()
            })
            .collect();
        let client = Client::builder()
            .base_url(server.base_url())
            .request_budget(RequestBudget::new(20_000.0, 1000))
            .build()
            .unwrap();
        let options = JobSetOptions::new()
            .max_held_connections(0)
            .max_in_flight(64);

        // Warm up: connections, buffers, the first fit of learned durations.
        let mut warm = client.job_set(options.clone()).unwrap();
        for _ in 0..200 {
            let id = server
                .state()
                .create_job(JobSpec {
                    duration: Some(Duration::from_millis(50)),
                    ..JobSpec::default()
                })
                .unwrap();
            warm.add(id.as_str()).unwrap();
        }
        while warm.next().await.is_some() {}
        drop(warm);

        let set = client.job_set(options).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss();
        for id in &ids {
            set.add(id.as_str()).unwrap();
        }
        // Until every job has been looked at once and sleeps until its next poll (counted by
        // the simulator, so that nothing in this process allocates to find out).
        let pending = || {
            let text = server.state().render_metrics();
            text.lines()
                .find(|l| {
                    l.starts_with("sim_status_responses_total")
                        && l.contains("channel=\"poll\"")
                        && l.contains("result=\"pending\"")
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let warmup = pending();
        while pending() < warmup + JOBS as f64 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rss();
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        match (before, after) {
            (Some(before), Some(after)) => {
                let per_job = after.saturating_sub(before) / JOBS as u64;
                println!(
                    "jobset/memory_per_tracked_job: {per_job} bytes ({JOBS} jobs, resident memory {} -> {} MiB; {tasks} tasks in the runtime, simulator included)",
                    before / (1 << 20),
                    after / (1 << 20)
                );
                assert!(
                    per_job <= LIMIT,
                    "{per_job} bytes per tracked job, above {LIMIT}"
                );
            }
            _ => println!("jobset/memory_per_tracked_job: resident memory is not available here"),
        }
        assert_eq!(set.tracked(), JOBS);
    });
}
