//! The change log in memory: a ring of the latest changes, bounded by count and by age.
//!
//! Offsets are consecutive from `1`, so the entry for an offset is found by subtraction, and a
//! read after a cursor costs what it looks at, never a search. The oldest retained offset is
//! kept beside the ring: a cursor before it has lost changes, and reads as a reset.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Change, ChangeKind, Cursor, JobRecord, Read, ReadLimits};
use crate::settings::ChangeSettings;

/// The latest changes, in memory.
#[derive(Debug)]
pub struct MemoryLog {
    /// `changes.history`: most entries retained.
    max_len: usize,
    /// `changes.history_age`: oldest entry retained.
    max_age: Duration,
    ring: Mutex<Ring>,
    /// The head's offset, for readers waiting on something new (sent on every append, and when
    /// the log starts over: wait for it to change, not for it to grow).
    head: watch::Sender<u64>,
}

/// One position of the ring: a change, or (in a copy of a shared log) an entry that is no job's
/// change and only takes its offset.
#[derive(Debug)]
enum Slot {
    Change(Arc<Change>),
    Other { offset: u64, at: Instant },
}

impl Slot {
    fn offset(&self) -> u64 {
        match self {
            Slot::Change(c) => c.offset,
            Slot::Other { offset, .. } => *offset,
        }
    }

    fn at(&self) -> Instant {
        match self {
            Slot::Change(c) => c.at,
            Slot::Other { at, .. } => *at,
        }
    }
}

#[derive(Debug, Default)]
struct Ring {
    /// Drawn at start-up (or, for a shared log, kept beside it): a cursor of another run is of
    /// another epoch.
    epoch: u64,
    entries: VecDeque<Slot>,
    /// Offset of the last change appended; `0` before the first.
    last: u64,
}

impl Ring {
    /// Offset of the oldest change retained (`last + 1` when none is).
    fn first(&self) -> u64 {
        self.entries
            .front()
            .map_or(self.last.saturating_add(1), Slot::offset)
    }
}

impl MemoryLog {
    /// An empty log in `epoch`, bounded as `settings` say.
    pub fn new(settings: &ChangeSettings, epoch: u64) -> Self {
        MemoryLog {
            max_len: settings.history,
            max_age: settings.history_age,
            ring: Mutex::new(Ring {
                epoch,
                ..Ring::default()
            }),
            head: watch::channel(0).0,
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // Single pushes and pops: a panic while holding it leaves the ring consistent.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`super::ChangeLog::head`].
    pub fn head(&self) -> Cursor {
        let ring = self.ring();
        Cursor::new(ring.epoch, ring.last)
    }

    /// See [`super::ChangeLog::append`].
    pub(crate) fn append(&self, kind: ChangeKind, job: JobRecord, now: Instant) -> u64 {
        let offset = {
            let mut ring = self.ring();
            ring.last = ring.last.saturating_add(1);
            let offset = ring.last;
            ring.entries.push_back(Slot::Change(Arc::new(Change {
                offset,
                at: now,
                kind,
                job,
            })));
            self.trim(&mut ring, now);
            offset
        };
        self.head.send_replace(offset);
        offset
    }

    /// Appends the entry a shared log holds at `offset` (a change, or `None` for an entry that
    /// is no job's change), appended there at `at`. An offset at or before the head is ignored;
    /// one past the next leaves a gap, so the history before it is dropped: a reader behind it
    /// gets a reset, never a silent gap.
    pub(crate) fn append_at(
        &self,
        offset: u64,
        at: Instant,
        change: Option<(ChangeKind, JobRecord)>,
    ) {
        {
            let mut ring = self.ring();
            if offset <= ring.last {
                return;
            }
            if offset != ring.last.saturating_add(1) {
                ring.entries.clear();
            }
            ring.last = offset;
            ring.entries.push_back(match change {
                Some((kind, job)) => Slot::Change(Arc::new(Change {
                    offset,
                    at,
                    kind,
                    job,
                })),
                None => Slot::Other { offset, at },
            });
            self.trim(&mut ring, Instant::now());
        }
        self.head.send_replace(offset);
    }

    /// Starts over in `epoch` at `head`, forgetting every change: readers of earlier cursors
    /// get a reset.
    pub(crate) fn restart(&self, epoch: u64, head: u64) {
        {
            let mut ring = self.ring();
            ring.epoch = epoch;
            ring.last = head;
            ring.entries.clear();
        }
        self.head.send_replace(head);
    }

    /// See [`super::ChangeLog::prune`].
    pub fn prune(&self, now: Instant) {
        self.trim(&mut self.ring(), now);
    }

    fn trim(&self, ring: &mut Ring, now: Instant) {
        while let Some(oldest) = ring.entries.front() {
            let too_many = ring.entries.len() > self.max_len;
            let too_old = now.saturating_duration_since(oldest.at()) > self.max_age;
            if !(too_many || too_old) {
                break;
            }
            ring.entries.pop_front();
        }
    }

    /// See [`super::ChangeLog::read`].
    pub fn read(
        &self,
        after: Cursor,
        limits: ReadLimits,
        mut keep: impl FnMut(&Change) -> bool,
    ) -> Read {
        let ring = self.ring();
        let head = Cursor::new(ring.epoch, ring.last);
        let first = ring.first();
        // The reader needs `after.offset + 1` onwards: it must still be here.
        if after.epoch != ring.epoch
            || after.offset > ring.last
            || after.offset.saturating_add(1) < first
        {
            return Read::Reset { head };
        }
        let skip = usize::try_from(after.offset.saturating_add(1) - first).unwrap_or(usize::MAX);
        let mut changes = Vec::new();
        let mut next = after;
        for (looked, slot) in ring.entries.iter().skip(skip).enumerate() {
            if looked == limits.scan || changes.len() == limits.keep {
                break;
            }
            next.offset = slot.offset();
            if let Slot::Change(change) = slot
                && keep(change)
            {
                changes.push(Arc::clone(change));
            }
        }
        Read::Changes {
            changes,
            more: next.offset < ring.last,
            next,
        }
    }

    /// See [`super::ChangeLog::len`].
    pub fn len(&self) -> usize {
        self.ring().entries.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// See [`super::ChangeLog::subscribe`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::sim::job::State;

    fn settings(history: usize, age_secs: u64) -> ChangeSettings {
        let mut s = crate::Settings::default().changes;
        s.history = history;
        s.history_age = Duration::from_secs(age_secs);
        s
    }

    fn record(id: &str) -> JobRecord {
        JobRecord {
            id: id.into(),
            client: None,
            state: State::Pending,
            progress: 0.0,
            created: SystemTime::UNIX_EPOCH,
            completed: None,
        }
    }

    const ALL: ReadLimits = ReadLimits {
        keep: usize::MAX,
        scan: usize::MAX,
    };

    fn offsets(read: &Read) -> Vec<u64> {
        match read {
            Read::Changes { changes, .. } => changes.iter().map(|c| c.offset).collect(),
            Read::Reset { .. } => panic!("a reset: {read:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_follow_each_other_and_a_read_resumes_after_its_cursor() {
        let log = MemoryLog::new(&settings(100, 60), 7);
        assert_eq!(log.head(), Cursor::new(7, 0));
        for i in 1..=5 {
            assert_eq!(
                log.append(ChangeKind::Created, record(&i.to_string()), Instant::now()),
                i
            );
        }
        assert_eq!(log.head(), Cursor::new(7, 5));
        assert_eq!(
            offsets(&log.read(Cursor::new(7, 0), ALL, |_| true)),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(offsets(&log.read(Cursor::new(7, 3), ALL, |_| true)), [4, 5]);
        // At the head: nothing, and not a reset.
        let at_head = log.read(Cursor::new(7, 5), ALL, |_| true);
        assert_eq!(offsets(&at_head), Vec::<u64>::new());
        // What the reader keeps does not change how far it got.
        let read = log.read(Cursor::new(7, 0), ALL, |c| c.job.id == "2");
        assert_eq!(offsets(&read), [2]);
        assert!(
            matches!(read, Read::Changes { next, more: false, .. } if next == Cursor::new(7, 5))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_stops_at_its_limits_and_says_there_is_more() {
        let log = MemoryLog::new(&settings(100, 60), 1);
        for i in 0..10 {
            log.append(ChangeKind::Created, record(&i.to_string()), Instant::now());
        }
        let limits = ReadLimits { keep: 3, scan: 100 };
        let read = log.read(Cursor::new(1, 0), limits, |_| true);
        assert_eq!(offsets(&read), [1, 2, 3]);
        assert!(matches!(read, Read::Changes { next, more: true, .. } if next.offset == 3));
        // A reader keeping nothing still gets its cursor moved, by at most `scan`.
        let limits = ReadLimits { keep: 3, scan: 4 };
        let read = log.read(Cursor::new(1, 2), limits, |_| false);
        assert_eq!(offsets(&read), Vec::<u64>::new());
        assert!(matches!(read, Read::Changes { next, more: true, .. } if next.offset == 6));
    }

    #[tokio::test(start_paused = true)]
    async fn the_history_is_bounded_by_count_and_age_and_a_cursor_before_it_is_reset() {
        let log = MemoryLog::new(&settings(3, 10), 1);
        for i in 0..5 {
            log.append(ChangeKind::Created, record(&i.to_string()), Instant::now());
        }
        assert_eq!(log.len(), 3, "count bound");
        // 3, 4, 5 retained: a reader at 2 needs 3 and gets it; one at 1 needs 2, which is gone.
        assert_eq!(
            offsets(&log.read(Cursor::new(1, 2), ALL, |_| true)),
            [3, 4, 5]
        );
        let reset = Read::Reset {
            head: Cursor::new(1, 5),
        };
        assert_eq!(log.read(Cursor::new(1, 1), ALL, |_| true), reset);
        assert_eq!(log.read(Cursor::new(1, 0), ALL, |_| true), reset);
        // Another epoch, or a cursor ahead of the head, cannot be continued either.
        assert_eq!(log.read(Cursor::new(2, 4), ALL, |_| true), reset);
        assert_eq!(log.read(Cursor::new(1, 6), ALL, |_| true), reset);

        tokio::time::advance(Duration::from_secs(6)).await;
        log.append(ChangeKind::Created, record("6"), Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        log.prune(Instant::now());
        assert_eq!(log.len(), 1, "age bound: only the change 5 s old is left");
        assert_eq!(offsets(&log.read(Cursor::new(1, 5), ALL, |_| true)), [6]);
        assert!(matches!(
            log.read(Cursor::new(1, 4), ALL, |_| true),
            Read::Reset { .. }
        ));
        tokio::time::advance(Duration::from_secs(6)).await;
        log.prune(Instant::now());
        assert_eq!(log.len(), 0);
        // Empty, the head still counts: a reader at it is fine, one before it is reset.
        assert_eq!(
            offsets(&log.read(Cursor::new(1, 6), ALL, |_| true)),
            Vec::<u64>::new()
        );
        assert!(matches!(
            log.read(Cursor::new(1, 5), ALL, |_| true),
            Read::Reset { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_appends_at_given_offsets_and_a_gap_drops_the_history_before_it() {
        let log = MemoryLog::new(&settings(100, 60), 7);
        let now = Instant::now();
        let mut rx = log.subscribe();
        log.append_at(1, now, Some((ChangeKind::Created, record("a"))));
        // An entry that is no job's change takes its offset and is never read out.
        log.append_at(2, now, None);
        log.append_at(3, now, Some((ChangeKind::Ended, record("a"))));
        log.append_at(3, now, Some((ChangeKind::Gone, record("a"))));
        assert_eq!(log.head(), Cursor::new(7, 3));
        assert_eq!(offsets(&log.read(Cursor::new(7, 0), ALL, |_| true)), [1, 3]);
        let read = log.read(Cursor::new(7, 2), ALL, |_| true);
        assert!(matches!(read, Read::Changes { next, .. } if next.offset == 3));
        // A gap: what came before it cannot be read on from.
        log.append_at(6, now, Some((ChangeKind::Created, record("b"))));
        assert_eq!(offsets(&log.read(Cursor::new(7, 5), ALL, |_| true)), [6]);
        assert!(matches!(
            log.read(Cursor::new(7, 3), ALL, |_| true),
            Read::Reset { .. }
        ));
        // Starting over in another epoch: every older cursor is reset, and readers are woken
        // even though the head went down.
        rx.borrow_and_update();
        log.restart(8, 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(log.head(), Cursor::new(8, 2));
        assert!(matches!(
            log.read(Cursor::new(7, 6), ALL, |_| true),
            Read::Reset { head } if head == Cursor::new(8, 2)
        ));
        assert_eq!(log.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_see_the_head_move() {
        let log = MemoryLog::new(&settings(10, 60), 1);
        let mut rx = log.subscribe();
        assert_eq!(*rx.borrow_and_update(), 0);
        log.append(ChangeKind::Ended, record("a"), Instant::now());
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
    }
}
