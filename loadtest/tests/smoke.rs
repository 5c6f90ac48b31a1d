//! The measuring modes, briefly, as smoke tests: they run and report something sensible. No
//! timing is asserted (the numbers live in `docs/benchmarks.md`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use loadtest::hold::HoldKind;

/// `loadtest hold --connections 200`, for each kind: every request held, a positive cost per
/// connection, in the JSON the command prints last.
#[test]
fn hold_reports_a_cost_per_held_connection() {
    for kind in ["long-poll", "sse"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(["hold", "--connections", "200", "--kind", kind])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{kind}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(json["connections"], 200, "{json}");
        assert!(json["held"].as_u64().unwrap() >= 200, "{json}");
        assert_eq!(json["ended_early"], 0, "{json}");
        assert!(
            json["bytes_per_connection"].as_f64().unwrap() > 0.0,
            "{json}"
        );
    }
}

/// The same through the library, against a simulator in its own process: the report says
/// what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_through_the_library() {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_loadtest"));
    let (addr, child) = loadtest::hold::spawn_server(exe, 50).await.unwrap();
    let pid = child.id().unwrap();
    let job = loadtest::hold::hanging_job(&format!("http://{addr}"))
        .await
        .unwrap();
    let r = loadtest::hold::hold(
        addr,
        pid,
        HoldKind::LongPoll,
        &job,
        50,
        Duration::from_secs(20),
        Duration::from_secs(15),
    )
    .await
    .unwrap();
    assert!(r.passed(), "{r:?}");
    assert!(r.rss_held > r.rss_before, "{r:?}");
    drop(child);
}

/// `loadtest throughput`, briefly: both servers answer, without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_compares_the_simulator_with_bare_hyper() {
    let mut settings = translation_sim::Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    let server = translation_sim::spawn(settings).await.unwrap();
    let c = loadtest::throughput::compare(&server.url("/status"), 4, Duration::from_millis(800))
        .await
        .unwrap();
    for t in [&c.simulator, &c.bare] {
        assert!(t.requests > 0, "{t:?}");
        assert_eq!(t.errors, 0, "{t:?}");
    }
    assert!(c.ratio > 0.0, "{c:?}");
    server.shutdown().await;
}
