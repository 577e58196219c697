//! The run's pictures: the cumulative distribution of lookup and of provide latencies, one
//! curve per network, as SVG (plotters with only its SVG backend and line series).

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

use crate::options::Kind;
use crate::report::Report;

const SIZE: (u32, u32) = (900, 560);

/// Which of a report's samples a picture shows.
pub type Samples = fn(&Report) -> &[f64];

/// A colour per network that stays the same from one picture to the next.
fn colour(kind: Kind) -> RGBColor {
    match kind {
        Kind::Kadence => RGBColor(31, 119, 180),
        Kind::KadDefault => RGBColor(214, 39, 40),
        Kind::KadAlpha10 => RGBColor(255, 127, 14),
        Kind::KadenceBetaFinish => RGBColor(44, 160, 44),
        Kind::KadenceAccel => RGBColor(148, 103, 189),
    }
}

/// The empirical CDF of `values` as a staircase: (value, share of values at most it).
fn staircase(values: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len() as f64;
    let mut points = Vec::with_capacity(2 * sorted.len());
    for (i, &v) in sorted.iter().enumerate() {
        points.push((v, i as f64 / n));
        points.push((v, (i + 1) as f64 / n));
    }
    points
}

/// Round values (1, 2, 5 times a power of ten) within `lo..hi`: where the log axis is labelled.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for step in [1.0, 2.0, 5.0] {
            let v = decade * step;
            if (lo..=hi).contains(&v) {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// Draws the CDF of `samples(report)` for every report into `path`; x is logarithmic, as
/// latencies under churn span from tens of milliseconds to tens of seconds.
pub fn cdf(
    path: &Path,
    title: &str,
    x_label: &str,
    reports: &[Report],
    samples: Samples,
) -> Result<(), Box<dyn Error>> {
    let all = reports.iter().flat_map(|r| samples(r).iter().copied());
    let (lo, hi) = all
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Err("no samples to draw".into());
    }
    // Room on both sides, and at least from 1 to 2 times a round value, so that the axis has
    // two labelled ticks.
    let (lo, hi) = ((lo * 0.9).max(1.0), (hi * 1.1).max(lo * 2.5));

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(
            (lo..hi).log_scale().with_key_points(ticks(lo, hi)),
            0.0..1.0,
        )?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("share at most x")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    for report in reports {
        let values = samples(report);
        if values.is_empty() {
            continue;
        }
        let style = colour(report.kind).stroke_width(2);
        chart
            .draw_series(LineSeries::new(staircase(values), style))?
            .label(format!("{} ({} samples)", report.name, values.len()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
