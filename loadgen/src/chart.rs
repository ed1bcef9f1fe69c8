//! The SVG chart of a run (`--svg`): completed sagas per second on top, p50 and
//! p99 latency per second below, both over the run's time. Plotters' SVG backend
//! only: no fonts or bitmaps to install.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

/// Draws `report`'s timeline into an SVG file at `path`.
pub fn write_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let points = &report.timeline;
    let t_max = points.last().map(|p| p.t_secs).unwrap_or(1.0).max(1.0);
    let rate_max = points.iter().map(|p| p.completed as f64).fold(1.0, f64::max) * 1.1;
    let latency_max = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.1;

    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let title = format!(
        "loadgen: {} ({:.1} sagas/s, p99 {:.1} ms)",
        report.load(),
        report.sagas_per_sec,
        report.latency_ms.p99
    );
    let root = root.titled(&title, ("sans-serif", 20)).map_err(chart_error)?;
    let (top, bottom) = root.split_vertically(300);

    let mut throughput = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..rate_max)
        .map_err(chart_error)?;
    throughput.configure_mesh().x_desc("time (s)").y_desc("completed sagas/s").draw().map_err(chart_error)?;
    throughput
        .draw_series(LineSeries::new(points.iter().map(|p| (p.t_secs, p.completed as f64)), &BLUE))
        .map_err(chart_error)?
        .label("completed sagas/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    throughput.configure_series_labels().border_style(BLACK).draw().map_err(chart_error)?;

    let mut latency = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..latency_max)
        .map_err(chart_error)?;
    latency.configure_mesh().x_desc("time (s)").y_desc("latency (ms)").draw().map_err(chart_error)?;
    latency
        .draw_series(LineSeries::new(points.iter().filter(|p| p.completed > 0).map(|p| (p.t_secs, p.p50_ms)), &GREEN))
        .map_err(chart_error)?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    latency
        .draw_series(LineSeries::new(points.iter().filter(|p| p.completed > 0).map(|p| (p.t_secs, p.p99_ms)), &RED))
        .map_err(chart_error)?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    latency.configure_series_labels().border_style(BLACK).draw().map_err(chart_error)?;
    root.present().map_err(chart_error)?;
    Ok(())
}

fn chart_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        engine::RunResult,
        report::RunDescription,
        schedule::Mode,
        stats::{Recorder, SagaEnd},
    };

    #[test]
    fn the_chart_is_an_svg_with_both_panels() {
        let mut recorder = Recorder::default();
        for i in 0..300u64 {
            let end = SagaEnd::Terminal { state: "APPROVED".into(), expected: true };
            recorder.ended(&end, Duration::from_millis(5 + i % 20), Duration::from_millis(10 * i));
        }
        let description = RunDescription {
            target: "t".into(),
            mode: Mode::Closed { concurrency: 4 },
            follow: "watch".into(),
            mix: Default::default(),
            seed: 0,
        };
        let report = Report::new(description, &RunResult { recorder, elapsed: Duration::from_secs(3) }, None);
        let path = std::env::temp_dir().join(format!("loadgen-chart-test-{}.svg", std::process::id()));
        write_svg(&report, &path).expect("the chart is drawn");
        let svg = std::fs::read_to_string(&path).expect("the chart was written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("completed sagas/s") && svg.contains("p99"));
        assert!(svg.matches("<polyline").count() >= 3, "three series");
    }
}
