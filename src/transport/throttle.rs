//! The outermost layer: obey `Retry-After` exactly.
//!
//! reqwest-retry schedules its own backoff and does not look at `Retry-After`. A server that
//! says "429, come back in 1 s" means exactly that: sooner is rude and gets another 429,
//! later wastes time. This layer sleeps exactly the requested time (clamped to the request's
//! deadline, when it carries one) and sends the request again, a bounded number of times.
//! Never sooner than [`MIN_PAUSE`] though: `Retry-After: 0` answered at once, over and over,
//! is a hot loop, not a schedule.
//! What it does not absorb it returns as is; the wait loop then treats it as throttling too —
//! a `429` never ends a wait. Each throttled answer handed back that way counts as one failure
//! for the host's circuit breaker (the breaker, under this layer, leaves its handle on the
//! request's extensions); a throttled answer that was waited out does not.

use std::time::Duration;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;
use tracing::Instrument;

use super::breaker::BreakerHandle;
use super::classify::{Classification, classify};
use super::{Deadline, RequestKind};
use crate::poll::MIN_PAUSE;
use crate::telemetry;

#[derive(Debug)]
pub(crate) struct ThrottleLayer {
    /// How many throttled answers one request absorbs before handing one back.
    pub(crate) max_waits: u32,
    /// The longest single pause this layer takes; a longer `Retry-After` goes back to the
    /// caller.
    pub(crate) max_delay: Duration,
}

#[async_trait::async_trait]
impl Middleware for ThrottleLayer {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let kind = RequestKind::of(extensions);
        let deadline = extensions.get::<Deadline>().map(|d| d.0);
        let mut waits = 0;
        let mut req = req;
        loop {
            let spare = req.try_clone();
            let result = next.clone().run(req, extensions).await;
            let Ok(response) = &result else {
                return result;
            };
            let Classification::Throttled { retry_after } =
                classify(response.status(), response.headers())
            else {
                return result;
            };
            let pause = retry_after.max(MIN_PAUSE);
            // An event stream that is refused falls back to polling at once rather than wait.
            let fits =
                deadline.is_none_or(|d| Instant::now().checked_add(pause).is_some_and(|at| at < d));
            let absorbable = waits < self.max_waits && retry_after <= self.max_delay;
            let Some(again) = spare.filter(|_| !kind.is_stream() && absorbable && fits) else {
                // The service kept refusing past what one request absorbs: that counts
                // against it (a refused event stream only means "poll instead").
                if !kind.is_stream()
                    && !absorbable
                    && let Some(BreakerHandle(host)) = extensions.get::<BreakerHandle>()
                {
                    host.record_throttled();
                }
                return result;
            };
            waits += 1;
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
