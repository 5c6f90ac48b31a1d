//! The `{id}` path segment as a typed extractor, so that a segment that does not decode (e.g.
//! `%FF`, not UTF-8) is a JSON `400` like every other bad input, not axum's plain-text
//! rejection.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::ApiError;

/// A job id taken from the route's `{id}`, percent-decoded.
#[derive(Debug)]
pub(crate) struct JobId(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(JobId(id)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::bad_request(format!(
                    "the job id in the path cannot be decoded: {}",
                    e.body_text()
                )))
            }
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}
