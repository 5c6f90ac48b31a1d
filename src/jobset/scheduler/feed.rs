//! The set's change stream: jobs join a watch set, one stream reports their changes, a
//! watchdog drops it when it goes silent (see the `feed` module for why).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt, stream};
use tokio::time::Instant;
use url::Url;

use super::{Done, Scheduler};
use crate::jobset::JobKey;
use crate::jobset::budget::Grant;
use crate::jobset::feed::{self, Change, MAX_FAILURES, MAX_REMOVALS, MAX_WATCH_BODY, WatchAnswer};
use crate::jobset::tracked::{Membership, Stage};
use crate::poll::MIN_PAUSE;
use crate::telemetry;
use crate::transport::RequestKind;
use crate::transport::signals::Signals;
use crate::transport::sse::{self, SseEvent, StreamError};
use crate::wait::FallbackReason;
use crate::wait::Wire;
use crate::wait::ledger::Answer;
use crate::wait::source::Subscribed;
use crate::wait::wire::{Exchanged, ManyRequest};

/// An event of the change stream (tagged with its connection); `None` when it ended.
pub(super) type FeedItem = (u32, Option<Result<SseEvent, StreamError>>);

/// The longest pause before the stream or a watch request is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether the change stream is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FeedState {
    /// Not tried yet, or working.
    On,
    /// Given up for the set's life (the server has none, refused it, or broke its rules).
    Off,
}

/// The connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Closed,
    Opening,
    Open,
}

/// The set's change stream and its watch set.
pub(super) struct Feed {
    pub(super) state: FeedState,
    /// Where the server's routes are (none: no stream).
    base: Option<Url>,
    /// The watch set, once created.
    watch: Option<String>,
    /// The last cursor received: a resume continues after it.
    cursor: Option<String>,
    /// The jobs followed (joining or members), by server id.
    members: HashMap<Box<str>, JobKey>,
    /// Ids to add to the watch set, oldest first.
    to_add: VecDeque<Box<str>>,
    /// Ids of jobs no longer waited for, removed with the next change of the set.
    to_remove: Vec<Box<str>>,
    /// A watch set request is out.
    busy: bool,
    connection: Connection,
    /// The events of the open connection.
    pub(super) events: Option<BoxStream<'static, FeedItem>>,
    /// The open connection's number: events of an older one are stale.
    generation: u32,
    /// When the connection last said something.
    heard: Instant,
    /// The open connection has said something since it opened: until then the (short)
    /// first-event bound applies, after it the silence bound.
    spoken: bool,
    /// Snapshot events received since the last `reset` (or fresh start), and when it began,
    /// while one is being sent.
    snapshot: Option<(usize, Instant)>,
    /// The open connection has made progress (a snapshot's end, a change, a bookmark).
    progressed: bool,
    /// Connections opened so far: every one after the first is a resume.
    opens: u32,
    /// Failures in a row without progress.
    failures: u8,
    /// Nothing is sent before this.
    retry_at: Option<Instant>,
    /// Members last added to the gauge.
    gauged: usize,
    /// Ids the watch set holds, as far as the set knows (jobs that ended stay in it until
    /// a change removes them): a snapshot is at most about this long.
    watched: usize,
}

impl Feed {
    pub(super) fn new(base: Option<Url>, enabled: bool) -> Self {
        Feed {
            state: if enabled && base.is_some() {
                FeedState::On
            } else {
                FeedState::Off
            },
            base,
            watch: None,
            cursor: None,
            members: HashMap::new(),
            to_add: VecDeque::new(),
            to_remove: Vec::new(),
            busy: false,
            connection: Connection::Closed,
            events: None,
            generation: 0,
            heard: Instant::now(),
            spoken: false,
            snapshot: None,
            progressed: false,
            opens: 0,
            failures: 0,
            retry_at: None,
            gauged: 0,
            watched: 0,
        }
    }

    /// The stream, as a future of its next item (pending for ever when there is none).
    pub(super) async fn next(events: &mut Option<BoxStream<'static, FeedItem>>) -> FeedItem {
        match events {
            Some(events) => match events.next().await {
                Some(item) => item,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// The members gauge's change since it was last reported.
    pub(super) fn gauge(&mut self) -> f64 {
        let delta = self.members.len() as f64 - self.gauged as f64;
        self.gauged = self.members.len();
        delta
    }

    /// What the gauges still count for this feed (taken back when the set stops).
    pub(super) fn counted(&self) -> (f64, f64) {
        let open = if self.connection == Connection::Open {
            1.0
        } else {
            0.0
        };
        (open, self.gauged as f64)
    }

    fn url(&self, path: &str) -> Option<Url> {
        feed::route(self.base.as_ref()?, path)
    }

    /// The request that deletes the watch set, when there is one: sent as the set stops, so
    /// that it does not hold one of the server's sets until it expires.
    pub(super) fn farewell(&self) -> Option<ManyRequest> {
        let watch = self.watch.as_ref()?;
        Some(ManyRequest {
            method: http::Method::DELETE,
            url: self.url(&format!("v1/watches/{watch}"))?,
            body: None,
            kind: RequestKind::Watch,
        })
    }
}

impl<W: Wire> Scheduler<W> {
    /// Whether a ready job is followed on the stream instead of looking for itself: then it
    /// joins (or stays), and waits for its stream events, its last look or its stall check.
    pub(super) fn feed_join(&mut self, key: JobKey) -> bool {
        if self.feed.state == FeedState::Off {
            return false;
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        if job.check {
            return false;
        }
        match job.member {
            Membership::Member | Membership::Joining => {}
            Membership::Eligible => {
                let Some(id) = job.feed_id.clone() else {
                    return false;
                };
                job.member = Membership::Joining;
                self.feed.members.insert(id.clone(), key);
                self.feed.to_add.push_back(id);
            }
            Membership::Out => return false,
        }
        job.stage = Stage::Following;
        self.arm(key);
        true
    }

    /// A job no longer waited for leaves the stream's books.
    pub(super) fn feed_leave(&mut self, id: Option<&str>, member: Membership) {
        let Some(id) = id else {
            return;
        };
        if matches!(member, Membership::Joining | Membership::Member) {
            self.feed.members.remove(id);
            if member == Membership::Member && self.feed.to_remove.len() < MAX_REMOVALS {
                self.feed.to_remove.push(id.into());
            }
        }
    }

    /// How long the open connection may say nothing: a fresh connection must speak within
    /// the first-event bound (the server sends a snapshot or, on a resume, a bookmark at
    /// once), an established one within the silence bound.
    fn quiet_bound(&self) -> std::time::Duration {
        if self.feed.spoken {
            self.options.silence_bound()
        } else {
            self.options.first_event_bound()
        }
    }

    /// The next instant the feed needs the scheduler: a retry, the watchdog.
    pub(super) fn feed_wake(&self) -> Option<Instant> {
        if self.feed.state == FeedState::Off {
            return None;
        }
        let bound = self.options.silence_bound();
        let watchdog = (self.feed.connection == Connection::Open)
            .then(|| self.feed.heard + self.quiet_bound());
        let snapshot = self.feed.snapshot.map(|(_, since)| since + 2 * bound);
        [self.feed.retry_at, watchdog, snapshot]
            .into_iter()
            .flatten()
            .min()
    }

    /// The watchdog, and whatever is due: a watch set request, the stream's (re)opening.
    pub(super) fn feed_turn(&mut self, now: Instant) {
        if self.feed.state == FeedState::Off {
            return;
        }
        if self.feed.connection == Connection::Open
            && now.saturating_duration_since(self.feed.heard) >= self.quiet_bound()
        {
            tracing::debug!("change stream silent past its bound; resuming");
            telemetry::silent_drop(RequestKind::Changes);
            self.close_stream();
            if self.failed(now) {
                return;
            }
            // The silence paced this try already: resume at once — the floor counts from the
            // last sign of life (the opening, for a connection that never spoke) — to keep
            // the detection delay near the bound (it still counts towards giving the stream
            // up).
            self.feed.retry_at = Some((self.feed.heard + MIN_PAUSE).max(now));
        }
        let bound = self.options.silence_bound();
        if self
            .feed
            .snapshot
            .is_some_and(|(_, since)| now.saturating_duration_since(since) >= 2 * bound)
        {
            tracing::debug!("change stream snapshot never ended; starting over");
            self.hostile(now);
            if self.feed.state == FeedState::Off {
                return;
            }
        }
        if self.feed.retry_at.is_some_and(|at| at > now) {
            return;
        }
        self.feed.retry_at = None;
        let removals_due = self.feed.watch.is_some() && self.feed.to_remove.len() >= MAX_REMOVALS;
        if !self.feed.busy && (!self.feed.to_add.is_empty() || removals_due) {
            self.change_watch(now);
        }
        if self.feed.connection == Connection::Closed
            && self.feed.watch.is_some()
            && !self.feed.members.is_empty()
        {
            self.open_stream(now);
        } else if self.feed.connection == Connection::Open && self.feed.members.is_empty() {
            // Nobody to follow: the connection is not held for nothing.
            self.close_stream();
        }
    }

    /// A token for a feed request, or `false` (the budget wakes the scheduler).
    fn token(&mut self, now: Instant) -> bool {
        match self.ctx.budget.lock().acquire(now) {
            Grant::Now => true,
            Grant::After(wait) => {
                let at = now.checked_add(wait);
                self.feed.retry_at = at;
                false
            }
        }
    }

    /// Creates the watch set, or changes it: [`MAX_WATCH_BODY`] bytes of ids per request.
    fn change_watch(&mut self, now: Instant) {
        if !self.token(now) {
            return;
        }
        let add = take_ids(&mut self.feed.to_add, MAX_WATCH_BODY);
        let (method, url, body, creating) = match &self.feed.watch {
            None => (
                http::Method::POST,
                self.feed.url("v1/watches"),
                serde_json::json!({ "jobs": add }),
                true,
            ),
            Some(watch) => {
                let room = MAX_WATCH_BODY.saturating_sub(body_size(&add));
                let mut removals: VecDeque<Box<str>> = self.feed.to_remove.drain(..).collect();
                let remove = take_ids(&mut removals, room);
                self.feed.to_remove.extend(removals);
                self.feed.watched = self.feed.watched.saturating_sub(remove.len());
                (
                    http::Method::PATCH,
                    self.feed.url(&format!("v1/watches/{watch}")),
                    serde_json::json!({ "add": add, "remove": remove }),
                    false,
                )
            }
        };
        let Some(url) = url else {
            self.feed_off(now, "no route");
            return;
        };
        self.feed.busy = true;
        let request = ManyRequest {
            method,
            url,
            body: Some(body),
            kind: RequestKind::Watch,
        };
        let exchange = self.ctx.wire.exchange(request);
        self.in_flight.push(
            async move {
                Done::Watch {
                    ids: add,
                    creating,
                    sent: now,
                    result: exchange.await,
                }
            }
            .boxed(),
        );
    }

    fn open_stream(&mut self, now: Instant) {
        let Some(mut url) = self.feed.url("v1/events") else {
            self.feed_off(now, "no route");
            return;
        };
        let Some(watch) = self.feed.watch.clone() else {
            return;
        };
        if !self.token(now) {
            return;
        }
        url.query_pairs_mut().append_pair("watch", &watch);
        self.feed.connection = Connection::Opening;
        self.feed.generation = self.feed.generation.wrapping_add(1);
        let generation = self.feed.generation;
        let resumed = self.feed.cursor.is_some() && self.feed.opens > 0;
        let fresh = self.feed.cursor.is_none();
        self.feed.opens = self.feed.opens.saturating_add(1);
        let follow = self.ctx.wire.follow(&url, self.feed.cursor.clone());
        self.in_flight.push(
            async move {
                Done::Follow {
                    generation,
                    resumed,
                    fresh,
                    sent: now,
                    result: follow.await,
                }
            }
            .boxed(),
        );
    }

    fn close_stream(&mut self) {
        if self.feed.connection == Connection::Open {
            telemetry::streams_open(-1.0);
            self.held = self.held.saturating_sub(1);
        }
        self.feed.events = None;
        self.feed.connection = Connection::Closed;
        self.feed.snapshot = None;
        self.feed.generation = self.feed.generation.wrapping_add(1);
    }

    /// One failure more; `true` when it was one too many (the stream is given up).
    fn failed(&mut self, now: Instant) -> bool {
        self.feed.failures = self.feed.failures.saturating_add(1);
        if self.feed.failures >= MAX_FAILURES {
            self.feed_off(now, "failed repeatedly");
            return true;
        }
        let backoff = (MIN_PAUSE * (1u32 << self.feed.failures.min(8))).min(MAX_BACKOFF);
        self.feed.retry_at = Some(now + backoff);
        false
    }

    /// The stream is given up: every job it followed waits by other means, from now.
    pub(super) fn feed_off(&mut self, now: Instant, why: &'static str) {
        if self.feed.state == FeedState::Off {
            return;
        }
        tracing::info!(reason = why, "change stream given up; waiting job by job");
        telemetry::fallback(
            crate::wait::Mechanism::Sse,
            FallbackReason::Refused.as_str(),
        );
        self.close_stream();
        self.feed.state = FeedState::Off;
        self.feed.to_add.clear();
        self.feed.to_remove.clear();
        let keys: Vec<JobKey> = self.feed.members.drain().map(|(_, key)| key).collect();
        for key in keys {
            self.release(key, now);
        }
    }

    /// A job the stream will not follow looks for itself from now.
    fn release(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if let Some(id) = &job.feed_id {
            self.feed.members.remove(id);
        }
        job.member = Membership::Out;
        if job.stage == Stage::Following {
            let _ = now;
            self.make_ready(key);
        }
    }

    /// A status document of a followed job, from the stream or a watch answer.
    fn feed_status(&mut self, id: &str, data: String, now: Instant) {
        let Some(&key) = self.feed.members.get(id) else {
            return;
        };
        if let Some(job) = self.jobs.get_mut(&key) {
            job.member = Membership::Member;
        }
        let event = SseEvent {
            event: "status".into(),
            data,
            id: None,
            retry: None,
        };
        self.take(key, Answer::Event(event), now);
    }

    pub(super) fn watch_answered(
        &mut self,
        ids: Vec<Box<str>>,
        creating: bool,
        sent: Instant,
        result: Exchanged,
    ) {
        let now = Instant::now();
        self.feed.busy = false;
        if self.feed.state == FeedState::Off {
            return;
        }
        let (status, headers, body) = match result {
            Exchanged::Answered {
                status,
                headers,
                body,
                ..
            } => (status, headers, body),
            Exchanged::Unsupported => return self.feed_off(now, "not supported by the wire"),
            Exchanged::Unreachable { .. } => {
                self.requeue(ids);
                self.failed(now);
                return;
            }
        };
        self.listen(Signals::read(status, &headers), sent, now);
        match status.as_u16() {
            200 | 201 => {}
            404 | 405 | 501 if creating => return self.feed_off(now, "no change stream"),
            404 => {
                // The set expired: make it again, with every job followed.
                tracing::debug!("watch set gone; creating it again");
                self.feed.watch = None;
                self.feed.cursor = None;
                self.close_stream();
                self.feed.to_add = self.feed.members.keys().cloned().collect();
                if self.failed(now) {
                    return;
                }
                return;
            }
            401 | 403 => return self.feed_off(now, "refused"),
            422 => {
                // Too many for one set: those wait by other means.
                for id in ids {
                    if let Some(&key) = self.feed.members.get(&id) {
                        self.release(key, now);
                    }
                }
                return;
            }
            _ => {
                self.requeue(ids);
                if let Some(pause) = crate::transport::answer::throttled(status, &headers) {
                    self.feed.retry_at =
                        Some(now + pause.unwrap_or(Duration::from_secs(1)).max(MIN_PAUSE));
                } else {
                    self.failed(now);
                }
                return;
            }
        }
        let Some(answer) = WatchAnswer::parse(&body) else {
            self.requeue(ids);
            self.failed(now);
            return;
        };
        if self.feed.watch.is_none() {
            self.feed.watch = Some(answer.id.clone());
            self.feed.watched = 0;
        }
        self.feed.watched = self.feed.watched.saturating_add(answer.jobs.len());
        if self.feed.connection == Connection::Closed && (creating || self.feed.cursor.is_none()) {
            self.feed.cursor = Some(answer.cursor.clone());
        }
        let mut answered = std::collections::HashSet::new();
        for status in &answer.jobs {
            if let Some(id) = feed::status_id(status) {
                answered.insert(id.to_owned());
                self.feed_status(id, status.to_string(), now);
            }
        }
        for id in ids {
            if !answered.contains(&*id)
                && let Some(&key) = self.feed.members.get(&id)
            {
                // Not found (unknown, expired, another client's), or not reported: the job
                // is read on its own, which says what became of it.
                self.release(key, now);
            }
        }
        self.feed_turn(now);
    }

    fn requeue(&mut self, ids: Vec<Box<str>>) {
        for id in ids.into_iter().rev() {
            if self.feed.members.contains_key(&id) {
                self.feed.to_add.push_front(id);
            }
        }
    }

    pub(super) fn follow_answered(
        &mut self,
        generation: u32,
        (resumed, fresh): (bool, bool),
        sent: Instant,
        result: (Subscribed, Option<Signals>),
    ) {
        let now = Instant::now();
        let (subscribed, signals) = result;
        if let Some(signals) = signals {
            self.listen(signals, sent, now);
        }
        if generation != self.feed.generation || self.feed.state == FeedState::Off {
            return;
        }
        self.feed.connection = Connection::Closed;
        match subscribed {
            Subscribed::Stream { events, .. } => {
                if resumed {
                    telemetry::stream_resumed();
                } else {
                    telemetry::stream_counters();
                }
                if fresh {
                    self.feed.snapshot = Some((0, now));
                }
                self.feed.progressed = false;
                telemetry::streams_open(1.0);
                self.held += 1;
                self.feed.connection = Connection::Open;
                self.feed.heard = now;
                self.feed.spoken = false;
                let tagged = events
                    .map(move |event| (generation, Some(event)))
                    .chain(stream::once(async move { (generation, None) }));
                self.feed.events = Some(tagged.boxed());
            }
            Subscribed::Fallback { reason, .. } => match reason {
                FallbackReason::NotSupported if self.feed.watch.is_some() => {
                    // The set is gone (or the server has no stream: its creation says so).
                    self.feed.watch = None;
                    self.feed.cursor = None;
                    self.feed.to_add = self.feed.members.keys().cloned().collect();
                    self.failed(now);
                }
                FallbackReason::NotSupported => self.feed_off(now, "no change stream"),
                _ => {
                    // A cursor the server refuses (`400`) must not be sent again: start over
                    // with the whole snapshot, which loses nothing.
                    if reason != FallbackReason::Refused && self.feed.cursor.take().is_some() {
                        telemetry::stream_reset("restart");
                    }
                    self.failed(now);
                }
            },
            Subscribed::Failed { .. } => self.feed_off(now, "refused"),
        }
    }

    /// An event of the change stream (or its end).
    pub(super) fn fed(&mut self, (generation, item): FeedItem) {
        if generation != self.feed.generation || self.feed.state == FeedState::Off {
            return;
        }
        let now = Instant::now();
        let event = match item {
            None => {
                // The server ended it (its lifetime, a shutdown): resume at once — unless it
                // ended before saying anything useful, which counts as a failure.
                let progressed = self.feed.progressed;
                self.close_stream();
                if progressed {
                    self.feed.retry_at = Some(now + MIN_PAUSE);
                } else {
                    self.failed(now);
                }
                return;
            }
            Some(Err(error)) => {
                tracing::debug!(error = %error, "change stream failed");
                self.close_stream();
                if sse::oversized(&error) {
                    self.feed_off(now, "oversized event");
                } else {
                    self.failed(now);
                }
                return;
            }
            Some(Ok(event)) => event,
        };
        let change = match feed::read(&event) {
            Ok(change) => change,
            Err(unreadable) => {
                tracing::debug!(error = %unreadable, "unreadable change stream event; reconnecting");
                self.hostile(now);
                return;
            }
        };
        if change != Change::Other {
            // Only what the contract names is a sign of life: junk is silence.
            self.feed.heard = now;
            self.feed.spoken = true;
        }
        let keep = |cursor: Option<String>, feed: &mut Feed| {
            if let Some(cursor) = cursor {
                feed.cursor = Some(cursor);
            }
        };
        match change {
            Change::Snapshot { job } => {
                let limit = 2 * self.feed.members.len().max(self.feed.watched) + 16;
                match &mut self.feed.snapshot {
                    Some((n, _)) if *n < limit => *n += 1,
                    _ => {
                        tracing::debug!("change stream snapshot out of place or too long");
                        return self.hostile(now);
                    }
                }
                self.feed_status(&job, event.data, now);
            }
            Change::SnapshotEnd { cursor } => {
                self.feed.snapshot = None;
                self.feed.failures = 0;
                self.feed.progressed = true;
                keep(cursor, &mut self.feed);
            }
            Change::Status { job, cursor } => {
                if self.feed.snapshot.is_some() {
                    return self.hostile(now);
                }
                self.feed.failures = 0;
                self.feed.progressed = true;
                keep(cursor, &mut self.feed);
                self.feed_status(&job, event.data, now);
            }
            Change::Gone { job, cursor } => {
                keep(cursor, &mut self.feed);
                if let Some(&key) = self.feed.members.get(job.as_str()) {
                    self.release(key, now);
                }
            }
            Change::Bookmark { cursor, .. } => {
                if self.feed.snapshot.is_some() {
                    return self.hostile(now);
                }
                self.feed.failures = 0;
                self.feed.progressed = true;
                keep(cursor, &mut self.feed);
            }
            Change::Reset { reason } => {
                tracing::debug!(reason, "change stream reset; resyncing from its snapshot");
                telemetry::stream_reset(reason);
                self.feed.cursor = None;
                self.feed.snapshot = Some((0, now));
            }
            Change::Other => {}
        }
    }

    /// The stream broke the wire contract: dropped, counted as a failure, and reopened
    /// without its cursor (a fresh snapshot loses nothing).
    fn hostile(&mut self, now: Instant) {
        self.close_stream();
        self.feed.cursor = None;
        self.failed(now);
    }
}

/// As many ids from the front of `ids` as fit in `bytes` of a JSON array (at least one).
fn take_ids(ids: &mut VecDeque<Box<str>>, bytes: usize) -> Vec<Box<str>> {
    let mut taken = Vec::new();
    let mut size = 0;
    while let Some(id) = ids.front() {
        size += id.len() + 3;
        if size > bytes && !taken.is_empty() {
            break;
        }
        taken.extend(ids.pop_front());
    }
    taken
}

/// The bytes `ids` take in a JSON array.
fn body_size(ids: &[Box<str>]) -> usize {
    ids.iter().map(|id| id.len() + 3).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_requests_take_ids_up_to_their_byte_budget() {
        let mut ids: VecDeque<Box<str>> = (0..1000).map(|i| format!("j-{i:032}").into()).collect();
        let first = take_ids(&mut ids, MAX_WATCH_BODY);
        assert!(body_size(&first) <= MAX_WATCH_BODY);
        assert!(first.len() > 300, "{}", first.len());
        assert_eq!(first.len() + ids.len(), 1000, "nothing lost");
        assert_eq!(&*first[0], "j-00000000000000000000000000000000");
        // An id longer than the budget still goes, alone: no request is ever empty.
        let mut long: VecDeque<Box<str>> = VecDeque::from([Box::from("x".repeat(64)), "y".into()]);
        assert_eq!(take_ids(&mut long, 10).len(), 1);
        assert!(take_ids(&mut VecDeque::new(), 10).is_empty());
    }
}
