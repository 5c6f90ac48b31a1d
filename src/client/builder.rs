//! Building a client: every setting checked before anything is sent.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::{Client, Inner};
use crate::context::Context;
use crate::error::Error;
use crate::jobset::{RequestBudget, SharedBudget};
use crate::poll::LearnedDurations;
use crate::profile::{Auth, Profile};
use crate::redact::redact;
use crate::transport::{BreakerConfig, HedgeConfig, Transport, TransportConfig};
use crate::wait::{Capabilities, WaitOptions};

/// Builds a [`Client`]; every setting is checked by [`build`](Self::build).
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: Option<String>,
    api_key: Option<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    max_retries: u32,
    retry_backoff: (Duration, Duration),
    max_throttle_waits: u32,
    max_throttle_delay: Duration,
    defaults: WaitOptions,
    learned: Option<LearnedDurations>,
    user_agent: String,
    follow_redirects: u32,
    max_body: usize,
    hedge: Option<HedgeConfig>,
    breaker: Option<BreakerConfig>,
    /// Whether `breaker` is the caller's, not the default.
    breaker_chosen: bool,
    budget: RequestBudget,
    profile: Profile,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: None,
            api_key: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_backoff: (Duration::from_millis(100), Duration::from_secs(1)),
            max_throttle_waits: 3,
            max_throttle_delay: Duration::from_secs(60),
            defaults: WaitOptions::default(),
            learned: None,
            user_agent: concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION")).to_owned(),
            follow_redirects: 0,
            max_body: crate::transport::DEFAULT_MAX_BODY,
            hedge: Some(HedgeConfig::default()),
            breaker: Some(BreakerConfig::default()),
            breaker_chosen: false,
            budget: RequestBudget::default(),
            profile: Profile::simulator(),
        }
    }
}

impl ClientBuilder {
    /// The service's base URL (`http://host:port`); job ids resolve against it. Optional
    /// when every job is addressed by its full status URL, or when the
    /// [`profile`](Self::profile) names the API's public base (HeyGen's, Replicate's, …). User-info in it
    /// (`http://user:pass@host`) is sent as HTTP Basic authentication, and shows as `***` in
    /// errors, logs and `Debug`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The API key, sent as the [`profile`](Self::profile) says: by default (and for the
    /// HeyGen profiles) as `X-Api-Key`; as `Authorization: Bearer <key>` for Replicate and
    /// OpenAI; as HTTP Basic when the key is `user:password` and the profile says `basic`.
    /// It is never printed: `Debug`, errors and logs show `<redacted>` or nothing.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The job API's dialect (default [`Profile::simulator`]): where a job's status is, what
    /// its words mean, how to authenticate, which hints to honour, whether it streams or
    /// holds requests, how to create and cancel jobs. Every reader of this client —
    /// [`Client::status`], waits, [`Client::watch`], job sets — reads through it.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The timeout of one request on the wire (default 10 s). A long-poll request gets the
    /// hold it asks for on top.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The timeout for establishing a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Transport retries of one failed request (default 3, at most 10; 0 disables them).
    /// The circuit breaker counts each attempt, so its
    /// [`consecutive_failures`](crate::transport::BreakerConfig::consecutive_failures) must be
    /// above `max_retries + 1`: the default breaker is raised to that on its own, one set
    /// with [`circuit_breaker`](Self::circuit_breaker) is checked by [`build`](Self::build).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Bounds of the jittered exponential backoff between transport retries (default
    /// 100 ms to 1 s). Both are raised to at least 100 ms, twice
    /// [`MIN_PAUSE`](crate::poll::MIN_PAUSE): the jitter may halve the minimum, and no retry
    /// follows its failure sooner than the floor.
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry_backoff = (min, max);
        self
    }

    /// How many `429`/`503` + `Retry-After` answers one request waits out before returning
    /// the answer (default 3), and the longest single wait (default 60 s). A shorter
    /// `Retry-After` than [`MIN_PAUSE`](crate::poll::MIN_PAUSE) (`0`, say) is waited out for
    /// the floor, and still counts as one of the waits.
    pub fn throttle(mut self, max_waits: u32, max_delay: Duration) -> Self {
        self.max_throttle_waits = max_waits;
        self.max_throttle_delay = max_delay;
        self
    }

    /// The options [`Client::wait`] and [`Client::watch`] use.
    pub fn wait_options(mut self, options: impl Into<WaitOptions>) -> Self {
        self.defaults = options.into();
        self
    }

    /// Shares learned job durations with other clients (default: a fresh history of 1,024).
    pub fn learned_durations(mut self, learned: LearnedDurations) -> Self {
        self.learned = Some(learned);
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Follows up to `max_hops` redirects (at most 10), each to the *same origin* (scheme,
    /// host and port) as the request. Default: none.
    ///
    /// Without it, a `3xx` answer is an [`Error::UnexpectedResponse`] naming the `Location`.
    /// With it, a redirect to another origin is still refused before anything is sent there
    /// — the API key and any user-info credentials never leave the origin they were given
    /// for — and so is the hop after the last allowed one (a redirect loop); both are
    /// [`Error::UnexpectedResponse`] too.
    pub fn follow_redirects(mut self, max_hops: u32) -> Self {
        self.follow_redirects = max_hops;
        self
    }

    /// The largest body read from a status or creation answer (default 1 MiB; between 1 KiB
    /// and 64 MiB). A larger one — or one whose `Content-Length` says so, before any of it
    /// is read — is an [`Error::UnexpectedResponse`]: a status document cut short cannot be
    /// trusted. Error answers are read only for their first 64 KiB (their `{"error": …}`
    /// document and an excerpt), and a refused event-stream subscription for its first
    /// 4 KiB; the rest of a body is never read.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// How slow status reads are hedged (on by default, with [`HedgeConfig`]'s defaults: a
    /// duplicate after the observed 95th percentile, at most 5 % of calls). Status reads are
    /// idempotent, and the hard budget bounds the extra load, so it is safe to leave on.
    pub fn hedging(mut self, config: HedgeConfig) -> Self {
        self.hedge = Some(config);
        self
    }

    /// Never hedges a request.
    pub fn without_hedging(mut self) -> Self {
        self.hedge = None;
        self
    }

    /// How the per-host circuit breaker trips and recovers (on by default, with
    /// [`BreakerConfig`]'s defaults). An open breaker pauses waits and fails single reads
    /// fast.
    pub fn circuit_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self.breaker_chosen = true;
        self
    }

    /// Sends every request, whatever the host's recent failures.
    pub fn without_circuit_breaker(mut self) -> Self {
        self.breaker = None;
        self
    }

    /// The request budget shared by every [`JobSet`](crate::jobset::JobSet) of this client (default 50 requests
    /// per second, bursts of 50). The server's `429`s and `RateLimit` headers shrink it
    /// further on their own.
    pub fn request_budget(mut self, budget: RequestBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Checks every setting and builds the client. Sends nothing.
    pub fn build(self) -> Result<Client, Error> {
        let base_url = match (self.base_url.as_deref(), self.profile.base_url()) {
            (Some(raw), _) | (None, Some(raw)) => Some(parse_base(raw)?),
            (None, None) => None,
        };
        positive("request_timeout", self.request_timeout)?;
        positive("connect_timeout", self.connect_timeout)?;
        if self.max_retries > 10 {
            return Err(Error::config(
                "max_retries",
                format!(
                    "{} is too many for retries inside one poll: use at most 10",
                    self.max_retries
                ),
            ));
        }
        let (min, max) = self.retry_backoff;
        positive("retry_backoff", min)?;
        if min > max {
            return Err(Error::config(
                "retry_backoff",
                format!("the minimum ({min:?}) is above the maximum ({max:?})"),
            ));
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|key| key.trim().is_empty())
        {
            return Err(Error::config("api_key", "is empty: leave it unset instead"));
        }
        if self.follow_redirects > crate::transport::MAX_REDIRECT_HOPS {
            return Err(Error::config(
                "follow_redirects",
                format!(
                    "{} hops is more than a moved route needs: use at most {}",
                    self.follow_redirects,
                    crate::transport::MAX_REDIRECT_HOPS
                ),
            ));
        }
        if !(MIN_BODY..=MAX_BODY).contains(&self.max_body) {
            return Err(Error::config(
                "max_response_body",
                format!(
                    "{} bytes is outside 1 KiB to 64 MiB: a status document needs some room, and memory is not unbounded",
                    self.max_body
                ),
            ));
        }
        self.defaults.validate()?;
        if let Some(hedge) = &self.hedge {
            hedge.validate()?;
        }
        let attempts = self.max_retries + 1;
        let mut breaker = self.breaker;
        if let Some(breaker) = &mut breaker {
            breaker.validate()?;
            if !self.breaker_chosen {
                // The default breaker makes room for however many retries were asked for.
                breaker.consecutive_failures = breaker.consecutive_failures.max(attempts + 1);
            }
            if breaker.consecutive_failures <= attempts {
                return Err(Error::config(
                    "circuit_breaker",
                    format!(
                        "consecutive_failures ({}) is not above one read's attempts (max_retries {} + 1): a single failed poll and its own retries would open the breaker. Raise consecutive_failures above {attempts}, or lower max_retries",
                        breaker.consecutive_failures, self.max_retries
                    ),
                ));
            }
        }
        self.budget.validate()?;
        let auth = self.profile.compiled().auth.clone();
        if self.api_key.is_some() && auth == Auth::None {
            return Err(Error::config(
                "api_key",
                format!(
                    "the profile `{}` sends no credentials (auth scheme \"none\"): leave the key unset, or use a profile that says how to send it",
                    self.profile.name()
                ),
            ));
        }
        if auth == Auth::Basic && self.api_key.as_ref().is_some_and(|k| !k.contains(':')) {
            return Err(Error::config(
                "api_key",
                "the profile sends HTTP Basic authentication: give the key as user:password",
            ));
        }
        let transport = Transport::new(&TransportConfig {
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            max_retries: self.max_retries,
            retry_min: min,
            retry_max: max,
            max_throttle_waits: self.max_throttle_waits,
            max_throttle_delay: self.max_throttle_delay,
            api_key: self.api_key,
            auth,
            user_agent: self.user_agent,
            follow_redirects: self.follow_redirects,
            max_body: self.max_body,
            hedge: self.hedge,
            breaker,
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                context: Arc::new(Context {
                    wire: transport,
                    profile: self.profile,
                    base_url,
                    capabilities: Capabilities::default(),
                    learned: self.learned.unwrap_or_default(),
                    budget: SharedBudget::new(self.budget),
                }),
                defaults: self.defaults,
            }),
        })
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url.as_deref().map(redact))
            .field("profile", &self.profile.name())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("follow_redirects", &self.follow_redirects)
            .field("max_response_body", &self.max_body)
            .field("hedge", &self.hedge)
            .field("breaker", &self.breaker)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

fn parse_base(raw: &str) -> Result<Url, Error> {
    let shown = redact(raw);
    let mut url = Url::parse(raw).map_err(|e| {
        Error::config(
            "base_url",
            format!("{shown:?} is not a URL ({e}); expected e.g. http://localhost:8080"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::config(
            "base_url",
            format!("{shown:?} must be an http or https URL, e.g. http://localhost:8080"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::config(
            "base_url",
            format!("{shown:?} must not have a query or fragment"),
        ));
    }
    // A base is a directory: `http://h/api` and `http://h/api/` both mean `/api/`.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Bounds of [`ClientBuilder::max_response_body`].
const MIN_BODY: usize = 1 << 10;
const MAX_BODY: usize = 64 << 20;

fn positive(setting: &'static str, value: Duration) -> Result<(), Error> {
    if value.is_zero() {
        Err(Error::config(setting, "must be greater than zero"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn setting(result: Result<Client, Error>) -> &'static str {
        match result {
            Err(Error::Config(c)) => c.setting,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    /// One read's own retries must not be able to open the breaker: the pair is refused,
    /// and fewer retries (or no breaker) make the same threshold fine.
    #[test]
    fn a_breaker_that_one_read_could_trip_is_refused() {
        use crate::transport::BreakerConfig;
        // The default breaker makes room for the retries asked for.
        assert!(Client::builder().max_retries(10).build().is_ok());
        let tight = BreakerConfig::new().consecutive_failures(4);
        let Err(Error::Config(c)) = Client::builder().circuit_breaker(tight).build() else {
            panic!("4 failures with 3 retries (4 attempts per read) was accepted");
        };
        assert_eq!(c.setting, "circuit_breaker");
        assert!(c.problem.contains("max_retries 3 + 1"), "{}", c.problem);
        assert!(
            Client::builder()
                .circuit_breaker(tight)
                .max_retries(2)
                .build()
                .is_ok()
        );
        assert!(
            Client::builder()
                .circuit_breaker(BreakerConfig::new().consecutive_failures(1))
                .max_retries(0)
                .build()
                .is_err(),
            "one attempt per read and a breaker that opens on one failure"
        );
        assert!(
            Client::builder()
                .circuit_breaker(BreakerConfig::new().consecutive_failures(2))
                .max_retries(0)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn invalid_settings_fail_at_build() {
        assert_eq!(
            setting(Client::builder().base_url("localhost:8080").build()),
            "base_url"
        );
        assert_eq!(
            setting(Client::builder().base_url("not a url").build()),
            "base_url"
        );
        assert_eq!(
            setting(Client::builder().base_url("ftp://h").build()),
            "base_url"
        );
        assert_eq!(
            setting(Client::builder().base_url("http://h/?a=1").build()),
            "base_url"
        );
        assert_eq!(
            setting(Client::builder().request_timeout(Duration::ZERO).build()),
            "request_timeout"
        );
        assert_eq!(
            setting(Client::builder().max_retries(50).build()),
            "max_retries"
        );
        assert_eq!(
            setting(
                Client::builder()
                    .retry_backoff(Duration::from_secs(2), Duration::from_secs(1))
                    .build()
            ),
            "retry_backoff"
        );
        assert_eq!(setting(Client::builder().api_key(" ").build()), "api_key");
        assert_eq!(
            setting(Client::builder().follow_redirects(11).build()),
            "follow_redirects"
        );
        assert_eq!(
            setting(Client::builder().max_response_body(100).build()),
            "max_response_body"
        );
        assert_eq!(
            setting(Client::builder().max_response_body(1 << 30).build()),
            "max_response_body"
        );
        assert_eq!(
            setting(
                Client::builder()
                    .request_budget(RequestBudget::new(0.0, 1))
                    .build()
            ),
            "request_budget"
        );
        assert_eq!(
            setting(Client::builder().api_key("bad\nkey").build()),
            "api_key"
        );
        assert_eq!(
            setting(
                Client::builder()
                    .wait_options(WaitOptions::new().max_polls(0))
                    .build()
            ),
            "max_polls"
        );
        assert_eq!(
            setting(
                Client::builder()
                    .hedging(HedgeConfig::new().percentile(1.5))
                    .build()
            ),
            "hedging"
        );
        assert_eq!(
            setting(
                Client::builder()
                    .circuit_breaker(BreakerConfig::new().half_open_probes(0))
                    .build()
            ),
            "circuit_breaker"
        );
        assert_eq!(
            setting(
                Client::builder()
                    .wait_options(WaitOptions::new().long_poll_hold(Duration::from_millis(500)))
                    .build()
            ),
            "long_poll_hold"
        );
    }

    #[test]
    fn valid_settings_build() {
        let client = Client::builder()
            .base_url("http://localhost:8080/api")
            .api_key("k")
            .build()
            .unwrap();
        assert_eq!(
            client.inner.context.base_url.as_ref().unwrap().as_str(),
            "http://localhost:8080/api/"
        );
        let debug = format!("{:?}", Client::builder().api_key("secret"));
        assert!(!debug.contains("secret"), "{debug}");
        assert!(Client::builder().build().is_ok(), "a base URL is optional");
    }
}
