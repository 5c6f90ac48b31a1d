//! Why a webhook delivery was refused, or a receiver could not be made.

use std::time::Duration;

use http::StatusCode;

/// A refused webhook delivery, or a receiver that cannot be made (a bad secret, a limit out
/// of range). Never carries a secret, and nothing longer than a header the receiver accepted.
///
/// Variants name what was wrong; [`status`](Self::status) is the answer a receiver gives the
/// sender, [`code`](Self::code) a stable word for logs and response bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A header the scheme needs is absent.
    #[error("the webhook has no `{0}` header")]
    MissingHeader(&'static str),
    /// A header is present but not in the scheme's format (not text, too long, not a number,
    /// no signature of a known version, too many signatures).
    #[error("the webhook's `{header}` header is malformed: {problem}")]
    MalformedHeader {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No signature in the delivery matches the body under any of the receiver's secrets: a
    /// tampered body, a wrong secret, or a forgery.
    #[error("no signature of the webhook matches its body")]
    BadSignature,
    /// The signed timestamp is older than the tolerance: a late retry or a replay.
    #[error("the webhook was signed {age:?} ago, more than the {tolerance:?} tolerated")]
    StaleTimestamp {
        /// How old the timestamp is.
        age: Duration,
        /// The receiver's tolerance.
        tolerance: Duration,
    },
    /// The signed timestamp is further in the future than the tolerance: a sender's clock far
    /// ahead, or a delivery forged to outlive the replay cache.
    #[error("the webhook is signed {ahead:?} in the future, more than the {tolerance:?} tolerated")]
    FutureTimestamp {
        /// How far ahead the timestamp is.
        ahead: Duration,
        /// The receiver's tolerance.
        tolerance: Duration,
    },
    /// This delivery was already received (its id is in the replay cache): a retry of a
    /// delivery whose answer was lost, or a replay. Acknowledge it, do not act on it again.
    #[error("delivery {delivery_id} was already received")]
    Replay {
        /// The delivery's id.
        delivery_id: String,
    },
    /// The body is larger than the receiver's limit.
    #[error("the webhook body has {len} bytes, more than the limit of {limit}")]
    BodyTooLarge {
        /// The body's length, or at least how much of it was read.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The verified body is not an event the receiver's profile reads (not JSON, no state, no
    /// job id).
    #[error("the webhook is signed but not an event this receiver reads: {0}")]
    Undecodable(String),
    /// A secret cannot be used: empty, not base64 after `whsec_`, too many.
    #[error("bad webhook secret: {0}")]
    BadSecret(&'static str),
    /// A receiver setting is out of range.
    #[error("bad webhook setting `{setting}`: {problem}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What is wrong, and what to use instead.
        problem: &'static str,
    },
}

impl WebhookError {
    /// The answer a receiver gives the sender: `200` for a replay (the sender may stop
    /// retrying: it was received), `400` for a missing or malformed header or a body that is
    /// not an event, `401` for a signature or timestamp that does not verify, `413` for an
    /// oversized body, `500` for a receiver that is misconfigured.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::Replay { .. } => StatusCode::OK,
            WebhookError::MissingHeader(_)
            | WebhookError::MalformedHeader { .. }
            | WebhookError::Undecodable(_) => StatusCode::BAD_REQUEST,
            WebhookError::BadSignature
            | WebhookError::StaleTimestamp { .. }
            | WebhookError::FutureTimestamp { .. } => StatusCode::UNAUTHORIZED,
            WebhookError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BadSecret(_) | WebhookError::Config { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// A stable word for the refusal: `missing_header`, `malformed_header`, `bad_signature`,
    /// `stale_timestamp`, `future_timestamp`, `replay`, `body_too_large`, `undecodable`,
    /// `bad_secret`, `config`.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::MissingHeader(_) => "missing_header",
            WebhookError::MalformedHeader { .. } => "malformed_header",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::StaleTimestamp { .. } => "stale_timestamp",
            WebhookError::FutureTimestamp { .. } => "future_timestamp",
            WebhookError::Replay { .. } => "replay",
            WebhookError::BodyTooLarge { .. } => "body_too_large",
            WebhookError::Undecodable(_) => "undecodable",
            WebhookError::BadSecret(_) => "bad_secret",
            WebhookError::Config { .. } => "config",
        }
    }

    /// `true` for a delivery already received: acknowledge it (`2xx`), do not act on it.
    pub fn is_replay(&self) -> bool {
        matches!(self, WebhookError::Replay { .. })
    }

    pub(super) fn malformed(header: &'static str, problem: &'static str) -> Self {
        WebhookError::MalformedHeader { header, problem }
    }
}
