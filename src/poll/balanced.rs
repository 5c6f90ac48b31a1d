//! Where to look next, given a distribution of durations.
//!
//! # Each look is worth the delay it saves
//!
//! A look costs one request; fewer looks cost detection delay. With the job known to be
//! running at age `a` and durations distributed as `F`, a next look at `x` finds a job that
//! ends in `(a, x]` at `x`, so the interval's expected delay, given the job was running at
//! `a`, is
//!
//! ```text
//! ∫ₐˣ (F(u) − F(a)) du / (1 − F(a))
//! ```
//!
//! The schedule looks next where that reaches `worth`: the delay one request is worth. Every
//! interval then carries the same expected delay, so looks are dense where jobs end and
//! sparse where they do not — past an empty stretch (no job ends in its first seconds) the
//! first look jumps straight to where the mass begins. Where the density is locally flat the
//! interval is `√(2 · worth / hazard)`, which, to first order, is the spacing that minimises
//! requests plus delay ÷ `worth` (inspection schedules, Barlow & Proschan); and since each
//! interval adds `worth` of expected delay, the mean detection delay is about `worth` times
//! the number of looks after the first.
//!
//! `F` is read from the model's equal-mass cells (eight samples each) rather than from the
//! raw fit, whose spikes would draw every look to just past them. It is piecewise linear, so
//! the integral is a sum of trapezoids: one walk over the cells, no iteration.

use super::DurationModel;

/// The age (in seconds) of the next look after `age`, for a job known to be running at
/// `age`: the first `x` at which the expected delay accrued in `(age, x]` reaches `worth`
/// seconds. `None` when the model's mass beyond `age` cannot accrue that much (it ends, or
/// only jobs that were never seen to end remain).
pub(super) fn next_look(model: &DurationModel, age: f64, worth: f64) -> Option<f64> {
    if !(age.is_finite() && worth.is_finite() && worth > 0.0) {
        return None;
    }
    let pieces = model.cells();
    let before: f64 = pieces
        .iter()
        .map(|&(lo, hi, mass)| mass * ((age - lo) / (hi - lo)).clamp(0.0, 1.0))
        .sum();
    let target = worth * (1.0 - before).max(0.0);
    // Walk the segments on which F is linear, from `x` on: `gained` is F(x) − F(age), `accrued`
    // the integral so far.
    let (mut x, mut gained, mut accrued) = (age, 0.0_f64, 0.0_f64);
    for &(lo, hi, mass) in pieces {
        if hi <= x || !hi.is_finite() {
            continue;
        }
        // A gap before the piece: F is flat.
        if lo > x {
            if gained > 0.0 && accrued + gained * (lo - x) >= target {
                return Some(x + (target - accrued) / gained);
            }
            accrued += gained * (lo - x);
            x = lo;
        }
        // Inside the piece: F rises at `density`; solve gained·d + density·d²/2 = left.
        let density = mass / (hi - lo);
        let span = hi - x;
        let step = gained * span + density * span * span / 2.0;
        if accrued + step >= target {
            let left = target - accrued;
            let d = if density > 0.0 {
                (-gained + (gained * gained + 2.0 * density * left).sqrt()) / density
            } else {
                left / gained
            };
            return Some(x + d.clamp(0.0, span));
        }
        accrued += step;
        gained += density * span;
        x = hi;
    }
    // Past the last finite piece F is flat again.
    (gained > 0.0).then(|| x + (target - accrued) / gained)
}

/// Samples' worth of mass per cell of the density the schedule reads.
const SAMPLES_PER_CELL: f64 = 8.0;

/// The density the schedule reads, from a fit's `pieces` and the `brackets` it was fitted to.
///
/// The maximum-likelihood fit puts the mass of interval-censored samples on the few narrow
/// intervals where brackets happen to overlap, with gaps between them. That is right for its
/// quantiles, but a schedule that followed it would look just after each spike and find the
/// jobs that end in the gaps late. So each piece's mass is spread over the narrowest bracket
/// that contains it — all that the data say about where it lies — and the result is
/// regrouped into cells of eight samples' worth each, uniform within (an equal-mass
/// histogram). Where brackets pin the durations down (jobs of a fixed length, exact
/// samples) the narrowest brackets are narrow and nothing is blurred. Mass never seen to end
/// (waits that gave up) keeps its infinite piece.
pub(super) fn density(pieces: &[(f64, f64, f64)], brackets: &[(f64, f64)]) -> Vec<(f64, f64, f64)> {
    let spread: Vec<(f64, f64, f64)> = pieces
        .iter()
        .map(|&(lo, hi, mass)| {
            let narrowest = brackets
                .iter()
                .filter(|&&(a, b)| a <= lo && hi <= b && b.is_finite())
                .min_by(|x, y| (x.1 - x.0).total_cmp(&(y.1 - y.0)))
                .copied()
                .unwrap_or((lo, hi));
            (narrowest.0, narrowest.1, mass)
        })
        .collect();
    let per_cell = (SAMPLES_PER_CELL / brackets.len().max(1) as f64).min(1.0);
    cells(&overlay(&spread), per_cell)
}

/// Overlapping uniform boxes `(lo, hi, mass)` as disjoint pieces, densities summed.
fn overlay(boxes: &[(f64, f64, f64)]) -> Vec<(f64, f64, f64)> {
    let mut events: Vec<(f64, f64)> = Vec::with_capacity(boxes.len() * 2);
    let mut unending: Option<(f64, f64)> = None;
    for &(lo, hi, mass) in boxes {
        if hi.is_finite() {
            let density = mass / (hi - lo);
            events.push((lo, density));
            events.push((hi, -density));
        } else {
            let (from, total) = unending.unwrap_or((lo, 0.0));
            unending = Some((from.min(lo), total + mass));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let mut density = 0.0_f64;
    for pair in events.windows(2) {
        density += pair[0].1;
        let (from, to) = (pair[0].0, pair[1].0);
        if to > from && density > 1e-12 {
            out.push((from, to, density * (to - from)));
        }
    }
    if let Some((from, mass)) = unending {
        let from = out.last().map_or(from, |&(_, hi, _)| from.max(hi));
        out.push((from, f64::INFINITY, mass));
    }
    out
}

/// Regroups `pieces` into cells of `per_cell` mass each (the last finite one may hold less),
/// uniform within: an equal-mass histogram of the fit.
///
/// The maximum-likelihood fit puts the mass of interval-censored samples on the few narrow
/// intervals where brackets happen to overlap, leaving gaps between them; that is right for
/// the quantiles, but a schedule that read its density would look just after each spike and
/// find the jobs that end in the gaps late. Cells of a few samples each keep the shape and
/// drop the spikes; where the fit has collapsed onto a narrow interval (jobs of a fixed
/// length), the cells are as narrow. Mass never seen to end (waits that gave up) stays as it
/// was, on its infinite piece.
fn cells(pieces: &[(f64, f64, f64)], per_cell: f64) -> Vec<(f64, f64, f64)> {
    let per_cell = per_cell.clamp(1e-6, 1.0);
    let mut out = Vec::new();
    let (mut start, mut held, mut last) = (None::<f64>, 0.0, 0.0_f64);
    for &(lo, hi, mass) in pieces {
        if !hi.is_finite() {
            if let Some(from) = start.filter(|_| held > 1e-9) {
                out.push((from, last.max(from + 1e-6), held));
            }
            out.push((lo, hi, mass));
            return out;
        }
        last = hi;
        let (mut at, mut left) = (lo, mass);
        let from = *start.get_or_insert(lo);
        let mut from = from;
        while held + left >= per_cell {
            // The cell closes inside this piece.
            let take = per_cell - held;
            let end = (at + (hi - at) * (take / left).min(1.0)).max(from + 1e-6);
            out.push((from, end, per_cell));
            from = end;
            left -= take;
            held = 0.0;
            at = end.min(hi);
            start = Some(end);
        }
        held += left;
    }
    if let Some(from) = start.filter(|_| held > 1e-9) {
        out.push((from, last.max(from + 1e-6), held));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::poll::Sample;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    /// Uniform on `[lo, hi]`, as 100 exact samples.
    fn uniform(lo: f64, hi: f64) -> DurationModel {
        let samples: Vec<Sample> = (0..100)
            .map(|i| Sample::exact(s(lo + (hi - lo) * (f64::from(i) + 0.5) / 100.0)))
            .collect();
        DurationModel::fit(&samples)
    }

    #[test]
    fn closed_forms_on_a_uniform_distribution() {
        let m = uniform(10.0, 20.0);
        // Before the mass, the first look jumps to where (x − 10)² / 20 = worth.
        let x = next_look(&m, 0.0, 0.2).unwrap();
        assert!((x - 12.0).abs() < 0.05, "{x}");
        // Running at 15 s: the rest is uniform on [15, 20], so (x − 15)² / 10 = worth.
        let x = next_look(&m, 15.0, 0.1).unwrap();
        assert!((x - 16.0).abs() < 0.05, "{x}");
        // Dearer requests, sparser looks: √ of the worth.
        let wide = next_look(&m, 15.0, 0.4).unwrap();
        assert!((wide - 17.0).abs() < 0.05, "{wide}");
        // A worth larger than the rest can accrue inside the mass: past its end, F is flat
        // at 1, and the delay grows one for one (x − mean of the rest).
        let x = next_look(&m, 15.0, 5.0).unwrap();
        assert!((x - 22.5).abs() < 0.05, "{x}");
    }

    #[test]
    fn a_narrow_mass_is_looked_at_just_past_its_end() {
        // Jobs of 2 s, pinned to within 40 ms.
        let samples: Vec<Sample> = (0..20).map(|_| Sample::between(s(1.98), s(2.02))).collect();
        let m = DurationModel::fit(&samples);
        let x = next_look(&m, 0.0, 0.003).unwrap();
        assert!((1.98..2.02).contains(&x), "{x}");
        let x = next_look(&m, 0.0, 0.05).unwrap();
        assert!((x - 2.05).abs() < 1e-6, "{x}");
    }

    #[test]
    fn nothing_beyond_the_mass() {
        let m = uniform(10.0, 20.0);
        assert_eq!(next_look(&m, 25.0, 0.1), None);
        assert_eq!(next_look(&DurationModel::default(), 0.0, 0.1), None);
        assert_eq!(next_look(&m, 0.0, 0.0), None);
        assert_eq!(next_look(&m, f64::NAN, 0.1), None);
        // Only waits that gave up remain beyond 20 s: where they end is unknown.
        let mut samples: Vec<Sample> = (0..8)
            .map(|i| Sample::exact(s(10.0 + f64::from(i))))
            .collect();
        samples.push(Sample::at_least(s(20.0)));
        let m = DurationModel::fit(&samples);
        assert_eq!(next_look(&m, 18.0, 0.1), None);
        assert!(next_look(&m, 12.5, 0.1).is_some());
    }

    /// Expected looks and delay of the whole schedule on the model's own distribution,
    /// against the best fixed interval with the same delay.
    #[test]
    fn beats_every_fixed_interval_on_the_distribution_it_knows() {
        let m = uniform(10.0, 20.0);
        for worth in [0.05, 0.2, 0.5] {
            let (mut looks, mut delay) = (0.0, 0.0);
            for i in 0..1000 {
                let end = 10.0 + 10.0 * (f64::from(i) + 0.5) / 1000.0;
                let mut at = 0.0;
                let mut n = 1.0;
                while at < end {
                    at = next_look(&m, at, worth).unwrap_or(at + 1.0);
                    n += 1.0;
                }
                looks += n / 1000.0;
                delay += (at - end) / 1000.0;
            }
            // A fixed interval with that delay: I = 2 × delay, 15 / I looks plus the first
            // and the last.
            let fixed = 15.0 / (2.0 * delay) + 1.5;
            assert!(
                looks < fixed * 0.8,
                "worth {worth}: {looks} looks vs {fixed}"
            );
            assert!(
                (delay / (looks - 1.0) - worth).abs() < worth * 0.5,
                "{delay}"
            );
        }
    }
}
