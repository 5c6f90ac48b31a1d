//! The one function that reads a status answer through a profile.
//!
//! Only the state is required: from the HTTP status when the profile maps it, else the word at
//! the state pointer, looked up without case and surrounding spaces. A word in none of the
//! profile's sets is [`JobState::Unknown`], never an error. Every other field is read when its
//! pointer is set and what is there is usable, and ignored otherwise: a field of the wrong
//! type, an out-of-range number or an oversized string never fails a status.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Canonical, Compiled, ProgressScale};
use crate::model::{
    JobFailure, JobState, JobStatus, MAX_RESULT_URL, MAX_WORD, ParseError, bounded, message,
};

/// The longest job id kept ([`JobStatus::id`]); a longer one is dropped.
pub(crate) const MAX_ID: usize = 256;

impl Compiled {
    /// Reads a status answer: its HTTP status and body.
    pub(super) fn decode(&self, http_status: u16, body: &[u8]) -> Result<JobStatus, ParseError> {
        let coded = self.codes.get(&http_status).copied();
        let doc: Option<Value> = match serde_json::from_slice(body) {
            Ok(doc) => Some(doc),
            Err(_) if coded.is_some() => None,
            Err(e) => return Err(ParseError(format!("not JSON: {e}"))),
        };
        let field = |pointer: &Option<String>| -> Option<&Value> {
            doc.as_ref()?.pointer(pointer.as_deref()?)
        };
        let fields = &self.spec.fields;
        let word = match (field(&fields.state), coded) {
            (Some(Value::String(word)), _) => Some(word.as_str()),
            (_, Some(_)) => None,
            (Some(other), None) => {
                return Err(ParseError(format!(
                    "the state at {:?} must be a string, got {}",
                    fields.state.as_deref().unwrap_or_default(),
                    kind(other)
                )));
            }
            (None, None) => {
                return Err(ParseError(format!(
                    "no state at {:?}",
                    fields.state.as_deref().unwrap_or_default()
                )));
            }
        };
        let canonical = coded.or_else(|| self.words.get(&super::spec::normalize(word?)).copied());
        let string = |pointer: &Option<String>| match field(pointer)? {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        };
        let state = match canonical {
            Some(Canonical::Queued) => JobState::Queued,
            Some(Canonical::Running) => JobState::Pending {
                eta: field(&fields.eta_ms).and_then(duration_ms),
            },
            Some(Canonical::Succeeded) => JobState::Completed,
            Some(Canonical::Failed) => JobState::Failed(JobFailure {
                code: string(&fields.error_code).map(|c| bounded(c, MAX_WORD)),
                message: string(&fields.error_message).map(message),
            }),
            Some(Canonical::Canceled) => JobState::Canceled,
            None => JobState::Unknown(bounded(word.unwrap_or_default(), MAX_WORD)),
        };
        Ok(JobStatus {
            id: match field(&fields.id) {
                Some(Value::String(id)) if id.len() <= MAX_ID => Some(id.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            state,
            raw_state: Some(match word {
                Some(word) => bounded(word, MAX_WORD),
                None => http_status.to_string(),
            }),
            result_url: field(&fields.result_url).and_then(result_url),
            progress: field(&fields.progress)
                .and_then(Value::as_f64)
                .and_then(|p| fraction(p, self.spec.progress_scale)),
            created_at: field(&fields.created_at).and_then(timestamp),
            completed_at: field(&fields.completed_at).and_then(timestamp),
        })
    }

    /// The progress a progress event reports (`data` is its JSON), as a fraction.
    pub(super) fn progress_of(&self, data: &str) -> Option<f64> {
        let pointer = self.spec.fields.progress.as_deref()?;
        serde_json::from_str::<Value>(data)
            .ok()?
            .pointer(pointer)?
            .as_f64()
            .and_then(|p| fraction(p, self.spec.progress_scale))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A result URL: an http(s) URL (or the first of a list of them), at most
/// [`MAX_RESULT_URL`] bytes.
fn result_url(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Array(items) => items.iter().find_map(Value::as_str)?,
        _ => return None,
    };
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    let web = lower.starts_with("https://") || lower.starts_with("http://");
    if !web || text.len() > MAX_RESULT_URL {
        tracing::debug!(
            url = %crate::redact::without_query(crate::model::bounded(text, 256).as_str()),
            bytes = text.len(),
            "a result URL that is not an http(s) URL or is too long; not kept"
        );
        return None;
    }
    Some(text.to_owned())
}

/// A reported progress as a fraction, by the profile's scale. `Auto` is the rule on
/// [`JobStatus::progress`]: `[0, 1]` is a fraction, `(1, 100]` a percentage. Anything out of
/// its scale is no reading, never clamped to done.
pub(crate) fn fraction(reported: f64, scale: ProgressScale) -> Option<f64> {
    match scale {
        ProgressScale::Fraction => (0.0..=1.0).contains(&reported).then_some(reported),
        ProgressScale::Percent => (0.0..=100.0)
            .contains(&reported)
            .then_some(reported / 100.0),
        ProgressScale::Auto => match reported {
            p if (0.0..=1.0).contains(&p) => Some(p),
            p if p > 1.0 && p <= 100.0 => Some(p / 100.0),
            _ => None,
        },
    }
}

fn duration_ms(value: &Value) -> Option<Duration> {
    let ms = value.as_f64()?;
    (0.0..1e15)
        .contains(&ms)
        .then(|| crate::poll::seconds(ms / 1000.0))
}

/// An RFC 3339 string, or a number of seconds since the Unix epoch (before the year 5000).
fn timestamp(value: &Value) -> Option<SystemTime> {
    match value {
        Value::String(s) => humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok(),
        Value::Number(n) => {
            let secs = n.as_f64()?;
            (0.0..1e11)
                .contains(&secs)
                .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
        }
        _ => None,
    }
}
