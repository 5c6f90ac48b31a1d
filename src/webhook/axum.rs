//! An axum handler for webhook deliveries (feature `axum`).
//!
//! ```
//! use axum::Router;
//! use translation_status::webhook::{Receiver, Secret, WebhookEvent, axum::route};
//!
//! # fn demo() -> Result<(), translation_status::webhook::WebhookError> {
//! let receiver = Receiver::heygen(Secret::raw("heygen-simulator-development-secret")?).build()?;
//! let (events, mut arrived) = tokio::sync::mpsc::channel::<WebhookEvent>(1024);
//! let app: Router = Router::new().route("/hooks/heygen", route(receiver, events));
//! // Serve `app`; each verified event arrives on `arrived`.
//! # Ok(()) }
//! ```
//!
//! Each `POST` is read within the receiver's [`max_body`](super::ReceiverBuilder::max_body)
//! (a larger `Content-Length` is refused before a byte is read) and
//! [`body_timeout`](super::ReceiverBuilder::body_timeout), then
//! [`Receiver::receive`](super::Receiver::receive)d. The answers:
//!
//! | answer | when |
//! | --- | --- |
//! | `204 No Content` | verified, and the sink took the event |
//! | `200 OK` | a delivery already received (a replay): acknowledged, not handed on again |
//! | `400`, `401`, `413` | refused, as [`WebhookError::status`](super::WebhookError::status) says, with `{"error": {"code", "message"}}` |
//! | `408 Request Timeout` | the body did not arrive within the timeout |
//! | `503 Service Unavailable` | the sink did not take the event: its id is forgotten, so the sender's retry is received |

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use futures_util::StreamExt;
use serde_json::json;

use super::{EventSink, Receiver, WebhookError};

/// A `POST` route that receives deliveries with `receiver` and hands each event to `sink`. It
/// extracts no state, so it mounts on a router of any state type.
pub fn route<S, State>(receiver: Receiver, sink: S) -> MethodRouter<State>
where
    S: EventSink,
    State: Clone + Send + Sync + 'static,
{
    post(move |headers: HeaderMap, body: Body| {
        let (receiver, sink) = (receiver.clone(), sink.clone());
        async move { handle(&receiver, &sink, &headers, body).await }
    })
}

async fn handle<S: EventSink>(
    receiver: &Receiver,
    sink: &S,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let limit = receiver.max_body();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit as u64
    {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        return refusal(&WebhookError::BodyTooLarge { len, limit });
    }
    let body = match tokio::time::timeout(receiver.body_timeout(), read(body, limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(Read::TooLarge(len))) => {
            return refusal(&WebhookError::BodyTooLarge { len, limit });
        }
        Ok(Err(Read::Broken)) => {
            return answer(
                StatusCode::BAD_REQUEST,
                "body",
                "the body could not be read",
            );
        }
        Err(_) => {
            return answer(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            );
        }
    };
    let event = match receiver.receive(headers, &body, crate::clock::now()) {
        Ok(event) => event,
        Err(e) if e.is_replay() => return StatusCode::OK.into_response(),
        Err(e) => {
            tracing::debug!(code = e.code(), error = %e, "webhook delivery refused");
            return refusal(&e);
        }
    };
    let delivery = event.delivery_id.clone();
    match sink.deliver(event).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            receiver.forget(&delivery);
            tracing::warn!(error = %e, "a verified webhook event was not taken; the sender will retry");
            answer(StatusCode::SERVICE_UNAVAILABLE, "sink", &e.to_string())
        }
    }
}

enum Read {
    /// More than the limit: how much had arrived.
    TooLarge(usize),
    Broken,
}

/// The body, at most `limit` bytes.
async fn read(body: Body, limit: usize) -> Result<Vec<u8>, Read> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|_| Read::Broken)?;
        let len = out.len().saturating_add(chunk.len());
        if len > limit {
            return Err(Read::TooLarge(len));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn refusal(e: &WebhookError) -> Response {
    answer(e.status(), e.code(), &e.to_string())
}

fn answer(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}
