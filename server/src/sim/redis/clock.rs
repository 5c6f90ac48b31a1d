//! Instants of this process for timestamps of Redis's clock.
//!
//! Redis-backed records carry wall-clock timestamps (microseconds since the Unix epoch, read
//! from Redis's `TIME` by the scripts that decide), because replicas compare them across
//! processes, and a `tokio::time::Instant` means nothing outside its own. Each replica turns
//! them into its own instants through one anchor taken at start-up — an instant and the wall
//! clock read together — so that every conversion agrees with every other and with the timers
//! armed from them: `instant(t) = anchor + (t − wall at anchor)`.
//!
//! Nothing is *decided* by this conversion: whether a job has ended, a cancel came in time, a
//! key expired, is decided in Redis by Redis's clock. The conversion only says when to wake up
//! and how far along a job looks. So the only assumption is that this replica's wall clock at
//! start-up agrees with Redis's (replicas on one machine share its clock; across machines, NTP
//! keeps them within milliseconds): an error of `e` makes wake-ups and progress `e` early or
//! late, never a state wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::time::later;

/// One anchor: an instant and the wall clock, read together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    wall_us: u64,
}

impl Clock {
    /// Anchored now.
    pub(crate) fn now() -> Self {
        Clock {
            instant: Instant::now(),
            wall_us: wall_us(SystemTime::now()),
        }
    }

    /// This process's instant of the wall-clock time `us`.
    pub(crate) fn instant(&self, us: u64) -> Instant {
        if us >= self.wall_us {
            later(self.instant, Duration::from_micros(us - self.wall_us))
        } else {
            let before = Duration::from_micros(self.wall_us - us);
            self.instant.checked_sub(before).unwrap_or(self.instant)
        }
    }

    /// The wall-clock time of `us`.
    pub(crate) fn system_time(us: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(us)
    }
}

/// Microseconds since the Unix epoch (0 before it).
pub(crate) fn wall_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn instants_follow_the_wall_clock_from_the_anchor() {
        let clock = Clock::now();
        let at = clock.wall_us;
        assert_eq!(clock.instant(at), clock.instant);
        assert_eq!(
            clock.instant(at + 1_500_000),
            clock.instant + Duration::from_millis(1500)
        );
        assert_eq!(
            clock.instant(at - 250_000) + Duration::from_millis(250),
            clock.instant
        );
        // Far past or future: saturates, never panics.
        assert!(clock.instant(u64::MAX) > clock.instant);
        assert!(clock.instant(0) <= clock.instant);
        assert_eq!(wall_us(Clock::system_time(1_234_567)), 1_234_567);
    }
}
