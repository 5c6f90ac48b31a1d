//! The timer queue: every job's next wake-up, in order, under one sleep.
//!
//! Each job has at most one entry: re-arming removes the old one, so the queue never holds
//! more entries than jobs, however often they are rescheduled.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::JobKey;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    entries: BTreeSet<(Instant, JobKey)>,
}

impl Timers {
    /// Moves `key`'s entry from `*slot` to `at` (or removes it), keeping `*slot` in step.
    pub(crate) fn arm(&mut self, key: JobKey, slot: &mut Option<Instant>, at: Option<Instant>) {
        if *slot == at {
            return;
        }
        if let Some(old) = slot.take() {
            self.entries.remove(&(old, key));
        }
        if let Some(at) = at {
            self.entries.insert((at, key));
            *slot = Some(at);
        }
    }

    /// The earliest entry's time.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest entry due at `now`; its owner must clear its slot.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<JobKey> {
        match self.entries.first() {
            Some(&(at, key)) if at <= now => {
                self.entries.remove(&(at, key));
                Some(key)
            }
            _ => None,
        }
    }

    /// The entries due by `at`, earliest first.
    pub(crate) fn due_by(&self, at: Instant) -> impl Iterator<Item = (Instant, JobKey)> + '_ {
        self.entries
            .iter()
            .copied()
            .take_while(move |(due, _)| *due <= at)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_entry_per_job_in_time_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        let (mut a, mut b) = (None, None);
        timers.arm(JobKey(1), &mut a, Some(ms(30)));
        timers.arm(JobKey(2), &mut b, Some(ms(20)));
        timers.arm(JobKey(1), &mut a, Some(ms(10)));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some(ms(10)));
        assert_eq!(timers.pop_due(ms(5)), None);
        assert_eq!(timers.pop_due(ms(25)), Some(JobKey(1)));
        a = None;
        assert_eq!(timers.pop_due(ms(25)), Some(JobKey(2)));
        b = None;
        assert_eq!(timers.pop_due(ms(25)), None);
        timers.arm(JobKey(1), &mut a, Some(ms(40)));
        timers.arm(JobKey(1), &mut a, None);
        assert_eq!((timers.len(), a, b), (0, None, None));
    }
}
