//! The HTTP surface, built in one function.
//!
//! Below the router, the connection layer (`serve`) bounds connections: idle and half-sent
//! ones are closed, and at `server.max_connections` requests arrive marked over capacity.
//!
//! Guard order on the job API, outermost first — and why (all in one middleware,
//! `layers::edge`, as plain calls):
//!
//! 1. `observe` (every route) — the request span, parented on the caller's W3C trace
//!    context so everything below, faults included, is inside the caller's trace; and the
//!    count and latency of every answer, faults and refusals included, so the dashboards see
//!    what clients saw.
//! 2. `heygen_v2_envelope` (every route, acting on `/v2/...` only) — adds HeyGen v2's
//!    `"data": null` to every error answer there, whichever layer or handler refused.
//! 3. `admit` (every route) — refuses, before anything reads them, a request over the
//!    connection cap (`503 too_many_connections`; `/healthz` is still served) and a declared
//!    `Content-Length` over the body limit (`413`, before anything waits for the body); the
//!    body limit then cuts any body that grows past it while it is read.
//!
//! Then, in the same middleware, on the job API (every route but the operations routes,
//! `is_operations`; those get the timeout alone), in this order:
//!
//! 4. `timeout` — bounds the time to an answer's head (`server.request_timeout`), injected
//!    latency and held long-polls included, so no client can pin a task. An SSE stream's head
//!    is sent at once; its body is bounded by its job and shutdown instead.
//! 5. `faults` — injected latency, outages, errors, throttles, drops and malformed bodies
//!    happen "in the network", before authentication, as they would in front of a real service;
//!    so does the `silent` fault of held requests (streams, long-polls), which keeps the
//!    connection open and sends nothing.
//! 6. `identify` — the client is the checked `X-Api-Key` (when `auth.api_key` is set and the
//!    key matched) or else the peer's address (`sim::client`); never a header taken on trust.
//! 7. `rate_limit` — per client, so it runs after the client is known.
//! 8. `auth` — a request whose key was missing or wrong is refused (`401`) here, after it was
//!    counted against its peer's bucket: guessing keys is rate limited like any request.
//!
//! The handlers find the client in the request's extensions (the per-client job cap, the
//! HeyGen concurrency limit, the `Idempotency-Key` table).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::ApiError;

mod batch;
mod body;
mod changes;
mod events;
mod feed;
mod heygen;
mod idempotent;
mod jobs;
pub mod layers;
mod ops;
mod path;
pub(crate) mod status;
mod stream;
mod watches;

/// Builds the router for `state`.
pub fn app(state: AppState) -> Router {
    let max_body = state.inner.settings.server.max_body_bytes;
    let api = Router::new()
        .route("/status", get(status::legacy))
        .route("/v1/reset", post(jobs::reset))
        .route("/v1/jobs", get(batch::read).post(jobs::create))
        .route("/v1/jobs/{id}", get(status::job_status))
        .route("/v1/jobs/{id}/status", get(status::job_status))
        .route("/v1/jobs/{id}/events", get(events::events))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/events", get(stream::events))
        .route("/v1/changes", get(changes::changes))
        .route("/v1/watches", post(watches::create))
        .route(
            "/v1/watches/{id}",
            get(watches::get)
                .patch(watches::patch)
                .delete(watches::delete),
        )
        .route("/v2/video_translate", post(heygen::v2_create))
        .route("/v2/video_translate/{id}", get(heygen::v2_status))
        .route("/v3/video-translations", post(heygen::v3_create))
        .route("/v3/video-translations/{id}", get(heygen::v3_status));
    let ops = Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/admin/faults", get(ops::get_faults).put(ops::put_faults))
        .route("/admin/outage", post(ops::outage));
    api.merge(ops)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(from_fn_with_state(state.clone(), layers::edge))
        .with_state(state)
}

/// Whether `route` (a route template) is an operations route — `/metrics`, `/healthz`,
/// `/admin/*` — whose only guard is the timeout; every other route is the job API.
pub(crate) fn is_operations(route: &str) -> bool {
    matches!(route, "/metrics" | "/healthz") || route.starts_with("/admin/")
}

async fn not_found() -> impl IntoResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see docs/wire.md for the API",
    )
}

/// A known route asked with a method it does not answer (the router adds `Allow`).
async fn method_not_allowed() -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not answer this method; the Allow header lists those it does",
    )
}
