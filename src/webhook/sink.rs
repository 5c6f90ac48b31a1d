//! Where verified events go: a small trait, so a handler does not care whether a channel, a
//! job set or a test takes them.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use super::WebhookEvent;

/// The longest a [`mpsc::Sender`] sink waits for room in its channel before the delivery is
/// answered `503` (and the sender retries it later).
pub const SINK_WAIT: Duration = Duration::from_secs(2);

/// Takes verified events. An error means the event was not taken: the receiver forgets the
/// delivery's id and answers `503`, so that the sender tries again.
pub trait EventSink: Clone + Send + Sync + 'static {
    /// Hands one event on.
    fn deliver(&self, event: WebhookEvent) -> impl Future<Output = Result<(), Undelivered>> + Send;
}

/// An event a sink did not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Undelivered {
    /// The sink has no room now: the sender should retry later.
    #[error("the webhook sink is full")]
    Full,
    /// The sink no longer takes events.
    #[error("the webhook sink is closed")]
    Closed,
}

/// Sends into the channel, waiting at most [`SINK_WAIT`] for room.
impl EventSink for mpsc::Sender<WebhookEvent> {
    async fn deliver(&self, event: WebhookEvent) -> Result<(), Undelivered> {
        self.send_timeout(event, SINK_WAIT)
            .await
            .map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => Undelivered::Full,
                mpsc::error::SendTimeoutError::Closed(_) => Undelivered::Closed,
            })
    }
}
