//! Every metric name used by every dashboard query exists in what the binaries really emit:
//! the simulator's `/metrics` and the harness's `/metrics`, scraped after real traffic (with a
//! few faults and a slow tail, so retry, throttle and hedge series exist too). The names come from the dashboard JSON
//! itself, never from a list kept by hand.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use loadtest::scenario::{Arrival, Durations, FaultProfile, Scenario};
use loadtest::strategy::Strategy;
use translation_sim::{Faults, Settings};

const PREFIXES: [&str; 3] = ["sim_", "loadtest_", "translation_status_"];

/// Metric names in a PromQL expression: identifiers with one of our prefixes.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            current.push(c);
            continue;
        }
        if PREFIXES.iter().any(|p| current.starts_with(p)) {
            out.push(std::mem::take(&mut current));
        }
        current.clear();
    }
    out
}

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Sample names (`name{...} value` or `name value`) in Prometheus text.
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

#[test]
fn names_in_promql_are_found() {
    let got = names_in(
        "histogram_quantile(0.99, sum by (le) (rate(sim_x_bucket{channel=\"sim_not_a_name\"}[5m]))) / loadtest_y_total",
    );
    assert_eq!(got, vec!["sim_x_bucket", "loadtest_y_total"]);
}

/// A job set on a change stream that ends often, keeps one change, and is sometimes silent:
/// so that the job set's series (streams, resumes, resets, silent drops) exist.
async fn job_set_on_a_flaky_change_stream() {
    use futures_util::StreamExt;
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.changes.history = 1;
    settings.changes.max_lifetime = Duration::from_millis(200);
    settings.changes.bookmark_interval = Duration::from_millis(50);
    settings.faults.silent_rate = 0.5;
    settings.faults.seed = Some(3);
    let server = translation_sim::spawn(settings).await.unwrap();
    let client = translation_status::Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    let options = translation_status::jobset::JobSetOptions::new()
        .bookmark_interval(Duration::from_millis(50))
        .deadline(Duration::from_secs(30));
    let mut set = client.job_set(options).unwrap();
    for i in 0..60u64 {
        let id = server
            .state()
            .create_job(translation_sim::JobSpec {
                duration: Some(Duration::from_millis(300 + (i * 37) % 1500)),
                ..translation_sim::JobSpec::default()
            })
            .unwrap();
        set.add(id.as_str()).unwrap();
    }
    let mut finished = 0;
    while let Some(event) = set.next().await {
        if let translation_status::jobset::JobEvent::Finished { .. } = event {
            finished += 1;
        }
    }
    assert_eq!(finished, 60);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_exists_in_real_scrapes() {
    let handle = loadtest::exporter::install_recorder().unwrap();
    let harness = loadtest::exporter::serve_metrics("127.0.0.1:0".parse().unwrap(), handle)
        .await
        .unwrap();
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.sse.progress_interval = Duration::ZERO;
    settings.faults = Faults {
        seed: Some(3),
        error_rate: 0.05,
        throttle_rate: 0.05,
        throttle_retry_after: Duration::from_secs(1),
        // A slow tail, so that hedged reads happen.
        slow_tail_probability: 0.05,
        slow_tail_delay: Duration::from_millis(300),
        ..Faults::default()
    };
    let server = translation_sim::spawn(settings).await.unwrap();
    let scenario = Scenario {
        jobs: 20,
        concurrency: 20,
        arrival: Arrival::AllAtOnce,
        durations: Durations::Uniform {
            min_ms: 2000.0,
            max_ms: 6000.0,
        },
        error_rate: 0.2,
        time_scale: 0.1,
        faults: FaultProfile::None,
        webhook_drop: 0.0,
        webhook_duplicate: 0.0,
        seed: 11,
        targets: vec![server.base_url()],
        strategies: vec![
            Strategy::Naive1s,
            Strategy::OursPlain,
            Strategy::OursHints,
            Strategy::OursLongPoll,
            Strategy::OursSse,
            Strategy::OursAuto,
        ],
        parallel: true,
        deadline: Duration::from_secs(60),
        progress: false,
    };
    let rows = scenario.run().await.unwrap();
    assert!(rows.iter().all(|r| r.wrong_outcomes == 0), "{rows:?}");
    job_set_on_a_flaky_change_stream().await;

    let http = reqwest::Client::new();
    let mut scraped = BTreeSet::new();
    for url in [server.url("/metrics"), format!("http://{harness}/metrics")] {
        let text = http.get(&url).send().await.unwrap().text().await.unwrap();
        scraped.extend(exposed(&text));
    }
    server.shutdown().await;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards");
    let mut checked = 0;
    let mut missing = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut found = Vec::new();
        exprs(&json, &mut found);
        assert!(!found.is_empty(), "{} has queries", path.display());
        for name in found.iter().flat_map(|e| names_in(e)) {
            checked += 1;
            if !scraped.contains(&name) {
                missing.insert(format!("{name} ({})", path.display()));
            }
        }
    }
    assert!(
        checked > 20,
        "dashboards query our metrics ({checked} names)"
    );
    assert!(
        missing.is_empty(),
        "dashboard metrics not emitted: {missing:#?}"
    );
}
