//! One connection for many jobs: what a job set reads on a server's change stream, and the
//! stream's state.
//!
//! # Why one stream, and why a watch set
//!
//! A thousand jobs followed one by one are a thousand event streams, or a thousand long-polls
//! renewed every half minute (13–29 requests per ten-minute job), or a thousand status URLs
//! polled; per-connection stream limits (100–200 on HTTP/2 servers) and proxies cap the first
//! two. A server that keeps a *change log* — Kubernetes watches, etcd revisions — serves them
//! all on one connection: a snapshot, then every change, each at a resumable *cursor*
//! (docs/wire.md, "Following many jobs"). A job set uses it when the server offers it:
//!
//! * its jobs go into a **watch set** (`POST /v1/watches`, grown and shrunk with `PATCH`), not
//!   into the stream of the client's own jobs: a set waits for jobs whoever created them, and
//!   the stream of a watch set reports exactly the jobs asked for. The answer of each
//!   `POST`/`PATCH` carries the status of the jobs it named *as of a cursor*: their first
//!   look, for one request per [`MAX_WATCH_BODY`] bytes of ids (about 350 of the
//!   simulator's);
//! * one **change stream** (`GET /v1/events?watch=ID`) opened at that cursor reports every
//!   change after it: a job's end is one event. Reopened with the last cursor received
//!   (`Last-Event-ID`) it continues with nothing lost and nothing repeated; when the server
//!   cannot continue (`reset`), the snapshot that follows on the same connection is the
//!   resync — no extra request;
//! * a **watchdog**: the server sends something at least every bookmark interval
//!   ([`JobSetOptions::bookmark_interval`](super::JobSetOptions::bookmark_interval), 15 s by
//!   default, the simulator's); a stream silent for one and a half of them is dropped and
//!   resumed, and counted ([`SILENT_DROPS_TOTAL`](crate::telemetry::SILENT_DROPS_TOTAL)).
//!
//! A job's terminal outcome is decided once, by its ledger: the first terminal status ends its
//! wait and removes it from the set, so a repeat (a snapshot after a reset, a watch answer
//! racing the stream) finds nobody to tell.
//!
//! Everything read is bounded: an event by the SSE decoder (1 MiB), a job id by [`MAX_ID`], a
//! cursor by [`MAX_CURSOR`] (one that does not parse is not kept), a snapshot by the number of
//! jobs followed, a snapshot's end by the watchdog, a watch answer by the client's body limit.
//! A stream that breaks these rules, refuses, or fails [`MAX_FAILURES`] times in a row without
//! making progress is given up for the set's life, and its jobs are waited for by the next
//! mechanism (batched reads, then each job's own).

use serde::Deserialize;
use url::Url;

use crate::transport::sse::SseEvent;

/// The longest job or watch set id accepted from the server (the simulator's ids are at most
/// 64 bytes).
pub(crate) const MAX_ID: usize = 64;
/// The longest cursor kept: two numbers of at most 20 digits around a colon.
pub(crate) const MAX_CURSOR: usize = 41;
/// The most bytes of ids named in one watch set request: with the JSON around them, inside
/// the 16 KiB body a server commonly accepts (the simulator's `server.max_body_bytes`).
pub(crate) const MAX_WATCH_BODY: usize = 12 * 1024;
/// Ids of ended jobs kept to remove from the watch set: removed (in one request) once this
/// many have ended, so that the set does not grow without bound; beyond it they are left to
/// expire on the server.
pub(crate) const MAX_REMOVALS: usize = 1024;
/// Failures in a row (refusals, broken or silent streams, hostile events) after which the
/// change stream is given up for the set's life.
pub(crate) const MAX_FAILURES: u8 = 5;

/// Whether `text` is a cursor as the wire contract writes them: `<epoch>:<offset>`, two
/// decimal numbers of 1 to 20 digits.
pub(crate) fn is_cursor(text: &str) -> bool {
    let Some((epoch, offset)) = text.split_once(':') else {
        return false;
    };
    let number = |s: &str| (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    text.len() <= MAX_CURSOR && number(epoch) && number(offset)
}

/// Whether `id` is an id the set will name in a URL or a body: 1 to [`MAX_ID`] bytes of
/// letters, digits, `-` and `_`.
pub(crate) fn is_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The job id behind a status URL, when the job can be followed on `base`'s change stream:
/// the URL is `{base}/v1/jobs/{id}/status` on the same origin.
pub(crate) fn job_id(base: &Url, status: &Url) -> Option<String> {
    if base.origin() != status.origin() || status.query().is_some() {
        return None;
    }
    let prefix = base.path().trim_end_matches('/');
    let rest = status.path().strip_prefix(prefix)?;
    let id = rest.strip_prefix("/v1/jobs/")?.strip_suffix("/status")?;
    is_id(id).then(|| id.to_owned())
}

/// A route under `base` (`path` without a leading slash).
pub(crate) fn route(base: &Url, path: &str) -> Option<Url> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(path).ok()
}

/// One event of the change stream, read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A job's status as of the snapshot's cursor (`data` is the status document).
    Snapshot { job: String },
    /// The snapshot is complete at `cursor`.
    SnapshotEnd { cursor: Option<String> },
    /// A job was created or ended.
    Status { job: String, cursor: Option<String> },
    /// A job was forgotten: its status answers `404` from now on.
    Gone { job: String, cursor: Option<String> },
    /// Nothing happened; `end`: the server ends the stream now.
    Bookmark { cursor: Option<String>, end: bool },
    /// The cursor could not be continued: a snapshot follows.
    Reset { reason: &'static str },
    /// An event this version does not read.
    Other,
}

/// An event of a known kind that is not what the wire contract says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("change stream event {0:?} does not follow the wire contract")]
pub(crate) struct Unreadable(pub(crate) &'static str);

#[derive(Deserialize)]
struct Named {
    id: String,
}

#[derive(Deserialize)]
struct Marked {
    #[serde(default)]
    end: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Reason {
    reason: String,
}

/// Reads one event. Its cursor is kept only when it parses; a job id only when it is an id.
pub(crate) fn read(event: &SseEvent) -> Result<Change, Unreadable> {
    let cursor = event
        .id
        .as_deref()
        .filter(|c| is_cursor(c))
        .map(str::to_owned);
    let job = |kind: &'static str| -> Result<String, Unreadable> {
        let named: Named = serde_json::from_str(&event.data).map_err(|_| Unreadable(kind))?;
        if is_id(&named.id) {
            Ok(named.id)
        } else {
            Err(Unreadable(kind))
        }
    };
    Ok(match event.event.as_str() {
        "snapshot" => Change::Snapshot {
            job: job("snapshot")?,
        },
        "snapshot_end" => Change::SnapshotEnd { cursor },
        "status" => Change::Status {
            job: job("status")?,
            cursor,
        },
        "gone" => Change::Gone {
            job: job("gone")?,
            cursor,
        },
        "bookmark" => {
            let marked: Marked =
                serde_json::from_str(&event.data).map_err(|_| Unreadable("bookmark"))?;
            Change::Bookmark {
                cursor,
                end: marked.end.is_some(),
            }
        }
        "reset" => {
            let reason = serde_json::from_str::<Reason>(&event.data)
                .map(|r| r.reason)
                .unwrap_or_default();
            Change::Reset {
                reason: match reason.as_str() {
                    "history" => "history",
                    "epoch" => "epoch",
                    _ => "other",
                },
            }
        }
        _ => Change::Other,
    })
}

/// A watch set as the server answered its creation or change.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchAnswer {
    pub(crate) id: String,
    pub(crate) cursor: String,
    /// The status of every job named that is in the set, as of `cursor`.
    /// (The ids it names not found are the ones missing here.)
    #[serde(default)]
    pub(crate) jobs: Vec<serde_json::Value>,
}

impl WatchAnswer {
    /// The answer, when it follows the wire contract.
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        let answer: WatchAnswer = serde_json::from_slice(body).ok()?;
        (is_id(&answer.id) && is_cursor(&answer.cursor)).then_some(answer)
    }
}

/// The id of one status document (of a watch answer or a batched read).
pub(crate) fn status_id(status: &serde_json::Value) -> Option<&str> {
    status.get("id")?.as_str().filter(|id| is_id(id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(kind: &str, id: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: kind.into(),
            data: data.into(),
            id: id.map(Into::into),
            retry: None,
        }
    }

    #[test]
    fn cursors_are_two_bounded_numbers() {
        for good in [
            "1:1",
            "4096123456789:42",
            "12345678901234567890:12345678901234567890",
        ] {
            assert!(is_cursor(good), "{good}");
        }
        for bad in [
            "",
            ":",
            "1:",
            ":1",
            "1:2:3",
            "a:1",
            "1:-1",
            " 1:1",
            "123456789012345678901:1",
            "1:123456789012345678901",
        ] {
            assert!(!is_cursor(bad), "{bad:?}");
        }
    }

    #[test]
    fn job_ids_come_from_the_servers_own_status_urls() {
        let base = Url::parse("http://h:1/api").unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            job_id(&base, &url("http://h:1/api/v1/jobs/j-1/status")).as_deref(),
            Some("j-1")
        );
        assert_eq!(
            job_id(&base, &url("http://h:2/api/v1/jobs/j-1/status")),
            None
        );
        assert_eq!(job_id(&base, &url("http://h:1/v1/jobs/j-1/status")), None);
        assert_eq!(
            job_id(&base, &url("http://h:1/api/v1/jobs/j-1/status?x=1")),
            None
        );
        assert_eq!(
            job_id(&base, &url("http://h:1/api/v1/jobs/a/b/status")),
            None
        );
        let long = format!("http://h:1/api/v1/jobs/{}/status", "x".repeat(MAX_ID + 1));
        assert_eq!(job_id(&base, &url(&long)), None);
        assert_eq!(
            route(&base, "v1/events").unwrap().as_str(),
            "http://h:1/api/v1/events"
        );
    }

    #[test]
    fn events_are_read_with_their_bounds() {
        let s = r#"{"id":"j-1","result":"completed"}"#;
        assert_eq!(
            read(&event("status", Some("7:3"), s)).unwrap(),
            Change::Status {
                job: "j-1".into(),
                cursor: Some("7:3".into())
            }
        );
        // A bogus cursor is not kept; the event still counts.
        assert_eq!(
            read(&event("status", Some("7:3;drop table"), s)).unwrap(),
            Change::Status {
                job: "j-1".into(),
                cursor: None
            }
        );
        assert_eq!(
            read(&event("snapshot", None, s)).unwrap(),
            Change::Snapshot { job: "j-1".into() }
        );
        assert_eq!(
            read(&event(
                "bookmark",
                Some("7:4"),
                r#"{"cursor":"7:4","end":"lifetime"}"#
            ))
            .unwrap(),
            Change::Bookmark {
                cursor: Some("7:4".into()),
                end: true
            }
        );
        assert_eq!(
            read(&event("reset", None, r#"{"reason":"epoch"}"#)).unwrap(),
            Change::Reset { reason: "epoch" }
        );
        assert_eq!(read(&event("progress", None, "{}")).unwrap(), Change::Other);
        let long = format!(r#"{{"id":"{}"}}"#, "j".repeat(MAX_ID + 1));
        assert!(read(&event("status", Some("1:1"), &long)).is_err());
        assert!(read(&event("status", Some("1:1"), "not json")).is_err());
        assert!(read(&event("gone", Some("1:1"), "{}")).is_err());
    }

    #[test]
    fn watch_answers_follow_the_contract_or_are_refused() {
        let good = br#"{"id":"w-1","cursor":"5:9","size":1,"jobs":[{"id":"j-1","result":"pending"}],"not_found":["j-2"]}"#;
        let answer = WatchAnswer::parse(good).unwrap();
        assert_eq!(answer.jobs.len(), 1);
        assert_eq!(status_id(&answer.jobs[0]), Some("j-1"));
        assert!(WatchAnswer::parse(br#"{"id":"w 1","cursor":"5:9"}"#).is_none());
        assert!(WatchAnswer::parse(br#"{"id":"w-1","cursor":"x"}"#).is_none());
    }
}
