//! `GET /v1/events`: the multiplexed change stream.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use translation_sim::RunningServer;

use crate::common::{Ev, SseReader, client_from, error_code, offset, sample, spawn_with};
use crate::watches::create_as;

const LONG: Duration = Duration::from_secs(10);

async fn open(server: &RunningServer, from: &str, query: &str, last: Option<&str>) -> SseReader {
    let mut r = client_from(from).get(server.url(&format!("/v1/events{query}")));
    if let Some(last) = last {
        r = r.header("last-event-id", last);
    }
    SseReader::new(r.send().await.unwrap())
}

fn names(evs: &[Ev]) -> Vec<&str> {
    evs.iter().map(|e| e.name.as_str()).collect()
}

/// The id and result of a `snapshot` or `status` event.
fn job_of(ev: &Ev) -> (String, String) {
    (
        ev.data["id"].as_str().unwrap().to_owned(),
        ev.data["result"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_snapshot_then_its_marker_then_every_change_in_order() {
    let server = spawn_with(|_| {}).await;
    let me = "127.0.0.2";
    let done = create_as(&server, me, json!({"duration_ms": 0, "outcome": "error"})).await;
    let soon = create_as(&server, me, json!({"duration_ms": 400})).await;
    let later = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let mut stream = open(&server, me, "", None).await;
    let head = stream.until("snapshot_end", LONG).await;
    let (snapshot, end) = head.split_at(head.len() - 1);
    assert!(
        snapshot
            .iter()
            .all(|e| e.name == "snapshot" && e.id.is_none()),
        "{head:#?}"
    );
    let seen: HashMap<_, _> = snapshot.iter().map(job_of).collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[&done], "error");
    assert_eq!(seen[&later], "pending");
    let end = &end[0];
    let at = end.id.clone().unwrap();
    assert_eq!(end.data, json!({"cursor": at, "jobs": 3}));

    // Then the changes, each with a cursor after the snapshot's and after the one before.
    let mut last = offset(&at);
    let mut expect_change = |ev: &Ev| {
        assert_eq!(ev.name, "status", "{ev:?}");
        let o = offset(ev.id.as_deref().unwrap());
        assert!(o > last, "{o} after {last}");
        last = o;
        job_of(ev)
    };
    if seen[&soon] == "pending" {
        let ev = stream.next(LONG).await.unwrap();
        assert_eq!(expect_change(&ev), (soon.clone(), "completed".into()));
    }
    let r = client_from(me)
        .post(server.url(&format!("/v1/jobs/{later}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ev = stream.next(LONG).await.unwrap();
    assert_eq!(expect_change(&ev), (later.clone(), "canceled".into()));
    assert!(ev.data["completed_at"].is_string(), "{ev:?}");
    let created = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let ev = stream.next(LONG).await.unwrap();
    assert_eq!(expect_change(&ev), (created, "pending".into()));
    assert_eq!(ev.data["progress"], 0.0);
    let text = server.state().render_metrics();
    assert_eq!(sample(&text, "sim_change_streams"), Some(1.0));
    assert!(
        sample(
            &text,
            "sim_status_responses_total{channel=\"stream\",result=\"canceled\"}"
        )
        .is_some()
    );
}

/// Jobs ending at spread instants, outcomes mixed: `(id, true outcome)`.
async fn spread_jobs(server: &RunningServer, from: &str, n: usize) -> HashMap<String, String> {
    let mut truth = HashMap::new();
    for i in 0..n {
        let outcome = if i % 3 == 0 { "error" } else { "completed" };
        let ms = 100 + 60 * i as u64;
        let id = create_as(server, from, json!({"duration_ms": ms, "outcome": outcome})).await;
        truth.insert(id, outcome.to_owned());
    }
    truth
}

/// Terminal results reported, per job, from a list of events.
fn terminal_reports(evs: &[Ev], into: &mut HashMap<String, Vec<String>>) {
    for ev in evs
        .iter()
        .filter(|e| e.name == "snapshot" || e.name == "status")
    {
        let (id, result) = job_of(ev);
        if result != "pending" {
            into.entry(id).or_default().push(result);
        }
    }
}

#[tokio::test]
async fn a_resumed_stream_loses_nothing_and_repeats_nothing() {
    let server = spawn_with(|_| {}).await;
    let me = "127.0.0.2";
    let truth = spread_jobs(&server, me, 24).await;
    let mut reports = HashMap::new();

    let mut first = open(&server, me, "", None).await;
    let mut evs = first.until("snapshot_end", LONG).await;
    // Read until a few jobs have ended, then drop the connection mid-run.
    while terminal_count(&evs) < 6 {
        evs.push(first.next(LONG).await.expect("changes keep coming"));
    }
    drop(first);
    terminal_reports(&evs, &mut reports);
    let last = evs.iter().rev().find_map(|e| e.id.clone()).unwrap();
    // Away for a while: jobs end meanwhile.
    tokio::time::sleep(Duration::from_millis(400)).await;

    let mut second = open(&server, me, "", Some(&last)).await;
    let mut evs = Vec::new();
    while terminal_count_in(&reports, &evs) < truth.len() {
        let ev = second.next(LONG).await.expect("every job ends");
        assert!(
            !["reset", "snapshot", "snapshot_end"].contains(&ev.name.as_str()),
            "{ev:?}"
        );
        evs.push(ev);
    }
    terminal_reports(&evs, &mut reports);
    for (id, outcome) in &truth {
        assert_eq!(
            reports.get(id),
            Some(&vec![outcome.clone()]),
            "{id}: once, as it ended"
        );
    }
    assert_eq!(reports.len(), truth.len());
    let text = server.state().render_metrics();
    assert_eq!(sample(&text, "sim_change_stream_resumes_total"), Some(1.0));
}

fn terminal_count(evs: &[Ev]) -> usize {
    let mut m = HashMap::new();
    terminal_reports(evs, &mut m);
    m.len()
}

fn terminal_count_in(before: &HashMap<String, Vec<String>>, evs: &[Ev]) -> usize {
    let mut m = before.clone();
    terminal_reports(evs, &mut m);
    m.len()
}

#[tokio::test]
async fn a_cursor_the_log_cannot_continue_gets_a_reset_then_a_snapshot() {
    let server = spawn_with(|s| s.changes.history = 3).await;
    let me = "127.0.0.2";
    for _ in 0..4 {
        create_as(&server, me, json!({"duration_ms": 60_000})).await;
    }
    let mut stream = open(&server, me, "", None).await;
    let head = stream.until("snapshot_end", LONG).await;
    let at = head.last().unwrap().id.clone().unwrap();
    drop(stream);
    let (epoch, _) = at.split_once(':').unwrap();
    let epoch: u64 = epoch.parse().unwrap();
    let cases = [
        (format!("{epoch}:1"), "history"),
        (format!("{}:2", epoch + 1), "epoch"),
        (format!("{epoch}:99999"), "history"),
    ];
    for (stale, reason) in cases {
        let mut stream = open(&server, me, &format!("?since={stale}"), None).await;
        let evs = stream.until("snapshot_end", LONG).await;
        assert_eq!(evs[0].name, "reset", "{stale}: {evs:#?}");
        assert_eq!(evs[0].data["reason"], reason, "{stale}");
        assert!(evs[0].id.is_none(), "a reset moves no cursor");
        assert_eq!(
            names(&evs[1..evs.len() - 1]),
            vec!["snapshot"; 4],
            "{stale}"
        );
    }
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_change_resets_total{channel=\"stream\"}"),
        Some(3.0)
    );
    // The cursor at the head resumes, from `since` or from Last-Event-ID (which wins).
    // Nothing new: no reset, just a bookmark at once at that cursor (the first event of
    // every connection comes without delay), then quiet.
    let mut stream = open(&server, me, &format!("?since={epoch}:1"), Some(&at)).await;
    let ev = stream
        .next(Duration::from_secs(5))
        .await
        .expect("a greeting");
    assert_eq!(ev.name, "bookmark", "{ev:?}");
    // At that cursor, or past changes this stream does not follow.
    let id = ev.id.clone().unwrap();
    assert!(id.starts_with(&format!("{epoch}:")), "{ev:?}");
    assert!(offset(&id) >= offset(&at), "{ev:?} at {at}");
    let ev = stream.next(Duration::from_millis(300)).await;
    assert!(ev.is_none(), "nothing new, no reset: {ev:?}");
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_change_bookmarks_total{kind=\"resume\"}"),
        Some(1.0)
    );

    // Text that is not a cursor is refused.
    for (query, last) in [
        ("?since=abc", None),
        ("?since=1:2:3", None),
        ("", Some("1:-2")),
        ("?since=1:2", Some("x")),
    ] {
        let mut r = client_from(me).get(server.url(&format!("/v1/events{query}")));
        if let Some(last) = last {
            r = r.header("last-event-id", last);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 400, "{query} {last:?}");
        assert_eq!(error_code(r).await, "invalid_cursor");
    }
}

#[tokio::test]
async fn an_idle_stream_sends_bookmarks_that_move_past_what_it_does_not_follow() {
    let server = spawn_with(|s| {
        s.changes.bookmark_interval = Duration::from_millis(150);
        // Nothing else changes meanwhile, but what the test makes.
        s.legacy.delay = Duration::from_secs(3600);
    })
    .await;
    let me = "127.0.0.2";
    create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let mut stream = open(&server, me, "", None).await;
    let head = stream.until("snapshot_end", LONG).await;
    let at = head.last().unwrap().id.clone().unwrap();
    let first = stream.next(LONG).await.unwrap();
    assert_eq!(
        (first.name.as_str(), first.id.as_deref()),
        ("bookmark", Some(at.as_str()))
    );
    assert_eq!(first.data, json!({"cursor": at}));
    // Another client's jobs change the log: the next bookmark is past them, and says nothing
    // about them.
    let theirs = create_as(&server, "127.0.0.3", json!({"duration_ms": 0})).await;
    let mut later = stream.next(LONG).await.unwrap();
    while later.name == "bookmark" && later.id.as_deref() == Some(at.as_str()) {
        later = stream.next(LONG).await.unwrap();
    }
    assert_eq!(later.name, "bookmark", "{later:?}");
    assert!(offset(later.id.as_deref().unwrap()) > offset(&at));
    assert!(!later.data.to_string().contains(&theirs));
    let text = server.state().render_metrics();
    assert!(sample(&text, "sim_change_bookmarks_total{kind=\"idle\"}").unwrap() >= 2.0);
}

#[tokio::test]
async fn a_stream_ends_after_its_lifetime_with_a_cursor_to_resume_from() {
    let server = spawn_with(|s| {
        s.changes.max_lifetime = Duration::from_millis(400);
        s.changes.lifetime_jitter = 0.0;
    })
    .await;
    let me = "127.0.0.2";
    let job = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let started = std::time::Instant::now();
    let mut stream = open(&server, me, "", None).await;
    let evs = stream.until("bookmark", LONG).await;
    let last = evs.last().unwrap();
    assert_eq!(last.data["end"], "lifetime", "{evs:#?}");
    assert!(
        stream.next(LONG).await.is_none() && stream.ended,
        "then the stream ends"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    // Resuming from the final bookmark: no snapshot, just what happened since.
    let cursor = last.id.clone().unwrap();
    let r = client_from(me)
        .post(server.url(&format!("/v1/jobs/{job}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut again = open(&server, me, "", Some(&cursor)).await;
    let ev = again.next(LONG).await.unwrap();
    assert_eq!(
        (ev.name.as_str(), job_of(&ev)),
        ("status", (job, "canceled".into()))
    );
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_change_bookmarks_total{kind=\"final\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn another_clients_jobs_never_appear() {
    let server = spawn_with(|_| {}).await;
    let (me, other) = ("127.0.0.2", "127.0.0.3");
    let mine = create_as(&server, me, json!({"duration_ms": 300})).await;
    let theirs = create_as(&server, other, json!({"duration_ms": 300})).await;
    let mut stream = open(&server, me, "", None).await;
    let mut evs = stream.until("snapshot_end", LONG).await;
    let more = create_as(&server, other, json!({"duration_ms": 0})).await;
    while !evs
        .iter()
        .any(|e| e.name == "status" && job_of(e) == (mine.clone(), "completed".into()))
    {
        evs.push(stream.next(LONG).await.expect("my job ends"));
    }
    // Give theirs time to end and be logged too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some(ev) = stream.next(Duration::from_millis(200)).await {
        evs.push(ev);
    }
    let text = format!("{evs:?}");
    assert!(text.contains(&mine));
    assert!(!text.contains(&theirs) && !text.contains(&more), "{text}");
    // Nor the operator's jobs (the legacy job), unless named in a watch set.
    assert!(!text.contains("\"legacy\""), "{text}");
}

#[tokio::test]
async fn a_stream_on_a_watch_set_follows_the_set_as_it_changes() {
    // The legacy job is watched: it must not end while the test runs, however slowly.
    let server = spawn_with(|s| s.legacy.delay = Duration::from_secs(3600)).await;
    let me = "127.0.0.2";
    let a = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let b = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let c = client_from(me);
    let set: Value = c
        .post(server.url("/v1/watches"))
        .json(&json!({"jobs": [a, "legacy"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = set["id"].as_str().unwrap();
    let mut stream = open(&server, me, &format!("?watch={id}"), None).await;
    let head = stream.until("snapshot_end", LONG).await;
    let mut snap: Vec<String> = head[..head.len() - 1].iter().map(|e| job_of(e).0).collect();
    snap.sort();
    let mut want = vec![a.clone(), "legacy".to_owned()];
    want.sort();
    assert_eq!(snap, want);
    // `b` is not in the set: its cancel is not reported. Then it is added, and its next
    // change is.
    let cancel = |job: String| {
        let c = c.clone();
        let url = server.url(&format!("/v1/jobs/{job}/cancel"));
        async move { assert_eq!(c.post(url).send().await.unwrap().status(), 200) }
    };
    let d = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    cancel(b.clone()).await;
    let r = c
        .patch(server.url(&format!("/v1/watches/{id}")))
        .json(&json!({"add": [d], "remove": [a]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    cancel(a.clone()).await;
    cancel(d.clone()).await;
    let ev = stream.next(LONG).await.unwrap();
    assert_eq!(job_of(&ev), (d.clone(), "canceled".into()), "{ev:?}");
    // Deleting the set ends the stream, with a final bookmark.
    let r = c
        .delete(server.url(&format!("/v1/watches/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let ev = stream.next(LONG).await.unwrap();
    assert_eq!(
        (ev.name.as_str(), &ev.data["end"]),
        ("bookmark", &json!("watch_deleted"))
    );
    assert!(stream.next(LONG).await.is_none() && stream.ended);
    let r = client_from(me)
        .get(server.url(&format!("/v1/events?watch={id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn streams_are_bounded_per_client_and_in_all() {
    let server = spawn_with(|s| {
        s.changes.max_streams = 2;
        s.changes.max_streams_per_client = 1;
    })
    .await;
    let first = open(&server, "127.0.0.2", "", None).await;
    let refused = client_from("127.0.0.2")
        .get(server.url("/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(error_code(refused).await, "too_many_streams");
    let _second = open(&server, "127.0.0.3", "", None).await;
    let refused = client_from("127.0.0.4")
        .get(server.url("/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(error_code(refused).await, "too_many_streams");
    // A client that leaves gives its slot back.
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        let r = client_from("127.0.0.2")
            .get(server.url("/v1/events"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "the slot came back");

    let off = spawn_with(|s| s.changes.enabled = false).await;
    let r = client_from("127.0.0.2")
        .get(off.url("/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn shutdown_ends_a_stream_with_a_final_bookmark() {
    let server = spawn_with(|_| {}).await;
    let mut stream = open(&server, "127.0.0.2", "", None).await;
    stream.until("snapshot_end", LONG).await;
    let reader = tokio::spawn(async move {
        let evs = stream.until("bookmark", LONG).await;
        (evs, stream.next(LONG).await.is_none() && stream.ended)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(LONG, server.shutdown())
        .await
        .expect("shutdown is prompt");
    let (evs, ended) = reader.await.unwrap();
    assert_eq!(evs.last().unwrap().data["end"], "shutdown");
    assert!(ended);
}

#[tokio::test]
async fn a_job_forgotten_after_its_ttl_is_reported_gone_after_its_end() {
    let server = spawn_with(|s| s.jobs.ttl = Duration::from_millis(300)).await;
    let me = "127.0.0.2";
    let mut stream = open(&server, me, "", None).await;
    stream.until("snapshot_end", LONG).await;
    let job = create_as(&server, me, json!({"duration_ms": 100})).await;
    let evs = stream.until("gone", LONG).await;
    let mine: Vec<(&str, &Value)> = evs
        .iter()
        .filter(|e| e.data["id"] == job.as_str())
        .map(|e| (e.name.as_str(), &e.data))
        .collect();
    assert_eq!(mine.len(), 3, "{evs:#?}");
    assert_eq!(
        (mine[0].0, &mine[0].1["result"]),
        ("status", &json!("pending"))
    );
    assert_eq!(
        (mine[1].0, &mine[1].1["result"]),
        ("status", &json!("completed"))
    );
    assert_eq!(mine[2], ("gone", &json!({"id": job, "reason": "expired"})));
    let r = client_from(me)
        .get(server.url(&format!("/v1/jobs/{job}/status")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "gone means gone");
}

#[tokio::test]
async fn a_reset_of_the_legacy_job_is_reported_to_a_set_that_watches_it() {
    let server = spawn_with(|s| s.legacy.delay = Duration::from_secs(3600)).await;
    let me = "127.0.0.2";
    let c = client_from(me);
    let set: Value = c
        .post(server.url("/v1/watches"))
        .json(&json!({"jobs": ["legacy"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["jobs"][0]["result"], "pending");
    let (id, cursor) = (set["id"].as_str().unwrap(), set["cursor"].as_str().unwrap());
    // Joined at the set's cursor: nothing before it is reported again.
    let mut stream = open(&server, me, &format!("?watch={id}&since={cursor}"), None).await;
    let r = c
        .post(server.url("/v1/reset"))
        .json(&json!({"duration_ms": 0, "outcome": "error"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A resume with nothing new yet greets with a bookmark; the changes follow.
    let first = stream.next_change(LONG).await.unwrap();
    assert_eq!(
        (first.name.as_str(), job_of(&first)),
        ("status", ("legacy".into(), "pending".into()))
    );
    let second = stream.next(LONG).await.unwrap();
    assert_eq!(
        (second.name.as_str(), job_of(&second)),
        ("status", ("legacy".into(), "error".into()))
    );
}
