//! Logits and entities of fine-tuned models saved by Python `span_marker` 1.8.1 match the
//! reference (fixtures from `tests/fixtures/generate_models.py`).

mod common;

use common::{
    assert_entities_match, fixtures, logits, max_abs_diff, Case, Inputs, LOGIT_TOLERANCE,
};
use serde::Deserialize;
use span_marker::checkpoint::StateDict;
use span_marker::{PredictOptions, SpanMarkerModel};
use tch::Tensor;

#[derive(Deserialize)]
struct Predictions {
    cases: Vec<Case>,
}

/// Loads `trained/<name>` and compares logits and entities on every recorded case.
fn check_model(name: &str) {
    let dir = fixtures().join("trained").join(name);
    let model = SpanMarkerModel::from_pretrained(dir.to_str().unwrap()).unwrap();
    let text =
        std::fs::read_to_string(fixtures().join(format!("predictions/{name}.json"))).unwrap();
    let predictions: Predictions = serde_json::from_str(&text).unwrap();
    let reference =
        StateDict::read(&fixtures().join(format!("predictions/{name}.safetensors"))).unwrap();
    let mut entities_seen = 0;
    for case in &predictions.cases {
        Inputs::of(case).with(|inputs| {
            let ours = logits(&model, inputs);
            let theirs = reference.get(&format!("{}.logits", case.kind)).unwrap();
            let diff = max_abs_diff(&ours, theirs);
            assert!(
                diff < LOGIT_TOLERANCE,
                "{name}/{}: logits differ by up to {diff}",
                case.kind
            );

            // Batch size 3 splits the samples differently from the one-batch pass above.
            let options = PredictOptions {
                batch_size: 3,
                ..Default::default()
            };
            let got = model.predict(inputs, &options).unwrap();
            assert_eq!(got.len(), case.entities.len());
            for (row, (g, w)) in got.iter().zip(&case.entities).enumerate() {
                assert_entities_match(g, w, &format!("{name}/{} row {row}", case.kind));
                entities_seen += w.len();
            }
        });
    }
    assert!(
        entities_seen > 0,
        "{name}: the fixture predicts no entity at all"
    );
}

#[test]
fn bert_saved_as_safetensors_matches_the_reference() {
    check_model("tiny-bert");
}

#[test]
fn roberta_saved_as_pickle_matches_the_reference() {
    check_model("tiny-roberta");
}

#[test]
fn electra_with_projected_embeddings_matches_the_reference() {
    check_model("tiny-electra");
}

#[test]
fn xlm_roberta_matches_the_reference() {
    check_model("tiny-xlmr");
}

#[test]
fn the_logit_comparison_catches_a_small_change() {
    let a = Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
    let b = a.copy();
    let _ = b.get(1).get(2).fill_(2.0 * LOGIT_TOLERANCE);
    assert!(max_abs_diff(&a, &b) >= LOGIT_TOLERANCE);
}
