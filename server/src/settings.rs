//! Typed, layered, validated settings.
//!
//! The defaults live in `config/default.toml`, which is compiled into the binary so that the
//! simulator behaves the same from any working directory and so that tests start from exactly
//! the documented defaults. Later layers override earlier ones (see [`Settings::load`]). Every
//! value is checked once, in [`Settings::validate`], before any port is bound: a bad value is a
//! [`ConfigError`] that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The defaults file, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of environment variables that override settings (`SIM__SECTION__KEY`).
pub const ENV_PREFIX: &str = "SIM";

/// Longest duration any setting, `PUT /admin/faults` body or `POST /admin/outage` may hold: a
/// year. Longer values are refused by name: they are typing mistakes, and no sum of a few of
/// them can overflow an instant.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A setting that cannot be used, found before the server starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type or format.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is out of range or inconsistent with another one.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `jobs.error_rate`.
        key: &'static str,
        /// What is wrong and what would be accepted.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Everything the simulator can be told. Field docs are in `config/default.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Listener, timeouts, body limit.
    pub server: ServerSettings,
    /// The job behind the original `GET /status`.
    pub legacy: LegacySettings,
    /// Jobs created through `POST /v1/jobs`.
    pub jobs: JobSettings,
    /// `eta_ms` and `Retry-After` hints.
    pub hints: HintSettings,
    /// `Prefer: wait` long-polling.
    pub longpoll: LongPollSettings,
    /// Server-Sent Events.
    pub sse: SseSettings,
    /// Webhook delivery.
    pub webhooks: WebhookSettings,
    /// Fault injection.
    pub faults: Faults,
    /// API key and admin token.
    pub auth: AuthSettings,
    /// Per-client rate limit.
    pub rate_limit: RateLimitSettings,
    /// The `/metrics` endpoint.
    pub metrics: MetricsSettings,
    /// The HeyGen dialect (`/v2/video_translate`, `/v3/video-translations`).
    pub heygen: HeyGenSettings,
    /// `Idempotency-Key` on creates.
    pub idempotency: IdempotencySettings,
    /// The change log and what reads it.
    pub changes: ChangeSettings,
    /// Where jobs, the change log and the shared limits live: this process or Redis.
    pub store: StoreSettings,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Longest time a non-streaming request may take; also how long shutdown waits for
    /// connections to finish.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest time from a request's first byte to the end of its head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Connections accepted beyond `max_connections` only to answer `/healthz` or `503`.
    pub reserve_connections: usize,
    /// Connections the kernel queues for the accept loop (`listen(2)` backlog).
    pub listen_backlog: u32,
}

/// Most connections `server.max_connections` or `server.reserve_connections` may ask for:
/// more than any file limit allows.
pub const CONNECTIONS_LIMIT: usize = 1_000_000;

/// `[legacy]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySettings {
    /// How long the legacy job takes.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// How it ends.
    pub outcome: Outcome,
}

/// How a job ends. Decided once, at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The translation succeeded.
    Completed,
    /// The translation failed.
    Error,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Error => "error",
        }
    }
}

/// `[jobs]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Probability of `error` for jobs created without an outcome.
    pub error_rate: f64,
    /// How long finished jobs are kept.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long a hanging job (`"hang": true`) is kept; it never finishes.
    #[serde(with = "humantime_serde")]
    pub hang_ttl: Duration,
    /// Most jobs in the store.
    pub max_jobs: usize,
    /// Most jobs one client (checked API key, else peer address) may hold in the store.
    pub max_jobs_per_client: usize,
    /// Longest `duration_ms` a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Most ids in one batched status read (`GET /v1/jobs?ids=...`).
    pub max_batch_ids: usize,
    /// Distribution of durations for jobs created without one.
    pub duration: DurationSettings,
}

/// `[jobs.duration]`: a flat table so that single keys can be overridden from the environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationSettings {
    /// Which distribution.
    pub kind: DurationKind,
    /// `fixed`: the duration.
    #[serde(with = "humantime_serde")]
    pub value: Duration,
    /// `uniform`: lower bound.
    #[serde(with = "humantime_serde")]
    pub min: Duration,
    /// `uniform`: upper bound.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// `lognormal`: median.
    #[serde(with = "humantime_serde")]
    pub median: Duration,
    /// `lognormal`: sigma of the underlying normal.
    pub sigma: f64,
}

/// Names of the duration distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurationKind {
    /// Always `value`.
    Fixed,
    /// Uniform in `[min, max]`.
    Uniform,
    /// Lognormal with `median` and `sigma`.
    Lognormal,
}

/// `[hints]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintSettings {
    /// Send `eta_ms`.
    pub eta: bool,
    /// Relative noise of the estimate, in `[0, 1)`.
    pub eta_noise: f64,
    /// Send `Retry-After` / `retry-after-ms`.
    pub retry_after: bool,
    /// Smallest `retry-after-ms`.
    #[serde(with = "humantime_serde")]
    pub min_retry_after: Duration,
}

/// `[longpoll]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPollSettings {
    /// Honour `Prefer: wait`.
    pub enabled: bool,
    /// Cap on the wait.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most held requests.
    pub max_waiters: usize,
}

/// `[sse]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseSettings {
    /// Serve the events route.
    pub enabled: bool,
    /// Keep-alive interval.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Progress event interval; zero = none.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Most open streams.
    pub max_streams: usize,
}

/// `[webhooks]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Signing secret.
    pub secret: String,
    /// Hosts callbacks may target.
    pub allow_hosts: Vec<String>,
    /// Attempts per delivery.
    pub max_attempts: u32,
    /// First retry backoff; doubles.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Timeout of one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest wait for a receiver's connection to open.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deliveries in flight at once, to all receivers.
    pub max_in_flight: usize,
    /// Deliveries in flight at once to one receiver (scheme, host and port).
    pub max_in_flight_per_host: usize,
    /// Deliveries waiting for a free slot, to all receivers.
    pub queue_size: usize,
    /// Deliveries waiting for a free slot to one receiver.
    pub max_queued_per_host: usize,
    /// Longest `callback_url` a job may carry, in bytes (as stored, after normalisation).
    pub max_callback_url_len: usize,
}

/// `[faults]`: what goes wrong on purpose. Also the body of `PUT /admin/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Latency added to every API request.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Probability of the slow tail.
    pub slow_tail_probability: f64,
    /// Extra latency of the slow tail.
    #[serde(with = "humantime_serde")]
    pub slow_tail_delay: Duration,
    /// Probability of `500 injected_error`.
    pub error_rate: f64,
    /// Probability of `429 injected_throttle`.
    pub throttle_rate: f64,
    /// `Retry-After` of an injected 429.
    #[serde(with = "humantime_serde")]
    pub throttle_retry_after: Duration,
    /// Probability of a dropped connection.
    pub drop_rate: f64,
    /// Probability of a malformed body.
    pub malformed_rate: f64,
    /// Probability that a held request (an event stream, a long-poll) gets nothing at all.
    pub silent_rate: f64,
    /// Probability that a webhook delivery is lost: never sent, never retried.
    pub webhook_drop_rate: f64,
    /// Probability that a delivered webhook is sent once more, with the same delivery id.
    pub webhook_duplicate_rate: f64,
    /// Probability that a webhook delivery is held back until the next one has been made.
    pub webhook_reorder_rate: f64,
    /// Longest a held-back webhook delivery waits for another to overtake it.
    #[serde(with = "humantime_serde")]
    pub webhook_reorder_window: Duration,
    /// Delay added before every webhook delivery's first attempt.
    #[serde(with = "humantime_serde")]
    pub webhook_delay: Duration,
    /// Outage windows relative to start-up.
    pub outages: Vec<OutageWindow>,
    /// Seed of the fault dice.
    pub seed: Option<u64>,
}

/// Default of `faults.webhook_reorder_window`, in `config/default.toml` too.
const WEBHOOK_REORDER_WINDOW: Duration = Duration::from_secs(1);

impl Default for Faults {
    /// No fault at all (a body of `PUT /admin/faults` starts from this).
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            slow_tail_probability: 0.0,
            slow_tail_delay: Duration::ZERO,
            error_rate: 0.0,
            throttle_rate: 0.0,
            throttle_retry_after: Duration::ZERO,
            drop_rate: 0.0,
            malformed_rate: 0.0,
            silent_rate: 0.0,
            webhook_drop_rate: 0.0,
            webhook_duplicate_rate: 0.0,
            webhook_reorder_rate: 0.0,
            // Not zero: a reorder rate set on its own must be able to reorder.
            webhook_reorder_window: WEBHOOK_REORDER_WINDOW,
            webhook_delay: Duration::ZERO,
            outages: Vec::new(),
            seed: None,
        }
    }
}

/// One outage window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageWindow {
    /// Offset from start-up.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// Length.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// `[auth]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Required `X-Api-Key`, if any.
    pub api_key: Option<String>,
    /// Bearer token of `/admin/*`; admin is disabled without it.
    pub admin_token: Option<String>,
}

/// `[rate_limit]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Turn the limit on.
    pub enabled: bool,
    /// Sustained rate per client.
    pub rps: f64,
    /// Bucket size per client.
    pub burst: u32,
    /// Most clients tracked.
    pub max_clients: usize,
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `/metrics`.
    pub enabled: bool,
}

/// `[heygen]`: the HeyGen dialect's shapes, limits and webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeyGenSettings {
    /// Share of a job's duration reported as `pending` (queued) before `running`, in `[0, 1)`.
    pub queued_fraction: f64,
    /// Most HeyGen jobs one client may have running (not terminal) at once.
    pub max_concurrent_jobs: usize,
    /// Most `output_languages` in one v3 create.
    pub max_output_languages: usize,
    /// Longest `title`, in bytes.
    pub max_title_len: usize,
    /// Longest `callback_id`, in bytes.
    pub max_callback_id_len: usize,
    /// Longest output language name, in bytes.
    pub max_language_len: usize,
    /// Where the signed video URLs of finished jobs point (`{base}/{id}.mp4?...`).
    pub video_url_base: String,
    /// How long a signed video URL says it is valid.
    #[serde(with = "humantime_serde")]
    pub url_ttl: Duration,
    /// Secret of HeyGen webhook signatures (HMAC-SHA256, hex, over the raw body).
    pub webhook_secret: String,
    /// Header that carries a HeyGen webhook's signature.
    pub signature_header: String,
}

/// `[idempotency]`: the `Idempotency-Key` table of creates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long a key is remembered after its first request.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most keys remembered at once, all clients together; the oldest is forgotten first.
    pub max_keys: usize,
    /// Longest key, in bytes.
    pub max_key_len: usize,
}

/// `[changes]`: the change log (every job's changes, each at a cursor) and what reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSettings {
    /// Serve `/v1/events`, `/v1/changes` and `/v1/watches`.
    pub enabled: bool,
    /// Most changes retained.
    pub history: usize,
    /// Changes older than this are dropped.
    #[serde(with = "humantime_serde")]
    pub history_age: Duration,
    /// Most jobs in one watch set.
    pub max_watch_jobs: usize,
    /// Most watch sets held, all clients together.
    pub max_watch_sets: usize,
    /// Most watch sets one client may hold.
    pub max_watch_sets_per_client: usize,
    /// A watch set unused for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub watch_ttl: Duration,
    /// Most change streams open at once.
    pub max_streams: usize,
    /// Most change streams one client may have open.
    pub max_streams_per_client: usize,
    /// A stream that sent nothing for this long sends a bookmark.
    #[serde(with = "humantime_serde")]
    pub bookmark_interval: Duration,
    /// A stream ends (with a final bookmark) after about this long.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Relative jitter of `max_lifetime`, in `[0, 0.5]`.
    pub lifetime_jitter: f64,
    /// Most changes one read returns (a `/v1/changes` answer, a stream's step).
    pub max_batch: usize,
}

/// `[store]`: where the jobs, the change log and the limits every replica must agree on live.
/// Its `Debug` masks a password in `redis_url`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `memory` (this process only) or `redis` (shared by every replica on the same Redis).
    pub backend: StoreBackend,
    /// The Redis server, `redis://[:password@]host:port[/db]` or `redis+unix:///path.sock`.
    pub redis_url: String,
    /// Prefix of every key the simulator writes (`<prefix>:...`).
    pub redis_prefix: String,
    /// Longest wait for any one Redis call (a blocking read waits this long beyond its block).
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// `Retry-After` of a `503 store_unavailable` answer.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// First pause before reconnecting to Redis; doubles up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest pause between two attempts to reconnect.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("backend", &self.backend)
            .field("redis_url", &masked_url(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("redis_timeout", &self.redis_timeout)
            .field("retry_after", &self.retry_after)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

/// `url` with its password, if any, replaced by `***` (and as a placeholder if it does not
/// parse, since it may hold one anyway).
fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// Names of the store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In this process: the embedded default.
    Memory,
    /// In Redis, shared by replicas.
    Redis,
}

/// Shortest `store.reconnect_min`: a reconnect loop never spins.
pub const MIN_RECONNECT: Duration = Duration::from_millis(10);

impl StoreSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.backend == StoreBackend::Redis {
            let url = url::Url::parse(&self.redis_url).map_err(|_| {
                invalid(
                    "store.redis_url",
                    "must be a redis://, rediss:// or redis+unix:// URL",
                )
            })?;
            if !matches!(url.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
                return Err(invalid(
                    "store.redis_url",
                    "must be a redis://, rediss:// or redis+unix:// URL",
                ));
            }
        }
        let prefix_ok = !self.redis_prefix.is_empty()
            && self.redis_prefix.len() <= 64
            && self
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !prefix_ok {
            return Err(invalid(
                "store.redis_prefix",
                "must be 1 to 64 characters from A-Z a-z 0-9 _ - .",
            ));
        }
        if self.redis_timeout.is_zero() {
            return Err(invalid("store.redis_timeout", "must be positive"));
        }
        if self.reconnect_min < MIN_RECONNECT {
            return Err(invalid("store.reconnect_min", "must be at least 10ms"));
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(invalid(
                "store.reconnect_max",
                "must not be shorter than store.reconnect_min",
            ));
        }
        Ok(())
    }
}

/// Most ids `jobs.max_batch_ids` may allow in one batched read: a URL of this many ids is
/// about 20 KiB, more than many proxies pass.
pub const MAX_BATCH_IDS: usize = 1000;

/// Most changes `changes.history` may retain.
pub const MAX_HISTORY: usize = 10_000_000;

/// Most jobs `changes.max_watch_jobs` may allow in one watch set.
pub const MAX_WATCH_JOBS: usize = 100_000;

/// Most watch sets `changes.max_watch_sets` may allow.
pub const MAX_WATCH_SETS: usize = 100_000;

/// Most changes `changes.max_batch` may allow in one read.
pub const MAX_BATCH: usize = 100_000;

impl ChangeSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        in_range("changes.history", self.history, MAX_HISTORY)?;
        if self.history_age.is_zero() {
            return Err(invalid("changes.history_age", "must be positive"));
        }
        in_range(
            "changes.max_watch_jobs",
            self.max_watch_jobs,
            MAX_WATCH_JOBS,
        )?;
        in_range(
            "changes.max_watch_sets",
            self.max_watch_sets,
            MAX_WATCH_SETS,
        )?;
        in_range(
            "changes.max_watch_sets_per_client",
            self.max_watch_sets_per_client,
            MAX_WATCH_SETS,
        )?;
        if self.watch_ttl.is_zero() {
            return Err(invalid("changes.watch_ttl", "must be positive"));
        }
        in_range("changes.max_streams", self.max_streams, CONNECTIONS_LIMIT)?;
        in_range(
            "changes.max_streams_per_client",
            self.max_streams_per_client,
            CONNECTIONS_LIMIT,
        )?;
        if self.bookmark_interval.is_zero() {
            return Err(invalid("changes.bookmark_interval", "must be positive"));
        }
        if self.max_lifetime.is_zero() {
            return Err(invalid("changes.max_lifetime", "must be positive"));
        }
        if !(0.0..=0.5).contains(&self.lifetime_jitter) {
            return Err(invalid("changes.lifetime_jitter", "must be in [0, 0.5]"));
        }
        in_range("changes.max_batch", self.max_batch, MAX_BATCH)
    }
}

/// Most bytes `heygen.max_title_len`, `max_callback_id_len`, `max_language_len` and
/// `idempotency.max_key_len` may allow: each is held per job or per key.
pub const MAX_FIELD_LEN: usize = 4096;

/// Most languages `heygen.max_output_languages` may allow in one create.
pub const MAX_OUTPUT_LANGUAGES: usize = 100;

/// Where settings come from, besides the compiled-in defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory holding `{SIM_ENV}.toml`.
    pub config_dir: Option<PathBuf>,
    /// `SIM_ENV` value: selects `{config_dir}/{env}.toml` if that file exists.
    pub environment: Option<String>,
    /// `--config FILE`: must exist.
    pub file: Option<PathBuf>,
    /// Read `SIM__*` environment variables.
    pub env_vars: bool,
    /// `--bind ADDR`.
    pub bind: Option<SocketAddr>,
}

impl Sources {
    /// The sources the binary uses: `SIM_CONFIG_DIR` (default `config`), `SIM_ENV`, env vars.
    pub fn from_process_env() -> Self {
        Sources {
            config_dir: Some(
                std::env::var_os("SIM_CONFIG_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("config")),
            ),
            environment: std::env::var("SIM_ENV").ok().filter(|e| !e.is_empty()),
            file: None,
            env_vars: true,
            bind: None,
        }
    }
}

impl Default for Settings {
    /// The compiled-in defaults of `config/default.toml`.
    fn default() -> Self {
        // The embedded file is checked by a unit test; failing here is a build defect.
        #[allow(clippy::expect_used)]
        Self::from_toml(DEFAULT_TOML).expect("config/default.toml is valid")
    }
}

impl Settings {
    /// Parses settings from one TOML document layered over nothing (it must be complete).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads the layers: defaults → `{config_dir}/{environment}.toml` → `file` → `SIM__*`
    /// environment variables → `bind`. Validates the result.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let (Some(dir), Some(env)) = (&sources.config_dir, &sources.environment) {
            let path: PathBuf = Path::new(dir).join(format!("{env}.toml"));
            builder = builder.add_source(config::File::from(path).required(false));
        }
        if let Some(file) = &sources.file {
            builder = builder.add_source(config::File::from(file.clone()).required(true));
        }
        if sources.env_vars {
            builder = builder.add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("webhooks.allow_hosts")
                    .try_parsing(true),
            );
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if let Some(bind) = sources.bind {
            settings.server.bind = bind;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Checks ranges and cross-field rules. Called by every constructor; call it again after
    /// changing fields by hand.
    pub fn validate(&self) -> Result<(), ConfigError> {
        probability("jobs.error_rate", self.jobs.error_rate)?;
        if !(0.0..1.0).contains(&self.hints.eta_noise) {
            return Err(invalid("hints.eta_noise", "must be in [0, 1)"));
        }
        if self.server.request_timeout.is_zero() {
            return Err(invalid("server.request_timeout", "must be positive"));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be positive"));
        }
        self.server.validate_connections()?;
        if self.longpoll.max_wait >= self.server.request_timeout {
            return Err(invalid(
                "longpoll.max_wait",
                "must be shorter than server.request_timeout",
            ));
        }
        if self.jobs.max_jobs == 0 {
            return Err(invalid("jobs.max_jobs", "must be at least 1"));
        }
        if self.jobs.max_jobs_per_client == 0 {
            return Err(invalid("jobs.max_jobs_per_client", "must be at least 1"));
        }
        in_range("jobs.max_batch_ids", self.jobs.max_batch_ids, MAX_BATCH_IDS)?;
        if self.jobs.hang_ttl.is_zero() {
            return Err(invalid("jobs.hang_ttl", "must be positive"));
        }
        if self.sse.keepalive.is_zero() {
            return Err(invalid("sse.keepalive", "must be positive"));
        }
        let d = &self.jobs.duration;
        match d.kind {
            DurationKind::Fixed => {}
            DurationKind::Uniform if d.min > d.max => {
                return Err(invalid(
                    "jobs.duration.min",
                    "must not exceed jobs.duration.max",
                ));
            }
            DurationKind::Uniform => {}
            DurationKind::Lognormal => {
                if !(d.sigma.is_finite() && d.sigma >= 0.0) {
                    return Err(invalid("jobs.duration.sigma", "must be finite and ≥ 0"));
                }
                if d.median.is_zero() {
                    return Err(invalid("jobs.duration.median", "must be positive"));
                }
            }
        }
        if self.webhooks.secret.is_empty() {
            return Err(invalid("webhooks.secret", "must not be empty"));
        }
        if crate::sim::webhooks::signing_key(&self.webhooks.secret).is_none() {
            return Err(invalid(
                "webhooks.secret",
                "a `whsec_` secret must be followed by valid base64",
            ));
        }
        if self.webhooks.max_attempts == 0 {
            return Err(invalid("webhooks.max_attempts", "must be at least 1"));
        }
        if self.webhooks.timeout.is_zero() {
            return Err(invalid("webhooks.timeout", "must be positive"));
        }
        if self.webhooks.connect_timeout.is_zero() {
            return Err(invalid("webhooks.connect_timeout", "must be positive"));
        }
        for (key, value) in [
            ("webhooks.max_in_flight", self.webhooks.max_in_flight),
            (
                "webhooks.max_in_flight_per_host",
                self.webhooks.max_in_flight_per_host,
            ),
            ("webhooks.queue_size", self.webhooks.queue_size),
            (
                "webhooks.max_queued_per_host",
                self.webhooks.max_queued_per_host,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.webhooks.max_callback_url_len == 0 {
            return Err(invalid(
                "webhooks.max_callback_url_len",
                "must be at least 1",
            ));
        }
        if self.rate_limit.enabled {
            if !(self.rate_limit.rps.is_finite() && self.rate_limit.rps > 0.0) {
                return Err(invalid("rate_limit.rps", "must be positive"));
            }
            if self.rate_limit.burst == 0 {
                return Err(invalid("rate_limit.burst", "must be at least 1"));
            }
            if self.rate_limit.max_clients == 0 {
                return Err(invalid("rate_limit.max_clients", "must be at least 1"));
            }
        }
        self.heygen.validate()?;
        self.idempotency.validate()?;
        self.changes.validate()?;
        self.store.validate()?;
        if matches!(&self.auth.api_key, Some(k) if k.is_empty()) {
            return Err(invalid("auth.api_key", "must not be empty when set"));
        }
        if matches!(&self.auth.admin_token, Some(k) if k.is_empty()) {
            return Err(invalid("auth.admin_token", "must not be empty when set"));
        }
        self.durations_in_range()?;
        self.faults.validate()
    }

    /// Every duration at most [`MAX_DURATION`] (`[faults]` is checked by [`Faults::validate`]).
    fn durations_in_range(&self) -> Result<(), ConfigError> {
        let d = &self.jobs.duration;
        let table = [
            ("server.request_timeout", self.server.request_timeout),
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
            ("legacy.delay", self.legacy.delay),
            ("jobs.ttl", self.jobs.ttl),
            ("jobs.max_duration", self.jobs.max_duration),
            ("jobs.duration.value", d.value),
            ("jobs.duration.min", d.min),
            ("jobs.duration.max", d.max),
            ("jobs.duration.median", d.median),
            ("hints.min_retry_after", self.hints.min_retry_after),
            ("longpoll.max_wait", self.longpoll.max_wait),
            ("sse.keepalive", self.sse.keepalive),
            ("sse.progress_interval", self.sse.progress_interval),
            ("webhooks.initial_backoff", self.webhooks.initial_backoff),
            ("webhooks.timeout", self.webhooks.timeout),
            ("heygen.url_ttl", self.heygen.url_ttl),
            ("idempotency.ttl", self.idempotency.ttl),
            ("changes.history_age", self.changes.history_age),
            ("changes.watch_ttl", self.changes.watch_ttl),
            ("changes.bookmark_interval", self.changes.bookmark_interval),
            ("changes.max_lifetime", self.changes.max_lifetime),
            ("store.redis_timeout", self.store.redis_timeout),
            ("store.retry_after", self.store.retry_after),
            ("store.reconnect_min", self.store.reconnect_min),
            ("store.reconnect_max", self.store.reconnect_max),
        ];
        for (key, value) in table {
            at_most_max(key, value)?;
        }
        // A refused client waits up to 1 / rps for its next token.
        if self.rate_limit.enabled && self.rate_limit.rps * MAX_DURATION.as_secs_f64() < 1.0 {
            return Err(invalid(
                "rate_limit.rps",
                "must allow at least one request a year",
            ));
        }
        Ok(())
    }
}

impl ServerSettings {
    /// The connection limits: positive timeouts, at least one connection, no more than
    /// [`CONNECTIONS_LIMIT`].
    fn validate_connections(&self) -> Result<(), ConfigError> {
        if self.header_read_timeout.is_zero() {
            return Err(invalid("server.header_read_timeout", "must be positive"));
        }
        if self.idle_timeout.is_zero() {
            return Err(invalid("server.idle_timeout", "must be positive"));
        }
        if self.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if !(1..=65_535).contains(&self.listen_backlog) {
            return Err(invalid("server.listen_backlog", "must be in 1..=65535"));
        }
        for (key, n) in [
            ("server.max_connections", self.max_connections),
            ("server.reserve_connections", self.reserve_connections),
        ] {
            if n > CONNECTIONS_LIMIT {
                return Err(invalid(
                    key,
                    format!("must be at most {CONNECTIONS_LIMIT}, beyond any file limit"),
                ));
            }
        }
        Ok(())
    }
}

/// Refuses a length or count outside `1..=max`, naming `key`.
fn in_range(key: &'static str, value: usize, max: usize) -> Result<(), ConfigError> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(key, format!("must be in 1..={max} (got {value})")))
    }
}

impl HeyGenSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..1.0).contains(&self.queued_fraction) {
            return Err(invalid("heygen.queued_fraction", "must be in [0, 1)"));
        }
        in_range(
            "heygen.max_concurrent_jobs",
            self.max_concurrent_jobs,
            CONNECTIONS_LIMIT,
        )?;
        in_range(
            "heygen.max_output_languages",
            self.max_output_languages,
            MAX_OUTPUT_LANGUAGES,
        )?;
        for (key, value) in [
            ("heygen.max_title_len", self.max_title_len),
            ("heygen.max_callback_id_len", self.max_callback_id_len),
            ("heygen.max_language_len", self.max_language_len),
        ] {
            in_range(key, value, MAX_FIELD_LEN)?;
        }
        let base = url::Url::parse(&self.video_url_base)
            .map_err(|e| invalid("heygen.video_url_base", format!("not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https")
            || base.query().is_some()
            || self.video_url_base.len() > 1024
        {
            return Err(invalid(
                "heygen.video_url_base",
                "must be an http(s) URL of at most 1024 bytes without a query",
            ));
        }
        if self.webhook_secret.is_empty() {
            return Err(invalid("heygen.webhook_secret", "must not be empty"));
        }
        let header = axum::http::HeaderName::from_bytes(self.signature_header.as_bytes())
            .map_err(|_| invalid("heygen.signature_header", "must be a valid header name"))?;
        if [
            "content-type",
            "content-length",
            "host",
            "transfer-encoding",
            "connection",
        ]
        .contains(&header.as_str())
        {
            return Err(invalid(
                "heygen.signature_header",
                "must not be a header the delivery itself sets",
            ));
        }
        Ok(())
    }
}

impl IdempotencySettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl.is_zero() {
            return Err(invalid("idempotency.ttl", "must be positive"));
        }
        in_range(
            "idempotency.max_keys",
            self.max_keys,
            CONNECTIONS_LIMIT * 10,
        )?;
        in_range("idempotency.max_key_len", self.max_key_len, MAX_FIELD_LEN)
    }
}

impl Faults {
    /// Checks that every probability is in `[0, 1]` and every duration at most
    /// [`MAX_DURATION`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        probability("faults.slow_tail_probability", self.slow_tail_probability)?;
        probability("faults.error_rate", self.error_rate)?;
        probability("faults.throttle_rate", self.throttle_rate)?;
        probability("faults.drop_rate", self.drop_rate)?;
        probability("faults.malformed_rate", self.malformed_rate)?;
        probability("faults.silent_rate", self.silent_rate)?;
        probability("faults.webhook_drop_rate", self.webhook_drop_rate)?;
        probability("faults.webhook_duplicate_rate", self.webhook_duplicate_rate)?;
        probability("faults.webhook_reorder_rate", self.webhook_reorder_rate)?;
        at_most_max("faults.latency", self.latency)?;
        at_most_max("faults.slow_tail_delay", self.slow_tail_delay)?;
        at_most_max("faults.throttle_retry_after", self.throttle_retry_after)?;
        at_most_max("faults.webhook_reorder_window", self.webhook_reorder_window)?;
        at_most_max("faults.webhook_delay", self.webhook_delay)?;
        if self.webhook_reorder_rate > 0.0 && self.webhook_reorder_window.is_zero() {
            return Err(invalid(
                "faults.webhook_reorder_window",
                "must be more than 0s while faults.webhook_reorder_rate is set: \
                 a delivery held back for no time is never overtaken",
            ));
        }
        for (i, w) in self.outages.iter().enumerate() {
            for (field, value) in [("start", w.start), ("duration", w.duration)] {
                if value > MAX_DURATION {
                    return Err(invalid(
                        "faults.outages",
                        format!(
                            "outage {i}: {field} must be at most {} (got {})",
                            humantime::format_duration(MAX_DURATION),
                            humantime::format_duration(value)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Refuses a duration longer than [`MAX_DURATION`], naming `key`.
pub(crate) fn at_most_max(key: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value <= MAX_DURATION {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "must be at most {} (got {})",
                humantime::format_duration(MAX_DURATION),
                humantime::format_duration(value)
            ),
        ))
    }
}

fn probability(key: &'static str, p: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be a probability in [0, 1], got {p}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_settings_never_show_a_redis_password() {
        let mut store = Settings::default().store;
        store.redis_url = "redis://:hunter2@db.internal:6379/1".into();
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.internal:6379/1"), "{shown}");
        store.redis_url = "not a url hunter2".into();
        assert!(!format!("{store:?}").contains("hunter2"));
    }

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let s = Settings::from_toml(DEFAULT_TOML).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.legacy.delay, Duration::from_secs(10));
        assert_eq!(s.legacy.outcome, Outcome::Completed);
        assert_eq!(s.jobs.duration.kind, DurationKind::Lognormal);
        assert!(s.auth.api_key.is_none());
    }

    #[test]
    fn layered_file_overrides_defaults_and_bind_wins() {
        let dir = std::env::temp_dir().join(format!("sim-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ci.toml"), "[legacy]\ndelay = \"250ms\"\n").unwrap();
        let file = dir.join("extra.toml");
        std::fs::write(&file, "[jobs]\nerror_rate = 0.25\n").unwrap();
        let s = Settings::load(&Sources {
            config_dir: Some(dir.clone()),
            environment: Some("ci".into()),
            file: Some(file),
            env_vars: false,
            bind: Some("127.0.0.1:0".parse().unwrap()),
        })
        .unwrap();
        assert_eq!(s.legacy.delay, Duration::from_millis(250));
        assert_eq!(s.jobs.error_rate, 0.25);
        assert_eq!(s.server.bind.port(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn err_of(toml_patch: &str) -> String {
        let dir = std::env::temp_dir().join(format!(
            "sim-settings-bad-{}-{}",
            std::process::id(),
            toml_patch.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, toml_patch).unwrap();
        let e = Settings::load(&Sources {
            file: Some(file),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        std::fs::remove_dir_all(dir).unwrap();
        e
    }

    #[test]
    fn invalid_values_name_their_key() {
        let table = [
            ("[jobs]\nerror_rate = 1.5\n", "jobs.error_rate"),
            ("[legacy]\ndelay = \"soon\"\n", "legacy.delay"),
            ("[legacy]\noutcome = \"maybe\"\n", "legacy.outcome"),
            ("[longpoll]\nmax_wait = \"60s\"\n", "longpoll.max_wait"),
            ("[faults]\ndrop_rate = -0.1\n", "faults.drop_rate"),
            ("[faults]\nsilent_rate = 2.0\n", "faults.silent_rate"),
            (
                "[faults]\nwebhook_duplicate_rate = 1.5\n",
                "faults.webhook_duplicate_rate",
            ),
            (
                "[faults]\nwebhook_delay = \"400days\"\n",
                "faults.webhook_delay",
            ),
            (
                "[faults]\nwebhook_reorder_rate = 0.5\nwebhook_reorder_window = \"0s\"\n",
                "faults.webhook_reorder_window",
            ),
            ("[server]\nbind = \"nowhere\"\n", "server.bind"),
            ("[hints]\neta_noise = 1.0\n", "hints.eta_noise"),
            ("[jobs]\nhang_ttl = \"0s\"\n", "jobs.hang_ttl"),
            (
                "[jobs]\nmax_jobs_per_client = 0\n",
                "jobs.max_jobs_per_client",
            ),
            (
                "[webhooks]\nmax_callback_url_len = 0\n",
                "webhooks.max_callback_url_len",
            ),
            (
                "[webhooks]\nmax_in_flight_per_host = 0\n",
                "webhooks.max_in_flight_per_host",
            ),
            (
                "[webhooks]\nconnect_timeout = \"0s\"\n",
                "webhooks.connect_timeout",
            ),
            (
                "[jobs.duration]\nkind = \"uniform\"\nmin = \"9s\"\nmax = \"1s\"\n",
                "jobs.duration.min",
            ),
            ("[webhooks]\nsecret = \"whsec_***\"\n", "webhooks.secret"),
            ("[server]\nbindd = \"127.0.0.1:1\"\n", "bindd"),
            ("[server]\nidle_timeout = \"0s\"\n", "server.idle_timeout"),
            (
                "[server]\nheader_read_timeout = \"0s\"\n",
                "server.header_read_timeout",
            ),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            ("[server]\nlisten_backlog = 0\n", "server.listen_backlog"),
            (
                "[server]\nreserve_connections = 2000000\n",
                "server.reserve_connections",
            ),
            ("[server]\nidle_timeout = \"400d\"\n", "server.idle_timeout"),
            (
                "[heygen]\nqueued_fraction = 1.0\n",
                "heygen.queued_fraction",
            ),
            (
                "[heygen]\nmax_concurrent_jobs = 0\n",
                "heygen.max_concurrent_jobs",
            ),
            (
                "[heygen]\nmax_output_languages = 101\n",
                "heygen.max_output_languages",
            ),
            ("[heygen]\nmax_title_len = 5000\n", "heygen.max_title_len"),
            (
                "[heygen]\nvideo_url_base = \"ftp://x/\"\n",
                "heygen.video_url_base",
            ),
            ("[heygen]\nwebhook_secret = \"\"\n", "heygen.webhook_secret"),
            (
                "[heygen]\nsignature_header = \"bad header\"\n",
                "heygen.signature_header",
            ),
            (
                "[heygen]\nsignature_header = \"Content-Type\"\n",
                "heygen.signature_header",
            ),
            ("[heygen]\nurl_ttl = \"400d\"\n", "heygen.url_ttl"),
            ("[idempotency]\nttl = \"0s\"\n", "idempotency.ttl"),
            ("[idempotency]\nmax_keys = 0\n", "idempotency.max_keys"),
            (
                "[idempotency]\nmax_key_len = 0\n",
                "idempotency.max_key_len",
            ),
            ("[jobs]\nmax_batch_ids = 0\n", "jobs.max_batch_ids"),
            ("[jobs]\nmax_batch_ids = 1001\n", "jobs.max_batch_ids"),
            ("[changes]\nhistory = 0\n", "changes.history"),
            ("[changes]\nhistory = 20000000\n", "changes.history"),
            ("[changes]\nhistory_age = \"0s\"\n", "changes.history_age"),
            ("[changes]\nhistory_age = \"400d\"\n", "changes.history_age"),
            ("[changes]\nmax_watch_jobs = 0\n", "changes.max_watch_jobs"),
            (
                "[changes]\nmax_watch_sets = 200000\n",
                "changes.max_watch_sets",
            ),
            (
                "[changes]\nmax_watch_sets_per_client = 0\n",
                "changes.max_watch_sets_per_client",
            ),
            ("[changes]\nwatch_ttl = \"0s\"\n", "changes.watch_ttl"),
            ("[changes]\nmax_streams = 0\n", "changes.max_streams"),
            (
                "[changes]\nmax_streams_per_client = 0\n",
                "changes.max_streams_per_client",
            ),
            (
                "[changes]\nbookmark_interval = \"0s\"\n",
                "changes.bookmark_interval",
            ),
            ("[changes]\nmax_lifetime = \"0s\"\n", "changes.max_lifetime"),
            (
                "[changes]\nmax_lifetime = \"400d\"\n",
                "changes.max_lifetime",
            ),
            (
                "[changes]\nlifetime_jitter = 0.6\n",
                "changes.lifetime_jitter",
            ),
            ("[changes]\nmax_batch = 0\n", "changes.max_batch"),
            ("[store]\nbackend = \"disk\"\n", "store.backend"),
            (
                "[store]\nbackend = \"redis\"\nredis_url = \"http://x\"\n",
                "store.redis_url",
            ),
            ("[store]\nredis_prefix = \"a b\"\n", "store.redis_prefix"),
            ("[store]\nredis_timeout = \"0s\"\n", "store.redis_timeout"),
            ("[store]\nreconnect_min = \"1ms\"\n", "store.reconnect_min"),
            ("[store]\nreconnect_max = \"20ms\"\n", "store.reconnect_max"),
        ];
        for (patch, key) in table {
            let e = err_of(patch);
            assert!(
                e.contains(key),
                "error for {patch:?} should name {key}: {e}"
            );
        }
    }
}
