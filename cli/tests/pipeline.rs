//! `span-marker train PIPELINE`: a pipeline file end to end through the command line.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

#[test]
fn a_pipeline_trains_evaluates_and_saves_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("toy.toml");
    std::fs::write(&file, common::toy_pipeline(dir.path(), "max_steps = 200\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_span-marker"))
        .current_dir(common::repo())
        .args(["train", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(metrics["train_loss"].as_f64().unwrap() > 0.0, "{metrics}");
    let f1 = metrics["test_overall_f1"].as_f64().unwrap();
    assert!(
        f1 > 0.15,
        "200 steps start to learn the toy corpus: {metrics}"
    );
    let model_dir = dir.path().join("model");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "pipeline_metrics.json",
        "training_curves.svg",
        "README.md",
    ] {
        assert!(model_dir.join(file).is_file(), "{file}");
    }
    let model = span_marker::SpanMarkerModel::from_pretrained(model_dir.to_str().unwrap()).unwrap();
    // Inferred from the string tags: `O`, then by type with `B-` before `I-`.
    let inferred = [
        "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER",
    ];
    assert_eq!(
        model.labels().original(),
        inferred.map(String::from).as_slice()
    );
}
