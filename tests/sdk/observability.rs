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
