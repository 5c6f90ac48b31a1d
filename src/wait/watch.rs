//! A stream of status changes, driven by the wait loop without a background task.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use super::{Completion, WaitReport};
use crate::error::Error;
use crate::model::JobStatus;

type WaitFuture = Pin<Box<dyn Future<Output = Result<Completion, Error>> + Send>>;

/// Distinct status changes of one job, ending with its terminal status.
///
/// Made by [`Client::watch`](crate::Client::watch). Each item is a status that differs from
/// the previous one (state, or progress by at least 0.1 %; a result URL signed anew is no
/// change). A job that fails or is canceled ends the stream with that status (`Ok`); an
/// `Err` item means the wait itself failed (gave up,
/// the service unavailable until the deadline or unreachable, unexpected answer) and is
/// always the last item. The wait runs only while the
/// stream is polled; dropping the stream cancels it, requests in flight included.
#[must_use = "a Watch does nothing unless polled"]
pub struct Watch {
    changes: mpsc::UnboundedReceiver<JobStatus>,
    wait: Option<WaitFuture>,
    result: Option<Result<Completion, Error>>,
    completion: Option<Completion>,
    report: Option<WaitReport>,
}

impl Watch {
    /// Builds the stream from a wait that reports each change to `changes`.
    pub(crate) fn new(
        changes: mpsc::UnboundedReceiver<JobStatus>,
        wait: impl Future<Output = Result<Completion, Error>> + Send + 'static,
    ) -> Self {
        Watch {
            changes,
            wait: Some(Box::pin(wait)),
            result: None,
            completion: None,
            report: None,
        }
    }

    /// The completion, once the stream has ended because the job completed.
    pub fn completion(&self) -> Option<&Completion> {
        self.completion.as_ref()
    }

    /// How the wait went, once it has ended with the job completed, failed or canceled, or
    /// given up (see [`Error::report`]).
    pub fn report(&self) -> Option<&WaitReport> {
        self.report.as_ref()
    }
}

impl Stream for Watch {
    type Item = Result<JobStatus, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Poll::Ready(Some(status)) = self.changes.poll_recv(cx) {
                return Poll::Ready(Some(Ok(status)));
            }
            let Some(wait) = self.wait.as_mut() else {
                // The wait is over and every change was delivered: report a failed wait once.
                return Poll::Ready(match self.result.take() {
                    Some(Ok(completion)) => {
                        self.completion = Some(completion);
                        None
                    }
                    Some(Err(Error::JobFailed(_) | Error::JobCanceled(_))) | None => None,
                    Some(Err(error)) => Some(Err(error)),
                });
            };
            match wait.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    self.report = match &result {
                        Ok(done) => Some(done.report.clone()),
                        Err(error) => error.report().cloned(),
                    };
                    // Dropping the future drops the sender: the channel drains, then ends.
                    self.wait = None;
                    self.result = Some(result);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("running", &self.wait.is_some())
            .field("completed", &self.completion.is_some())
            .finish()
    }
}
