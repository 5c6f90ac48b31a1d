//! The client: one read, waits, watches, job creation, job sets — all on one [`Context`].

mod builder;

pub use builder::ClientBuilder;

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::context::Context;
use crate::error::Error;
use crate::job::{CreatedJob, JobRef};
use crate::jobset::{JobSet, JobSetOptions, SavedJobSet};
use crate::model::{CreateRequest, JobStatus, NewJob};
use crate::poll::LearnedDurations;
use crate::profile::Profile;
use crate::redact::redact;
use crate::transport::{ReadOptions, same_origin};
use crate::wait::{Completion, WaitOptions, Watch, wait_for};

/// The most jobs one creation answer is read for.
const MAX_CREATED: usize = 64;

/// A client of the translation service. Cheap to clone: clones share the connection pool,
/// the learned job durations, what is known about the server, and the per-host circuit
/// breakers and latency histograms.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// What every wait of this client shares (the transport is its wire).
    context: Arc<Context>,
    defaults: WaitOptions,
}

impl Client {
    /// A builder with the defaults: 10 s request timeout, 3 quick transport retries, hedged
    /// status reads and a circuit breaker per host (see [`crate::transport`]), the
    /// [`WaitOptions`] defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client for the service at `base_url`, with the defaults.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::builder().base_url(base_url).build()
    }

    /// Reads a job's status once (through the transport's retries), as the client's
    /// [`Profile`] reads it.
    ///
    /// A job that failed or was canceled is `Ok`; so is a state word the profile does not know
    /// ([`JobState::Unknown`](crate::JobState::Unknown)). While the host's circuit breaker is
    /// open nothing is sent: this fails at once with [`Error::Unavailable`], whose
    /// [`retry_after`](Error::retry_after) says when to try again — or with
    /// [`Error::Unreachable`] when the host has never answered.
    pub async fn status(&self, job: impl Into<JobRef>) -> Result<JobStatus, Error> {
        let job = job.into();
        let context = &self.inner.context;
        let status = job.status_endpoint(context.base_url.as_ref(), &context.profile)?;
        let exchange = context
            .wire
            .read(&status, &ReadOptions::default())
            .await
            .map_err(crate::transport::Failure::into_error)?;
        crate::transport::answer::interpret(exchange, &context.profile).into_status(&status)
    }

    /// Waits for the job with the client's default [`WaitOptions`].
    ///
    /// Resolves to the completed status, or an [`Error`]: the job failed, the wait gave up,
    /// the service was unavailable until the deadline, unreachable from the start, or
    /// answered unexpectedly. An outage does not end a wait: it pauses while the circuit
    /// breaker is open and resumes after. Dropping the future cancels the wait and every
    /// request in flight.
    pub async fn wait(&self, job: impl Into<JobRef>) -> Result<Completion, Error> {
        self.wait_observed(job.into(), &self.inner.defaults, &mut |_| {})
            .await
    }

    /// Waits for the job with the given options.
    ///
    /// Like every method here that takes options, it takes them by value
    /// (`impl Into<WaitOptions>`); a reference works too, and is cloned (cheaply: the policy
    /// is shared).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use translation_status::{Client, WaitOptions};
    /// # async fn run(client: Client) -> Result<(), translation_status::Error> {
    /// let options = WaitOptions::new().deadline(Duration::from_secs(600));
    /// client.wait_with("j-1", &options).await?; // borrowed, cloned
    /// let watch = client.watch_with("j-2", &options);
    /// client.wait_with("j-3", options).await?; // moved
    /// # drop(watch);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_with(
        &self,
        job: impl Into<JobRef>,
        options: impl Into<WaitOptions>,
    ) -> Result<Completion, Error> {
        self.wait_observed(job.into(), &options.into(), &mut |_| {})
            .await
    }

    /// A stream of the job's distinct status changes, ending with its terminal status.
    pub fn watch(&self, job: impl Into<JobRef>) -> Watch {
        self.watch_with(job, self.inner.defaults.clone())
    }

    /// Like [`watch`](Self::watch), with the given options.
    pub fn watch_with(&self, job: impl Into<JobRef>, options: impl Into<WaitOptions>) -> Watch {
        let options = options.into();
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.clone();
        let job = job.into();
        Watch::new(rx, async move {
            let mut send = move |status: &JobStatus| {
                // The receiver is gone only when the stream was dropped, and then so is this.
                let _ = tx.send(status.clone());
            };
            client.wait_observed(job, &options, &mut send).await
        })
    }

    async fn wait_observed(
        &self,
        job: JobRef,
        options: &WaitOptions,
        observer: &mut (dyn FnMut(&JobStatus) + Send + Sync),
    ) -> Result<Completion, Error> {
        wait_for(&self.inner.context, job, options, observer).await
    }

    /// Creates a job in the simulator's dialect (`POST /v1/jobs`, whatever the client's
    /// profile). Sent with an `Idempotency-Key` — the job's
    /// ([`NewJob::idempotency_key`]) or a fresh one — which the simulator honours (a repeat
    /// replays the first answer), so a failed attempt is retried like a status read without
    /// creating two jobs; a `429`/`503` with `Retry-After` is waited out. To retry a failed
    /// call yourself, give the job a key and keep it.
    ///
    /// The `status_url` and `events_url` of the answer are used only when they are on the base
    /// URL's origin (scheme, host and port): the API key goes with every request, so a server
    /// cannot point it elsewhere. Another origin's status URL is replaced by the job's URL on
    /// the base, and another origin's events URL is dropped (the wait polls).
    pub async fn create_job(&self, job: &NewJob) -> Result<CreatedJob, Error> {
        let context = &self.inner.context;
        let base = context.base_url.as_ref().ok_or_else(|| {
            Error::config(
                "base_url",
                "creating a job needs a base URL: set ClientBuilder::base_url",
            )
        })?;
        let url = base
            .join("v1/jobs")
            .map_err(|e| Error::config("base_url", e.to_string()))?;
        let key = crate::model::idempotency_key(job.idempotency_key.as_deref(), true)?;
        let exchange = context
            .wire
            .post_json(&url, &job.to_json(), key.as_deref(), true)
            .await
            .map_err(crate::transport::Failure::into_error)?;
        if !exchange.status.is_success() {
            return Err(exchange.into_error(None));
        }
        let received = Instant::now();
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&exchange.body);
        let field = |name: &str| {
            parsed
                .as_ref()
                .ok()
                .and_then(|v| v.get(name))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let Some(id) = field("id") else {
            return Err(exchange.into_error(Some("the creation answer has no job `id`".into())));
        };
        // The client's credentials go with every request, so a URL the server hands back is
        // used only on the base URL's origin: a creation answer must not be able to send them
        // anywhere else. The job's own URLs on the base stand in for one that points away.
        let absolute = |name: &str| -> Option<String> {
            let joined = url.join(&field(name)?).ok()?;
            if same_origin(&joined, base) {
                Some(joined.into())
            } else {
                tracing::warn!(
                    field = name,
                    url = %redact(joined.as_str()),
                    "the creation answer points at another origin; not used"
                );
                None
            }
        };
        let status_url = match absolute("status_url") {
            Some(url) => url,
            None => JobRef::id(id.as_str())
                .resolve(Some(base), &Profile::simulator())?
                .status
                .to_string(),
        };
        Ok(CreatedJob {
            events_url: absolute("events_url"),
            created_at: field("created_at")
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()),
            id,
            status_url,
            received,
        })
    }

    /// The profile this client reads job statuses with.
    pub fn profile(&self) -> &Profile {
        &self.inner.context.profile
    }

    /// Creates one or more jobs as the client's [`Profile`] describes creation: `POST` to its
    /// `create.url` with its body template filled from the request's parameters (or the
    /// request's own body), and the new jobs' ids read where its `create.ids` points — one
    /// for most APIs, one per output language for HeyGen v3 — in order.
    ///
    /// When the API honours `Idempotency-Key` (the profile says so: the simulator's, HeyGen
    /// v3's), a key is sent — the request's, or a fresh one — and a failed attempt is retried
    /// like a status read, with the same key: a repeat replays the first answer instead of
    /// creating again. Otherwise the creation is sent once (and resent only after an explicit
    /// `429`/`503` with `Retry-After`, which every API refuses without creating anything), and
    /// a failure says so ([`Unreachable::creation_not_retried`](crate::Unreachable::creation_not_retried)):
    /// the job may exist, so retry only where you can tell.
    /// A `429` at the API's limit on running jobs is waited out by its `Retry-After` the same
    /// way (see [`ClientBuilder::throttle`]).
    ///
    /// [`Error::Config`] when the profile has no `create`, a template parameter is missing,
    /// or there is no base URL; [`Error::UnexpectedResponse`] when the answer is refused or
    /// has no id where the profile says.
    pub async fn create(&self, request: &CreateRequest) -> Result<Vec<CreatedJob>, Error> {
        let context = &self.inner.context;
        let profile = &context.profile;
        let Some(create) = &profile.compiled().create else {
            return Err(Error::config(
                "profile",
                format!(
                    "the profile `{}` does not say how to create jobs (no `create`)",
                    profile.name()
                ),
            ));
        };
        let base = context.base_url.as_ref().ok_or_else(|| {
            Error::config(
                "base_url",
                "creating a job needs a base URL: set ClientBuilder::base_url",
            )
        })?;
        let url = create.url.url(base)?;
        let body = match &request.body {
            Some(body) => body.clone(),
            None => create.body(&request.params)?,
        };
        let key = request.key(create.idempotency_key)?;
        // Only a keyed creation the API replays is retried; say so when one failed unretried.
        let retried = key.is_some() && create.idempotency_key;
        let unretried = |error: Error| {
            if retried {
                error
            } else {
                error.creation_not_retried()
            }
        };
        let exchange = context
            .wire
            .post_json(&url, &body, key.as_deref(), create.idempotency_key)
            .await
            .map_err(|failure| unretried(failure.into_error()))?;
        if !exchange.status.is_success() {
            return Err(unretried(exchange.into_error(None)));
        }
        let received = Instant::now();
        let ids = serde_json::from_slice::<serde_json::Value>(&exchange.body)
            .ok()
            .and_then(|answer| create.ids(&answer, MAX_CREATED));
        let Some(ids) = ids else {
            let message = format!(
                "the creation answer has no job id at {:?} (the profile's create.ids)",
                create.ids
            );
            return Err(exchange.into_error(Some(message)));
        };
        tracing::debug!(profile = profile.name(), jobs = ids.len(), "jobs created");
        ids.into_iter()
            .map(|id| {
                let endpoints = JobRef::id(id.as_str()).resolve(Some(base), profile)?;
                Ok(CreatedJob {
                    status_url: endpoints.status.into(),
                    events_url: endpoints.events.map(Into::into),
                    created_at: None,
                    id,
                    received,
                })
            })
            .collect()
    }

    /// What this client has learned about job durations.
    pub fn learned_durations(&self) -> &LearnedDurations {
        &self.inner.context.learned
    }

    /// The client's default wait options.
    pub fn wait_options(&self) -> &WaitOptions {
        &self.inner.defaults
    }

    /// Waits for many jobs at once under this client's request budget (see
    /// [`jobset`](crate::jobset)). Needs a Tokio runtime: the set runs one task.
    pub fn job_set(&self, options: impl Into<JobSetOptions>) -> Result<JobSet, Error> {
        JobSet::start(
            Arc::clone(&self.inner.context),
            options.into(),
            Vec::new(),
            &[],
        )
    }

    /// Rebuilds a job set from a state saved by [`JobSet::export`], with the original
    /// deadlines, request counts, stall history and learned durations. Refuses a state it
    /// cannot trust with [`Error::SavedState`].
    pub fn restore_job_set(
        &self,
        saved: &SavedJobSet,
        options: impl Into<JobSetOptions>,
    ) -> Result<JobSet, Error> {
        JobSet::restore(Arc::clone(&self.inner.context), saved, options.into())
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "base_url",
                &self
                    .inner
                    .context
                    .base_url
                    .as_ref()
                    .map(|u| redact(u.as_str())),
            )
            .field("profile", &self.inner.context.profile.name())
            .field("request_timeout", &self.inner.context.wire.request_timeout)
            .field("defaults", &self.inner.defaults)
            .field("learned", &self.inner.context.learned)
            .finish_non_exhaustive()
    }
}
