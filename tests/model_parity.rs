//! Logits and entities of fine-tuned models saved by Python `span_marker` 1.8.1 match the
//! reference (fixtures from `tests/fixtures/generate_models.py`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use span_marker::checkpoint::StateDict;
use span_marker::{PredictOptions, PredictedEntity, SentenceInput, SpanMarkerModel};
use tch::Tensor;

/// Largest tolerated absolute difference between our logits and the reference's.
const LOGIT_TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(Deserialize)]
struct Predictions {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    inputs: Vec<serde_json::Value>,
    entities: Vec<Vec<ReferenceEntity>>,
}

#[derive(Deserialize, Debug)]
struct ReferenceEntity {
    span: serde_json::Value,
    label: String,
    score: f32,
    word_start_index: Option<usize>,
    word_end_index: Option<usize>,
    char_start_index: Option<usize>,
    char_end_index: Option<usize>,
}

/// Owned inputs of one case: words per row, or texts.
enum Inputs {
    Words(Vec<Vec<String>>),
    Text(Vec<String>),
}

impl Inputs {
    fn of(case: &Case) -> Self {
        fn parse<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
            serde_json::from_value(v.clone()).unwrap()
        }
        match case.kind.as_str() {
            "words" => Self::Words(case.inputs.iter().map(parse).collect()),
            "text" => Self::Text(case.inputs.iter().map(parse).collect()),
            other => panic!("unknown case kind {other}"),
        }
    }

    fn borrowed(&self) -> (Vec<Vec<&str>>, Vec<&str>) {
        match self {
            Self::Words(rows) => (
                rows.iter()
                    .map(|r| r.iter().map(String::as_str).collect())
                    .collect(),
                vec![],
            ),
            Self::Text(texts) => (vec![], texts.iter().map(String::as_str).collect()),
        }
    }
}

fn sentence_inputs<'a>(words: &'a [Vec<&'a str>], texts: &'a [&'a str]) -> Vec<SentenceInput<'a>> {
    if words.is_empty() {
        texts.iter().map(|t| SentenceInput::Text(t)).collect()
    } else {
        words.iter().map(|w| SentenceInput::Words(w)).collect()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    f64::try_from((a - b).abs().max()).unwrap()
}

fn assert_entities_match(got: &[PredictedEntity], want: &[ReferenceEntity], context: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{context}: {got:?} vs reference {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.label, w.label, "{context}");
        assert!(
            (g.score - w.score).abs() < 1e-4,
            "{context}: score {} vs {}",
            g.score,
            w.score
        );
        match &w.span {
            serde_json::Value::String(text) => {
                assert_eq!(&g.text, text, "{context}");
                assert_eq!(g.char_start, w.char_start_index, "{context}");
                assert_eq!(g.char_end, w.char_end_index, "{context}");
            }
            words => {
                let words: Vec<String> = serde_json::from_value(words.clone()).unwrap();
                assert_eq!(g.text, words.join(" "), "{context}");
                assert_eq!(Some(g.word_start), w.word_start_index, "{context}");
                assert_eq!(Some(g.word_end), w.word_end_index, "{context}");
            }
        }
    }
}

/// Loads `trained/<name>` and compares logits and entities on every recorded case.
fn check_model(name: &str) {
    let dir = fixtures().join("trained").join(name);
    let model = SpanMarkerModel::from_pretrained(dir.to_str().unwrap()).unwrap();
    let text =
        std::fs::read_to_string(fixtures().join(format!("predictions/{name}.json"))).unwrap();
    let predictions: Predictions = serde_json::from_str(&text).unwrap();
    let logits =
        StateDict::read(&fixtures().join(format!("predictions/{name}.safetensors"))).unwrap();
    let mut entities_seen = 0;
    for case in &predictions.cases {
        let owned = Inputs::of(case);
        let (words, texts) = owned.borrowed();
        let inputs = sentence_inputs(&words, &texts);
        let rows: Vec<_> = inputs.iter().copied().map(Some).collect();

        let encoded = model.preprocessor().encode(&rows).unwrap();
        let batch = encoded
            .collate(
                0..encoded.samples.len(),
                &model.preprocessor().collate_spec(),
                model.device(),
            )
            .unwrap();
        let ours = tch::no_grad(|| model.forward(&batch, false).logits);
        let reference = logits.get(&format!("{}.logits", case.kind)).unwrap();
        let diff = max_abs_diff(&ours, reference);
        assert!(
            diff < LOGIT_TOLERANCE,
            "{name}/{}: logits differ by up to {diff}",
            case.kind
        );

        // Batch size 3 splits the samples differently from the one-batch forward pass above.
        let options = PredictOptions {
            batch_size: 3,
            ..Default::default()
        };
        let got = model.predict(&inputs, &options).unwrap();
        assert_eq!(got.len(), case.entities.len());
        for (row, (g, w)) in got.iter().zip(&case.entities).enumerate() {
            assert_entities_match(g, w, &format!("{name}/{} row {row}", case.kind));
            entities_seen += w.len();
        }
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
