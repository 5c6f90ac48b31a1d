//! The mechanism: one circuit per host, a ticket per admitted attempt, metrics on every
//! transition (the guard, `transport::guard`, asks for the tickets). The decisions are the circuit's (`circuit.rs`); this file owns the clock,
//! the locks and the telemetry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use reqwest::Response;
use tokio::time::Instant;
use url::Url;

use super::circuit::{Admission, BreakerState, Circuit, Verdict};
use super::{BreakerConfig, BreakerOpen};
use crate::telemetry;
use crate::transport::classify::{Classification, classify, classify_error, unusable};
use crate::transport::hosts::PerHost;

/// Every host's breaker, shared by the client's stacks (and so by all its clones).
pub(crate) struct Breakers {
    hosts: PerHost<HostBreaker>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breakers")
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl Breakers {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Breakers {
            hosts: PerHost::new(move |label| HostBreaker::new(label, config)),
        }
    }

    pub(crate) fn host(&self, url: &Url) -> Arc<HostBreaker> {
        self.hosts.get(url)
    }

    /// Whether the URL's host has ever answered over HTTP (any status).
    pub(crate) fn answered(&self, url: &Url) -> bool {
        self.hosts
            .peek(url)
            .is_some_and(|h| h.answered.load(Ordering::Relaxed))
    }
}

/// One host's circuit.
#[derive(Debug)]
pub(crate) struct HostBreaker {
    /// `host:port`, the metric label.
    label: String,
    circuit: Mutex<Circuit>,
    /// Set by the first HTTP answer of any kind: the host exists, so failures are an outage.
    answered: AtomicBool,
    /// The last failure below HTTP, for a refusal to name (only while nothing has answered).
    last_failure: Mutex<Option<String>>,
}

impl HostBreaker {
    fn new(label: &str, config: BreakerConfig) -> Self {
        telemetry::breaker_state(label, BreakerState::Closed);
        HostBreaker {
            label: label.to_owned(),
            circuit: Mutex::new(Circuit::new(config, Instant::now())),
            answered: AtomicBool::new(false),
            last_failure: Mutex::new(None),
        }
    }

    fn circuit(&self) -> MutexGuard<'_, Circuit> {
        self.circuit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one attempt, or refuses it while the circuit is open.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Ticket, BreakerOpen> {
        let (admission, moved) = self.circuit().admit(Instant::now());
        self.moved(moved);
        match admission {
            Admission::Pass { generation } | Admission::Probe { generation } => Ok(Ticket {
                host: Arc::clone(self),
                generation,
                settled: false,
            }),
            Admission::Refuse { retry_after } => {
                telemetry::breaker_rejected(&self.label);
                let answered = self.answered.load(Ordering::Relaxed);
                let last_failure = if answered {
                    None
                } else {
                    self.last_failure
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                };
                Err(BreakerOpen {
                    host: self.label.clone(),
                    retry_after,
                    answered,
                    last_failure,
                })
            }
        }
    }

    /// A throttled answer the guard hands back unabsorbed counts as a failure.
    pub(crate) fn record_throttled(&self) {
        let moved = self.circuit().record_throttled(Instant::now());
        self.moved(moved);
    }

    fn moved(&self, moved: Option<BreakerState>) {
        if let Some(to) = moved {
            tracing::info!(host = %self.label, to = to.as_str(), "circuit breaker");
            telemetry::breaker_transition(&self.label, to);
        }
    }
}

/// One admitted attempt. Dropped without a verdict (the request was cancelled), it frees its
/// probe slot, so a cancelled probe cannot wedge the breaker half-open.
pub(crate) struct Ticket {
    host: Arc<HostBreaker>,
    generation: u64,
    settled: bool,
}

impl Ticket {
    /// Reports what the attempt's result says about the host.
    pub(crate) fn settle(mut self, result: &reqwest_middleware::Result<Response>) {
        self.settled = true;
        let verdict = verdict(result);
        match result {
            // An answer, even one the client cannot use: the host is there.
            Ok(_) => self.host.answered.store(true, Ordering::Relaxed),
            Err(_) if verdict == Verdict::Healthy => {
                self.host.answered.store(true, Ordering::Relaxed);
            }
            Err(error)
                if verdict == Verdict::Failing && !self.host.answered.load(Ordering::Relaxed) =>
            {
                let text = crate::error::excerpt(crate::error::chain(error).as_bytes(), 300);
                *self
                    .host
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(text);
            }
            Err(_) => {}
        }
        let moved = self
            .host
            .circuit()
            .record(Instant::now(), self.generation, verdict);
        self.host.moved(moved);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.host.circuit().release(self.generation);
        }
    }
}

/// What an attempt's result says about its host: what the retry layer would retry is a
/// failure, an answer with `Retry-After` is neutral, anything else is a healthy answer — an
/// answer the client cannot use (a body over the limit, malformed HTTP, a redirect it does
/// not follow) included: the host is up.
fn verdict(result: &reqwest_middleware::Result<Response>) -> Verdict {
    let class = match result {
        Ok(response) => classify(response.status(), response.headers()),
        Err(error) if unusable(error).is_some() => return Verdict::Healthy,
        Err(error) => match classify_error(error) {
            Classification::Transient => Classification::Transient,
            _ => return Verdict::Neutral,
        },
    };
    match class {
        Classification::Transient => Verdict::Failing,
        Classification::Throttled { .. } => Verdict::Neutral,
        Classification::Success | Classification::Fatal => Verdict::Healthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_a_failure() {
        let answer = |status: u16, hint: bool| {
            let mut response = http::Response::new("");
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
            if hint {
                response
                    .headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("1"));
            }
            verdict(&Ok(Response::from(response)))
        };
        for healthy in [200, 201, 304, 400, 401, 404, 422] {
            assert_eq!(answer(healthy, false), Verdict::Healthy, "{healthy}");
        }
        for failing in [500, 502, 503, 504, 408, 429] {
            assert_eq!(answer(failing, false), Verdict::Failing, "{failing}");
        }
        assert_eq!(
            answer(429, true),
            Verdict::Neutral,
            "the throttle's business"
        );
        assert_eq!(answer(503, true), Verdict::Neutral);
        assert_eq!(
            answer(500, true),
            Verdict::Failing,
            "a 500 is not a throttle"
        );
        let refused = reqwest_middleware::Error::middleware(BreakerOpen {
            host: "h".into(),
            retry_after: std::time::Duration::ZERO,
            answered: true,
            last_failure: None,
        });
        assert_eq!(verdict(&Err(refused)), Verdict::Neutral);
        let unusable =
            reqwest_middleware::Error::middleware(crate::transport::attempts::BodyTooLarge {
                status: http::StatusCode::OK,
                limit: 1024,
            });
        assert_eq!(
            verdict(&Err(unusable)),
            Verdict::Healthy,
            "an answer too large to use is still an answer"
        );
    }
}
