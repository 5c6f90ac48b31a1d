//! Hostile servers: each test runs a small stand-in on 127.0.0.1:0 that misbehaves in one
//! way (an event that never ends, `Retry-After: 0`, an answer that takes ten seconds, a
//! progress in percent), and checks that the client stays bounded in memory, in requests and
//! in time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use translation_status::jobset::JobSetOptions;
use translation_status::{Client, FallbackReason, Mechanism, WaitOptions};

// ----- A stand-in server: one closure decides what each request gets -----------------------

/// What the stand-in does with one request.
#[derive(Debug, Clone)]
enum Act {
    /// Status, extra headers, JSON body.
    Reply(u16, Vec<(&'static str, String)>, String),
    /// `200 text/event-stream`, then `data:` lines forever, never a blank line (up to
    /// [`FLOOD_CAP`] bytes, then the server closes).
    Flood,
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
    match decide(&path, n) {
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
