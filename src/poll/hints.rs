//! Where the server's hints put the end of a job.
//!
//! # Two kinds of hint, one window
//!
//! An estimate of the time left (`eta_ms`, or `Retry-After` when there is none) seen at age
//! `a` predicts an end `T = a + e`. Estimates are noisy — the simulator biases each job's by
//! up to ±20 % — so with tolerance `n` the plausible ends are `[T / (1 + n), T / (1 − n)]`, a
//! window almost half as wide as the job is long.
//!
//! Progress is far sharper, if the job progresses steadily: a reading `p` at age `a` puts the
//! end in `(a / (p + r), a / p]`, where `r` is the resolution the server reports at. Read at
//! two thirds of a 30 s job, to 0.001, that is a window of 50 ms. It says nothing at age 0
//! (progress 0), and nothing when the job's age is unknown (no `created_at`), so it is only
//! used when [`PollState::progress_reading`] is set.
//!
//! Before half-way a reading is too rough to place the end (an error in the age is
//! multiplied by `1 / p`), but without an estimate it is still the best scale there is: one
//! look at two thirds of the earliest end it allows yields a reading that can be used.
//!
//! The two are intersected. Where they disagree the progress is not steady (or the estimate
//! is wronger than the tolerance allows); the estimate's window is kept, since it was built to
//! tolerate exactly that. Where they agree, the window is usually narrower than the minimum
//! interval, and one look at its end settles it: that look is at or after `a / p`, which a
//! steady job cannot outlive. A job still pending there has contradicted its progress for
//! good ([`ProgressReading::steady_window`] returns `None` from then on), so a job "stuck at
//! 99 %" costs one extra look, never a burst.
//!
//! [`ProgressReading::steady_window`]: super::ProgressReading::steady_window

use std::time::Duration;

use super::{PollState, seconds};

/// Equal steps a wide window is polled in.
const WINDOW_STEPS: f64 = 4.0;

/// The job ages, in seconds, between which the hints say the job ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Window {
    pub(super) earliest: f64,
    pub(super) latest: f64,
    /// `latest` is where steady progress says the job has certainly ended: once the window
    /// is entered, the next look goes there rather than stepping through.
    pub(super) settles: bool,
}

/// Where the hints put the end of the job.
pub(super) fn window(state: &PollState, tolerance: f64) -> Option<Window> {
    let eta = state.eta.or(state.retry_after).map(|estimate| {
        let end = estimate.predicted_end().as_secs_f64();
        Window {
            earliest: end / (1.0 + tolerance),
            latest: end / (1.0 - tolerance),
            settles: false,
        }
    });
    let steady = state
        .progress_reading
        .and_then(|reading| reading.steady_window())
        .map(|(start, end)| Window {
            earliest: start.as_secs_f64(),
            latest: end.as_secs_f64(),
            settles: true,
        });
    match (eta, steady) {
        (Some(e), Some(p)) if e.earliest.max(p.earliest) <= e.latest.min(p.latest) => {
            Some(Window {
                earliest: e.earliest.max(p.earliest),
                latest: e.latest.min(p.latest),
                settles: p.latest <= e.latest,
            })
        }
        (None, None) => early_look(state),
        (eta, steady) => eta.or(steady),
    }
}

/// With nothing but a reading from before half-way: one look at two thirds of the earliest
/// end it allows. The job is still running there even if the reading's age was a third too
/// late, and the reading taken there is past half-way (or close: then once more).
fn early_look(state: &PollState) -> Option<Window> {
    let reading = state.progress_reading.filter(|r| r.is_early())?;
    let at = reading.earliest_end()?.as_secs_f64() * 2.0 / 3.0;
    Some(Window {
        earliest: at,
        latest: at,
        settles: false,
    })
}

/// One step of "jump to the earliest plausible end, then tighten" (ages in seconds): a
/// window no wider than `min`, or a settling one once entered, takes one look at its end; a
/// wider one is entered at its start (where a fresh progress reading is sharper) and polled
/// in four equal steps. `None` once past the window (plus half a minimum interval of grace,
/// so that a poll aimed at the window's end, whose answer arrives a little after it, still
/// gets one more look).
pub(super) fn step(age: f64, window: Window, min: Duration) -> Option<Duration> {
    let Window {
        earliest,
        latest,
        settles,
    } = window;
    let min = min.as_secs_f64();
    if !(earliest.is_finite() && latest.is_finite()) || age > latest + min / 2.0 {
        return None;
    }
    let after = if latest - earliest <= min || (settles && age >= earliest) {
        latest - age
    } else if age < earliest {
        earliest - age
    } else {
        // Equal steps from the window's start, keeping the grid aligned.
        let step = ((latest - earliest) / WINDOW_STEPS).max(min);
        // (A look that landed on a grid point, give or take rounding, counts as made there.)
        let done = ((age - earliest) / step + 1e-6).floor() + 1.0;
        (earliest + done * step).min(latest.max(age)) - age
    };
    Some(seconds(after.max(min)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::poll::{Estimate, ProgressReading};

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    const MIN: Duration = Duration::from_millis(100);

    #[test]
    fn an_estimate_alone_gives_a_tolerance_window() {
        let state = PollState::new().with_eta(Estimate::new(s(1.0), s(3.0)));
        let w = window(&state, 0.25).unwrap();
        let (a, b) = (w.earliest, w.latest);
        assert!(
            (a - 3.2).abs() < 1e-9 && (b - 16.0 / 3.0).abs() < 1e-9,
            "{a}..{b}"
        );
        assert!(!w.settles);
        assert_eq!(window(&PollState::new(), 0.25), None);
    }

    #[test]
    fn steady_progress_narrows_the_estimate() {
        // A 10 s job whose estimate is 20 % long, read at 7.2 s (0.72).
        let state = PollState::new()
            .with_eta(Estimate::new(s(7.2), s(12.0 - 7.2)))
            .with_progress_reading(ProgressReading::new(0.72, s(7.2)));
        let w = window(&state, 0.25).unwrap();
        let (a, b) = (w.earliest, w.latest);
        assert!((b - 10.0).abs() < 0.005, "{a}..{b}");
        assert!(a > 9.8, "{a}..{b}");
        assert!(w.settles);
    }

    #[test]
    fn progress_that_disagrees_with_the_estimate_is_ignored() {
        // The estimate says 8..13.3 s; progress says the job ends by 5 s.
        let state = PollState::new()
            .with_eta(Estimate::new(s(4.0), s(6.0)))
            .with_progress_reading(ProgressReading::new(0.8, s(4.0)));
        let w = window(&state, 0.25).unwrap();
        let (a, b) = (w.earliest, w.latest);
        assert!(
            (a - 8.0).abs() < 1e-9 && (b - 40.0 / 3.0).abs() < 1e-9,
            "{a}..{b}"
        );
        assert!(!w.settles);
        // Without an estimate, progress alone decides.
        let state = PollState::new().with_progress_reading(ProgressReading::new(0.8, s(4.0)));
        let w = window(&state, 0.25).unwrap();
        assert!(
            (w.latest - 5.0).abs() < 0.005 && w.earliest < w.latest,
            "{w:?}"
        );
        assert!(w.settles);
    }

    #[test]
    fn steps_through_a_window() {
        // (age, earliest, latest, settles, next look after)
        type Case = (f64, f64, f64, bool, Option<f64>);
        let table: &[Case] = &[
            // Before a wide window: jump to its start.
            (0.0, 3.2, 5.2, false, Some(3.2)),
            (0.0, 3.2, 5.2, true, Some(3.2)),
            // Inside: quarter-window steps on a grid from the start...
            (3.2, 3.2, 5.2, false, Some(0.5)),
            (3.3, 3.2, 5.2, false, Some(0.4)),
            (5.1, 3.2, 5.2, false, Some(0.1)),
            (3.7 - 1e-12, 3.2, 5.2, false, Some(0.5)),
            // ...unless steady progress says where it certainly ends.
            (3.3, 3.2, 5.2, true, Some(1.9)),
            // Past it (beyond the grace): nothing.
            (5.3, 3.2, 5.2, false, None),
            (5.3, 3.2, 5.2, true, None),
            // A narrow window: one look at its end.
            (0.0, 9.99, 10.0, false, Some(10.0)),
            (9.95, 9.99, 10.0, true, Some(0.1)),
            // Never sooner than the minimum interval.
            (9.99, 9.99, 10.0, false, Some(0.1)),
            (0.0, f64::INFINITY, f64::INFINITY, false, None),
        ];
        for &(age, earliest, latest, settles, want) in table {
            let window = Window {
                earliest,
                latest,
                settles,
            };
            let got = step(age, window, MIN).map(|d| d.as_secs_f64());
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{age} {window:?}: {g}"),
                (g, w) => assert_eq!(g, w, "{age} {window:?}"),
            }
        }
    }
}
