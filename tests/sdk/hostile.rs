//! The client against servers that do not play fair: each test starts a small stand-in
//! server on 127.0.0.1:0 that answers exactly what the test needs, and checks that nothing it
//! sends can leak credentials, grow memory without bound, or be mistaken for something else.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use translation_status::{Client, Error, FallbackReason, JobRef, Mechanism, WaitOptions};

const COMPLETED: &str = r#"{"result":"completed"}"#;
const PENDING: &str = r#"{"result":"pending"}"#;

// ----- A stand-in server -------------------------------------------------------------------

/// A server on 127.0.0.1:0 that records each request's head, then lets `answer` write
/// whatever it likes on the connection.
struct StandIn {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn stand_in<F, Fut>(answer: F) -> StandIn
where
    F: Fn(String, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&heads);
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if head.len() > 64 * 1024 {
                        return;
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                log.lock().unwrap().push(head.clone());
                answer(head, socket).await;
            });
        }
    });
    StandIn { addr, heads }
}

/// The request target of a request head (`/path?query`).
fn target(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("/")
}

/// The path of a request head, without the query.
fn path(head: &str) -> &str {
    target(head).split('?').next().unwrap_or("/")
}

/// Writes one complete answer and closes the connection.
async fn respond(mut socket: TcpStream, status: u16, headers: &[(&str, &str)], body: &str) {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    let _ = socket.write_all(out.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// A port nothing listens on.
fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

fn polling(every_ms: u64) -> WaitOptions {
    WaitOptions::new()
        .sse(false)
        .long_poll(false)
        .policy(translation_status::poll::Fixed::new(Duration::from_millis(
            every_ms,
        )))
}

/// Everything an error shows: `Display`, `Debug`, and every source's `Display`.
fn all_text(error: &Error) -> String {
    let mut text = format!("{error}\n{error:?}\n");
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&format!("{inner}\n"));
        source = inner.source();
    }
    text
}

// ----- Captured logs -----------------------------------------------------------------------

/// A `tracing_subscriber::fmt` writer into memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every event and span (opened and closed, with its fields) at every level, as text.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::fmt::format::FmtSpan;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (captured, guard)
}

// ----- Credentials -------------------------------------------------------------------------

const PASSWORD: &str = "hunter2-pw";
const TOKEN: &str = "tok-3f9a";

/// A status URL with a password in its user-info and a token in its query.
fn with_credentials(addr: SocketAddr, path: &str) -> String {
    format!("http://user:{PASSWORD}@{addr}{path}?job=1&token={TOKEN}")
}

#[tokio::test]
async fn credentials_in_a_status_url_never_reach_errors_or_logs() {
    let (logs, _guard) = capture_logs();
    let flaky = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&flaky);
    let server = stand_in(move |head, socket| {
        let flaky = Arc::clone(&seen);
        async move {
            match path(&head) {
                "/missing" => {
                    let body = r#"{"error":{"code":"not_found","message":"no such job"}}"#;
                    respond(socket, 404, &[], body).await;
                }
                "/failed" => {
                    let body =
                        r#"{"result":"error","error":{"code":"bad_input","message":"no audio"}}"#;
                    respond(socket, 200, &[], body).await;
                }
                "/pending" => respond(socket, 200, &[], PENDING).await,
                "/flaky" if flaky.fetch_add(1, Ordering::Relaxed) == 0 => {
                    respond(socket, 200, &[], PENDING).await;
                }
                _ => respond(socket, 500, &[], "{}").await,
            }
        }
    })
    .await;
    let dead = dead_addr();
    let client = Client::builder()
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .max_retries(1)
        .without_circuit_breaker()
        .build()
        .unwrap();
    let url = |path: &str| with_credentials(server.addr, path);

    let mut errors = Vec::new();
    let err = client.status(url("/broken")).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    errors.push(err);
    let err = client.status(url("/missing")).await.unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse(_)), "{err:?}");
    errors.push(err);
    let err = client
        .status(with_credentials(dead, "/status"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    errors.push(err);
    let err = client
        .wait_with(with_credentials(dead, "/status"), &polling(50))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    errors.push(err);
    let err = client
        .wait_with(url("/failed"), &polling(50))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::JobFailed(_)), "{err:?}");
    errors.push(err);
    let err = client
        .wait_with(
            url("/pending"),
            &polling(50).deadline(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::GaveUp(_)), "{err:?}");
    errors.push(err);
    let err = client
        .wait_with(url("/flaky"), &polling(50).deadline(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    errors.push(err);
    let err = client
        .status(JobRef::status_url(format!(
            "http://user:{PASSWORD}@exa mple/status?token={TOKEN}"
        )))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    errors.push(err);

    for error in &errors {
        let text = all_text(error);
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
    let configured = Client::builder().base_url(format!("http://user:{PASSWORD}@127.0.0.1:9/"));
    let text = format!("{configured:?}\n{:?}", configured.clone().build().unwrap());
    assert!(!text.contains(PASSWORD), "{text}");
    let err = Client::builder()
        .base_url(format!("http://user:{PASSWORD}@h/?token={TOKEN}"))
        .build()
        .unwrap_err();
    assert!(!all_text(&err).contains(PASSWORD), "{err}");

    let logs = logs.text();
    assert!(!logs.contains(PASSWORD), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
    // The capture worked, and the job is still named (its secrets masked).
    assert!(logs.contains("wait"), "{logs}");
    assert!(
        logs.contains("user:***@") || logs.contains("//***@"),
        "{logs}"
    );
}

#[tokio::test]
async fn an_auth_failure_says_what_the_server_asked_for() {
    let server = stand_in(|head, socket| async move {
        match path(&head) {
            "/bearer" => {
                let challenge = [("www-authenticate", r#"Bearer realm="jobs""#)];
                respond(socket, 401, &challenge, "{}").await;
            }
            _ => respond(socket, 401, &[], "{}").await,
        }
    })
    .await;
    let keyed = Client::builder().api_key("k-1").build().unwrap();
    let err = keyed.status(server.url("/bearer")).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.http_status(), Some(401));
    assert!(text.contains("Bearer"), "{text}");
    assert!(!text.contains("api_key"), "{text}");
    let head = server.heads()[0].to_ascii_lowercase();
    assert!(head.contains("x-api-key: k-1"), "the key was sent: {head}");

    let anonymous = Client::builder().build().unwrap();
    let err = anonymous
        .status(format!("http://user:{PASSWORD}@{}/plain", server.addr))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("api_key"), "{text}");
    assert!(text.contains("user name and password"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    // Without a challenge or credentials in the URL, the API key is the one to check.
    let err = anonymous.status(server.url("/plain")).await.unwrap_err();
    assert!(err.to_string().contains("api_key"), "{err}");
}

// ----- Redirects ---------------------------------------------------------------------------

#[tokio::test]
async fn a_redirect_to_another_origin_is_never_followed() {
    // B would say the job completed; it is another origin (another port), so it must never
    // be asked, let alone see the API key.
    let b = stand_in(|_, socket| async move { respond(socket, 200, &[], COMPLETED).await }).await;
    let location = format!("http://user:{PASSWORD}@{}/status?token={TOKEN}", b.addr);
    let a = stand_in(move |_, socket| {
        let location = location.clone();
        async move { respond(socket, 302, &[("location", &location)], "").await }
    })
    .await;
    let clients = [
        Client::builder().api_key("k-1").build().unwrap(),
        Client::builder()
            .api_key("k-1")
            .follow_redirects(5)
            .build()
            .unwrap(),
    ];
    for client in clients {
        let err = client.status(a.url("/status")).await.unwrap_err();
        let Error::UnexpectedResponse(e) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(e.status, 302);
        let text = err.to_string();
        assert!(text.contains(&format!("{}/status", b.addr)), "{text}");
        assert!(text.contains("not followed"), "{text}");
        assert!(!all_text(&err).contains(PASSWORD), "{text}");
        assert!(!all_text(&err).contains(TOKEN), "{text}");
        let err = client
            .wait_with(a.url("/status"), &polling(50))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnexpectedResponse(_)), "{err:?}");
    }
    let heads = b.heads();
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("x-api-key")),
        "{heads:?}"
    );
    assert!(heads.is_empty(), "{heads:?}");
}

#[tokio::test]
async fn a_creation_answer_cannot_send_credentials_to_another_origin() {
    // B would say the job completed; A's creation answer points the job's URLs at it.
    let b = stand_in(|_, socket| async move { respond(socket, 200, &[], COMPLETED).await }).await;
    let elsewhere = b.url("/v1/jobs/j-1");
    let a = stand_in(move |head, socket| {
        let elsewhere = elsewhere.clone();
        async move {
            if head.starts_with("POST") {
                let body = format!(
                    r#"{{"id":"j-1","status_url":"{elsewhere}/status","events_url":"{elsewhere}/events"}}"#
                );
                respond(socket, 201, &[], &body).await;
            } else if path(&head) == "/v1/jobs/j-1/status" {
                respond(socket, 200, &[], PENDING).await;
            } else {
                respond(socket, 404, &[], "{}").await;
            }
        }
    })
    .await;
    let client = Client::builder()
        .base_url(a.url("/"))
        .api_key("k-1")
        .build()
        .unwrap();
    let job = client
        .create_job(&translation_status::NewJob::new())
        .await
        .unwrap();
    assert_eq!(job.status_url, a.url("/v1/jobs/j-1/status"));
    assert_eq!(job.events_url, None);
    let options = polling(50).deadline(Duration::from_millis(400));
    let err = client.wait_with(&job, &options).await.unwrap_err();
    assert!(matches!(err, Error::GaveUp(_)), "{err:?}");
    assert!(b.heads().is_empty(), "{:?}", b.heads());
    // The same origin is used as given, relative or absolute.
    let same = a.url("/v1/jobs/j-1");
    let c = stand_in(move |_, socket| {
        let same = same.clone();
        async move {
            let body = format!(
                r#"{{"id":"j-1","status_url":"{same}/status","events_url":"/elsewhere/events"}}"#
            );
            respond(socket, 201, &[], &body).await;
        }
    })
    .await;
    let client = Client::builder().base_url(c.url("/")).build().unwrap();
    let job = client
        .create_job(&translation_status::NewJob::new())
        .await
        .unwrap();
    assert_eq!(
        job.status_url,
        c.url("/v1/jobs/j-1/status"),
        "another origin"
    );
    assert_eq!(job.events_url, Some(c.url("/elsewhere/events")));
}

#[tokio::test]
async fn same_origin_redirects_are_followed_only_when_allowed() {
    let server = stand_in(|head, socket| async move {
        match path(&head) {
            "/old" => respond(socket, 302, &[("location", "/new")], "").await,
            _ => respond(socket, 200, &[], COMPLETED).await,
        }
    })
    .await;
    let err = Client::builder()
        .build()
        .unwrap()
        .status(server.url("/old"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::UnexpectedResponse(_)), "{err:?}");
    assert!(text.contains("/new"), "{text}");
    assert!(text.contains("follow_redirects"), "{text}");
    assert_eq!(server.heads().len(), 1);

    let following = Client::builder()
        .api_key("k-1")
        .follow_redirects(2)
        .build()
        .unwrap();
    let status = following.status(server.url("/old")).await.unwrap();
    assert!(status.is_terminal());
    let heads = server.heads();
    assert_eq!(heads.len(), 3);
    assert_eq!(target(&heads[2]), "/new");
    assert!(heads[2].to_ascii_lowercase().contains("x-api-key: k-1"));
}

#[tokio::test]
async fn a_redirect_loop_is_an_unexpected_response() {
    let server =
        stand_in(
            |_, socket| async move { respond(socket, 302, &[("location", "/loop")], "").await },
        )
        .await;
    let err = Client::builder()
        .build()
        .unwrap()
        .status(server.url("/loop"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse(_)), "{err:?}");
    assert_eq!(err.http_status(), Some(302));
    assert_eq!(server.heads().len(), 1, "not followed by default");

    let err = Client::builder()
        .follow_redirects(3)
        .build()
        .unwrap()
        .wait_with(server.url("/loop"), &polling(50))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse(_)), "{err:?}");
    assert_eq!(err.http_status(), Some(302));
    assert!(err.to_string().contains("after 3 redirect(s)"), "{err}");
    let asked = server.heads().len() - 1;
    assert!(asked <= 3 * 4, "three hops per request, {asked} requests");
}

/// Writes an event-stream answer of `events` and closes the connection.
async fn stream_once(mut socket: TcpStream, events: &str) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(events.as_bytes()).await;
    let _ = socket.shutdown().await;
}

#[tokio::test]
async fn an_event_id_that_cannot_be_a_header_is_not_sent_back() {
    // The first stream names its event with an id no header can carry (a control character,
    // then one of 64 KiB), and breaks; the second reports the job done.
    let opened = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&opened);
    let server = stand_in(move |head, socket| {
        let count = Arc::clone(&count);
        async move {
            if path(&head).ends_with("/events") {
                let event = match count.fetch_add(1, Ordering::SeqCst) {
                    0 => "id: bad\u{1}id\ndata: {\"result\":\"pending\"}\n\n".to_owned(),
                    1 => format!(
                        "id: {}\ndata: {{\"result\":\"pending\"}}\n\n",
                        "7".repeat(64 * 1024)
                    ),
                    _ => "id: 2\ndata: {\"result\":\"completed\"}\n\n".to_owned(),
                };
                stream_once(socket, &event).await;
            } else {
                respond(socket, 200, &[], PENDING).await;
            }
        }
    })
    .await;
    let client = Client::builder().base_url(server.url("/")).build().unwrap();
    let options = WaitOptions::new().deadline(Duration::from_secs(20));
    let done = client.wait_with("j-1", &options).await.unwrap();
    assert_eq!(done.report.mechanism, Mechanism::Sse, "{:?}", done.report);
    let resumed: Vec<String> = server
        .heads()
        .into_iter()
        .filter(|h| path(h).ends_with("/events"))
        .skip(1)
        .collect();
    assert!(resumed.len() >= 2, "{resumed:?}");
    for head in &resumed[..2] {
        assert!(
            !head.to_ascii_lowercase().contains("last-event-id"),
            "{head}"
        );
    }
}

// ----- Bounded reads -----------------------------------------------------------------------

/// Writes the head of an answer with no length, then a body until the client hangs up, 1 GiB
/// is out or 20 s pass; records how many body bytes went out.
async fn endless(
    mut socket: TcpStream,
    status: u16,
    content_type: &str,
    written: Arc<Mutex<Vec<u64>>>,
) {
    let head =
        format!("HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n");
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b' '; 64 * 1024];
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut sent = 0u64;
    while sent < 1 << 30 {
        match tokio::time::timeout_at(until, socket.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len() as u64,
            _ => break,
        }
    }
    written.lock().unwrap().push(sent);
}

/// Waits (up to 30 s) until the stand-in has recorded `n` finished endless answers.
async fn finished(written: &Arc<Mutex<Vec<u64>>>, n: usize) -> Vec<u64> {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = written.lock().unwrap().clone();
        if seen.len() >= n || tokio::time::Instant::now() >= until {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_endless_answer_on_the_events_url_is_read_only_in_part() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&written);
    let server = stand_in(move |head, socket| {
        let log = Arc::clone(&log);
        async move {
            match path(&head) {
                "/v1/jobs/j-1/events" => endless(socket, 200, "application/json", log).await,
                _ => respond(socket, 200, &[], COMPLETED).await,
            }
        }
    })
    .await;
    let client = Client::builder().base_url(server.url("")).build().unwrap();
    let done = client.wait("j-1").await.unwrap();
    assert_ne!(done.report.mechanism, Mechanism::Sse);
    assert!(
        done.report
            .fallbacks
            .iter()
            .any(|f| f.from == Mechanism::Sse && f.reason == FallbackReason::NotSupported),
        "{:?}",
        done.report.fallbacks
    );
    let sent = finished(&written, 1).await;
    assert_eq!(sent.len(), 1, "the client hung up");
    // What sits in the two socket buffers, not what the server could push in a second.
    assert!(
        sent[0] < 16 << 20,
        "{} bytes went out before the client hung up",
        sent[0]
    );
}

#[tokio::test]
async fn bodies_are_read_only_up_to_a_bound() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&written);
    let server = stand_in(move |head, mut socket| {
        let log = Arc::clone(&log);
        async move {
            match path(&head) {
                "/busy" => endless(socket, 503, "text/html", log).await,
                "/declared" => {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n";
                    let _ = socket.write_all(head.as_bytes()).await;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                _ => {
                    let padded = format!(r#"{{"result":"completed"{}}}"#, " ".repeat(3000));
                    respond(socket, 200, &[], &padded).await;
                }
            }
        }
    })
    .await;
    let client = Client::builder()
        .max_retries(0)
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // An error answer keeps its status: only its first bytes are read.
    let err = client.status(server.url("/busy")).await.unwrap_err();
    assert_eq!(err.http_status(), Some(503), "{err:?}");
    let sent = finished(&written, 1).await;
    assert!(sent[0] < 16 << 20, "{} bytes went out", sent[0]);
    // A declared length over the bound fails at once, without waiting for the body.
    let err = client.status(server.url("/declared")).await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(matches!(err, Error::UnexpectedResponse(_)), "{err:?}");
    // The bound is the builder's.
    assert!(client.status(server.url("/padded")).await.is_ok());
    let small = Client::builder().max_response_body(2048).build().unwrap();
    let err = small.status(server.url("/padded")).await.unwrap_err();
    assert!(err.to_string().contains("larger than 2048 bytes"), "{err}");
}

// ----- What kind of error --------------------------------------------------------------------

fn quick() -> Client {
    Client::builder()
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_oversized_body_is_an_unexpected_response() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&written);
    let server = stand_in(move |head, socket| {
        let log = Arc::clone(&log);
        async move {
            match path(&head) {
                "/declared" => respond(socket, 200, &[], &" ".repeat(2 << 20)).await,
                _ => endless(socket, 200, "application/json", log).await,
            }
        }
    })
    .await;
    let client = quick();
    for path in ["/declared", "/endless"] {
        let err = client.status(server.url(path)).await.unwrap_err();
        let Error::UnexpectedResponse(e) = &err else {
            panic!("{path}: {err:?}");
        };
        assert_eq!(e.status, 200);
        assert!(err.to_string().contains("larger than"), "{err}");
        let err = client
            .wait_with(server.url(path), &polling(50))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::UnexpectedResponse(_)),
            "{path}: {err:?}"
        );
    }
    // An answer is not retried inside a read; a wait looks twice more, as for any body it
    // cannot use.
    assert_eq!(server.heads().len(), 2 * (1 + 3));
    let sent = finished(&written, 4).await;
    assert_eq!(sent.len(), 4);
    assert!(sent.iter().all(|&n| n < 16 << 20), "{sent:?}");
}

#[tokio::test]
async fn malformed_http_is_an_unexpected_response() {
    let server = stand_in(|head, mut socket| async move {
        let answer = match path(&head) {
            "/garbage" => "SPEAK FRIEND AND ENTER\r\n\r\n".to_owned(),
            _ => {
                let mut many = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n".to_owned();
                for i in 0..500 {
                    many.push_str(&format!("x-header-{i}: v\r\n"));
                }
                many.push_str("content-length: 0\r\n\r\n");
                many
            }
        };
        let _ = socket.write_all(answer.as_bytes()).await;
        let _ = socket.shutdown().await;
    })
    .await;
    let client = quick();
    for path in ["/garbage", "/headers"] {
        let before = server.heads().len();
        let err = client.status(server.url(path)).await.unwrap_err();
        assert!(
            matches!(err, Error::UnexpectedResponse(_)),
            "{path}: {err:?}"
        );
        assert_eq!(err.http_status(), None, "no status could be read: {err}");
        assert!(err.to_string().contains("not valid HTTP"), "{err}");
        assert_eq!(server.heads().len() - before, 1, "an answer is not retried");
        let err = client
            .wait_with(server.url(path), &polling(50))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::UnexpectedResponse(_)),
            "{path}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_host_that_never_answered_is_unreachable_even_with_its_breaker_open() {
    let dead = dead_addr();
    let builder = || {
        Client::builder()
            .retry_backoff(Duration::from_millis(10), Duration::from_millis(40))
            // Once open, it stays open for the whole test.
            .circuit_breaker(
                translation_status::transport::BreakerConfig::new()
                    .cool_down(Duration::from_secs(60), Duration::from_secs(60)),
            )
    };
    let by_url = builder().build().unwrap();
    let by_id = builder()
        .base_url(format!("http://{dead}"))
        .build()
        .unwrap();
    let url = format!("http://{dead}/status");
    for (client, job) in [(&by_url, url.as_str()), (&by_id, "j-1")] {
        let mut held_back = 0;
        // Four attempts per read: the breaker (five failures in a row) opens in the second.
        for _ in 0..3 {
            let err = client.wait_with(job, &polling(50)).await.unwrap_err();
            let Error::Unreachable(u) = &err else {
                panic!("{job}: {err:?}");
            };
            if u.attempts == 0 {
                held_back += 1;
                assert!(err.to_string().contains("has not answered"), "{err}");
            }
        }
        assert!(
            held_back >= 1,
            "{job}: the breaker opened and held requests back"
        );
        let err = client.status(job).await.unwrap_err();
        assert!(matches!(err, Error::Unreachable(_)), "{job}: {err:?}");
    }
}

#[tokio::test]
async fn a_signed_url_in_an_unusable_body_is_masked_in_the_error() {
    use crate::support::{json, scripted};
    let body = r#"{"data": {"url": "https://cdn.example/v.mp4?Expires=1&sig=0ddba11"}}"#;
    let server = scripted(vec![], json(200, body)).await;
    let client = translation_status::Client::builder()
        .max_retries(0)
        .build()
        .unwrap();
    let err = client.status(server.url("/status")).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("sig=***"), "{shown}");
    assert!(!shown.contains("0ddba11"), "{shown}");
}
