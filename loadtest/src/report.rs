//! The report: `report.json`, `report.md` and `plot.svg`.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::stats::Summary;

/// Requests per job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RequestStats {
    /// Mean over jobs.
    pub mean: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// What one strategy achieved on one scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StrategyResult {
    /// Strategy name.
    pub name: String,
    /// Mechanism the waits used (most common one).
    pub mechanism: String,
    /// Jobs waited for.
    pub jobs: usize,
    /// Status requests per job, as counted by the client.
    pub requests_per_job: RequestStats,
    /// The server's `completed_at` → the moment the wait returned, in milliseconds.
    pub detection_delay_ms: Summary,
    /// Waits whose outcome differs from the job's real one, or that were lost.
    pub wrong_outcomes: usize,
    /// Waits that gave up (deadline) before the job ended.
    pub gave_up: usize,
    /// Requests per second the server answered while this strategy ran (its own simulator).
    pub server_rps: f64,
    /// Requests per job ÷ the known-distribution optimum's at the same mean delay (plain
    /// polling strategies; `None` when the delay is outside the optimum's curve).
    pub optimum_ratio: Option<f64>,
    /// Hedged requests sent (0 when hedging is off).
    pub hedges: u64,
    /// Times the circuit breaker opened.
    pub breaker_opens: u64,
    /// Wall time of the whole strategy run, in milliseconds.
    pub wall_time_ms: u64,
    /// Highest number of status requests the server answered in one second.
    pub peak_rps: f64,
    /// Mean requests per second, from the first second with a request to the last.
    pub mean_rps: f64,
    /// HTTP requests each target answered while this strategy ran (`sim_http_requests_total`),
    /// in the order of `--target`: how a run spread over several replicas shared its load.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests_by_target: Vec<TargetRequests>,
}

/// The HTTP requests one target answered during a strategy's run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetRequests {
    /// The target's base URL.
    pub target: String,
    /// Requests it answered (every route).
    pub requests: f64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario, as run.
    pub scenario: serde_json::Value,
    /// One row per strategy.
    pub strategies: Vec<StrategyResult>,
}

/// One point of the fixed-interval reference curve: (interval ms, requests/job, delay ms).
pub type CurvePoint = (f64, f64, f64);

/// The fixed-interval trade-off for these job durations: polling at once and then every `I`
/// makes `1 + ceil(D / I)` requests and learns `ceil(D / I)·I − D` late, averaged over the
/// jobs. (The look at once is every wait's, the measured fixed pollers' too, so that a fixed
/// poller's point lies on the curve.)
pub fn fixed_interval_curve(durations_ms: &[f64]) -> Vec<CurvePoint> {
    if durations_ms.is_empty() {
        return Vec::new();
    }
    let n = durations_ms.len() as f64;
    (0..=40)
        .map(|i| 10f64.powf(1.0 + i as f64 * 0.1)) // 10 ms .. 100 s
        .map(|interval| {
            let (mut requests, mut delay) = (0.0, 0.0);
            for d in durations_ms {
                let polls = (d / interval).ceil().max(1.0);
                requests += 1.0 + polls;
                delay += polls * interval - d;
            }
            (interval, requests / n, delay / n)
        })
        .collect()
}

/// The known-distribution optimum for plain polling: for each price of a request, the
/// schedule that minimises requests plus delay ÷ price on the distribution whose distribution
/// function is `cdf` (seconds), found by dynamic programming over `grid` (increasing ages,
/// seconds, the last where `cdf` is about 1). Every wait makes a first look at age 0, as the
/// SDK does, and it is counted. Returns (price ms, requests/job, delay ms) points, fewest
/// requests first.
pub fn optimum_curve(cdf: impl Fn(f64) -> f64, grid: &[f64]) -> Vec<CurvePoint> {
    let mut t = Vec::with_capacity(grid.len() + 1);
    t.push(0.0);
    t.extend(grid.iter().copied().filter(|&x| x > 0.0));
    let f: Vec<f64> = t.iter().map(|&x| cdf(x).clamp(0.0, 1.0)).collect();
    // g[i] = ∫₀^t[i] F: trapezoids.
    let mut g = vec![0.0; t.len()];
    for i in 1..t.len() {
        g[i] = g[i - 1] + (f[i] + f[i - 1]) / 2.0 * (t[i] - t[i - 1]);
    }
    let n = t.len();
    let mut points = Vec::new();
    for k in 0..=45 {
        // 0.01 % of the range to three times it: from one look per grid step to none.
        let price = 10f64.powf(-4.0 + k as f64 * 0.1) * t[n - 1];
        // best[i]: the least cost of the looks after one at t[i] (unnormalised: weighted by
        // the chance the job is still running there); next[i]: where the next one goes.
        let mut best = vec![0.0; n];
        let mut next = vec![n - 1; n];
        for i in (0..n - 1).rev() {
            let mut choice = (f64::INFINITY, n - 1);
            for j in i + 1..n {
                let delay = g[j] - g[i] - f[i] * (t[j] - t[i]);
                let cost = (1.0 - f[i]) + delay / price + best[j];
                if cost < choice.0 {
                    choice = (cost, j);
                }
            }
            (best[i], next[i]) = choice;
        }
        let (mut requests, mut delay, mut i) = (1.0, 0.0, 0);
        while i < n - 1 {
            let j = next[i];
            requests += 1.0 - f[i];
            delay += g[j] - g[i] - f[i] * (t[j] - t[i]);
            i = j;
        }
        points.push((price * 1000.0, requests, delay * 1000.0));
    }
    points.sort_by(|a, b| a.1.total_cmp(&b.1));
    points
}

/// The optimum's requests at a mean delay of `delay_ms` (interpolated in log-log between
/// the curve's points; `None` outside it).
pub fn optimum_at(curve: &[CurvePoint], delay_ms: f64) -> Option<f64> {
    curve.windows(2).find_map(|w| {
        let ((_, r0, d0), (_, r1, d1)) = (w[0], w[1]);
        let (lo, hi) = (d1.min(d0), d1.max(d0));
        if !(lo..=hi).contains(&delay_ms) || lo <= 0.0 {
            return None;
        }
        if (d0 - d1).abs() < 1e-12 {
            return Some(r0.min(r1));
        }
        let x = (delay_ms.ln() - d0.ln()) / (d1.ln() - d0.ln());
        Some((r0.ln() + x * (r1.ln() - r0.ln())).exp())
    })
}

impl Report {
    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| strategy | mechanism | requests/job mean | requests/job p99 | delay mean ms | delay p50 ms | delay p99 ms | × optimum | wrong | gave up | peak/mean rps | wall s |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for s in &self.strategies {
            let d = &s.detection_delay_ms;
            let ratio = s
                .optimum_ratio
                .map_or_else(|| "–".to_string(), |r| format!("{r:.2}"));
            out.push_str(&format!(
                "| {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.0}/{:.0} | {:.1} |\n",
                s.name,
                s.mechanism,
                s.requests_per_job.mean,
                s.requests_per_job.p99,
                d.mean,
                d.p50,
                d.p99,
                ratio,
                s.wrong_outcomes,
                s.gave_up,
                s.peak_rps,
                s.mean_rps,
                s.wall_time_ms as f64 / 1000.0,
            ));
        }
        if self
            .strategies
            .iter()
            .any(|s| s.requests_by_target.len() > 1)
        {
            out.push_str("\nRequests answered per target:\n\n");
            for s in &self.strategies {
                let each: Vec<String> = s
                    .requests_by_target
                    .iter()
                    .map(|t| format!("{} {:.0}", t.target, t.requests))
                    .collect();
                out.push_str(&format!("- {}: {}\n", s.name, each.join(", ")));
            }
        }
        out
    }

    /// Writes `report.json`, `report.md` and `plot.svg` into `dir`.
    pub fn write(
        &self,
        dir: &Path,
        curve: &[CurvePoint],
        optimum: &[CurvePoint],
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        let md = format!(
            "# Load-test report\n\nScenario: `{}`\n\n{}",
            self.scenario,
            self.markdown()
        );
        std::fs::write(dir.join("report.md"), md)?;
        plot(&dir.join("plot.svg"), &self.strategies, curve, optimum)
    }
}

/// Requests/job (x, log) against mean detection delay (y, log), one point per strategy,
/// with the fixed-interval curve for reference and the known-distribution optimum of plain
/// polling (the best any schedule can do on the jobs' distribution).
pub fn plot(
    path: &Path,
    rows: &[StrategyResult],
    curve: &[CurvePoint],
    optimum: &[CurvePoint],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let xs = rows
        .iter()
        .map(|r| r.requests_per_job.mean)
        .chain(curve.iter().map(|c| c.1));
    let ys = rows
        .iter()
        .map(|r| r.detection_delay_ms.mean)
        .chain(curve.iter().map(|c| c.2));
    let x_max = xs.fold(2.0f64, f64::max).min(10_000.0) * 1.5;
    let y_max = ys.fold(10.0f64, f64::max).min(1e6) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Requests per job vs mean detection delay (lower-left is better)",
            ("sans-serif", 18),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0.8f64..x_max).log_scale(), (0.1f64..y_max).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("status requests per job (mean)")
        .y_desc("detection delay, ms (mean)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let reference: Vec<(f64, f64)> = curve
        .iter()
        .map(|c| (c.1, c.2.max(0.1)))
        .filter(|(x, y)| *x >= 0.8 && *x <= x_max && *y <= y_max)
        .collect();
    chart
        .draw_series(LineSeries::new(reference, BLUE.mix(0.6).stroke_width(2)))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("fixed interval (reference)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let limit: Vec<(f64, f64)> = optimum
        .iter()
        .map(|c| (c.1, c.2.max(0.1)))
        .filter(|(x, y)| *x >= 0.8 && *x <= x_max && *y <= y_max)
        .collect();
    if !limit.is_empty() {
        chart
            .draw_series(LineSeries::new(limit, GREEN.mix(0.8).stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("known-distribution optimum (plain polling, limit)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    }
    for (i, r) in rows.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let at = (
            r.requests_per_job.mean.max(0.8),
            r.detection_delay_ms.mean.max(0.1),
        );
        chart
            .draw_series([Circle::new(at, 6, colour.filled())])
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(r.name.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_interval_curve_matches_hand_computation() {
        // Jobs of 1000 ms and 3000 ms polled at once and every 1000 ms: 2 and 4 polls, never
        // late.
        let curve = fixed_interval_curve(&[1000.0, 3000.0]);
        let p = curve
            .iter()
            .find(|c| (c.0 - 1000.0).abs() < 1e-6)
            .copied()
            .unwrap();
        assert_eq!((p.1, p.2), (3.0, 0.0));
        // Every 10 s: two polls each, 9 s and 7 s late.
        let p = curve
            .iter()
            .find(|c| (c.0 - 10_000.0).abs() < 1e-6)
            .unwrap();
        assert_eq!((p.1, p.2), (2.0, 8000.0));
    }

    #[test]
    fn the_optimum_of_a_uniform_distribution_matches_its_closed_form() {
        // Uniform on [10, 20] s. Looks at 0, then every h from 10 s on, make 2.5 + 5 / h
        // requests for h / 2 of delay: the optimum does at least as well, and needs at
        // least the look at 0 and one more.
        let cdf = |t: f64| ((t - 10.0) / 10.0).clamp(0.0, 1.0);
        let grid: Vec<f64> = (1..=400).map(|i| f64::from(i) * 0.05).collect();
        let curve = optimum_curve(cdf, &grid);
        assert!(curve.windows(2).all(|w| w[0].1 <= w[1].1));
        // Fewer requests, more delay.
        assert!(curve.first().unwrap().2 > curve.last().unwrap().2);
        for &(_, requests, delay) in &curve {
            let h = 2.0 * delay / 1000.0;
            if h > 0.05 && h < 5.0 {
                let grid_requests = 2.5 + 5.0 / h;
                assert!(
                    requests <= grid_requests + 0.05,
                    "{requests} vs {grid_requests} at {delay}"
                );
                assert!(requests >= 2.0, "{requests}");
            }
        }
        let mid = curve[curve.len() / 2];
        let at = optimum_at(&curve, mid.2).unwrap();
        assert!((at - mid.1).abs() < 1e-6);
        assert_eq!(optimum_at(&curve, 1e12), None);
    }

    #[test]
    fn report_files_are_written() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", std::process::id()));
        let report = Report {
            scenario: serde_json::json!({"jobs": 2}),
            strategies: vec![StrategyResult {
                name: "auto".into(),
                mechanism: "sse".into(),
                jobs: 2,
                requests_per_job: RequestStats {
                    mean: 1.0,
                    p99: 1.0,
                },
                detection_delay_ms: Summary::of([1.0, 2.0]),
                ..StrategyResult::default()
            }],
        };
        report
            .write(&dir, &fixed_interval_curve(&[500.0, 800.0]), &[])
            .unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["strategies"][0]["requests_per_job"]["mean"], 1.0);
        assert_eq!(json["strategies"][0]["detection_delay_ms"]["p99"], 2.0);
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("| auto | sse | 1.00 |"), "{md}");
        let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("auto"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
