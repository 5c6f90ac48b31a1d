//! Stuck or slow? A job whose status and progress stop changing for longer than a bound.
//!
//! A deadline says how long the *caller* is willing to wait; a stall says something about the
//! *job*: it has shown no sign of life for longer than jobs normally take. By default the bound
//! is a high quantile (99 %) of the durations this client has learned, never below a floor: a
//! job that has not moved for longer than 99 % of jobs take *in total* is very probably stuck.
//! Until enough durations are known, a cold-start bound is used.
//!
//! A stall is declared only on evidence: a status read (a poll, a long-poll answer, an event)
//! taken at least `bound` after the job last changed, and showing no change. The scheduler
//! makes sure such a read happens: a polling job's next poll is brought forward to the bound,
//! and a long-poll is never held past it. A server that reports no progress at all (the plain
//! `GET /status`) shows only "pending": there, *stalled* means pending for longer than the
//! bound, which is all a client can know.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::poll::DurationModel;

/// When a job counts as stalled.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum StallDetection {
    /// Never report stalls.
    Off,
    /// Stalled after this long without a change.
    After(Duration),
    /// Stalled after the `quantile` of learned job durations without a change, never less
    /// than `floor`; `cold` until at least 10 durations are known.
    Learned {
        /// The quantile of learned durations, in `(0, 1]` (default 0.99).
        quantile: f64,
        /// The shortest bound (default 5 s).
        floor: Duration,
        /// The bound before anything is learned (default 15 min).
        cold: Duration,
    },
}

/// Durations a learned bound needs before it replaces the cold-start bound.
pub(crate) const MIN_SAMPLES: usize = 10;

/// The `q` quantile of learned durations, once at least [`MIN_SAMPLES`] are known (`None`
/// before, or when it falls among jobs still running): the stall bound's and the webhook
/// safety net's reading of the model.
pub(crate) fn learned_quantile(model: &DurationModel, q: f64) -> Option<Duration> {
    (model.samples() >= MIN_SAMPLES)
        .then(|| model.quantile(q))
        .flatten()
}

impl Default for StallDetection {
    fn default() -> Self {
        StallDetection::Learned {
            quantile: 0.99,
            floor: Duration::from_secs(5),
            cold: Duration::from_secs(15 * 60),
        }
    }
}

impl StallDetection {
    /// The bound now, given what has been learned; `None` when detection is off.
    pub(crate) fn bound(&self, model: &DurationModel) -> Option<Duration> {
        match *self {
            StallDetection::Off => None,
            StallDetection::After(bound) => Some(bound),
            StallDetection::Learned {
                quantile,
                floor,
                cold,
            } => Some(learned_quantile(model, quantile).map_or(cold, |q| q.max(floor))),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        match *self {
            StallDetection::Off => Ok(()),
            StallDetection::After(bound) if bound.is_zero() => Err(Error::config(
                "stall",
                "the bound must be greater than zero",
            )),
            StallDetection::After(_) => Ok(()),
            StallDetection::Learned {
                quantile,
                floor,
                cold,
            } => {
                if !(quantile > 0.0 && quantile <= 1.0) {
                    return Err(Error::config(
                        "stall",
                        format!("the quantile must be in (0, 1], not {quantile}"),
                    ));
                }
                if floor.is_zero() || cold.is_zero() {
                    return Err(Error::config(
                        "stall",
                        "the floor and the cold-start bound must be greater than zero",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// What one job has shown lately (pure: times are arguments).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StallTracker {
    /// The progress last seen, in thousandths (`Some(None)`: pending without progress);
    /// `None` before the first reading.
    seen: Option<Option<u32>>,
    /// When the job was first seen as it is now.
    pub(crate) since: Instant,
    /// Whether this stall has been reported (reset by the next change).
    pub(crate) reported: bool,
}

impl StallTracker {
    pub(crate) fn new(now: Instant) -> Self {
        StallTracker {
            seen: None,
            since: now,
            reported: false,
        }
    }

    /// Restores a tracker: unchanged since `since`, reported or not.
    pub(crate) fn restored(progress: Option<f64>, since: Instant, reported: bool) -> Self {
        StallTracker {
            seen: Some(progress.map(thousandths)),
            since,
            reported,
        }
    }

    /// A reading of a pending job at `at`. Returns how long it has been unchanged when that
    /// is a stall not yet reported.
    pub(crate) fn observe(
        &mut self,
        progress: Option<f64>,
        at: Instant,
        bound: Option<Duration>,
    ) -> Option<Duration> {
        let now = Some(progress.map(thousandths));
        if self.seen != now {
            self.seen = now;
            self.since = at;
            self.reported = false;
            return None;
        }
        let unchanged = at.saturating_duration_since(self.since);
        if self.reported || bound.is_none_or(|b| unchanged < b) {
            return None;
        }
        self.reported = true;
        Some(unchanged)
    }

    /// When a reading would show a stall, if nothing changes; `None` once reported.
    pub(crate) fn due(&self, bound: Option<Duration>) -> Option<Instant> {
        if self.reported || self.seen.is_none() {
            return None;
        }
        bound.and_then(|b| self.since.checked_add(b))
    }
}

fn thousandths(progress: f64) -> u32 {
    (progress.clamp(0.0, 1.0) * 1000.0).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::Sample;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn stalls_need_evidence_past_the_bound() {
        let t0 = Instant::now();
        let bound = Some(s(10));
        let mut t = StallTracker::new(t0);
        assert_eq!(t.due(bound), None, "nothing seen yet");
        assert_eq!(t.observe(Some(0.0), t0, bound), None);
        assert_eq!(t.due(bound), Some(t0 + s(10)));
        assert_eq!(t.observe(Some(0.0), t0 + s(9), bound), None);
        assert_eq!(t.observe(Some(0.0), t0 + s(11), bound), Some(s(11)));
        assert_eq!(
            t.observe(Some(0.0), t0 + s(30), bound),
            None,
            "reported once"
        );
        assert_eq!(t.due(bound), None);
        // A change ends the stall; the next one is reported again.
        assert_eq!(t.observe(Some(0.5), t0 + s(31), bound), None);
        assert_eq!(t.due(bound), Some(t0 + s(41)));
        assert_eq!(t.observe(Some(0.5), t0 + s(45), bound), Some(s(14)));
    }

    #[test]
    fn progress_moves_below_a_thousandth_do_not_count() {
        let t0 = Instant::now();
        let bound = Some(s(1));
        let mut t = StallTracker::new(t0);
        t.observe(Some(0.1000), t0, bound);
        assert_eq!(t.observe(Some(0.1004), t0 + s(2), bound), Some(s(2)));
        let mut t = StallTracker::new(t0);
        t.observe(None, t0, bound);
        assert_eq!(t.observe(None, t0 + s(1), bound), Some(s(1)));
        assert_eq!(StallTracker::new(t0).observe(None, t0, None), None);
    }

    #[test]
    fn the_default_bound_follows_learned_durations() {
        let d = StallDetection::default();
        let cold = DurationModel::fit(&[]);
        assert_eq!(d.bound(&cold), Some(s(900)));
        let samples: Vec<Sample> = (1..=20).map(|i| Sample::exact(s(i * 10))).collect();
        let model = DurationModel::fit(&samples);
        let bound = d.bound(&model).unwrap_or_default();
        assert!((s(195)..=s(200)).contains(&bound), "{bound:?}");
        let fast: Vec<Sample> = (0..20)
            .map(|_| Sample::exact(Duration::from_millis(200)))
            .collect();
        assert_eq!(d.bound(&DurationModel::fit(&fast)), Some(s(5)), "floor");
        assert_eq!(StallDetection::Off.bound(&model), None);
        assert_eq!(StallDetection::After(s(3)).bound(&model), Some(s(3)));
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            StallDetection::After(Duration::ZERO),
            StallDetection::Learned {
                quantile: 0.0,
                floor: s(1),
                cold: s(1),
            },
            StallDetection::Learned {
                quantile: f64::NAN,
                floor: s(1),
                cold: s(1),
            },
            StallDetection::Learned {
                quantile: 0.9,
                floor: Duration::ZERO,
                cold: s(1),
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(StallDetection::default().validate().is_ok());
    }
}
