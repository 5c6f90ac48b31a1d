//! Status profiles: a job API described as data.
//!
//! # Why data, not code
//!
//! Every job API says the same few things — where a job's status is, which word means done,
//! where the result and the error are, how to authenticate, when to look again — each in its
//! own shape. HeyGen's v2 says `{"data": {"status": "success", "url": ...}}`, Replicate
//! `{"status": "succeeded", "output": ...}`, OpenAI's videos `{"status": "completed",
//! "progress": 100}` with the pause in an `openai-poll-after-ms` header, some APIs answer
//! `202` while running and `200` when done. HeyGen's own CLI drives its `--wait` from a small
//! table per endpoint; a Smithy waiter's acceptors are declarative. So here: a [`Profile`] is a
//! value — a TOML or JSON file, a built-in, or built in code — checked once when it is made
//! ([`Error::Config`] naming the field), and read by one function,
//! [`Profile::decode`], that every reader of a status uses: [`Client::status`], single waits,
//! job sets and [`Client::watch`] alike. A new dialect is a new file.
//!
//! | field | what it says | example (`heygen-v2`) |
//! | --- | --- | --- |
//! | `name` | the profile's name, in errors and logs | `"heygen-v2"` |
//! | `base_url` | the API's public base, when the client has none | `"https://api.heygen.com"` |
//! | `status` | the status URL, relative to the base, `{id}` where the id goes | `"/v2/video_translate/{id}"` |
//! | `events`, `long_poll` | Server-Sent Events (a URL template) and `Prefer: wait` long-poll, when the API has them | — (it polls) |
//! | `cancel` | a URL to `POST` to cancel a job ([`WaitOptions::cancel_on_give_up`]) | — |
//! | `fields.*` | JSON pointers (RFC 6901): `state`, `id`, `result_url`, `error_message`, `error_code`, `progress`, `eta_ms`, `created_at`, `completed_at` | `state = "/data/status"`, `result_url = "/data/url"` |
//! | `states.*` | the words of each canonical state — `queued`, `running`, `succeeded`, `failed`, `canceled` — compared without case and surrounding spaces | `succeeded = ["success"]` |
//! | `status_codes` | HTTP statuses that are states (`"202" = "running"`, `"200" = "succeeded"`); they win over the body | — |
//! | `unknown_limit` | a word in no set is not terminal: after this many in a row (1–100, default 3) the wait ends with [`Error::UnknownState`] naming it | `3` |
//! | `progress_scale` | `auto` (`[0, 1]` a fraction, `(1, 100]` a percentage), `fraction`, or `percent` | `auto` |
//! | `hints` | headers to honour, in order of preference, each in `s` or `ms`, each meaning the `time_left` the server estimates (a window around the end, as the simulator's `Retry-After`) or the `pause` to take before the next poll (no poll goes out sooner: `openai-poll-after-ms`) | `retry-after-ms`, `retry-after` (time left) |
//! | `auth` | `scheme` `none`, `header` (with `header = "x-api-key"`), `bearer`, or `basic` (the key is `user:password`); `env`: where the CLI looks for the key | `header`, `x-api-key`, `HEYGEN_API_KEY` |
//! | `create` | `url`, `ids` (a pointer to an id or a list of ids), `idempotency_key` (the API replays a repeated create: send a key, and retry), `body` (a template, see below) | `/v2/video_translate`, `/data/video_translate_id` |
//!
//! Built in ([`Profile::builtin`]): `simulator` (the default: v1 with events, long-poll,
//! hints, cancel and creation), `result` (the original `{"result": ...}`), `heygen-v2`,
//! `heygen-v3`, `replicate`, `openai-video`. Their files are in `src/profile/builtin/`, and
//! read as any other: they are the examples to copy.
//!
//! A profile without events or long-poll just polls, on the best schedule the
//! [`PollPolicy`](crate::poll::PollPolicy) has — with the hint headers it names, its
//! progress and timestamps when it has them. Creation bodies are templates: a string that is
//! exactly `"{name}"` takes the parameter `name` ([`CreateRequest::param`](crate::CreateRequest::param)),
//! `"{name?}"` leaves the field out without it.
//!
//! [`WaitOptions::cancel_on_give_up`]: crate::WaitOptions::cancel_on_give_up
//! [`Error::Config`]: crate::Error::Config
//! [`Error::UnknownState`]: crate::Error::UnknownState
//! [`Client::status`]: crate::Client::status
//! [`Client::watch`]: crate::Client::watch

mod create;
mod decode;
mod spec;
mod template;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};
use url::Url;

use spec::{AuthSpec, CreateSpec, HintSpec, Scheme, Spec, compile};
pub(crate) use template::Template;

use crate::error::Error;
use crate::model::{JobStatus, ParseError};

/// The largest profile file [`Profile::from_file`] reads.
pub const MAX_PROFILE_FILE: u64 = 64 * 1024;

/// The built-in profiles, by name: the file that describes each.
const BUILTIN: [(&str, &str); 6] = [
    ("simulator", include_str!("builtin/simulator.toml")),
    ("result", include_str!("builtin/result.toml")),
    ("heygen-v2", include_str!("builtin/heygen-v2.toml")),
    ("heygen-v3", include_str!("builtin/heygen-v3.toml")),
    ("replicate", include_str!("builtin/replicate.toml")),
    ("openai-video", include_str!("builtin/openai-video.toml")),
];

/// The default profile, read once. Its file is part of this crate, and a test reads every
/// built-in: failing here is a bug of this crate, not something a caller can cause.
static SIMULATOR: LazyLock<Profile> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Profile::from_toml_str(BUILTIN[0].1).expect("the built-in simulator profile reads")
});

/// One of the five canonical states a profile maps words (and HTTP statuses) to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Canonical {
    /// Accepted, not started: [`JobState::Queued`](crate::JobState::Queued).
    Queued,
    /// Running: [`JobState::Pending`](crate::JobState::Pending).
    Running,
    /// Done: [`JobState::Completed`](crate::JobState::Completed).
    Succeeded,
    /// Failed: [`JobState::Failed`](crate::JobState::Failed).
    Failed,
    /// Canceled: [`JobState::Canceled`](crate::JobState::Canceled).
    Canceled,
}

impl Canonical {
    /// Every canonical state.
    pub const ALL: [Canonical; 5] = [
        Canonical::Queued,
        Canonical::Running,
        Canonical::Succeeded,
        Canonical::Failed,
        Canonical::Canceled,
    ];

    /// The name used in profile files: `queued`, `running`, `succeeded`, `failed`,
    /// `canceled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Canonical::Queued => "queued",
            Canonical::Running => "running",
            Canonical::Succeeded => "succeeded",
            Canonical::Failed => "failed",
            Canonical::Canceled => "canceled",
        }
    }
}

/// How a profile reads a progress number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProgressScale {
    /// `[0, 1]` is a fraction, `(1, 100]` a percentage (`1` reads as done).
    #[default]
    Auto,
    /// `[0, 1]`.
    Fraction,
    /// `[0, 100]`.
    Percent,
}

/// The unit of a hint header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HintUnit {
    /// Whole seconds (`Retry-After`); the HTTP-date form is not used.
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds, fractions allowed (`retry-after-ms`, `openai-poll-after-ms`).
    #[serde(rename = "ms")]
    Milliseconds,
}

/// How requests carry the API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    Header(HeaderName),
    Bearer,
    /// The key is `user:password`.
    Basic,
}

/// A hint header, its unit and what it means.
#[derive(Debug, Clone)]
pub(crate) struct Hint {
    pub(crate) name: HeaderName,
    pub(crate) unit: HintUnit,
    pub(crate) means: HintMeaning,
}

/// What a hint header's value says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HintMeaning {
    /// The time the job has left, as the server estimates it (the simulator's `Retry-After`
    /// on a pending job): the poll policy looks around the end it predicts — a window, not a
    /// promise (see `docs/sdk.md`).
    #[default]
    TimeLeft,
    /// The pause to take before the next poll (`openai-poll-after-ms`): no poll goes out
    /// sooner.
    Pause,
}

/// How jobs are created.
#[derive(Debug, Clone)]
pub(crate) struct Create {
    pub(crate) url: Template,
    pub(crate) ids: String,
    pub(crate) idempotency_key: bool,
    pub(crate) body: Option<serde_json::Value>,
}

/// A profile, checked and ready to read with.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) base_url: Option<Url>,
    pub(crate) status: Template,
    pub(crate) events: Option<Template>,
    pub(crate) cancel: Option<Template>,
    /// Every word, normalized, and its state.
    words: HashMap<String, Canonical>,
    codes: HashMap<u16, Canonical>,
    pub(crate) hints: Vec<Hint>,
    pub(crate) auth: Auth,
    pub(crate) create: Option<Create>,
    /// What it was made from.
    spec: Spec,
}

/// A description of a job API: where a job's status is and how to read it. See the
/// [module documentation](self) for the fields; cheap to clone.
///
/// ```
/// use translation_status::profile::{Canonical, Profile, ProgressScale};
///
/// // A built-in…
/// let heygen = Profile::builtin("heygen-v3")?;
/// assert_eq!(heygen.name(), "heygen-v3");
///
/// // …a file's text (or `Profile::from_file`)…
/// let tasks = Profile::from_toml_str(r#"
///     name = "tasks"
///     status = "/api/tasks/{id}"
///     [fields]
///     state = "/task/phase"
///     result_url = "/task/artifact/href"
///     [states]
///     running = ["BUSY"]
///     succeeded = ["DONE"]
///     failed = ["BROKEN"]
///     [auth]
///     scheme = "bearer"
/// "#)?;
///
/// // …or code: every one is checked once, here.
/// let same = Profile::builder("tasks", "/api/tasks/{id}")
///     .state("/task/phase")
///     .result_url("/task/artifact/href")
///     .words(Canonical::Running, ["BUSY"])
///     .words(Canonical::Succeeded, ["DONE"])
///     .words(Canonical::Failed, ["BROKEN"])
///     .auth_bearer()
///     .build()?;
/// assert_eq!(tasks, same);
///
/// let status = tasks.decode(200, br#"{"task": {"phase": "done", "artifact": {"href": "https://x/v.mp4"}}}"#)?;
/// assert!(status.is_terminal());
/// assert_eq!(status.result_url.as_deref(), Some("https://x/v.mp4"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Profile(Arc<Compiled>);

impl Profile {
    /// The simulator's profile (the default): v1 with events, long-poll, hints, cancel and
    /// creation.
    pub fn simulator() -> Profile {
        SIMULATOR.clone()
    }

    /// A built-in profile by name: `simulator`, `result`, `heygen-v2`, `heygen-v3`,
    /// `replicate`, `openai-video`.
    pub fn builtin(name: &str) -> Result<Profile, Error> {
        if name == "simulator" {
            return Ok(Profile::simulator());
        }
        let (_, text) = BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .ok_or_else(|| {
                Error::config(
                    "profile",
                    format!(
                        "no built-in profile is called {:?}: use one of {}, or load a file",
                        crate::model::bounded(name, 64),
                        Profile::builtin_names().join(", ")
                    ),
                )
            })?;
        Profile::from_toml_str(text)
    }

    /// The names of the built-in profiles.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(name, _)| *name).collect()
    }

    /// A profile from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Profile, Error> {
        let spec: Spec = toml::from_str(text).map_err(|e| unreadable("TOML", &e.to_string()))?;
        Profile::from_spec(spec)
    }

    /// A profile from JSON text.
    pub fn from_json_str(text: &str) -> Result<Profile, Error> {
        let spec: Spec =
            serde_json::from_str(text).map_err(|e| unreadable("JSON", &e.to_string()))?;
        Profile::from_spec(spec)
    }

    /// A profile from a file: JSON when its name ends in `.json`, TOML otherwise; at most
    /// [`MAX_PROFILE_FILE`] bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Profile, Error> {
        use std::io::Read;
        let path = path.as_ref();
        let shown = path.display();
        let file = std::fs::File::open(path)
            .map_err(|e| Error::config("profile", format!("cannot open {shown}: {e}")))?;
        let mut text = String::new();
        file.take(MAX_PROFILE_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::config("profile", format!("cannot read {shown}: {e}")))?;
        if text.len() as u64 > MAX_PROFILE_FILE {
            return Err(Error::config(
                "profile",
                format!("{shown} is larger than {MAX_PROFILE_FILE} bytes: not a profile"),
            ));
        }
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if json {
            Profile::from_json_str(&text)
        } else {
            Profile::from_toml_str(&text)
        }
    }

    /// A builder for a profile named `name` whose job status is at `status` (relative to the
    /// base URL, `{id}` where the job id goes).
    pub fn builder(name: impl Into<String>, status: impl Into<String>) -> ProfileBuilder {
        ProfileBuilder {
            spec: Spec::new(name.into(), status.into()),
        }
    }

    fn from_spec(spec: Spec) -> Result<Profile, Error> {
        compile(spec).map(|compiled| Profile(Arc::new(compiled)))
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.0.spec.name
    }

    /// The API's public base URL, when the profile names one.
    pub fn base_url(&self) -> Option<&str> {
        self.0.base_url.as_ref().map(Url::as_str)
    }

    /// The environment variable the CLI reads the API key from, when the profile names one.
    pub fn api_key_env(&self) -> Option<&str> {
        self.0.spec.auth.env.as_deref()
    }

    /// Whether the profile can create jobs ([`Client::create`](crate::Client::create)).
    pub fn can_create(&self) -> bool {
        self.0.create.is_some()
    }

    /// Whether the profile can cancel jobs (see [`WaitOptions::cancel_on_give_up`]).
    ///
    /// [`WaitOptions::cancel_on_give_up`]: crate::WaitOptions::cancel_on_give_up
    pub fn can_cancel(&self) -> bool {
        self.0.cancel.is_some()
    }

    /// Reads a status answer — its HTTP status and body — as this profile describes it.
    ///
    /// The one function behind every status this crate reads. A state word in none of the
    /// profile's sets is [`JobState::Unknown`](crate::JobState::Unknown), not an error; the
    /// error is for a body that has no state at all (not JSON, no state where the pointer
    /// says, not a string) and no HTTP status the profile maps. Never panics, whatever the
    /// bytes.
    pub fn decode(&self, http_status: u16, body: &[u8]) -> Result<JobStatus, ParseError> {
        self.0.decode(http_status, body)
    }

    /// The profile as TOML, as [`from_toml_str`](Self::from_toml_str) reads it back; an
    /// [`Error::Config`] for a profile TOML cannot hold (a `null` in a creation body: write it
    /// as JSON instead, with `serde_json`).
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string(&self.0.spec).map_err(|e| {
            Error::config(
                "profile",
                format!("cannot be written as TOML ({e}): write it as JSON"),
            )
        })
    }

    /// The progress a progress event reports, as a fraction.
    pub(crate) fn progress_of(&self, data: &str) -> Option<f64> {
        self.0.progress_of(data)
    }

    /// Whether the status URL is offered `Prefer: wait` (long-poll).
    pub(crate) fn long_poll(&self) -> bool {
        self.0.spec.long_poll
    }

    /// Unknown words tolerated in a row before a wait ends.
    pub(crate) fn unknown_limit(&self) -> u32 {
        self.0.spec.unknown_limit
    }

    /// What the answer's hint headers say: the time left, and the pause before the next
    /// poll — each from the first of the profile's headers of that meaning that holds a
    /// usable value. Milliseconds below 10¹² (about 31 years) or whole seconds; a pause is
    /// still never shorter than [`MIN_PAUSE`](crate::poll::MIN_PAUSE).
    pub(crate) fn hints(&self, headers: &HeaderMap) -> (Option<Duration>, Option<Duration>) {
        let first = |means: HintMeaning| {
            self.0
                .hints
                .iter()
                .filter(|hint| hint.means == means)
                .find_map(|hint| {
                    let value = headers.get(&hint.name)?.to_str().ok()?.trim();
                    match hint.unit {
                        HintUnit::Milliseconds => value
                            .parse::<f64>()
                            .ok()
                            .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 1e12)
                            .map(|ms| crate::poll::seconds(ms / 1000.0)),
                        HintUnit::Seconds => value.parse::<u64>().ok().map(Duration::from_secs),
                    }
                })
        };
        (first(HintMeaning::TimeLeft), first(HintMeaning::Pause))
    }

    pub(crate) fn compiled(&self) -> &Compiled {
        &self.0
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::simulator()
    }
}

impl PartialEq for Profile {
    fn eq(&self, other: &Self) -> bool {
        self.0.spec == other.0.spec
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name())
            .field("status", &self.0.status.as_str())
            .finish_non_exhaustive()
    }
}

fn unreadable(format: &str, problem: &str) -> Error {
    Error::config(
        "profile",
        format!(
            "not a profile in {format}: {}",
            crate::error::excerpt(problem.as_bytes(), 512)
        ),
    )
}

/// Builds a [`Profile`] in code; [`build`](Self::build) checks it as a file would be.
#[derive(Debug, Clone)]
#[must_use]
pub struct ProfileBuilder {
    spec: Spec,
}

impl ProfileBuilder {
    /// The API's public base URL, used when the client has none.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.spec.base_url = Some(url.into());
        self
    }

    /// Where the job's events are (Server-Sent Events, the simulator's event shape).
    pub fn events(mut self, template: impl Into<String>) -> Self {
        self.spec.events = Some(template.into());
        self
    }

    /// Whether the status URL honours `Prefer: wait` (long-poll).
    pub fn long_poll(mut self, enabled: bool) -> Self {
        self.spec.long_poll = enabled;
        self
    }

    /// Where to `POST` to cancel a job.
    pub fn cancel(mut self, template: impl Into<String>) -> Self {
        self.spec.cancel = Some(template.into());
        self
    }

    /// The JSON pointer to the state word.
    pub fn state(mut self, pointer: impl Into<String>) -> Self {
        self.spec.fields.state = Some(pointer.into());
        self
    }

    /// The JSON pointer to the job id.
    pub fn id(mut self, pointer: impl Into<String>) -> Self {
        self.spec.fields.id = Some(pointer.into());
        self
    }

    /// The JSON pointer to the result URL.
    pub fn result_url(mut self, pointer: impl Into<String>) -> Self {
        self.spec.fields.result_url = Some(pointer.into());
        self
    }

    /// The JSON pointer to the failure message.
    pub fn error_message(mut self, pointer: impl Into<String>) -> Self {
        self.spec.fields.error_message = Some(pointer.into());
        self
    }

    /// The JSON pointer to the failure code.
    pub fn error_code(mut self, pointer: impl Into<String>) -> Self {
        self.spec.fields.error_code = Some(pointer.into());
        self
    }

    /// The JSON pointer to the progress, and its scale.
    pub fn progress(mut self, pointer: impl Into<String>, scale: ProgressScale) -> Self {
        self.spec.fields.progress = Some(pointer.into());
        self.spec.progress_scale = scale;
        self
    }

    /// The JSON pointer to the estimated time left, in milliseconds.
    pub fn eta_ms(mut self, pointer: impl Into<String>) -> Self {
        self.spec.fields.eta_ms = Some(pointer.into());
        self
    }

    /// The JSON pointers to the creation and end times (RFC 3339 strings or Unix seconds).
    pub fn timestamps(
        mut self,
        created_at: impl Into<String>,
        completed_at: impl Into<String>,
    ) -> Self {
        self.spec.fields.created_at = Some(created_at.into());
        self.spec.fields.completed_at = Some(completed_at.into());
        self
    }

    /// Adds words for a canonical state.
    pub fn words<I, S>(mut self, state: Canonical, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec
            .states
            .words_mut(state)
            .extend(words.into_iter().map(Into::into));
        self
    }

    /// An HTTP status (`200`–`299`) that is a state whatever the body says.
    pub fn status_code(mut self, code: u16, state: Canonical) -> Self {
        self.spec.status_codes.insert(code.to_string(), state);
        self
    }

    /// Unknown words tolerated in a row before a wait ends (1–100, default 3).
    pub fn unknown_limit(mut self, limit: u32) -> Self {
        self.spec.unknown_limit = limit;
        self
    }

    /// The hint headers, in order of preference, each with its unit and meaning (replacing
    /// the default: `retry-after-ms` and `retry-after`, the time left).
    pub fn hints<I, S>(mut self, hints: I) -> Self
    where
        I: IntoIterator<Item = (S, HintUnit, HintMeaning)>,
        S: Into<String>,
    {
        self.spec.hints = hints
            .into_iter()
            .map(|(header, unit, means)| HintSpec {
                header: header.into(),
                unit,
                means,
            })
            .collect();
        self
    }

    /// The API key goes in this header.
    pub fn auth_header(mut self, header: impl Into<String>) -> Self {
        self.spec.auth = AuthSpec {
            scheme: Scheme::Header,
            header: Some(header.into()),
            env: self.spec.auth.env.take(),
        };
        self
    }

    /// The API key goes as `Authorization: Bearer <key>`.
    pub fn auth_bearer(mut self) -> Self {
        self.spec.auth.scheme = Scheme::Bearer;
        self.spec.auth.header = None;
        self
    }

    /// The API key, `user:password`, goes as HTTP Basic authentication.
    pub fn auth_basic(mut self) -> Self {
        self.spec.auth.scheme = Scheme::Basic;
        self.spec.auth.header = None;
        self
    }

    /// Where the CLI looks for the API key by default.
    pub fn api_key_env(mut self, var: impl Into<String>) -> Self {
        self.spec.auth.env = Some(var.into());
        self
    }

    /// How jobs are created: the URL to `POST` to, where the id (or list of ids) is in the
    /// answer, whether the API honours `Idempotency-Key`, and the body template.
    pub fn create(
        mut self,
        url: impl Into<String>,
        ids: impl Into<String>,
        idempotency_key: bool,
        body: Option<serde_json::Value>,
    ) -> Self {
        self.spec.create = Some(CreateSpec {
            url: url.into(),
            ids: ids.into(),
            idempotency_key,
            body,
        });
        self
    }

    /// Checks every field and makes the profile.
    pub fn build(self) -> Result<Profile, Error> {
        Profile::from_spec(self.spec)
    }
}

/// A [`ProfileBuilder`] starting from an existing profile (to change a field of a built-in).
impl From<&Profile> for ProfileBuilder {
    fn from(profile: &Profile) -> Self {
        ProfileBuilder {
            spec: profile.0.spec.clone(),
        }
    }
}

/// Deserialized through the same checks as the other constructors.
impl<'de> Deserialize<'de> for Profile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = Spec::deserialize(deserializer)?;
        Profile::from_spec(spec).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Profile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.spec.serialize(serializer)
    }
}

#[cfg(test)]
mod tests;
