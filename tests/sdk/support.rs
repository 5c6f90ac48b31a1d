//! Servers for the tests: the real simulator on port 0, a plain `/status` server (axum), and a
//! scripted raw-TCP server for transport edge cases (including dropped connections).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use translation_sim::{JobSpec, Outcome, RunningServer, Settings};
use translation_status::{Client, FallbackReason, Mechanism, WaitReport};

/// The simulator on 127.0.0.1:0, with `tweak` applied to the defaults.
pub async fn sim(tweak: impl FnOnce(&mut Settings)) -> RunningServer {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    tweak(&mut settings);
    translation_sim::spawn(settings).await.unwrap()
}

/// A simulator job of `ms` milliseconds that completes.
pub fn job(server: &RunningServer, ms: u64) -> String {
    job_ending(server, ms, Outcome::Completed)
}

pub fn job_ending(server: &RunningServer, ms: u64, outcome: Outcome) -> String {
    server
        .state()
        .create_job(JobSpec {
            duration: Some(Duration::from_millis(ms)),
            outcome: Some(outcome),
            ..JobSpec::default()
        })
        .unwrap()
}

pub fn client(server: &RunningServer) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap()
}

/// Sum of the samples of `name` whose labels include every `label="value"` pair.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Waits (up to 3 s) until `check` holds on the simulator's metrics.
pub async fn eventually(server: &RunningServer, what: &str, check: impl Fn(&str) -> bool) {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let text = server.state().render_metrics();
        if check(&text) {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Status requests of a wait: everything but a refused event-stream subscription.
pub fn status_requests(report: &WaitReport) -> u32 {
    let probes = report
        .fallbacks
        .iter()
        .filter(|f| f.from == Mechanism::Sse && f.reason == FallbackReason::NotSupported)
        .count() as u32;
    report.requests - probes
}

// ----- A plain `GET /status` server, as in the original exercise ---------------------------

/// Serves only `GET /status` → `{"result": ...}` for a job that ends `duration` after start;
/// every other path is a bare 404. Counts requests per path.
pub struct PlainServer {
    pub url: String,
    pub hits: Arc<Mutex<Vec<String>>>,
}

pub async fn plain_server(duration: Duration, result: &'static str) -> PlainServer {
    use axum::extract::State;
    use axum::routing::get;

    #[derive(Clone)]
    struct St {
        done_at: Instant,
        result: &'static str,
        hits: Arc<Mutex<Vec<String>>>,
    }
    async fn status(State(st): State<St>) -> axum::Json<serde_json::Value> {
        st.hits.lock().unwrap().push("/status".into());
        let result = if Instant::now() >= st.done_at {
            st.result
        } else {
            "pending"
        };
        axum::Json(serde_json::json!({ "result": result }))
    }
    async fn other(State(st): State<St>, uri: axum::http::Uri) -> axum::http::StatusCode {
        st.hits.lock().unwrap().push(uri.path().to_owned());
        axum::http::StatusCode::NOT_FOUND
    }
    let hits = Arc::new(Mutex::new(Vec::new()));
    let st = St {
        done_at: Instant::now() + duration,
        result,
        hits: Arc::clone(&hits),
    };
    let app = axum::Router::new()
        .route("/status", get(status))
        .fallback(other)
        .with_state(st);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    PlainServer {
        url: format!("http://{addr}"),
        hits,
    }
}

// ----- A scripted server: exact answers, in order, one connection each ---------------------

#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, extra headers, body.
    Http(u16, Vec<(&'static str, String)>, String),
    /// Close the connection without answering.
    Drop,
    /// Answer after this long.
    Late(Duration, Box<Reply>),
}

pub fn json(status: u16, body: &str) -> Reply {
    Reply::Http(status, vec![], body.to_owned())
}

pub fn with_header(reply: Reply, name: &'static str, value: &str) -> Reply {
    match reply {
        Reply::Http(s, mut h, b) => {
            h.push((name, value.to_owned()));
            Reply::Http(s, h, b)
        }
        other => other,
    }
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub head: String,
}

pub struct Scripted {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn times(&self) -> Vec<Instant> {
        self.seen.lock().unwrap().iter().map(|s| s.at).collect()
    }
}

/// Answers `script` in order, then `rest` forever.
pub async fn scripted(script: Vec<Reply>, rest: Reply) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let queue = Arc::new(Mutex::new(VecDeque::from(script)));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            let queue = Arc::clone(&queue);
            let rest = rest.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    head: String::from_utf8_lossy(&head).into_owned(),
                });
                let mut reply = queue.lock().unwrap().pop_front().unwrap_or(rest);
                loop {
                    match reply {
                        Reply::Late(after, inner) => {
                            tokio::time::sleep(after).await;
                            reply = *inner;
                        }
                        Reply::Drop => return,
                        Reply::Http(status, headers, body) => {
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
                            return;
                        }
                    }
                }
            });
        }
    });
    Scripted { addr, seen }
}
