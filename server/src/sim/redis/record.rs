//! How a job and an entry of the change log are written in Redis, and read back.
//!
//! A job is a hash, `<prefix>:job:<id>`: `r`, what the job carries that never changes (a small
//! JSON [`Record`]: its outcome, estimate bias, callback and HeyGen strings), written by the
//! replica that created it; and, written by the scripts, `c` (whose it is), `t` (created, µs on
//! Redis's clock), `d` (duration, µs), `h` (`1`: hanging), `g` (generation), `x` (when it is
//! forgotten, µs; empty: never), `e` (how it ended: `n` on its own, `c<µs>` canceled then;
//! absent while pending) and `mc`, `me`, `mg` (the offsets of its changes in the log). An entry
//! of the log carries `k` (its kind) and `a` (when it was appended, µs), and the fields of what
//! it says: a created job's, an end's word, a watch set's change, the faults.
//!
//! Everything read back is checked: a field that does not parse makes the entry unreadable,
//! which the tail treats as a job it cannot hold (never a panic).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;

use super::clock::Clock;
use crate::settings::Outcome;
use crate::sim::client::ClientId;
use crate::sim::heygen::{HeyGenApi, HeyGenJob};
use crate::sim::job::{End, Job, Mark};

/// What a job carries that never changes, beside its times: `r` of its hash and of its
/// `created` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// How it ends.
    o: Outcome,
    /// Its estimate's bias.
    b: f64,
    /// Its webhook target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cb: Option<String>,
    /// What a HeyGen job carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hg: Option<HeyGenRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeyGenRecord {
    /// `2` or `3`.
    v: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    lang: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cbid: Option<String>,
}

impl Record {
    /// The record of a job to create.
    pub(crate) fn new(
        outcome: Outcome,
        bias: f64,
        callback: Option<&Url>,
        heygen: Option<&HeyGenJob>,
    ) -> Self {
        Record {
            o: outcome,
            b: bias,
            cb: callback.map(|u| u.as_str().to_owned()),
            hg: heygen.map(|h| HeyGenRecord {
                v: match h.api {
                    HeyGenApi::V2 => 2,
                    HeyGenApi::V3 => 3,
                },
                title: h.title.clone(),
                lang: h.output_language.clone(),
                cbid: h.callback_id.clone(),
            }),
        }
    }

    /// As JSON.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A job as Redis holds it, read from its hash or its `created` entry.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The job, a copy ([`Job::shared`]), with its end and marks.
    pub(crate) job: Job,
    /// Whose it is.
    pub(crate) client: Option<ClientId>,
    /// When it is forgotten.
    pub(crate) expires: Option<Instant>,
}

/// The fields of a hash or entry, as text.
pub(crate) type Fields = HashMap<String, String>;

fn num(fields: &Fields, name: &str) -> Option<u64> {
    fields.get(name)?.parse().ok()
}

/// When `t` says a job was created (µs, Redis's clock; 0 when absent).
pub(crate) fn created_us(fields: &Fields) -> u64 {
    num(fields, "t").unwrap_or(0)
}

/// When `x` says a job is forgotten (`None`: never, or absent).
pub(crate) fn expiry(fields: &Fields, clock: &Clock) -> Option<Instant> {
    num(fields, "x").map(|us| clock.instant(us))
}

/// How `e` says a job created at `created_us` ended, if it did.
pub(crate) fn end_of(word: &str, created_us: u64) -> Option<End> {
    match word.strip_prefix('c') {
        _ if word == "n" => Some(End::Natural),
        Some(at) => {
            let at: u64 = at.parse().ok()?;
            Some(End::CanceledAfter(Duration::from_micros(
                at.saturating_sub(created_us),
            )))
        }
        None => None,
    }
}

/// The job `id` of these fields (a hash, or a `created` entry); `None` when they do not parse.
pub(crate) fn stored(id: &str, fields: &Fields, clock: &Clock) -> Option<Stored> {
    let record: Record = serde_json::from_str(fields.get("r")?).ok()?;
    let created_us = num(fields, "t")?;
    let duration = Duration::from_micros(num(fields, "d")?);
    let callback = match &record.cb {
        Some(raw) => Some(Url::parse(raw).ok()?),
        None => None,
    };
    let mut job = Job::shared(
        id.to_owned(),
        clock.instant(created_us),
        Clock::system_time(created_us),
        duration,
        record.o,
        record.b,
        callback,
    )
    .with_generation(num(fields, "g").unwrap_or(0));
    if fields.get("h").is_some_and(|h| h == "1") {
        job = job.hanging();
    }
    if let Some(h) = record.hg {
        job = job.with_heygen(HeyGenJob {
            api: if h.v == 2 {
                HeyGenApi::V2
            } else {
                HeyGenApi::V3
            },
            title: h.title,
            output_language: h.lang,
            callback_id: h.cbid,
        });
    }
    if let Some(end) = fields.get("e").and_then(|e| end_of(e, created_us)) {
        job.decide(end);
    }
    for (name, mark) in [
        ("mc", Mark::Created),
        ("me", Mark::Ended),
        ("mg", Mark::Gone),
    ] {
        if let Some(offset) = num(fields, name) {
            job.marks.set(mark, offset);
        }
    }
    let client = match fields.get("c").map(String::as_str) {
        None | Some("") => None,
        Some(key) => Some(ClientId::from_key(key)?),
    };
    Some(Stored {
        job,
        client,
        expires: expiry(fields, clock),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::job::State;

    #[tokio::test(start_paused = true)]
    async fn a_job_reads_back_as_written() {
        let clock = Clock::now();
        let heygen = HeyGenJob {
            api: HeyGenApi::V3,
            title: Some("t".into()),
            output_language: "fr".into(),
            callback_id: None,
        };
        let callback = Url::parse("http://127.0.0.1:9/hook").unwrap();
        let record = Record::new(Outcome::Error, 1.1, Some(&callback), Some(&heygen));
        let created = super::super::clock::wall_us(std::time::SystemTime::now());
        let fields: Fields = [
            ("r", record.to_json()),
            ("c", ClientId::ApiKey.key()),
            ("t", created.to_string()),
            ("d", "2000000".into()),
            ("h", "0".into()),
            ("g", "0".into()),
            ("x", (created + 5_000_000).to_string()),
            ("e", format!("c{}", created + 500_000)),
            ("mc", "7".into()),
            ("me", "9".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let s = stored("j-1", &fields, &clock).unwrap();
        assert_eq!(s.client, Some(ClientId::ApiKey));
        assert_eq!(s.job.outcome, Outcome::Error);
        assert_eq!(s.job.duration, Duration::from_secs(2));
        assert_eq!(s.job.callback, Some(callback));
        assert_eq!(s.job.heygen.as_deref(), Some(&heygen));
        assert_eq!(s.job.marks.get(Mark::Ended), Some(9));
        let snap = s.job.snapshot(s.job.created + Duration::from_secs(1));
        assert_eq!((snap.state, snap.progress), (State::Canceled, 0.25));
        assert!(s.expires.is_some());
        // A field that does not parse: nothing, not a panic.
        let mut bad = fields.clone();
        bad.insert("t".into(), "soon".into());
        assert!(stored("j-1", &bad, &clock).is_none());
        bad = fields;
        bad.insert("c".into(), "zzz".into());
        assert!(stored("j-1", &bad, &clock).is_none());
    }

    #[test]
    fn end_words_read_as_written() {
        assert_eq!(end_of("n", 5), Some(End::Natural));
        assert_eq!(
            end_of("c1000005", 5),
            Some(End::CanceledAfter(Duration::from_secs(1)))
        );
        assert_eq!(end_of("cx", 5), None);
        assert_eq!(end_of("", 5), None);
    }
}
