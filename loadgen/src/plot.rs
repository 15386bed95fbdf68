//! A PNG plot of latency percentiles (p50, p90, p99, p99.9, max) per series, log scale.
//! Text needs the DejaVu Sans font (Debian `fonts-dejavu-core`); without it the plot is
//! drawn without labels.

use crate::report::Latency;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const QUANTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];
const COLOURS: [RGBColor; 6] = [BLACK, BLUE, RED, GREEN, MAGENTA, CYAN];

fn points(l: &Latency) -> [f64; 5] {
    [l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms]
}

/// Writes the plot of `series` (name, latency) to `path`.
pub fn latency_png(path: &Path, series: &[(&str, &Latency)]) -> Result<()> {
    let text = std::fs::read(FONT)
        .ok()
        .map(|bytes| {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
        .unwrap_or(false);
    let all = series.iter().flat_map(|(_, l)| points(l));
    let (lo, hi) = all.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = ((lo * 0.8).max(0.001), (hi * 1.25).max(0.01));
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption("Latency percentiles (ms, log scale)", ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(-0.2f64..4.2f64, (lo..hi).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_labels(5)
            .x_label_formatter(&|x| {
                let i = x.round() as usize;
                if (x - x.round()).abs() < 0.01 && i < QUANTILES.len() {
                    QUANTILES[i].to_owned()
                } else {
                    String::new()
                }
            })
            .y_desc("milliseconds");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| anyhow!("{e}"))?;
    for (i, (name, l)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = points(l)
            .iter()
            .enumerate()
            .map(|(x, &y)| (x as f64, y.max(lo)))
            .collect();
        let line = chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?;
        if text {
            line.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        }
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let l = Latency {
            count: 10,
            per_second: 1.0,
            mean_ms: 1.0,
            p50_ms: 0.5,
            p90_ms: 1.0,
            p99_ms: 4.0,
            p999_ms: 9.0,
            max_ms: 20.0,
        };
        let path = std::env::temp_dir().join(format!("loadgen-plot-{}.png", std::process::id()));
        latency_png(&path, &[("a", &l), ("b", &l)]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
