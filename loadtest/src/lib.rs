//! The load-test harness: drives the `translation-status` SDK against the simulator and
//! compares waiting strategies by status requests per job and time-to-detection.
//!
//! | module | role |
//! | --- | --- |
//! | [`exporter`] | the harness's own Prometheus `/metrics` (SDK and harness metrics) |
//! | [`stats`] | mean and nearest-rank percentiles |
//! | [`report`] | `report.json`, `report.md`, `plot.svg` |
//! | [`strategy`] | the waiting strategies compared (baselines and the SDK's mechanisms) |
//! | [`hooks`] | `ours-webhook`: a loopback webhook receiver in front of a job set |
//! | [`scenario`] | create jobs, wait with each strategy, measure against the server's truth |
//! | [`throughput`] | simulator `/status` throughput vs a bare hyper server |
//! | [`hold`] | many held long-polls or event streams: the server's resident memory per connection |
//! | [`idle`] | many idle connections: `/healthz` while they are held, and the server closing them |

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod exporter;
pub mod hold;
pub mod hooks;
pub mod idle;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod strategy;
pub mod throughput;

/// Describes the harness's metrics (names in `docs/observability.md`) to the installed
/// recorder, so the exposition carries their help text.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "loadtest_jobs_total",
        "Waits finished, by strategy and outcome (completed, failed, gave_up, error, wrong)."
    );
    describe_histogram!(
        "loadtest_requests_per_job",
        "Status requests one wait made, by strategy."
    );
    describe_histogram!(
        "loadtest_detection_delay_seconds",
        Unit::Seconds,
        "Server completed_at to the moment the wait returned, by strategy."
    );
    describe_counter!(
        "loadtest_wrong_outcomes_total",
        "Waits whose outcome differs from the job's real one, by strategy."
    );
}
