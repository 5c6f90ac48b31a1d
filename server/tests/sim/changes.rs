//! `GET /v1/changes`: the change stream's long-poll fallback.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use translation_sim::RunningServer;

use crate::common::{client_from, error_code, offset, sample, spawn_with};
use crate::watches::create_as;

async fn changes(
    server: &RunningServer,
    from: &str,
    query: &str,
    wait: Option<u64>,
) -> reqwest::Response {
    let mut r = client_from(from).get(server.url(&format!("/v1/changes{query}")));
    if let Some(wait) = wait {
        r = r.header("prefer", format!("wait={wait}"));
    }
    r.send().await.unwrap()
}

async fn head(server: &RunningServer, from: &str) -> String {
    let r = changes(server, from, "", Some(5)).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("preference-applied").is_none(),
        "no cursor, no hold"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["reset"], &v["changes"], &v["more"]),
        (&json!(false), &json!([]), &json!(false))
    );
    v["cursor"].as_str().unwrap().to_owned()
}

/// `(event, job id, result)` of each change in an answer.
fn listed(v: &Value) -> Vec<(String, String, String)> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["event"].as_str().unwrap().to_owned(),
                c["data"]["id"].as_str().unwrap().to_owned(),
                c["data"]["result"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_long_poll_holds_until_a_change_it_follows_and_answers_it() {
    // No other change (the legacy job's end) may move the answer's cursor meanwhile.
    let server = spawn_with(|s| s.legacy.delay = Duration::from_secs(3600)).await;
    let me = "127.0.0.2";
    let start = head(&server, me).await;
    let before_creation = Instant::now();
    // Long enough that the first read sees only its creation, on a loaded machine too.
    let job = create_as(
        &server,
        me,
        json!({"duration_ms": 2000, "outcome": "error"}),
    )
    .await;
    // The creation is a change: answered at once.
    let r = changes(&server, me, &format!("?since={start}"), Some(10)).await;
    assert_eq!(r.headers()["preference-applied"], "wait=10");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        listed(&v),
        [("status".into(), job.clone(), "pending".into())]
    );
    let created = v["changes"][0]["cursor"].as_str().unwrap().to_owned();
    assert_eq!(v["cursor"], created.as_str());
    assert!(offset(&created) > offset(&start));

    // Then held until the job ends.
    let asked = Instant::now();
    let r = changes(&server, me, &format!("?since={created}"), Some(10)).await;
    let took = asked.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["preference-applied"], "wait=10");
    let v: Value = r.json().await.unwrap();
    assert_eq!(listed(&v), [("status".into(), job.clone(), "error".into())]);
    assert_eq!(
        v["changes"][0]["data"]["error"]["code"],
        "translation_failed"
    );
    // Held until the job ended, 2 s after its creation (which came after
    // `before_creation`), however long the requests before took.
    let since_creation = before_creation.elapsed();
    assert!(
        since_creation >= Duration::from_millis(1990),
        "held until the end: {since_creation:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "woken by the change, not the wait: {took:?}"
    );
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_changes_longpolls_total{outcome=\"changes\"}"),
        Some(2.0)
    );
    assert!(
        sample(
            &text,
            "sim_detection_delay_seconds_count{channel=\"changes\"}"
        )
        .is_some()
    );
}

#[tokio::test]
async fn a_long_poll_that_sees_nothing_it_follows_answers_after_its_wait_past_the_rest() {
    let server = spawn_with(|s| {
        s.longpoll.max_wait = Duration::from_secs(1);
        s.legacy.delay = Duration::from_secs(3600);
    })
    .await;
    let me = "127.0.0.2";
    let start = head(&server, me).await;
    let poll = tokio::spawn({
        let url = server.url(&format!("/v1/changes?since={start}"));
        async move {
            let asked = Instant::now();
            let r = client_from(me)
                .get(url)
                .header("prefer", "wait=30")
                .send()
                .await
                .unwrap();
            (
                asked.elapsed(),
                r.headers()["preference-applied"].clone(),
                r.json::<Value>().await.unwrap(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let theirs = create_as(&server, "127.0.0.3", json!({"duration_ms": 0})).await;
    let (took, applied, v) = poll.await.unwrap();
    assert_eq!(applied, "wait=1", "capped by longpoll.max_wait");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert_eq!(v["changes"], json!([]));
    assert!(!v.to_string().contains(&theirs));
    assert!(
        offset(v["cursor"].as_str().unwrap()) > offset(&start),
        "moved past theirs: {v}"
    );
    let text = server.state().render_metrics();
    assert!(sample(&text, "sim_changes_longpolls_total{outcome=\"empty\"}").unwrap() >= 2.0);
}

#[tokio::test]
async fn a_cursor_the_log_cannot_continue_gets_a_reset_at_once() {
    let server = spawn_with(|s| {
        s.changes.history = 2;
        s.legacy.delay = Duration::from_secs(3600);
    })
    .await;
    let me = "127.0.0.2";
    for _ in 0..3 {
        create_as(&server, me, json!({"duration_ms": 60_000})).await;
    }
    let now = head(&server, me).await;
    let (epoch, _) = now.split_once(':').unwrap();
    let epoch: u64 = epoch.parse().unwrap();
    for (stale, reason) in [
        (format!("{epoch}:1"), "history"),
        (format!("{}:1", epoch + 1), "epoch"),
    ] {
        let asked = Instant::now();
        let v: Value = changes(&server, me, &format!("?since={stale}"), Some(10))
            .await
            .json()
            .await
            .unwrap();
        assert!(asked.elapsed() < Duration::from_secs(5), "not held");
        assert_eq!(
            (&v["reset"], &v["reason"]),
            (&json!(true), &json!(reason)),
            "{v}"
        );
        assert_eq!(v["cursor"], now.as_str());
        assert_eq!(v["changes"], json!([]));
    }
    let text = server.state().render_metrics();
    assert_eq!(
        sample(&text, "sim_change_resets_total{channel=\"changes\"}"),
        Some(2.0)
    );
    for query in ["?since=", "?since=zz", "?since=1:2:3", "?since=%FF"] {
        let r = changes(&server, me, query, None).await;
        if query == "?since=" {
            assert_eq!(r.status(), 200, "empty is no cursor");
            continue;
        }
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(error_code(r).await, "invalid_cursor", "{query}");
    }
}

#[tokio::test]
async fn answers_are_bounded_and_say_when_there_is_more() {
    let server = spawn_with(|s| s.changes.max_batch = 2).await;
    let me = "127.0.0.2";
    let mut cursor = head(&server, me).await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(create_as(&server, me, json!({"duration_ms": 60_000})).await);
    }
    let mut seen = Vec::new();
    loop {
        let v: Value = changes(&server, me, &format!("?since={cursor}"), None)
            .await
            .json()
            .await
            .unwrap();
        let got = listed(&v);
        assert!(got.len() <= 2, "{v}");
        seen.extend(got.into_iter().map(|(_, id, _)| id));
        cursor = v["cursor"].as_str().unwrap().to_owned();
        if v["more"] == json!(false) {
            break;
        }
    }
    assert_eq!(seen, jobs, "each once, in order");
}

#[tokio::test]
async fn a_long_poll_on_a_watch_set_sees_its_jobs_only_and_waiters_are_capped() {
    let server = spawn_with(|s| s.longpoll.max_waiters = 1).await;
    let me = "127.0.0.2";
    let watched = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let other = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let set: Value = client_from(me)
        .post(server.url("/v1/watches"))
        .json(&json!({"jobs": [watched]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, cursor) = (set["id"].as_str().unwrap(), set["cursor"].as_str().unwrap());
    for job in [&other, &watched] {
        let r = client_from(me)
            .post(server.url(&format!("/v1/jobs/{job}/cancel")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let v: Value = changes(&server, me, &format!("?watch={id}&since={cursor}"), Some(5))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed(&v),
        [("status".into(), watched.clone(), "canceled".into())]
    );

    // One waiter at most: a second is answered at once, without Preference-Applied.
    let cursor = v["cursor"].as_str().unwrap().to_owned();
    let url = server.url(&format!("/v1/changes?watch={id}&since={cursor}"));
    let first = tokio::spawn({
        let url = url.clone();
        async move {
            client_from(me)
                .get(url)
                .header("prefer", "wait=2")
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    let r = changes(&server, me, &format!("?watch={id}&since={cursor}"), Some(2)).await;
    assert!(asked.elapsed() < Duration::from_millis(1500));
    assert!(r.headers().get("preference-applied").is_none());
    assert_eq!(
        first.await.unwrap().headers()["preference-applied"],
        "wait=2"
    );
    let r = changes(&server, "127.0.0.3", &format!("?watch={id}"), None).await;
    assert_eq!(r.status(), 404, "another client's set");
}
