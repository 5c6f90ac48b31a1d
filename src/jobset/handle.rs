//! Adding, cancelling and saving jobs from anywhere: the set's handle, and what it shares
//! with the set and its scheduler.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use url::Url;

use super::JobKey;
use super::saved::{Clocks, SavedJob, SavedJobSet};
use super::scheduler::Command;
use super::tracked::Tracked;
use crate::error::Error;
use crate::job::JobRef;
use crate::webhook::{EventSink, Undelivered, WebhookEvent};

/// What a set's handles, its stream and its scheduler share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(super) next_key: AtomicU64,
    /// Jobs added and not yet reported finished or cancelled to the stream.
    pub(crate) tracked: AtomicUsize,
    /// The set was dropped.
    pub(super) closed: AtomicBool,
}

/// Adds, cancels and saves jobs of a [`JobSet`](super::JobSet) from anywhere (cheap to clone).
#[derive(Clone)]
pub struct JobSetHandle {
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) shared: Arc<Shared>,
    pub(super) base_url: Option<Url>,
    /// How the client's jobs are laid out.
    pub(super) profile: crate::Profile,
    pub(super) deadline: Option<Duration>,
}

impl JobSetHandle {
    /// Tracks a job (by id or status URL) with the set's default deadline, counted from now.
    pub fn add(&self, job: impl Into<JobRef>) -> Result<JobKey, Error> {
        self.insert(job.into(), self.deadline)
    }

    /// Tracks a job that gives up `deadline` from now.
    pub fn add_with_deadline(
        &self,
        job: impl Into<JobRef>,
        deadline: Duration,
    ) -> Result<JobKey, Error> {
        self.insert(job.into(), Some(deadline))
    }

    fn insert(&self, job: JobRef, deadline: Option<Duration>) -> Result<JobKey, Error> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(gone());
        }
        let endpoints = job.resolve(self.base_url.as_ref(), &self.profile)?;
        let key = JobKey(self.shared.next_key.fetch_add(1, Ordering::Relaxed));
        let tracked = Tracked::new(key, endpoints, deadline, job.created(), Clocks::now());
        self.shared.tracked.fetch_add(1, Ordering::SeqCst);
        if self.commands.send(Command::Add(Box::new(tracked))).is_err() {
            self.shared.tracked.fetch_sub(1, Ordering::SeqCst);
            return Err(gone());
        }
        Ok(key)
    }

    /// Stops waiting for a job. No event is reported for it once the cancellation is
    /// processed (one already on its way still arrives).
    pub fn cancel(&self, key: JobKey) {
        let _ = self.commands.send(Command::Cancel(key));
    }

    /// Stops waiting for every job.
    pub fn cancel_all(&self) {
        let _ = self.commands.send(Command::CancelAll);
    }

    /// The state of every job still waited for, to rebuild the set after a restart.
    pub async fn export(&self) -> Result<SavedJobSet, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Export(reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// The state of one job (none once it finished or was cancelled).
    pub async fn export_job(&self, key: JobKey) -> Result<Option<SavedJob>, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ExportJob(key, reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Jobs added and not yet reported finished (nor cancelled).
    pub fn tracked(&self) -> usize {
        self.shared.tracked.load(Ordering::SeqCst)
    }

    /// Hands the set a verified webhook event (see
    /// [`JobSetOptions::webhooks`](super::JobSetOptions::webhooks)): a terminal status ends
    /// its job's wait at once. Never waits; fails only once the set is dropped.
    pub fn deliver(&self, event: WebhookEvent) -> Result<(), Undelivered> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Undelivered::Closed);
        }
        let WebhookEvent { job_id, status, .. } = event;
        self.commands
            .send(Command::Deliver {
                id: job_id.into_boxed_str(),
                status: Box::new(status),
            })
            .map_err(|_| Undelivered::Closed)
    }
}

/// A handle is where a webhook receiver hands its events (`webhook::axum::route(receiver,
/// jobs.handle())`): each goes to the set at once.
impl EventSink for JobSetHandle {
    async fn deliver(&self, event: WebhookEvent) -> Result<(), Undelivered> {
        JobSetHandle::deliver(self, event)
    }
}

fn gone() -> Error {
    Error::config(
        "job_set",
        "the job set has been dropped: create a new one (or restore a saved state)",
    )
}

impl fmt::Debug for JobSetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSetHandle")
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}
