//! The guard: everything the stack does around one attempt, in one middleware under the retry
//! layer — obey a throttle, ask the host's breaker, hedge a slow status read, send and
//! account for each request on the wire.
//!
//! ```text
//! throttle   429/503 + Retry-After: sleep exactly that long, send again   (throttle.rs)
//!   breaker  per host: refuse while open, judge each admitted attempt    (breaker/)
//!     hedge  status reads: one duplicate after the observed p95          (hedge/)
//!       send one span + one metric sample per request; the body, bounded (attempts.rs)
//! ```
//!
//! These were four middlewares once; as one, a request is copied once (the copy serves a
//! throttled resend and a hedge's duplicate alike) instead of once per step, and crosses one
//! boxed future instead of four. The rules live in the modules named above; this file only
//! puts them in order.

use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;
use tracing::Instrument;

use super::attempts::{self, Attempts, Leg};
use super::breaker::{Breakers, HostBreaker};
use super::hedge::{HedgeLeg, Hedger, Raced};
use super::throttle::{Throttle, Verdict};
use super::{Call, RequestKind};
use crate::telemetry;

/// Throttle, breaker, hedge and the attempt itself, for one stack.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) throttle: Throttle,
    /// The client's breakers, shared by its stacks; `None` when turned off.
    pub(crate) breakers: Option<Arc<Breakers>>,
    /// Hedging of status reads; `None` when turned off (and on the stack for writes).
    pub(crate) hedger: Option<Hedger>,
    /// The client's timeout, for a request that has none of its own.
    pub(crate) request_timeout: Duration,
    /// The largest body read from a usable answer.
    pub(crate) max_body: usize,
}

#[async_trait::async_trait]
impl Middleware for Guard {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let Call {
            kind,
            attempts,
            deadline,
        } = extensions
            .get::<Call>()
            .cloned()
            .unwrap_or_else(|| Call::new(RequestKind::Status));
        let host = self.breakers.as_ref().map(|b| b.host(req.url()));
        let hedger = self.hedger.as_ref().filter(|_| kind == RequestKind::Status);
        let resends = self.throttle.resends(kind);
        let mut req = req;
        loop {
            // One copy, made before the request goes out: a throttled resend's, or a hedge's.
            let mut spare = if resends || hedger.is_some() {
                copy(&req)
            } else {
                None
            };
            let result = self
                .admitted(
                    req,
                    &mut spare,
                    resends,
                    kind,
                    &attempts,
                    host.as_ref(),
                    hedger,
                    extensions,
                    next.clone(),
                )
                .await;
            // Counted per request, across the retry layer's attempts: each one runs the guard.
            let waits = attempts.throttle_waits();
            let pause = match self.throttle.judge(&result, waits, kind, deadline) {
                Verdict::Pass => return result,
                Verdict::Refused => {
                    if let Some(host) = &host {
                        host.record_throttled();
                    }
                    return result;
                }
                Verdict::Wait(pause) => pause,
            };
            let Some(again) = spare else {
                return result;
            };
            drop(result);
            attempts.waited();
            telemetry::throttled(kind);
            tokio::time::sleep(pause)
                .instrument(tracing::info_span!(
                    "sleep",
                    basis = "throttled",
                    ms = pause.as_millis() as u64
                ))
                .await;
            req = again;
        }
    }
}

impl Guard {
    /// One attempt the host's breaker admits (or refuses), hedged when it is a status read.
    #[allow(clippy::too_many_arguments)]
    async fn admitted(
        &self,
        req: Request,
        spare: &mut Option<Request>,
        keep_spare: bool,
        kind: RequestKind,
        attempts: &Attempts,
        host: Option<&Arc<HostBreaker>>,
        hedger: Option<&Hedger>,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let ticket = match host {
            Some(host) => Some(
                host.admit()
                    .map_err(reqwest_middleware::Error::middleware)?,
            ),
            None => None,
        };
        let max_body = self.max_body;
        let started = Instant::now();
        // A request with no timeout of its own gets the client's, kept here: one timer then
        // serves the hedge's delay and the timeout (reqwest would arm one more per request).
        let own_timeout = req.timeout().copied();
        let deadline = match own_timeout {
            Some(_) => None,
            None => started.checked_add(self.request_timeout),
        };
        let hedge = hedger.map(|h| h.host(req.url()));
        // The duplicate, if any, keeps the original's number: it is not another attempt.
        let attempt = attempts.get() + 1;
        let mut original = std::pin::pin!(attempts::send(
            next.clone(),
            req,
            extensions,
            kind,
            Leg::Attempt(attempts),
            max_body,
        ));
        let raced = match hedge {
            None => match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, &mut original).await {
                    Ok(result) => Raced::Answer(result),
                    Err(_) => Raced::Expired { out: 1 },
                },
                None => Raced::Answer(original.await),
            },
            Some(host) => {
                let duplicate = |elapsed: Duration| {
                    // The copy is the resend's too while a throttled answer may still want one.
                    let mut duplicate = if keep_spare {
                        spare.as_ref().and_then(copy)
                    } else {
                        spare.take()
                    }?;
                    // It gets what is left of the original's own timeout, and none is no hedge
                    // (the guard's deadline bounds both).
                    if let Some(timeout) = own_timeout {
                        let left = timeout.saturating_sub(elapsed);
                        if left.is_zero() {
                            return None;
                        }
                        *duplicate.timeout_mut() = Some(left);
                    }
                    attempts.hedged();
                    // Boxed: the rare path keeps the common one's future small.
                    Some(Box::pin(async move {
                        let mut leg = Extensions::new();
                        leg.insert(HedgeLeg);
                        let hedge = Leg::Hedge { attempt };
                        attempts::send(next, duplicate, &mut leg, kind, hedge, max_body).await
                    }))
                };
                host.race(original, duplicate, deadline).await
            }
        };
        let result = match raced {
            Raced::Answer(result) => result,
            Raced::Expired { out } => {
                // Cut at the deadline: the legs still out never got to report themselves.
                for _ in 0..out {
                    telemetry::request(kind, telemetry::Outcome::Timeout, started.elapsed());
                }
                tracing::debug!(kind = kind.as_str(), legs = out, "timed out");
                Err(reqwest_middleware::Error::middleware(TimedOut(
                    self.request_timeout,
                )))
            }
        };
        if let Some(ticket) = ticket {
            ticket.settle(&result);
        }
        result
    }
}

/// No answer within the client's request timeout (the guard keeps it for requests without one
/// of their own; reqwest's own timeouts are its `is_timeout` errors). Transient, like them.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("operation timed out: no answer within {0:?} (ClientBuilder::request_timeout)")]
pub(crate) struct TimedOut(pub(crate) Duration);

/// A copy of a request, to send again: what `Request::try_clone` makes, less the empty
/// timeout entry it allocates (and drops) for a request without one of its own. (The guard
/// sets nothing else on a request's own extensions, and neither does the stack above it.)
fn copy(req: &Request) -> Option<Request> {
    let body = match req.body() {
        Some(body) => Some(reqwest::Body::from(body.as_bytes()?.to_vec())),
        None => None,
    };
    let mut copy = Request::new(req.method().clone(), req.url().clone());
    *copy.headers_mut() = req.headers().clone();
    *copy.version_mut() = req.version();
    if let Some(timeout) = req.timeout() {
        *copy.timeout_mut() = Some(*timeout);
    }
    *copy.body_mut() = body;
    Some(copy)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use super::*;

    /// Measures, from inside a stack, the futures the guard builds for one request.
    struct Measure(Arc<Mutex<Vec<(&'static str, usize)>>>);

    #[async_trait::async_trait]
    impl Middleware for Measure {
        async fn handle(
            &self,
            req: Request,
            extensions: &mut Extensions,
            next: Next<'_>,
        ) -> reqwest_middleware::Result<Response> {
            let guard = Guard {
                throttle: Throttle {
                    max_waits: 1,
                    max_delay: Duration::ZERO,
                },
                breakers: None,
                hedger: None,
                request_timeout: Duration::from_secs(1),
                max_body: 1024,
            };
            let attempts = Attempts::default();
            let kind = RequestKind::Status;
            let copy = || req.try_clone().unwrap();
            let send = attempts::send(
                next.clone(),
                copy(),
                extensions,
                kind,
                Leg::Attempt(&attempts),
                1024,
            );
            let send = {
                let size = std::mem::size_of_val(&send);
                drop(send);
                size
            };
            let mut spare = None;
            #[rustfmt::skip]
            let admitted = guard.admitted(
                copy(), &mut spare, true, kind, &attempts, None, None, extensions, next,
            );
            let admitted = std::mem::size_of_val(&admitted);
            let mut sizes = self.0.lock().unwrap();
            sizes.extend([("send", send), ("admitted", admitted)]);
            Err(reqwest_middleware::Error::middleware(
                std::io::Error::other("measured"),
            ))
        }
    }

    /// The guard's future is boxed (and so moved) once per request by `async_trait`: kept
    /// small, it is a short copy; the hedge's duplicate, the rare path, is boxed apart. (A
    /// regression once made it 9.5 KB.)
    #[tokio::test]
    async fn the_futures_of_one_request_stay_small() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(Measure(Arc::clone(&sizes)))
            .build();
        let refused = client.get("http://upstream.test/status").send().await;
        assert!(refused.is_err());
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.len(), 2, "{sizes:?}");
        for (what, size) in sizes {
            assert!(size <= 4096, "{what}: {size} bytes");
        }
    }

    /// Answers `429` + `Retry-After: 1` and `502` in turn, logging each.
    struct Alternate(Arc<Mutex<Vec<u16>>>);

    #[async_trait::async_trait]
    impl Middleware for Alternate {
        async fn handle(
            &self,
            _req: Request,
            _extensions: &mut Extensions,
            _next: Next<'_>,
        ) -> reqwest_middleware::Result<Response> {
            let mut log = self.0.lock().unwrap();
            let status = if log.len().is_multiple_of(2) {
                429
            } else {
                502
            };
            log.push(status);
            let mut answer = http::Response::new("");
            *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
            if status == 429 {
                let one = http::HeaderValue::from_static("1");
                answer.headers_mut().insert("retry-after", one);
            }
            Ok(Response::from(answer))
        }
    }

    /// The throttled answers a request waits out are bounded per request: the retry layer
    /// above runs the guard again for each attempt, and the count goes on from where it was.
    #[tokio::test(start_paused = true)]
    async fn throttle_waits_are_counted_per_request_across_retries() {
        use reqwest_retry::RetryTransientMiddleware;
        use reqwest_retry::policies::ExponentialBackoff;

        use crate::transport::Classifier;

        let log = Arc::new(Mutex::new(Vec::new()));
        let backoff = ExponentialBackoff::builder().build_with_max_retries(3);
        let retry = RetryTransientMiddleware::new_with_policy_and_strategy(backoff, Classifier);
        let guard = Guard {
            throttle: Throttle {
                max_waits: 1,
                max_delay: Duration::from_secs(60),
            },
            breakers: None,
            hedger: None,
            request_timeout: Duration::from_secs(30),
            max_body: 1024,
        };
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(retry)
            .with(guard)
            .with(Alternate(Arc::clone(&log)))
            .build();
        let answer = client
            .get("http://upstream.test/status")
            .with_extension(Call::new(RequestKind::Status))
            .send()
            .await
            .unwrap();
        // 429 waited out, 502 retried, 429 handed back: one wait was the request's all.
        assert_eq!(*log.lock().unwrap(), [429, 502, 429]);
        assert_eq!(answer.status(), 429);
    }
}
