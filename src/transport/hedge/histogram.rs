//! A latency histogram that forgets: the last one to two periods of samples.
//!
//! Log-linear buckets over microseconds, in the manner of HdrHistogram: exact below 64 µs,
//! then 32 buckets per power of two (about 3 % wide) up to 2³⁷ µs (38 hours). A quantile is
//! reported as the upper edge of its bucket, so a hedge fires at most 3 % late, never early.
//! Two histograms rotate: samples go to the current one, quantiles read both, and every
//! period the current one becomes the previous one. So the estimate always rests on at least
//! one full period, and a change of latency is fully learned within two.

use std::time::Duration;

use tokio::time::Instant;

/// Values below this many microseconds have a bucket each.
const LINEAR: u64 = 64;
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// The largest octave: values are clamped below `2^(MAX_OCTAVE + 1)` µs.
const MAX_OCTAVE: u32 = 36;
const LEN: usize = LINEAR as usize + (MAX_OCTAVE - SUB_BITS) as usize * SUB;

fn index(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let v = micros.min((1u64 << (MAX_OCTAVE + 1)) - 1);
    let octave = 63 - v.leading_zeros();
    let shift = octave - SUB_BITS;
    shift as usize * SUB + (v >> shift) as usize
}

/// The smallest value above every value of bucket `i`, in microseconds.
fn upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64 + 1;
    }
    let shift = (i / SUB - 1) as u32;
    let mantissa = (i % SUB + SUB) as u64;
    (mantissa + 1) << shift
}

#[derive(Debug)]
pub(crate) struct RotatingHistogram {
    period: Duration,
    since: Instant,
    previous: Vec<u32>,
    current: Vec<u32>,
    samples: u64,
}

impl RotatingHistogram {
    pub(crate) fn new(period: Duration, now: Instant) -> Self {
        RotatingHistogram {
            period,
            since: now,
            previous: vec![0; LEN],
            current: vec![0; LEN],
            samples: 0,
        }
    }

    /// Starts a new period when one has passed; `true` when the samples changed.
    pub(crate) fn rotate(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < self.period {
            return false;
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.fill(0);
        if elapsed >= self.period * 2 {
            self.previous.fill(0);
        }
        self.samples = self.previous.iter().map(|&n| u64::from(n)).sum();
        self.since = now;
        true
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let slot = &mut self.current[index(micros)];
        *slot = slot.saturating_add(1);
        self.samples += 1;
    }

    /// Samples in the last one to two periods.
    pub(crate) fn samples(&self) -> u64 {
        self.samples
    }

    /// The `q` quantile (upper bucket edge), or `None` without samples.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.samples as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, (a, b)) in self.previous.iter().zip(&self.current).enumerate() {
            seen += u64::from(*a) + u64::from(*b);
            if seen >= rank {
                return Some(Duration::from_micros(upper(i)));
            }
        }
        Some(Duration::from_micros(upper(LEN - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        let mut last = 0;
        for v in (0..5000).chain((5000..1 << 37).step_by(9_999_991)) {
            let i = index(v);
            assert!(i >= last, "{v}");
            last = i;
            assert!(v < upper(i), "{v} above its bucket {i}");
            if v >= LINEAR {
                assert!(
                    (upper(i) - v) as f64 <= v as f64 / 31.0,
                    "{v}: {}",
                    upper(i)
                );
            }
        }
        assert_eq!(index(u64::MAX), LEN - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn quantiles_and_rotation() {
        let period = Duration::from_secs(10);
        let mut h = RotatingHistogram::new(period, Instant::now());
        assert_eq!(h.quantile(0.95), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p95 = h.quantile(0.95).unwrap_or_default();
        assert!(
            p95 > Duration::from_millis(95) && p95 <= Duration::from_micros(96_256),
            "{p95:?}"
        );
        assert_eq!(h.quantile(0.0), Some(Duration::from_micros(1_008)));

        // One period later the samples are still read, two periods later they are gone.
        tokio::time::advance(period).await;
        assert!(h.rotate(Instant::now()));
        assert_eq!(h.samples(), 100);
        h.record(Duration::from_secs(1));
        assert_eq!(h.samples(), 101);
        tokio::time::advance(period).await;
        h.rotate(Instant::now());
        assert_eq!(h.samples(), 1);
        assert!(h.quantile(0.5).unwrap_or_default() >= Duration::from_secs(1));
        tokio::time::advance(period * 2).await;
        h.rotate(Instant::now());
        assert_eq!(h.samples(), 0);
    }
}
