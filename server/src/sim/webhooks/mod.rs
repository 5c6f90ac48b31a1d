//! Webhook delivery, signed Standard-Webhooks style — or, for a job created in the HeyGen
//! dialect, in HeyGen's envelope and signature (`sim::heygen`).
//!
//! One dispatcher task holds a timer queue of deliveries ordered by when they are due (no
//! task per job, none per waiting delivery): a job's first attempt is due when it completes,
//! a retry when its backoff has passed. A due delivery asks `slots` for a slot: a receiver
//! has a few of its own and shares the rest, so a slow or silent receiver delays only its own
//! deliveries. Each attempt runs in its own task, bounded by `webhooks.timeout` (and its
//! connection by `webhooks.connect_timeout`), and hands its outcome back to the dispatcher:
//! a failed attempt goes back into the timer queue, up to `webhooks.max_attempts`, and never
//! holds a slot while it waits. Deliveries that cannot even wait for a slot are dropped and
//! counted rather than buffered without bound.
//!
//! A canceled job ends before its natural end: its delivery is scheduled anew, due at once, and
//! the one waiting for the natural end is skipped when it comes due.
//!
//! Redirects are never followed: the allow-list is checked on the `callback_url` once, at
//! creation, and a receiver answering `3xx` must not be able to send the signed body to a
//! host the list does not name. A `3xx` is a failed delivery, counted as `redirected`, and not
//! retried (the receiver would only redirect again).
//!
//! The webhook faults (`faults.webhook_*`, [`crate::sim::faults::WebhookFate`]) are decided
//! here, once per delivery, when it first comes due: a lost one is never sent; a delayed one
//! goes back into the timer queue for the delay; a held-back one waits in `reorder` for the
//! next due delivery to overtake it; a duplicated one is sent once more when it has been
//! delivered. They act on deliveries, not on receivers, so faults set at run time apply to
//! every delivery that comes due afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use super::faults::{WebhookFate, WebhookFaults};
use super::heygen::{HeyGenJob, Phase, hmac_hex, webhook_event};
use super::job::{Channel, Job, Snapshot, State};
use super::timeline::Timeline;
use crate::AppState;
use crate::settings::WebhookSettings;
use crate::time::later;

mod callback;
mod reorder;
mod signing;
mod slots;

pub use callback::check_callback;
use reorder::{HoldBack, Pass};
pub use signing::{constant_time_eq, sign, signing_key, verify};
use slots::{Admit, Origin, Slots};

/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Most due deliveries the dispatcher takes from the timer queue before it looks at the rest.
const DUE_BATCH: usize = 1024;

/// One job's delivery, before its `attempt`-th try.
#[derive(Debug)]
struct Delivery {
    job: Arc<Job>,
    attempt: u32,
    /// Scheduled by a cancel, due at once (else at the job's natural end, scheduled at its
    /// creation).
    on_cancel: bool,
    /// What the webhook faults decided, once it first came due (`None` before).
    faults: Option<WebhookFaults>,
    /// The delivery itself, or the copy the duplicate fault sends.
    role: Role,
    /// A delivery held back behind this one (the reorder fault): it is sent when this one's
    /// attempt has ended.
    behind: Option<Box<Delivery>>,
}

/// Whether a delivery is the job's own or a copy of one already delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The job's delivery: retried, counted, reported as the job's detection.
    Original,
    /// A second send of a delivered one (the duplicate fault): sent once, not retried, and not
    /// counted as a delivery.
    Duplicate,
}

impl Delivery {
    fn origin(&self) -> Option<Origin> {
        self.job
            .callback
            .as_ref()
            .map(|url| url.origin().ascii_serialization())
    }
}

/// The timer queue of deliveries, and the client that sends them.
#[derive(Debug)]
pub struct Webhooks {
    /// HMAC key from `webhooks.secret`.
    key: Vec<u8>,
    /// The `[webhooks]` settings.
    settings: WebhookSettings,
    /// Deliveries by when they are due: first attempts (job completions) and retries.
    timers: Mutex<Timeline<Delivery>>,
    /// Wakes the dispatcher when a job is scheduled.
    wake: Notify,
    /// Set while a dispatcher runs, so only one ever drains the queue.
    running: AtomicBool,
    /// Sends without following redirects, within the timeouts.
    client: reqwest::Client,
}

impl Webhooks {
    /// From validated settings.
    pub fn new(settings: &WebhookSettings) -> Self {
        Webhooks {
            key: signing_key(&settings.secret).unwrap_or_default(),
            settings: settings.clone(),
            timers: Mutex::default(),
            wake: Notify::new(),
            running: AtomicBool::new(false),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(settings.connect_timeout)
                .timeout(settings.timeout)
                .build()
                .unwrap_or_default(),
        }
    }

    fn timers(&self) -> MutexGuard<'_, Timeline<Delivery>> {
        // Single pushes and pops: a panic while holding it leaves the queue consistent.
        self.timers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arranges a delivery when `job` becomes terminal. A hanging job never does (unless it is
    /// canceled, see [`Webhooks::schedule_now`]): holding it here would keep it in memory long
    /// after the store forgot it.
    pub fn schedule(&self, job: Arc<Job>) {
        if job.hang || job.callback.is_none() {
            return;
        }
        let at = job.completes_at();
        self.push(at, job, false);
    }

    /// Arranges a delivery now, for a job that was just canceled. The delivery scheduled for
    /// its natural end is skipped when it comes due.
    pub fn schedule_now(&self, job: Arc<Job>) {
        if job.callback.is_none() {
            return;
        }
        self.push(Instant::now(), job, true);
    }

    /// Puts a delivery (back) into the timer queue, due at `at`.
    fn push_due(&self, at: Instant, d: Delivery) {
        self.timers().push(at, d);
        self.wake.notify_one();
    }

    fn push(&self, at: Instant, job: Arc<Job>, on_cancel: bool) {
        let d = Delivery {
            job,
            attempt: 1,
            on_cancel,
            faults: None,
            role: Role::Original,
            behind: None,
        };
        self.timers().push(at, d);
        self.wake.notify_one();
    }

    /// Runs the dispatcher until the task is aborted (which aborts the attempts in flight). A
    /// second call while one runs returns at once.
    pub async fn run(state: AppState) {
        let hooks = &state.inner.webhooks;
        if hooks.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let _running = Running(&hooks.running);
        let mut flights = Flights {
            state: state.clone(),
            slots: Slots::new(&hooks.settings),
            attempts: JoinSet::new(),
            origins: HashMap::new(),
        };
        let mut held = HoldBack::default();
        loop {
            let now = Instant::now();
            // A bounded batch per round: a burst of due deliveries cannot hog the thread.
            for _ in 0..DUE_BATCH {
                let Some(d) = hooks.timers().pop_due(now) else {
                    break;
                };
                // Due at its natural end: looking at it now decides that it ended on its own,
                // unless it was canceled, and then the cancel scheduled a delivery of its own.
                if !d.on_cancel && d.job.snapshot(now).state == State::Canceled {
                    continue;
                }
                if let Some(d) = inject(&state, &mut held, d, now) {
                    flights.offer(d);
                }
            }
            if let Some(d) = held.expired(now) {
                flights.offer(d);
            }
            let next = earliest(hooks.timers().next_at(), held.deadline());
            tokio::select! {
                _ = sleep_until(next) => {}
                _ = hooks.wake.notified() => {}
                Some(ended) = flights.attempts.join_next_with_id() => {
                    let (id, outcome) = match ended {
                        Ok((id, outcome)) => (id, Some(outcome)),
                        Err(e) => (e.id(), None),
                    };
                    if let Some((d, result)) = outcome {
                        settle(&state, d, result);
                    }
                    flights.finish(id);
                }
            }
        }
    }
}

/// The attempts in flight, and the slots they hold.
struct Flights {
    state: AppState,
    slots: Slots<Delivery>,
    attempts: JoinSet<(Delivery, Attempt)>,
    /// The receiver of each attempt in flight, to free its slot when it ends.
    origins: HashMap<Id, Origin>,
}

impl Flights {
    /// A due delivery: started, queued for a slot, or dropped when it cannot even wait.
    fn offer(&mut self, d: Delivery) {
        let Some(origin) = d.origin() else {
            return;
        };
        match self.slots.offer(&origin, d) {
            Admit::Start(d) => self.start(origin, d),
            Admit::Queued => {}
            Admit::Dropped(mut d) => {
                tracing::debug!(job = %d.job.id, "webhook delivery dropped: no room to wait");
                self.state.inner.metrics.webhook("dropped");
                // What was held back behind it is not lost with it.
                release_behind(&self.state, &mut d);
            }
        }
    }

    fn start(&mut self, origin: Origin, d: Delivery) {
        let handle = self.attempts.spawn(attempt(self.state.clone(), d));
        self.origins.insert(handle.id(), origin);
    }

    /// The attempt `id` has ended: its slot goes to whoever waits for it.
    fn finish(&mut self, id: Id) {
        if let Some(origin) = self.origins.remove(&id) {
            for (origin, d) in self.slots.finish(&origin) {
                self.start(origin, d);
            }
        }
    }
}

/// Applies the webhook faults to a due delivery; returns it if it is to be offered now. A
/// delivery's fate is rolled once, when it first comes due: lost, or delayed (back into the
/// timer queue), and then perhaps held back (into `held`) or duplicated (in [`settle`]).
fn inject(
    state: &AppState,
    held: &mut HoldBack<Delivery>,
    mut d: Delivery,
    now: Instant,
) -> Option<Delivery> {
    let metrics = &state.inner.metrics;
    let faults = match d.faults {
        Some(faults) => faults,
        None => match state.inner.faults.roll_webhook() {
            WebhookFate::Lost => {
                tracing::debug!(job = %d.job.id, "webhook delivery lost (injected fault)");
                metrics.fault("webhook_drop");
                return None;
            }
            WebhookFate::Sent(faults) => {
                d.faults = Some(faults);
                if !faults.delay.is_zero() {
                    metrics.fault("webhook_delay");
                    state
                        .inner
                        .webhooks
                        .timers()
                        .push(later(now, faults.delay), d);
                    return None;
                }
                faults
            }
        },
    };
    // Held back once at most: what is released later passes straight through.
    let hold = faults.hold_back;
    if let Some(f) = d.faults.as_mut() {
        f.hold_back = None;
    }
    match held.pass(d, hold, now) {
        Pass::Go(d) => Some(d),
        Pass::Held => {
            metrics.fault("webhook_reorder");
            None
        }
        Pass::Overtake { mut ahead, behind } => {
            ahead.behind = Some(Box::new(behind));
            Some(ahead)
        }
    }
}

/// Sends what was held back behind `d` now (its own hold is over).
fn release_behind(state: &AppState, d: &mut Delivery) {
    if let Some(behind) = d.behind.take() {
        state.inner.webhooks.push_due(Instant::now(), *behind);
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Clears the running flag when the dispatcher stops, aborted or not.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// The wait after failed attempt number `attempt`: `initial`, doubling, at most a minute.
fn backoff(initial: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    initial.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// One attempt: signs the job's status and POSTs it. Returns the delivery for [`settle`].
async fn attempt(state: AppState, d: Delivery) -> (Delivery, Attempt) {
    let hooks = &state.inner.webhooks;
    let Some(url) = d.job.callback.clone() else {
        return (d, Attempt::Failed);
    };
    let snap = d.job.snapshot(Instant::now());
    let request = hooks
        .client
        .post(url)
        .header("content-type", "application/json");
    let request = match &d.job.heygen {
        Some(meta) => {
            let Some((body, name, signature)) = heygen_delivery(&state, &d.job, meta, &snap) else {
                return (d, Attempt::Failed);
            };
            request.header(name, signature).body(body)
        }
        None => {
            let Ok(body) = serde_json::to_vec(&d.job.body(&snap, false)) else {
                return (d, Attempt::Failed);
            };
            let msg_id = format!("msg_{}", d.job.id);
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|t| t.as_secs())
                .unwrap_or(0);
            let signature = sign(&hooks.key, &msg_id, timestamp, &body);
            request
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
        }
    };
    let sent = request.send().await;
    let result = classify(sent.as_ref().ok().map(reqwest::Response::status));
    (d, result)
}

/// A HeyGen job's delivery: its envelope, and the header that signs it (HMAC-SHA256, hex, over
/// the raw body, with `heygen.webhook_secret`, in `heygen.signature_header`).
fn heygen_delivery(
    state: &AppState,
    job: &Job,
    meta: &HeyGenJob,
    snap: &Snapshot,
) -> Option<(Vec<u8>, reqwest::header::HeaderName, String)> {
    let settings = &state.inner.settings.heygen;
    let phase = Phase::of(job, snap, settings.queued_fraction);
    let event = webhook_event(job, meta, phase, &state.inner.urls)?;
    let body = serde_json::to_vec(&event).ok()?;
    // Validated at start-up.
    let name =
        reqwest::header::HeaderName::from_bytes(settings.signature_header.as_bytes()).ok()?;
    let signature = hmac_hex(settings.webhook_secret.as_bytes(), &body);
    Some((body, name, signature))
}

/// Counts an attempt's outcome, and puts a failed one back in the timer queue for its retry.
/// What was held back behind it goes now; a delivered one the duplicate fault picked is sent
/// once more.
fn settle(state: &AppState, mut d: Delivery, result: Attempt) {
    let hooks = &state.inner.webhooks;
    release_behind(state, &mut d);
    if d.role == Role::Duplicate {
        tracing::debug!(job = %d.job.id, ?result, "duplicate webhook delivery sent (injected fault)");
        return;
    }
    let (job, attempt) = (&d.job, d.attempt);
    match result {
        Attempt::Delivered => {
            state.inner.metrics.webhook("delivered");
            state.report_terminal(job, Channel::Webhook, Instant::now());
            if d.faults.is_some_and(|f| f.duplicate) {
                state.inner.metrics.fault("webhook_duplicate");
                let copy = Delivery {
                    job: Arc::clone(job),
                    attempt: 1,
                    on_cancel: d.on_cancel,
                    faults: Some(WebhookFaults::default()),
                    role: Role::Duplicate,
                    behind: None,
                };
                hooks.push_due(Instant::now(), copy);
            }
        }
        Attempt::Redirected => {
            tracing::debug!(job = %job.id, attempt, "webhook receiver redirected; not followed");
            state.inner.metrics.webhook("redirected");
        }
        Attempt::Failed if attempt < hooks.settings.max_attempts => {
            tracing::debug!(job = %job.id, attempt, "webhook delivery failed; will retry");
            state.inner.metrics.webhook("retried");
            let at = Instant::now() + backoff(hooks.settings.initial_backoff, attempt);
            hooks.timers().push(
                at,
                Delivery {
                    attempt: attempt + 1,
                    ..d
                },
            );
        }
        Attempt::Failed => {
            tracing::debug!(job = %job.id, attempt, "webhook delivery failed; giving up");
            state.inner.metrics.webhook("gave_up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_jobs_that_end_and_have_a_callback_are_scheduled() {
        let hooks = Webhooks::new(&crate::Settings::default().webhooks);
        let job = |hang: bool, callback: Option<&str>| {
            let url = callback.map(|c| url::Url::parse(c).unwrap());
            let job = Job::new(
                "j".into(),
                Duration::ZERO,
                crate::Outcome::Completed,
                1.0,
                url,
            );
            Arc::new(if hang { job.hanging() } else { job })
        };
        hooks.schedule(job(true, Some("http://127.0.0.1:9/")));
        hooks.schedule(job(false, None));
        assert_eq!(hooks.timers().len(), 0);
        hooks.schedule(job(false, Some("http://127.0.0.1:9/")));
        assert_eq!(hooks.timers().len(), 1);
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let b = |n| backoff(Duration::from_millis(200), n);
        assert_eq!(
            [b(1), b(2), b(3)],
            [200, 400, 800].map(Duration::from_millis)
        );
        assert_eq!(b(10), MAX_BACKOFF);
        assert_eq!(b(u32::MAX), MAX_BACKOFF);
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
