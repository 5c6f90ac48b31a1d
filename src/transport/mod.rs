//! How to survive one request: the HTTP stack under every poll.
//!
//! # Layers, outermost first
//!
//! ```text
//! RetryTransientMiddleware     reqwest-retry with Classifier: short jittered retries of connect
//!                              errors, timeouts, 5xx, 408, 429 without Retry-After
//!   Guard                      one middleware, four steps (guard.rs):
//!     throttle                 429/503 + Retry-After: sleep exactly that long (only if the
//!                              pause ends before the deadline; at least poll::MIN_PAUSE), resend
//!       breaker                per host: refuse attempts while open, judge each admitted attempt
//!         hedge                status reads only: one duplicate after the observed p95, within a
//!                              hard budget; the first usable answer wins
//!           send               one span + one metric sample per request on the wire; counts
//!                              attempts; reads the body (bounded)
//!             reqwest          timeout, API key header, connection pool
//! ```
//!
//! As with a tower `ServiceBuilder`, read the stack top to bottom: a request passes through
//! the steps in this order and its answer comes back through them in reverse. The order is
//! the design:
//!
//! 1. **The retry layer is above everything else.** Every retry is a new attempt the breaker
//!    must admit, so an open breaker ends the retry loops already in flight at their next
//!    attempt (its refusal is fatal to the classifier), and the breaker judges *attempts*: in
//!    an outage it opens after a handful of failed requests, not after every caller has spent
//!    its whole retry budget. Judged after retries, twenty waiting clients would send some
//!    eighty requests into an outage before the breaker counted its first failure.
//! 2. **The throttle is above the breaker.** A `Retry-After` is the service speaking, not
//!    failing: it is obeyed exactly, the pause spends no retry (it happens inside one attempt
//!    of the retry layer, which does not retry a throttled answer) and counts nothing against
//!    the breaker; each resend is admitted by the breaker like any attempt. A throttled answer
//!    asking for more than one request absorbs is handed back and counts as one failure.
//! 3. **The breaker is above the hedge.** A hedged pair is one attempt: admitted once, judged
//!    once; an open breaker sends no duplicates.
//! 4. **The hedge is above the send.** Both legs are requests on the wire, with a span and a
//!    metric sample each, but only the original is an attempt: a hedge is never a retry, in
//!    the metrics or in the [`WaitReport`](crate::WaitReport).
//! 5. **The send is innermost**, where the body is read: a connection dropped mid-body is a
//!    failure every step above can see.
//!
//! The retry layer and the guard are [`reqwest_middleware::Middleware`]s; the guard's four
//! steps are one middleware so that a request is copied once for them (the copy serves a
//! throttled resend and a hedge's duplicate alike) and crosses one boxed future. Status reads
//! go through every step; job creation (a POST) skips the retry layer and the hedge, because
//! a retried POST can create two jobs — it is only resent when the server explicitly
//! throttled it — but shares the breaker. A creation that carries an `Idempotency-Key` the
//! API honours (the simulator's, HeyGen v3's: a repeat replays the first answer instead of
//! creating again) is safe to retry, and goes through the retry layer like a read (the hedge
//! never duplicates anything but a status read). The key is the same on every attempt,
//! throttled resends included.
//!
//! Retries here are *not* polls: they are short (100 ms to 1 s, three at most by default),
//! always jittered, and happen inside one poll. No pause in this stack is shorter than
//! [`MIN_PAUSE`](crate::poll::MIN_PAUSE): a `Retry-After: 0` is waited out for the floor, and
//! the retry backoff's minimum is raised to twice the floor (its jitter may halve it). Every
//! attempt, resent or retried, counts in the attempts a [`WaitReport`](crate::WaitReport)
//! reports as retries, so a zero-length wait is never free. A `400`, `401`, `404` or `422` is fatal at
//! once.
//!
//! # What the server cannot make the client do
//!
//! - **Send credentials elsewhere.** No redirect is followed unless
//!   [`ClientBuilder::follow_redirects`](crate::ClientBuilder::follow_redirects) allows a few,
//!   and then only within the request's origin (scheme, host and port): a redirect to
//!   another origin is refused before anything is sent there. A `3xx` that is not followed
//!   is an [`Error::UnexpectedResponse`] naming its `Location`.
//! - **Read without bound.** A usable answer's body is read up to
//!   [`ClientBuilder::max_response_body`](crate::ClientBuilder::max_response_body) (1 MiB by
//!   default) and is an error past it, or at once when its `Content-Length` says so; an error
//!   answer is read for its first 64 KiB, a refused event-stream subscription for its first
//!   4 KiB (within a second). The rest of a body is never read: the connection is dropped.
//! - **Pass an answer off as an outage, or a dead host as a service down.** A server that
//!   answered with something unusable — a body over the limit, a redirect not followed, an
//!   answer that is not valid HTTP (a garbled status line, too many headers) — gets
//!   [`Error::UnexpectedResponse`] and no retry, and counts as an answer for the breaker. A
//!   host that never answered is [`Error::Unreachable`], even once its breaker holds
//!   requests back; [`Error::Unavailable`] is for a service that answered, then stopped.
//!
//! Both resilience steps are on by default and configured on the
//! [`ClientBuilder`](crate::ClientBuilder) with [`HedgeConfig`] and [`BreakerConfig`]; their
//! documentation says what each does, and `docs/sdk.md` why (in short: an open breaker
//! *pauses* waits instead of failing them, and a hedge budget can only cut a tail thinner
//! than itself).
//!
//! (About 500 lines, a fifth of them this essay: the rest builds the stack and sends its
//! kinds of request; what comes back lives in `exchange`, what it means in `answer`.)

pub(crate) mod answer;
mod attempts;
pub(crate) mod breaker;
mod classify;
mod exchange;
mod guard;
pub(crate) mod headers;
mod hedge;
mod hosts;
#[cfg(feature = "otel")]
mod propagate;
mod redirect;
pub(crate) mod signals;
pub(crate) mod sse;
mod throttle;
mod window;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest_middleware::{ClientBuilder as StackBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryTransientMiddleware};
use tokio::time::Instant;
use url::Url;

pub(crate) use attempts::DEFAULT_MAX_BODY;
pub use breaker::BreakerConfig;
pub(crate) use classify::timed_out;
pub use classify::{Classification, Classifier, classify, classify_error};
use exchange::finish;
pub(crate) use exchange::{Exchange, Failure, Subscription};
pub use headers::{applied_wait, retry_after};
pub use hedge::HedgeConfig;
pub(crate) use redirect::MAX_HOPS as MAX_REDIRECT_HOPS;
pub(crate) use redirect::same_origin;

use crate::error::Error;
use crate::profile::Auth;
use attempts::Attempts;
use breaker::Breakers;
use guard::Guard;
use hedge::Hedger;
use throttle::Throttle;

/// The longest event id sent back as `Last-Event-ID` when a stream is resumed.
const MAX_EVENT_ID: usize = 1024;

/// What a request is for (span field and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// A status read that answers at once.
    Status,
    /// A status read with `Prefer: wait`.
    LongPoll,
    /// An event-stream subscription.
    Events,
    /// Job creation.
    Create,
    /// Canceling a job (a wait that gave up, when asked to).
    Cancel,
    /// The change stream a job set follows many jobs on (`GET /v1/events`).
    Changes,
    /// Creating or changing the watch set a change stream reads (`POST`/`PATCH /v1/watches`).
    Watch,
    /// A batched status read of many jobs (`GET /v1/jobs?ids=`).
    Batch,
}

impl RequestKind {
    /// A short, stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestKind::Status => "status",
            RequestKind::LongPoll => "long_poll",
            RequestKind::Events => "events",
            RequestKind::Create => "create",
            RequestKind::Cancel => "cancel",
            RequestKind::Changes => "changes",
            RequestKind::Watch => "watch",
            RequestKind::Batch => "batch",
        }
    }

    /// Every kind, for exporters and dashboards that list them.
    pub const ALL: [RequestKind; 8] = [
        RequestKind::Status,
        RequestKind::LongPoll,
        RequestKind::Events,
        RequestKind::Create,
        RequestKind::Cancel,
        RequestKind::Changes,
        RequestKind::Watch,
        RequestKind::Batch,
    ];

    /// An event stream (held open, read as it comes, never absorbed when refused).
    pub(crate) fn is_stream(self) -> bool {
        matches!(self, RequestKind::Events | RequestKind::Changes)
    }

    fn buffered(self) -> bool {
        !self.is_stream()
    }
}

/// What the guard needs to know of a request (one request extension: each extension is an
/// allocation, and copied with every copy of the request's extensions).
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) kind: RequestKind,
    /// The attempts made for it, counted by the guard.
    pub(crate) attempts: Attempts,
    /// The instant after which the request is of no use.
    pub(crate) deadline: Option<Instant>,
}

impl Call {
    pub(crate) fn new(kind: RequestKind) -> Self {
        Call {
            kind,
            attempts: Attempts::default(),
            deadline: None,
        }
    }

    pub(crate) fn until(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }
}

/// Transport settings, validated by the client builder.
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) max_throttle_waits: u32,
    pub(crate) max_throttle_delay: Duration,
    pub(crate) api_key: Option<String>,
    /// How the API key is sent (the profile's scheme).
    pub(crate) auth: Auth,
    pub(crate) user_agent: String,
    /// Redirects followed within the request's origin (0: none).
    pub(crate) follow_redirects: u32,
    /// The largest body read from a usable answer.
    pub(crate) max_body: usize,
    /// `None`: no hedging.
    pub(crate) hedge: Option<HedgeConfig>,
    /// `None`: no circuit breaker.
    pub(crate) breaker: Option<BreakerConfig>,
}

/// The two stacks over one connection pool.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    /// The connection pool under both stacks, for building requests.
    http: reqwest::Client,
    /// Idempotent requests — reads, and creations under an idempotency key: every layer.
    reads: ClientWithMiddleware,
    /// Creation without an idempotency key: no transient retries.
    writes: ClientWithMiddleware,
    /// The per-host circuit breakers of both stacks.
    breakers: Option<Arc<Breakers>>,
    pub(crate) request_timeout: Duration,
}

/// How a status read should be sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadOptions {
    pub(crate) etag: Option<String>,
    /// Ask the server to hold the request this long (`Prefer: wait=N`, whole seconds).
    pub(crate) hold: Option<Duration>,
    pub(crate) deadline: Option<Instant>,
}

impl Transport {
    pub(crate) fn new(config: &TransportConfig) -> Result<Self, Error> {
        // Every answer but an event stream's is JSON. A default header is added as the request
        // is sent, so the requests the layers copy (a retry's, a hedge's) carry one less.
        let mut default_headers = HeaderMap::new();
        default_headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(key) = &config.api_key {
            let (name, value) = credentials(&config.auth, key)?;
            default_headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .default_headers(default_headers)
            // No client-wide timeout: the guard keeps it for every request without one of its
            // own, with the timer it already has for hedging.
            .connect_timeout(config.connect_timeout)
            .redirect(redirect::policy(config.follow_redirects))
            .build()
            .map_err(|e| Error::config("http client", crate::error::chain(&e)))?;
        // Bounded jitter can halve the minimum: twice the floor keeps every retry's pause at
        // or above it.
        let floor = 2 * crate::poll::MIN_PAUSE;
        let backoff = ExponentialBackoff::builder()
            .retry_bounds(config.retry_min.max(floor), config.retry_max.max(floor))
            .jitter(Jitter::Bounded)
            .base(2)
            .build_with_max_retries(config.max_retries);
        let throttle = Throttle {
            max_waits: config.max_throttle_waits,
            max_delay: config.max_throttle_delay,
        };
        let breakers = config.breaker.map(|c| Arc::new(Breakers::new(c)));
        // The same guard on both stacks, the breakers shared; only reads are hedged.
        let guard = |hedger| Guard {
            throttle,
            breakers: breakers.clone(),
            hedger,
            request_timeout: config.request_timeout,
            max_body: config.max_body,
        };
        let reads = StackBuilder::new(http.clone())
            .with(RetryTransientMiddleware::new_with_policy_and_strategy(
                backoff, Classifier,
            ))
            .with(guard(config.hedge.map(Hedger::new)));
        // Innermost: the attempt's span is current, so each attempt carries its own parent.
        #[cfg(feature = "otel")]
        let reads = reads.with(propagate::PropagateContext);
        let reads = reads.build();
        let writes = StackBuilder::new(http.clone()).with(guard(None));
        #[cfg(feature = "otel")]
        let writes = writes.with(propagate::PropagateContext);
        let writes = writes.build();
        Ok(Transport {
            http,
            reads,
            writes,
            breakers,
            request_timeout: config.request_timeout,
        })
    }

    /// Whether the URL's host has ever answered this client over HTTP (known only with the
    /// breaker on). A host that has answered and now fails is having an outage; one that
    /// never answered is more likely a wrong URL.
    pub(crate) fn answered(&self, url: &Url) -> bool {
        self.breakers.as_ref().is_some_and(|b| b.answered(url))
    }

    /// Reads a status document.
    pub(crate) async fn read<'u>(
        &self,
        url: &'u Url,
        options: &ReadOptions,
    ) -> Result<Exchange<'u>, Failure> {
        let kind = if options.hold.is_some() {
            RequestKind::LongPoll
        } else {
            RequestKind::Status
        };
        let call = Call::new(kind).until(options.deadline);
        let attempts = call.attempts.clone();
        // Built with reqwest's own builder (it turns a URL's user-info into Basic auth) and
        // sent with extensions of our own: a middleware request builder would copy the
        // client's middleware list for every read.
        let mut request = self.http.get(url.clone());
        if let Some(tag) = &options.etag {
            request = request.header(http::header::IF_NONE_MATCH, tag.as_str());
        }
        // A plain read keeps the client's timeout (the guard's): a request timeout of its own
        // would be copied with it by every layer that copies requests.
        if let Some(hold) = options.hold {
            request = request
                .header("prefer", format!("wait={}", hold.as_secs()))
                .timeout(self.request_timeout.saturating_add(hold));
        }
        let result = match request.build() {
            Ok(request) => {
                let mut extensions = http::Extensions::new();
                extensions.insert(call);
                self.reads
                    .execute_with_extensions(request, &mut extensions)
                    .await
            }
            Err(error) => Err(reqwest_middleware::Error::Reqwest(error)),
        };
        finish(url, result, &attempts).await
    }

    /// Opens an event stream.
    pub(crate) async fn subscribe(
        &self,
        url: &Url,
        last_event_id: Option<&str>,
        timeout: Duration,
        kind: RequestKind,
    ) -> Result<Subscription, Failure> {
        let call = Call::new(kind);
        let attempts = call.attempts.clone();
        let mut request = self
            .reads
            .get(url.clone())
            .header(ACCEPT, "text/event-stream")
            .header(http::header::CACHE_CONTROL, "no-cache")
            .with_extension(call)
            .timeout(timeout);
        // The id is the server's: resume with it only when a header can carry it, and a
        // short one at that; otherwise reconnect without it, as a new subscriber.
        let resume = last_event_id
            .filter(|id| id.len() <= MAX_EVENT_ID)
            .and_then(|id| HeaderValue::from_str(id).ok());
        if let Some(id) = resume {
            request = request.header("last-event-id", id);
        }
        let response = request
            .send()
            .await
            .map_err(|error| Failure::new(url, error, &attempts))?;
        let status = response.status();
        let headers = response.headers().clone();
        let is_stream = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if status == StatusCode::OK && is_stream {
            Ok(Subscription {
                status,
                headers,
                events: Some(sse::events(response.bytes_stream())),
                body: Bytes::new(),
                attempts: attempts.get().max(1),
            })
        } else {
            // Only the start of a refusal matters (an error excerpt); the rest is never read:
            // the connection is dropped with the response.
            let body = prefix(response, REFUSAL_PREFIX, Duration::from_secs(1)).await;
            Ok(Subscription {
                status,
                headers,
                events: None,
                body,
                attempts: attempts.get().max(1),
            })
        }
    }

    /// Posts JSON: with an `Idempotency-Key` the API honours (`key`, `replayed: true`),
    /// retried like a read; otherwise not retried unless throttled.
    pub(crate) async fn post_json<'u>(
        &self,
        url: &'u Url,
        body: &serde_json::Value,
        key: Option<&str>,
        replayed: bool,
    ) -> Result<Exchange<'u>, Failure> {
        let call = Call::new(RequestKind::Create);
        let attempts = call.attempts.clone();
        let stack = if key.is_some() && replayed {
            &self.reads
        } else {
            &self.writes
        };
        let mut request = stack.post(url.clone());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = request.json(body).with_extension(call);
        finish(url, request.send().await, &attempts).await
    }
}

impl Transport {
    /// A JSON request for many jobs at once: a batched read (`GET`, every layer of the read
    /// stack) or a watch set's creation or change (`POST`/`PATCH`, not retried unless
    /// throttled: a retried creation could make a second set).
    pub(crate) async fn exchange<'u>(
        &self,
        method: http::Method,
        url: &'u Url,
        body: Option<&serde_json::Value>,
        kind: RequestKind,
    ) -> Result<Exchange<'u>, Failure> {
        let call = Call::new(kind);
        let attempts = call.attempts.clone();
        let stack = if method == http::Method::GET {
            &self.reads
        } else {
            &self.writes
        };
        let mut request = stack.request(method, url.clone()).with_extension(call);
        if let Some(body) = body {
            request = request.json(body);
        }
        finish(url, request.send().await, &attempts).await
    }

    /// Cancels a job: one `POST` without a body, through the stack that does not retry,
    /// answered within `within` or cut (a throttled answer is not waited out past it).
    pub(crate) async fn cancel<'u>(
        &self,
        url: &'u Url,
        within: Duration,
    ) -> Result<Exchange<'u>, Failure> {
        let call = Call::new(RequestKind::Cancel).until(Some(Instant::now() + within));
        let attempts = call.attempts.clone();
        let request = self
            .writes
            .post(url.clone())
            .with_extension(call)
            .timeout(within);
        finish(url, request.send().await, &attempts).await
    }
}

/// The header that carries `key`, as `auth` says, marked sensitive (never printed by `Debug`
/// of a request).
fn credentials(auth: &Auth, key: &str) -> Result<(HeaderName, HeaderValue), Error> {
    use base64::Engine;
    let (name, text) = match auth {
        Auth::Header(name) => (name.clone(), key.to_owned()),
        Auth::Bearer => (http::header::AUTHORIZATION, format!("Bearer {key}")),
        Auth::Basic => (
            http::header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(key)
            ),
        ),
        // The builder refuses a key for a profile that sends none.
        Auth::None => {
            return Err(Error::config(
                "api_key",
                "this profile sends no credentials",
            ));
        }
    };
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| Error::config("api_key", "must be visible ASCII (it is sent as a header)"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// The most of a refused event-stream subscription's body that is read.
const REFUSAL_PREFIX: usize = 4 * 1024;

/// At most `max` bytes of a body, for at most `patience`; whatever came by then.
async fn prefix(mut response: reqwest::Response, max: usize, patience: Duration) -> Bytes {
    let until = Instant::now() + patience;
    let mut body = BytesMut::new();
    while body.len() < max {
        match tokio::time::timeout_at(until, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = max - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    body.freeze()
}
