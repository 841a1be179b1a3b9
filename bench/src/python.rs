//! The Python reference (`scripts/bench_reference.py`, compiled in) run on the same inputs.

use std::path::Path;
use std::process::Command;

use crate::system::device_name;
use crate::BenchOptions;
use crate::Entities;

/// The Python side of the benchmark, run with `--python`'s interpreter.
const REFERENCE_SCRIPT: &str = include_str!("../../scripts/bench_reference.py");

/// What the reference measured and predicted.
pub(crate) struct Reference {
    /// Sentences per second.
    pub rate: f64,
    pub peak_rss_mb: f64,
    /// Its torch intra-op threads.
    pub threads: u64,
    pub entities: Entities,
}

pub(crate) fn python_reference(
    python: &Path,
    options: &BenchOptions,
    sentences: &[Vec<String>],
) -> Result<Reference, Box<dyn std::error::Error>> {
    let value = run_python(python, options, &serde_json::to_value(sentences)?)?;
    let entities = serde_json::from_value::<Entities>(value["entities"].clone())?;
    Ok(Reference {
        rate: value["sentences_per_second"].as_f64().unwrap_or(f64::NAN),
        peak_rss_mb: value["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
        threads: value["torch_threads"].as_u64().unwrap_or(0),
        entities,
    })
}

/// Runs the reference script (`scripts/bench_reference.py`) on `input` (written to a temporary JSON file).
pub(crate) fn run_python(
    python: &Path,
    options: &BenchOptions,
    input: &serde_json::Value,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), input.to_string())?;
    let script = tempfile::Builder::new().suffix(".py").tempfile()?;
    std::fs::write(script.path(), REFERENCE_SCRIPT)?;
    // A bare relative name (`.venv-python`) means the file here, not a search of PATH.
    let python = std::fs::canonicalize(python).unwrap_or_else(|_| python.to_owned());
    let output = Command::new(&python)
        .arg(script.path())
        .args(["--model", &options.model, "--sentences"])
        .arg(file.path())
        .args(["--batch-size", &options.batch_size.to_string()])
        .args(["--threads", &options.threads().to_string()])
        .args(["--warmup", &options.warmup.to_string()])
        .args(["--repeat", &options.repeat.to_string()])
        .args(["--train-steps", &options.train_steps.to_string()])
        .args(["--learning-rate", &options.learning_rate.to_string()])
        .args(["--device", &device_name(options.device)])
        .args(["--precision", &options.precision.to_string()])
        .args(options.in_order.then_some("--in-order"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .map_err(|e| {
            format!(
                "could not run {}: {e} (run `bash scripts/setup.sh`)",
                python.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "the Python reference failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    // The result is the last line: transformers may print its own records before it.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    Ok(serde_json::from_str(last)
        .map_err(|e| format!("unexpected output from the Python reference ({e}):\n{stdout}"))?)
}
