//! SVG charts for the report, drawn with `plotters`' SVG backend only: text is written
//! as SVG `<text>` (sizes estimated, no font files), bars are rectangles, distributions
//! are line series. Every axis with values over several decades is logarithmic.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::*;
use crate::workloads::METRICS;

pub const LOCAL_SMALL: &str = "local-small-files.svg";
pub const LOCAL_SEQ: &str = "local-sequential.svg";
pub const LOCAL_RAND: &str = "local-random-reads.svg";
pub const TREE: &str = "deployment-tree.svg";
pub const VISIBILITY: &str = "visibility-cdf.svg";
pub const BURST: &str = "burst-convergence.svg";

const FONT: &str = "sans-serif";

/// The colour of a system, the same in every chart.
fn color(label: &str) -> RGBColor {
    match label {
        NATIVE => RGBColor(110, 110, 110),
        BINDFS => RGBColor(240, 150, 30),
        NFS => RGBColor(150, 90, 190),
        DEPFS1 => RGBColor(31, 119, 180),
        DEPFS3 => RGBColor(16, 62, 110),
        DEPFS5 => RGBColor(23, 190, 207),
        LSYNCD_TUNED => RGBColor(44, 160, 44),
        LSYNCD_DEFAULT => RGBColor(150, 210, 120),
        GLUSTER => RGBColor(214, 39, 40),
        _ => RGBColor(0, 0, 0),
    }
}

/// Writes every chart into `dir`.
pub fn write_all(r: &Results, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let local: Vec<&LocalResult> = r.local.iter().filter(|l| !l.runs.is_empty()).collect();
    let series = |keys: &[&str]| -> Vec<(&'static str, Vec<f64>)> {
        local
            .iter()
            .map(|l| {
                let v = keys
                    .iter()
                    .map(|k| {
                        METRICS
                            .iter()
                            .find(|m| m.key == *k)
                            .map_or(f64::NAN, |m| l.median(m))
                    })
                    .collect();
                (l.label, v)
            })
            .collect()
    };
    bars(
        &dir.join(LOCAL_SMALL),
        "Small files of 4 KiB (median, log scale)",
        "files/s",
        &["create", "stat", "read", "delete"],
        &series(&["create", "stat", "read", "delete"]),
    )?;
    bars(
        &dir.join(LOCAL_SEQ),
        "Sequential write and read (median, log scale)",
        "GB/s",
        &["write", "read"],
        &series(&["seq_write", "seq_read"]),
    )?;
    bars(
        &dir.join(LOCAL_RAND),
        "Random 4 KiB reads: latency (median of runs, log scale)",
        "µs",
        &["p50", "p99"],
        &series(&["rand_p50", "rand_p99"]),
    )?;
    tree_chart(r, &dir.join(TREE))?;
    visibility_chart(r, &dir.join(VISIBILITY))?;
    burst_chart(r, &dir.join(BURST))?;
    Ok(())
}

/// A power of ten at or below / above the finite positive values.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    let min = lo;
    let mut lo = 10f64.powf(lo.log10().floor());
    if min < 3.0 * lo {
        // a bar barely above the axis would be invisible
        lo /= 10.0;
    }
    let mut hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

/// Axis labels: 1, 10, 100, 1k, 10k, 1M...
fn axis(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn no_data(area: &DrawingArea<SVGBackend, Shift>, title: &str) -> Result<()> {
    area.draw(&Text::new(
        format!("{title}: no data"),
        (20, 40),
        (FONT, 18).into_font(),
    ))?;
    Ok(())
}

/// Grouped bars on a log axis: one group per `groups` entry, one bar per system.
fn bars(
    path: &Path,
    title: &str,
    unit: &str,
    groups: &[&str],
    series: &[(&'static str, Vec<f64>)],
) -> Result<()> {
    let root = SVGBackend::new(path, (860, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = log_bounds(series.iter().flat_map(|(_, v)| v.iter().copied()));
    // room on top for the legend: one decade per three systems
    let hi = hi * 10f64.powi(series.len().div_ceil(3) as i32);
    if series.is_empty() {
        no_data(&root, title)?;
        root.present()?;
        return Ok(());
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..groups.len() as f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(unit)
        .y_label_formatter(&|v| axis(*v))
        .draw()?;
    let n = series.len() as f64;
    let width = 0.8 / n;
    for (k, (label, values)) in series.iter().enumerate() {
        let c = color(label);
        let rects: Vec<Rectangle<(f64, f64)>> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite() && **v > 0.0)
            .map(|(g, v)| {
                let x0 = g as f64 + 0.1 + k as f64 * width;
                Rectangle::new([(x0, lo), (x0 + width * 0.92, *v)], c.filled())
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    // the group names below the axis
    let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (g, name) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(g as f64 + 0.5, lo));
        root.draw(&Text::new(name.to_string(), (x, y + 8), style.clone()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()?;
    root.present()?;
    Ok(())
}

fn tree_chart(r: &Results, path: &Path) -> Result<()> {
    let mut groups = Vec::new();
    let mut labels: Vec<&'static str> = Vec::new();
    for t in &r.trees {
        for row in &t.rows {
            if !labels.contains(&row.label) {
                labels.push(row.label);
            }
        }
    }
    let mut series: Vec<(&'static str, Vec<f64>)> =
        labels.iter().map(|l| (*l, Vec::new())).collect();
    for t in &r.trees {
        groups.push(format!("write, {} APIs", t.apis));
        groups.push(format!("others, {} APIs", t.apis));
        for (label, v) in series.iter_mut() {
            let row = t.rows.iter().find(|x| x.label == *label);
            v.push(row.map_or(f64::NAN, |x| x.write_s));
            v.push(row.and_then(|x| x.converge.secs()).unwrap_or(f64::NAN));
        }
    }
    let g: Vec<&str> = groups.iter().map(String::as_str).collect();
    bars(
        path,
        "Deployment tree: time to write; time until complete on the other node(s) after the last close (log)",
        "s",
        &g,
        &series,
    )
}

/// Visibility CDFs, one panel per operation, one line per system.
fn visibility_chart(r: &Results, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = r.repl.iter().flat_map(|x| {
        x.vis
            .create
            .iter()
            .chain(&x.vis.modify)
            .chain(&x.vis.delete)
            .copied()
    });
    let (lo, hi) = log_bounds(all);
    let panels = root.split_evenly((1, 3));
    for (k, (panel, op)) in panels
        .iter()
        .zip(["create", "modify", "delete"])
        .enumerate()
    {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("visibility after {op}: CDF"), (FONT, 17))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)?;
        chart
            .configure_mesh()
            .x_desc("ms after close (log)")
            .x_label_formatter(&|v| axis(*v))
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .draw()?;
        for x in &r.repl {
            let v = [&x.vis.create, &x.vis.modify, &x.vis.delete][k];
            if v.is_empty() {
                continue;
            }
            let mut sorted = v.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let total = (sorted.len() + x.vis.timeouts[k]) as f64;
            let mut pts = Vec::with_capacity(sorted.len() * 2);
            for (i, t) in sorted.iter().enumerate() {
                let t = t.max(lo);
                pts.push((t, i as f64 / total));
                pts.push((t, (i + 1) as f64 / total));
            }
            let c = color(x.label);
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
                .label(x.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Files complete on every receiver vs time since the first close (the median burst).
fn burst_chart(r: &Results, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (860, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let bursts: Vec<(&'static str, &crate::replication::Burst)> = r
        .repl
        .iter()
        .filter_map(|x| x.median_burst().map(|b| (x.label, b)))
        .collect();
    if bursts.is_empty() {
        no_data(&root, "burst")?;
        root.present()?;
        return Ok(());
    }
    let files = bursts.iter().map(|(_, b)| b.files).max().unwrap_or(1) as f64;
    let (lo, hi) = log_bounds(
        bursts
            .iter()
            .flat_map(|(_, b)| b.curve_ms.iter().map(|t| t.max(0.1))),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Burst of 1,000 files: complete on the receiver(s) vs time since the first close",
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..files)?;
    chart
        .configure_mesh()
        .x_desc("ms since the first close (log)")
        .y_desc("files complete")
        .x_label_formatter(&|v| axis(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (label, b) in &bursts {
        let c = color(label);
        let mut pts = vec![(lo, 0.0)];
        for (i, t) in b.curve_ms.iter().enumerate() {
            let t = t.max(lo);
            pts.push((t, i as f64));
            pts.push((t, (i + 1) as f64));
        }
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(format!("{label} (writing took {:.0} ms)", b.write_ms))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_labels() {
        assert_eq!(log_bounds([3.0, 250.0].into_iter()), (1.0, 1000.0));
        assert_eq!(log_bounds([1.5, 250.0].into_iter()), (0.1, 1000.0));
        assert_eq!(log_bounds([f64::NAN].into_iter()), (1.0, 10.0));
        assert_eq!(axis(1500.0), "1.5k");
        assert_eq!(axis(0.5), "0.5");
    }

    #[test]
    fn bars_render_without_fonts() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("b.svg");
        bars(
            &p,
            "t",
            "files/s",
            &["a", "b"],
            &[(NATIVE, vec![10.0, 2000.0]), (DEPFS1, vec![5.0, f64::NAN])],
        )
        .unwrap();
        let svg = fs::read_to_string(&p).unwrap();
        assert!(svg.contains("<svg") && svg.contains("native"));
    }
}
