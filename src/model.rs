//! What the service says about a job, parsed leniently.
//!
//! The only field this crate requires is `result`. Everything else (`progress`, `eta_ms`,
//! timestamps, `error`) is used when present and well-formed and ignored otherwise (progress
//! in either scale, a fraction or a percentage: see [`JobStatus::progress`]), so the
//! client works unchanged against the original `GET /status → {"result": ..}` server. Result
//! strings are compared case-insensitively; one this version does not know becomes
//! [`JobState::Unknown`] instead of an error or a panic.
//!
//! Every state is one of five canonical ones — queued, running, succeeded, failed, canceled
//! ([`JobState::Queued`], [`JobState::Pending`], [`JobState::Completed`],
//! [`JobState::Failed`], [`JobState::Canceled`]) — or [`JobState::Unknown`]; the word the
//! service used is kept beside it ([`JobStatus::raw_state`]).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// One reading of a job's status.
///
/// `Debug` shows the [`result_url`](Self::result_url) without its query: a signed URL is a
/// credential for as long as it is valid.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job id, when the service reports it (the plain `/status` server does not).
    pub id: Option<String>,
    /// Where the job is: queued, running (`Pending`), completed, failed, canceled, or a state
    /// this version does not know.
    pub state: JobState,
    /// The word the service used for the state, as it wrote it (`"success"`, `"in_progress"`,
    /// `"Pending "`), at most [`MAX_WORD`] bytes; `None` when the status was made in code.
    pub raw_state: Option<String>,
    /// Where the result is (a video URL), when the service says so. Such URLs are often
    /// signed, and signed anew on every read: this crate never logs one in full, and a new
    /// signature alone is not a change of status. At most [`MAX_RESULT_URL`] bytes (a longer
    /// one is dropped).
    pub result_url: Option<String>,
    /// Progress as a fraction between 0 and 1, when reported.
    ///
    /// Services report either scale, so the reported number is read by one rule: from 0 to 1
    /// it is a fraction (`0.43`, and `1` is done); above 1 and up to 100 it is a percentage
    /// (`43` is `0.43`, `100` is done). Anything else — negative, above 100, not a finite
    /// number — is no reading (`None`), never clamped to done. The one ambiguous value, `1`,
    /// reads as a fraction: a service that counts in percent reports done as `100`.
    pub progress: Option<f64>,
    /// When the job was created (service clock), when reported.
    pub created_at: Option<SystemTime>,
    /// When the job reached its terminal state (service clock), when reported.
    pub completed_at: Option<SystemTime>,
}

impl JobStatus {
    /// A status with only a state, as the plain `/status` server reports it.
    pub fn new(state: JobState) -> Self {
        JobStatus {
            id: None,
            state,
            raw_state: None,
            result_url: None,
            progress: None,
            created_at: None,
            completed_at: None,
        }
    }

    /// Sets the progress, a fraction (clamped to `0..=1`; not a number is no progress).
    pub fn with_progress(mut self, progress: f64) -> Self {
        self.progress = (!progress.is_nan()).then(|| progress.clamp(0.0, 1.0));
        self
    }

    /// `true` for completed, failed and canceled: the job will not change any more.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// How long the job took, when the service reported both `created_at` and
    /// `completed_at`.
    pub fn duration(&self) -> Option<Duration> {
        let (created, completed) = (self.created_at?, self.completed_at?);
        completed.duration_since(created).ok()
    }

    /// The service's estimate of the time left, when pending and reported.
    pub fn eta(&self) -> Option<Duration> {
        match &self.state {
            JobState::Pending { eta } => *eta,
            _ => None,
        }
    }

    /// Parses a status body of the simulator's dialect (`{"result": .., ...}`): the default
    /// [`Profile`](crate::Profile)'s [`decode`](crate::Profile::decode).
    pub fn from_json(body: &[u8]) -> Result<JobStatus, ParseError> {
        crate::Profile::simulator().decode(200, body)
    }
}

impl fmt::Debug for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStatus")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("raw_state", &self.raw_state)
            .field(
                "result_url",
                &self.result_url.as_deref().map(crate::redact::without_query),
            )
            .field("progress", &self.progress)
            .field("created_at", &self.created_at)
            .field("completed_at", &self.completed_at)
            .finish()
    }
}

/// The longest state word kept ([`JobStatus::raw_state`], [`JobState::Unknown`]): a longer
/// one is cut at a character boundary. No service names a state in more.
pub const MAX_WORD: usize = 128;
/// The longest result URL kept ([`JobStatus::result_url`]); a longer one is dropped.
pub const MAX_RESULT_URL: usize = 16 * 1024;
/// The longest failure message kept ([`JobFailure::message`]); a longer one is cut, ending
/// with `…`.
pub const MAX_MESSAGE: usize = 4 * 1024;

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A failure message, cut to [`MAX_MESSAGE`] bytes (ending with `…` when cut).
pub(crate) fn message(text: &str) -> String {
    let mut kept = bounded(text, MAX_MESSAGE);
    if kept.len() < text.len() {
        kept.push('…');
    }
    kept
}

/// Where a job is: one of the five canonical states, or a word this version does not know.
///
/// | canonical | variant | terminal |
/// | --- | --- | --- |
/// | queued | [`Queued`](JobState::Queued) | no |
/// | running | [`Pending`](JobState::Pending) | no |
/// | succeeded | [`Completed`](JobState::Completed) | yes |
/// | failed | [`Failed`](JobState::Failed) | yes |
/// | canceled | [`Canceled`](JobState::Canceled) | yes |
/// | *(none)* | [`Unknown`](JobState::Unknown) | no |
///
/// A service that does not tell queued from running (the simulator's `pending`) reports
/// `Pending`: only [`is_terminal`](JobState::is_terminal) tells a caller whether to keep
/// waiting.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum JobState {
    /// Accepted, not started yet.
    Queued,
    /// Still running (or not yet known to have started). `eta` is the service's (noisy)
    /// estimate of the time left.
    Pending {
        /// Estimated time left, when the service gives one (`eta_ms`).
        eta: Option<Duration>,
    },
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed(JobFailure),
    /// Canceled before it finished: it will not finish.
    Canceled,
    /// A state word this version (or this client's profile) does not know, kept verbatim
    /// (at most [`MAX_WORD`] bytes). Not terminal: a wait reads again, and ends with
    /// [`Error::UnknownState`](crate::Error::UnknownState) when the word persists.
    Unknown(String),
}

impl JobState {
    /// `true` for [`Completed`](JobState::Completed), [`Failed`](JobState::Failed) and
    /// [`Canceled`](JobState::Canceled).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed(_) | JobState::Canceled
        )
    }

    /// The simulator's wire name: `queued`, `pending`, `completed`, `error`, `canceled`, or
    /// the unknown word.
    pub fn as_str(&self) -> &str {
        match self {
            JobState::Queued => "queued",
            JobState::Pending { .. } => "pending",
            JobState::Completed => "completed",
            JobState::Failed(_) => "error",
            JobState::Canceled => "canceled",
            JobState::Unknown(s) => s,
        }
    }

    /// The canonical name: `queued`, `running`, `succeeded`, `failed`, `canceled`, or
    /// `unknown`.
    pub fn canonical(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Pending { .. } => "running",
            JobState::Completed => "succeeded",
            JobState::Failed(_) => "failed",
            JobState::Canceled => "canceled",
            JobState::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobState::Failed(failure) => match (&failure.code, &failure.message) {
                (Some(code), Some(message)) => write!(f, "error ({code}: {message})"),
                (Some(code), None) => write!(f, "error ({code})"),
                (None, Some(message)) => write!(f, "error ({message})"),
                (None, None) => f.write_str("error"),
            },
            JobState::Unknown(s) => write!(f, "unknown state {s:?}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why a job failed, as far as the service said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct JobFailure {
    /// Machine-readable code (`error.code`).
    pub code: Option<String>,
    /// Human-readable message (`error.message`).
    pub message: Option<String>,
}

/// A body that is not a status document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub(crate) String);

/// What a new job should do (the simulator's `POST /v1/jobs` body). Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewJob {
    /// How long the job takes; the service draws one when unset.
    pub duration: Option<Duration>,
    /// How it ends; the service draws one when unset.
    pub outcome: Option<Outcome>,
    /// A URL the service will POST the terminal status to.
    pub callback_url: Option<String>,
    /// The `Idempotency-Key` to send (see [`NewJob::idempotency_key`]); a fresh one per call
    /// when unset.
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// A job whose duration and outcome the service chooses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the duration.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// Sets the webhook target.
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// The `Idempotency-Key` to send: 1 to 255 characters of `A-Z a-z 0-9 _ : . -`. Each
    /// [`Client::create_job`](crate::Client::create_job) call retries under its own key
    /// anyway; give one to make *your* retries of a failed call safe too — a repeat with the
    /// same key replays the first answer instead of creating a second job.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut body = serde_json::Map::new();
        if let Some(d) = self.duration {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            body.insert("duration_ms".into(), ms.into());
        }
        if let Some(outcome) = self.outcome {
            body.insert("outcome".into(), outcome.as_str().into());
        }
        if let Some(url) = &self.callback_url {
            body.insert("callback_url".into(), url.clone().into());
        }
        Value::Object(body)
    }
}

/// What to create with [`Client::create`](crate::Client::create), in any dialect whose
/// profile describes creation: the parameters its body template takes (or a whole body), and
/// an `Idempotency-Key`.
///
/// ```
/// use translation_status::CreateRequest;
/// let request = CreateRequest::new()
///     .param("video_url", "https://example.com/talk.mp4")
///     .param("languages", ["German (Germany)", "Japanese (Japan)"].as_slice())
///     .param("title", "Launch");
/// # let _ = request;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct CreateRequest {
    pub(crate) params: serde_json::Map<String, Value>,
    pub(crate) body: Option<Value>,
    pub(crate) idempotency_key: Option<String>,
}

impl CreateRequest {
    /// No parameters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a parameter of the profile's body template (`"{name}"` there is replaced by
    /// `value`; the built-in HeyGen templates take `video_url`, `language` (v2), `languages`
    /// (v3), and optionally `title`, `callback_id`, `callback_url`).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }

    /// Sends this body as it is, instead of the profile's template.
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// The `Idempotency-Key` to send: 1 to 255 characters of `A-Z a-z 0-9 _ : . -`. Without
    /// one, a key is made up for each call when the profile's API honours keys.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The key to send: the caller's (checked), or a fresh one when the API replays keyed
    /// creations (`honoured`), or none.
    pub(crate) fn key(&self, honoured: bool) -> Result<Option<String>, crate::Error> {
        idempotency_key(self.idempotency_key.as_deref(), honoured)
    }
}

/// The `Idempotency-Key` of a creation: `given` (checked), or a fresh one when the API replays
/// keyed creations (`honoured`), or none.
pub(crate) fn idempotency_key(
    given: Option<&str>,
    honoured: bool,
) -> Result<Option<String>, crate::Error> {
    match given {
        Some(key) => {
            let fine = (1..=255).contains(&key.len())
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'));
            if fine {
                Ok(Some(key.to_owned()))
            } else {
                Err(crate::Error::config(
                    "idempotency_key",
                    "use 1 to 255 characters of A-Z a-z 0-9 _ : . -",
                ))
            }
        }
        None if honoured => Ok(Some(format!("ts-{:032x}", rand::random::<u128>()))),
        None => Ok(None),
    }
}

/// How a job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The job completes.
    Completed,
    /// The job fails.
    Error,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(s: &str) -> Result<JobStatus, ParseError> {
        JobStatus::from_json(s.as_bytes())
    }

    #[test]
    fn plain_server_shapes() {
        let table = [
            (r#"{"result":"pending"}"#, JobState::Pending { eta: None }),
            (r#"{"result":"completed"}"#, JobState::Completed),
            (r#"{"result":"COMPLETED"}"#, JobState::Completed),
            (r#"{"result":" Pending "}"#, JobState::Pending { eta: None }),
            (
                r#"{"result":"error"}"#,
                JobState::Failed(JobFailure::default()),
            ),
            (r#"{"result":"Cancelled"}"#, JobState::Canceled),
            (r#"{"result":"canceled"}"#, JobState::Canceled),
            (r#"{"result":"queued"}"#, JobState::Queued),
            (r#"{"result":"paused"}"#, JobState::Unknown("paused".into())),
            (r#"{"result":""}"#, JobState::Unknown(String::new())),
        ];
        for (body, want) in table {
            let status = parse(body).unwrap();
            assert_eq!(status.state, want, "{body}");
            let word: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                status.raw_state.as_deref(),
                word["result"].as_str(),
                "verbatim"
            );
        }
        assert!(parse(r#"{"result":"canceled"}"#).unwrap().is_terminal());
        assert!(!parse(r#"{"result":"queued"}"#).unwrap().is_terminal());
    }

    #[test]
    fn words_and_messages_are_kept_within_bounds() {
        let long = "é".repeat(MAX_WORD);
        let s = parse(&format!(r#"{{"result":"{long}"}}"#)).unwrap();
        let JobState::Unknown(word) = &s.state else {
            panic!("{:?}", s.state)
        };
        assert!(word.len() <= MAX_WORD && long.starts_with(word.as_str()));
        assert_eq!(s.raw_state.as_deref(), Some(word.as_str()));
        let message = "x".repeat(MAX_MESSAGE + 10);
        let s = parse(&format!(
            r#"{{"result":"error","error":{{"message":"{message}"}}}}"#
        ))
        .unwrap();
        let JobState::Failed(failure) = s.state else {
            panic!()
        };
        let kept = failure.message.unwrap();
        assert!(kept.ends_with('…') && kept.len() <= MAX_MESSAGE + '…'.len_utf8());
    }

    #[test]
    fn debug_never_shows_a_signed_url_in_full() {
        let mut s = JobStatus::new(JobState::Completed);
        s.result_url = Some("https://cdn.example/j.mp4?Expires=1&Key-Pair-Id=K&Policy=p".into());
        let shown = format!("{s:?}");
        assert!(shown.contains("https://cdn.example/j.mp4?***"), "{shown}");
        assert!(!shown.contains("Policy"), "{shown}");
    }

    #[test]
    fn full_v1_status() {
        let s = parse(
            r#"{"id":"j-1","result":"pending","progress":0.42,"eta_ms":2900,
                "created_at":"2026-11-24T01:02:03.456Z","extra":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(s.id.as_deref(), Some("j-1"));
        assert_eq!(s.eta(), Some(Duration::from_millis(2900)));
        assert_eq!(s.progress, Some(0.42));
        assert!(s.created_at.is_some());
        assert!(!s.is_terminal());

        let s = parse(
            r#"{"id":"j-1","result":"error","progress":1.0,"created_at":"2026-11-24T01:02:03.456Z",
                "completed_at":"2026-11-24T01:02:08.456Z",
                "error":{"code":"translation_failed","message":"no audio"}}"#,
        )
        .unwrap();
        let elapsed = s
            .completed_at
            .unwrap()
            .duration_since(s.created_at.unwrap())
            .unwrap();
        assert_eq!(elapsed, Duration::from_secs(5));
        assert_eq!(
            s.state,
            JobState::Failed(JobFailure {
                code: Some("translation_failed".into()),
                message: Some("no audio".into())
            })
        );
        assert!(s.is_terminal());
        assert_eq!(s.state.to_string(), "error (translation_failed: no audio)");
    }

    #[test]
    fn optional_fields_of_the_wrong_type_are_ignored() {
        let s = parse(
            r#"{"result":"pending","progress":"half","eta_ms":-5,"created_at":true,"id":[7]}"#,
        )
        .unwrap();
        assert_eq!(s.raw_state.as_deref(), Some("pending"));
        assert_eq!(
            (s.id, s.state, s.progress, s.created_at),
            (None, JobState::Pending { eta: None }, None, None)
        );
        for eta in ["1e300", "-1", "1e15", "\"soon\""] {
            let s = parse(&format!(r#"{{"result":"pending","eta_ms":{eta}}}"#)).unwrap();
            assert_eq!(s.eta(), None, "{eta}");
        }
    }

    #[test]
    fn progress_is_a_fraction_or_a_percentage() {
        let table: [(&str, Option<f64>); 12] = [
            ("0", Some(0.0)),
            ("0.43", Some(0.43)),
            ("1", Some(1.0)),
            ("1.0", Some(1.0)),
            // Above 1 and up to 100: a percentage.
            ("43", Some(0.43)),
            ("7.5", Some(0.075)),
            ("100", Some(1.0)),
            // Neither: no reading, never "done".
            ("100.5", None),
            ("250", None),
            ("-0.2", None),
            ("-43", None),
            ("1e300", None),
        ];
        for (raw, want) in table {
            let body = format!(r#"{{"result":"pending","progress":{raw}}}"#);
            let got = parse(&body).unwrap().progress;
            match (got, want) {
                (Some(got), Some(want)) => assert!((got - want).abs() < 1e-12, "{raw}: {got}"),
                (got, want) => assert_eq!(got, want, "{raw}"),
            }
        }
        // A progress event carries the same field, read by the same rule.
        let progress_of = |data: &str| crate::Profile::simulator().progress_of(data);
        assert_eq!(progress_of(r#"{"progress":43}"#), Some(0.43));
        assert_eq!(
            progress_of(r#"{"progress":0.5,"result":"pending"}"#),
            Some(0.5)
        );
        assert_eq!(progress_of(r#"{"progress":-1}"#), None);
        assert_eq!(progress_of("not json"), None);
        // Set by hand: a fraction, clamped; not a number is no progress.
        let s = JobStatus::new(JobState::Pending { eta: None });
        assert_eq!(s.clone().with_progress(1.5).progress, Some(1.0));
        assert_eq!(s.with_progress(f64::NAN).progress, None);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            "",
            "{",
            "null",
            "[]",
            r#"{"status":"done"}"#,
            r#"{"result":3}"#,
            r#"{"result":null}"#,
            "\u{0}\u{1}",
            "<html>oops</html>",
        ] {
            assert!(parse(body).is_err(), "{body:?} parsed");
        }
    }

    #[test]
    fn new_job_body() {
        let body = NewJob::new()
            .duration(Duration::from_millis(1500))
            .outcome(Outcome::Error)
            .to_json();
        assert_eq!(
            body,
            serde_json::json!({"duration_ms": 1500, "outcome": "error"})
        );
        assert_eq!(NewJob::new().to_json(), serde_json::json!({}));
    }
}
