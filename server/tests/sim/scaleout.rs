//! Two replicas on one real Redis (`store.backend = "redis"`): a job created on one is read,
//! long-polled and streamed on the other; cursors resume across them; limits, keys and faults
//! hold for both; a replica or Redis itself can go away mid-run without a job lost or a wrong
//! answer. Each test starts its own `redis-server` (see `translation_sim::redis_server`) and
//! fails, naming the fix, when it is not installed.
//!
//! Latencies are asserted with generous bounds (a busy CI machine; a few milliseconds is what
//! they measure) and printed; `docs/scale-out.md` has the measured cost of the Redis store.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use translation_sim::redis_server::{Persistence, RedisServer};
use translation_sim::{RunningServer, Settings};

use crate::common::{SseReader, client, error_code, spawn_with};

/// A generous bound on "within milliseconds of its end" on a busy machine: a few milliseconds
/// is usual, 100 ms the target; a 2-core machine under a load of 8 once took 184 ms.
const PROMPT: Duration = Duration::from_millis(500);

pub(crate) async fn redis(persistence: Persistence) -> RedisServer {
    RedisServer::start(persistence)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One replica on `redis`, with `tweak` applied.
pub(crate) async fn replica(redis: &RedisServer, tweak: impl Fn(&mut Settings)) -> RunningServer {
    let url = redis.url();
    let server = spawn_with(|s| {
        s.store.backend = translation_sim::settings::StoreBackend::Redis;
        s.store.redis_url = url.clone();
        s.store.reconnect_min = Duration::from_millis(50);
        s.store.reconnect_max = Duration::from_millis(400);
        s.sse.progress_interval = Duration::ZERO;
        s.auth.admin_token = Some("admin".into());
        tweak(s);
    })
    .await;
    assert!(
        sample(&server, "sim_store_up") == Some(1.0),
        "the replica follows the shared store"
    );
    server
}

fn sample(server: &RunningServer, series: &str) -> Option<f64> {
    crate::common::sample(&server.state().render_metrics(), series)
}

async fn create(server: &RunningServer, body: Value) -> String {
    crate::common::create(server, body).await
}

/// How long after the job's `completed_at` the answer `v` arrived.
fn late(v: &Value) -> Duration {
    let done = humantime::parse_rfc3339(v["completed_at"].as_str().expect("completed_at"))
        .expect("RFC 3339");
    // completed_at has millisecond precision: allow for the truncation.
    SystemTime::now()
        .duration_since(done)
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(1))
}

#[tokio::test]
async fn a_job_created_on_one_replica_ends_on_every_channel_of_the_other() {
    let redis = redis(Persistence::None).await;
    let (a, b) = (replica(&redis, |_| {}).await, replica(&redis, |_| {}).await);
    let id = create(&a, json!({"duration_ms": 800, "outcome": "error"})).await;
    let http = client();

    // A status read on B sees it at once, pending.
    let v: Value = http
        .get(b.url(&format!("/v1/jobs/{id}/status")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"], "pending", "{v}");

    // B's multiplexed stream (the same client: both connect from 127.0.0.1) and per-job SSE.
    let mut stream = SseReader::new(http.get(b.url("/v1/events")).send().await.unwrap());
    let snapshot = stream.until("snapshot_end", Duration::from_secs(5)).await;
    assert!(
        snapshot
            .iter()
            .any(|e| e.name == "snapshot" && e.data["id"] == id.as_str())
    );
    let sse = SseReader::new(
        http.get(b.url(&format!("/v1/jobs/{id}/events")))
            .send()
            .await
            .unwrap(),
    );
    let longpoll = http
        .get(b.url(&format!("/v1/jobs/{id}/status")))
        .header("prefer", "wait=10")
        .send();
    let sse_end = async move {
        let mut sse = sse;
        loop {
            let ev = sse.next(Duration::from_secs(10)).await.expect("an event");
            if ev.data["result"] != "pending" {
                return (ev.data.clone(), late(&ev.data));
            }
        }
    };
    let stream_end = async {
        loop {
            let ev = stream
                .next(Duration::from_secs(10))
                .await
                .expect("an event");
            if ev.name == "status" && ev.data["id"] == id.as_str() && ev.data["result"] != "pending"
            {
                return (ev.data.clone(), late(&ev.data));
            }
        }
    };
    let longpoll_end = async {
        let r = longpoll.await.unwrap();
        assert_eq!(r.headers()["preference-applied"], "wait=10");
        let v: Value = r.json().await.unwrap();
        let late = late(&v);
        (v, late)
    };
    let ((lp, lp_late), (ev, ev_late), (st, st_late)) =
        tokio::join!(longpoll_end, sse_end, stream_end);
    println!(
        "after its end, on the other replica: long-poll {lp_late:?}, per-job SSE {ev_late:?}, \
         change stream {st_late:?}"
    );
    for (channel, v, late) in [
        ("long-poll", &lp, lp_late),
        ("per-job SSE", &ev, ev_late),
        ("change stream", &st, st_late),
    ] {
        assert_eq!(v["result"], "error", "{channel}: {v}");
        assert!(late < PROMPT, "{channel} learned it {late:?} after its end");
    }
    // A plain read agrees, on both replicas, and the end was logged once (by one replica).
    for server in [&a, &b] {
        let v = crate::common::status_json(server, &id).await;
        assert_eq!(v["result"], "error");
        assert_eq!(v["completed_at"], lp["completed_at"]);
    }
    let finished =
        |s: &RunningServer| sample(s, "sim_jobs_finished_total{outcome=\"error\"}").unwrap_or(0.0);
    assert_eq!(
        finished(&a) + finished(&b),
        1.0,
        "ended once, by one replica"
    );
}

#[tokio::test]
async fn a_stream_resumes_on_the_other_replica_from_its_cursor_without_loss() {
    let redis = redis(Persistence::None).await;
    let (a, b) = (replica(&redis, |_| {}).await, replica(&redis, |_| {}).await);
    let http = client();
    let mut on_a = SseReader::new(http.get(a.url("/v1/events")).send().await.unwrap());
    on_a.until("snapshot_end", Duration::from_secs(5)).await;
    let first = create(&a, json!({"duration_ms": 0})).await;
    // Read on A until the first job's end: that event's id is the cursor to resume from.
    let mut cursor = String::new();
    while cursor.is_empty() {
        let ev = on_a.next(Duration::from_secs(5)).await.expect("an event");
        if ev.name == "status" && ev.data["id"] == first.as_str() && ev.data["result"] != "pending"
        {
            cursor = ev.id.clone().expect("a status event has an id");
        }
    }
    drop(on_a);
    // Meanwhile, on both replicas: created, ended, canceled.
    let later = [
        create(&a, json!({"duration_ms": 0, "outcome": "error"})).await,
        create(&b, json!({"duration_ms": 0})).await,
        create(&b, json!({"duration_ms": 60_000})).await,
    ];
    let r = http
        .post(a.url(&format!("/v1/jobs/{}/cancel", later[2])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut on_b = SseReader::new(
        http.get(b.url("/v1/events"))
            .header("last-event-id", &cursor)
            .send()
            .await
            .unwrap(),
    );
    // Exactly the changes after the cursor, in order, each once: no snapshot, no reset.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut last = crate::common::offset(&cursor);
    while seen.len() < 6 {
        let ev = on_b.next(Duration::from_secs(5)).await.unwrap_or_else(|| {
            panic!("only {seen:?} after {cursor}");
        });
        assert_eq!(ev.name, "status", "{ev:?}");
        let at = crate::common::offset(ev.id.as_deref().unwrap());
        assert!(at > last, "in order: {at} after {last}");
        last = at;
        seen.push((
            ev.data["id"].as_str().unwrap().to_owned(),
            ev.data["result"].as_str().unwrap().to_owned(),
        ));
    }
    let want = |i: usize, result: &str| (later[i].clone(), result.to_owned());
    for expected in [
        want(0, "pending"),
        want(0, "error"),
        want(1, "pending"),
        want(1, "completed"),
        want(2, "pending"),
        want(2, "canceled"),
    ] {
        assert_eq!(
            seen.iter().filter(|s| **s == expected).count(),
            1,
            "{expected:?} once in {seen:?}"
        );
    }
    assert!(seen.iter().all(|(id, _)| *id != first), "{seen:?}");
}

#[tokio::test]
async fn a_replica_killed_mid_run_loses_no_job() {
    let redis = redis(Persistence::None).await;
    let (a, b) = (replica(&redis, |_| {}).await, replica(&redis, |_| {}).await);
    let mut jobs = Vec::new();
    for i in 0..20u64 {
        let outcome = if i % 3 == 0 { "error" } else { "completed" };
        let body = json!({"duration_ms": 1500 + i * 40, "outcome": outcome});
        jobs.push((create(&a, body).await, outcome));
    }
    // A goes away (its finisher too) before any of its jobs ends.
    drop(a);
    let http = client();
    let waits = jobs.iter().map(|(id, outcome)| {
        let (http, url) = (http.clone(), b.url(&format!("/v1/jobs/{id}/status")));
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let v: Value = http
                    .get(&url)
                    .header("prefer", "wait=5")
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if v["result"] != "pending" {
                    assert_eq!(v["result"], *outcome, "{v}");
                    return late(&v);
                }
                assert!(tokio::time::Instant::now() < deadline, "still pending: {v}");
            }
        }
    });
    let lates = futures_util::future::join_all(waits).await;
    let worst = lates.iter().max().copied().unwrap_or_default();
    println!("20 jobs of a killed replica ended on the other, the latest {worst:?} late");
    assert!(worst < PROMPT, "{lates:?}");
}

#[tokio::test]
async fn redis_restarted_mid_run_means_503_meanwhile_and_the_right_outcomes_after() {
    let mut redis = redis(Persistence::Aof).await;
    let (a, b) = (replica(&redis, |_| {}).await, replica(&redis, |_| {}).await);
    let mut jobs = Vec::new();
    for i in 0..10u64 {
        let outcome = if i % 2 == 0 { "error" } else { "completed" };
        let server = if i % 2 == 0 { &a } else { &b };
        let body = json!({"duration_ms": 1200 + i * 100, "outcome": outcome});
        jobs.push((create(server, body).await, outcome));
    }
    let http = client();
    // A long-poll held on B across the outage.
    let held = tokio::spawn({
        let url = b.url(&format!("/v1/jobs/{}/status", jobs[9].0));
        let http = http.clone();
        async move {
            let r = http
                .get(url)
                .header("prefer", "wait=15")
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.stop().await;
    // Every request now gets 503 with Retry-After, never a wrong status.
    for server in [&a, &b] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let r = loop {
            let r = http
                .get(server.url(&format!("/v1/jobs/{}/status", jobs[0].0)))
                .send()
                .await
                .unwrap();
            if r.status() == 503 || tokio::time::Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(error_code(r).await, "store_unavailable");
        let r = http
            .post(server.url("/v1/jobs"))
            .json(&json!({"duration_ms": 10}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
    }
    // Down past the jobs' ends; then back, with what it had.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart().await.unwrap();
    for (id, outcome) in &jobs {
        for server in [&a, &b] {
            let url = server.url(&format!("/v1/jobs/{id}/status"));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            let v = loop {
                let r = http.get(&url).send().await.unwrap();
                if r.status() == 200 {
                    let v: Value = r.json().await.unwrap();
                    if v["result"] != "pending" {
                        break v;
                    }
                } else {
                    assert_eq!(r.status(), 503, "only 503 while Redis is back on its feet");
                }
                assert!(tokio::time::Instant::now() < deadline, "{id} never ended");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(v["result"], *outcome, "{v}");
        }
    }
    let (status, body) = held.await.unwrap();
    assert!(
        status == 503 || body.contains(&format!("\"result\":\"{}\"", jobs[9].1)),
        "the held long-poll answered {status} {body}"
    );
    for server in [&a, &b] {
        assert!(sample(server, "sim_store_reconnects_total").unwrap_or(0.0) >= 1.0);
        assert_eq!(sample(server, "sim_store_up"), Some(1.0));
    }
}

#[tokio::test]
async fn limits_keys_and_faults_hold_across_replicas() {
    let redis = redis(Persistence::None).await;
    let tweak = |s: &mut Settings| {
        s.rate_limit.enabled = true;
        // Nothing refills within the test: 7 requests in all, for both replicas together.
        s.rate_limit.rps = 0.01;
        s.rate_limit.burst = 7;
        s.heygen.max_concurrent_jobs = 2;
    };
    let (a, b) = (replica(&redis, tweak).await, replica(&redis, tweak).await);
    let http = client();
    let heygen = |n: u32| {
        json!({"video_url": "https://example.com/v.mp4", "output_language": format!("l{n}"),
               "duration_ms": 60_000})
    };
    // HeyGen's running jobs: two on A fill the client's share; the third, on B, is refused.
    for (server, n) in [(&a, 1), (&a, 2)] {
        let r = http
            .post(server.url("/v2/video_translate"))
            .json(&heygen(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(b.url("/v2/video_translate"))
        .json(&heygen(3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // An Idempotency-Key used on A is replayed on B.
    let keyed = |server: &RunningServer| {
        http.post(server.url("/v1/jobs"))
            .header("idempotency-key", "k-1")
            .json(&json!({"duration_ms": 100}))
            .send()
    };
    let first = keyed(&a).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = keyed(&b).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    // The rate limit is one bucket for both: 7 requests in all (5 spent), then 429 on either.
    let mut codes = Vec::new();
    for server in [&a, &b, &a, &b] {
        codes.push(
            http.get(server.url("/status"))
                .send()
                .await
                .unwrap()
                .status(),
        );
    }
    let allowed: Vec<u16> = codes.iter().map(|c| c.as_u16()).collect();
    assert_eq!(allowed, [200, 200, 429, 429]);
    // Faults set on A apply on B.
    let r = http
        .put(a.url("/admin/faults"))
        .bearer_auth("admin")
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.state().faults().error_rate != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "faults never reached B"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = http.get(b.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "operations are never faulted");
}

#[tokio::test]
async fn a_watch_set_made_on_one_replica_is_streamed_on_the_other() {
    let redis = redis(Persistence::None).await;
    let (a, b) = (replica(&redis, |_| {}).await, replica(&redis, |_| {}).await);
    let http = client();
    let job = create(&a, json!({"duration_ms": 500})).await;
    let r = http
        .post(a.url("/v1/watches"))
        .json(&json!({"jobs": [job, "j-unknown"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let set: Value = r.json().await.unwrap();
    assert_eq!(set["size"], 1);
    assert_eq!(set["not_found"], json!(["j-unknown"]));
    let watch = set["id"].as_str().unwrap();
    let r = http
        .get(b.url(&format!("/v1/watches/{watch}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut on_b = SseReader::new(
        http.get(b.url(&format!("/v1/events?watch={watch}")))
            .header("last-event-id", set["cursor"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    );
    // A resume greets with a bookmark when it has nothing yet; the job's end follows.
    let ev = on_b
        .next_change(Duration::from_secs(5))
        .await
        .expect("its end");
    assert_eq!((ev.name.as_str(), &ev.data["id"]), ("status", &json!(job)));
    assert_eq!(ev.data["result"], "completed");
    // Deleted on A: the stream on B ends with its final bookmark.
    let r = http
        .delete(a.url(&format!("/v1/watches/{watch}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let end = on_b.until("bookmark", Duration::from_secs(5)).await;
    assert_eq!(end.last().unwrap().data["end"], "watch_deleted");
}
