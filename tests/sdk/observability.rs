//! What a wait emits: metrics through the facade (captured by a local recorder here — the
//! library installs none) and a span tree.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use translation_status::WaitOptions;
use translation_status::telemetry;

use crate::support::{client, job, json, scripted, sim};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn metrics_cover_requests_retries_waits_and_detection_delay() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let server = sim(|s| s.sse.enabled = false).await;
            let client = client(&server);
            client.wait(job(&server, 1200).as_str()).await.unwrap();
            let flaky = scripted(
                vec![json(500, "{}")],
                json(200, r#"{"result":"completed"}"#),
            )
            .await;
            client
                .wait_with(flaky.url("/status"), &WaitOptions::new().long_poll(false))
                .await
                .unwrap();
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let mut names = BTreeSet::new();
    let mut retries = 0;
    let mut detection = Vec::new();
    for (key, _, _, value) in &snapshot {
        let name = key.key().name().to_owned();
        match value {
            DebugValue::Counter(n) if name == telemetry::RETRIES_TOTAL => retries += n,
            DebugValue::Histogram(v) if name == telemetry::DETECTION_DELAY_SECONDS => {
                detection.extend(v.iter().map(|x| x.into_inner()));
            }
            _ => {}
        }
        names.insert(name);
    }
    for expected in [
        telemetry::REQUESTS_TOTAL,
        telemetry::REQUEST_DURATION_SECONDS,
        telemetry::RETRIES_TOTAL,
        telemetry::WAITS_TOTAL,
        telemetry::POLLS_PER_WAIT,
        telemetry::WAIT_DURATION_SECONDS,
        telemetry::DETECTION_DELAY_SECONDS,
        telemetry::FALLBACKS_TOTAL,
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        retries, 1,
        "the one 500 was retried once, and counted on success"
    );
    assert_eq!(
        detection.len(),
        1,
        "only the simulator reports completed_at"
    );
    assert!(detection[0] < 1.0, "{detection:?}");
    let labelled = snapshot.iter().any(|(key, _, _, _)| {
        key.key().name() == telemetry::WAITS_TOTAL
            && key
                .key()
                .labels()
                .any(|l| l.key() == "mechanism" && l.value() == "long_poll")
            && key
                .key()
                .labels()
                .any(|l| l.key() == "outcome" && l.value() == "completed")
    });
    assert!(labelled, "waits are labelled by mechanism and outcome");
}

/// Records span names and recorded fields, but only from the thread that runs the wait: the
/// layer is installed as the global default (scoped subscribers race with the callsite
/// interest cache when other tests run in parallel), so it sees every test's spans.
#[derive(Clone)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>, std::thread::ThreadId);

impl Spans {
    fn mine(&self) -> bool {
        std::thread::current().id() == self.1
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if self.mine() && attrs.metadata().target().starts_with("translation_status") {
            self.0
                .lock()
                .unwrap()
                .push((attrs.metadata().name().to_owned(), String::new()));
        }
    }

    fn on_record(
        &self,
        _id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if !self.mine() {
            return;
        }
        struct Fields<'a>(&'a mut String);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push_str(&format!("{}={} ", field.name(), value));
            }
        }
        let mut text = String::new();
        values.record(&mut Fields(&mut text));
        self.0.lock().unwrap().push(("record".into(), text));
    }
}

#[test]
fn a_wait_is_a_span_with_children_per_request_and_sleep() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans(Arc::default(), std::thread::current().id());
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    {
        runtime().block_on(async {
            let server = sim(|s| {
                s.sse.enabled = false;
                s.longpoll.enabled = false;
            })
            .await;
            let client = client(&server);
            client.wait(job(&server, 600).as_str()).await.unwrap();
        });
    }
    let seen = spans.0.lock().unwrap().clone();
    let names: BTreeSet<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["wait", "events", "poll", "request", "sleep"] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }
    let recorded: String = seen.iter().map(|(_, f)| f.as_str()).collect();
    assert!(recorded.contains("mechanism=hints"), "{recorded}");
    assert!(recorded.contains("outcome=completed"), "{recorded}");
}

/// Name, kind, unit and help text of one described metric.
type Described = (String, &'static str, Option<metrics::Unit>, String);

/// Keeps what was described to it; everything else is a no-op.
#[derive(Default)]
struct Descriptions(Mutex<Vec<Described>>);

impl Descriptions {
    fn add(
        &self,
        kind: &'static str,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.0
            .lock()
            .unwrap()
            .push((key.as_str().to_owned(), kind, unit, text.to_string()));
    }
}

impl metrics::Recorder for Descriptions {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.add("counter", key, unit, text);
    }
    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.add("gauge", key, unit, text);
    }
    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.add("histogram", key, unit, text);
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn every_metric_is_described_and_documented() {
    let recorder = Descriptions::default();
    metrics::with_local_recorder(&recorder, telemetry::describe_metrics);
    let described = recorder.0.into_inner().unwrap();
    let all = [
        (telemetry::REQUESTS_TOTAL, "counter"),
        (telemetry::REQUEST_DURATION_SECONDS, "histogram"),
        (telemetry::RETRIES_TOTAL, "counter"),
        (telemetry::THROTTLED_TOTAL, "counter"),
        (telemetry::WAITS_TOTAL, "counter"),
        (telemetry::POLLS_PER_WAIT, "histogram"),
        (telemetry::WAIT_DURATION_SECONDS, "histogram"),
        (telemetry::DETECTION_DELAY_SECONDS, "histogram"),
        (telemetry::FALLBACKS_TOTAL, "counter"),
        (telemetry::HEDGES_TOTAL, "counter"),
        (telemetry::BREAKER_STATE, "gauge"),
        (telemetry::BREAKER_TRANSITIONS_TOTAL, "counter"),
        (telemetry::BREAKER_REJECTED_TOTAL, "counter"),
        (telemetry::JOBSET_JOBS, "gauge"),
        (telemetry::JOBSET_HELD_CONNECTIONS, "gauge"),
        (telemetry::BUDGET_TOKENS, "gauge"),
        (telemetry::BUDGET_RATE, "gauge"),
        (telemetry::BUDGET_ADJUSTMENTS_TOTAL, "counter"),
        (telemetry::BUDGET_PAUSE_SECONDS, "histogram"),
        (telemetry::STALLS_TOTAL, "counter"),
        (telemetry::JOBSET_STREAMS, "gauge"),
        (telemetry::JOBSET_STREAM_JOBS, "gauge"),
        (telemetry::STREAM_RESUMES_TOTAL, "counter"),
        (telemetry::STREAM_RESETS_TOTAL, "counter"),
        (telemetry::SILENT_DROPS_TOTAL, "counter"),
        (telemetry::JOBSET_JOBS_TOTAL, "counter"),
        (telemetry::WEBHOOK_EVENTS_TOTAL, "counter"),
    ];
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/observability.md"
    ))
    .unwrap();
    assert_eq!(described.len(), all.len(), "{described:?}");
    for (name, kind) in all {
        let found = described.iter().find(|(n, _, _, _)| n == name);
        let Some((_, described_as, unit, text)) = found else {
            panic!("{name} is not described");
        };
        assert_eq!(*described_as, kind, "{name}");
        assert!(!text.is_empty(), "{name}");
        assert!(name.starts_with("translation_status_"), "{name}");
        if name.ends_with("_seconds") {
            assert_eq!(*unit, Some(metrics::Unit::Seconds), "{name}");
        }
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} is not in docs/observability.md"
        );
    }
}

/// The telemetry docs' recipe: with [`telemetry::HISTOGRAM_BUCKETS`] given to the Prometheus
/// exporter, request counts land in count buckets and latencies in seconds buckets — not
/// counts in seconds buckets, all of them in the last one.
#[test]
fn the_documented_buckets_put_counts_and_seconds_each_in_their_own() {
    let mut builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    for &(name, buckets) in telemetry::HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(name.into()),
                buckets,
            )
            .unwrap();
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let server = sim(|s| s.sse.enabled = false).await;
            let client = client(&server);
            let options = WaitOptions::new().long_poll(false);
            client
                .wait_with(job(&server, 600).as_str(), &options)
                .await
                .unwrap();
        });
    });
    handle.run_upkeep();
    let text = handle.render();
    let bucket = |name: &str, le: &str| {
        text.lines().any(|line| {
            line.starts_with(&format!("{name}_bucket{{")) && line.contains(&format!("le=\"{le}\""))
        })
    };
    // Polls per wait: counts, from 1 up; no millisecond buckets.
    assert!(bucket(telemetry::POLLS_PER_WAIT, "1"), "{text}");
    assert!(bucket(telemetry::POLLS_PER_WAIT, "100"), "{text}");
    assert!(!bucket(telemetry::POLLS_PER_WAIT, "0.005"), "{text}");
    // Request latency: seconds, from a millisecond.
    assert!(
        bucket(telemetry::REQUEST_DURATION_SECONDS, "0.001"),
        "{text}"
    );
    // Whole waits: up to two hours.
    assert!(bucket(telemetry::WAIT_DURATION_SECONDS, "7200"), "{text}");
    // The wait's polls are counted where a count belongs: at most a handful for 0.6 s.
    let polls_le_10 = text
        .lines()
        .find(|l| {
            l.starts_with(&format!("{}_bucket{{", telemetry::POLLS_PER_WAIT))
                && l.contains("le=\"10\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(polls_le_10, Some(1.0), "{text}");
}
