//! Two counters over a sliding time window, in ten buckets: calls and failures for the
//! breaker's failure rate, calls and hedges for the hedge budget.

use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;

/// `(calls, marked)` over the last `span` (to a tenth of it).
#[derive(Debug, Clone)]
pub(crate) struct Window {
    origin: Instant,
    width: Duration,
    /// `(slot, calls, marked)`; a bucket whose slot is stale counts as empty.
    buckets: [(u64, u32, u32); BUCKETS],
}

impl Window {
    pub(crate) fn new(span: Duration, now: Instant) -> Self {
        Window {
            origin: now,
            width: (span / BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [(u64::MAX, 0, 0); BUCKETS],
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.width.as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn bucket(&mut self, now: Instant) -> &mut (u64, u32, u32) {
        let slot = self.slot(now);
        let bucket = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.0 != slot {
            *bucket = (slot, 0, 0);
        }
        bucket
    }

    /// Counts a call.
    pub(crate) fn call(&mut self, now: Instant) {
        let bucket = self.bucket(now);
        bucket.1 = bucket.1.saturating_add(1);
    }

    /// Marks one of the calls (a failure, a hedge).
    pub(crate) fn mark(&mut self, now: Instant) {
        let bucket = self.bucket(now);
        bucket.2 = bucket.2.saturating_add(1);
    }

    /// `(calls, marked)` in the window ending now.
    pub(crate) fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.slot(now);
        self.buckets
            .iter()
            .filter(|(slot, _, _)| *slot <= current && current - *slot < BUCKETS as u64)
            .fold((0u32, 0u32), |(c, m), (_, calls, marked)| {
                (c.saturating_add(*calls), m.saturating_add(*marked))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slides() {
        let mut w = Window::new(Duration::from_secs(10), Instant::now());
        for _ in 0..5 {
            w.call(Instant::now());
            w.mark(Instant::now());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        w.call(Instant::now());
        assert_eq!(w.totals(Instant::now()), (6, 5));
        tokio::time::advance(Duration::from_millis(6500)).await;
        // The buckets of seconds 0 to 1 have slid out; 2, 3, 4 and 5 remain.
        assert_eq!(w.totals(Instant::now()), (4, 3));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(w.totals(Instant::now()), (0, 0));
    }
}
