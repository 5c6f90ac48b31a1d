use std::time::Duration;

use serde_json::Value;
use translation_sim::{RunningServer, Settings};

/// Starts a simulator on a free loopback port, with `tweak` applied to the defaults.
pub(crate) async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> RunningServer {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.legacy.delay = Duration::from_millis(200);
    settings.hints.eta_noise = 0.0;
    tweak(&mut settings);
    translation_sim::spawn(settings).await.unwrap()
}

pub(crate) async fn spawn() -> RunningServer {
    spawn_with(|_| {}).await
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A client whose connections come from `local` (any of 127.0.0.0/8 on Linux), so that the
/// simulator counts it as a peer of its own.
pub(crate) fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .local_address(Some(local.parse().unwrap()))
        .build()
        .unwrap()
}

/// `POST /v1/jobs` with `body`; returns the job id.
pub(crate) async fn create(server: &RunningServer, body: Value) -> String {
    let r = client()
        .post(server.url("/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// The error code of a JSON error answer, checking its shape.
pub(crate) async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v["error"]["code"].as_str().unwrap().to_string()
}

/// The value of a sample line `name{labels} value` in Prometheus text (labels as written).
pub(crate) use translation_sim::metrics::sample;

/// `GET /v1/jobs/{id}/status` as JSON (any status code).
pub(crate) async fn status_json(server: &RunningServer, id: &str) -> Value {
    client()
        .get(server.url(&format!("/v1/jobs/{id}/status")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One event of a Server-Sent Events stream.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    /// `event:` (`message` when absent).
    pub(crate) name: String,
    /// `id:`, if the event had one.
    pub(crate) id: Option<String>,
    /// `data:`, as JSON.
    pub(crate) data: Value,
}

/// Reads a Server-Sent Events stream event by event.
pub(crate) struct SseReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    /// The stream ended (the server closed it).
    pub(crate) ended: bool,
}

impl SseReader {
    /// Reads the events of `r`, which must be a `200` event stream.
    pub(crate) fn new(r: reqwest::Response) -> Self {
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        SseReader {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
            ended: false,
        }
    }

    /// The next event within `within`: `None` when the stream ended or nothing came.
    pub(crate) async fn next(&mut self, within: Duration) -> Option<Ev> {
        use futures_util::StreamExt;
        let until = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).unwrap();
                    return Some(Ev { name, id, data });
                }
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(until, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(_) => self.ended = true,
                Err(_) => return None,
            }
        }
    }

    /// The next event that is not a `bookmark` (a resume with nothing new greets with one),
    /// within `within` each: `None` as for [`next`](Self::next).
    pub(crate) async fn next_change(&mut self, within: Duration) -> Option<Ev> {
        loop {
            let ev = self.next(within).await?;
            if ev.name != "bookmark" {
                return Some(ev);
            }
        }
    }

    /// Events until one named `name` (included), within `within` in all.
    pub(crate) async fn until(&mut self, name: &str, within: Duration) -> Vec<Ev> {
        let until = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while let Some(ev) = self.next(until - tokio::time::Instant::now()).await {
            let last = ev.name == name;
            out.push(ev);
            if last {
                return out;
            }
        }
        panic!("no `{name}` event within {within:?}; got {out:#?}");
    }
}

/// The offset of a cursor `epoch:offset`.
pub(crate) fn offset(cursor: &str) -> u64 {
    cursor.split_once(':').unwrap().1.parse().unwrap()
}
