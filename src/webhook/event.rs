//! What a verified delivery says: the job, and its status as a status read would give it.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use super::WebhookError;
use crate::model::JobStatus;
use crate::profile::Profile;

/// HeyGen's webhook envelope, read once. Its file is part of this crate and a test reads it:
/// failing here is a bug of this crate, not something a caller can cause.
static HEYGEN: LazyLock<Profile> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Profile::from_toml_str(include_str!("heygen-event.toml"))
        .expect("the built-in HeyGen webhook profile reads")
});

/// The profile that reads HeyGen's video-translate webhooks (`video_translate.success` with
/// `url`, `video_translate.fail` with `message`): the same canonical status a `heygen-v2`
/// status read gives. Its file is `src/webhook/heygen-event.toml`.
pub fn heygen_event_profile() -> Profile {
    HEYGEN.clone()
}

/// A verified webhook delivery, decoded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The job it is about.
    pub job_id: String,
    /// The job's status, as [`Profile::decode`] reads the body: what a status read through
    /// the receiver's profile would give.
    pub status: JobStatus,
    /// The delivery's id: `webhook-id` for Standard Webhooks, the matching signature (hex)
    /// for schemes without an id. The same for a retry of a Standard Webhooks delivery.
    pub delivery_id: String,
    /// When the sender signed it, for schemes with a timestamp.
    pub signed_at: Option<SystemTime>,
}

/// Reads a verified body through `profile`.
pub(super) fn decode(
    profile: &Profile,
    body: &[u8],
    delivery_id: String,
    timestamp: Option<u64>,
) -> Result<WebhookEvent, WebhookError> {
    let status = profile
        .decode(200, body)
        .map_err(|e| WebhookError::Undecodable(e.to_string()))?;
    let job_id = status
        .id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            WebhookError::Undecodable(format!(
                "no job id where the `{}` profile looks for it",
                profile.name()
            ))
        })?;
    Ok(WebhookEvent {
        job_id,
        status,
        delivery_id,
        signed_at: timestamp.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
    })
}
