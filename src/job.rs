//! How a caller names a job: by id, or by the full URL of its status.
//!
//! An id resolves against the client's base URL by the client's [`Profile`]: with the
//! default one, to `/v1/jobs/{id}/status` (and `/v1/jobs/{id}/events` for Server-Sent
//! Events). A full URL is used as given, so the client works against the original exercise's
//! `GET /status` server unchanged; when such a URL has the profile's status shape, the job's
//! id is read from it, and with it its events and cancel URLs.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use url::Url;

use crate::error::Error;
use crate::model::JobStatus;
use crate::profile::{Profile, Template};
use crate::redact::redact;

/// A job, addressed by id or by status URL.
///
/// `&str` and `String` convert automatically: anything starting with `http://` or `https://`
/// is a status URL, everything else an id.
///
/// ```
/// use translation_status::JobRef;
/// let by_id = JobRef::from("j-42");
/// let by_url = JobRef::from("http://localhost:8080/status");
/// assert_eq!(by_id.to_string(), "j-42");
/// assert!(matches!(by_url.kind(), translation_status::JobRefKind::StatusUrl));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    target: Target,
    /// The job's id, for a job addressed by URL whose id is known (a created job).
    known_id: Option<String>,
    events_url: Option<String>,
    created: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Id(String),
    /// The status URL as given, and parsed once (`None`: not a URL; the error comes when the
    /// job is used), so that a job read again and again is not parsed again each time; shared,
    /// so that a copy of the reference (one per read, often) copies neither.
    Url(Arc<(String, Option<Url>)>),
}

/// Which way a [`JobRef`] addresses its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobRefKind {
    /// By id, resolved against the client's base URL.
    Id,
    /// By the full URL of its status.
    StatusUrl,
}

impl JobRef {
    /// A job by id.
    pub fn id(id: impl Into<String>) -> Self {
        JobRef {
            target: Target::Id(id.into()),
            known_id: None,
            events_url: None,
            created: None,
        }
    }

    /// A job by the full URL of its status document (for example `http://host/status`).
    ///
    /// User-info in it (`http://user:pass@host/…`) is sent as HTTP Basic authentication.
    /// Errors, spans and logs name the job with its user-info and credential-like query
    /// values (`token`, `api_key`, `sig`, …) masked as `***`.
    pub fn status_url(url: impl Into<String>) -> Self {
        JobRef {
            target: {
                let raw = url.into();
                let parsed = Url::parse(&raw).ok();
                Target::Url(Arc::new((raw, parsed)))
            },
            known_id: None,
            events_url: None,
            created: None,
        }
    }

    /// Also names the job's Server-Sent Events URL (absolute, or relative to the status URL).
    pub fn with_events_url(mut self, url: impl Into<String>) -> Self {
        self.events_url = Some(url.into());
        self
    }

    /// Names the job's id on the server, for a job addressed by a status URL its id cannot
    /// be read from: webhooks name jobs by id (see
    /// [`JobSetOptions::webhooks`](crate::jobset::JobSetOptions::webhooks)). It also names the
    /// job in errors and events.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.known_id = Some(id.into());
        self
    }

    /// Tells the waiter when the job was created, when the service does not report it. Used
    /// to learn job durations; without it the start of each wait is taken instead.
    pub fn with_created_at(mut self, created: Instant) -> Self {
        self.created = Some(created);
        self
    }

    /// How this reference addresses the job.
    pub fn kind(&self) -> JobRefKind {
        match self.target {
            Target::Id(_) => JobRefKind::Id,
            Target::Url(..) => JobRefKind::StatusUrl,
        }
    }

    pub(crate) fn created(&self) -> Option<Instant> {
        self.created
    }

    /// Resolves to the URLs to use, as `profile` lays them out.
    pub(crate) fn resolve(
        &self,
        base: Option<&Url>,
        profile: &Profile,
    ) -> Result<Endpoints, Error> {
        let layout = profile.compiled();
        let (status, found) = self.locate(base, profile)?;
        let origin = status.origin().ascii_serialization();
        let (events, cancel, capability_key) = match &found {
            Some((id, base)) => {
                let at = |template: &Option<Template>| {
                    template.as_ref().and_then(|t| t.resolve(base, id).ok())
                };
                (
                    at(&layout.events),
                    at(&layout.cancel),
                    // Servers differ per route, not per job: the route is the template.
                    format!("{origin}/{}", layout.status.as_str()),
                )
            }
            None => (None, None, format!("{origin}{}", status.path())),
        };
        let events = match &self.events_url {
            Some(raw) => Some(status.join(raw).map_err(|e| {
                Error::config(
                    "job",
                    format!("{:?} is not a valid events URL: {e}", redact(raw)),
                )
            })?),
            None => events,
        };
        let id = self
            .known_id
            .as_deref()
            .or(found.as_ref().map(|(id, _)| id.as_str()))
            .map(Box::from);
        let status_label = redact(status.as_str()).into_owned();
        let label = match (&self.target, &self.known_id) {
            (Target::Id(id), _) | (Target::Url(..), Some(id)) => redact(id).into_owned(),
            (Target::Url(url), None) => redact(&url.0).into_owned(),
        };
        Ok(Endpoints {
            id,
            label,
            status_label,
            capability_key,
            status,
            events,
            cancel,
        })
    }

    /// The status URL alone, as `profile` lays it out: what one status read needs (the
    /// events and cancel URLs, a label and a capability key are for waits, and cost URL
    /// parses of their own).
    pub(crate) fn status_endpoint(
        &self,
        base: Option<&Url>,
        profile: &Profile,
    ) -> Result<Cow<'_, Url>, Error> {
        match &self.target {
            Target::Id(id) => {
                if id.is_empty() {
                    return Err(Error::config("job", "a job id must not be empty"));
                }
                let base = base.ok_or_else(|| {
                    Error::config(
                        "base_url",
                        format!(
                            "job {id:?} is addressed by id, which needs a base URL: set ClientBuilder::base_url, or pass the job's full status URL"
                        ),
                    )
                })?;
                profile.compiled().status.resolve(base, id).map(Cow::Owned)
            }
            Target::Url(url) => {
                let (raw, parsed) = &**url;
                let status = match parsed {
                    Some(url) => Cow::Borrowed(url),
                    None => Cow::Owned(Url::parse(raw).map_err(|e| {
                        Error::config(
                            "job",
                            format!("{:?} is not a valid status URL: {e}", redact(raw)),
                        )
                    })?),
                };
                if !matches!(status.scheme(), "http" | "https") {
                    return Err(Error::config(
                        "job",
                        format!(
                            "{:?}: only http and https status URLs are supported",
                            redact(raw)
                        ),
                    ));
                }
                Ok(status)
            }
        }
    }

    /// The status URL, with the job's id and the base its URLs hang from when they are known.
    fn locate(
        &self,
        base: Option<&Url>,
        profile: &Profile,
    ) -> Result<(Url, Option<(String, Url)>), Error> {
        let status = self.status_endpoint(base, profile)?.into_owned();
        let found = match &self.target {
            // A job named by id has a base: `status_endpoint` refuses one without.
            Target::Id(id) => base.map(|base| (id.clone(), base.clone())),
            Target::Url(..) => profile.compiled().status.extract(&status),
        };
        Ok((status, found))
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Id(id) => f.write_str(id),
            Target::Url(url) => f.write_str(&url.0),
        }
    }
}

impl From<&str> for JobRef {
    fn from(s: &str) -> Self {
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            JobRef::status_url(s)
        } else {
            JobRef::id(s)
        }
    }
}

impl From<String> for JobRef {
    fn from(s: String) -> Self {
        JobRef::from(s.as_str())
    }
}

impl From<&String> for JobRef {
    fn from(s: &String) -> Self {
        JobRef::from(s.as_str())
    }
}

impl From<&JobRef> for JobRef {
    fn from(job: &JobRef) -> Self {
        job.clone()
    }
}

/// A job created by [`Client::create_job`](crate::Client::create_job).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CreatedJob {
    /// The job id.
    pub id: String,
    /// The absolute URL of its status.
    pub status_url: String,
    /// The absolute URL of its event stream.
    pub events_url: Option<String>,
    /// Creation time (service clock), when reported.
    pub created_at: Option<std::time::SystemTime>,
    /// When this client received the creation answer.
    pub(crate) received: Instant,
}

impl CreatedJob {
    /// A reference to wait on, carrying both URLs and the creation time.
    pub fn job(&self) -> JobRef {
        let mut job = JobRef::status_url(self.status_url.clone()).with_created_at(self.received);
        job.known_id = Some(self.id.clone());
        match &self.events_url {
            Some(events) => job.with_events_url(events.clone()),
            None => job,
        }
    }
}

impl From<&CreatedJob> for JobRef {
    fn from(job: &CreatedJob) -> Self {
        job.job()
    }
}

impl From<CreatedJob> for JobRef {
    fn from(job: CreatedJob) -> Self {
        job.job()
    }
}

/// The URLs of one job, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    /// The job's id on the server, when known: the id it was named by, a created job's, or
    /// the one in a status URL of the profile's shape (webhooks name jobs by it).
    pub(crate) id: Option<Box<str>>,
    /// How the caller named the job — its id when known, else its status URL — credentials
    /// masked (for spans, errors and events).
    pub(crate) label: String,
    /// The status URL, credentials masked (for errors and events).
    pub(crate) status_label: String,
    pub(crate) status: Url,
    pub(crate) events: Option<Url>,
    /// Where to cancel the job, when the profile can and the job's id is known.
    pub(crate) cancel: Option<Url>,
    /// Servers differ per route: the capability memory is keyed by origin and route shape.
    pub(crate) capability_key: String,
}

/// The distinct-change filter behind `watch` and progress reporting.
#[derive(Debug, Default)]
pub(crate) struct ChangeFilter {
    last: Option<(String, Option<u32>)>,
}

impl ChangeFilter {
    /// `true` when `status` differs from the last one accepted (state, or progress by ≥ 0.1 %).
    /// Nothing else counts: a result URL signed anew on every read is the same status.
    pub(crate) fn accept(&mut self, status: &JobStatus) -> bool {
        let key = (
            status.state.to_string(),
            status.progress.map(|p| (p * 1000.0).round() as u32),
        );
        if self.last.as_ref() == Some(&key) {
            false
        } else {
            self.last = Some(key);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sim() -> Profile {
        Profile::simulator()
    }

    #[test]
    fn ids_resolve_against_the_base() {
        let base = Url::parse("http://h:1/api/").unwrap();
        let e = JobRef::id("a b/c").resolve(Some(&base), &sim()).unwrap();
        assert_eq!(e.status.as_str(), "http://h:1/api/v1/jobs/a%20b%2Fc/status");
        assert_eq!(
            e.events.unwrap().as_str(),
            "http://h:1/api/v1/jobs/a%20b%2Fc/events"
        );
        assert_eq!(e.capability_key, "http://h:1/v1/jobs/{id}/status");

        let base = Url::parse("http://h:1").unwrap();
        let e = JobRef::from("j-1").resolve(Some(&base), &sim()).unwrap();
        assert_eq!(e.status.as_str(), "http://h:1/v1/jobs/j-1/status");
    }

    #[test]
    fn ids_need_a_base() {
        let err = JobRef::id("j").resolve(None, &sim()).unwrap_err();
        assert!(err.to_string().contains("base_url"), "{err}");
        assert!(JobRef::id("").resolve(None, &sim()).is_err());
    }

    #[test]
    fn urls_are_used_as_given() {
        let e = JobRef::from("http://h:1/status")
            .resolve(None, &sim())
            .unwrap();
        assert_eq!(e.status.as_str(), "http://h:1/status");
        assert!(e.events.is_none() && e.cancel.is_none());
        assert_eq!(e.capability_key, "http://h:1/status");

        let e = JobRef::from("HTTPS://h/status?job=7")
            .resolve(None, &sim())
            .unwrap();
        assert_eq!(e.status.as_str(), "https://h/status?job=7");
        assert!(e.events.is_none());

        let e = JobRef::from("http://h/v1/jobs/j-9/status?x=1")
            .resolve(None, &sim())
            .unwrap();
        assert_eq!(e.events.unwrap().as_str(), "http://h/v1/jobs/j-9/events");

        let e = JobRef::status_url("http://h/v1/jobs/j-9/status")
            .with_events_url("/elsewhere")
            .resolve(None, &sim())
            .unwrap();
        assert_eq!(e.events.unwrap().as_str(), "http://h/elsewhere");

        assert!(JobRef::from("http://").resolve(None, &sim()).is_err());
        assert!(
            JobRef::status_url("ftp://h/status")
                .resolve(None, &sim())
                .is_err()
        );
    }

    #[test]
    fn a_status_read_resolves_the_same_url_as_a_wait() {
        let base = Url::parse("http://h:1/api/").unwrap();
        for job in [
            JobRef::id("a b/c"),
            JobRef::from("http://h/v1/jobs/j-9/status?x=1"),
            JobRef::from("HTTPS://h/status?job=7"),
            JobRef::status_url("http://h/elsewhere").with_id("j-2"),
        ] {
            let read = job.status_endpoint(Some(&base), &sim()).unwrap();
            let wait = job.resolve(Some(&base), &sim()).unwrap();
            assert_eq!(*read, wait.status, "{job}");
        }
        for job in [
            JobRef::id(""),
            JobRef::from("http://"),
            JobRef::status_url("ftp://h/status?token=s3cret"),
        ] {
            let read = job.status_endpoint(Some(&base), &sim()).unwrap_err();
            let wait = job.resolve(Some(&base), &sim()).unwrap_err();
            assert_eq!(read.to_string(), wait.to_string());
            assert!(!read.to_string().contains("s3cret"), "{read}");
        }
    }

    #[test]
    fn each_profile_lays_out_its_own_urls() {
        let base = Url::parse("http://h:1/").unwrap();
        let e = JobRef::id("j-9").resolve(Some(&base), &sim()).unwrap();
        assert_eq!(e.cancel.unwrap().as_str(), "http://h:1/v1/jobs/j-9/cancel");
        let e = JobRef::from("http://h:1/api/v1/jobs/j-9/status")
            .resolve(None, &sim())
            .unwrap();
        assert_eq!(
            e.events.unwrap().as_str(),
            "http://h:1/api/v1/jobs/j-9/events"
        );
        assert_eq!(
            e.cancel.unwrap().as_str(),
            "http://h:1/api/v1/jobs/j-9/cancel"
        );
        assert!(
            JobRef::from("http://h:1/status")
                .resolve(None, &sim())
                .unwrap()
                .cancel
                .is_none(),
            "no id, no cancel"
        );
        let v2 = Profile::builtin("heygen-v2").unwrap();
        let e = JobRef::id("j-1").resolve(Some(&base), &v2).unwrap();
        assert_eq!(e.status.as_str(), "http://h:1/v2/video_translate/j-1");
        assert!(e.events.is_none() && e.cancel.is_none());
        assert_eq!(e.capability_key, "http://h:1/v2/video_translate/{id}");
        let result = Profile::builtin("result").unwrap();
        let e = JobRef::id("j 2").resolve(Some(&base), &result).unwrap();
        assert_eq!(e.status.as_str(), "http://h:1/status?job=j%202");
        let replicate = Profile::builtin("replicate").unwrap();
        let e = JobRef::from("https://api.replicate.com/v1/predictions/p-1")
            .resolve(None, &replicate)
            .unwrap();
        assert_eq!(
            e.cancel.unwrap().as_str(),
            "https://api.replicate.com/v1/predictions/p-1/cancel"
        );
    }

    #[test]
    fn change_filter_keeps_distinct_states() {
        let mut f = ChangeFilter::default();
        let pending = JobStatus::new(crate::JobState::Pending { eta: None });
        assert!(f.accept(&pending));
        assert!(!f.accept(&pending));
        assert!(f.accept(&pending.clone().with_progress(0.5)));
        assert!(!f.accept(&pending.clone().with_progress(0.5)));
        let mut done = JobStatus::new(crate::JobState::Completed);
        done.result_url = Some("https://cdn/x.mp4?sig=1".into());
        assert!(f.accept(&done));
        done.result_url = Some("https://cdn/x.mp4?sig=2".into());
        assert!(!f.accept(&done), "a new signature is not a change");
    }
}
