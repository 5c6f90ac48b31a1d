//! Creates with `Idempotency-Key` (the table and its rules are in `sim::idempotency`).
//!
//! The key is looked up, and claimed if new, *before* the body is read: a repeat that arrives
//! while the first request's body is still coming in finds it in flight (`409`), and the first
//! is served as if it were alone. A creation answer is kept as the bytes that were sent, so a
//! replay is the same status, `Location` and body, marked `Idempotent-Replayed: true`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::sim::client::ClientId;
use crate::sim::idempotency::{Answer, BadKey, Found, fingerprint, key_of};

/// A creation answer, as it is sent and as it is remembered.
#[derive(Debug)]
pub(crate) struct Created {
    status: StatusCode,
    location: Option<HeaderValue>,
    body: Bytes,
}

impl Created {
    /// `value` as JSON, with `status` and an optional `Location`.
    pub(crate) fn json(
        status: StatusCode,
        location: Option<String>,
        value: &serde_json::Value,
    ) -> Self {
        Created {
            status,
            location: location.and_then(|l| HeaderValue::from_str(&l).ok()),
            body: Bytes::from(value.to_string()),
        }
    }

    fn respond(status: StatusCode, location: Option<&HeaderValue>, body: Bytes) -> Response {
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(location) = location {
            headers.insert(header::LOCATION, location.clone());
        }
        response
    }
}

impl IntoResponse for Created {
    fn into_response(self) -> Response {
        Self::respond(self.status, self.location.as_ref(), self.body)
    }
}

fn bad_key(why: BadKey, max_len: usize) -> ApiError {
    let message = match why {
        BadKey::Malformed => format!(
            "Idempotency-Key must be 1 to {max_len} characters from A-Z a-z 0-9 _ : . - \
             (idempotency.max_key_len)"
        ),
        BadKey::Repeated => "send at most one Idempotency-Key header".to_owned(),
    };
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", message)
}

/// Serves the create `create` of `route` for `client`, once per `Idempotency-Key` when the
/// request carries one. `create` gets the request's headers and body and is called at most
/// once; it is not called for a replay or a refused key.
pub(crate) async fn create_once<F>(
    state: &AppState,
    client: ClientId,
    route: &'static str,
    request: Request,
    create: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(&HeaderMap, Result<Bytes, BytesRejection>) -> Result<Created, ApiError>,
{
    let max_len = state.inner.settings.idempotency.max_key_len;
    let headers = request.headers().clone();
    let key = key_of(&headers, max_len).map_err(|why| bad_key(why, max_len))?;
    let Some(key) = key else {
        let body = Bytes::from_request(request, state).await;
        return create(&headers, body).map(IntoResponse::into_response);
    };
    match state
        .inner
        .idempotency
        .begin(client, route, key, Instant::now())
    {
        Found::InFlight => Err(ApiError::new(
            StatusCode::CONFLICT,
            "request_in_progress",
            "a request with this Idempotency-Key is still being processed; retry when it has \
             been answered",
        )),
        Found::Answered(answer) => {
            let body = Bytes::from_request(request, state)
                .await
                .map_err(|rejection| super::body::unreadable(&rejection))?;
            if !answer.answers(&fingerprint(&body)) {
                return Err(ApiError::unprocessable(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another request body; use a new key \
                     for a new request",
                ));
            }
            let mut response =
                Created::respond(answer.status, answer.location.as_ref(), answer.body.clone());
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        Found::First(ticket) => {
            let body = Bytes::from_request(request, state).await;
            let print = body.as_ref().ok().map(|b| fingerprint(b));
            // A refusal drops the ticket: the key is forgotten and a retry is decided afresh.
            let created = create(&headers, body)?;
            if let Some(print) = print {
                ticket.finish(Answer::new(
                    print,
                    created.status,
                    created.location.clone(),
                    created.body.clone(),
                ));
            }
            Ok(created.into_response())
        }
    }
}
