//! How many jobs a client may have running at once (`heygen.max_concurrent_jobs`), decided by
//! the clock, without a ticker.
//!
//! HeyGen lets an account run a few jobs at a time and refuses more with `429` until some end.
//! A job here stops running at an instant known when it is created (its end; for a hanging
//! job, when the store forgets it) or earlier, when it is canceled. So each counted job sits
//! in two places: its client's list of running jobs, and one timeline of when each stops
//! counting. A create first drains what is due from the timeline (each job once, `O(log n)`),
//! then looks at its client's list, whose length is the count: at most `max` jobs, so even the
//! refusal's hint (how long until enough of them end) costs `O(max log max)`. A cancel takes
//! its job off its client's list at once; the timeline's entry for it is then a no-op when it
//! comes due. A client whose list empties is forgotten, so the table holds only clients with
//! running jobs — never more entries than the store holds jobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::client::ClientId;
use super::job::Job;
use super::timeline::Timeline;

/// The smallest `Retry-After` of a refusal: a client is never told to come back at once.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Running jobs per client, bounded.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    /// Most running jobs per client.
    max: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// When each counted job stops counting, and whose it is.
    releases: Timeline<(ClientId, Arc<Job>)>,
    /// Each client's running jobs, with the instant each stops counting; no entry for a
    /// client with none.
    running: HashMap<ClientId, Vec<(Instant, Arc<Job>)>>,
}

impl Held {
    /// Takes `job` off `client`'s list, if it is there.
    fn release(&mut self, client: ClientId, job: &Arc<Job>) {
        if let Some(list) = self.running.get_mut(&client) {
            list.retain(|(_, j)| !Arc::ptr_eq(j, job));
            if list.is_empty() {
                self.running.remove(&client);
            }
        }
    }

    /// Releases every job whose time has come.
    fn prune(&mut self, now: Instant) {
        while let Some((client, job)) = self.releases.pop_due(now) {
            self.release(client, &job);
        }
    }
}

/// A refusal: the client runs too many jobs; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Until enough of the client's jobs end for the request to fit, at least
    /// [`MIN_RETRY_AFTER`].
    pub retry_after: Duration,
}

/// Room for new jobs of one client, held while they are created (see
/// [`ConcurrencyLimit::admit`]).
#[derive(Debug)]
pub struct Admitted<'a> {
    held: MutexGuard<'a, Held>,
    client: ClientId,
}

impl Admitted<'_> {
    /// Counts `job` as running for the client until `until` (or until it is canceled).
    pub fn count(&mut self, job: &Arc<Job>, until: Instant) {
        self.held
            .releases
            .push(until, (self.client, Arc::clone(job)));
        self.held
            .running
            .entry(self.client)
            .or_default()
            .push((until, Arc::clone(job)));
    }
}

fn lock(m: &Mutex<Held>) -> MutexGuard<'_, Held> {
    // Single operations: a panic while holding it leaves the table consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConcurrencyLimit {
    /// At most `max` running jobs per client.
    pub fn new(max: usize) -> Self {
        ConcurrencyLimit {
            max,
            held: Mutex::default(),
        }
    }

    /// Whether `client` may start `n` more jobs at `now`. Admitted: the limit stays locked for
    /// this client's creates until the answer is dropped, so that two creates cannot both take
    /// the last room; count each job created with [`Admitted::count`].
    pub fn admit(&self, client: ClientId, n: usize, now: Instant) -> Result<Admitted<'_>, Busy> {
        let mut held = lock(&self.held);
        held.prune(now);
        let running = held.running.get(&client).map_or(0, Vec::len);
        if running.saturating_add(n) <= self.max {
            return Ok(Admitted { held, client });
        }
        // The `k`-th soonest end makes room for `n`: k = running + n - max.
        let k = running + n - self.max;
        let retry_after = match held.running.get(&client) {
            Some(list) if k <= list.len() => {
                let mut ends: Vec<Instant> = list.iter().map(|(at, _)| *at).collect();
                ends.sort_unstable();
                ends[k - 1].saturating_duration_since(now)
            }
            // More than the limit at once: no wait makes room (the caller refuses that).
            _ => Duration::MAX,
        };
        Err(Busy {
            retry_after: retry_after.max(MIN_RETRY_AFTER),
        })
    }

    /// Stops counting `job` for `client` now (it was canceled). A no-op if it is not counted.
    pub fn release(&self, client: ClientId, job: &Arc<Job>) {
        lock(&self.held).release(client, job);
    }

    /// Releases the jobs whose time has come, so that clients that never create again are
    /// forgotten too. Called by the sweeper.
    pub fn prune(&self, now: Instant) {
        lock(&self.held).prune(now);
    }

    /// `(clients with running jobs, jobs on the timeline)`.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let held = lock(&self.held);
        (held.running.len(), held.releases.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(secs: u64) -> Arc<Job> {
        Arc::new(Job::new(
            "j".into(),
            Duration::from_secs(secs),
            crate::Outcome::Completed,
            1.0,
            None,
        ))
    }

    fn start(limit: &ConcurrencyLimit, client: ClientId, secs: &[u64]) -> Vec<Arc<Job>> {
        let now = Instant::now();
        let mut room = limit.admit(client, secs.len(), now).unwrap();
        secs.iter()
            .map(|s| {
                let j = job(*s);
                room.count(&j, j.completes_at());
                j
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_runs_at_most_max_and_is_told_when_room_comes() {
        let limit = ConcurrencyLimit::new(3);
        let (a, b) = (ClientId::ApiKey, ClientId::peer([192, 0, 2, 1].into()));
        start(&limit, a, &[10, 4, 7]);
        let busy = limit.admit(a, 1, Instant::now()).unwrap_err();
        assert_eq!(busy.retry_after, Duration::from_secs(4), "the soonest end");
        let busy = limit.admit(a, 2, Instant::now()).unwrap_err();
        assert_eq!(busy.retry_after, Duration::from_secs(7), "two must end");
        // Another client is not affected.
        start(&limit, b, &[1, 1, 1]);
        tokio::time::advance(Duration::from_millis(3_500)).await;
        let busy = limit.admit(a, 1, Instant::now()).unwrap_err();
        assert_eq!(busy.retry_after, MIN_RETRY_AFTER, "floored at a second");
        tokio::time::advance(Duration::from_millis(500)).await;
        start(&limit, a, &[60]);
        assert!(limit.admit(a, 1, Instant::now()).is_err());
        assert_eq!(limit.sizes().0, 1, "b's jobs ended: b is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_canceled_job_stops_counting_at_once_and_once() {
        let limit = ConcurrencyLimit::new(2);
        let a = ClientId::ApiKey;
        let jobs = start(&limit, a, &[10, 10]);
        assert!(limit.admit(a, 1, Instant::now()).is_err());
        jobs[0].cancel(Instant::now());
        limit.release(a, &jobs[0]);
        limit.release(a, &jobs[0]);
        start(&limit, a, &[10]);
        assert!(limit.admit(a, 1, Instant::now()).is_err(), "released once");
        // Its timeline entry coming due releases nothing else.
        tokio::time::advance(Duration::from_secs(10)).await;
        limit.prune(Instant::now());
        assert_eq!(limit.sizes(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_max_at_once_never_fits() {
        let limit = ConcurrencyLimit::new(2);
        let busy = limit
            .admit(ClientId::ApiKey, 3, Instant::now())
            .unwrap_err();
        assert_eq!(busy.retry_after, Duration::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn many_clients_leave_nothing_behind() {
        let limit = ConcurrencyLimit::new(10);
        for i in 0..=255u8 {
            start(&limit, ClientId::peer([198, 51, 100, i].into()), &[1, 2]);
        }
        assert_eq!(limit.sizes(), (256, 512));
        tokio::time::advance(Duration::from_secs(2)).await;
        limit.prune(Instant::now());
        assert_eq!(limit.sizes(), (0, 0));
    }
}
