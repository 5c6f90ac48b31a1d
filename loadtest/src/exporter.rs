//! The harness's own `/metrics`: the SDK's metrics (through the `metrics` facade) and the
//! harness's, labelled by strategy, for Prometheus and the dashboards.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use translation_status::telemetry;

/// Installs the process-wide recorder, with explicit buckets so every histogram is exported as
/// a Prometheus histogram — the SDK's from [`telemetry::HISTOGRAM_BUCKETS`], the harness's
/// seconds and counts from the same sets — and describes the harness's and the SDK's metrics.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    // The SDK's own histograms first, by full name, as its telemetry docs show.
    let mut builder = PrometheusBuilder::new();
    for &(name, buckets) in telemetry::HISTOGRAM_BUCKETS {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets)?;
    }
    let handle = builder
        .set_buckets(telemetry::COUNT_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            telemetry::REQUEST_SECONDS_BUCKETS,
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    crate::describe_metrics();
    telemetry::describe_metrics();
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
