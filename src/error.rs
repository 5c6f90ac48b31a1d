//! The one error type of this crate, with variants named by what the caller can do next.
//!
//! A job that ended in `error` is a *result*, not a failure of this library: [`Client::status`]
//! returns it as `Ok`. Only [`Client::wait`] turns it into [`Error::JobFailed`], because a
//! waiter that was asked for a completed job did not get one.
//!
//! Third-party errors (reqwest, serde) are boxed as [`std::error::Error::source`], so upgrading
//! them is not a breaking change of this API.
//!
//! (About 500 lines, more than one concept usually gets: the variants, their payloads and the
//! next step each one names are one table of remedies, read — and kept consistent —
//! together.)
//!
//! [`Client::status`]: crate::Client::status
//! [`Client::wait`]: crate::Client::wait

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::model::JobStatus;
use crate::wait::{RemoteCancel, WaitReport};

/// Why a wait stopped before the job finished ([`GaveUp::reason`]); also what a
/// [`PollPolicy`](crate::poll::PollPolicy) returns to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The deadline came: the wait's last look (sent to be answered by the deadline) saw the
    /// job pending, or whatever was still out was cut at the deadline.
    Deadline,
    /// The poll budget was spent.
    MaxPolls,
    /// The policy decided to stop.
    Policy,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GiveUpReason::Deadline => "the deadline passed",
            GiveUpReason::MaxPolls => "the poll budget was spent",
            GiveUpReason::Policy => "the poll policy stopped",
        })
    }
}

/// A boxed error from a layer below this crate (HTTP client, JSON parser).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while reading or waiting for a job.
///
/// `{:?}` is one line: the variant and the message with its causes — never a source's own
/// `Debug`, which for some layers below (middleware errors) carries a backtrace under
/// `RUST_BACKTRACE=1`. `{:#?}` shows the variant's payload field by field.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job reached its `error` state. Waiting longer will not change that: inspect the
    /// message, fix the input and create a new job.
    #[error("{0}")]
    JobFailed(Box<JobFailed>),
    /// The job was canceled before it finished (by whoever can cancel it on the service). It
    /// will not finish: create a new job if its result is still needed.
    #[error("{0}")]
    JobCanceled(Box<JobCanceled>),
    /// The wait stopped before the job finished: the deadline passed or the poll budget ran
    /// out. The job may still finish; wait again with a longer deadline.
    #[error("{0}")]
    GaveUp(Box<GaveUp>),
    /// The service could not be reached, or kept failing, even after transport retries. A
    /// host that has never answered is reported this way even once its circuit breaker has
    /// opened: it is more likely a wrong URL or a dead host than an outage.
    #[error("{0}")]
    Unreachable(Box<Unreachable>),
    /// The service is unavailable: it answered before, then its circuit breaker opened, so
    /// nothing was sent (a single read fails fast, saying when to try again), or a wait's
    /// deadline passed while the service kept failing. The job may be fine: try again once
    /// the service is back.
    #[error("{0}")]
    Unavailable(Box<Unavailable>),
    /// The service kept reporting a state word the client's
    /// [`Profile`](crate::Profile) does not map to any canonical state — as many times in a
    /// row as the profile tolerates. The job may be fine: teach the profile the word (add it
    /// to the right state's words), or use the profile that matches this API.
    #[error("{0}")]
    UnknownState(Box<UnknownState>),
    /// The service answered with something this client cannot use: a rejected request
    /// (`400`, `401`, `404`, `422`, …), a redirect this client does not follow, a body that
    /// is not the documented JSON or is larger than the client reads, or an answer that is
    /// not valid HTTP (a garbled status line, too many headers).
    #[error("{0}")]
    UnexpectedResponse(Box<UnexpectedResponse>),
    /// A setting given to the builder or to [`WaitOptions`](crate::WaitOptions) is invalid.
    /// Raised before any request is sent.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// The job's status and progress have not changed for longer than the stall bound, and
    /// the job set was asked to stop on stalls. The job may be stuck — or just slow: check it
    /// with the service, or wait again with a larger bound.
    #[error("{0}")]
    Stalled(Box<Stalled>),
    /// Saved job-set state could not be used: it does not parse, comes from an incompatible
    /// version, or is too old to trust. Start the waits afresh.
    #[error("{0}")]
    SavedState(SavedStateError),
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, payload): (&str, &dyn fmt::Debug) = match self {
            Error::JobFailed(e) => ("JobFailed", e),
            Error::JobCanceled(e) => ("JobCanceled", e),
            Error::GaveUp(e) => ("GaveUp", e),
            Error::Unreachable(e) => ("Unreachable", e),
            Error::Unavailable(e) => ("Unavailable", e),
            Error::UnknownState(e) => ("UnknownState", e),
            Error::UnexpectedResponse(e) => ("UnexpectedResponse", e),
            Error::Config(e) => ("Config", e),
            Error::Stalled(e) => ("Stalled", e),
            Error::SavedState(e) => ("SavedState", e),
        };
        if f.alternate() {
            f.debug_tuple(name).field(payload).finish()
        } else {
            write!(f, "{name}({:?})", chain(self))
        }
    }
}

impl Error {
    /// `true` when trying the same call again later may succeed: the service was unreachable
    /// or overloaded (`429`, `5xx`), or the wait gave up before the job finished.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable(_)
            | Error::Unavailable(_)
            | Error::GaveUp(_)
            | Error::Stalled(_) => true,
            Error::UnexpectedResponse(e) => {
                e.status == 429 || e.status == 408 || (500..600).contains(&e.status)
            }
            Error::JobFailed(_)
            | Error::JobCanceled(_)
            | Error::UnknownState(_)
            | Error::Config(_)
            | Error::SavedState(_) => false,
        }
    }

    /// `true` when time ran out: the wait's deadline passed (also while the service was
    /// unavailable), or requests timed out.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::GaveUp(g) => g.reason == GiveUpReason::Deadline,
            Error::Unreachable(u) => u.timed_out,
            Error::Unavailable(u) => u.report.is_some(),
            _ => false,
        }
    }

    /// The HTTP status of the answer behind this error, when there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::UnexpectedResponse(e) => Some(e.status).filter(|&s| s != 0),
            Error::Unreachable(u) => u.status,
            _ => None,
        }
    }

    /// The last status the service reported for the job, when the error happened during a wait
    /// and one was seen.
    pub fn last_status(&self) -> Option<&JobStatus> {
        match self {
            Error::JobFailed(f) => Some(&f.status),
            Error::JobCanceled(c) => Some(&c.status),
            Error::UnknownState(u) => Some(&u.last_status),
            Error::GaveUp(g) => g.last_status.as_ref(),
            Error::Unavailable(u) => u.last_status.as_ref(),
            Error::Stalled(s) => s.last_status.as_ref(),
            _ => None,
        }
    }

    /// How the wait went, when the error ended a wait that got that far: the job failed or
    /// was canceled, the wait gave up, the service was unavailable at the deadline, or a job
    /// set stopped on a stall.
    pub fn report(&self) -> Option<&WaitReport> {
        match self {
            Error::JobFailed(f) => Some(&f.report),
            Error::JobCanceled(c) => Some(&c.report),
            Error::UnknownState(u) => Some(&u.report),
            Error::GaveUp(g) => Some(&g.report),
            Error::Unavailable(u) => u.report.as_ref(),
            Error::Stalled(s) => Some(&s.report),
            _ => None,
        }
    }

    /// When a request may be sent again, when the service said so or its circuit breaker
    /// knows: the remaining cool-down of an open breaker, or the server's `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable(u) => u.retry_after,
            Error::UnexpectedResponse(e) => e.retry_after,
            _ => None,
        }
    }

    pub(crate) fn config(setting: &'static str, problem: impl Into<String>) -> Self {
        Error::Config(ConfigError {
            setting,
            problem: problem.into(),
        })
    }
}

/// The job ended in `error`.
#[derive(Debug)]
#[non_exhaustive]
pub struct JobFailed {
    /// The job: its id when the caller gave one (or a [`CreatedJob`](crate::CreatedJob)),
    /// else its status URL (credentials masked).
    pub job: String,
    /// The job's status URL (credentials masked).
    pub status_url: String,
    /// The machine-readable failure code, when the service gave one.
    pub code: Option<String>,
    /// The human-readable failure message, when the service gave one.
    pub message: Option<String>,
    /// The terminal status as reported.
    pub status: JobStatus,
    /// How the wait went.
    pub report: WaitReport,
}

impl fmt::Display for JobFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} failed", self.job)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        f.write_str(
            "; the job itself failed, so waiting longer will not help: check its input and create a new job",
        )
    }
}

/// The job was canceled.
#[derive(Debug)]
#[non_exhaustive]
pub struct JobCanceled {
    /// The job: its id when the caller gave one (or a [`CreatedJob`](crate::CreatedJob)),
    /// else its status URL (credentials masked).
    pub job: String,
    /// The job's status URL (credentials masked).
    pub status_url: String,
    /// The terminal status as reported.
    pub status: JobStatus,
    /// How the wait went.
    pub report: WaitReport,
}

impl fmt::Display for JobCanceled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} was canceled before it finished; it will not finish: create a new job if its result is still needed",
            self.job
        )
    }
}

/// The service kept reporting a state word the profile does not know.
#[derive(Debug)]
#[non_exhaustive]
pub struct UnknownState {
    /// The job: its id when the caller gave one (or a [`CreatedJob`](crate::CreatedJob)),
    /// else its status URL (credentials masked).
    pub job: String,
    /// The job's status URL (credentials masked).
    pub status_url: String,
    /// The word, verbatim (at most [`MAX_WORD`](crate::MAX_WORD) bytes).
    pub word: String,
    /// How many answers in a row reported an unknown word.
    pub in_a_row: u32,
    /// The profile that did not know it.
    pub profile: String,
    /// The last status, with the word as its [`JobState::Unknown`](crate::JobState::Unknown).
    pub last_status: JobStatus,
    /// How the wait went.
    pub report: WaitReport,
}

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} reported the state {:?} {} time(s) in a row, which the profile `{}` does not map to queued, running, succeeded, failed or canceled. The job may be fine: add the word to the right state's words in the profile, or use the profile that matches this API",
            self.job, self.word, self.in_a_row, self.profile
        )
    }
}

/// The wait stopped before the job finished.
#[derive(Debug)]
#[non_exhaustive]
pub struct GaveUp {
    /// The job: its id when the caller gave one (or a [`CreatedJob`](crate::CreatedJob)),
    /// else its status URL (credentials masked).
    pub job: String,
    /// The job's status URL (credentials masked).
    pub status_url: String,
    /// Why the wait stopped.
    pub reason: GiveUpReason,
    /// The last status the service reported, if any answer arrived.
    pub last_status: Option<JobStatus>,
    /// How the wait went: elapsed time, request count, mechanism.
    pub report: WaitReport,
    /// What became of the job when the wait was asked to cancel it on giving up
    /// ([`WaitOptions::cancel_on_give_up`](crate::WaitOptions::cancel_on_give_up)); `None`
    /// when it was not asked.
    pub remote_cancel: Option<RemoteCancel>,
}

impl GaveUp {
    /// Time from the start of the wait to giving up.
    pub fn elapsed(&self) -> Duration {
        self.report.elapsed
    }

    /// Status requests (and event streams) sent during the wait.
    pub fn requests(&self) -> u32 {
        self.report.requests
    }
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up waiting for job {} after {} ms and {} request(s): {}",
            self.job,
            self.report.elapsed.as_millis(),
            self.report.requests,
            self.reason
        )?;
        match &self.last_status {
            Some(status) => write!(f, "; last status: {}", status.state)?,
            None => f.write_str("; no status was received")?,
        }
        match &self.remote_cancel {
            Some(RemoteCancel::Canceled) => f.write_str(
                "; the job was canceled on the service, so it will not finish: create a new job to try again",
            ),
            Some(other) => write!(
                f,
                "; {other}. The job may still finish: wait again, with a longer deadline or a larger poll budget"
            ),
            None => f.write_str(
                ". The job may still finish: wait again, with a longer deadline or a larger poll budget",
            ),
        }
    }
}

/// The job showed no change for longer than the stall bound.
#[derive(Debug)]
#[non_exhaustive]
pub struct Stalled {
    /// The job: its id when the caller gave one (or a [`CreatedJob`](crate::CreatedJob)),
    /// else its status URL (credentials masked).
    pub job: String,
    /// The job's status URL (credentials masked).
    pub status_url: String,
    /// How long its status and progress had not changed.
    pub unchanged_for: Duration,
    /// The bound it exceeded.
    pub bound: Duration,
    /// The last status the service reported.
    pub last_status: Option<JobStatus>,
    /// How the wait went.
    pub report: WaitReport,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} has not changed for {} ms (stall bound {} ms)",
            self.job,
            self.unchanged_for.as_millis(),
            self.bound.as_millis()
        )?;
        if let Some(status) = &self.last_status {
            write!(f, "; last status: {}", status.state)?;
            if let Some(progress) = status.progress {
                write!(f, " at {:.1} %", progress * 100.0)?;
            }
        }
        f.write_str(
            ". It may be stuck: check it with the service, or wait again with a larger stall bound",
        )
    }
}

/// Saved job-set state that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SavedStateError {
    /// The saved job the problem is in (its key), when it is in one.
    pub job: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

impl SavedStateError {
    pub(crate) fn new(job: Option<u64>, problem: impl Into<String>) -> Self {
        SavedStateError {
            job,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for SavedStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the saved job-set state cannot be used: ")?;
        if let Some(key) = self.job {
            write!(f, "job #{key}: ")?;
        }
        write!(
            f,
            "{}. Start these waits afresh (add the jobs again), or restore a state this version wrote",
            self.problem
        )
    }
}

/// The service could not be reached, even after transport retries.
#[derive(Debug)]
#[non_exhaustive]
pub struct Unreachable {
    /// The URL that was requested (credentials masked).
    pub url: String,
    /// Attempts made for the last request (the first try plus transport retries).
    pub attempts: u32,
    /// The HTTP status of the last answer, when the service answered with `5xx`/`408`/`429`.
    pub status: Option<u16>,
    /// Whether the last attempt timed out.
    pub timed_out: bool,
    /// The underlying error, when the failure happened below HTTP.
    pub source: Option<BoxError>,
    /// A job creation that was sent once and not retried: without an `Idempotency-Key` the
    /// API honours, a retry could create a second job (the first may exist already).
    pub creation_not_retried: bool,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            // It answered: the URL and the network are fine, the service is failing.
            Some(status) => write!(
                f,
                "the translation service at {} answered HTTP {status} to {} attempt(s): it is reachable but failing",
                self.url, self.attempts
            )?,
            None => {
                write!(
                    f,
                    "could not reach the translation service at {} after {} attempt(s)",
                    self.url, self.attempts
                )?;
                if let Some(source) = &self.source {
                    write!(f, ": {}", chain(source.as_ref()))?;
                }
            }
        }
        if self.creation_not_retried {
            f.write_str(
                ". A job creation is not retried without an idempotency key, because the job may already exist: give it one (NewJob::idempotency_key, CreateRequest::idempotency_key) and retry with the same key",
            )
        } else if self.status.is_some() {
            f.write_str(". Try again later")
        } else {
            f.write_str(
                ". Check the base URL, the network and the service's health, then try again later",
            )
        }
    }
}

impl Error {
    /// Names the job's status URL in the error of a wait (the wait's own loop knows the job
    /// only by its label).
    pub(crate) fn with_status_url(mut self, url: &str) -> Self {
        let slot = match &mut self {
            Error::JobFailed(e) => &mut e.status_url,
            Error::JobCanceled(e) => &mut e.status_url,
            Error::UnknownState(e) => &mut e.status_url,
            Error::GaveUp(e) => &mut e.status_url,
            Error::Stalled(e) => &mut e.status_url,
            Error::Unavailable(e) => {
                if e.job.is_some() {
                    e.status_url = Some(url.to_owned());
                }
                return self;
            }
            _ => return self,
        };
        url.clone_into(slot);
        self
    }

    /// Marks a failed job creation that was not retried (see
    /// [`Unreachable::creation_not_retried`]).
    pub(crate) fn creation_not_retried(mut self) -> Self {
        if let Error::Unreachable(u) = &mut self {
            u.creation_not_retried = true;
        }
        self
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// The service is unavailable: its circuit breaker is open, or it stayed unavailable until a
/// wait's deadline.
#[derive(Debug)]
#[non_exhaustive]
pub struct Unavailable {
    /// The host (`host:port`) whose breaker is open or whose failures ended the wait.
    pub host: String,
    /// How long until the breaker lets a request through again, counted from when this
    /// error was made; `None` when the breaker was not open (or is disabled).
    pub retry_after: Option<Duration>,
    /// The job, when a wait ended this way: its id when the caller gave one, else its
    /// status URL.
    pub job: Option<String>,
    /// The job's status URL (credentials masked), when a wait ended this way.
    pub status_url: Option<String>,
    /// The last status the service reported during the wait, if any.
    pub last_status: Option<JobStatus>,
    /// How the wait went, when a wait ended this way (its deadline passed).
    pub report: Option<WaitReport>,
    /// The last failure seen (typically [`Error::Unreachable`]), when there was one.
    pub source: Option<BoxError>,
}

impl Unavailable {
    /// A request the breaker refused.
    pub(crate) fn refused(host: &str, retry_after: Duration) -> Self {
        Unavailable {
            host: host.to_owned(),
            retry_after: Some(retry_after),
            job: None,
            status_url: None,
            last_status: None,
            report: None,
            source: None,
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.job, &self.report) {
            (Some(job), Some(report)) => write!(
                f,
                "gave up waiting for job {job} after {} ms and {} request(s): the translation service at {} was unavailable when the deadline passed",
                report.elapsed.as_millis(),
                report.requests,
                self.host
            )?,
            _ => write!(
                f,
                "the translation service at {} is unavailable: its circuit breaker opened after repeated failures, so no request was sent",
                self.host
            )?,
        }
        if let Some(source) = &self.source {
            write!(f, "; last failure: {}", chain(source.as_ref()))?;
        }
        if let Some(status) = &self.last_status {
            write!(f, "; last status: {}", status.state)?;
        }
        match (self.retry_after, self.job.is_some()) {
            (Some(after), false) => write!(f, ". Try again in {} ms", after.as_millis()),
            (Some(after), true) => write!(
                f,
                ". The job may still finish: wait again once the service is back (requests resume in {} ms)",
                after.as_millis()
            ),
            (None, _) => {
                f.write_str(". The job may still finish: wait again once the service is back")
            }
        }
    }
}

impl std::error::Error for Unavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// The service answered, but not with something this client can use.
#[derive(Debug)]
#[non_exhaustive]
pub struct UnexpectedResponse {
    /// The URL that was requested (credentials masked).
    pub url: String,
    /// The HTTP status of the answer; `0` when the answer was not valid HTTP and no status
    /// could be read ([`Error::http_status`] is then `None`).
    pub status: u16,
    /// The `error.code` of a JSON error body, when there was one.
    pub code: Option<String>,
    /// What was wrong, in words.
    pub message: String,
    /// The first bytes of the body, for diagnosis (at most 256 characters), with URLs'
    /// credentials masked as everywhere else (`?sig=***`).
    pub body_excerpt: String,
    /// The server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// On a `401`/`403`: the authentication scheme(s) the server's `WWW-Authenticate` asked
    /// for (`Bearer`, `Basic`, …), when it named any.
    pub auth_challenge: Option<String>,
    /// Whether the request carried credentials from the URL's user-info (sent as HTTP Basic).
    pub(crate) url_credentials: bool,
}

impl UnexpectedResponse {
    fn next_step(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self.status {
            401 | 403 => return self.auth_step(),
            404 | 410 => {
                "check the job id or status URL (and the base URL); finished jobs expire after a while"
            }
            400 | 413 | 415 | 422 => "the request was rejected: check the arguments",
            429 => "the service is rate limiting this client: slow down and try again later",
            300..=303 | 305..=399 => {
                "point the client at the final URL (base URL or status URL); ClientBuilder::follow_redirects allows a few redirects within the same origin, never to another"
            }
            200..=299 => {
                "the service's answer does not follow the documented format: check that the URL points at the translation service, or upgrade this library"
            }
            _ => "check the URL and the service's documentation",
        })
    }

    /// What to check after a `401`/`403`: what the server asked for, or the credentials this
    /// client sent — the API key only when it is the likely culprit.
    fn auth_step(&self) -> Cow<'static, str> {
        let schemes: Vec<&str> = self
            .auth_challenge
            .as_deref()
            .map(|c| c.split(", ").collect())
            .unwrap_or_default();
        let api_key_scheme = |scheme: &&str| {
            let scheme = scheme.to_ascii_lowercase().replace(['-', '_'], "");
            scheme.contains("apikey")
        };
        if !schemes.is_empty() && !schemes.iter().any(api_key_scheme) {
            let basic = schemes.iter().any(|s| s.eq_ignore_ascii_case("basic"));
            if basic && self.url_credentials {
                return Cow::Borrowed(
                    "the server refused the user name and password given in the URL (sent as HTTP Basic authentication): check them",
                );
            }
            return Cow::Owned(format!(
                "the server asks for {} authentication (WWW-Authenticate), which this client does not send: check that the URL points at the translation service, and whether something in between (a proxy, a gateway) wants credentials of its own",
                schemes.join(" or ")
            ));
        }
        if self.url_credentials {
            return Cow::Borrowed(
                "the server refused the user name and password given in the URL (sent as HTTP Basic authentication): check them, and how the service expects to be authenticated",
            );
        }
        Cow::Borrowed("check the API key given to ClientBuilder::api_key")
    }
}

impl fmt::Display for UnexpectedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unexpected response from {}: HTTP {}",
            self.url, self.status
        )?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        write!(f, ": {}", self.message)?;
        if !self.body_excerpt.is_empty() && !self.message.contains(&self.body_excerpt) {
            write!(f, "; body: {:?}", self.body_excerpt)?;
        }
        write!(f, ". Next step: {}", self.next_step())
    }
}

/// A setting that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting, named as in the builder (`base_url`, `request_timeout`, …).
    pub setting: &'static str,
    /// What is wrong with it and what would be accepted.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.setting, self.problem)
    }
}

/// Renders an error and its sources on one line: `outer: inner: innermost`.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = inner.source();
    }
    out
}

/// The first `max` characters of a body, for error messages.
pub(crate) fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose own `Debug` is long (as a middleware error's is, with a backtrace).
    #[derive(Debug)]
    struct Verbose;

    impl fmt::Display for Verbose {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused")
        }
    }

    impl std::error::Error for Verbose {}

    #[test]
    fn debug_is_one_line_of_the_message_and_its_causes() {
        let error = Error::Unreachable(Box::new(Unreachable {
            url: "http://host/status".into(),
            attempts: 2,
            status: None,
            timed_out: false,
            source: Some(Box::new(Verbose)),
            creation_not_retried: false,
        }));
        let short = format!("{error:?}");
        assert!(
            short.starts_with("Unreachable(\"could not reach"),
            "{short}"
        );
        assert!(short.contains("connection refused"), "{short}");
        assert!(
            !short.contains("Verbose"),
            "a source's own Debug is not used: {short}"
        );
        assert!(!short.contains('\n'), "{short}");
        let long = format!("{error:#?}");
        assert!(long.contains("attempts: 2"), "{long}");
        assert!(long.contains("Verbose"), "{long}");
        let config = Error::config("base_url", "is not a URL");
        assert_eq!(
            format!("{config:?}"),
            format!("Config({:?})", config.to_string())
        );
    }

    #[test]
    fn excerpt_truncates_on_characters() {
        assert_eq!(excerpt(b"hello", 3), "hel…");
        assert_eq!(excerpt("héllo".as_bytes(), 5), "héllo");
        assert_eq!(excerpt(&[0xff, b'a'], 10), "\u{fffd}a");
    }

    #[test]
    fn messages_say_what_to_do_next() {
        let e = Error::UnexpectedResponse(Box::new(UnexpectedResponse {
            url: "http://x/v1/jobs/a/status".into(),
            status: 401,
            code: Some("unauthorized".into()),
            message: "missing api key".into(),
            body_excerpt: String::new(),
            retry_after: None,
            auth_challenge: None,
            url_credentials: false,
        }));
        let text = e.to_string();
        assert!(text.contains("HTTP 401"), "{text}");
        assert!(text.contains("api_key"), "{text}");
        assert!(!e.is_retryable());
        assert_eq!(e.http_status(), Some(401));

        let e = Error::config("request_timeout", "must be greater than zero");
        assert_eq!(
            e.to_string(),
            "invalid configuration: `request_timeout`: must be greater than zero"
        );
    }

    #[test]
    fn auth_failures_point_at_what_the_server_asked_for() {
        let refused = |challenge: Option<&str>, url_credentials: bool| {
            UnexpectedResponse {
                url: "http://***@x/status".into(),
                status: 401,
                code: None,
                message: "Unauthorized".into(),
                body_excerpt: String::new(),
                retry_after: None,
                auth_challenge: challenge.map(str::to_owned),
                url_credentials,
            }
            .to_string()
        };
        let table = [
            (None, false, "ClientBuilder::api_key"),
            (Some("ApiKey"), false, "ClientBuilder::api_key"),
            (Some("Bearer"), false, "asks for Bearer authentication"),
            (Some("Bearer, Basic"), true, "the URL (sent as HTTP Basic"),
            (Some("Negotiate"), true, "asks for Negotiate authentication"),
            (None, true, "the URL (sent as HTTP Basic"),
        ];
        for (challenge, url_credentials, want) in table {
            let text = refused(challenge, url_credentials);
            assert!(
                text.contains(want),
                "{challenge:?} {url_credentials}: {text}"
            );
            if want != "ClientBuilder::api_key" {
                assert!(!text.contains("api_key"), "{text}");
            }
        }
    }

    #[test]
    fn only_redirects_are_told_about_redirects() {
        let answered = |status: u16| {
            UnexpectedResponse {
                url: "http://x/status".into(),
                status,
                code: None,
                message: "m".into(),
                body_excerpt: String::new(),
                retry_after: None,
                auth_challenge: None,
                url_credentials: false,
            }
            .to_string()
        };
        for status in [301, 302, 303, 307, 308] {
            assert!(answered(status).contains("follow_redirects"), "{status}");
        }
        assert!(!answered(304).contains("follow_redirects"));
    }

    #[test]
    fn an_open_breaker_says_when_to_try_again() {
        let e = Error::Unavailable(Box::new(Unavailable::refused(
            "api.example:443",
            Duration::from_millis(1500),
        )));
        let text = e.to_string();
        assert!(text.contains("api.example:443"), "{text}");
        assert!(text.contains("circuit breaker"), "{text}");
        assert!(text.contains("Try again in 1500 ms"), "{text}");
        assert!(e.is_retryable());
        assert!(!e.is_timeout(), "a refusal is not a deadline");
        assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
    }
}
