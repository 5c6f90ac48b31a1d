//! `loadtest run --target A,B`: a scenario spread over two simulator replicas that share one
//! Redis (a private `redis-server` on loopback). Jobs are created on one replica and waited
//! for on the other; every wait ends with its job's real outcome, and the report counts each
//! replica's requests.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use loadtest::report::Report;
use loadtest::scenario::{Arrival, Durations, FaultProfile, Scenario};
use loadtest::strategy::Strategy;
use translation_sim::redis_server::{Persistence, RedisServer};
use translation_sim::settings::StoreBackend;

#[tokio::test]
async fn a_run_over_two_replicas_loses_nothing_and_counts_each_replica() {
    let redis = RedisServer::start(Persistence::None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut s = translation_sim::Settings::default();
        s.server.bind = "127.0.0.1:0".parse().unwrap();
        s.sse.progress_interval = Duration::ZERO;
        s.store.backend = StoreBackend::Redis;
        s.store.redis_url = redis.url();
        replicas.push(translation_sim::spawn(s).await.unwrap());
    }
    let targets: Vec<String> = replicas.iter().map(|r| r.base_url()).collect();
    let strategies = vec![
        Strategy::OursPlain,
        Strategy::OursLongPoll,
        Strategy::OursAuto,
    ];
    let jobs = 20;
    let scenario = Scenario {
        jobs,
        concurrency: jobs,
        arrival: Arrival::AllAtOnce,
        durations: Durations::Uniform {
            min_ms: 2000.0,
            max_ms: 6000.0,
        },
        error_rate: 0.3,
        time_scale: 0.1, // jobs of 200..600 ms
        faults: FaultProfile::None,
        webhook_drop: 0.0,
        webhook_duplicate: 0.0,
        seed: 11,
        targets: targets.clone(),
        strategies: strategies.clone(),
        parallel: false,
        deadline: Duration::from_secs(30),
        progress: false,
    };
    let rows = scenario.run().await.unwrap();
    assert_eq!(rows.len(), strategies.len());
    for r in &rows {
        assert_eq!(r.jobs, jobs, "{}", r.name);
        assert_eq!((r.wrong_outcomes, r.gave_up), (0, 0), "{}", r.name);
        assert_eq!(r.detection_delay_ms.n, jobs, "{}: none lost", r.name);
        let by: Vec<(&str, f64)> = r
            .requests_by_target
            .iter()
            .map(|t| (t.target.as_str(), t.requests))
            .collect();
        assert_eq!(
            by.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            targets.iter().map(String::as_str).collect::<Vec<_>>(),
            "{}",
            r.name
        );
        // Each replica created half the jobs and answered half the waits.
        for (target, n) in &by {
            assert!(*n >= jobs as f64, "{}: {target} answered {n}", r.name);
        }
    }
    let report = Report {
        scenario: serde_json::to_value(&scenario).unwrap(),
        strategies: rows,
    };
    let md = report.markdown();
    assert!(md.contains("Requests answered per target"), "{md}");
    assert!(md.contains(&targets[1]), "{md}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["strategies"][0]["requests_by_target"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for r in replicas {
        r.shutdown().await;
    }
}
