//! Metric names and the few places that record them.
//!
//! Everything goes through the [`metrics`] facade: with no recorder installed the calls cost
//! next to nothing, and this library never installs one (nor a `tracing` subscriber) — that
//! is the application's choice. An application that exports metrics calls
//! [`describe_metrics`] once, after installing its recorder, so that the exposition carries
//! their help text.
//!
//! Histograms are recorded in seconds or in counts, and one set of buckets cannot serve both
//! (request counts in seconds buckets all land in the last one). [`HISTOGRAM_BUCKETS`] gives
//! every histogram its own. With `metrics-exporter-prometheus`:
//!
//! ```no_run
//! use std::time::Duration;
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use translation_status::telemetry;
//!
//! # async fn setup() -> Result<(), Box<dyn std::error::Error>> {
//! let mut builder = PrometheusBuilder::new();
//! for &(name, buckets) in telemetry::HISTOGRAM_BUCKETS {
//!     builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets)?;
//! }
//! let handle = builder.install_recorder()?;
//! telemetry::describe_metrics();
//! // Upkeep: the exporter drains histogram samples into buckets when it renders or on
//! // `run_upkeep`; run it now and then, or a quiet scrape interval lets them pile up.
//! let upkeep = handle.clone();
//! tokio::spawn(async move {
//!     loop {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!         upkeep.run_upkeep();
//!     }
//! });
//! // Serve `handle.render()` on your `/metrics` route.
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use metrics::{Key, Label, Metadata, Unit};

use crate::transport::RequestKind;
use crate::transport::breaker::BreakerState;
use crate::wait::Mechanism;

/// Requests on the wire, by `kind` and `outcome`.
pub const REQUESTS_TOTAL: &str = "translation_status_requests_total";
/// Latency of each request on the wire, by `kind`.
pub const REQUEST_DURATION_SECONDS: &str = "translation_status_request_duration_seconds";
/// Transport retries (attempts after the first), by `kind`; counted whether or not the
/// request eventually succeeded.
pub const RETRIES_TOTAL: &str = "translation_status_retries_total";
/// Pauses taken because the server throttled (`Retry-After`), by `kind`.
pub const THROTTLED_TOTAL: &str = "translation_status_throttled_total";
/// Finished waits, by `outcome` and `mechanism`.
pub const WAITS_TOTAL: &str = "translation_status_waits_total";
/// Status requests (and event streams) per finished wait, by `mechanism`.
pub const POLLS_PER_WAIT: &str = "translation_status_polls_per_wait";
/// Duration of finished waits, by `outcome` and `mechanism`.
pub const WAIT_DURATION_SECONDS: &str = "translation_status_wait_duration_seconds";
/// Time from the job's reported `completed_at` to the moment the client learned it, by
/// `mechanism` (only when the server reports `completed_at`).
pub const DETECTION_DELAY_SECONDS: &str = "translation_status_detection_delay_seconds";
/// Mechanisms given up in favour of the next one, by `from` and `reason`.
pub const FALLBACKS_TOTAL: &str = "translation_status_fallbacks_total";
/// Hedged status reads, by `outcome`: `sent`, `won` (the duplicate answered first),
/// `budget_exhausted` (a hedge was due but the budget refused it).
pub const HEDGES_TOTAL: &str = "translation_status_hedges_total";
/// Circuit breaker state by `host`: `0` closed, `1` half-open, `2` open.
pub const BREAKER_STATE: &str = "translation_status_breaker_state";
/// Circuit breaker transitions, by `host` and `to` (`closed`, `half_open`, `open`).
pub const BREAKER_TRANSITIONS_TOTAL: &str = "translation_status_breaker_transitions_total";
/// Requests the circuit breaker refused to send, by `host`.
pub const BREAKER_REJECTED_TOTAL: &str = "translation_status_breaker_rejected_total";

/// Jobs tracked by job sets (all of them, in this process).
pub const JOBSET_JOBS: &str = "translation_status_jobset_jobs";
/// Connections job sets hold open: event streams and long-polls.
pub const JOBSET_HELD_CONNECTIONS: &str = "translation_status_jobset_held_connections";
/// Tokens in the request budget now (negative while transport retries are paid back).
pub const BUDGET_TOKENS: &str = "translation_status_budget_tokens";
/// The request budget's refill rate now, requests per second.
pub const BUDGET_RATE: &str = "translation_status_budget_rate";
/// Times the request budget shrank, by `reason`: `throttled`, `policy`, `exhausted`.
pub const BUDGET_ADJUSTMENTS_TOTAL: &str = "translation_status_budget_adjustments_total";
/// Pauses the server imposed on the request budget (`Retry-After`), in seconds; the sum is
/// the time spent throttled.
pub const BUDGET_PAUSE_SECONDS: &str = "translation_status_budget_pause_seconds";
/// Jobs reported as stalled.
pub const STALLS_TOTAL: &str = "translation_status_stalls_total";

/// Change streams job sets hold open (one per set at most: many jobs on one connection).
pub const JOBSET_STREAMS: &str = "translation_status_jobset_streams";
/// Jobs followed on change streams, all sets together (divide by
/// [`JOBSET_STREAMS`] for jobs per stream).
pub const JOBSET_STREAM_JOBS: &str = "translation_status_jobset_stream_jobs";
/// Change streams reopened after their last cursor (nothing lost, nothing repeated).
pub const STREAM_RESUMES_TOTAL: &str = "translation_status_stream_resumes_total";
/// Resyncs: the server could not continue from the cursor (`reset`), or the client started
/// over without one, by `reason` (`history`, `epoch`, `restart`).
pub const STREAM_RESETS_TOTAL: &str = "translation_status_stream_resets_total";
/// Held connections dropped because they said nothing for longer than their bound, by
/// `kind` (`changes`, `events`, `long_poll`): the watchdog's recoveries.
pub const SILENT_DROPS_TOTAL: &str = "translation_status_silent_drops_total";
/// Jobs a job set waited for, by the `mechanism` it used for them (`changes`, `batch`,
/// `per_job`): with [`REQUESTS_TOTAL`] by `kind`, requests per job by mechanism.
pub const JOBSET_JOBS_TOTAL: &str = "translation_status_jobset_jobs_total";
/// Webhook events handed to job sets, by `outcome`: `finished` (it ended a job's wait),
/// `pending` (a state that is not terminal: nothing to do), `duplicate` (for a job that
/// ended lately: a copy, or a late one), `unmatched` (no job of the set has that id — another
/// set's job, or one not added yet, kept in case it is).
pub const WEBHOOK_EVENTS_TOTAL: &str = "translation_status_webhook_events_total";

/// Buckets for request latencies, in seconds: 1 ms to a minute (a held long-poll counts its
/// hold).
pub const REQUEST_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets for detection delays, in seconds: 1 ms (a pushed result) to two minutes (a slow
/// poll of a long job).
pub const DETECTION_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Buckets for whole waits, in seconds: a second to two hours (translations take minutes,
/// some more than half an hour).
pub const WAIT_SECONDS_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
];
/// Buckets for counts of requests per wait: 1 (one stream, or one long-poll) to 100.
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0,
];

/// Every histogram this crate records, with the buckets that suit it: give each to the
/// exporter (see the [module docs](self) for the recipe).
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (REQUEST_DURATION_SECONDS, REQUEST_SECONDS_BUCKETS),
    (POLLS_PER_WAIT, COUNT_BUCKETS),
    (WAIT_DURATION_SECONDS, WAIT_SECONDS_BUCKETS),
    (DETECTION_DELAY_SECONDS, DETECTION_SECONDS_BUCKETS),
    (BUDGET_PAUSE_SECONDS, REQUEST_SECONDS_BUCKETS),
];

/// Describes every `translation_status_*` metric (help text and unit) to the installed
/// recorder.
///
/// Call it once, after installing a recorder (a Prometheus exporter, say), so that the
/// exposition carries `# HELP` lines. With no recorder installed it does nothing.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests on the wire, retries and hedges included, by kind and outcome."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Latency of each request on the wire, by kind (a held long-poll includes its hold)."
    );
    describe_counter!(
        RETRIES_TOTAL,
        Unit::Count,
        "Transport retries and throttle pauses (attempts after the first), by kind."
    );
    describe_counter!(
        THROTTLED_TOTAL,
        Unit::Count,
        "Pauses taken because the server answered 429/503 with Retry-After, by kind."
    );
    describe_counter!(
        WAITS_TOTAL,
        Unit::Count,
        "Finished waits, by outcome and mechanism."
    );
    describe_histogram!(
        POLLS_PER_WAIT,
        Unit::Count,
        "Status requests and event streams one wait opened (retries not included), by mechanism."
    );
    describe_histogram!(
        WAIT_DURATION_SECONDS,
        Unit::Seconds,
        "Start of a wait to its end, by outcome and mechanism."
    );
    describe_histogram!(
        DETECTION_DELAY_SECONDS,
        Unit::Seconds,
        "The job's completed_at to the moment the client learned it, by mechanism."
    );
    describe_counter!(
        FALLBACKS_TOTAL,
        Unit::Count,
        "Mechanisms given up in favour of the next one, by from and reason."
    );
    describe_counter!(
        HEDGES_TOTAL,
        Unit::Count,
        "Hedged status reads, by outcome: sent, won (the duplicate answered first), budget_exhausted."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state by host: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        BREAKER_TRANSITIONS_TOTAL,
        Unit::Count,
        "Circuit breaker transitions, by host and to (closed, half_open, open)."
    );
    describe_counter!(
        BREAKER_REJECTED_TOTAL,
        Unit::Count,
        "Requests the circuit breaker refused to send, by host."
    );
    describe_gauge!(
        JOBSET_JOBS,
        Unit::Count,
        "Jobs tracked by job sets in this process."
    );
    describe_gauge!(
        JOBSET_HELD_CONNECTIONS,
        Unit::Count,
        "Connections job sets hold open: event streams and long-polls."
    );
    describe_gauge!(
        BUDGET_TOKENS,
        Unit::Count,
        "Tokens in the request budget (negative while retries and hedges are paid back)."
    );
    describe_gauge!(
        BUDGET_RATE,
        "The request budget's refill rate now, in requests per second."
    );
    describe_counter!(
        BUDGET_ADJUSTMENTS_TOTAL,
        Unit::Count,
        "Times the request budget shrank, by reason: throttled, policy, exhausted."
    );
    describe_histogram!(
        BUDGET_PAUSE_SECONDS,
        Unit::Seconds,
        "Pauses the server imposed on the request budget (Retry-After); the sum is the time spent throttled."
    );
    describe_counter!(STALLS_TOTAL, Unit::Count, "Jobs reported as stalled.");
    describe_gauge!(
        JOBSET_STREAMS,
        Unit::Count,
        "Change streams job sets hold open (many jobs on one connection)."
    );
    describe_gauge!(
        JOBSET_STREAM_JOBS,
        Unit::Count,
        "Jobs followed on change streams, all job sets together."
    );
    describe_counter!(
        STREAM_RESUMES_TOTAL,
        Unit::Count,
        "Change streams reopened after their last cursor."
    );
    describe_counter!(
        STREAM_RESETS_TOTAL,
        Unit::Count,
        "Change stream resyncs (the server could not continue from the cursor), by reason."
    );
    describe_counter!(
        SILENT_DROPS_TOTAL,
        Unit::Count,
        "Held connections dropped for saying nothing longer than their bound, by kind."
    );
    describe_counter!(
        JOBSET_JOBS_TOTAL,
        Unit::Count,
        "Jobs a job set waited for, by the mechanism it used for them."
    );
    describe_counter!(
        WEBHOOK_EVENTS_TOTAL,
        Unit::Count,
        "Webhook events handed to job sets, by outcome: finished, pending, duplicate, unmatched."
    );
}

/// How one request on the wire ended (the `outcome` label of [`REQUESTS_TOTAL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    NotModified,
    Throttled,
    Ok,
    ClientError,
    ServerError,
    Other,
    Timeout,
    ConnectError,
    NetworkError,
}

impl Outcome {
    const ALL: [Outcome; 9] = [
        Outcome::NotModified,
        Outcome::Throttled,
        Outcome::Ok,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::Other,
        Outcome::Timeout,
        Outcome::ConnectError,
        Outcome::NetworkError,
    ];

    pub(crate) fn of(result: &Result<reqwest::Response, reqwest_middleware::Error>) -> Self {
        match result {
            Ok(r) => match r.status().as_u16() {
                304 => Outcome::NotModified,
                429 => Outcome::Throttled,
                200..=299 => Outcome::Ok,
                400..=499 => Outcome::ClientError,
                500..=599 => Outcome::ServerError,
                _ => Outcome::Other,
            },
            Err(e) if crate::transport::timed_out(e) => Outcome::Timeout,
            Err(reqwest_middleware::Error::Reqwest(e)) if e.is_connect() => Outcome::ConnectError,
            Err(_) => Outcome::NetworkError,
        }
    }

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Outcome::NotModified => "not_modified",
            Outcome::Throttled => "throttled",
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::Other => "other",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
            Outcome::NetworkError => "network_error",
        }
    }
}

const KINDS: usize = RequestKind::ALL.len();
const OUTCOMES: usize = Outcome::ALL.len();

/// The labels of a request's metrics, for every kind and outcome, made at compile time.
static REQUEST_LABELS: [[[Label; 2]; OUTCOMES]; KINDS] = {
    let mut table =
        [const { [const { [const { Label::from_static_parts("", "") }; 2] }; OUTCOMES] }; KINDS];
    let mut k = 0;
    while k < KINDS {
        let mut o = 0;
        while o < OUTCOMES {
            let labels = [
                Label::from_static_parts("kind", RequestKind::ALL[k].as_str()),
                Label::from_static_parts("outcome", Outcome::ALL[o].as_str()),
            ];
            std::mem::forget(std::mem::replace(&mut table[k][o], labels));
            o += 1;
        }
        k += 1;
    }
    table
};

/// The keys of a request's two metrics, hashed at compile time: recording a request then
/// allocates and hashes nothing (the `counter!` macro with a label that is not a literal
/// builds and hashes its key on every call).
static REQUEST_KEYS: ([[Key; OUTCOMES]; KINDS], [Key; KINDS]) = {
    let mut counters = [const { [const { Key::from_static_name("") }; OUTCOMES] }; KINDS];
    let mut durations = [const { Key::from_static_name("") }; KINDS];
    let mut k = 0;
    while k < KINDS {
        let mut o = 0;
        while o < OUTCOMES {
            let key = Key::from_static_parts(REQUESTS_TOTAL, &REQUEST_LABELS[k][o]);
            std::mem::forget(std::mem::replace(&mut counters[k][o], key));
            o += 1;
        }
        // The duration's only label is the kind: the first of any outcome's pair.
        let labels: &'static [Label] = REQUEST_LABELS[k][0].split_at(1).0;
        let key = Key::from_static_parts(REQUEST_DURATION_SECONDS, labels);
        std::mem::forget(std::mem::replace(&mut durations[k], key));
        k += 1;
    }
    (counters, durations)
};

/// Where the request metrics say they come from, as the `metrics` macros would.
static REQUEST_METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

pub(crate) fn request(kind: RequestKind, outcome: Outcome, elapsed: Duration) {
    let (counters, durations) = &REQUEST_KEYS;
    metrics::with_recorder(|recorder| {
        recorder
            .register_counter(
                &counters[kind as usize][outcome as usize],
                &REQUEST_METADATA,
            )
            .increment(1);
        recorder
            .register_histogram(&durations[kind as usize], &REQUEST_METADATA)
            .record(elapsed.as_secs_f64());
    });
}

pub(crate) fn retry(kind: RequestKind) {
    metrics::counter!(RETRIES_TOTAL, "kind" => kind.as_str()).increment(1);
}

pub(crate) fn throttled(kind: RequestKind) {
    metrics::counter!(THROTTLED_TOTAL, "kind" => kind.as_str()).increment(1);
}

pub(crate) fn hedge(outcome: &'static str) {
    metrics::counter!(HEDGES_TOTAL, "outcome" => outcome).increment(1);
}

pub(crate) fn breaker_state(host: &str, state: BreakerState) {
    metrics::gauge!(BREAKER_STATE, "host" => host.to_owned()).set(f64::from(state as u8));
}

pub(crate) fn breaker_transition(host: &str, to: BreakerState) {
    breaker_state(host, to);
    metrics::counter!(BREAKER_TRANSITIONS_TOTAL, "host" => host.to_owned(), "to" => to.as_str())
        .increment(1);
}

pub(crate) fn breaker_rejected(host: &str) {
    metrics::counter!(BREAKER_REJECTED_TOTAL, "host" => host.to_owned()).increment(1);
}

pub(crate) fn fallback(from: Mechanism, reason: &'static str) {
    metrics::counter!(FALLBACKS_TOTAL, "from" => from.as_str(), "reason" => reason).increment(1);
}

pub(crate) fn wait_finished(
    outcome: &'static str,
    mechanism: Mechanism,
    requests: u32,
    elapsed: Duration,
    detection_delay: Option<Duration>,
) {
    let mechanism = mechanism.as_str();
    metrics::counter!(WAITS_TOTAL, "outcome" => outcome, "mechanism" => mechanism).increment(1);
    metrics::histogram!(POLLS_PER_WAIT, "mechanism" => mechanism).record(f64::from(requests));
    metrics::histogram!(WAIT_DURATION_SECONDS, "outcome" => outcome, "mechanism" => mechanism)
        .record(elapsed.as_secs_f64());
    if let Some(delay) = detection_delay {
        metrics::histogram!(DETECTION_DELAY_SECONDS, "mechanism" => mechanism)
            .record(delay.as_secs_f64());
    }
}

pub(crate) fn jobs_tracked(delta: f64) {
    metrics::gauge!(JOBSET_JOBS).increment(delta);
}

pub(crate) fn budget(tokens: f64, rate: f64) {
    metrics::gauge!(BUDGET_TOKENS).set(tokens);
    metrics::gauge!(BUDGET_RATE).set(rate);
}

pub(crate) fn held_connections(delta: f64) {
    metrics::gauge!(JOBSET_HELD_CONNECTIONS).increment(delta);
}

pub(crate) fn budget_adjusted(reason: &'static str) {
    metrics::counter!(BUDGET_ADJUSTMENTS_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn budget_paused(pause: Duration) {
    if !pause.is_zero() {
        metrics::histogram!(BUDGET_PAUSE_SECONDS).record(pause.as_secs_f64());
    }
}

pub(crate) fn stalled() {
    metrics::counter!(STALLS_TOTAL).increment(1);
}

pub(crate) fn streams_open(delta: f64) {
    metrics::gauge!(JOBSET_STREAMS).increment(delta);
}

pub(crate) fn stream_jobs(delta: f64) {
    metrics::gauge!(JOBSET_STREAM_JOBS).increment(delta);
}

/// Registers the change stream's counters at zero when a job set opens its first stream, so
/// that a dashboard shows "none" rather than "no data" until one counts.
pub(crate) fn stream_counters() {
    metrics::counter!(STREAM_RESUMES_TOTAL).increment(0);
    metrics::counter!(STREAM_RESETS_TOTAL, "reason" => "history").increment(0);
    metrics::counter!(SILENT_DROPS_TOTAL, "kind" => RequestKind::Changes.as_str()).increment(0);
}

pub(crate) fn stream_resumed() {
    metrics::counter!(STREAM_RESUMES_TOTAL).increment(1);
}

pub(crate) fn stream_reset(reason: &'static str) {
    metrics::counter!(STREAM_RESETS_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn silent_drop(kind: RequestKind) {
    metrics::counter!(SILENT_DROPS_TOTAL, "kind" => kind.as_str()).increment(1);
}

pub(crate) fn jobset_job(mechanism: &'static str) {
    metrics::counter!(JOBSET_JOBS_TOTAL, "mechanism" => mechanism).increment(1);
}

pub(crate) fn webhook_event(outcome: &'static str) {
    metrics::counter!(WEBHOOK_EVENTS_TOTAL, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString};

    use super::*;

    /// Keeps the name of every metric described to it, and of every histogram.
    #[derive(Default)]
    struct Described(Mutex<Vec<(String, String)>>, Mutex<Vec<String>>);

    impl Described {
        fn add(&self, key: KeyName, text: SharedString) {
            let entry = (key.as_str().to_owned(), text.to_string());
            self.0.lock().unwrap().push(entry);
        }
    }

    impl Recorder for Described {
        fn describe_counter(&self, key: KeyName, _: Option<Unit>, text: SharedString) {
            self.add(key, text);
        }
        fn describe_gauge(&self, key: KeyName, _: Option<Unit>, text: SharedString) {
            self.add(key, text);
        }
        fn describe_histogram(&self, key: KeyName, _: Option<Unit>, text: SharedString) {
            self.1.lock().unwrap().push(key.as_str().to_owned());
            self.add(key, text);
        }
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// Every metric name this module declares — read off its source, so that a new one cannot
    /// be forgotten — is described, once, with some help text.
    #[test]
    fn every_metric_constant_is_described() {
        let declared: Vec<&str> = include_str!("telemetry.rs")
            .lines()
            .filter(|line| line.starts_with("pub const ") && line.contains(": &str = "))
            .filter_map(|line| line.split('"').nth(1))
            .collect();
        assert!(declared.len() >= 20, "{declared:?}");
        let recorder = Described::default();
        metrics::with_local_recorder(&recorder, describe_metrics);
        let described = recorder.0.into_inner().unwrap();
        for name in &declared {
            let found: Vec<_> = described.iter().filter(|(n, _)| n == name).collect();
            assert_eq!(found.len(), 1, "{name} is described {} times", found.len());
            assert!(!found[0].1.is_empty(), "{name}");
        }
        assert_eq!(described.len(), declared.len(), "{described:?}");
    }

    /// Every histogram has buckets of its own, sorted and positive; nothing else has any.
    #[test]
    fn every_histogram_has_buckets() {
        let recorder = Described::default();
        metrics::with_local_recorder(&recorder, describe_metrics);
        let mut histograms = recorder.1.into_inner().unwrap();
        histograms.sort();
        let mut bucketed: Vec<String> = HISTOGRAM_BUCKETS
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect();
        bucketed.sort();
        assert_eq!(histograms, bucketed);
        for (name, buckets) in HISTOGRAM_BUCKETS {
            assert!(buckets.len() >= 8, "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
            assert!(buckets[0] > 0.0, "{name}");
        }
    }

    /// The keys made at compile time are the ones the labels say: every kind and outcome,
    /// recorded through a real recorder, comes out with its own two labels.
    #[test]
    fn a_request_is_recorded_under_its_kind_and_outcome() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            for (k, kind) in RequestKind::ALL.into_iter().enumerate() {
                for (o, outcome) in Outcome::ALL.into_iter().enumerate() {
                    // Kind k, outcome o, recorded (k + 1) × (o + 1) times.
                    for _ in 0..(k + 1) * (o + 1) {
                        request(kind, outcome, Duration::from_millis(5));
                    }
                }
            }
        });
        let mut counters = 0;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let label = |name: &str| {
                let found = key.labels().find(|l| l.key() == name);
                found.map(|l| l.value().to_owned())
            };
            let kind = label("kind").unwrap();
            let k = RequestKind::ALL
                .iter()
                .position(|x| x.as_str() == kind)
                .unwrap();
            match (key.name(), value) {
                (REQUESTS_TOTAL, DebugValue::Counter(n)) => {
                    let outcome = label("outcome").unwrap();
                    let o = Outcome::ALL
                        .iter()
                        .position(|x| x.as_str() == outcome)
                        .unwrap();
                    assert_eq!(n as usize, (k + 1) * (o + 1), "{kind} {outcome}");
                    assert_eq!(key.labels().count(), 2);
                    counters += 1;
                }
                (REQUEST_DURATION_SECONDS, DebugValue::Histogram(samples)) => {
                    assert_eq!(key.labels().count(), 1, "{kind}");
                    assert_eq!(samples.len(), (k + 1) * 45, "{kind}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(counters, RequestKind::ALL.len() * Outcome::ALL.len());
    }
}
