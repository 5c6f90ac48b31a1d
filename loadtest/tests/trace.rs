//! One wait is one trace across client and server: the SDK propagates W3C trace context
//! (feature `otel`) and the simulator parents its request spans on it.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use translation_sim::{JobSpec, Settings};
use translation_status::{Client, JobRef, WaitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_is_one_trace_from_client_to_server() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.sse.enabled = false;
    settings.longpoll.enabled = false;
    let server = translation_sim::spawn(settings).await.unwrap();
    let id = server
        .state()
        .create_job(JobSpec {
            duration: Some(Duration::from_millis(300)),
            ..JobSpec::default()
        })
        .unwrap();
    let client = Client::new(&server.base_url()).unwrap();
    let done = client
        .wait_with(
            JobRef::id(id),
            &WaitOptions::new().deadline(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert!(done.report.requests >= 2, "polled at least twice");
    server.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let wait = spans
        .iter()
        .find(|s| s.name == "wait")
        .unwrap_or_else(|| panic!("no wait span in {:?}", names(&spans)));
    let trace = wait.span_context.trace_id();
    let client_requests: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "request" && s.span_context.trace_id() == trace)
        .collect();
    assert!(
        client_requests.len() >= 2,
        "the SDK's request spans belong to the wait's trace: {:?}",
        names(&spans)
    );
    let server_spans: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert!(
        !server_spans.is_empty(),
        "server spans: {:?}",
        names(&spans)
    );
    for s in &server_spans {
        assert_eq!(
            s.span_context.trace_id(),
            trace,
            "{} is in the wait's trace",
            s.name
        );
        assert!(
            client_requests
                .iter()
                .any(|c| c.span_context.span_id() == s.parent_span_id),
            "{} is a child of one of the SDK's request spans",
            s.name
        );
        assert!(
            ["GET /v1/jobs/{id}/status", "GET /v1/jobs/{id}/events"].contains(&&*s.name),
            "server span named after its route: {}",
            s.name
        );
    }
    assert!(
        server_spans
            .iter()
            .any(|s| s.name == "GET /v1/jobs/{id}/status"),
        "the status reads are traced"
    );
    assert_eq!(
        server_spans.len(),
        client_requests.len(),
        "one server span per request"
    );
}

fn names(spans: &[opentelemetry_sdk::trace::SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}
