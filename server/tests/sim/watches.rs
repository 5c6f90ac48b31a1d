//! Watch sets: `POST /v1/watches`, `GET`/`PATCH`/`DELETE /v1/watches/{id}`.

use serde_json::{Value, json};
use translation_sim::{JobSpec, RunningServer};

use crate::common::{client, client_from, create, error_code, spawn, spawn_with};

/// Creates a job as the client `from` (a loopback address of its own).
pub(crate) async fn create_as(server: &RunningServer, from: &str, body: Value) -> String {
    let r = client_from(from)
        .post(server.url("/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn ids_of(v: &Value, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.get("id").unwrap_or(j).as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn a_set_holds_the_clients_own_and_the_operators_jobs_and_reports_the_rest() {
    let server = spawn().await;
    let (me, other) = ("127.0.0.2", "127.0.0.3");
    let done = create_as(&server, me, json!({"duration_ms": 0})).await;
    let pending = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let theirs = create_as(&server, other, json!({"duration_ms": 0})).await;
    let operators = server.state().create_job(JobSpec::default()).unwrap();
    let r = client_from(me)
        .post(server.url("/v1/watches"))
        .json(&json!({"jobs": [done, pending, theirs, operators, "j-nope", done]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/watches/{id}"));
    assert_eq!(v["events_url"], format!("/v1/events?watch={id}"));
    assert_eq!(v["size"], 3);
    assert_eq!(
        ids_of(&v, "jobs"),
        sorted(vec![done.clone(), pending.clone(), operators.clone()])
    );
    assert_eq!(
        ids_of(&v, "not_found"),
        sorted(vec![theirs.clone(), "j-nope".into()]),
        "another client's job is as unknown as an unknown one"
    );
    let (epoch, offset) = v["cursor"].as_str().unwrap().split_once(':').unwrap();
    assert!(
        epoch.parse::<u64>().is_ok() && offset.parse::<u64>().unwrap() >= 4,
        "{v}"
    );
    for job in v["jobs"].as_array().unwrap() {
        let want = if job["id"] == done.as_str() {
            "completed"
        } else {
            "pending"
        };
        assert_eq!(job["result"], want, "{job}");
        assert!(job["created_at"].is_string(), "{job}");
    }

    // Only its creator sees it.
    let url = server.url(&format!("/v1/watches/{id}"));
    let r = client_from(other).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "not_found");
    let r = client_from(other).delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client_from(other)
        .patch(&url)
        .json(&json!({"add": [theirs]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = client_from(me)
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ids_of(&v, "jobs"),
        sorted(vec![done.clone(), pending.clone(), operators.clone()])
    );

    // PATCH adds and removes; DELETE forgets.
    let more = create_as(&server, me, json!({"duration_ms": 60_000})).await;
    let r = client_from(me)
        .patch(&url)
        .json(&json!({"add": [more], "remove": [done, "j-never-there"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["size"], 3);
    assert_eq!(ids_of(&v, "jobs"), vec![more.clone()]);
    let r = client_from(me).delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = client_from(me).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn sizes_and_counts_are_bounded_and_refused_as_documented() {
    let server = spawn_with(|s| {
        s.changes.max_watch_jobs = 2;
        s.changes.max_watch_sets = 3;
        s.changes.max_watch_sets_per_client = 2;
    })
    .await;
    let me = "127.0.0.2";
    let jobs: Vec<String> = {
        let mut jobs = Vec::new();
        for _ in 0..3 {
            jobs.push(create_as(&server, me, json!({"duration_ms": 60_000})).await);
        }
        jobs
    };
    let post = |body: Value| {
        client_from(me)
            .post(server.url("/v1/watches"))
            .json(&body)
            .send()
    };
    let r = post(json!({"jobs": jobs})).await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.headers().get("retry-after").is_none(),
        "retrying cannot help"
    );
    assert_eq!(error_code(r).await, "watch_set_too_large");

    let r = post(json!({"jobs": [jobs[0], jobs[1]]})).await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = server.url(&format!("/v1/watches/{id}"));
    // Over the cap: nothing changes, not even the removal that came with it.
    let r = client_from(me)
        .patch(&url)
        .json(&json!({"add": [jobs[2]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await, "watch_set_too_large");
    let v: Value = client_from(me)
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["size"], 2);
    // Making room in the same request is fine.
    let r = client_from(me)
        .patch(&url)
        .json(&json!({"add": [jobs[2]], "remove": [jobs[0]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Sets per client, then in all.
    assert_eq!(post(json!({})).await.unwrap().status(), 201);
    let r = post(json!({})).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(error_code(r).await, "too_many_watch_sets");
    let r = client_from("127.0.0.3")
        .post(server.url("/v1/watches"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "an empty set, no body");
    let r = client_from("127.0.0.4")
        .post(server.url("/v1/watches"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(error_code(r).await, "watch_sets_full");
    // A deleted set makes room.
    let r = client_from(me).delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(post(json!({})).await.unwrap().status(), 201);
}

#[tokio::test]
async fn bad_bodies_are_refused_as_documented() {
    let server = spawn().await;
    let cases = [
        (json!({"jobs": "j-1"}), 422, "invalid_watch"),
        (json!({"jobs": [1, 2]}), 422, "invalid_watch"),
        (json!({"jobs": [""]}), 422, "invalid_watch"),
        (json!({"jobs": ["j".repeat(65)]}), 422, "invalid_watch"),
        (json!({"add": ["j-1"]}), 422, "invalid_watch"),
    ];
    for (body, status, code) in cases {
        let r = client()
            .post(server.url("/v1/watches"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(error_code(r).await, code, "{body}");
    }
    let r = client()
        .post(server.url("/v1/watches"))
        .body("{\"jobs\": [")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .post(server.url("/v1/watches"))
        .body("jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = client()
        .patch(server.url("/v1/watches/w-nope"))
        .json(&json!({"add": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let off = spawn_with(|s| s.changes.enabled = false).await;
    let id = create(&off, json!({"duration_ms": 0})).await;
    let r = client()
        .post(off.url("/v1/watches"))
        .json(&json!({"jobs": [id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "not_found");
}
