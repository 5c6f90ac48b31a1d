//! Webhooks: deliveries into the set, and the safety net's reads.
//!
//! A set whose jobs announce their end by webhook ([`JobSetOptions::webhooks`]) reads a job
//! only when its webhook is overdue (see [`SafetyNet`]): a job added sleeps until then, and
//! after each read that finds it running it sleeps until the next safety read — unless its
//! wait needs a look sooner (a read that failed and is tried again, a stall check, the last
//! look before its deadline).
//!
//! Deliveries find their job by its id on the server. A terminal one ends the job's wait at
//! once, through its ledger like any answer, so the first terminal status — delivered or
//! read — decides, once; the job leaves the set, and a copy delivered later finds no job. One
//! that comes before its job is added is kept, the latest [`MAX_EARLY`] of them, and ends the
//! job when it is.
//!
//! The safety reads are planned with the learned durations as they are when a job goes to
//! sleep; when they change (jobs ended and were learned from), every job asleep on its safety
//! read is planned again.
//!
//! [`JobSetOptions::webhooks`]: crate::jobset::JobSetOptions::webhooks

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

use super::Scheduler;
use crate::jobset::safety::SafetyNet;
use crate::jobset::tracked::{Stage, Tracked};
use crate::jobset::{JobKey, tracked::Membership};
use crate::model::JobStatus;
use crate::poll::DurationModel;
use crate::telemetry;
use crate::wait::Wire;
use crate::wait::ledger::Answer;

/// The most terminal deliveries kept for jobs not (yet) in the set.
pub(crate) const MAX_EARLY: usize = 1024;
/// How often the safety reads are planned again when the learned durations changed.
const REPLAN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A set's webhook books.
pub(super) struct Hooks {
    net: SafetyNet,
    /// Jobs by their id on the server (the latest added, for an id added twice).
    ids: HashMap<Box<str>, JobKey>,
    /// Terminal statuses delivered for ids no job of the set has, oldest first.
    early: HashMap<Box<str>, JobStatus>,
    order: VecDeque<Box<str>>,
    /// The learned durations the sleeping jobs' safety reads were planned with.
    planned: Arc<DurationModel>,
    planned_at: Option<Instant>,
}

impl Hooks {
    pub(super) fn new(net: SafetyNet, model: Arc<DurationModel>) -> Self {
        Hooks {
            net,
            ids: HashMap::new(),
            early: HashMap::new(),
            order: VecDeque::new(),
            planned: model,
            planned_at: None,
        }
    }

    /// Keeps a terminal status delivered for a job the set does not have (the oldest kept
    /// goes when full).
    fn keep(&mut self, id: &str, status: JobStatus) {
        if self.early.insert(id.into(), status).is_some() {
            return;
        }
        self.order.push_back(id.into());
        while self.order.len() > MAX_EARLY {
            if let Some(oldest) = self.order.pop_front() {
                self.early.remove(&oldest);
            }
        }
    }

    fn take_early(&mut self, id: &str) -> Option<JobStatus> {
        let status = self.early.remove(id)?;
        self.order.retain(|kept| &**kept != id);
        Some(status)
    }
}

/// When `job` is read next on `net`, as `model` has it (`now` when it is overdue).
fn safety_at(net: &SafetyNet, model: &DurationModel, job: &Tracked, now: Instant) -> Instant {
    let ledger = &job.ledger;
    let next = net.next_age(model, ledger.pending_age());
    now + next.saturating_sub(ledger.age(now))
}

impl<W: Wire> Scheduler<W> {
    /// A job was added to a set that expects webhooks: it is matched by id from now on, ends
    /// at once if its terminal status came first, and otherwise sleeps until its safety
    /// read. Returns `false` when the set does not expect webhooks.
    pub(super) fn hook_added(&mut self, key: JobKey, now: Instant) -> bool {
        let Some(hooks) = &mut self.hooks else {
            return false;
        };
        let Some(job) = self.jobs.get_mut(&key) else {
            return true;
        };
        job.member = Membership::Out;
        let early = match job.endpoints.id.clone() {
            Some(id) => {
                let early = hooks.take_early(&id);
                hooks.ids.insert(id, key);
                early
            }
            None => None,
        };
        match early {
            Some(status) => {
                telemetry::webhook_event("finished");
                self.take(key, Answer::Delivered(status), now);
            }
            None => self.sleep_until(key, now, now),
        }
        true
    }

    /// A job left the set: deliveries no longer find it.
    pub(super) fn hook_leave(&mut self, key: JobKey, job: &Tracked) {
        if let (Some(hooks), Some(id)) = (&mut self.hooks, &job.endpoints.id)
            && hooks.ids.get(id) == Some(&key)
        {
            hooks.ids.remove(id);
        }
    }

    /// A webhook delivered `status` for the job with id `id`.
    pub(super) fn delivered(&mut self, id: &str, status: JobStatus) {
        if !status.is_terminal() {
            telemetry::webhook_event("pending");
            return;
        }
        let Some(hooks) = &mut self.hooks else {
            tracing::debug!(
                job = id,
                "a webhook delivered to a job set that does not expect webhooks"
            );
            telemetry::webhook_event("unmatched");
            return;
        };
        let Some(&key) = hooks.ids.get(id) else {
            // A copy of one that ended its job already, another set's job, or one added
            // later: kept in case it is.
            telemetry::webhook_event("unmatched");
            hooks.keep(id, status);
            return;
        };
        telemetry::webhook_event("finished");
        self.take(key, Answer::Delivered(status), Instant::now());
    }

    /// The latest of `at` and the job's next safety read, when the set expects webhooks.
    pub(super) fn not_before_safety(&self, key: JobKey, at: Instant, now: Instant) -> Instant {
        match (&self.hooks, self.jobs.get(&key)) {
            (Some(hooks), Some(job)) => at.max(safety_at(&hooks.net, &hooks.planned, job, now)),
            _ => at,
        }
    }

    /// Plans the safety reads again when the learned durations changed (at most once a
    /// second): a job asleep until its safety read sleeps until the new one.
    pub(super) fn hooks_turn(&mut self, now: Instant) {
        let Some(hooks) = &mut self.hooks else {
            return;
        };
        if hooks
            .planned_at
            .is_some_and(|at| now.saturating_duration_since(at) < REPLAN_EVERY)
        {
            return;
        }
        hooks.planned_at = Some(now);
        let model = self.ctx.learned.model();
        if Arc::ptr_eq(&model, &hooks.planned) {
            return;
        }
        let old = std::mem::replace(&mut hooks.planned, model);
        let net = hooks.net;
        let asleep: Vec<JobKey> = self
            .jobs
            .iter()
            .filter(|(_, job)| match job.stage {
                Stage::Sleeping { until, .. } => until == safety_at(&net, &old, job, now),
                _ => false,
            })
            .map(|(key, _)| *key)
            .collect();
        for key in asleep {
            self.sleep_until(key, now, now);
        }
    }
}
