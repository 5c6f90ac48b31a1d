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
use crate::model::{JobStatus, NewJob};
use crate::poll::LearnedDurations;
use crate::redact::redact;
use crate::transport::{ReadOptions, same_origin};
use crate::wait::{Completion, WaitOptions, Watch, wait_for};

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

    /// Reads a job's status once (through the transport's retries).
    ///
    /// A job that ended in `error` is `Ok`; so is a result string this version does not know
    /// ([`JobState::Unknown`](crate::JobState::Unknown)). While the host's circuit breaker is
    /// open nothing is sent: this fails at once with [`Error::Unavailable`], whose
    /// [`retry_after`](Error::retry_after) says when to try again — or with
    /// [`Error::Unreachable`] when the host has never answered.
    pub async fn status(&self, job: impl Into<JobRef>) -> Result<JobStatus, Error> {
        let job = job.into();
        let context = &self.inner.context;
        let endpoints = job.resolve(context.base_url.as_ref())?;
        let exchange = context
            .wire
            .read(&endpoints.status, &ReadOptions::default())
            .await
            .map_err(crate::transport::Failure::into_error)?;
        crate::transport::answer::interpret(exchange).into_status(&endpoints.status)
    }

    /// Waits for the job with the client's default [`WaitOptions`].
    ///
    /// Resolves to the completed status, or an [`Error`]: the job failed, the wait gave up,
    /// the service was unavailable until the deadline, unreachable from the start, or
    /// answered unexpectedly. An outage does not end a wait: it pauses while the circuit
    /// breaker is open and resumes after. Dropping the future cancels the wait and every
    /// request in flight.
    pub async fn wait(&self, job: impl Into<JobRef>) -> Result<Completion, Error> {
        self.wait_with(job, &self.inner.defaults).await
    }

    /// Waits for the job with the given options.
    pub async fn wait_with(
        &self,
        job: impl Into<JobRef>,
        options: &WaitOptions,
    ) -> Result<Completion, Error> {
        self.wait_observed(job.into(), options, &mut |_| {}).await
    }

    /// A stream of the job's distinct status changes, ending with its terminal status.
    pub fn watch(&self, job: impl Into<JobRef>) -> Watch {
        self.watch_with(job, self.inner.defaults.clone())
    }

    /// Like [`watch`](Self::watch), with the given options.
    pub fn watch_with(&self, job: impl Into<JobRef>, options: WaitOptions) -> Watch {
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

    /// Creates a job (`POST /v1/jobs`). Not retried on failure — a retried creation could
    /// create two jobs — except after an explicit `429`/`503` with `Retry-After`.
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
        let exchange = context
            .wire
            .post_json(&url, &job.to_json())
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
                .resolve(Some(base))?
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
    pub fn job_set(&self, options: JobSetOptions) -> Result<JobSet, Error> {
        JobSet::start(Arc::clone(&self.inner.context), options, Vec::new(), &[])
    }

    /// Rebuilds a job set from a state saved by [`JobSet::export`], with the original
    /// deadlines, request counts, stall history and learned durations. Refuses a state it
    /// cannot trust with [`Error::SavedState`].
    pub fn restore_job_set(
        &self,
        saved: &SavedJobSet,
        options: JobSetOptions,
    ) -> Result<JobSet, Error> {
        JobSet::restore(Arc::clone(&self.inner.context), saved, options)
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
            .field("request_timeout", &self.inner.context.wire.request_timeout)
            .field("defaults", &self.inner.defaults)
            .field("learned", &self.inner.context.learned)
            .finish_non_exhaustive()
    }
}
