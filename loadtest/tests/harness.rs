//! A tiny scenario against a real simulator: the report's counts agree with the simulator's
//! own metrics.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use loadtest::report::{Report, fixed_interval_curve};
use loadtest::scenario::{Arrival, Durations, FaultProfile, Scenario};
use loadtest::strategy::Strategy;

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn report_counts_match_the_simulators_metrics() {
    let mut settings = translation_sim::Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.sse.progress_interval = Duration::ZERO;
    let server = translation_sim::spawn(settings).await.unwrap();
    let strategies = vec![
        Strategy::Naive1s,
        Strategy::OursPlain,
        Strategy::OursHints,
        Strategy::OursLongPoll,
        Strategy::OursSse,
        Strategy::OursAuto,
    ];
    let jobs = 6;
    let scenario = Scenario {
        jobs,
        concurrency: jobs,
        arrival: Arrival::AllAtOnce,
        durations: Durations::Uniform {
            min_ms: 600.0,
            max_ms: 1200.0,
        },
        error_rate: 0.3,
        time_scale: 0.05, // jobs of 30..60 ms; naive polls every 50 ms
        faults: FaultProfile::None,
        webhook_drop: 0.0,
        webhook_duplicate: 0.0,
        seed: 5,
        targets: vec![server.base_url()],
        strategies: strategies.clone(),
        parallel: false,
        deadline: Duration::from_secs(30),
        progress: false,
    };
    let rows = scenario.run().await.unwrap();
    assert_eq!(rows.len(), strategies.len());
    let text = server.state().render_metrics();

    // Every wait ended with the job's real outcome.
    for r in &rows {
        assert_eq!(r.jobs, jobs, "{}", r.name);
        assert_eq!((r.wrong_outcomes, r.gave_up), (0, 0), "{}", r.name);
        assert_eq!(r.detection_delay_ms.n, jobs, "{}", r.name);
    }
    // The server saw exactly the status requests the report counts: each job's request count
    // when its terminal state was first reported, summed.
    let reported: f64 = rows
        .iter()
        .map(|r| r.requests_per_job.mean * r.jobs as f64)
        .sum();
    let server_polls = sample(&text, "sim_status_polls_per_job_sum");
    assert!(
        (reported - server_polls).abs() < 0.5,
        "report {reported} vs server {server_polls}; per strategy: {:?}\n{text}",
        rows.iter()
            .map(|r| (
                r.name.clone(),
                r.requests_per_job.mean * r.jobs as f64,
                r.hedges
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sample(&text, "sim_status_polls_per_job_count"),
        (jobs * strategies.len()) as f64
    );
    // Mechanisms are what each strategy should use against a full server.
    let mech = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap()
            .mechanism
            .clone()
    };
    assert_eq!(mech("ours-sse"), "sse");
    assert_eq!(mech("ours-auto"), "sse");
    assert_eq!(mech("ours-longpoll"), "long_poll");
    assert_eq!(mech("naive-1s"), "fixed");
    // Streams and long-polls need one request per job; the naive poller needs more.
    let per_job = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap()
            .requests_per_job
            .mean
    };
    assert_eq!(per_job("ours-sse"), 1.0);
    assert!(per_job("ours-longpoll") <= 2.0);
    assert!(per_job("naive-1s") >= 1.5);
    // SSE jobs were reported by the server on the sse channel, one per job.
    assert_eq!(
        sample(&text, "sim_detection_delay_seconds_count{channel=\"sse\"}"),
        (2 * jobs) as f64
    );

    let out = std::env::temp_dir().join(format!("loadtest-harness-{}", std::process::id()));
    let report = Report {
        scenario: serde_json::to_value(&scenario).unwrap(),
        strategies: rows,
    };
    let optimum = scenario.optimum();
    assert!(optimum.len() > 10, "{optimum:?}");
    report
        .write(
            &out,
            &fixed_interval_curve(&scenario.durations_ms()),
            &optimum,
        )
        .unwrap();
    let svg = std::fs::read_to_string(out.join("plot.svg")).unwrap();
    assert!(
        svg.contains("known-distribution optimum"),
        "the limit is drawn"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"]["jobs"], jobs);
    for key in [
        "requests_per_job",
        "detection_delay_ms",
        "wrong_outcomes",
        "server_rps",
    ] {
        assert!(json["strategies"][0].get(key).is_some(), "{key}");
    }
    std::fs::remove_dir_all(out).unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_by_the_simulator_while_healthz_answers() {
    let mut settings = translation_sim::Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.idle_timeout = Duration::from_millis(500);
    let server = translation_sim::spawn(settings).await.unwrap();
    let report = loadtest::idle::hold_idle(
        server.addr(),
        &server.url("/healthz"),
        300,
        Duration::from_secs(15),
    )
    .await
    .unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!(report.closed, 300);
    assert!(report.shortest_lifetime_ms >= 490.0, "{report:?}");
    assert!(report.healthz_ms.n >= 1, "{report:?}");
}

#[tokio::test]
async fn ours_webhook_ends_every_job_once_when_deliveries_are_lost_and_repeated() {
    let jobs = 40;
    let scenario = Scenario {
        jobs,
        concurrency: jobs,
        arrival: Arrival::AllAtOnce,
        durations: Durations::Uniform {
            min_ms: 600.0,
            max_ms: 1200.0,
        },
        error_rate: 0.3,
        time_scale: 0.05,
        faults: FaultProfile::None,
        webhook_drop: 0.2,
        webhook_duplicate: 0.2,
        seed: 11,
        // An embedded simulator, which calls the harness's receiver back.
        targets: Vec::new(),
        strategies: vec![Strategy::OursWebhook],
        parallel: false,
        deadline: Duration::from_secs(30),
        progress: false,
    };
    let rows = scenario.run().await.unwrap();
    let row = &rows[0];
    assert_eq!(row.name, "ours-webhook");
    assert_eq!(row.jobs, jobs);
    assert_eq!((row.wrong_outcomes, row.gave_up), (0, 0));
    assert_eq!(row.mechanism, "webhook", "most jobs are told by webhook");
    // A delivered webhook costs no read, a lost one about one: 20 % lost.
    let per_job = row.requests_per_job.mean;
    assert!(per_job > 0.0 && per_job <= 1.0, "{per_job}");
}
