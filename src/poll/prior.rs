//! What the cold start assumes before anything is learned: nothing about the scale.
//!
//! # A scale-free prior
//!
//! A video translation may take two seconds or fifteen minutes, and before the first job has
//! ended the client cannot tell which. Any schedule built around a typical duration is wrong
//! by a factor of ten for someone: a prior of 30 s jobs looks first at 6.7 s, and finds a 3 s
//! job 4 s late. So the cold start assumes no scale: durations are equally likely in every
//! octave (a log-uniform prior), and a second of delay matters in proportion to the job's
//! age. The schedule that balances the two is geometric — every look at a fixed multiple of
//! the age of the one before:
//!
//! * the first look after the initial one lands at `first · √2ᵘ` (0.6 s to 0.85 s by
//!   default), with `u` uniform in `[0, 1)` and drawn once per wait (so no duration is
//!   found systematically late, and waits started together do not look in step);
//! * every later look at √2 times the age of the one before — two looks per doubling;
//! * never more than `max` (2 min by default) after the one before.
//!
//! What that costs can be checked by hand. A job that ends at `T` seconds is found by a
//! look that is, on average over `u`, `(√2 − 1) / ln √2 − 1 ≈ 19.5 %` of `T` late, and
//! after `1 + 2 · log₂(T / 0.6 s)` looks besides the initial one (3.5 requests in all for a
//! 1 s job, 10 for 10 s, 13 for 30 s, 17 for 100 s; from about five minutes on, the 2 min cap
//! sets the pace: 22 requests and about a minute late for 10 min). No fixed interval is
//! 20 % of both a 1 s and a 10 min job.

use std::time::Duration;

#[cfg(test)]
use super::DurationModel;

/// Where the first look after the initial one goes, at the earliest (it lands in
/// `[FIRST, √2 · FIRST)`).
pub(super) const FIRST: Duration = Duration::from_millis(600);
/// The most the cold start waits between two looks.
pub(super) const MAX_INTERVAL: Duration = Duration::from_secs(120);
/// The ratio of the ages of two successive looks.
const RATIO: f64 = std::f64::consts::SQRT_2;

/// The age (in seconds) of the cold start's next look, after a pending answer at `age`.
/// After the initial look (`polls` ≤ 1): the first point of the grid `first · √2^(k + u)`
/// (`k` = 0, 1, …; `u` = `random`) past `age`. Later: `max(age · √2, first)`.
pub(super) fn next_look(age: f64, polls: u32, random: f64, first: f64) -> f64 {
    let age = if age.is_finite() { age.max(0.0) } else { 0.0 };
    if polls > 1 {
        return (age * RATIO).max(first);
    }
    let u = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let k = ((age / first).log(RATIO) - u).ceil().max(0.0);
    let next = first * RATIO.powf(k + u);
    if next > age { next } else { next * RATIO }
}

/// Pieces of a log-normal model (for tests), evenly spaced in standard deviations.
#[cfg(test)]
const PIECES: u32 = 240;
/// How many standard deviations the prior's pieces reach either side of the median.
#[cfg(test)]
const REACH: f64 = 4.5;

/// Durations log-normal with median `median` seconds and σ `sigma` of the log, as a
/// piecewise-uniform model: even steps in log-duration up to `REACH` σ either side, the
/// little mass beyond as a first piece from 0 and a last, unbounded one.
#[cfg(test)]
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
#[cfg(test)]
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
