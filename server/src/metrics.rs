//! The simulator's Prometheus metrics (names in `docs/observability.md`).
//!
//! Each [`AppState`](crate::AppState) owns its own recorder instead of installing a global one,
//! so several simulators in one process (tests, the load-test harness next to the SDK's own
//! metrics) never mix their numbers. Every histogram has explicit buckets: it is exported as a
//! Prometheus histogram, which `promtool check metrics` and the dashboards expect.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Buckets of latency-like histograms, in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of the jobs-per-stream and batch-size histograms.
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
/// Buckets of the polls-per-job histogram.
const POLLS_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 250.0,
];

type HttpKey = (&'static str, &'static str, u16);

/// The recorder and its render handle, plus handles of the per-request series kept at hand
/// (looking a series up in the registry hashes its name and labels on every request).
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    http: Mutex<HashMap<HttpKey, (Counter, Histogram)>>,
    status: Mutex<HashMap<(&'static str, &'static str), Counter>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric described.
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("sim_status_polls_per_job".into()),
                    POLLS_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("sim_change_stream_jobs".into()),
                    SIZE_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("sim_batch_read_size".into()), SIZE_BUCKETS)
            });
        // Only an empty bucket list fails, and ours are constants.
        #[allow(clippy::expect_used)]
        let recorder = builder
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            recorder,
            handle,
            http: Mutex::default(),
            status: Mutex::default(),
        };
        m.with(describe_all);
        m
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram buffers; called periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// One answered request.
    pub fn http_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        took: Duration,
    ) {
        let mut cache = self.http.lock().unwrap_or_else(|p| p.into_inner());
        let (count, latency) = cache.entry((route, method, status)).or_insert_with(|| {
            let label = status_label(status);
            self.with(|| {
                (
                    counter!("sim_http_requests_total", "route" => route, "method" => method, "status" => label),
                    histogram!("sim_http_request_duration_seconds", "route" => route),
                )
            })
        });
        count.increment(1);
        latency.record(took);
    }

    /// One job created.
    pub fn job_created(&self) {
        self.with(|| counter!("sim_jobs_created_total").increment(1));
    }

    /// Jobs seen terminal for the first time.
    pub fn jobs_finished(&self, outcome: &'static str, n: u64) {
        self.with(|| counter!("sim_jobs_finished_total", "outcome" => outcome).increment(n));
    }

    /// Jobs in the store.
    pub fn jobs_in_store(&self, n: usize) {
        self.with(|| gauge!("sim_jobs_in_store").set(n as f64));
    }

    /// Whether this replica follows the shared store (the Redis backend's tail is live).
    pub fn store_up(&self, up: bool) {
        self.with(|| gauge!("sim_store_up").set(if up { 1.0 } else { 0.0 }));
    }

    /// The tail lost the shared store and reconnects.
    pub fn store_reconnect(&self) {
        self.with(|| counter!("sim_store_reconnects_total").increment(1));
    }

    /// A request answered `503 store_unavailable`.
    pub fn store_unavailable(&self) {
        self.with(|| counter!("sim_store_unavailable_total").increment(1));
    }

    /// One status answer.
    pub fn status_response(&self, channel: &'static str, result: &'static str) {
        let mut cache = self.status.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry((channel, result))
            .or_insert_with(|| {
                self.with(|| {
                    counter!("sim_status_responses_total", "channel" => channel, "result" => result)
                })
            })
            .increment(1);
    }

    /// Requests a job had received when its terminal state was first reported.
    pub fn polls_per_job(&self, n: u64) {
        self.with(|| histogram!("sim_status_polls_per_job").record(n as f64));
    }

    /// Completion → first report on `channel`.
    pub fn detection_delay(&self, channel: &'static str, delay: Duration) {
        self.with(|| histogram!("sim_detection_delay_seconds", "channel" => channel).record(delay));
    }

    /// Changes retained in the change log.
    pub fn change_log(&self, n: usize) {
        self.with(|| gauge!("sim_change_log_entries").set(n as f64));
    }

    /// Open change streams (`GET /v1/events`).
    pub fn change_streams(&self, delta: f64) {
        self.with(|| gauge!("sim_change_streams").increment(delta));
    }

    /// Jobs a change stream followed when it opened.
    pub fn change_stream_jobs(&self, n: usize) {
        self.with(|| histogram!("sim_change_stream_jobs").record(n as f64));
    }

    /// One change stream resumed inside the retained history.
    pub fn change_stream_resumed(&self) {
        self.with(|| counter!("sim_change_stream_resumes_total").increment(1));
    }

    /// One reset sent on `channel` (`stream` or `changes`).
    pub fn change_reset(&self, channel: &'static str) {
        self.with(|| counter!("sim_change_resets_total", "channel" => channel).increment(1));
    }

    /// One bookmark sent: `idle` (nothing else to send) or `final` (the stream then ends).
    pub fn change_bookmark(&self, kind: &'static str) {
        self.with(|| counter!("sim_change_bookmarks_total", "kind" => kind).increment(1));
    }

    /// One `GET /v1/changes` answered: `changes` (with some), `empty`, `reset`.
    pub fn changes_longpoll(&self, outcome: &'static str) {
        self.with(|| counter!("sim_changes_longpolls_total", "outcome" => outcome).increment(1));
    }

    /// Jobs asked for by one batched status read.
    pub fn batch_read(&self, n: usize) {
        self.with(|| histogram!("sim_batch_read_size").record(n as f64));
    }

    /// Held long-polls.
    pub fn longpoll_waiters(&self, delta: f64) {
        self.with(|| gauge!("sim_longpoll_waiters").increment(delta));
    }

    /// Open SSE streams.
    pub fn sse_streams(&self, delta: f64) {
        self.with(|| gauge!("sim_sse_streams").increment(delta));
    }

    /// One injected fault.
    pub fn fault(&self, kind: &'static str) {
        self.with(|| counter!("sim_faults_injected_total", "kind" => kind).increment(1));
    }

    /// One request refused by the rate limit.
    pub fn rate_limited(&self) {
        self.with(|| counter!("sim_rate_limited_total").increment(1));
    }

    /// Connections open in `pool` (`main` or `reserve`).
    pub fn connections_open(&self, pool: &'static str, delta: f64) {
        self.with(|| gauge!("sim_connections_open", "pool" => pool).increment(delta));
    }

    /// One connection closed by the server: `idle_timeout`, `header_timeout`, `displaced` (to
    /// make room at the cap) or `refused` (over the cap and the reserve).
    pub fn connection_closed(&self, reason: &'static str) {
        self.with(|| counter!("sim_connections_closed_total", "reason" => reason).increment(1));
    }

    /// One webhook delivery event.
    pub fn webhook(&self, outcome: &'static str) {
        self.with(|| counter!("sim_webhook_deliveries_total", "outcome" => outcome).increment(1));
    }
}

/// Status codes as labels, without allocating for the ones this server answers with.
fn status_label(code: u16) -> metrics::SharedString {
    let known = match code {
        200 => "200",
        201 => "201",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        other => return other.to_string().into(),
    };
    known.into()
}

fn describe_all() {
    describe_counter!(
        "sim_http_requests_total",
        "Requests answered, by route, method and status."
    );
    describe_histogram!(
        "sim_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a request, injected latency included."
    );
    describe_counter!("sim_jobs_created_total", "Jobs created.");
    describe_gauge!(
        "sim_store_up",
        "1 while this replica follows the shared store (store.backend = redis), else 0."
    );
    describe_counter!(
        "sim_store_reconnects_total",
        "Times this replica lost the shared store and reconnected."
    );
    describe_counter!(
        "sim_store_unavailable_total",
        "Requests answered 503 store_unavailable: the shared store could not be reached."
    );
    describe_counter!(
        "sim_jobs_finished_total",
        "Jobs seen terminal for the first time, by outcome."
    );
    describe_gauge!("sim_jobs_in_store", "Jobs held in memory.");
    describe_counter!(
        "sim_status_responses_total",
        "Status answers by channel and result; pending answers to polls are wasted polls."
    );
    describe_histogram!(
        "sim_status_polls_per_job",
        "Status requests a job had received when its terminal state was first reported."
    );
    describe_histogram!(
        "sim_detection_delay_seconds",
        Unit::Seconds,
        "Time from a job's completion to the first answer on a channel that reported it."
    );
    describe_gauge!(
        "sim_change_log_entries",
        "Changes retained in the change log (bounded by changes.history and history_age)."
    );
    describe_gauge!(
        "sim_change_streams",
        "Open change streams (GET /v1/events)."
    );
    describe_histogram!(
        "sim_change_stream_jobs",
        "Jobs a change stream followed when it opened (its watch set, or its client's jobs)."
    );
    describe_counter!(
        "sim_change_stream_resumes_total",
        "Change streams resumed from a cursor inside the retained history."
    );
    describe_counter!(
        "sim_change_resets_total",
        "Resets sent (a cursor the log cannot continue from), by channel (stream, changes)."
    );
    describe_counter!(
        "sim_change_bookmarks_total",
        "Bookmarks sent on change streams, by kind (idle, final)."
    );
    describe_counter!(
        "sim_changes_longpolls_total",
        "GET /v1/changes answers, by outcome (changes, empty, reset)."
    );
    describe_histogram!(
        "sim_batch_read_size",
        "Jobs asked for by one batched status read (GET /v1/jobs?ids=...)."
    );
    describe_gauge!("sim_longpoll_waiters", "Long-poll requests being held.");
    describe_gauge!("sim_sse_streams", "Open Server-Sent Event streams.");
    describe_counter!("sim_faults_injected_total", "Faults injected, by kind.");
    describe_counter!(
        "sim_rate_limited_total",
        "Requests refused by the per-client rate limit."
    );
    describe_counter!(
        "sim_webhook_deliveries_total",
        "Webhook delivery events, by outcome."
    );
    describe_gauge!(
        "sim_connections_open",
        "Connections open, by pool (main: served; reserve: answered at once over the cap)."
    );
    describe_counter!(
        "sim_connections_closed_total",
        "Connections closed by the server, by reason (idle_timeout, header_timeout, displaced, refused)."
    );
    // Gauges exist from the start so dashboards never see a missing series.
    gauge!("sim_connections_open", "pool" => "main").set(0.0);
    gauge!("sim_connections_open", "pool" => "reserve").set(0.0);
    gauge!("sim_longpoll_waiters").set(0.0);
    gauge!("sim_sse_streams").set(0.0);
    gauge!("sim_jobs_in_store").set(0.0);
    gauge!("sim_change_log_entries").set(0.0);
    gauge!("sim_change_streams").set(0.0);
    // Down until the store is known to answer (the memory store at once, Redis once followed).
    gauge!("sim_store_up").set(0.0);
    // Counters and histograms the dashboards read exist from the start too.
    let _registered = histogram!("sim_change_stream_jobs");
    let _registered = histogram!("sim_batch_read_size");
    counter!("sim_change_stream_resumes_total").absolute(0);
    counter!("sim_store_reconnects_total").absolute(0);
    counter!("sim_store_unavailable_total").absolute(0);
    for channel in ["stream", "changes"] {
        counter!("sim_change_resets_total", "channel" => channel).absolute(0);
    }
    for kind in ["idle", "final"] {
        counter!("sim_change_bookmarks_total", "kind" => kind).absolute(0);
    }
    for outcome in ["changes", "empty", "reset"] {
        counter!("sim_changes_longpolls_total", "outcome" => outcome).absolute(0);
    }
}

/// The value of one series in Prometheus text (as [`render_metrics`](crate::AppState::render_metrics)
/// writes it): `series` exactly as the exposition spells it — `sim_batch_read_size_sum`,
/// `name{label="v"}` — and `None` when it has no sample.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_isolated_and_histograms_have_buckets() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.polls_per_job(3);
        a.detection_delay("sse", Duration::from_millis(4));
        let text = a.render();
        assert!(
            text.contains("sim_status_polls_per_job_bucket{le=\"3\"} 1"),
            "{text}"
        );
        assert!(text.contains("sim_status_polls_per_job_sum 3"), "{text}");
        assert!(
            text.contains("sim_detection_delay_seconds_bucket{channel=\"sse\",le=\"0.005\"} 1")
        );
        assert!(!b.render().contains("sim_status_polls_per_job_sum"));
    }
}
