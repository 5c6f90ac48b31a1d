//! The Redis backend: replicas that share their jobs, their change log and their limits.
//!
//! Several simulators pointed at one Redis (`store.backend = "redis"`) behave as one: a job
//! created on one is read, long-polled, streamed and canceled on any other, and the change
//! stream's cursors resume anywhere. The design, in short (`docs/scale-out.md` has the page):
//!
//! * **Redis decides, with one clock.** Every change of state is a Lua script run atomically in
//!   Redis, timed by Redis's own `TIME`: creating jobs (with the store's caps and HeyGen's
//!   running jobs), a cancel racing a job's natural end, the natural ends themselves, expiry,
//!   watch sets, `Idempotency-Key`s, the rate limit, the faults. A decision is taken once, by one
//!   clock, whatever replica asked — so replicas need not agree on time to agree on state.
//! * **The Stream is the replicated log.** Every script that changes a job appends an entry to
//!   one Redis Stream, whose entry id `N-0` is offset `N` of the change log: the cursor
//!   `<epoch>:<N>` means the same on every replica (the epoch lives beside the Stream). Watch
//!   set changes and fault settings go through it too, so that every replica sees them in the
//!   log's order. The Stream is bounded by `changes.history` (`MAXLEN`) and
//!   `changes.history_age` (trimmed by the sweeper); jobs live in hashes with their TTL.
//! * **Each replica keeps a copy and reads from it.** One task per replica (`tail`) tails the
//!   Stream with a blocking `XREAD` on a connection of its own and applies each entry to the
//!   replica's in-memory store, its watch sets and its faults. Status reads, snapshots, change
//!   streams and long-polls are answered from that copy, as with the memory backend, and are
//!   woken by it: a job created on replica A and held on replica B wakes within milliseconds of
//!   its end, when B applies the `ended` entry. No pub/sub, no keyspace notifications: the
//!   Stream is the only channel, and a replica that falls behind reads on from its offset.
//! * **Read your writes.** A request that changed something waits (within `store.redis_timeout`)
//!   for the replica's copy to reach the entry it appended before it answers; a replica asked
//!   for a job or a cursor it does not know yet first catches up with the Stream's head.
//! * **Redis down.** Every call has a timeout (`store.redis_timeout`). While the tail cannot
//!   read the Stream, the copy may be stale, so the replica answers every API request `503
//!   store_unavailable` with `Retry-After` (`store.retry_after`) rather than a wrong status;
//!   the tail reconnects with a floored, doubling backoff (`store.reconnect_min` ..
//!   `reconnect_max`) and resumes from its offset. If Redis lost entries (restarted without
//!   persistence, or from an older snapshot), the copy starts over from what Redis holds, and a
//!   stream resuming from a cursor Redis no longer has gets an explicit reset.
//!
//! The client is the `redis` crate: maintained, tokio-native, with a `ConnectionManager` that
//! reconnects by itself for the requests' scripts; the tail's blocking `XREAD` runs on a
//! multiplexed connection of its own, so that it never delays a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, watch};

use crate::settings::{Settings, StoreSettings};

pub(crate) mod clock;
pub(crate) mod record;
pub(crate) mod tail;

pub(crate) use clock::Clock;

/// The shared store could not be reached (or did not answer within `store.redis_timeout`): the
/// request is answered `503 store_unavailable` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared store (Redis) cannot be reached")]
pub struct Unavailable;

/// The Lua scripts, each with the common prelude.
#[derive(Debug)]
struct Scripts {
    init: Script,
    create: Script,
    legacy: Script,
    cancel: Script,
    finish: Script,
    sweep: Script,
    rate: Script,
    idempotency: Script,
    watch: Script,
    faults: Script,
}

impl Scripts {
    fn new() -> Self {
        let with = |body: &str| Script::new(&format!("{}\n{body}", include_str!("lua/common.lua")));
        Scripts {
            init: with(include_str!("lua/init.lua")),
            create: with(include_str!("lua/create.lua")),
            legacy: with(include_str!("lua/legacy.lua")),
            cancel: with(include_str!("lua/cancel.lua")),
            finish: with(include_str!("lua/finish.lua")),
            sweep: with(include_str!("lua/sweep.lua")),
            rate: with(include_str!("lua/ratelimit.lua")),
            idempotency: with(include_str!("lua/idempotency.lua")),
            watch: with(include_str!("lua/watch.lua")),
            faults: with(include_str!("lua/faults.lua")),
        }
    }
}

/// Which script to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// The log's epoch and head.
    Init,
    /// Jobs created.
    Create,
    /// The legacy job created again.
    Legacy,
    /// A cancel.
    Cancel,
    /// Natural ends that are due.
    Finish,
    /// Expiries that are due, and the log's age bound.
    Sweep,
    /// A token of the rate limit.
    Rate,
    /// An `Idempotency-Key`.
    Idempotency,
    /// A watch set.
    Watch,
    /// Faults and outages.
    Faults,
}

/// This replica's handle on Redis: the connection for requests, the scripts, and what the
/// tail reports (whether it reads the Stream, how far its copy got).
#[derive(Debug)]
pub struct Redis {
    /// Opens the tail's own connection.
    client: redis::Client,
    /// Requests' scripts; reconnects by itself.
    manager: ConnectionManager,
    /// `store.redis_prefix`.
    prefix: String,
    /// `changes.history`: the Stream's `MAXLEN`.
    history: usize,
    /// `[store]`.
    settings: StoreSettings,
    /// This replica's instants of Redis's timestamps.
    pub(crate) clock: Clock,
    scripts: Scripts,
    /// Whether the tail reads the Stream: while it does not, the copy may be stale.
    live: watch::Sender<bool>,
    /// The last offset the copy has applied.
    applied: watch::Sender<u64>,
    /// When (µs, Redis's clock) the next natural end is due, as the finisher last heard.
    next_finish: AtomicU64,
    /// Woken when the tail applies a job that ends before `next_finish`.
    finishes_moved: Notify,
}

impl Redis {
    /// A handle for `settings` (no connection is opened yet). Needs a Tokio runtime.
    pub(crate) fn new(settings: &Settings) -> Result<Self, crate::ConfigError> {
        let store = &settings.store;
        let bad = |message: &str| crate::ConfigError::Invalid {
            key: "store.redis_url",
            message: message.to_owned(),
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(crate::ConfigError::Invalid {
                key: "store.backend",
                message: "the Redis backend starts inside a Tokio runtime".into(),
            });
        }
        let client =
            redis::Client::open(store.redis_url.as_str()).map_err(|_| bad("not a Redis URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(store.redis_timeout))
            .set_response_timeout(Some(store.redis_timeout))
            .set_min_delay(store.reconnect_min)
            .set_max_delay(store.reconnect_max)
            .set_number_of_retries(2);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|_| bad("cannot be used"))?;
        Ok(Redis {
            client,
            manager,
            prefix: store.redis_prefix.clone(),
            history: settings.changes.history,
            settings: store.clone(),
            clock: Clock::now(),
            scripts: Scripts::new(),
            live: watch::channel(false).0,
            applied: watch::channel(0).0,
            next_finish: AtomicU64::new(u64::MAX),
            finishes_moved: Notify::new(),
        })
    }

    /// `[store]`.
    pub(crate) fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Whether the tail reads the Stream now (the copy is current).
    pub fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// Resolves once the tail reads the Stream.
    pub(crate) async fn until_live(&self) {
        let _ = self.live.subscribe().wait_for(|l| *l).await;
    }

    /// Runs `op` with `args` (after the prefix and the history bound, which every script
    /// takes), within `store.redis_timeout`.
    pub(crate) async fn run(&self, op: Op, args: &[&str]) -> Result<Vec<String>, Unavailable> {
        let s = &self.scripts;
        let script = match op {
            Op::Init => &s.init,
            Op::Create => &s.create,
            Op::Legacy => &s.legacy,
            Op::Cancel => &s.cancel,
            Op::Finish => &s.finish,
            Op::Sweep => &s.sweep,
            Op::Rate => &s.rate,
            Op::Idempotency => &s.idempotency,
            Op::Watch => &s.watch,
            Op::Faults => &s.faults,
        };
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.prefix).arg(self.history);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut con = self.manager.clone();
        match tokio::time::timeout(
            self.settings.redis_timeout,
            invocation.invoke_async::<Vec<String>>(&mut con),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, ?op, "redis call failed");
                Err(Unavailable)
            }
            Err(_) => {
                tracing::debug!(?op, "redis call timed out");
                Err(Unavailable)
            }
        }
    }

    /// The log's head in Redis now.
    pub(crate) async fn head(&self) -> Result<u64, Unavailable> {
        let mut con = self.manager.clone();
        let key = format!("{}:offset", self.prefix);
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let get = cmd.query_async::<Option<u64>>(&mut con);
        match tokio::time::timeout(self.settings.redis_timeout, get).await {
            Ok(Ok(head)) => Ok(head.unwrap_or(0)),
            _ => Err(Unavailable),
        }
    }

    /// Waits (within `store.redis_timeout`) until the copy has applied `offset`.
    pub(crate) async fn applied(&self, offset: u64) -> Result<(), Unavailable> {
        let mut rx = self.applied.subscribe();
        match tokio::time::timeout(self.settings.redis_timeout, rx.wait_for(|a| *a >= offset)).await
        {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Unavailable),
        }
    }

    /// Waits until the copy has applied everything Redis's log holds now: what another replica
    /// did a moment ago is then here too.
    pub(crate) async fn catch_up(&self) -> Result<(), Unavailable> {
        let head = self.head().await?;
        self.applied(head).await
    }

    /// Tells the finisher that a job ends at `us` (Redis's clock): it re-arms if that is sooner
    /// than what it waits for.
    pub(crate) fn finishes_at(&self, us: u64) {
        if us < self.next_finish.load(Ordering::Acquire) {
            self.next_finish.store(us, Ordering::Release);
            self.finishes_moved.notify_one();
        }
    }

    /// The finisher: logs every job's natural end at its instant (in Redis, once, whichever
    /// replica gets there first), then counts and delivers what this replica ended. Runs until
    /// the task is aborted.
    pub(crate) async fn finish_jobs(state: crate::AppState) {
        let Some(redis) = state.inner.redis.as_ref() else {
            return;
        };
        let mut pause = redis.settings.reconnect_min;
        loop {
            match redis.run(Op::Finish, &["1024"]).await {
                Ok(reply) => {
                    pause = redis.settings.reconnect_min;
                    let due: usize = reply.first().and_then(|d| d.parse().ok()).unwrap_or(0);
                    let next = reply
                        .get(1)
                        .and_then(|n| n.parse::<f64>().ok())
                        .map_or(u64::MAX, |n| n as u64);
                    let last: u64 = reply.get(2).and_then(|l| l.parse().ok()).unwrap_or(0);
                    if reply.len() > 3 && redis.applied(last).await.is_ok() {
                        state.ended_here(&reply[3..]);
                    }
                    if due >= 1024 {
                        continue;
                    }
                    redis.next_finish.store(next, Ordering::Release);
                    let moved = redis.finishes_moved.notified();
                    tokio::pin!(moved);
                    moved.as_mut().enable();
                    let at = if next == u64::MAX {
                        None
                    } else {
                        // A millisecond at least: Redis's clock, not ours, says when it is due.
                        Some(
                            redis
                                .clock
                                .instant(next)
                                .max(tokio::time::Instant::now() + Duration::from_millis(1)),
                        )
                    };
                    tokio::select! {
                        () = sleep_until(at) => {}
                        () = moved => {}
                    }
                }
                Err(Unavailable) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(redis.settings.reconnect_max);
                }
            }
        }
    }

    /// A fresh epoch for a log that has none: never 0.
    pub(crate) fn draw_epoch() -> u64 {
        rand::rng().random_range(1..1u64 << 53)
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
