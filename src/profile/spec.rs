//! A profile as data — the shape of a profile file — and the one function that checks it and
//! turns it into a [`Profile`](super::Profile).
//!
//! Every field of a file is a field here, named as in the file; [`compile`] checks each one
//! and names it (`profile.fields.state`, `profile.states`, …) in the
//! [`Error::Config`](crate::Error::Config) of the first that is wrong.

use std::collections::{BTreeMap, HashMap};

use http::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::template::Template;
use super::{Auth, Canonical, Compiled, Create, Hint, HintMeaning, HintUnit, ProgressScale};
use crate::error::Error;

/// The most unknown words in a row a profile may tolerate.
pub(super) const MAX_UNKNOWN_LIMIT: u32 = 100;
/// Unknown words in a row tolerated when a profile does not say.
pub(super) const DEFAULT_UNKNOWN_LIMIT: u32 = 3;
/// The longest JSON pointer, template or name in a profile.
const MAX_TEXT: usize = 512;
/// The most words one profile maps, all states together.
const MAX_WORDS: usize = 256;
/// The most hint headers one profile names.
const MAX_HINTS: usize = 8;

/// A profile, as written in a file (TOML or JSON) or built in code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Spec {
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) base_url: Option<String>,
    pub(super) status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) events: Option<String>,
    #[serde(default)]
    pub(super) long_poll: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cancel: Option<String>,
    #[serde(default)]
    pub(super) fields: Fields,
    #[serde(default)]
    pub(super) states: States,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) status_codes: BTreeMap<String, Canonical>,
    #[serde(default = "default_unknown_limit")]
    pub(super) unknown_limit: u32,
    #[serde(default)]
    pub(super) progress_scale: ProgressScale,
    #[serde(default = "default_hints")]
    pub(super) hints: Vec<HintSpec>,
    #[serde(default)]
    pub(super) auth: AuthSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) create: Option<CreateSpec>,
}

/// Where each field is in a status document (RFC 6901 JSON pointers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Fields {
    pub(super) state: Option<String>,
    pub(super) id: Option<String>,
    pub(super) result_url: Option<String>,
    pub(super) error_message: Option<String>,
    pub(super) error_code: Option<String>,
    pub(super) progress: Option<String>,
    pub(super) eta_ms: Option<String>,
    pub(super) created_at: Option<String>,
    pub(super) completed_at: Option<String>,
}

/// The words of each canonical state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct States {
    #[serde(default)]
    pub(super) queued: Vec<String>,
    #[serde(default)]
    pub(super) running: Vec<String>,
    #[serde(default)]
    pub(super) succeeded: Vec<String>,
    #[serde(default)]
    pub(super) failed: Vec<String>,
    #[serde(default)]
    pub(super) canceled: Vec<String>,
}

impl States {
    pub(super) fn words_mut(&mut self, state: Canonical) -> &mut Vec<String> {
        match state {
            Canonical::Queued => &mut self.queued,
            Canonical::Running => &mut self.running,
            Canonical::Succeeded => &mut self.succeeded,
            Canonical::Failed => &mut self.failed,
            Canonical::Canceled => &mut self.canceled,
        }
    }

    fn all(&self) -> impl Iterator<Item = (Canonical, &String)> {
        [
            (Canonical::Queued, &self.queued),
            (Canonical::Running, &self.running),
            (Canonical::Succeeded, &self.succeeded),
            (Canonical::Failed, &self.failed),
            (Canonical::Canceled, &self.canceled),
        ]
        .into_iter()
        .flat_map(|(state, words)| words.iter().map(move |w| (state, w)))
    }
}

/// A header whose value is a pause to honour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HintSpec {
    pub(super) header: String,
    pub(super) unit: HintUnit,
    #[serde(default)]
    pub(super) means: HintMeaning,
}

/// How requests authenticate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthSpec {
    #[serde(default)]
    pub(super) scheme: Scheme,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) env: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Scheme {
    #[default]
    None,
    Header,
    Bearer,
    Basic,
}

/// How jobs are created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateSpec {
    pub(super) url: String,
    pub(super) ids: String,
    #[serde(default)]
    pub(super) idempotency_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) body: Option<Value>,
}

fn default_unknown_limit() -> u32 {
    DEFAULT_UNKNOWN_LIMIT
}

pub(super) fn default_hints() -> Vec<HintSpec> {
    vec![
        HintSpec {
            header: "retry-after-ms".into(),
            unit: HintUnit::Milliseconds,
            means: HintMeaning::TimeLeft,
        },
        HintSpec {
            header: "retry-after".into(),
            unit: HintUnit::Seconds,
            means: HintMeaning::TimeLeft,
        },
    ]
}

impl Spec {
    /// A profile named `name` whose status is at `status`, and nothing else yet.
    pub(super) fn new(name: String, status: String) -> Self {
        Spec {
            name,
            base_url: None,
            status,
            events: None,
            long_poll: false,
            cancel: None,
            fields: Fields::default(),
            states: States::default(),
            status_codes: BTreeMap::new(),
            unknown_limit: DEFAULT_UNKNOWN_LIMIT,
            progress_scale: ProgressScale::Auto,
            hints: default_hints(),
            auth: AuthSpec::default(),
            create: None,
        }
    }
}

/// Checks every field of `spec` and compiles it: the one way a profile is made.
pub(super) fn compile(spec: Spec) -> Result<Compiled, Error> {
    let name = spec.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::config(
            "profile.name",
            format!(
                "{:?}: use 1 to 64 letters, digits, `-`, `_` or `.`",
                crate::model::bounded(&spec.name, 80)
            ),
        ));
    }
    let base_url = match &spec.base_url {
        Some(raw) => Some(base(raw)?),
        None => None,
    };
    let status = Template::new("profile.status", &spec.status, true)?;
    let events = optional(spec.events.as_deref(), "profile.events")?;
    let cancel = optional(spec.cancel.as_deref(), "profile.cancel")?;
    let fields = &spec.fields;
    for (setting, pointer) in [
        ("profile.fields.state", &fields.state),
        ("profile.fields.id", &fields.id),
        ("profile.fields.result_url", &fields.result_url),
        ("profile.fields.error_message", &fields.error_message),
        ("profile.fields.error_code", &fields.error_code),
        ("profile.fields.progress", &fields.progress),
        ("profile.fields.eta_ms", &fields.eta_ms),
        ("profile.fields.created_at", &fields.created_at),
        ("profile.fields.completed_at", &fields.completed_at),
    ] {
        if let Some(pointer) = pointer {
            check_pointer(setting, pointer)?;
        }
    }
    let mut codes = HashMap::new();
    for (code, state) in &spec.status_codes {
        let parsed = code
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (200..300).contains(c) && *c != 204 && *c != 205)
            .ok_or_else(|| {
                Error::config(
                    "profile.status_codes",
                    format!(
                        "{:?} is not a success status that carries a state: use 200 to 299 (not 204 or 205)",
                        crate::model::bounded(code, 16)
                    ),
                )
            })?;
        codes.insert(parsed, *state);
    }
    if fields.state.is_none() && codes.is_empty() {
        return Err(Error::config(
            "profile.fields.state",
            "where is the state? Name its JSON pointer (for example \"/status\"), or map HTTP statuses to states in `status_codes`",
        ));
    }
    let mut words = HashMap::new();
    for (state, word) in spec.states.all() {
        let key = normalize(word);
        if key.is_empty() || key.len() > crate::model::MAX_WORD {
            return Err(Error::config(
                "profile.states",
                format!(
                    "the {} word {:?} must have 1 to {} bytes besides spaces",
                    state.as_str(),
                    crate::model::bounded(word, 80),
                    crate::model::MAX_WORD
                ),
            ));
        }
        if let Some(before) = words.insert(key, state)
            && before != state
        {
            return Err(Error::config(
                "profile.states",
                format!(
                    "{word:?} is both {} and {} (words compare without case and surrounding spaces)",
                    before.as_str(),
                    state.as_str()
                ),
            ));
        }
    }
    if words.len() > MAX_WORDS {
        return Err(Error::config(
            "profile.states",
            format!("at most {MAX_WORDS} words, all states together"),
        ));
    }
    if fields.state.is_some() && words.is_empty() {
        return Err(Error::config(
            "profile.states",
            "a state pointer needs words: name at least one for some state (succeeded = [\"done\"], ...)",
        ));
    }
    if !(1..=MAX_UNKNOWN_LIMIT).contains(&spec.unknown_limit) {
        return Err(Error::config(
            "profile.unknown_limit",
            format!(
                "{} is outside 1 to {MAX_UNKNOWN_LIMIT}: an unknown word ends the wait after this many in a row, so that it never polls for ever",
                spec.unknown_limit
            ),
        ));
    }
    if spec.hints.len() > MAX_HINTS {
        return Err(Error::config(
            "profile.hints",
            format!("at most {MAX_HINTS} headers"),
        ));
    }
    let mut hints = Vec::with_capacity(spec.hints.len());
    for hint in &spec.hints {
        let name = HeaderName::from_bytes(hint.header.trim().as_bytes()).map_err(|_| {
            Error::config(
                "profile.hints",
                format!(
                    "{:?} is not a header name",
                    crate::model::bounded(&hint.header, 80)
                ),
            )
        })?;
        hints.push(Hint {
            name,
            unit: hint.unit,
            means: hint.means,
        });
    }
    let auth = auth(&spec.auth)?;
    let create = match &spec.create {
        Some(create) => Some(Create {
            url: Template::new("profile.create.url", &create.url, false)?,
            ids: check_pointer("profile.create.ids", &create.ids).map(|()| create.ids.clone())?,
            idempotency_key: create.idempotency_key,
            body: match &create.body {
                Some(body) if !body.is_object() => {
                    return Err(Error::config(
                        "profile.create.body",
                        "must be a JSON object (a table in TOML)",
                    ));
                }
                body => body.clone(),
            },
        }),
        None => None,
    };
    Ok(Compiled {
        base_url,
        status,
        events,
        cancel,
        words,
        codes,
        hints,
        auth,
        create,
        spec,
    })
}

/// How a state word is compared: trimmed, without case.
pub(super) fn normalize(word: &str) -> String {
    word.trim().to_lowercase()
}

fn optional(raw: Option<&str>, setting: &'static str) -> Result<Option<Template>, Error> {
    raw.map(|raw| Template::new(setting, raw, true)).transpose()
}

fn base(raw: &str) -> Result<Url, Error> {
    let url = Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
        .filter(|u| {
            u.query().is_none() && u.fragment().is_none() && !crate::redact::has_userinfo(u)
        })
        .ok_or_else(|| {
            Error::config(
                "profile.base_url",
                format!(
                    "{:?} must be an http(s) URL without credentials, query or fragment",
                    crate::redact::redact(raw)
                ),
            )
        })?;
    let mut url = url;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A JSON pointer (RFC 6901): empty (the whole document) or `/`-separated, `~` only as `~0`
/// or `~1`, bounded.
fn check_pointer(setting: &'static str, pointer: &str) -> Result<(), Error> {
    let escapes_ok = pointer
        .split('~')
        .skip(1)
        .all(|rest| rest.starts_with('0') || rest.starts_with('1'));
    if pointer.len() > MAX_TEXT || !(pointer.is_empty() || pointer.starts_with('/')) || !escapes_ok
    {
        return Err(Error::config(
            setting,
            format!(
                "{:?} is not a JSON pointer: write it as \"/data/status\" (RFC 6901), at most {MAX_TEXT} bytes",
                crate::model::bounded(pointer, 80)
            ),
        ));
    }
    Ok(())
}

fn auth(spec: &AuthSpec) -> Result<Auth, Error> {
    if let Some(env) = &spec.env
        && (env.is_empty()
            || env.len() > 128
            || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(Error::config(
            "profile.auth.env",
            "an environment variable's name: letters, digits and `_`",
        ));
    }
    match (spec.scheme, &spec.header) {
        (Scheme::Header, Some(header)) => {
            let name = HeaderName::from_bytes(header.trim().as_bytes()).map_err(|_| {
                Error::config(
                    "profile.auth.header",
                    format!(
                        "{:?} is not a header name",
                        crate::model::bounded(header, 80)
                    ),
                )
            })?;
            Ok(Auth::Header(name))
        }
        (Scheme::Header, None) => Err(Error::config(
            "profile.auth.header",
            "scheme \"header\" needs the header's name (for example \"x-api-key\")",
        )),
        (_, Some(_)) => Err(Error::config(
            "profile.auth.header",
            "only scheme \"header\" takes a header name (bearer and basic use Authorization)",
        )),
        (Scheme::None, None) => Ok(Auth::None),
        (Scheme::Bearer, None) => Ok(Auth::Bearer),
        (Scheme::Basic, None) => Ok(Auth::Basic),
    }
}
