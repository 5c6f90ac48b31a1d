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

use std::time::Duration;

use anyhow::Context;
use translation_status::{Client, JobRef, JobStatus};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: status_calls sdk|raw N";
    let sdk = match args.next().as_deref() {
        Some("sdk") => true,
        Some("raw") => false,
        _ => anyhow::bail!(usage),
    };
    let n: usize = args.next().context(usage)?.parse().context(usage)?;

    let mut settings = translation_sim::Settings::default();
    settings.server.bind = "127.0.0.1:0".parse()?;
    // The job never ends: every read is the same answer.
    settings.legacy.delay = Duration::from_secs(3600);
    let server = translation_sim::spawn(settings).await?;
    let url = server.url("/status");
    let client = Client::new(&server.base_url())?;
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
    for _ in 0..n {
        let status = if sdk {
            sdk_read().await?
        } else {
            raw_read().await?
        };
        std::hint::black_box(status);
    }
    server.shutdown().await;
    Ok(())
}
