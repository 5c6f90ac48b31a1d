//! The harness's own `/metrics`: the SDK's metrics (through the `metrics` facade) and the
//! harness's, labelled by strategy, for Prometheus and the dashboards.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide recorder, with explicit buckets so every histogram is exported as
/// a Prometheus histogram, and describes the harness's and the SDK's metrics.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let seconds = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let counts = [
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets(&counts)?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)?
        .install_recorder()
        .context("installing the metrics recorder")?;
    crate::describe_metrics();
    translation_status::telemetry::describe_metrics();
    Ok(handle)
}

/// Serves `GET /metrics` (and `/healthz`) on `addr` in the background; returns the bound
/// address. Histogram upkeep runs alongside.
pub async fn serve_metrics(
    addr: SocketAddr,
    handle: PrometheusHandle,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let h = handle.clone();
                async move { h.render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(bound)
}
