//! Saturating time arithmetic.
//!
//! Durations reach the simulator from settings, admin requests and the library API
//! ([`crate::AppState::reset_legacy`], [`crate::AppState::start_outage`]). Settings and admin
//! requests are validated against [`crate::settings::MAX_DURATION`], but the library API takes
//! any `Duration`, and `Instant + Duration`, `Duration::mul_f64` or `as u64` on a huge value
//! panic or wrap. Every deadline, scaled estimate and header value is computed here instead:
//! an instant too far to represent is "practically never", a number too large for its type is
//! the type's maximum.

use std::time::Duration;

use tokio::time::Instant;

/// What "practically never" is when `at + after` cannot be represented: far enough never to
/// come, near enough that adding it to any instant of a running process cannot overflow.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `at + after`, or a practically unreachable instant when that cannot be represented.
pub(crate) fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}

/// `d × factor`, saturating at [`Duration::MAX`]; a negative or NaN factor gives zero.
pub(crate) fn scaled(d: Duration, factor: f64) -> Duration {
    if factor.is_nan() || factor <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Whole milliseconds in `d`, rounded down, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole milliseconds in `d`, rounded up (a delay is never shortened), saturating at
/// `u64::MAX`.
pub(crate) fn millis_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sums_that_cannot_be_represented_saturate() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let never = later(now, Duration::MAX);
        assert!(never >= now + Duration::from_secs(29 * 365 * 24 * 3600));
        assert!(later(never, Duration::MAX) >= never);
    }

    #[test]
    fn scaling_and_millisecond_conversions_saturate() {
        assert_eq!(
            scaled(Duration::from_secs(10), 1.2),
            Duration::from_secs(12)
        );
        assert_eq!(scaled(Duration::MAX, 1.2), Duration::MAX);
        assert_eq!(scaled(Duration::from_secs(1), -1.0), Duration::ZERO);
        assert_eq!(scaled(Duration::from_secs(1), f64::NAN), Duration::ZERO);
        assert_eq!(millis(Duration::from_micros(1999)), 1);
        assert_eq!(millis_ceil(Duration::from_micros(1001)), 2);
        assert_eq!(millis_ceil(Duration::ZERO), 0);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
    }
}
