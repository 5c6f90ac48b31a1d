//! Optional JSON bodies with typed errors: empty → `None`, wrong media type → 415,
//! too large → 413, bad syntax → 400, well-formed but unacceptable → 422.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A body of the simulator's own routes: a well-formed body that does not fit is
/// `422 invalid_job`.
pub(crate) fn optional_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<T>, ApiError> {
    optional_json_as(headers, body, "invalid_job")
}

/// The answer to a body that could not be read: `413` past `server.max_body_bytes`, else `400`.
pub(crate) fn unreadable(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than server.max_body_bytes",
        )
    } else {
        ApiError::bad_request(format!(
            "could not read the body: {}",
            rejection.body_text()
        ))
    }
}

/// As [`optional_json`], with `invalid` as the code of a well-formed body that does not fit.
pub(crate) fn optional_json_as<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    invalid: &'static str,
) -> Result<Option<T>, ApiError> {
    let body = body.map_err(|rejection| unreadable(&rejection))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::unprocessable(invalid, e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request(format!("malformed JSON: {e}"))
            }
        }
    })
}
