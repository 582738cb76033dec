//! Figures to SVG and PNG with plotters.

use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use gridbed_runtime::outcome::Figure;
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

/// Writes `<dir>/<id>.svg` and `<dir>/<id>.png`.
pub fn render(fig: &Figure, dir: &Path) -> anyhow::Result<()> {
    register_font()?;
    let svg = dir.join(format!("{}.svg", fig.id));
    draw(fig, SVGBackend::new(&svg, (900, 600)).into_drawing_area())
        .with_context(|| format!("drawing {}", svg.display()))?;
    let png = dir.join(format!("{}.png", fig.id));
    draw(
        fig,
        BitMapBackend::new(&png, (900, 600)).into_drawing_area(),
    )
    .with_context(|| format!("drawing {}", png.display()))?;
    Ok(())
}

fn bounds(fig: &Figure, pick: impl Fn(&(f64, f64)) -> f64, log: bool) -> (f64, f64) {
    let vals = fig
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(&pick))
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
        let pad = ((hi - lo) * 0.05).max(1e-9);
        (lo.min(0.0), hi + pad)
    }
}

fn draw<DB: DrawingBackend>(fig: &Figure, root: DrawingArea<DB, Shift>) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (x0, x1) = bounds(fig, |p| p.0, fig.log_x);
    let (y0, y1) = bounds(fig, |p| p.1, fig.log_y);
    macro_rules! plot {
        ($xr:expr, $yr:expr) => {{
            let mut chart = ChartBuilder::on(&root)
                .caption(&fig.title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d($xr, $yr)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .x_desc(&fig.x_label)
                .y_desc(&fig.y_label)
                .x_label_formatter(&|v| short(*v))
                .y_label_formatter(&|v| short(*v))
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for (i, s) in fig.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }};
    }
    match (fig.log_x, fig.log_y) {
        (true, true) => plot!((x0..x1).log_scale(), (y0..y1).log_scale()),
        (true, false) => plot!((x0..x1).log_scale(), y0..y1),
        (false, true) => plot!(x0..x1, (y0..y1).log_scale()),
        (false, false) => plot!(x0..x1, y0..y1),
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
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
        return format!("{v:.2e}");
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
        assert_eq!(short(2.5e-5), "2.50e-5");
    }
}
