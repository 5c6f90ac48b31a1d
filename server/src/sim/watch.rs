//! Watch sets: the jobs one change stream (or changes long-poll) follows, named by the client,
//! changed while the stream stays open.
//!
//! Why not a list in the URL (`?jobs=a,b,c`)? A URL is bounded by every proxy on the way (8 KiB
//! is common: a few hundred ids), and changing the list means reconnecting. A watch set is
//! created once (`POST /v1/watches`), grows and shrinks with `PATCH` as jobs come and go, and
//! a stream on it (`GET /v1/events?watch=ID`) follows the change without a reconnect: thousands
//! of jobs, one connection. The price is state on the server, so it is bounded: at most
//! `changes.max_watch_jobs` ids per set, `changes.max_watch_sets_per_client` sets per client and
//! `changes.max_watch_sets` in all, each forgotten `changes.watch_ttl` after it was last used
//! (created, changed, or read by a stream that has since closed; never while a stream reads
//! it). A set belongs to the client that created it: to every other it does not exist.
//!
//! ## Joining at a cursor
//!
//! Each member remembers the log's head when it was added, and a stream reports a member's
//! changes only *after* that point. The answer that added it carries its status as of that
//! same head. An addition is recorded while the store holds its lock (`JobStore::at_head`), so
//! no change slips between the head read and the addition: together the answer and the stream
//! report every change of the job exactly once, whether the stream was open, opened later, or
//! resumed from an older cursor.
//!
//! A job is added only if it exists and is visible to the set's client: its own, or the
//! operator's (the legacy job, jobs created in process). Another client's job is reported as
//! not found, as an unknown id is.
//!
//! ## Sets shared by replicas
//!
//! With the Redis backend the sets live in Redis, and every change of a set is an entry of the
//! shared change log: a member joins at that entry's offset. Each replica's table is a copy,
//! changed only by the tail as it applies those entries ([`WatchSets::apply`]), in the log's
//! order — so a stream on any replica admits exactly the changes after a member joined, as a
//! stream on the replica that added it would. The bounds are checked in Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::changes::Change;
use super::client::ClientId;
use crate::settings::ChangeSettings;

/// Longest job id a watch set request may name: no job id is longer, so a longer one cannot
/// name a job.
pub const MAX_ID_LEN: usize = 64;

/// What a change stream or changes long-poll follows.
#[derive(Debug)]
pub enum Scope {
    /// Every job the client created (not the operator's: name those in a watch set).
    Client(ClientId),
    /// The jobs of a watch set, counted as read while this lives.
    Watch(Reading),
}

impl Scope {
    /// The client whose request it is.
    pub fn client(&self) -> ClientId {
        match self {
            Scope::Client(client) => *client,
            Scope::Watch(Reading(set)) => set.client,
        }
    }

    /// Whether `change` is one to report.
    pub fn admits(&self, change: &Change) -> bool {
        match self {
            Scope::Client(client) => change.job.client == Some(*client),
            Scope::Watch(Reading(set)) => set.admits(&change.job.id, change.offset),
        }
    }

    /// The watch set, if it follows one.
    pub fn set(&self) -> Option<&Arc<WatchSet>> {
        match self {
            Scope::Client(_) => None,
            Scope::Watch(Reading(set)) => Some(set),
        }
    }
}

/// Why a watch set could not be created or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The client holds `changes.max_watch_sets_per_client` sets.
    #[error("the client holds changes.max_watch_sets_per_client watch sets")]
    ClientFull,
    /// `changes.max_watch_sets` sets are held.
    #[error("the server holds changes.max_watch_sets watch sets")]
    Full,
    /// The set would hold more than `changes.max_watch_jobs` jobs.
    #[error("a watch set holds at most changes.max_watch_jobs jobs")]
    TooLarge,
}

/// A change of a shared set, as the tail applies it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchChange {
    /// Created (`create`) or changed: `add` joined at `offset`, `remove` left.
    Change {
        /// The set.
        id: String,
        /// Its client.
        client: ClientId,
        /// Whether this change created it.
        create: bool,
        /// Jobs that joined.
        add: Vec<String>,
        /// Jobs that left.
        remove: Vec<String>,
        /// The offset they joined at.
        offset: u64,
    },
    /// Deleted, or expired: streams reading it end.
    Delete {
        /// The set.
        id: String,
    },
    /// Read from Redis as it is (the copy starts over), with each member's offset.
    Load {
        /// The set.
        id: String,
        /// Its client.
        client: ClientId,
        /// Its members and the offsets they joined at.
        members: Vec<(String, u64)>,
    },
}

/// Every watch set, bounded and expiring.
#[derive(Debug)]
pub struct WatchSets {
    /// `changes.max_watch_jobs`.
    max_jobs: usize,
    /// `changes.max_watch_sets`.
    max_sets: usize,
    /// `changes.max_watch_sets_per_client`.
    max_per_client: usize,
    /// `changes.watch_ttl`.
    ttl: Duration,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    sets: HashMap<String, Arc<WatchSet>>,
    /// Sets held per client; no entry for a client holding none.
    per_client: HashMap<ClientId, usize>,
}

impl Table {
    fn insert(&mut self, id: String, client: ClientId, now: Instant) -> Arc<WatchSet> {
        let set = Arc::new(WatchSet {
            id: id.clone(),
            client,
            members: Mutex::default(),
            streams: AtomicUsize::new(0),
            used: Mutex::new(now),
            deleted: watch::channel(false).0,
        });
        self.sets.insert(id, Arc::clone(&set));
        *self.per_client.entry(client).or_default() += 1;
        set
    }

    fn remove(&mut self, id: &str) -> Option<Arc<WatchSet>> {
        let set = self.sets.remove(id)?;
        if let Some(n) = self.per_client.get_mut(&set.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&set.client);
            }
        }
        set.deleted.send_replace(true);
        Some(set)
    }
}

/// One watch set.
#[derive(Debug)]
pub struct WatchSet {
    /// Its id (`w-` and 16 hex digits).
    pub id: String,
    /// The client that created it, the only one that sees it.
    pub client: ClientId,
    /// Job id → the log offset it was added at.
    members: Mutex<HashMap<Box<str>, u64>>,
    /// Streams reading it now.
    streams: AtomicUsize,
    /// When it was last created, changed or left by a stream.
    used: Mutex<Instant>,
    /// Set when it is deleted or expires, so that streams reading it end.
    deleted: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single inserts and removals: a panic while holding it leaves the table consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WatchSets {
    /// No sets yet, bounded as `settings` say.
    pub fn new(settings: &ChangeSettings) -> Self {
        WatchSets {
            max_jobs: settings.max_watch_jobs,
            max_sets: settings.max_watch_sets,
            max_per_client: settings.max_watch_sets_per_client,
            ttl: settings.watch_ttl,
            table: Mutex::default(),
        }
    }

    /// Most jobs in one set.
    pub fn max_jobs(&self) -> usize {
        self.max_jobs
    }

    /// A new, empty set for `client`, unless it or the server holds too many.
    pub fn create(&self, client: ClientId, now: Instant) -> Result<Arc<WatchSet>, Refused> {
        let mut table = lock(&self.table);
        if table.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            return Err(Refused::ClientFull);
        }
        if table.sets.len() >= self.max_sets {
            return Err(Refused::Full);
        }
        let id = loop {
            let id = format!("w-{:016x}", rand::rng().random::<u64>());
            if !table.sets.contains_key(&id) {
                break id;
            }
        };
        Ok(table.insert(id, client, now))
    }

    /// The set with this id, if `client` created it.
    pub fn get(&self, id: &str, client: ClientId) -> Option<Arc<WatchSet>> {
        lock(&self.table)
            .sets
            .get(id)
            .filter(|s| s.client == client)
            .cloned()
    }

    /// Deletes the set with this id if `client` created it; streams reading it end.
    pub fn delete(&self, id: &str, client: ClientId) -> bool {
        let mut table = lock(&self.table);
        if !table.sets.get(id).is_some_and(|s| s.client == client) {
            return false;
        }
        table.remove(id).is_some()
    }

    /// Forgets the sets unused for `changes.watch_ttl` at `now`; returns how many. Looks at
    /// every set: there are at most `changes.max_watch_sets`.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut table = lock(&self.table);
        let expired: Vec<String> = table
            .sets
            .values()
            .filter(|s| s.expired(now, self.ttl))
            .map(|s| s.id.clone())
            .collect();
        for id in &expired {
            table.remove(id);
        }
        expired.len()
    }

    /// Applies a change of a shared set (see the module docs): no bound is checked here, Redis
    /// did.
    pub fn apply(&self, change: WatchChange, now: Instant) {
        let mut table = lock(&self.table);
        match change {
            WatchChange::Delete { id } => {
                table.remove(&id);
            }
            WatchChange::Change {
                id,
                client,
                create,
                add,
                remove,
                offset,
            } => {
                let set = match table.sets.get(&id) {
                    Some(set) => Arc::clone(set),
                    None if create => table.insert(id, client, now),
                    None => return,
                };
                let mut members = lock(&set.members);
                for job in &remove {
                    members.remove(job.as_str());
                }
                for job in add {
                    members.entry(job.into_boxed_str()).or_insert(offset);
                }
                drop(members);
                set.touch(now);
            }
            WatchChange::Load {
                id,
                client,
                members,
            } => {
                let set = match table.sets.get(&id) {
                    Some(set) => Arc::clone(set),
                    None => table.insert(id, client, now),
                };
                let mut held = lock(&set.members);
                for (job, offset) in members {
                    held.insert(job.into_boxed_str(), offset);
                }
            }
        }
    }

    /// Forgets every set (a copy that starts over); streams reading them end.
    pub fn clear(&self) {
        let mut table = lock(&self.table);
        let ids: Vec<String> = table.sets.keys().cloned().collect();
        for id in ids {
            table.remove(&id);
        }
    }

    /// The ids of the sets a stream reads now.
    pub fn read_now(&self) -> Vec<String> {
        lock(&self.table)
            .sets
            .values()
            .filter(|s| s.streams.load(Ordering::Acquire) > 0)
            .map(|s| s.id.clone())
            .collect()
    }

    /// Sets held.
    pub fn len(&self) -> usize {
        lock(&self.table).sets.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stream reading a set: counted while it lives, so the set does not expire under it.
#[derive(Debug)]
pub struct Reading(Arc<WatchSet>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.touch(Instant::now());
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WatchSet {
    fn touch(&self, now: Instant) {
        *lock(&self.used) = now;
    }

    fn expired(&self, now: Instant, ttl: Duration) -> bool {
        self.streams.load(Ordering::Acquire) == 0
            && now.saturating_duration_since(*lock(&self.used)) >= ttl
    }

    /// Adds `add` (each joining at `offset`, see the module docs; a member already there
    /// keeps its place) and removes `remove`, all or nothing: refused when the set would hold
    /// more than `max` jobs, even after dropping the members `gone` says no longer exist.
    /// Returns the size.
    pub fn change(
        &self,
        add: &[&str],
        remove: &[&str],
        offset: u64,
        max: usize,
        gone: impl Fn(&str) -> bool,
        now: Instant,
    ) -> Result<usize, Refused> {
        let mut members = lock(&self.members);
        let fresh = add.iter().filter(|id| !members.contains_key(**id)).count();
        let after = |members: &HashMap<Box<str>, u64>| {
            let removed = remove
                .iter()
                .filter(|id| members.contains_key(**id))
                .count();
            members.len() - removed + fresh
        };
        if after(&members) > max {
            members.retain(|id, _| !gone(id));
            if after(&members) > max {
                return Err(Refused::TooLarge);
            }
        }
        for id in remove {
            members.remove(*id);
        }
        for id in add {
            members.entry(Box::from(*id)).or_insert(offset);
        }
        self.touch(now);
        Ok(members.len())
    }

    /// Whether a change of `job` at `offset` is one to report: the job is a member, and was
    /// when the change happened.
    pub fn admits(&self, job: &str, offset: u64) -> bool {
        lock(&self.members)
            .get(job)
            .is_some_and(|added| *added < offset)
    }

    /// The ids of its members.
    pub fn members(&self) -> Vec<String> {
        self.members_with(|id| Some(id.to_owned()))
    }

    /// What `f` makes of each member's id, where it makes something.
    pub fn members_with<T>(&self, f: impl FnMut(&str) -> Option<T>) -> Vec<T> {
        lock(&self.members)
            .keys()
            .map(|id| &**id)
            .filter_map(f)
            .collect()
    }

    /// How many jobs it holds.
    pub fn len(&self) -> usize {
        lock(&self.members).len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts a stream reading the set until the guard drops.
    pub fn reading(self: &Arc<Self>) -> Reading {
        self.streams.fetch_add(1, Ordering::AcqRel);
        Reading(Arc::clone(self))
    }

    /// Turns true when the set is deleted or expires.
    pub fn deleted(&self) -> watch::Receiver<bool> {
        self.deleted.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(max_jobs: usize, max_sets: usize, per_client: usize) -> WatchSets {
        let mut s = crate::Settings::default().changes;
        s.max_watch_jobs = max_jobs;
        s.max_watch_sets = max_sets;
        s.max_watch_sets_per_client = per_client;
        s.watch_ttl = Duration::from_secs(60);
        WatchSets::new(&s)
    }

    #[tokio::test(start_paused = true)]
    async fn sets_are_bounded_per_client_and_in_all_and_private() {
        let sets = sets(10, 3, 2);
        let (a, b) = (ClientId::ApiKey, ClientId::peer([192, 0, 2, 1].into()));
        let now = Instant::now();
        let first = sets.create(a, now).unwrap();
        sets.create(a, now).unwrap();
        assert_eq!(sets.create(a, now).unwrap_err(), Refused::ClientFull);
        sets.create(b, now).unwrap();
        assert_eq!(sets.create(b, now).unwrap_err(), Refused::Full);
        assert!(sets.get(&first.id, b).is_none(), "another client's set");
        assert!(!sets.delete(&first.id, b));
        assert!(sets.get(&first.id, a).is_some());
        let mut deleted = first.deleted();
        assert!(sets.delete(&first.id, a));
        assert!(*deleted.borrow_and_update());
        assert!(sets.get(&first.id, a).is_none());
        sets.create(a, now).unwrap();
        assert_eq!(sets.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn members_join_at_an_offset_and_the_size_is_all_or_nothing() {
        let sets = sets(3, 10, 10);
        let set = sets.create(ClientId::ApiKey, Instant::now()).unwrap();
        let never_gone = |_: &str| false;
        let now = Instant::now();
        assert_eq!(set.change(&["a", "b"], &[], 5, 3, never_gone, now), Ok(2));
        // Changes of a member count only after it joined.
        assert!(!set.admits("a", 5));
        assert!(set.admits("a", 6));
        assert!(!set.admits("z", 6));
        // Adding again keeps its place; over the cap nothing changes.
        assert_eq!(set.change(&["a", "c"], &[], 9, 3, never_gone, now), Ok(3));
        assert!(set.admits("a", 6));
        assert_eq!(
            set.change(&["d"], &[], 10, 3, never_gone, now),
            Err(Refused::TooLarge)
        );
        assert_eq!(set.len(), 3);
        // Room by removing in the same change, or by members that are gone.
        assert_eq!(set.change(&["d"], &["a"], 10, 3, never_gone, now), Ok(3));
        assert_eq!(
            set.change(&["e"], &[], 11, 3, |id: &str| id == "b", now),
            Ok(3)
        );
        let mut members = set.members();
        members.sort();
        assert_eq!(members, ["c", "d", "e"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_set_expires_and_one_being_read_does_not() {
        let sets = sets(10, 10, 10);
        let idle = sets.create(ClientId::ApiKey, Instant::now()).unwrap();
        let read = sets.create(ClientId::ApiKey, Instant::now()).unwrap();
        let reading = read.reading();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(sets.sweep(Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(sets.sweep(Instant::now()), 1);
        assert!(sets.get(&idle.id, ClientId::ApiKey).is_none());
        assert!(*idle.deleted().borrow());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(sets.sweep(Instant::now()), 0, "a stream reads it");
        // Its TTL starts again when the last stream leaves.
        drop(reading);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(sets.sweep(Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(sets.sweep(Instant::now()), 1);
        assert!(sets.is_empty());
    }
}
