//! The tail: this replica's copy of the shared store, kept by reading the Stream.
//!
//! One task per replica. It connects on a connection of its own, learns the log's epoch and
//! head, and — the first time, and whenever its copy lost its place — starts the copy over
//! from Redis's hashes (every job with its marks, every watch set, the faults) at that head.
//! Then it reads the Stream from its offset with a blocking `XREAD` and applies each entry in
//! order: a job created, ended or gone to the store, a watch set's change to the watch sets,
//! faults to the injector. Offsets follow each other, so a gap (entries trimmed before this
//! replica read them, or lost by Redis) is seen, and answered by starting over — never by
//! going on with a hole.
//!
//! The copy is *live* while the tail reads: it says so ([`super::Redis::is_live`]), and the
//! replica answers from the copy only then. Any failure (a dropped connection, a call past
//! `store.redis_timeout`) makes it not live until the tail has reconnected, after a pause that
//! starts at `store.reconnect_min` and doubles up to `store.reconnect_max`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use super::record::{self, Fields, Record};
use super::{Clock, Op, Redis, Unavailable};
use crate::AppState;
use crate::settings::Faults;
use crate::sim::client::ClientId;
use crate::sim::store::Logged;
use crate::sim::watch::WatchChange;

/// How long one `XREAD` blocks when nothing comes.
const BLOCK: Duration = Duration::from_secs(1);

/// Most entries one `XREAD` returns.
const READ_COUNT: usize = 512;

/// Most keys one `SCAN` step asks for, and hashes read per round trip, while starting over.
const LOAD_BATCH: usize = 500;

/// Why the tail stopped following.
#[derive(Debug)]
enum Stop {
    /// Redis could not be reached, or did not answer in time.
    Unreachable,
    /// The Stream skipped offsets this copy needs: start over at once.
    Gap,
}

impl From<Unavailable> for Stop {
    fn from(_: Unavailable) -> Self {
        Stop::Unreachable
    }
}

/// Where the copy is.
#[derive(Debug, Default)]
struct Place {
    /// The epoch of the copy; `None` before its first start, or after a gap.
    epoch: Option<u64>,
    /// The last offset applied.
    last: u64,
}

/// Runs the tail until the task is aborted.
pub(crate) async fn run(state: AppState) {
    let Some(redis) = state.inner.redis.as_ref() else {
        return;
    };
    let settings = redis.settings().clone();
    let mut place = Place::default();
    let mut pause = settings.reconnect_min;
    loop {
        let stop = follow(&state, redis, &mut place).await;
        if redis.is_live() {
            // It was following: the backoff starts over from its floor.
            pause = settings.reconnect_min;
            state.inner.metrics.store_up(false);
            state.inner.metrics.store_reconnect();
            tracing::warn!(?stop, "lost the shared store; reconnecting");
        }
        redis.live.send_replace(false);
        match stop {
            Stop::Gap => {
                place.epoch = None;
            }
            Stop::Unreachable => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(settings.reconnect_max);
                continue;
            }
        }
        pause = settings.reconnect_min;
    }
}

/// Bounds `call` by `store.redis_timeout` (plus `extra`).
async fn timed<T>(
    redis: &Redis,
    extra: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(redis.settings().redis_timeout + extra, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "redis: the tail's call failed");
            Err(Unavailable)
        }
        Err(_) => Err(Unavailable),
    }
}

/// Connects, starts the copy over if it lost its place, and applies the Stream until
/// something fails.
async fn follow(state: &AppState, redis: &Redis, place: &mut Place) -> Stop {
    match follow_inner(state, redis, place).await {
        Ok(never) => match never {},
        Err(stop) => stop,
    }
}

async fn follow_inner(
    state: &AppState,
    redis: &Redis,
    place: &mut Place,
) -> Result<std::convert::Infallible, Stop> {
    let timeout = redis.settings().redis_timeout;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    let mut con = timed(
        redis,
        Duration::ZERO,
        redis
            .client
            .get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    let epoch = Redis::draw_epoch().to_string();
    let init = redis.run(Op::Init, &[&epoch]).await?;
    let epoch: u64 = init.first().and_then(|e| e.parse().ok()).unwrap_or(0);
    let head: u64 = init.get(1).and_then(|h| h.parse().ok()).unwrap_or(0);
    if place.epoch != Some(epoch) || head < place.last {
        start_over(state, redis, &mut con, epoch, head).await?;
        *place = Place {
            epoch: Some(epoch),
            last: head,
        };
        redis.applied.send_replace(head);
    }
    ensure_legacy(state, redis).await?;
    redis.live.send_replace(true);
    state.inner.metrics.store_up(true);
    tracing::info!(epoch, offset = place.last, "following the shared store");
    let stream = format!("{}:log", redis.prefix);
    loop {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(1000))
            .arg("STREAMS")
            .arg(&stream)
            .arg(format!("{}-0", place.last));
        let read = xread.query_async::<Option<StreamReadReply>>(&mut con);
        let Some(reply) = timed(redis, BLOCK, read).await? else {
            continue;
        };
        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
            let offset = entry
                .id
                .strip_suffix("-0")
                .and_then(|o| o.parse::<u64>().ok());
            if offset != Some(place.last + 1) {
                tracing::warn!(
                    id = %entry.id,
                    after = place.last,
                    "the shared log skipped entries; starting the copy over"
                );
                return Err(Stop::Gap);
            }
            let fields: Fields = entry
                .map
                .into_iter()
                .filter_map(|(k, v)| Some((k, redis::from_redis_value::<String>(v).ok()?)))
                .collect();
            place.last += 1;
            apply(state, redis, place.last, &fields);
            redis.applied.send_replace(place.last);
        }
    }
}

/// The legacy job exists once the copy has started: created by the first replica to start.
async fn ensure_legacy(state: &AppState, redis: &Redis) -> Result<(), Unavailable> {
    let legacy = &state.inner.settings.legacy;
    let record = Record::new(legacy.outcome, 1.0, None, None).to_json();
    let duration = u64::try_from(legacy.delay.as_micros()).unwrap_or(u64::MAX);
    let seed = super::clock::wall_us(SystemTime::now()).to_string();
    let reply = redis
        .run(
            Op::Legacy,
            &["0", &record, &duration.to_string(), seed.as_str()],
        )
        .await?;
    if let Some(offset) = reply.get(1).and_then(|o| o.parse().ok()) {
        state.inner.metrics.job_created();
        let _ = redis.applied(offset).await;
    }
    Ok(())
}

/// Applies one entry of the log at `offset` (see the module docs).
fn apply(state: &AppState, redis: &Redis, offset: u64, fields: &Fields) {
    let clock = &redis.clock;
    let at = fields
        .get("a")
        .and_then(|a| a.parse().ok())
        .map_or_else(tokio::time::Instant::now, |us| clock.instant(us));
    let store = &state.inner.store;
    let id = fields.get("j").cloned().unwrap_or_default();
    let logged = match fields.get("k").map(String::as_str) {
        Some("c") => match record::stored(&id, fields, clock) {
            Some(stored) => {
                if !stored.job.hang {
                    redis.finishes_at(record::created_us(fields).saturating_add(
                        u64::try_from(stored.job.duration.as_micros()).unwrap_or(u64::MAX),
                    ));
                }
                Logged::Created {
                    job: Box::new(stored.job),
                    client: stored.client,
                    expires: stored.expires,
                }
            }
            None => {
                tracing::warn!(job = %id, "an unreadable job in the shared log");
                Logged::Other
            }
        },
        Some("e") => Logged::Ended {
            canceled_at: fields
                .get("e")
                .and_then(|e| e.strip_prefix('c'))
                .and_then(|us| us.parse().ok())
                .map(Clock::system_time),
            expires: record::expiry(fields, clock),
            id,
        },
        Some("g") => Logged::Gone { id },
        Some("w") => {
            if let Some(change) = watch_change(fields, offset) {
                state
                    .inner
                    .watches
                    .apply(change, tokio::time::Instant::now());
            }
            Logged::Other
        }
        Some("f") => {
            match fields
                .get("f")
                .and_then(|f| serde_json::from_str::<Faults>(f).ok())
            {
                Some(faults) if faults.validate().is_ok() => state.inner.faults.set(faults),
                _ => tracing::warn!("unreadable faults in the shared log"),
            }
            Logged::Other
        }
        Some("o") => {
            if let Some(until) = fields.get("u").and_then(|u| u.parse().ok()) {
                state.inner.faults.outage_until(clock.instant(until));
            }
            Logged::Other
        }
        _ => Logged::Other,
    };
    store.apply(offset, at, logged);
}

/// A watch set's change, as its entry at `offset` says it.
fn watch_change(fields: &Fields, offset: u64) -> Option<WatchChange> {
    let ids = |name: &str| -> Vec<String> {
        fields
            .get(name)
            .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
            .unwrap_or_default()
    };
    let client = ClientId::from_key(fields.get("c")?)?;
    let id = fields.get("w")?.clone();
    Some(match fields.get("op").map(String::as_str) {
        Some("d") => WatchChange::Delete { id },
        kind => WatchChange::Change {
            id,
            client,
            create: kind == Some("c"),
            add: ids("add"),
            remove: ids("rm"),
            offset,
        },
    })
}

/// Starts the copy over at `head` of `epoch`: every job, watch set and fault setting Redis
/// holds now. Entries after `head` are applied by the tail afterwards; applying one whose
/// effect the copy already has changes nothing.
async fn start_over(
    state: &AppState,
    redis: &Redis,
    con: &mut MultiplexedConnection,
    epoch: u64,
    head: u64,
) -> Result<(), Unavailable> {
    let store = &state.inner.store;
    store.restart(epoch, head);
    state.inner.watches.clear();
    let clock = redis.clock;
    let prefix = &redis.prefix;
    let mut loaded = 0usize;
    for_each_hash(redis, con, &format!("{prefix}:job:*"), |key, fields| {
        let id = key.rsplit(':').next().unwrap_or_default();
        if let Some(stored) = record::stored(id, &fields, &clock) {
            if !stored.job.hang && stored.job.wakes_at().is_none() {
                redis.finishes_at(record::created_us(&fields).saturating_add(
                    u64::try_from(stored.job.duration.as_micros()).unwrap_or(u64::MAX),
                ));
            }
            store.load(stored.job, stored.client, stored.expires);
            loaded += 1;
        }
    })
    .await?;
    let mut sets: Vec<(String, ClientId)> = Vec::new();
    for_each_hash(redis, con, &format!("{prefix}:watch:*"), |key, fields| {
        let id = key.rsplit(':').next().unwrap_or_default().to_owned();
        if let Some(client) = fields.get("client").and_then(|c| ClientId::from_key(c)) {
            sets.push((id, client));
        }
    })
    .await?;
    for (id, client) in sets {
        let members: HashMap<String, u64> = timed(
            redis,
            Duration::ZERO,
            redis::cmd("HGETALL")
                .arg(format!("{prefix}:watchm:{id}"))
                .query_async(con),
        )
        .await?;
        state.inner.watches.apply(
            WatchChange::Load {
                id,
                client,
                members: members.into_iter().collect(),
            },
            tokio::time::Instant::now(),
        );
    }
    let (faults, outage): (Option<String>, Option<u64>) = timed(
        redis,
        Duration::ZERO,
        redis::pipe()
            .cmd("GET")
            .arg(format!("{prefix}:faults"))
            .cmd("GET")
            .arg(format!("{prefix}:outage"))
            .query_async(con),
    )
    .await?;
    if let Some(faults) = faults.and_then(|f| serde_json::from_str::<Faults>(&f).ok())
        && faults.validate().is_ok()
    {
        state.inner.faults.set(faults);
    }
    if let Some(until) = outage {
        state.inner.faults.outage_until(clock.instant(until));
    }
    tracing::info!(epoch, head, jobs = loaded, "copied the shared store");
    Ok(())
}

/// Calls `f` with each hash whose key matches `pattern`, a batch per round trip.
async fn for_each_hash(
    redis: &Redis,
    con: &mut MultiplexedConnection,
    pattern: &str,
    mut f: impl FnMut(&str, Fields),
) -> Result<(), Unavailable> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = timed(
            redis,
            Duration::ZERO,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(LOAD_BATCH)
                .query_async(con),
        )
        .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("HGETALL").arg(key);
            }
            let hashes: Vec<Fields> = timed(redis, Duration::ZERO, pipe.query_async(con)).await?;
            for (key, fields) in keys.iter().zip(hashes) {
                if !fields.is_empty() {
                    f(key, fields);
                }
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_entry_reads_as_its_change() {
        let fields: Fields = [
            ("k", "w"),
            ("w", "w-1"),
            ("c", "k"),
            ("op", "c"),
            ("add", "[\"j-1\",\"j-2\"]"),
            ("rm", "[]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        match watch_change(&fields, 9) {
            Some(WatchChange::Change {
                id,
                create,
                add,
                remove,
                offset,
                ..
            }) => {
                assert_eq!((id.as_str(), create, offset), ("w-1", true, 9));
                assert_eq!(add, ["j-1", "j-2"]);
                assert!(remove.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
