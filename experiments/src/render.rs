//! Figures to SVG and PNG with plotters.

use std::path::Path;
use std::sync::Once;

use crate::outcome::Figure;
use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
static FONT: Once = Once::new();

/// PNG text needs a font file; the README's commands install fonts-dejavu-core.
fn register_font() -> anyhow::Result<()> {
    let mut result = Ok(());
    FONT.call_once(|| {
        result = (|| {
            let path = FONT_PATHS
                .iter()
                .find(|p| Path::new(p).exists())
                .context("no DejaVuSans.ttf found (install fonts-dejavu-core)")?;
            let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| anyhow::anyhow!("{path} is not a usable font"))
        })();
    });
    result
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Writes `<dir>/<id>.svg` and `<dir>/<id>.png` (each drawn under a temporary name, then renamed).
pub fn render(fig: &Figure, dir: &Path) -> anyhow::Result<()> {
    write_both(&fig.id, dir, |a| draw(fig, a), |a| draw(fig, a))
}

/// A histogram: `bins` = (start, end, count), drawn as bars over the data's own x range.
pub struct Histogram<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub x_label: &'a str,
    pub bins: &'a [(f64, f64, usize)],
}

/// Writes `<dir>/<id>.svg` and `.png` of a histogram.
pub fn render_histogram(h: &Histogram, dir: &Path) -> anyhow::Result<()> {
    write_both(
        h.id,
        dir,
        |a| draw_histogram(h, a),
        |a| draw_histogram(h, a),
    )
}

/// Draws the SVG and the PNG of one figure, each under a temporary name, then renamed.
fn write_both(
    id: &str,
    dir: &Path,
    svg_draw: impl Fn(DrawingArea<SVGBackend, Shift>) -> anyhow::Result<()>,
    png_draw: impl Fn(DrawingArea<BitMapBackend, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    register_font()?;
    let pid = std::process::id();
    let svg = dir.join(format!("{id}.svg"));
    let svg_tmp = dir.join(format!(".{id}.tmp-{pid}.svg"));
    svg_draw(SVGBackend::new(&svg_tmp, (WIDTH, HEIGHT)).into_drawing_area())
        .with_context(|| format!("drawing {}", svg.display()))?;
    std::fs::rename(&svg_tmp, &svg).with_context(|| format!("cannot replace {}", svg.display()))?;
    let png = dir.join(format!("{id}.png"));
    // The bitmap backend picks the format from the extension, so the temporary name keeps it.
    let png_tmp = dir.join(format!(".{id}.tmp-{pid}.png"));
    png_draw(BitMapBackend::new(&png_tmp, (WIDTH, HEIGHT)).into_drawing_area())
        .with_context(|| format!("drawing {}", png.display()))?;
    std::fs::rename(&png_tmp, &png).with_context(|| format!("cannot replace {}", png.display()))?;
    Ok(())
}

fn draw_histogram<DB: DrawingBackend>(
    h: &Histogram,
    root: DrawingArea<DB, Shift>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let lo = h.bins.first().map_or(0.0, |b| b.0);
    let hi = h.bins.last().map_or(1.0, |b| b.1);
    // One bin of equal values gets a unit-wide bar around its value.
    let (x0, x1) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let top = h.bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.08;
    let mut chart = ChartBuilder::on(&root)
        .caption(h.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(x0..x1, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(h.x_label)
        .y_desc("seeds")
        .axis_desc_style(("sans-serif", 17))
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(h.bins.iter().map(|&(a, b, c)| {
            let (a, b) = if b > a { (a, b) } else { (x0, x1) };
            Rectangle::new([(a, 0.0), (b, c as f64)], COLORS[0].mix(0.8).filled())
        }))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Every plotted point: the series and the paper's published points.
fn all_points(fig: &Figure) -> impl Iterator<Item = &(f64, f64)> {
    fig.series
        .iter()
        .chain(&fig.paper_points)
        .flat_map(|s| s.points.iter())
}

fn bounds(fig: &Figure, pick: impl Fn(&(f64, f64)) -> f64, log: bool) -> (f64, f64) {
    let vals = all_points(fig)
        .map(&pick)
        .filter(|v| v.is_finite() && (!log || *v > 0.0));
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (if log { 1.0 } else { 0.0 }, 1.0);
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.05).max(1e-9);
        (lo.min(0.0), hi + pad)
    }
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 600;
/// Legend entries per row below the plot, and the height of one row (pixels).
const LEGEND_COLUMNS: usize = 2;
const LEGEND_ROW: u32 = 24;

/// One legend entry: a line sample (series drawn as a line), a dot, or the paper's cross.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Line,
    Dot,
    Cross,
}

fn legend_entries(fig: &Figure) -> Vec<(String, RGBColor, Mark)> {
    let mut v: Vec<(String, RGBColor, Mark)> = fig
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mark = if drawn_as_line(s) {
                Mark::Line
            } else {
                Mark::Dot
            };
            (s.name.clone(), COLORS[i % COLORS.len()], mark)
        })
        .collect();
    for (i, s) in fig.paper_points.iter().enumerate() {
        v.push((s.name.clone(), COLORS[i % COLORS.len()], Mark::Cross));
    }
    v
}

/// Fewer than three points are no curve: they are drawn as points only.
fn drawn_as_line(s: &crate::outcome::Series) -> bool {
    s.points.len() >= 3
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Draws the legend in its own strip below the plot, so it never covers data.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor, Mark)],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let col_w = (WIDTH as i32 - 100) / LEGEND_COLUMNS as i32;
    for (i, (name, color, mark)) in entries.iter().enumerate() {
        let x = 85 + (i % LEGEND_COLUMNS) as i32 * col_w;
        let y = 12 + (i / LEGEND_COLUMNS) as i32 * LEGEND_ROW as i32;
        match mark {
            Mark::Line => area
                .draw(&PathElement::new(
                    vec![(x, y), (x + 24, y)],
                    color.stroke_width(2),
                ))
                .map_err(err)?,
            Mark::Dot => area
                .draw(&Circle::new((x + 12, y), 4, color.filled()))
                .map_err(err)?,
            Mark::Cross => {
                area.draw(&Cross::new((x + 12, y), 7, BLACK.stroke_width(4)))
                    .map_err(err)?;
                area.draw(&Cross::new((x + 12, y), 7, color.stroke_width(2)))
                    .map_err(err)?
            }
        }
        area.draw(&Text::new(
            name.clone(),
            (x + 32, y - 8),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(err)?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(fig: &Figure, root: DrawingArea<DB, Shift>) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let entries = legend_entries(fig);
    let rows = entries.len().div_ceil(LEGEND_COLUMNS) as u32;
    let legend_h = rows * LEGEND_ROW + 8;
    let (plot_area, legend_area) = root.split_vertically(HEIGHT - legend_h);
    let (x0, x1) = bounds(fig, |p| p.0, fig.log_x);
    let (y0, y1) = bounds(fig, |p| p.1, fig.log_y);
    macro_rules! plot {
        ($xr:expr, $yr:expr) => {{
            let mut chart = ChartBuilder::on(&plot_area)
                .caption(&fig.title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(50)
                .y_label_area_size(75)
                .build_cartesian_2d($xr, $yr)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(&fig.x_label)
                .y_desc(&fig.y_label)
                .axis_desc_style(("sans-serif", 17))
                .x_label_formatter(&|v| short(*v))
                .y_label_formatter(&|v| short(*v))
                .draw()
                .map_err(err)?;
            for (i, s) in fig.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                if drawn_as_line(s) {
                    chart
                        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                        .map_err(err)?;
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(err)?;
                } else {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
                        .map_err(err)?;
                }
            }
            for (i, s) in fig.paper_points.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                // A black halo keeps the paper's cross visible on top of a same-coloured curve.
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| Cross::new(p, 8, BLACK.stroke_width(5))),
                    )
                    .map_err(err)?;
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| Cross::new(p, 8, color.stroke_width(3))),
                    )
                    .map_err(err)?;
            }
        }};
    }
    match (fig.log_x, fig.log_y) {
        (true, true) => plot!((x0..x1).log_scale(), (y0..y1).log_scale()),
        (true, false) => plot!((x0..x1).log_scale(), y0..y1),
        (false, true) => plot!(x0..x1, (y0..y1).log_scale()),
        (false, false) => plot!(x0..x1, y0..y1),
    }
    draw_legend(&legend_area, &entries)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Compact axis labels: 1K, 64M, 0.001.
fn short(v: f64) -> String {
    let a = v.abs();
    let (x, unit) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "K")
    } else if a >= 1e-3 || a == 0.0 {
        (v, "")
    } else {
        // "1e-4", "2.5e-5": scientific, without trailing zeros.
        let sci = format!("{v:.2e}");
        let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let mant = mant.trim_end_matches('0').trim_end_matches('.');
        return format!("{mant}e{exp}");
    };
    // Three decimals, then no trailing zeros: "1.4M", "0.25", "2".
    let digits = format!("{x:.3}");
    let digits = digits.trim_end_matches('0').trim_end_matches('.');
    format!("{digits}{unit}")
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn axis_labels_are_short_and_plain() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.1), "0.1");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(1_400_000.0), "1.4M");
        assert_eq!(short(600_000.0), "600K");
        assert_eq!(short(-0.5), "-0.5");
        assert_eq!(short(2.5e-5), "2.5e-5");
        assert_eq!(short(1e-4), "1e-4");
    }
}
