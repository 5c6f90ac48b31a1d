//! Creates with `Idempotency-Key` (the table and its rules are in `sim::idempotency`).
//!
//! The key is looked up, and claimed if new, *before* the body is read: a repeat that arrives
//! while the first request's body is still coming in finds it in flight (`409`), and the first
//! is served as if it were alone. A creation answer is kept as the bytes that were sent, so a
//! replay is the same status, `Location` and body, marked `Idempotent-Replayed: true`.
//!
//! With the Redis backend the table is in Redis (`sim/redis/lua/idempotency.lua`): a key is
//! claimed there with a token, so a repeat on another replica finds it in flight or answered.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::sim::client::ClientId;
use std::sync::Arc;

use crate::sim::idempotency::{Answer, BadKey, Found, Ticket, fingerprint, key_of};
use crate::sim::redis::Op;

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

/// What looking a key up found, in this process's table or in Redis's.
enum Lookup<'a> {
    /// The first request with the key: serve it, then remember the answer.
    First(Claim<'a>),
    /// The first request is in flight.
    InFlight,
    /// The first request was answered so.
    Answered(Arc<Answer>),
}

/// The right to answer a key first. Dropped without [`Claim::finish`] (a refusal, or the
/// client went away), the key is forgotten.
enum Claim<'a> {
    /// In this process's table.
    Here(Ticket<'a>),
    /// In Redis.
    Shared(SharedClaim),
}

/// A key claimed in Redis, under `name`, with `token`.
struct SharedClaim {
    state: AppState,
    name: String,
    token: String,
    finished: bool,
}

impl Claim<'_> {
    /// Remembers `created` (the answer to a body with fingerprint `print`) for the key.
    async fn finish(self, print: [u8; 32], created: &Created) {
        let mut claim = match self {
            Claim::Here(ticket) => {
                ticket.finish(Answer::new(
                    print,
                    created.status,
                    created.location.clone(),
                    created.body.clone(),
                ));
                return;
            }
            Claim::Shared(claim) => claim,
        };
        let Some(redis) = claim.state.redis() else {
            return;
        };
        let ttl = micros(claim.state.inner.settings.idempotency.ttl);
        let location = created
            .location
            .as_ref()
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = String::from_utf8_lossy(&created.body).into_owned();
        let args = [
            "finish",
            claim.name.as_str(),
            claim.token.as_str(),
            &hex(&print),
            &created.status.as_u16().to_string(),
            &location,
            &body,
            &ttl.to_string(),
        ];
        // Not remembered if Redis went away meanwhile: a retry is then decided afresh, as
        // after a refusal.
        if redis.run(Op::Idempotency, &args).await.is_ok() {
            claim.finished = true;
        }
    }
}

impl Drop for SharedClaim {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (state, name, token) = (
            self.state.clone(),
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.token),
        );
        tokio::spawn(async move {
            if let Some(redis) = state.redis() {
                let _ = redis.run(Op::Idempotency, &["drop", &name, &token]).await;
            }
        });
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Looks `key` up for `client` on `route`, and claims it if it is new.
async fn look_up<'a>(
    state: &'a AppState,
    client: ClientId,
    route: &'static str,
    key: Arc<str>,
) -> Result<Lookup<'a>, ApiError> {
    let Some(redis) = state.redis() else {
        return Ok(
            match state
                .inner
                .idempotency
                .begin(client, route, key, Instant::now())
            {
                Found::First(ticket) => Lookup::First(Claim::Here(ticket)),
                Found::InFlight => Lookup::InFlight,
                Found::Answered(answer) => Lookup::Answered(answer),
            },
        );
    };
    let s = &state.inner.settings;
    let name = format!("{}:{route}:{key}", client.key());
    let token = format!("{:016x}", rand::random::<u64>());
    // A claim outlives any request that holds it (server.request_timeout bounds those).
    let in_flight = s
        .server
        .request_timeout
        .saturating_mul(2)
        .as_millis()
        .max(1);
    let args = [
        "begin",
        name.as_str(),
        token.as_str(),
        &in_flight.to_string(),
        &s.idempotency.max_keys.to_string(),
        &micros(s.idempotency.ttl).to_string(),
    ];
    let reply = redis
        .run(Op::Idempotency, &args)
        .await
        .map_err(|_| state.unavailable())?;
    Ok(match reply.first().map(String::as_str) {
        Some("first") => Lookup::First(Claim::Shared(SharedClaim {
            state: state.clone(),
            name,
            token,
            finished: false,
        })),
        Some("done") => {
            let field = |i: usize| reply.get(i).map(String::as_str).unwrap_or_default();
            let status = field(2)
                .parse::<u16>()
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            let location = Some(field(3))
                .filter(|l| !l.is_empty())
                .and_then(|l| HeaderValue::from_str(l).ok());
            Lookup::Answered(Arc::new(Answer::new(
                unhex(field(1)).unwrap_or_default(),
                status,
                location,
                Bytes::from(field(4).to_owned()),
            )))
        }
        _ => Lookup::InFlight,
    })
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
    F: AsyncFnOnce(&HeaderMap, Result<Bytes, BytesRejection>) -> Result<Created, ApiError>,
{
    let max_len = state.inner.settings.idempotency.max_key_len;
    let headers = request.headers().clone();
    let key = key_of(&headers, max_len).map_err(|why| bad_key(why, max_len))?;
    let Some(key) = key else {
        let body = Bytes::from_request(request, state).await;
        return create(&headers, body)
            .await
            .map(IntoResponse::into_response);
    };
    match look_up(state, client, route, key).await? {
        Lookup::InFlight => Err(ApiError::new(
            StatusCode::CONFLICT,
            "request_in_progress",
            "a request with this Idempotency-Key is still being processed; retry when it has \
             been answered",
        )),
        Lookup::Answered(answer) => {
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
        Lookup::First(claim) => {
            let body = Bytes::from_request(request, state).await;
            let print = body.as_ref().ok().map(|b| fingerprint(b));
            // A refusal drops the claim: the key is forgotten and a retry is decided afresh.
            let created = create(&headers, body).await?;
            if let Some(print) = print {
                claim.finish(print, &created).await;
            }
            Ok(created.into_response())
        }
    }
}
