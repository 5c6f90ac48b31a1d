//! Middleware (their order and its reasons are in the parent module's docs).
//!
//! Every guard runs in one middleware, `edge`, as plain functions called in the documented
//! order: those of the whole router (`observe`, `heygen_v2_envelope`, `admit`), then those of
//! the job API (`api`) or of the operations routes (`timeout`), chosen by the matched route.
//! Each layer of `from_fn` boxes a future (about 1 KiB, held for as long as a long-poll is)
//! and clones the router's `Next`, which on a route answering tens of thousands of polls a
//! second is measurable.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::serve::OverCapacity;
use crate::sim::client::ClientId;
use crate::sim::faults::Fault;
use crate::sim::ratelimit::Decision;
use crate::sim::webhooks::constant_time_eq;
use crate::time::later;

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// Route templates as `&'static str`, so metric labels need no allocation per request. The set
/// is bounded by the router's own templates (plus [`UNMATCHED`]), never by client input.
fn route_label(req: &Request) -> &'static str {
    static ROUTES: OnceLock<Mutex<Vec<&'static str>>> = OnceLock::new();
    let Some(path) = req.extensions().get::<MatchedPath>() else {
        return UNMATCHED;
    };
    let path = path.as_str();
    let mut routes = ROUTES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(known) = routes.iter().find(|r| **r == path) {
        return known;
    }
    let leaked: &'static str = Box::leak(path.to_owned().into_boxed_str());
    routes.push(leaked);
    leaked
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Outermost, on every route, every guard in the documented order (one middleware: see the
/// module docs): `observe` — the `http.request` span (a child of the caller's trace when the
/// request carries W3C `traceparent`), and the request count and latency by route template —
/// around [`guard`].
///
/// A plain function, not an `async` one: its future is what a request holds for as long as it
/// is served — a long-poll for its whole wait — and an `async` body would keep room for the
/// request it moves on and for the future it awaits side by side; [`Observed`] holds [`guard`]'s
/// future alone.
pub(crate) fn edge(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Observed<impl Future<Output = Response>> {
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let started = Instant::now();
    let route = route_label(&req);
    let method = method_label(req.method());
    // Debug level: the stderr log (info by default) leaves it disabled, so a server that
    // exports no traces pays nothing for it; the OTLP layer enables it.
    let span = tracing::debug_span!(
        "http.request",
        otel.name = format_args!("{method} {route}").to_string(),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&crate::telemetry::HeaderExtractor(req.headers()))
        });
        let _ = span.set_parent(parent);
    }
    let guarded = guard(state.clone(), req, next, route);
    // Disabled unless traces are exported: then nothing needs entering on every poll, and the
    // instrumented future, boxed, costs nothing to the requests that do not use it.
    let answer = if span.is_disabled() {
        Either::Left(guarded)
    } else {
        Either::Right(Box::pin(guarded.instrument(span.clone())))
    };
    Observed {
        answer,
        state,
        started,
        route,
        method,
        span,
    }
}

pin_project_lite::pin_project! {
    /// A request's answer being served, counted and timed (and its span given the status)
    /// when it is ready.
    pub(crate) struct Observed<F> {
        #[pin]
        answer: F,
        state: AppState,
        started: Instant,
        route: &'static str,
        method: &'static str,
        span: tracing::Span,
    }
}

impl<F: Future<Output = Response>> Future for Observed<F> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = self.project();
        let response = std::task::ready!(this.answer.poll(cx));
        let status = response.status().as_u16();
        this.span.record("http.response.status_code", status);
        this.state.inner.metrics.http_request(
            this.route,
            this.method,
            status,
            this.started.elapsed(),
        );
        Poll::Ready(response)
    }
}

/// Below `observe`: `heygen_v2_envelope` around `admit`, then the route's own guards — the job
/// API's, or the timeout alone on the operations routes — and the handler.
async fn guard(state: AppState, mut req: Request, next: Next, route: &'static str) -> Response {
    let v2 = req.uri().path().starts_with("/v2/");
    let response = match admit(&state, &req) {
        Some(refused) => refused,
        None => match Guards::of(route) {
            Guards::None => next.run(req).await,
            Guards::Operations => timeout(&state, next.run(req)).await,
            Guards::Api => {
                // What the guards need of the request, taken before anything waits: a
                // request is not shared across threads, so a future must not hold a
                // reference to it.
                let hold = held(&req);
                let (client, authorized) = identify(&state, &req);
                let deadline = later(Instant::now(), state.inner.settings.server.request_timeout);
                let admitted =
                    tokio::time::timeout_at(deadline, api(&state, hold, client, authorized)).await;
                match admitted {
                    Err(_) => timed_out(),
                    Ok(Err(refused)) => refused,
                    Ok(Ok(headers)) => {
                        req.extensions_mut().insert(client);
                        let mut response = tokio::time::timeout_at(deadline, next.run(req))
                            .await
                            .unwrap_or_else(|_| timed_out());
                        response.headers_mut().extend(headers);
                        response
                    }
                }
            }
        },
    };
    let status = response.status();
    if v2 && (status.is_client_error() || status.is_server_error()) {
        // Boxed: rare, and every request's future would otherwise carry its room.
        Box::pin(heygen_v2_envelope(response)).await
    } else {
        response
    }
}

/// Largest error body the v2 envelope rewrites: every error this server writes is far smaller.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// On every route, between `observe` and `admit`, an error answer to a `/v2/...` path gets
/// HeyGen v2's envelope, `{"error": {...}, "data": null}`, whichever layer or handler wrote
/// it ([`guard`] passes other answers untouched; the cost is one prefix check per request).
async fn heygen_v2_envelope(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes) {
        Ok(mut doc) if doc.contains_key("error") => {
            doc.insert("data".to_owned(), serde_json::Value::Null);
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::from(serde_json::Value::Object(doc).to_string())
        }
        _ => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// On every route, inside `observe`, the answer to what must not be served before anything
/// reads it (`None`: serve it):
///
/// * a request on a reserve connection (the server is at `server.max_connections`): `503
///   too_many_connections`, except `/healthz`, which is served;
/// * a body whose declared `Content-Length` is over `server.max_body_bytes`: `413`, and the
///   connection is closed since the client may still be sending it. A body without a declared
///   length, or one that lies about it, is still cut at the limit while it is read.
fn admit(state: &AppState, req: &Request) -> Option<Response> {
    if req.extensions().get::<OverCapacity>().is_some() && req.uri().path() != "/healthz" {
        return Some(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "the server holds server.max_connections connections already; retry later",
            )
            .with_retry_after(Duration::from_secs(1))
            .into_response(),
        );
    }
    let limit = state.inner.settings.server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let declared = declared.filter(|d| *d > limit as u64)?;
    Some(
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the declared body of {declared} bytes is larger than server.max_body_bytes \
                 ({limit})"
            ),
        )
        .with_header("connection", HeaderValue::from_static("close"))
        .into_response(),
    )
}

/// Which guards a request passes inside `edge`, by the route it matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guards {
    /// The job API's ([`api`]).
    Api,
    /// The operations routes' (`/metrics`, `/healthz`, `/admin/*`): [`timeout`] alone.
    Operations,
    /// No route matched: the `404` fallback answers at once.
    None,
}

impl Guards {
    /// By the request's route label ([`route_label`]).
    fn of(route: &str) -> Guards {
        if route == UNMATCHED {
            Guards::None
        } else if super::is_operations(route) {
            Guards::Operations
        } else {
            Guards::Api
        }
    }
}

/// The job API's guards, in order (all within `server.request_timeout`, with the handler):
/// injected faults, identification (`client`, `authorized`: [`identify`]), the rate limit,
/// and the refusal of a request whose key was wrong. Admitted: the rate limit's headers for
/// the answer.
async fn api(
    state: &AppState,
    hold: Option<Hold>,
    client: ClientId,
    authorized: Result<(), ApiError>,
) -> Result<HeaderMap, Response> {
    if let Some(response) = inject_faults(state).await {
        return Err(response);
    }
    // A replica whose copy of the shared store is not current answers nothing from it.
    if state.redis().is_some_and(|redis| !redis.is_live()) {
        return Err(state.unavailable().into_response());
    }
    if let Some(hold) = hold
        && state.inner.faults.roll_silent()
    {
        state.inner.metrics.fault("silent");
        // Boxed: rare, and every request's future would otherwise carry its room.
        return Err(Box::pin(silent(state, hold)).await);
    }
    let headers = rate_limit(state, client)
        .await
        .map_err(IntoResponse::into_response)?;
    match authorized {
        Ok(()) => Ok(headers),
        Err(refused) => {
            let mut refused = refused.into_response();
            refused.headers_mut().extend(headers);
            Err(refused)
        }
    }
}

/// Bounds the time to an answer's head by `server.request_timeout`.
async fn timeout(state: &AppState, answer: impl Future<Output = Response>) -> Response {
    let limit = state.inner.settings.server.request_timeout;
    match tokio::time::timeout(limit, answer).await {
        Ok(response) => response,
        Err(_) => timed_out(),
    }
}

fn timed_out() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "the request took longer than server.request_timeout",
    )
    .into_response()
}

/// Injected faults (see [`crate::sim::faults`]): sleeps the injected latency, then answers in
/// place of the handler, or returns `None` to let the request through.
async fn inject_faults(state: &AppState) -> Option<Response> {
    let m = &state.inner.metrics;
    let roll = state.inner.faults.roll(Instant::now());
    if !roll.delay.is_zero() {
        m.fault(if roll.slow_tail {
            "slow_tail"
        } else {
            "latency"
        });
        tokio::time::sleep(roll.delay).await;
    }
    if let Some(kind) = roll.fault.kind() {
        m.fault(kind);
    }
    let response = match roll.fault {
        Fault::None => return None,
        Fault::Outage => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outage",
            "the service is unavailable (injected outage)",
        )
        .into_response(),
        Fault::Error => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected_error",
            "internal error (injected fault)",
        )
        .into_response(),
        Fault::Throttle(after) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "injected_throttle",
            "too many requests (injected fault); retry after the Retry-After delay",
        )
        .with_retry_after(after)
        .into_response(),
        // Headers may or may not reach the client; the body never completes and the
        // connection is closed: what a client sees when a connection is cut mid-answer.
        Fault::Drop => cut(),
        Fault::Malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"result\": \"pend",
        )
            .into_response(),
    };
    Some(response)
}

/// What a held request is, for the `silent` fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// An event stream: `GET /v1/jobs/{id}/events`, `GET /v1/events`.
    Stream,
    /// A long-poll: `Prefer: wait` on a job's status or on `GET /v1/changes`.
    Poll,
}

/// Whether `req` asks to be held, and how.
fn held(req: &Request) -> Option<Hold> {
    if req.method() != Method::GET {
        return None;
    }
    match req.extensions().get::<MatchedPath>()?.as_str() {
        "/v1/events" | "/v1/jobs/{id}/events" => Some(Hold::Stream),
        "/v1/changes" | "/v1/jobs/{id}/status" | "/v1/jobs/{id}"
            if super::status::prefer_wait(req.headers()).is_some() =>
        {
            Some(Hold::Poll)
        }
        _ => None,
    }
}

/// The `silent` fault: the connection stays open and nothing comes. A stream gets its head and
/// then not one byte until its lifetime (`changes.max_lifetime`, jittered) or shutdown ends it;
/// a long-poll gets nothing until `server.request_timeout` answers it `503 timeout` (the
/// caller's timeout), or shutdown cuts the connection.
async fn silent(state: &AppState, hold: Hold) -> Response {
    let mut closing = state.inner.closing.subscribe();
    match hold {
        Hold::Stream => {
            let until = later(
                Instant::now(),
                crate::sim::streams::lifetime(&state.inner.settings.changes),
            );
            let quiet = async move {
                tokio::select! {
                    _ = closing.wait_for(|c| *c) => {}
                    () = tokio::time::sleep_until(until) => {}
                }
            };
            let nothing = futures_util::StreamExt::filter_map(
                futures_util::stream::once(quiet),
                |()| async { None::<Result<Bytes, std::io::Error>> },
            );
            (
                [
                    (header::CONTENT_TYPE, "text/event-stream"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                Body::from_stream(nothing),
            )
                .into_response()
        }
        Hold::Poll => {
            let _ = closing.wait_for(|c| *c).await;
            cut()
        }
    }
}

/// An answer whose body never completes: the connection is cut mid-answer.
fn cut() -> Response {
    let broken = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection cut"))
    });
    Response::new(Body::from_stream(broken))
}

/// Who sent `req` (see [`ClientId`]), and whether it may go on: with `auth.api_key` set, a
/// request without the right `X-Api-Key` is refused, and counted as its peer, not as the key it
/// claimed.
fn identify(state: &AppState, req: &Request) -> (ClientId, Result<(), ApiError>) {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(ClientId::Unknown, |ci| ClientId::peer(ci.0.ip()));
    let Some(expected) = &state.inner.settings.auth.api_key else {
        return (peer, Ok(()));
    };
    let given = req.headers().get("x-api-key").map(HeaderValue::as_bytes);
    if given.is_some_and(|g| constant_time_eq(g, expected.as_bytes())) {
        (ClientId::ApiKey, Ok(()))
    } else {
        let refused = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Api-Key header",
        );
        (peer, Err(refused))
    }
}

/// Per-client token bucket (with the Redis backend, one bucket per client for every replica).
/// Allowed: the IETF `RateLimit` / `RateLimit-Policy` headers to add to the answer. Refused: the
/// 429 answer (or `503 store_unavailable` when the shared bucket cannot be reached).
async fn rate_limit(state: &AppState, client: ClientId) -> Result<HeaderMap, ApiError> {
    let mut headers = HeaderMap::new();
    let Some(limiter) = &state.inner.limiter else {
        return Ok(headers);
    };
    let (quota, window) = limiter.policy();
    if let Ok(p) = HeaderValue::from_str(&format!("\"default\";q={quota};w={window}")) {
        headers.insert("ratelimit-policy", p);
    }
    let decision = match state.rate_check(client).await {
        Some(Ok(decision)) => decision,
        Some(Err(_)) => return Err(state.unavailable()),
        None => return Ok(headers),
    };
    match decision {
        Decision::Allow { remaining } => {
            if let Ok(v) = HeaderValue::from_str(&format!("\"default\";r={remaining};t={window}")) {
                headers.insert("ratelimit", v);
            }
            Ok(headers)
        }
        Decision::Deny { retry_after } => {
            state.inner.metrics.rate_limited();
            let t = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&format!("\"default\";r=0;t={t}")) {
                headers.insert("ratelimit", v);
            }
            let mut refused = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded; retry after the Retry-After delay",
            )
            .with_retry_after(retry_after);
            for name in ["ratelimit-policy", "ratelimit"] {
                if let Some(v) = headers.get(name) {
                    refused = refused.with_header(name, v.clone());
                }
            }
            Err(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_is_counted_once_whatever_keys_it_sends() {
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        for api_key in [None, Some("k3y")] {
            let mut s = crate::Settings::default();
            s.rate_limit.enabled = true;
            s.rate_limit.burst = 1_000;
            s.auth.api_key = api_key.map(String::from);
            let state = AppState::new(s).unwrap();
            for i in 0..200 {
                // 60 KB each, all different.
                let key = format!("{i}-{}", "k".repeat(60 * 1024));
                let req = Request::builder()
                    .header("x-api-key", key)
                    .extension(ConnectInfo(peer))
                    .body(Body::empty())
                    .unwrap();
                let (client, authorized) = identify(&state, &req);
                assert_eq!(client, ClientId::peer(peer.ip()), "{api_key:?}");
                assert_eq!(authorized.is_ok(), api_key.is_none());
                assert!(rate_limit(&state, client).await.is_ok());
            }
            let limiter = state.inner.limiter.as_ref().unwrap();
            assert_eq!(limiter.clients(), 1, "{api_key:?}");
        }
    }

    #[tokio::test]
    async fn only_a_checked_key_is_an_identity() {
        let mut s = crate::Settings::default();
        s.auth.api_key = Some("k3y".into());
        let state = AppState::new(s).unwrap();
        let req = Request::builder()
            .header("x-api-key", "k3y")
            .body(Body::empty())
            .unwrap();
        let (client, authorized) = identify(&state, &req);
        assert_eq!(client, ClientId::ApiKey);
        assert!(authorized.is_ok());
        let req = Request::builder().body(Body::empty()).unwrap();
        let (client, authorized) = identify(&state, &req);
        assert_eq!(client, ClientId::Unknown, "no connection info");
        assert_eq!(authorized.unwrap_err().status(), StatusCode::UNAUTHORIZED);
    }
}
