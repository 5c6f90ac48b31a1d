//! The wall clock, used only where it is truly needed.
//!
//! Scheduling uses `tokio::time` exclusively (so tests can pause time). The wall clock is read
//! here only: to compare "now" with the timestamps the server reports (`completed_at` for the
//! detection delay, `created_at` for the job's age), and to stamp the absolute deadlines that
//! durable job-set state carries across a restart.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Now, by this machine's wall clock.
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

/// Both clocks, read at one instant: the monotonic one for scheduling, the wall one to
/// compare with the server's timestamps and to survive a restart. A decision that needs the
/// time takes one of these as an input, so that tests can set both.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clocks {
    pub(crate) now: Instant,
    pub(crate) wall: SystemTime,
}

impl Clocks {
    /// Both clocks, now.
    pub(crate) fn now() -> Self {
        Clocks {
            now: Instant::now(),
            wall: now(),
        }
    }

    /// Time elapsed from a server timestamp to `wall`; `None` when the timestamp is later
    /// (clock skew).
    pub(crate) fn since(&self, timestamp: SystemTime) -> Option<Duration> {
        self.wall.duration_since(timestamp).ok()
    }

    /// The monotonic instant of a wall-clock time; `None` when it is too far to represent.
    pub(crate) fn instant(&self, wall: SystemTime) -> Option<Instant> {
        match wall.duration_since(self.wall) {
            Ok(ahead) => self.now.checked_add(ahead),
            // Before the machine started, as far as the monotonic clock can say: as early as
            // it goes is early enough.
            Err(behind) => Some(self.now.checked_sub(behind.duration()).unwrap_or(self.now)),
        }
    }

    /// The wall-clock time of a monotonic instant.
    pub(crate) fn wall(&self, at: Instant) -> SystemTime {
        let wall = if at >= self.now {
            self.wall.checked_add(at - self.now)
        } else {
            self.wall.checked_sub(self.now - at)
        };
        wall.unwrap_or(self.wall)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every other module schedules with `tokio::time` (so tests can pause time); only this
    /// one may read the wall clock. (A `clippy.toml` ban would apply to the whole workspace,
    /// whose simulator legitimately serves wall-clock timestamps, so the rule lives here.)
    #[test]
    fn the_wall_clock_is_read_only_here() {
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut offenders = Vec::new();
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("clock.rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for needle in ["SystemTime::now", "std::time::Instant", "thread::sleep"] {
                    if text.contains(needle) {
                        offenders.push(format!("{}: {needle}", path.display()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:?}");
    }
}
