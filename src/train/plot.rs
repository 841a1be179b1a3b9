//! Training curves as an SVG image: loss, learning rate and evaluation F1 against the step.

use std::path::Path;

use plotters::prelude::*;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// `(step, value)` pairs of `key` in the log records.
fn series(history: &[Map<String, Value>], key: &str) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
        .collect()
}

/// Draws one panel per curve that has points; writes nothing when no curve has any.
pub(crate) fn plot_history(history: &[Map<String, Value>], path: &Path) -> Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = [
        ("training loss", "loss"),
        ("learning rate", "learning_rate"),
        ("evaluation F1", "eval_overall_f1"),
    ]
    .into_iter()
    .map(|(title, key)| (title, series(history, key)))
    .filter(|(_, points)| !points.is_empty())
    .collect();
    if curves.is_empty() {
        return Ok(());
    }
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (640, 260 * curves.len() as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        for ((title, points), area) in curves.iter().zip(root.split_evenly((curves.len(), 1))) {
            let (x_max, y_min, y_max) = points
                .iter()
                .fold((1.0f64, f64::MAX, f64::MIN), |(x, lo, hi), &(px, py)| {
                    (x.max(px), lo.min(py), hi.max(py))
                });
            let pad = ((y_max - y_min) * 0.05).max(1e-12);
            let mut chart = ChartBuilder::on(&area)
                .caption(*title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
            chart.configure_mesh().x_desc("step").draw()?;
            chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| {
        Error::Config(format!(
            "{}: could not draw the training curves: {e}",
            path.display()
        ))
    })
}
