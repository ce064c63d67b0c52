//! SVG plots of the report: latency vs concurrency (sweep), resident memory
//! vs held streams (held) and CPU per call over a busy session's life.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use super::figures::Findings;
use super::target::Target;

/// One line of a chart.
struct Series {
    target: Target,
    points: Vec<(f64, f64)>,
}

/// A line chart's frame.
struct Frame<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x: Range<f64>,
    /// Tick labels on the x axis, and how a tick value reads.
    x_ticks: usize,
    x_label: &'a dyn Fn(&f64) -> String,
}

/// Draws one plot's series into a file.
type Plot = fn(&[Series], &Path) -> anyhow::Result<()>;

/// Each target's colour, the same in every plot.
fn colour(target: Target) -> RGBColor {
    match target {
        Target::Direct => RGBColor(90, 90, 90),
        Target::Nginx => RGBColor(0, 150, 60),
        Target::ShadowcatMemory => RGBColor(30, 90, 200),
        Target::ShadowcatRedis => RGBColor(210, 40, 40),
        Target::ShadowcatAuth => RGBColor(140, 60, 200),
        Target::ShadowcatPolicy1 | Target::ShadowcatPolicy10 | Target::ShadowcatPolicy100 => {
            RGBColor(200, 140, 0)
        }
        Target::ShadowcatHook => RGBColor(0, 160, 160),
    }
}

/// Writes every plot the findings have data for into `dir`; returns their paths.
pub fn write_all(findings: &Findings, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let plots: [(&str, Option<Vec<Series>>, Plot); 3] = [
        (
            "latency-vs-concurrency.svg",
            latency_series(findings),
            latency_plot,
        ),
        ("rss-vs-streams.svg", rss_series(findings), rss_plot),
        ("busy-session.svg", busy_series(findings), busy_plot),
    ];
    for (name, series, plot) in plots {
        if let Some(series) = series.filter(|s| !s.is_empty()) {
            let path = dir.join(name);
            plot(&series, &path).with_context(|| format!("drawing {}", path.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Points grouped by target, in first-seen order.
fn group(points: impl Iterator<Item = (Target, f64, f64)>) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for (target, x, y) in points.filter(|(_, _, y)| y.is_finite()) {
        match series.iter_mut().find(|s| s.target == target) {
            Some(s) => s.points.push((x, y)),
            None => series.push(Series {
                target,
                points: vec![(x, y)],
            }),
        }
    }
    series
}

/// sweep: (log2 connections, p50 ms) per target.
fn latency_series(f: &Findings) -> Option<Vec<Series>> {
    let points = f.sweep.iter().flat_map(|t| {
        t.rows.iter().map(move |r| {
            let x = (t.concurrency as f64).log2();
            (r.target, x, r.summary.latency_ms.p50)
        })
    });
    Some(group(points))
}

/// held: (streams, RSS MiB) per target, from 0 streams (before the first count).
fn rss_series(f: &Findings) -> Option<Vec<Series>> {
    let mut points = Vec::new();
    for (i, h) in f.held.iter().enumerate() {
        let first = f.held[..i].iter().all(|e| e.target != h.target);
        if first && let Some(kib) = h.rss_before_kib {
            points.push((h.target, 0.0, kib as f64 / 1024.0));
        }
        if let Some(kib) = h.rss_after_kib {
            points.push((h.target, h.opened as f64, kib as f64 / 1024.0));
        }
    }
    Some(group(points.into_iter()))
}

/// busy-session: (calls so far, proxy CPU µs/req) per target; a single
/// baseline window is drawn across the whole width.
fn busy_series(f: &Findings) -> Option<Vec<Series>> {
    let end = f.busy.iter().map(|w| w.calls_end).max()? as f64;
    let mut series = group(
        f.busy
            .iter()
            .filter_map(|w| Some((w.target, w.calls_end as f64, w.proxy_cpu_us?))),
    );
    for s in &mut series {
        if let [(_, y)] = s.points[..] {
            s.points = vec![(0.0, y), (end, y)];
        }
    }
    Some(series)
}

fn latency_plot(series: &[Series], path: &Path) -> anyhow::Result<()> {
    let (lo, hi) = x_bounds(series);
    let label = |v: &f64| format!("{:.0}", v.exp2());
    let frame = Frame {
        title: "session-json: p50 latency vs connections",
        x_desc: "connections (log scale)",
        y_desc: "p50 ms",
        x: lo.floor()..hi.ceil().max(lo.floor() + 1.0),
        x_ticks: (hi.ceil() - lo.floor()) as usize + 1,
        x_label: &label,
    };
    draw(path, &frame, series)
}

fn rss_plot(series: &[Series], path: &Path) -> anyhow::Result<()> {
    let (_, hi) = x_bounds(series);
    let label = |v: &f64| format!("{v:.0}");
    let frame = Frame {
        title: "resident memory vs held streams",
        x_desc: "held streams (one session each)",
        y_desc: "RSS MiB",
        x: 0.0..hi.max(1.0),
        x_ticks: 6,
        x_label: &label,
    };
    draw(path, &frame, series)
}

fn busy_plot(series: &[Series], path: &Path) -> anyhow::Result<()> {
    let (_, hi) = x_bounds(series);
    let label = |v: &f64| format!("{v:.0}");
    let frame = Frame {
        title: "busy-session: proxy CPU per call as one session grows",
        x_desc: "calls on the session",
        y_desc: "proxy CPU µs/req",
        x: 0.0..hi.max(1.0),
        x_ticks: 6,
        x_label: &label,
    };
    draw(path, &frame, series)
}

/// The smallest and largest x of every series.
fn x_bounds(series: &[Series]) -> (f64, f64) {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// Draws `series` as lines with markers, from y = 0, with a legend.
fn draw(path: &Path, frame: &Frame<'_>, series: &[Series]) -> anyhow::Result<()> {
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(frame.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(frame.x.clone(), 0.0..y_max.max(f64::EPSILON))?;
    chart
        .configure_mesh()
        .x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .x_labels(frame.x_ticks)
        .x_label_formatter(frame.x_label)
        .draw()?;
    for s in series {
        let c = colour(s.target);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?
            .label(s.target.label())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
