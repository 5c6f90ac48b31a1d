//! Summary statistics: mean and nearest-rank percentiles.
//!
//! Nearest rank (the smallest sample with at least `p` of the samples at or below it) is used
//! because it always returns a value that was observed: a p99 of "3 requests" is a request
//! count some job really made, not an interpolation between two.

use serde::Serialize;

/// Mean, median, p99 and maximum of a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    #[serde(skip)]
    pub n: usize,
    /// Arithmetic mean (0 when empty).
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

/// The `p`-quantile (`0 < p ≤ 1`) of sorted samples by nearest rank; `None` when empty.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl Summary {
    /// Summarises `samples` (NaNs are dropped).
    pub fn of(samples: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = samples.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Summary {
            n,
            mean: v.iter().sum::<f64>() / n as f64,
            p50: nearest_rank(&v, 0.50).unwrap_or(0.0),
            p99: nearest_rank(&v, 0.99).unwrap_or(0.0),
            max: v[n - 1],
        }
    }
}

/// Peak and mean of per-second counts; the mean is taken from the first second with any
/// event to the last (idle seconds in between count, idle edges do not).
pub fn peak_and_mean(per_second: &[f64]) -> (f64, f64) {
    let first = per_second.iter().position(|x| *x > 0.0);
    let last = per_second.iter().rposition(|x| *x > 0.0);
    let (Some(a), Some(b)) = (first, last) else {
        return (0.0, 0.0);
    };
    let span = &per_second[a..=b];
    let peak = span.iter().copied().fold(0.0, f64::max);
    (peak, span.iter().sum::<f64>() / span.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_returns_observed_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(50.0));
        assert_eq!(nearest_rank(&v, 0.99), Some(99.0));
        assert_eq!(nearest_rank(&v, 1.0), Some(100.0));
        assert_eq!(nearest_rank(&v, 0.0), Some(1.0));
        assert_eq!(nearest_rank(&[7.0], 0.99), Some(7.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
        // Three values: the median is the second, p99 the third.
        assert_eq!(nearest_rank(&[1.0, 2.0, 9.0], 0.5), Some(2.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 9.0], 0.99), Some(9.0));
    }

    #[test]
    fn summary_of_known_samples() {
        let s = Summary::of([4.0, 1.0, 3.0, 2.0, f64::NAN]);
        assert_eq!(s.n, 4);
        assert_eq!(s.mean, 2.5);
        assert_eq!(s.p50, 2.0);
        assert_eq!(s.p99, 4.0);
        assert_eq!(s.max, 4.0);
        assert_eq!(Summary::of([]), Summary::default());
    }

    #[test]
    fn peak_and_mean_over_the_busy_span() {
        // Idle edges are ignored, the idle second in the middle counts.
        let (peak, mean) = peak_and_mean(&[0.0, 4.0, 0.0, 2.0, 0.0]);
        assert_eq!(peak, 4.0);
        assert_eq!(mean, 2.0);
        assert_eq!(peak_and_mean(&[0.0, 0.0]), (0.0, 0.0));
        assert_eq!(peak_and_mean(&[]), (0.0, 0.0));
    }
}
