//! Webhook delivery, signed Standard-Webhooks style.
//!
//! One scheduler task holds a timer queue of jobs with a callback, ordered by completion time
//! (no task per job). Due jobs go into a bounded delivery queue; when it is full the delivery is
//! dropped and counted rather than buffered without bound. Each delivery is retried with
//! exponential backoff up to `webhooks.max_attempts`.
//!
//! Redirects are never followed: the allow-list is checked on the `callback_url` once, at
//! creation, and a receiver answering `3xx` must not be able to send the signed body to a
//! host the list does not name. A `3xx` is a failed delivery, counted as `redirected`, and not
//! retried (the receiver would only redirect again).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;

use super::job::{Channel, Job};
use crate::AppState;
use crate::settings::WebhookSettings;

mod callback;
mod signing;

pub use callback::check_callback;
pub use signing::{constant_time_eq, sign, signing_key, verify};

/// Most deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 32;

#[derive(Debug)]
struct Due {
    at: Instant,
    seq: u64,
    job: Arc<Job>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The timer queue and the delivery queue.
#[derive(Debug)]
pub struct Webhooks {
    key: Vec<u8>,
    settings: WebhookSettings,
    timers: Mutex<(BinaryHeap<Reverse<Due>>, u64)>,
    wake: Notify,
    tx: mpsc::Sender<Arc<Job>>,
    rx: Mutex<Option<mpsc::Receiver<Arc<Job>>>>,
    client: reqwest::Client,
}

impl Webhooks {
    /// From validated settings.
    pub fn new(settings: &WebhookSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue_size);
        Webhooks {
            key: signing_key(&settings.secret).unwrap_or_default(),
            settings: settings.clone(),
            timers: Mutex::new((BinaryHeap::new(), 0)),
            wake: Notify::new(),
            tx,
            rx: Mutex::new(Some(rx)),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(settings.timeout)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Arranges a delivery when `job` becomes terminal. A hanging job never does: holding it
    /// here would keep it in memory long after the store forgot it.
    pub fn schedule(&self, job: Arc<Job>) {
        if job.hang {
            return;
        }
        {
            let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
            timers.1 += 1;
            let seq = timers.1;
            timers.0.push(Reverse(Due {
                at: job.completes_at(),
                seq,
                job,
            }));
        }
        self.wake.notify_one();
    }

    fn pop_due(&self, now: Instant) -> Result<Arc<Job>, Option<Instant>> {
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        match timers.0.peek() {
            Some(Reverse(d)) if d.at <= now => match timers.0.pop() {
                Some(Reverse(d)) => Ok(d.job),
                None => Err(None),
            },
            Some(Reverse(d)) => Err(Some(d.at)),
            None => Err(None),
        }
    }

    /// Runs the scheduler and the deliveries until the task is aborted.
    pub async fn run(state: AppState) {
        let hooks = &state.inner.webhooks;
        let Some(mut rx) = hooks.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let deliverer = {
            let state = state.clone();
            async move {
                let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
                while let Some(job) = rx.recv().await {
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        return;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        deliver(&state, &job).await;
                        drop(permit);
                    });
                }
            }
        };
        let scheduler = async {
            loop {
                match hooks.pop_due(Instant::now()) {
                    Ok(job) => {
                        if hooks.tx.try_send(job).is_err() {
                            state.inner.metrics.webhook("dropped");
                        }
                    }
                    Err(Some(at)) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = hooks.wake.notified() => {}
                        }
                    }
                    Err(None) => hooks.wake.notified().await,
                }
            }
        };
        tokio::join!(deliverer, scheduler);
    }
}

/// What one delivery attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// `2xx`: done.
    Delivered,
    /// `3xx`: refused, never followed, not retried.
    Redirected,
    /// Any other answer, or none (transport error, timeout): worth another attempt.
    Failed,
}

/// Classifies an attempt by its answer's status (`None`: no answer at all).
fn classify(status: Option<reqwest::StatusCode>) -> Attempt {
    match status {
        Some(s) if s.is_success() => Attempt::Delivered,
        Some(s) if s.is_redirection() => Attempt::Redirected,
        _ => Attempt::Failed,
    }
}

async fn deliver(state: &AppState, job: &Job) {
    let hooks = &state.inner.webhooks;
    let Some(url) = job.callback.clone() else {
        return;
    };
    let snap = job.snapshot(Instant::now());
    let body = match serde_json::to_vec(&job.body(&snap, false)) {
        Ok(b) => b,
        Err(_) => return,
    };
    let msg_id = format!("msg_{}", job.id);
    let mut backoff = hooks.settings.initial_backoff;
    for attempt in 1..=hooks.settings.max_attempts {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signature = sign(&hooks.key, &msg_id, timestamp, &body);
        let sent = hooks
            .client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
            .send()
            .await;
        match classify(sent.as_ref().ok().map(reqwest::Response::status)) {
            Attempt::Delivered => {
                state.inner.metrics.webhook("delivered");
                state.report_terminal(job, Channel::Webhook, Instant::now());
                return;
            }
            Attempt::Redirected => {
                tracing::debug!(job = %job.id, attempt, "webhook receiver redirected; not followed");
                state.inner.metrics.webhook("redirected");
                return;
            }
            Attempt::Failed => {}
        }
        tracing::debug!(job = %job.id, attempt, "webhook delivery failed");
        if attempt < hooks.settings.max_attempts {
            state.inner.metrics.webhook("retried");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(Duration::from_secs(60));
        }
    }
    state.inner.metrics.webhook("gave_up");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_jobs_that_end_are_scheduled() {
        let hooks = Webhooks::new(&crate::Settings::default().webhooks);
        let job = |hang: bool| {
            let job = Job::new(
                "j".into(),
                Duration::ZERO,
                crate::Outcome::Completed,
                1.0,
                None,
            );
            Arc::new(if hang { job.hanging() } else { job })
        };
        hooks.schedule(job(true));
        assert_eq!(hooks.timers.lock().unwrap().0.len(), 0);
        hooks.schedule(job(false));
        assert_eq!(hooks.timers.lock().unwrap().0.len(), 1);
    }

    #[test]
    fn answers_are_classified() {
        use reqwest::StatusCode as S;
        assert_eq!(classify(Some(S::OK)), Attempt::Delivered);
        assert_eq!(classify(Some(S::NO_CONTENT)), Attempt::Delivered);
        for s in [
            S::MOVED_PERMANENTLY,
            S::FOUND,
            S::TEMPORARY_REDIRECT,
            S::PERMANENT_REDIRECT,
        ] {
            assert_eq!(classify(Some(s)), Attempt::Redirected, "{s}");
        }
        assert_eq!(classify(Some(S::INTERNAL_SERVER_ERROR)), Attempt::Failed);
        assert_eq!(classify(Some(S::NOT_FOUND)), Attempt::Failed);
        assert_eq!(classify(None), Attempt::Failed);
    }
}
