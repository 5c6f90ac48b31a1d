//! Webhooks: verify a delivery, refuse replays, and read the job's status from it.
//!
//! # Why the SDK receives webhooks
//!
//! Job APIs push terminal states as webhooks — HeyGen's `video_translate.success`/`fail`,
//! Standard Webhooks at OpenAI and Replicate, Synthesia's and ElevenLabs' timestamped HMAC —
//! and every integrator writes the same receiver: check the signature over the raw body, check
//! the timestamp, drop the duplicate, find the job and its state. Each step has a classic
//! mistake (a comparison that leaks timing, a body parsed before it is verified, a replay
//! cache that grows for ever, a secret in a log line), so it is written once, here.
//!
//! A [`Receiver`] verifies one [`Scheme`] with one or more [`Secret`]s (several during a
//! rotation), in this order, cheapest refusal first:
//!
//! 1. the body is at most [`max_body`](ReceiverBuilder::max_body) bytes (1 MiB by default)
//!    and every header it reads at most [`max_header`](ReceiverBuilder::max_header) (4 KiB);
//! 2. the headers parse (at most [`MAX_SIGNATURES`] signatures, a [`MAX_DELIVERY_ID`]-byte
//!    id);
//! 3. the signed timestamp, for schemes with one, is within the
//!    [`tolerance`](ReceiverBuilder::tolerance) of now — 5 minutes by default, past and future;
//! 4. a signature matches the HMAC-SHA256 of the signed content under a secret, compared in
//!    constant time (the `hmac` crate's `verify_slice`);
//! 5. the body reads as an event through the receiver's [`Profile`] — the same
//!    [`Profile::decode`] every status read uses, so a HeyGen `video_translate.success` is
//!    the same [`JobStatus`](crate::JobStatus) (succeeded, with its URL) as a HeyGen status
//!    read;
//! 6. the delivery's id was not received before: a bounded [replay
//!    cache](ReceiverBuilder::replay_cache) (10,000 ids for twice the tolerance by default; the
//!    oldest goes first when it is full).
//!
//! Each refusal is a [`WebhookError`] that says which step refused and the HTTP answer to
//! give; none carries a secret, and a [`Secret`]'s `Debug` shows none of it.
//!
//! [`Receiver::receive`] is the plain function any framework calls with the request's
//! headers and raw body; with the `axum` feature, `webhook::axum::route` is a
//! handler that reads the body within its limit, answers `2xx`/`4xx`, and hands each event to
//! an [`EventSink`] (a `tokio::sync::mpsc::Sender<WebhookEvent>`, or your own).
//!
//! ```
//! use std::time::SystemTime;
//! use http::HeaderMap;
//! use translation_status::JobState;
//! use translation_status::webhook::{Receiver, Secret, WebhookError};
//!
//! // In the request handler: the headers and the raw body, before any JSON parsing, and the
//! // wall clock's time.
//! fn on_delivery(receiver: &Receiver, headers: &HeaderMap, body: &[u8], now: SystemTime) {
//!     match receiver.receive(headers, body, now) {
//!         Ok(event) => match &event.status.state {
//!             JobState::Completed => println!("{} done", event.job_id),
//!             other => println!("{} is {other:?}", event.job_id),
//!         },
//!         Err(e) if e.is_replay() => {} // already handled: acknowledge with 2xx
//!         Err(e) => eprintln!("refused ({}): {e}", e.status()),
//!     }
//! }
//!
//! let receiver = Receiver::heygen(Secret::raw("heygen-simulator-development-secret")?).build()?;
//! on_delivery(&receiver, &HeaderMap::new(), b"{}", SystemTime::UNIX_EPOCH);
//! # Ok::<(), WebhookError>(())
//! ```

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod error;
mod event;
mod replay;
mod scheme;
mod secret;
mod sink;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::HeaderMap;

pub use error::WebhookError;
pub use event::{WebhookEvent, heygen_event_profile};
pub use scheme::{MAX_DELIVERY_ID, MAX_SIGNATURES, Scheme};
pub use secret::Secret;
pub use sink::{EventSink, SINK_WAIT, Undelivered};

use crate::profile::Profile;
use replay::{Admission, ReplayCache};

/// The body limit by default: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// The header limit by default: 4 KiB for each header the scheme reads.
pub const DEFAULT_MAX_HEADER: usize = 4 * 1024;
/// The timestamp tolerance by default, in the past and in the future: 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// The replay cache's capacity by default: 10,000 delivery ids (a few MiB at most).
pub const DEFAULT_REPLAY_CAPACITY: usize = 10_000;
/// The most secrets one receiver holds (a rotation needs two).
pub const MAX_SECRETS: usize = 8;
/// The longest a body may take to arrive, by default (`webhook::axum::route`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Verifies webhook deliveries of one scheme and reads their events. Cheap to clone: clones
/// share the replay cache.
#[derive(Clone)]
pub struct Receiver(Arc<Inner>);

struct Inner {
    scheme: Scheme,
    secrets: Vec<Secret>,
    profile: Profile,
    tolerance: Duration,
    max_body: usize,
    max_header: usize,
    body_timeout: Duration,
    /// `None`: no replay cache (the caller de-duplicates).
    replay: Option<Mutex<ReplayCache>>,
}

impl Receiver {
    /// A receiver of `scheme`, verifying with `secret` (add more with
    /// [`secret`](ReceiverBuilder::secret)); events read through the simulator's profile
    /// unless [`profile`](ReceiverBuilder::profile) says otherwise.
    pub fn builder(scheme: Scheme, secret: Secret) -> ReceiverBuilder {
        ReceiverBuilder {
            scheme,
            secrets: vec![secret],
            profile: Profile::simulator(),
            tolerance: DEFAULT_TOLERANCE,
            max_body: DEFAULT_MAX_BODY,
            max_header: DEFAULT_MAX_HEADER,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            replay: Some((DEFAULT_REPLAY_CAPACITY, None)),
        }
    }

    /// Standard Webhooks, events read through the simulator's profile (its webhooks carry
    /// the job's status document).
    pub fn standard_webhooks(secret: Secret) -> ReceiverBuilder {
        Receiver::builder(Scheme::standard_webhooks(), secret)
    }

    /// HeyGen's scheme (header `signature`; see [`Scheme::hex_body`] for another), events
    /// read through [`heygen_event_profile`].
    pub fn heygen(secret: Secret) -> ReceiverBuilder {
        Receiver::builder(Scheme::heygen(), secret).profile(heygen_event_profile())
    }

    /// Verifies a delivery and reads its event: the one entry point for any framework.
    /// `headers` and `body` as received (the raw body, before any parsing); `now` the wall
    /// clock's time.
    ///
    /// A delivery whose id was received before is [`WebhookError::Replay`] (answer it `2xx`);
    /// its id is remembered only once it verified and decoded. Never panics, whatever the
    /// bytes.
    pub fn receive(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<WebhookEvent, WebhookError> {
        let (id, timestamp) = self.check(headers, body, now)?;
        let event = event::decode(&self.0.profile, body, id, timestamp)?;
        if let Some(replay) = &self.0.replay
            && lock(replay).admit(&event.delivery_id, since_epoch(now)) == Admission::Seen
        {
            tracing::debug!(delivery = %event.delivery_id, "webhook delivery received before");
            return Err(WebhookError::Replay {
                delivery_id: event.delivery_id,
            });
        }
        Ok(event)
    }

    /// Verifies a delivery's size, headers, timestamp and signature, without reading its
    /// event or consulting the replay cache: the delivery's id when it verifies.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<String, WebhookError> {
        self.check(headers, body, now).map(|(id, _)| id)
    }

    /// Forgets a delivery id, so that the sender's next attempt is received again: for an
    /// event that was received but could not be handed on (the handler answers `503` and the
    /// sender retries).
    pub fn forget(&self, delivery_id: &str) {
        if let Some(replay) = &self.0.replay {
            lock(replay).forget(delivery_id);
        }
    }

    /// The scheme this receiver verifies.
    pub fn scheme(&self) -> &Scheme {
        &self.0.scheme
    }

    /// The largest body accepted, in bytes.
    pub fn max_body(&self) -> usize {
        self.0.max_body
    }

    /// The longest a body may take to arrive (`webhook::axum::route`).
    pub fn body_timeout(&self) -> Duration {
        self.0.body_timeout
    }

    fn check(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(String, Option<u64>), WebhookError> {
        let inner = &self.0;
        if body.len() > inner.max_body {
            return Err(WebhookError::BodyTooLarge {
                len: body.len(),
                limit: inner.max_body,
            });
        }
        // The timestamp is checked before the signature (the cheaper refusal first), but it
        // is read with the rest of the headers: parse, then judge.
        let signed =
            inner
                .scheme
                .verify_timed(headers, body, &inner.secrets, inner.max_header, |at| {
                    fresh(at, now, inner.tolerance)
                })?;
        Ok((signed.id, signed.timestamp))
    }
}

/// Whether a signed timestamp (Unix seconds) is within `tolerance` of `now`.
fn fresh(at: u64, now: SystemTime, tolerance: Duration) -> Result<(), WebhookError> {
    let now = since_epoch(now);
    let at = Duration::from_secs(at);
    if at + tolerance < now {
        return Err(WebhookError::StaleTimestamp {
            age: now - at,
            tolerance,
        });
    }
    if at > now + tolerance {
        return Err(WebhookError::FutureTimestamp {
            ahead: at - now,
            tolerance,
        });
    }
    Ok(())
}

fn since_epoch(now: SystemTime) -> Duration {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

fn lock(replay: &Mutex<ReplayCache>) -> MutexGuard<'_, ReplayCache> {
    // Every change is one insert or removal: a panic while holding it leaves it consistent.
    replay.lock().unwrap_or_else(|p| p.into_inner())
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.0;
        f.debug_struct("Receiver")
            .field("scheme", &inner.scheme)
            .field("secrets", &inner.secrets.len())
            .field("profile", &inner.profile.name())
            .field("tolerance", &inner.tolerance)
            .field("max_body", &inner.max_body)
            .field("replay_cache", &inner.replay.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Receiver`]; [`build`](Self::build) checks every setting.
#[derive(Debug, Clone)]
#[must_use]
pub struct ReceiverBuilder {
    scheme: Scheme,
    secrets: Vec<Secret>,
    profile: Profile,
    tolerance: Duration,
    max_body: usize,
    max_header: usize,
    body_timeout: Duration,
    /// Capacity and time to live (`None`: twice the tolerance); `None`: no cache.
    replay: Option<(usize, Option<Duration>)>,
}

impl ReceiverBuilder {
    /// Adds a secret: a delivery verifies when any secret's signature matches (during a
    /// rotation, the new secret and the old one). At most [`MAX_SECRETS`].
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// The profile that reads the events: the simulator's by default (its Standard Webhooks
    /// carry the status document), [`heygen_event_profile`] for HeyGen's, or any profile whose
    /// pointers find the state and the job id in the body.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// How far a signed timestamp may be from now, in the past or the future (1 s to 1 day;
    /// 5 minutes by default).
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The largest body accepted (1 byte to 64 MiB; 1 MiB by default).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The longest value accepted for each header the scheme reads (64 bytes to 64 KiB;
    /// 4 KiB by default).
    pub fn max_header(mut self, bytes: usize) -> Self {
        self.max_header = bytes;
        self
    }

    /// The longest a body may take to arrive in `webhook::axum::route` (at least
    /// 100 ms; 10 s by default).
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The replay cache: at most `capacity` ids (1 to 10,000,000), each remembered for `ttl`
    /// (at least 1 s). By default 10,000 ids for twice the tolerance: a timestamped delivery
    /// is accepted for a tolerance on either side of its timestamp, so twice the tolerance is
    /// what it takes to refuse every replay of one; a shorter time lets a replay through
    /// once its id is forgotten. For schemes without a timestamp (HeyGen's) the time to live
    /// is the only window in which a replay is refused.
    pub fn replay_cache(mut self, capacity: usize, ttl: Duration) -> Self {
        self.replay = Some((capacity, Some(ttl)));
        self
    }

    /// No replay cache: every verified delivery is an event, duplicates included (for a
    /// caller that de-duplicates, as a job set does by job).
    pub fn without_replay_cache(mut self) -> Self {
        self.replay = None;
        self
    }

    /// Checks every setting and makes the receiver.
    pub fn build(self) -> Result<Receiver, WebhookError> {
        let config = |setting, problem| Err(WebhookError::Config { setting, problem });
        if self.secrets.len() > MAX_SECRETS {
            return Err(WebhookError::BadSecret(
                "more than 8 secrets: a rotation needs two",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&self.tolerance) {
            return config("tolerance", "use 1 s to 1 day (5 minutes is usual)");
        }
        if !(1..=64 * 1024 * 1024).contains(&self.max_body) {
            return config("max_body", "use 1 byte to 64 MiB");
        }
        if !(64..=64 * 1024).contains(&self.max_header) {
            return config("max_header", "use 64 bytes to 64 KiB");
        }
        if self.body_timeout < Duration::from_millis(100) {
            return config("body_timeout", "use at least 100 ms");
        }
        if let Scheme::TimestampedCombined { version, .. } = &self.scheme
            && (version.is_empty() || version == "t" || version.contains([',', '=', ' ']))
        {
            return config(
                "scheme.version",
                "the signatures' key, such as `v0`: not `t`, no `,`, `=` or space",
            );
        }
        let replay = match self.replay {
            Some((capacity, ttl)) => {
                let ttl = ttl.unwrap_or(self.tolerance * 2);
                if !(1..=10_000_000).contains(&capacity) {
                    return config("replay_cache.capacity", "use 1 to 10,000,000 ids");
                }
                if ttl < Duration::from_secs(1) {
                    return config("replay_cache.ttl", "use at least 1 s");
                }
                Some(Mutex::new(ReplayCache::new(capacity, ttl)))
            }
            None => None,
        };
        Ok(Receiver(Arc::new(Inner {
            scheme: self.scheme,
            secrets: self.secrets,
            profile: self.profile,
            tolerance: self.tolerance,
            max_body: self.max_body,
            max_header: self.max_header,
            body_timeout: self.body_timeout,
            replay,
        })))
    }
}
