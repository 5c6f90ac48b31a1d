//! What the cold start assumes before anything is learned.
//!
//! # A prior, not a fixed interval
//!
//! With nothing known, a fixed 2 s poller is the baseline to beat on the 30 s jobs the SDK is
//! measured against, and nothing that keeps every interval at 2 s or more can find them
//! sooner on average than 1 s after they end. Doing better on both counts needs a belief
//! about where jobs end: few in their first seconds, most around the typical duration. The
//! cold start therefore runs the learned schedule (`balanced`) on a prior: durations
//! log-normal around the typical one, with σ = 0.8 (80 % of them between a third and three
//! times it). Its first look comes late (6.7 s for a typical 30 s, when 3 % of such jobs are
//! done), its looks are densest where such jobs end, and past the prior's reach (36 times the
//! typical duration) the interval simply grows with the job's age.

use super::DurationModel;

/// Pieces of the prior, evenly spaced in standard deviations.
const PIECES: u32 = 240;
/// How many standard deviations the prior's pieces reach either side of the median.
const REACH: f64 = 4.5;

/// Durations log-normal with median `median` seconds and σ `sigma` of the log, as a
/// piecewise-uniform model: even steps in log-duration up to `REACH` σ either side, the
/// little mass beyond as a first piece from 0 and a last, unbounded one.
pub(super) fn lognormal(median: f64, sigma: f64) -> DurationModel {
    let at = |z: f64| median * (z * sigma).exp();
    let mut pieces = Vec::with_capacity(PIECES as usize + 2);
    let (mut lo, mut below) = (at(-REACH), normal_cdf(-REACH));
    pieces.push((0.0, lo, below));
    for i in 1..=PIECES {
        let z = -REACH + 2.0 * REACH * f64::from(i) / f64::from(PIECES);
        let (hi, cdf) = (at(z), normal_cdf(z));
        pieces.push((lo, hi, cdf - below));
        (lo, below) = (hi, cdf);
    }
    pieces.push((lo, f64::INFINITY, 1.0 - below));
    DurationModel::from_pieces(pieces)
}

/// The standard normal distribution function, from the complementary error function
/// (Numerical Recipes' Chebyshev fit, fractional error below 1.2 × 10⁻⁷).
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| acc * t + c);
    let erfc = t * (-x * x + poly).exp();
    if z >= 0.0 {
        1.0 - erfc / 2.0
    } else {
        erfc / 2.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    #[test]
    fn normal_cdf_table() {
        for (z, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746),
            (-1.0, 0.158_655_254),
            (1.96, 0.975_002_105),
            (-3.0, 0.001_349_898),
            (4.5, 0.999_996_602),
        ] {
            let got = normal_cdf(z);
            assert!((got - want).abs() < 1e-7, "Φ({z}) = {got}, not {want}");
        }
    }

    #[test]
    fn the_prior_has_the_quantiles_of_its_lognormal() {
        let m = lognormal(30.0, 0.8);
        let q = |p: f64| m.quantile(p).unwrap().as_secs_f64();
        assert!((q(0.5) - 30.0).abs() < 0.05, "{}", q(0.5));
        // Φ(±1) = 0.1587 / 0.8413: 30 · e^∓0.8.
        assert!((q(0.158_655_254) - 30.0 * (-0.8f64).exp()).abs() < 0.05);
        assert!((q(0.841_344_746) - 30.0 * 0.8f64.exp()).abs() < 0.1);
        assert!((m.cdf(Duration::from_secs(30)) - 0.5).abs() < 1e-6);
        // What lies beyond its reach has no place: the schedule falls back there.
        assert_eq!(m.quantile(1.0), None);
    }
}
