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
//! read — decides, once; the job leaves the set, and a copy delivered later finds no job
//! (the ids of the latest [`MAX_ENDED`] jobs that ended are remembered, so that such copies
//! are told from early deliveries). One that comes before its job is added is kept, the
//! latest [`MAX_EARLY`] of them (the first terminal status of each), and ends the job when it
//! is. An id added twice ends every job that has it.
//!
//! A set that was not told to expect webhooks takes deliveries too: a terminal one ends the
//! job with that id (found by a scan: such a set keeps no index), one for no job of the set is
//! dropped.
//!
//! The safety reads are planned with the learned durations as they are when a job goes to
//! sleep; when they change (jobs ended and were learned from), every job asleep on its safety
//! read is planned again, at most once a second.
//!
//! [`JobSetOptions::webhooks`]: crate::jobset::JobSetOptions::webhooks

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Scheduler;
use crate::jobset::JobKey;
use crate::jobset::safety::SafetyNet;
use crate::jobset::tracked::{Membership, Stage, Tracked};
use crate::model::JobStatus;
use crate::poll::DurationModel;
use crate::telemetry;
use crate::wait::Wire;
use crate::wait::ledger::Answer;

/// The most terminal deliveries kept for jobs not (yet) in the set (each a status: its
/// message and result URL are bounded by the profile's limits).
pub(crate) const MAX_EARLY: usize = 256;
/// The most ids of ended jobs remembered, to tell a copy from an early delivery.
pub(crate) const MAX_ENDED: usize = 1024;
/// How often the safety reads are planned again when the learned durations changed.
const REPLAN_EVERY: Duration = Duration::from_secs(1);
/// A safety read further than this is no safety read (the deadline and the last look before
/// it still come).
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A bounded set of ids, oldest out first.
struct Recent<V> {
    map: HashMap<Box<str>, V>,
    order: VecDeque<Box<str>>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Recent<V> {
    /// Keeps `value` for `id` unless one is kept already (the first stays).
    fn keep(&mut self, id: &str, value: V, cap: usize) {
        if self.map.contains_key(id) {
            return;
        }
        self.map.insert(id.into(), value);
        self.order.push_back(id.into());
        while self.order.len() > cap {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
    }

    fn take(&mut self, id: &str) -> Option<V> {
        let value = self.map.remove(id)?;
        self.order.retain(|kept| &**kept != id);
        Some(value)
    }

    fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }
}

/// A set's webhook books.
pub(super) struct Hooks {
    net: SafetyNet,
    /// Jobs by their id on the server (the latest added, for an id added twice).
    ids: HashMap<Box<str>, JobKey>,
    /// Ids added while a job with the same id was in the set: deliveries then look for all.
    twins: HashSet<Box<str>>,
    /// Terminal statuses delivered for ids no job of the set has.
    early: Recent<JobStatus>,
    /// Ids of jobs that ended lately.
    ended: Recent<()>,
    /// The learned durations the sleeping jobs' safety reads were planned with.
    planned: Arc<DurationModel>,
    planned_at: Option<Instant>,
    /// Says when a finished wait taught the learned durations something.
    changes: watch::Receiver<u64>,
    /// They changed since the last plan.
    stale: bool,
}

impl Hooks {
    pub(super) fn new(
        net: SafetyNet,
        model: Arc<DurationModel>,
        changes: watch::Receiver<u64>,
    ) -> Self {
        Hooks {
            net,
            ids: HashMap::new(),
            twins: HashSet::new(),
            early: Recent::default(),
            ended: Recent::default(),
            planned: model,
            planned_at: None,
            changes,
            stale: false,
        }
    }
}

/// When `job` is read next on `net`, as `model` has it (`now` when it is overdue).
fn safety_at(net: &SafetyNet, model: &DurationModel, job: &Tracked, now: Instant) -> Instant {
    let ledger = &job.ledger;
    let next = net.next_age(model, ledger.pending_age());
    let ahead = next.saturating_sub(ledger.age(now)).min(FAR);
    now.checked_add(ahead).unwrap_or(now)
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
                let early = hooks.early.take(&id);
                if hooks.ids.contains_key(&id) {
                    hooks.twins.insert(id.clone());
                }
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

    /// A job left the set: deliveries no longer find it (a twin with its id takes its place).
    pub(super) fn hook_leave(&mut self, key: JobKey, job: &Tracked) {
        let (Some(hooks), Some(id)) = (&mut self.hooks, &job.endpoints.id) else {
            return;
        };
        hooks.ended.keep(id, (), MAX_ENDED);
        if hooks.ids.get(id) != Some(&key) {
            return;
        }
        hooks.ids.remove(id);
        if hooks.twins.contains(id) {
            match self
                .jobs
                .iter()
                .find(|(_, other)| other.endpoints.id.as_ref() == Some(id))
            {
                Some((twin, _)) => {
                    hooks.ids.insert(id.clone(), *twin);
                }
                None => {
                    hooks.twins.remove(id);
                }
            }
        }
    }

    /// A webhook delivered `status` for the job with id `id`.
    pub(super) fn delivered(&mut self, id: &str, status: JobStatus) {
        if !status.is_terminal() {
            telemetry::webhook_event("pending");
            return;
        }
        let keys: Vec<JobKey> = match &mut self.hooks {
            None => self.with_id(id),
            Some(hooks) => match hooks.ids.get(id) {
                Some(_) if hooks.twins.contains(id) => self.with_id(id),
                Some(&key) => vec![key],
                None if hooks.ended.contains(id) => {
                    telemetry::webhook_event("duplicate");
                    return;
                }
                None => {
                    // Another set's job, or one not added yet: kept in case it is.
                    hooks.early.keep(id, status, MAX_EARLY);
                    telemetry::webhook_event("unmatched");
                    return;
                }
            },
        };
        if keys.is_empty() {
            tracing::debug!(job = id, "a webhook for no job of the set");
            telemetry::webhook_event("unmatched");
            return;
        }
        let now = Instant::now();
        for key in keys {
            telemetry::webhook_event("finished");
            self.take(key, Answer::Delivered(status.clone()), now);
        }
    }

    /// Every job of the set with id `id` (a scan).
    fn with_id(&self, id: &str) -> Vec<JobKey> {
        self.jobs
            .iter()
            .filter(|(_, job)| job.endpoints.id.as_deref() == Some(id))
            .map(|(key, _)| *key)
            .collect()
    }

    /// The latest of `at` and the job's next safety read, when the set expects webhooks.
    pub(super) fn not_before_safety(&self, key: JobKey, at: Instant, now: Instant) -> Instant {
        match (&self.hooks, self.jobs.get(&key)) {
            (Some(hooks), Some(job)) => at.max(safety_at(&hooks.net, &hooks.planned, job, now)),
            _ => at,
        }
    }

    /// When the safety reads are to be planned again: a second after the last plan, once the
    /// learned durations changed.
    pub(super) fn hooks_wake(&mut self) -> Option<Instant> {
        let hooks = self.hooks.as_mut()?;
        if hooks.changes.has_changed().unwrap_or(false) {
            hooks.changes.mark_unchanged();
            hooks.stale = true;
        }
        hooks.stale.then(|| {
            hooks
                .planned_at
                .map_or_else(Instant::now, |at| at + REPLAN_EVERY)
        })
    }

    /// Plans the safety reads again when the learned durations changed (at most once a
    /// second): a job asleep until its safety read sleeps until the new one.
    pub(super) fn hooks_turn(&mut self, now: Instant) {
        let Some(hooks) = &mut self.hooks else {
            return;
        };
        if !hooks.stale
            || hooks
                .planned_at
                .is_some_and(|at| now.saturating_duration_since(at) < REPLAN_EVERY)
        {
            return;
        }
        hooks.planned_at = Some(now);
        let model = self.ctx.learned.model();
        if Arc::ptr_eq(&model, &hooks.planned) {
            // Being fitted meanwhile: the next turn takes it.
            return;
        }
        hooks.stale = false;
        hooks.planned = model;
        let asleep: Vec<JobKey> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.on_safety && matches!(job.stage, Stage::Sleeping { .. }))
            .map(|(key, _)| *key)
            .collect();
        for key in asleep {
            self.sleep_until(key, now, now);
        }
    }
}
