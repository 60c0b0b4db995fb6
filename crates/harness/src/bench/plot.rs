//! The bench's plot: throughput against latency, as SVG.

use super::render::Point;
use crate::error::{Error, Result};
use std::path::Path;

/// Throughput against p50 and p99 latency, one point per in-flight count, as SVG.
pub fn plot(points: &[Point], n: usize, path: &Path) -> Result<()> {
    draw(points, n, path).map_err(|e| Error::Failed(format!("plotting {}: {e}", path.display())))
}

fn draw(
    points: &[Point],
    n: usize,
    path: &Path,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = points.iter().map(|p| p.throughput).fold(1.0, f64::max) * 1.1;
    let max_y = points.iter().map(|p| p.p99).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("pbft, n = {n}: throughput against latency"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, (0.1f64..max_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("committed requests per second")
        .y_desc("latency, ms (log scale)")
        .draw()?;
    for (name, color, get) in [
        ("p50", BLUE, (|p: &Point| p.p50) as fn(&Point) -> f64),
        ("p99", RED, |p: &Point| p.p99),
    ] {
        let series: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.throughput, get(p).max(0.1)))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(
            series
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::render::tests::point;

    #[test]
    fn plot_writes_an_svg_with_both_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.svg");
        plot(&[point(1), point(4), point(16)], 4, &path).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("p50") && svg.contains("p99"));
        assert!(svg.contains("pbft, n = 4"));
    }

    #[test]
    fn an_unwritable_path_is_a_failure_naming_it() {
        let e = plot(&[point(1)], 4, Path::new("/nonexistent/dir/p.svg")).expect_err("no dir");
        assert!(
            !e.is_bad_input() && e.to_string().contains("/nonexistent/dir/p.svg"),
            "{e}"
        );
    }
}
