//! `examples/tutorial.rs`, the SpanMarker tutorial through the Rust API, run as built against
//! the stand-in Hub: it trains from the dataset id with the labels of the data, logs to
//! TensorBoard, saves, pushes and tests.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/datasets.rs"]
mod datasets;

use std::path::PathBuf;
use std::process::Command;

use datasets::{hub, walk, CONLL_LABELS, WRITER};

/// The example's binary, which `cargo test` builds beside the test binaries.
fn tutorial_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile
        .join("examples")
        .join(format!("tutorial{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: `cargo test -p span-marker-udfs` builds it",
        binary.display()
    );
    binary
}

#[test]
fn the_rust_tutorial_trains_from_the_dataset_id_logs_pushes_and_tests() {
    let work = tempfile::tempdir().unwrap();
    let hub = hub(work.path());
    let output = work.path().join("model");
    let out = Command::new(tutorial_binary())
        .current_dir(common::repo())
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", work.path().join("hf-home"))
        .env("HF_TOKEN", WRITER)
        .env_remove("HF_HUB_OFFLINE")
        .arg("--output-dir")
        .arg(&output)
        .args(["--push", "tutor/tutorial-rs"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("labels: {CONLL_LABELS:?}")),
        "{stdout}"
    );
    assert!(stdout.contains("\"test_overall_f1\""), "{stdout}");
    assert!(stdout.contains("\"eval_overall_f1\""), "{stdout}");
    let model = span_marker::SpanMarkerModel::from_pretrained(output.to_str().unwrap()).unwrap();
    assert_eq!(model.labels().original(), CONLL_LABELS);
    let pushed = hub.files("tutor/tutorial-rs", "main").expect("pushed");
    assert!(pushed.contains_key("model.safetensors"));
    assert!(walk(&output.join("runs"))
        .iter()
        .any(|p| p.to_string_lossy().contains("events.out.tfevents")));
}
