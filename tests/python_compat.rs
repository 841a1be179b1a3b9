//! Models saved by this crate load in Python `span_marker` 1.8.1 and predict the same.
//!
//! Runs the reference through `.venv-python` (made by `scripts/setup.sh`, which the README's
//! test command runs first) and `tests/compat/predict.py`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    assert_entities_match, fixtures, logits, max_abs_diff, repo, Case, Inputs, LOGIT_TOLERANCE,
};
use serde::Deserialize;
use serde_json::Value;
use span_marker::{LoadOptions, ModelSettings, PredictOptions, SpanMarkerModel};
use tch::Tensor;

const CONLL_LABELS: [&str; 9] = [
    "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
];

#[derive(Deserialize)]
struct PythonCase {
    #[serde(flatten)]
    case: Case,
    logits_shape: Vec<i64>,
    logits: Vec<f32>,
}

#[derive(Deserialize)]
struct PythonOutput {
    vocab_size: usize,
    cases: Vec<PythonCase>,
}

/// Loads `dir` with the Python reference and returns its logits and entities.
fn python_predictions(dir: &Path) -> PythonOutput {
    let python = common::reference_python();
    let output = Command::new(&python)
        .arg("tests/compat/predict.py")
        .arg(dir)
        .current_dir(repo())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("could not run the Python reference");
    assert!(
        output.status.success(),
        "Python could not load {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("predict.py prints JSON")
}

/// Python's logits and entities for the model saved in `dir` equal ours for `model`.
fn assert_python_agrees(model: &SpanMarkerModel, dir: &Path) {
    let python = python_predictions(dir);
    assert_eq!(python.vocab_size as i64, model.encoder().vocab_rows());
    let mut entities_seen = 0;
    for PythonCase {
        case,
        logits_shape,
        logits: theirs,
    } in &python.cases
    {
        let theirs = Tensor::from_slice(theirs).view(logits_shape.as_slice());
        Inputs::of(case).with(|inputs| {
            let diff = max_abs_diff(&logits(model, inputs), &theirs);
            assert!(
                diff < LOGIT_TOLERANCE,
                "{}: logits differ by up to {diff}",
                case.kind
            );
            let got = model.predict(inputs, &PredictOptions::default()).unwrap();
            for (row, (g, w)) in got.iter().zip(&case.entities).enumerate() {
                assert_entities_match(g, w, &format!("{} row {row}", case.kind));
                entities_seen += w.len();
            }
        });
    }
    assert!(
        entities_seen > 0,
        "no entity predicted: the comparison would be weak"
    );
}

#[test]
fn a_python_model_resaved_here_loads_in_python_with_the_same_predictions() {
    // Saved by Python as pytorch_model.bin; re-saved here as model.safetensors.
    let source = fixtures().join("trained/tiny-roberta");
    let model = SpanMarkerModel::from_pretrained(source.to_str().unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    model.save_pretrained(out.path()).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ] {
        assert!(out.path().join(file).is_file(), "{file} not written");
    }
    assert_python_agrees(&model, out.path());

    // And it loads back here to the same logits, bit for bit.
    let reloaded = SpanMarkerModel::from_pretrained(out.path().to_str().unwrap()).unwrap();
    let words = ["Peter", "Blackburn", "met", "Clinton", "."];
    let input = [span_marker::SentenceInput::Words(&words)];
    assert_eq!(
        max_abs_diff(&logits(&model, &input), &logits(&reloaded, &input)),
        0.0
    );
}

#[test]
fn a_new_model_built_here_from_an_encoder_loads_in_python_with_the_same_predictions() {
    tch::manual_seed(7);
    let options = LoadOptions {
        labels: Some(CONLL_LABELS.iter().map(|s| s.to_string()).collect()),
        settings: ModelSettings {
            model_max_length: Some(64),
            marker_max_length: 16,
            entity_max_length: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    // The id is stored as the encoder's `_name_or_path`, from which Python loads the tokenizer:
    // relative to the repository root, where the Python side runs.
    let model =
        SpanMarkerModel::from_pretrained_with("tests/fixtures/encoders/tiny-bert", &options)
            .unwrap();
    let out = tempfile::tempdir().unwrap();
    model.save_pretrained(out.path()).unwrap();

    // The configuration is the one Python builds for the same encoder, labels and settings.
    let read =
        |p: &Path| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let ours = read(&out.path().join("config.json"));
    let python = read(&fixtures().join("span-marker/tiny-bert/config.json"));
    for key in [
        "architectures",
        "model_type",
        "model_max_length",
        "model_max_length_default",
        "marker_max_length",
        "entity_max_length",
        "max_prev_context",
        "max_next_context",
        "trained_with_document_context",
        "id2label",
        "label2id",
        "id2reduced_id",
        "span_marker_version",
        "vocab_size",
    ] {
        assert_eq!(ours[key], python[key], "config.json key {key}");
    }
    for key in [
        "model_type",
        "id2label",
        "label2id",
        "vocab_size",
        "_name_or_path",
        "hidden_size",
    ] {
        assert_eq!(
            ours["encoder"][key], python["encoder"][key],
            "config.json encoder key {key}"
        );
    }
    assert_python_agrees(&model, out.path());
}
