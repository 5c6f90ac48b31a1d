//! The HeyGen dialect's model: what a HeyGen job carries, how our states read in HeyGen's
//! words, the signed URLs of finished videos, and HeyGen's webhook envelope.
//!
//! A HeyGen job is an ordinary job of the store, created through `/v2/video_translate` or
//! `/v3/video-translations`, with a few bounded strings besides ([`HeyGenJob`]). Its status is
//! derived from the clock like any other's; only the words differ:
//!
//! | our state | v2 `status` | v3 `status` |
//! | --- | --- | --- |
//! | pending, the first `heygen.queued_fraction` of its duration (a hanging job: always) | `pending` | `pending` |
//! | pending, after that | `running` | `running` |
//! | `completed` | `success` | `completed` |
//! | `error` | `failed` (`message`) | `failed` (`failure_message`) |
//! | `canceled` | `failed`, message `canceled` | `failed`, failure message `canceled` |
//!
//! HeyGen's v2 and v3 have no canceled state, so a canceled job reads as failed, with the
//! message saying why.
//!
//! A finished job's video URL is signed anew on every read, as HeyGen's are: a fresh nonce and
//! expiry each time, with an HMAC under a key drawn at start-up. The URL points at nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Serialize;
use sha2::Sha256;

use super::job::{Job, Snapshot, State};
use crate::settings::{HeyGenSettings, Outcome};

/// The failure message of a job that ended in `error`.
pub const FAILED_MESSAGE: &str = "the video could not be translated (simulated failure)";

/// The failure message of a canceled job: HeyGen has no canceled state.
pub const CANCELED_MESSAGE: &str = "canceled";

/// Which HeyGen API created a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeyGenApi {
    /// `POST /v2/video_translate`.
    V2,
    /// `POST /v3/video-translations`.
    V3,
}

/// What a HeyGen-created job carries for that dialect, every string bounded at creation
/// (`heygen.max_title_len`, `max_callback_id_len`, `max_language_len`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeyGenJob {
    /// The API it was created through.
    pub api: HeyGenApi,
    /// `title`, if given.
    pub title: Option<String>,
    /// The one language this job translates into.
    pub output_language: String,
    /// `callback_id`, echoed in its webhook.
    pub callback_id: Option<String>,
}

/// Where a job is, in HeyGen's words (the v2 spelling; v3 differs for success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting in the queue.
    Pending,
    /// Being translated.
    Running,
    /// Done: the video is ready.
    Success,
    /// Failed (or canceled), with a message.
    Failed(&'static str),
}

impl Phase {
    /// The phase of a job whose status is `snap`.
    pub fn of(job: &Job, snap: &Snapshot, queued_fraction: f64) -> Self {
        match snap.state {
            State::Pending if job.hang || snap.progress < queued_fraction => Phase::Pending,
            State::Pending => Phase::Running,
            State::Done(Outcome::Completed) => Phase::Success,
            State::Done(Outcome::Error) => Phase::Failed(FAILED_MESSAGE),
            State::Canceled => Phase::Failed(CANCELED_MESSAGE),
        }
    }

    /// The v2 `status` word.
    pub fn v2(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Running => "running",
            Phase::Success => "success",
            Phase::Failed(_) => "failed",
        }
    }

    /// The v3 `status` word.
    pub fn v3(self) -> &'static str {
        match self {
            Phase::Success => "completed",
            other => other.v2(),
        }
    }

    /// The failure message, when failed.
    pub fn message(self) -> Option<&'static str> {
        match self {
            Phase::Failed(m) => Some(m),
            _ => None,
        }
    }
}

/// Signs video URLs: a new URL on every call.
#[derive(Debug)]
pub struct UrlSigner {
    /// `heygen.video_url_base`, without a trailing `/`.
    base: String,
    /// `heygen.url_ttl`.
    ttl: Duration,
    /// HMAC key, drawn at start-up.
    key: [u8; 32],
    /// Makes every URL new, even two in the same second.
    nonce: AtomicU64,
}

impl UrlSigner {
    /// From validated settings, with a fresh key.
    pub fn new(settings: &HeyGenSettings) -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        UrlSigner {
            base: settings.video_url_base.trim_end_matches('/').to_owned(),
            ttl: settings.url_ttl,
            key,
            nonce: AtomicU64::new(0),
        }
    }

    /// `{base}/{id}.mp4?Expires={unix}&nonce={n}&sig={hex}`, new on every call.
    pub fn sign(&self, id: &str) -> String {
        let expires = SystemTime::now()
            .checked_add(self.ttl)
            .unwrap_or_else(SystemTime::now)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let message = format!("{id}:{expires}:{nonce}");
        let sig = hmac_hex(&self.key, message.as_bytes());
        // Job ids are `j-` and hex digits, or `legacy`: nothing to escape.
        format!(
            "{}/{id}.mp4?Expires={expires}&nonce={nonce}&sig={sig}",
            self.base
        )
    }
}

/// Hex HMAC-SHA256 of `body` under `key`: HeyGen's webhook signature.
pub fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error case cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// HeyGen's webhook body: `video_translate.success` or `video_translate.fail`.
#[derive(Debug, Serialize)]
pub struct WebhookEvent<'a> {
    /// `video_translate.success` or `video_translate.fail`.
    pub event_type: &'static str,
    /// What happened to which job.
    pub event_data: WebhookData<'a>,
}

/// `event_data` of [`WebhookEvent`].
#[derive(Debug, Serialize)]
pub struct WebhookData<'a> {
    /// The job's id.
    pub video_translate_id: &'a str,
    /// The signed video URL (success only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The failure message (fail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
    /// The job's `callback_id` (`null` without one).
    pub callback_id: Option<&'a str>,
    /// The job's output language.
    pub output_language: &'a str,
}

/// The webhook body of `job` at `phase`, or `None` while it has not ended.
pub fn webhook_event<'a>(
    job: &'a Job,
    meta: &'a HeyGenJob,
    phase: Phase,
    urls: &UrlSigner,
) -> Option<WebhookEvent<'a>> {
    let (event_type, url, message) = match phase {
        Phase::Pending | Phase::Running => return None,
        Phase::Success => ("video_translate.success", Some(urls.sign(&job.id)), None),
        Phase::Failed(m) => ("video_translate.fail", None, Some(m)),
    };
    Some(WebhookEvent {
        event_type,
        event_data: WebhookData {
            video_translate_id: &job.id,
            url,
            message,
            callback_id: meta.callback_id.as_deref(),
            output_language: &meta.output_language,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(duration_ms: u64, outcome: Outcome) -> Job {
        Job::new(
            "j-1".into(),
            Duration::from_millis(duration_ms),
            outcome,
            1.0,
            None,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn states_read_in_heygen_words() {
        let j = job(1000, Outcome::Completed);
        let at = |ms| j.snapshot(j.created + Duration::from_millis(ms));
        let phase = |ms| Phase::of(&j, &at(ms), 0.1);
        assert_eq!(phase(0), Phase::Pending);
        assert_eq!(phase(99), Phase::Pending);
        assert_eq!(phase(100), Phase::Running);
        assert_eq!(phase(999), Phase::Running);
        assert_eq!(
            (phase(1000).v2(), phase(1000).v3()),
            ("success", "completed")
        );
        assert_eq!(phase(1000).message(), None);
        let e = job(0, Outcome::Error);
        let p = Phase::of(&e, &e.snapshot(e.created), 0.1);
        assert_eq!(
            (p.v2(), p.v3(), p.message()),
            ("failed", "failed", Some(FAILED_MESSAGE))
        );
        let c = job(1000, Outcome::Completed);
        c.cancel(c.created + Duration::from_millis(500));
        let p = Phase::of(&c, &c.snapshot(c.created + Duration::from_secs(9)), 0.1);
        assert_eq!((p.v2(), p.message()), ("failed", Some(CANCELED_MESSAGE)));
        let h = job(10, Outcome::Completed).hanging();
        let p = Phase::of(&h, &h.snapshot(h.created + Duration::from_secs(60)), 0.0);
        assert_eq!(p, Phase::Pending, "a stuck job never leaves the queue");
    }

    #[test]
    fn every_signed_url_is_new_and_bounded() {
        let settings = crate::Settings::default().heygen;
        let urls = UrlSigner::new(&settings);
        let a = urls.sign("j-00000000000000ff");
        let b = urls.sign("j-00000000000000ff");
        assert_ne!(a, b);
        for u in [&a, &b] {
            let parsed = url::Url::parse(u).unwrap();
            assert!(parsed.path().ends_with("/j-00000000000000ff.mp4"), "{u}");
            let sig = parsed.query_pairs().find(|(k, _)| k == "sig").unwrap().1;
            assert_eq!(sig.len(), 64, "{u}");
            assert!(u.len() < settings.video_url_base.len() + 200);
        }
    }

    #[test]
    fn webhook_signatures_are_hex_hmac_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
