//! The command line: subcommands, their flags, and what is read from the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use translation_status::poll::LearnedDurations;
use translation_status::{Client, Profile};

/// Wait for video-translation jobs, watch them, read them, create them — against the
/// simulator or a real job API, described by a status profile.
#[derive(Debug, Parser)]
#[command(name = "translation-status", version, about, long_about = None)]
#[command(after_help = "\
Profiles: simulator (default), result, heygen-v2, heygen-v3, replicate, openai-video, \
or --profile-file FILE (TOML, or JSON by its .json extension).
Exit status: 0 completed, 1 failed or canceled, 2 gave up or could not wait.")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Wait until the job ends, then print its result URL (or, with --json, one line).
    Wait(WaitArgs),
    /// Read the job's status once.
    Status(StatusArgs),
    /// Wait, showing a live progress line of the job's changes.
    Watch(WaitArgs),
    /// Create one job (one per language with heygen-v3) and print its id.
    Create(CreateArgs),
}

/// Which API, where, with which key.
#[derive(Debug, Args)]
pub(crate) struct Api {
    /// A built-in profile: simulator, result, heygen-v2, heygen-v3, replicate, openai-video
    /// [default: simulator]
    #[arg(long, value_name = "PROFILE", conflicts_with = "profile_file")]
    pub(crate) api: Option<String>,
    /// A profile file describing the API (TOML, or JSON by its .json extension)
    #[arg(long, value_name = "FILE")]
    pub(crate) profile_file: Option<PathBuf>,
    /// The API's base URL [default: the profile's, e.g. https://api.heygen.com]
    #[arg(long, value_name = "URL")]
    pub(crate) base_url: Option<String>,
    /// The environment variable that holds the API key [default: the profile's, e.g.
    /// HEYGEN_API_KEY]; the key itself is never taken from the command line nor printed
    #[arg(long, value_name = "VAR")]
    pub(crate) api_key_env: Option<String>,
    /// The timeout of one request (10s, 500ms, ...)
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10s")]
    pub(crate) request_timeout: Duration,
}

/// `wait` and `watch`.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// The job: its id, or the full URL of its status
    #[arg(value_name = "JOB")]
    pub(crate) job: String,
    #[command(flatten)]
    pub(crate) api: Api,
    /// Give up after this long (10m, 90s, 1h30m)
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "1h")]
    pub(crate) deadline: Duration,
    /// When giving up, cancel the job on the service (profiles with a cancel endpoint)
    #[arg(long)]
    pub(crate) cancel_on_give_up: bool,
    /// Neither read nor keep what waits learn about job durations (kept per profile and
    /// host in the user's cache directory)
    #[arg(long)]
    pub(crate) no_learn: bool,
    /// Print exactly one JSON line on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The job: its id, or the full URL of its status
    #[arg(value_name = "JOB")]
    pub(crate) job: String,
    #[command(flatten)]
    pub(crate) api: Api,
    /// Print exactly one JSON line on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

/// `create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    pub(crate) api: Api,
    /// The source video (HeyGen: `video_url`)
    #[arg(long, value_name = "URL")]
    pub(crate) video_url: Option<String>,
    /// An output language; repeat it for several (heygen-v3 makes one job per language)
    #[arg(long = "language", value_name = "LANGUAGE")]
    pub(crate) languages: Vec<String>,
    /// A title for the job
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// Where the service posts the job's end (a webhook)
    #[arg(long, value_name = "URL")]
    pub(crate) callback_url: Option<String>,
    /// The simulator's: how long the job takes (3s, 1m)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) duration: Option<Duration>,
    /// The simulator's: how the job ends (completed or error)
    #[arg(long, value_parser = ["completed", "error"])]
    pub(crate) outcome: Option<String>,
    /// Any other parameter of the profile's body template, as NAME=VALUE (VALUE is read as
    /// JSON when it is JSON, else as a string); repeatable
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = param)]
    pub(crate) params: Vec<(String, serde_json::Value)>,
    /// Send this JSON body as it is, instead of the profile's template
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    pub(crate) body: Option<serde_json::Value>,
    /// The Idempotency-Key to send (a fresh one is made when the API honours keys)
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// Print exactly one JSON line on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

/// A duration such as `10m`, `90s`, `1h30m`, `500ms`: more than zero.
fn duration(raw: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(raw.trim())
        .map_err(|e| format!("{e} (write it as 10m, 90s, 1h30m or 500ms)"))?;
    if parsed.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(parsed)
}

/// `NAME=VALUE`, the value as JSON when it parses, else as a string.
fn param(raw: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) = raw
        .split_once('=')
        .filter(|(name, _)| !name.trim().is_empty())
        .ok_or("write it as NAME=VALUE")?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
    Ok((name.trim().to_owned(), value))
}

fn json_object(raw: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// A problem with the arguments or the environment, said in words (exit status 2).
#[derive(Debug)]
pub(crate) struct Unusable(pub(crate) String);

impl Api {
    /// The profile asked for.
    pub(crate) fn profile(&self) -> Result<Profile, Unusable> {
        let profile = match (&self.api, &self.profile_file) {
            (_, Some(path)) => Profile::from_file(path),
            (Some(name), None) => Profile::builtin(name),
            (None, None) => Ok(Profile::simulator()),
        };
        profile.map_err(|e| Unusable(e.to_string()))
    }

    /// The client for `job` (`None`: for creating one): the profile, the base URL, the key
    /// from the environment (`env` reads a variable; injected for tests).
    pub(crate) fn client(
        &self,
        job: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Client, Unusable> {
        self.client_learning(job, env, None)
    }

    /// [`client`](Self::client), starting from `learned` durations when given.
    pub(crate) fn client_learning(
        &self,
        job: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        learned: Option<LearnedDurations>,
    ) -> Result<Client, Unusable> {
        let profile = self.profile()?;
        // A job named by its full status URL needs no base.
        let by_url = job.is_some_and(|job| {
            let lower = job.get(..8).unwrap_or(job).to_ascii_lowercase();
            lower.starts_with("http://") || lower.starts_with("https://")
        });
        if !by_url && self.base_url.is_none() && profile.base_url().is_none() {
            return Err(Unusable(format!(
                "the profile `{}` names no base URL: give --base-url",
                profile.name()
            )));
        }
        let key = match (&self.api_key_env, profile.api_key_env()) {
            // Asked for by name: it must be there.
            (Some(var), _) => Some(env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                Unusable(format!(
                    "--api-key-env {var}: the environment variable {var} is not set (or empty)"
                ))
            })?),
            // The profile's usual variable: used when it is set.
            (None, Some(var)) => env(var).filter(|k| !k.is_empty()),
            (None, None) => None,
        };
        let mut builder = Client::builder()
            .profile(profile)
            .request_timeout(self.request_timeout);
        if let Some(base) = &self.base_url {
            builder = builder.base_url(base);
        }
        if let Some(key) = key {
            builder = builder.api_key(key);
        }
        if let Some(learned) = learned {
            builder = builder.learned_durations(learned);
        }
        builder.build().map_err(|e| Unusable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn api(args: &[&str]) -> Api {
        let mut all = vec!["translation-status", "status", "j-1"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Status(s) => s.api,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn durations_and_params_read_as_written() {
        assert_eq!(duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(duration("0s").is_err() && duration("soon").is_err());
        assert_eq!(param("n=3"), Ok(("n".into(), serde_json::json!(3))));
        assert_eq!(param("t=a b"), Ok(("t".into(), serde_json::json!("a b"))));
        assert_eq!(
            param("l=[\"de\"]"),
            Ok(("l".into(), serde_json::json!(["de"])))
        );
        assert!(param("=x").is_err() && param("x").is_err());
        assert!(json_object("[1]").is_err() && json_object("{").is_err());
    }

    #[test]
    fn the_key_comes_from_the_environment_only() {
        let env = |var: &str| (var == "MY_KEY").then(|| "s3cret".to_owned());
        let named = api(&["--base-url", "http://h", "--api-key-env", "MY_KEY"]);
        assert!(named.client(None, env).is_ok());
        let missing = api(&["--base-url", "http://h", "--api-key-env", "NOPE"]);
        let Unusable(problem) = missing.client(None, env).unwrap_err();
        assert!(
            problem.contains("NOPE") && !problem.contains("s3cret"),
            "{problem}"
        );
        // The profile's own variable, when set; none needed otherwise.
        let heygen = api(&["--api", "heygen-v2"]);
        assert!(heygen.client(Some("j"), |_| None).is_ok());
        let Unusable(problem) = api(&[]).client(Some("j-1"), |_| None).unwrap_err();
        assert!(problem.contains("--base-url"), "{problem}");
        assert!(api(&[]).client(Some("http://h/status"), |_| None).is_ok());
        let Unusable(problem) = api(&["--api", "heygen-v9"]).profile().unwrap_err();
        assert!(problem.contains("heygen-v2"), "{problem}");
        assert!(
            Cli::try_parse_from([
                "translation-status",
                "status",
                "j",
                "--api",
                "result",
                "--profile-file",
                "x.toml"
            ])
            .is_err(),
            "one profile at a time"
        );
    }
}
