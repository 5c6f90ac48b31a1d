//! Hostile servers: each test runs a small stand-in on 127.0.0.1:0 that misbehaves in one
//! way (an event that never ends, `Retry-After: 0`, an answer that takes ten seconds, a
//! progress in percent), and checks that the client stays bounded in memory, in requests and
//! in time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use translation_sim::{RunningServer, Settings};
use translation_status::GiveUpReason;
use translation_status::jobset::{JobSetOptions, RequestBudget};
use translation_status::poll::Fixed;
use translation_status::{Client, Error, FallbackReason, Mechanism, WaitOptions};

use crate::support::{job, metric, sim};

// ----- A stand-in server: one closure decides what each request gets -----------------------

/// What the stand-in does with one request.
#[derive(Debug, Clone)]
enum Act {
    /// Status, extra headers, JSON body.
    Reply(u16, Vec<(&'static str, String)>, String),
    /// `200 text/event-stream`, then `data:` lines forever, never a blank line (up to
    /// [`FLOOD_CAP`] bytes, then the server closes).
    Flood,
    /// Answers this long after the request arrived.
    Late(Duration, Box<Act>),
}

fn reply(status: u16, body: &str) -> Act {
    Act::Reply(status, Vec::new(), body.to_owned())
}

/// The most a flood writes before the stand-in gives up on the client closing it.
const FLOOD_CAP: u64 = 32 << 20;

/// One flooded event stream, as the server saw it.
#[derive(Debug, Clone, Copy)]
struct Flooded {
    /// Bytes written before the connection ended.
    bytes: u64,
    /// Whether the client closed it (a failed write) rather than the server at its cap.
    closed_by_client: bool,
}

#[derive(Default)]
struct Log {
    /// Path of every request, in arrival order.
    paths: Vec<String>,
    floods: Vec<Flooded>,
}

struct StandIn {
    base: String,
    log: Arc<Mutex<Log>>,
}

impl StandIn {
    fn requests(&self) -> usize {
        self.log.lock().unwrap().paths.len()
    }

    fn requests_to(&self, fragment: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.paths.iter().filter(|p| p.contains(fragment)).count()
    }

    fn floods(&self) -> Vec<Flooded> {
        self.log.lock().unwrap().floods.clone()
    }
}

/// Serves every request with what `decide` says for its path and its number (from 0).
async fn stand_in(decide: impl Fn(&str, usize) -> Act + Send + Sync + 'static) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Log::default()));
    let decide = Arc::new(decide);
    let shared = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (log, decide) = (Arc::clone(&shared), Arc::clone(&decide));
            tokio::spawn(async move { serve(socket, log, decide.as_ref()).await });
        }
    });
    StandIn { base, log }
}

async fn serve(
    mut socket: TcpStream,
    log: Arc<Mutex<Log>>,
    decide: &(dyn Fn(&str, usize) -> Act + Send + Sync),
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let n = {
        let mut log = log.lock().unwrap();
        log.paths.push(path.clone());
        log.paths.len() - 1
    };
    let mut act = decide(&path, n);
    if let Act::Late(after, then) = act {
        tokio::time::sleep(after).await;
        act = *then;
    }
    match act {
        Act::Late(..) => {}
        Act::Reply(status, headers, body) => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&body);
            let _ = socket.write_all(out.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Act::Flood => {
            let flooded = flood(&mut socket).await;
            log.lock().unwrap().floods.push(flooded);
        }
    }
}

async fn flood(socket: &mut TcpStream) -> Flooded {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return Flooded {
            bytes: 0,
            closed_by_client: true,
        };
    }
    // 64-byte lines, 64 KiB at a time: an event that never ends.
    let line = format!("data: {}\n", "x".repeat(57));
    let chunk = line.repeat(1024);
    let mut bytes = 0;
    while bytes < FLOOD_CAP {
        let write =
            tokio::time::timeout(Duration::from_secs(10), socket.write_all(chunk.as_bytes()));
        match write.await {
            Ok(Ok(())) => bytes += chunk.len() as u64,
            Ok(Err(_)) => {
                return Flooded {
                    bytes,
                    closed_by_client: true,
                };
            }
            // Neither reading nor closing: as bad as never closing.
            Err(_) => break,
        }
    }
    Flooded {
        bytes,
        closed_by_client: false,
    }
}

fn client(server: &StandIn) -> Client {
    Client::builder().base_url(&server.base).build().unwrap()
}

// ----- An event that never ends ------------------------------------------------------------

/// The stand-in floods `/events`; `/status` says the job is done.
async fn flooding_server() -> StandIn {
    stand_in(|path, _| {
        if path.ends_with("/events") {
            Act::Flood
        } else {
            reply(200, r#"{"result":"completed"}"#)
        }
    })
    .await
}

/// Every flooded stream was closed by the client, after a bounded number of bytes (the
/// event limit, plus what the two kernels buffer on loopback).
fn assert_floods_cut(server: &StandIn) {
    let floods = server.floods();
    eprintln!("flooded streams: {floods:?}");
    assert!(!floods.is_empty(), "the stream was never opened");
    for flooded in &floods {
        assert!(
            flooded.closed_by_client && flooded.bytes < FLOOD_CAP / 2,
            "the client kept reading an endless event: {floods:?}"
        );
    }
    assert_eq!(
        floods.len(),
        1,
        "an oversized event is not worth reconnecting for: {floods:?}"
    );
}

#[tokio::test]
async fn an_endless_event_ends_the_stream_and_the_wait_polls() {
    let server = flooding_server().await;
    let options = WaitOptions::new()
        .long_poll(false)
        .deadline(Duration::from_secs(30));
    let done = client(&server).wait_with("j1", &options).await.unwrap();
    assert!(
        matches!(done.report.mechanism, Mechanism::Polling(_)),
        "{:?}",
        done.report
    );
    assert_eq!(done.report.fallbacks.len(), 1, "{:?}", done.report);
    assert_eq!(done.report.fallbacks[0].from, Mechanism::Sse);
    assert_eq!(
        done.report.fallbacks[0].reason,
        FallbackReason::StreamBroken
    );
    assert_eq!(server.requests_to("/status"), 1);
    assert_floods_cut(&server);
}

#[tokio::test]
async fn an_endless_event_ends_a_job_sets_stream_and_it_polls() {
    let server = flooding_server().await;
    let mut jobs = client(&server)
        .job_set(
            JobSetOptions::new()
                .long_poll(false)
                .deadline(Duration::from_secs(30)),
        )
        .unwrap();
    jobs.add("j1").unwrap();
    let (_, result) = jobs.next_finished().await.unwrap();
    let done = result.unwrap();
    assert!(
        matches!(done.report.mechanism, Mechanism::Polling(_)),
        "{:?}",
        done.report
    );
    assert_eq!(server.requests_to("/status"), 1);
    assert_floods_cut(&server);
}

// ----- `Retry-After: 0`: every pause has a floor ---------------------------------------------

/// The documented floor under every pause (`poll::MIN_PAUSE`).
const FLOOR: Duration = Duration::from_millis(50);

/// The most requests a wait of `deadline` may send when every answer says "again, at once":
/// one per floor, twice over for slack, plus the event-stream probe and the last look.
fn bound(deadline: Duration, jobs: u32) -> usize {
    let per_job = 2 * deadline.as_millis() / FLOOR.as_millis() + 4;
    per_job as usize * jobs as usize
}

/// A simulator that throttles every request with `Retry-After: 0`.
async fn throttling_sim() -> RunningServer {
    sim(|s: &mut Settings| {
        s.faults.throttle_rate = 1.0;
        s.faults.throttle_retry_after = Duration::ZERO;
    })
    .await
}

fn sim_requests(server: &RunningServer) -> usize {
    metric(
        &server.state().render_metrics(),
        "sim_http_requests_total",
        &[],
    ) as usize
}

fn gave_up_at_deadline(result: Result<translation_status::Completion, Error>) {
    match result {
        Err(Error::GaveUp(g)) => assert_eq!(g.reason, GiveUpReason::Deadline),
        other => panic!("expected GaveUp at the deadline, got {other:?}"),
    }
}

#[tokio::test]
async fn retry_after_zero_from_the_simulator_does_not_spin_a_wait() {
    let server = throttling_sim().await;
    let id = job(&server, 60_000);
    let deadline = Duration::from_secs(3);
    let client = Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    let result = client
        .wait_with(id.as_str(), &WaitOptions::new().deadline(deadline))
        .await;
    let sent = sim_requests(&server);
    eprintln!("simulator, Retry-After 0: {sent} requests in {deadline:?}");
    gave_up_at_deadline(result);
    assert!(
        sent <= bound(deadline, 1),
        "{sent} requests in {deadline:?}"
    );
}

/// A stand-in that refuses every request with `status` and `header: 0`.
async fn refusing(status: u16, header: &'static str) -> StandIn {
    stand_in(move |_, _| {
        Act::Reply(
            status,
            vec![(header, "0".to_owned())],
            r#"{"error":{"code":"busy","message":"again"}}"#.to_owned(),
        )
    })
    .await
}

#[tokio::test]
async fn retry_after_zero_from_a_hostile_server_does_not_spin_a_wait() {
    let deadline = Duration::from_secs(3);
    for (status, header) in [(503, "retry-after"), (429, "retry-after-ms")] {
        let server = refusing(status, header).await;
        let result = client(&server)
            .wait_with("j1", &WaitOptions::new().deadline(deadline))
            .await;
        let sent = server.requests();
        eprintln!("{status} + {header}: 0: {sent} requests in {deadline:?}");
        gave_up_at_deadline(result);
        assert!(
            sent <= bound(deadline, 1),
            "{status} + {header}: 0: {sent} requests in {deadline:?}"
        );
    }
}

#[tokio::test]
async fn retry_after_zero_does_not_spin_a_job_set() {
    let deadline = Duration::from_secs(3);
    let server = throttling_sim().await;
    let jobs_n = 3;
    // A budget far above the floor: the floor, not the budget, is what bounds each job.
    let budget = RequestBudget::new(1000.0, 100);
    let sim_client = Client::builder()
        .base_url(server.base_url())
        .request_budget(budget)
        .build()
        .unwrap();
    let mut jobs = sim_client
        .job_set(JobSetOptions::new().deadline(deadline))
        .unwrap();
    for _ in 0..jobs_n {
        jobs.add(job(&server, 60_000).as_str()).unwrap();
    }
    for _ in 0..jobs_n {
        let (_, result) = jobs.next_finished().await.unwrap();
        gave_up_at_deadline(result);
    }
    let sent = sim_requests(&server);
    eprintln!("job set, simulator, Retry-After 0: {sent} requests in {deadline:?}");
    assert!(sent <= bound(deadline, jobs_n), "{sent} requests");

    for (status, header) in [(503, "retry-after"), (429, "retry-after-ms")] {
        let server = refusing(status, header).await;
        let client = Client::builder()
            .base_url(&server.base)
            .request_budget(budget)
            .build()
            .unwrap();
        let mut jobs = client
            .job_set(JobSetOptions::new().deadline(deadline))
            .unwrap();
        for n in 0..jobs_n {
            jobs.add(format!("j{n}").as_str()).unwrap();
        }
        for _ in 0..jobs_n {
            let (_, result) = jobs.next_finished().await.unwrap();
            gave_up_at_deadline(result);
        }
        let sent = server.requests();
        eprintln!("job set, {status} + {header}: 0: {sent} requests in {deadline:?}");
        assert!(sent <= bound(deadline, jobs_n), "{status}: {sent} requests");
    }
}

/// A stand-in that claims to hold every request (`Preference-Applied: wait=0`) and answers at
/// once that the job is pending.
async fn fake_long_poll() -> StandIn {
    stand_in(|_, _| {
        Act::Reply(
            200,
            vec![("preference-applied", "wait=0".to_owned())],
            r#"{"result":"pending"}"#.to_owned(),
        )
    })
    .await
}

#[tokio::test]
async fn a_hold_that_holds_nothing_does_not_spin_a_wait() {
    let deadline = Duration::from_secs(3);
    let server = fake_long_poll().await;
    let result = client(&server)
        .wait_with("j1", &WaitOptions::new().deadline(deadline))
        .await;
    let sent = server.requests();
    eprintln!("Preference-Applied: wait=0: {sent} requests in {deadline:?}");
    gave_up_at_deadline(result);
    assert!(
        sent <= bound(deadline, 1),
        "{sent} requests in {deadline:?}"
    );
}

#[tokio::test]
async fn a_hold_that_holds_nothing_does_not_spin_a_job_set() {
    let deadline = Duration::from_secs(3);
    let server = fake_long_poll().await;
    // A budget far above the floor: the floor, not the budget, is what bounds one job.
    let client = Client::builder()
        .base_url(&server.base)
        .request_budget(RequestBudget::new(1000.0, 100))
        .build()
        .unwrap();
    // The first look is plain; the next, after the policy's pause, asks for a hold.
    let options = JobSetOptions::new()
        .deadline(deadline)
        .policy(Fixed::new(Duration::from_millis(500)));
    let mut jobs = client.job_set(options).unwrap();
    jobs.add("j1").unwrap();
    let (_, result) = jobs.next_finished().await.unwrap();
    let sent = server.requests();
    eprintln!("job set, Preference-Applied: wait=0: {sent} requests in {deadline:?}");
    gave_up_at_deadline(result);
    assert!(
        sent <= bound(deadline, 1),
        "{sent} requests in {deadline:?}"
    );
}

// ----- A server that takes ten seconds: the deadline is exact ------------------------------

/// Every request (stream or status) is answered after ten seconds.
async fn slow_server() -> StandIn {
    stand_in(|_, _| {
        Act::Late(
            Duration::from_secs(10),
            Box::new(reply(200, r#"{"result":"pending"}"#)),
        )
    })
    .await
}

/// Generous: the deadline, plus a second for a loaded machine.
const MARGIN: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_request_in_flight_at_the_deadline_is_cut_there() {
    let server = slow_server().await;
    let client = client(&server);
    let deadline = Duration::from_secs(2);
    for (name, options) in [
        ("sse", WaitOptions::new()),
        ("long-poll", WaitOptions::new().sse(false)),
        ("polling", WaitOptions::new().sse(false).long_poll(false)),
    ] {
        let started = Instant::now();
        let result = client.wait_with("j1", &options.deadline(deadline)).await;
        let took = started.elapsed();
        eprintln!("{name}: a 2 s deadline ended after {took:?}");
        gave_up_at_deadline(result);
        assert!(
            took >= deadline && took < deadline + MARGIN,
            "{name}: {took:?}"
        );
    }
}

#[tokio::test]
async fn a_job_sets_request_in_flight_at_the_deadline_is_cut_there() {
    let server = slow_server().await;
    let deadline = Duration::from_secs(2);
    for (name, options) in [
        ("sse", JobSetOptions::new()),
        ("polling", JobSetOptions::new().sse(false).long_poll(false)),
    ] {
        let mut jobs = client(&server).job_set(options.deadline(deadline)).unwrap();
        let started = Instant::now();
        jobs.add("j1").unwrap();
        let (_, result) = jobs.next_finished().await.unwrap();
        let took = started.elapsed();
        eprintln!("job set, {name}: a 2 s deadline ended after {took:?}");
        gave_up_at_deadline(result);
        assert!(
            took >= deadline && took < deadline + MARGIN,
            "{name}: {took:?}"
        );
    }
}

// ----- Progress in percent -------------------------------------------------------------------

#[tokio::test]
async fn progress_in_percent_is_read_as_a_percentage() {
    // Pending at 43 %, then 87 %, then done: the scale a real peer server uses.
    let server = stand_in(|path, n| {
        if path.ends_with("/events") {
            return reply(404, r#"{"error":{"code":"not_found","message":"no"}}"#);
        }
        match n {
            0 | 1 => reply(200, r#"{"result":"pending","progress":43}"#),
            2 => reply(200, r#"{"result":"pending","progress":87}"#),
            _ => reply(200, r#"{"result":"completed","progress":100}"#),
        }
    })
    .await;
    let options = WaitOptions::new()
        .long_poll(false)
        .policy(Fixed::new(Duration::from_millis(100)));
    let mut watch = client(&server).watch_with("j1", options);
    let mut seen = Vec::new();
    while let Some(status) = watch.next().await {
        let status = status.unwrap();
        seen.push((status.state.as_str().to_owned(), status.progress));
    }
    assert_eq!(
        seen,
        vec![
            ("pending".to_owned(), Some(0.43)),
            ("pending".to_owned(), Some(0.87)),
            ("completed".to_owned(), Some(1.0)),
        ]
    );
}

// ----- The report shows the whole cost ---------------------------------------------------------

#[tokio::test]
async fn the_report_counts_every_request_the_simulator_saw() {
    // One status read in three fails with a 500 and is retried.
    let server = sim(|s: &mut Settings| {
        s.faults.error_rate = 0.3;
        s.faults.seed = Some(11);
    })
    .await;
    let id = job(&server, 2_000);
    // Hedges are counted on their own (below); here every extra request is a retry.
    let client = Client::builder()
        .base_url(server.base_url())
        .without_hedging()
        .build()
        .unwrap();
    let options = WaitOptions::new()
        .long_poll(false)
        .sse(false)
        .policy(Fixed::new(Duration::from_millis(100)));
    let done = client.wait_with(id.as_str(), &options).await.unwrap();
    let report = &done.report;
    let seen = sim_requests(&server);
    let injected = metric(
        &server.state().render_metrics(),
        "sim_faults_injected_total",
        &[("kind", "error")],
    );
    eprintln!("{report:?}: the simulator saw {seen} requests, {injected} of them 500s");
    assert!(report.retries > 0, "the faults were retried: {report:?}");
    assert_eq!(
        (report.requests + report.retries + report.hedges) as usize,
        seen,
        "{report:?}"
    );
}

#[tokio::test]
async fn the_report_counts_hedges_beside_retries() {
    // Pending for 4 s; one status read in 25 takes 400 ms, so the hedging layer (after the
    // observed p95, never before 50 ms) duplicates it.
    let started = Instant::now();
    let server = stand_in(move |path, n| {
        if path.ends_with("/events") {
            return reply(404, r#"{"error":{"code":"not_found","message":"no"}}"#);
        }
        let result = if started.elapsed() >= Duration::from_secs(4) {
            "completed"
        } else {
            "pending"
        };
        let answer = reply(200, &format!(r#"{{"result":"{result}"}}"#));
        if n % 25 == 24 {
            Act::Late(Duration::from_millis(400), Box::new(answer))
        } else {
            answer
        }
    })
    .await;
    let options = WaitOptions::new()
        .long_poll(false)
        .policy(Fixed::new(Duration::from_millis(50)));
    let done = client(&server).wait_with("j1", &options).await.unwrap();
    let report = &done.report;
    let seen = server.requests();
    eprintln!("{report:?}: the server saw {seen} requests");
    assert!(report.hedges > 0, "slow reads were hedged: {report:?}");
    // Each hedge is a request the server saw. (On a loaded machine a quick read may be
    // hedged too, and its hedge cancelled before it connected: that one never arrives.)
    let sent = (report.requests + report.retries) as usize;
    assert!(
        sent <= seen && seen <= sent + report.hedges as usize,
        "{report:?}: the server saw {seen}"
    );
}
