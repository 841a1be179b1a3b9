//! Property tests over random and mutated inputs: the preprocessing, the prediction and the
//! checkpoint loaders return a result or an error for anything, never panic, and what they
//! return keeps its invariants.
//!
//! Case counts are kept small for the test suite; `PROPTEST_CASES=2000 cargo test --release
//! --test fuzz` searches longer.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use span_marker::checkpoint::StateDict;
use span_marker::{Preprocessor, SentenceInput, SpanMarkerModel};

fn preprocessor() -> &'static Preprocessor {
    static P: OnceLock<Preprocessor> = OnceLock::new();
    P.get_or_init(|| Preprocessor::bundled().unwrap())
}

/// Words of every kind: empty, blank, control characters, any script, long runs.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ \t\n\u{a0}\u{200b}]{1,3}",
        "[A-Za-z]{1,12}",
        "\\PC{1,8}",
        "[\u{0}-\u{1f}\u{7f}-\u{9f}]{1,4}",
        "[.!?,;:]{1,300}",
        any::<String>(),
    ]
}

fn rows() -> impl Strategy<Value = Vec<Option<Vec<String>>>> {
    prop::collection::vec(
        prop::option::weighted(0.9, prop::collection::vec(word(), 0..40)),
        0..6,
    )
}

/// A copy of a model directory whose `file` is replaced by `bytes`.
fn model_with(source: &Path, file: &str, bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join(file), bytes).unwrap();
    dir
}

/// `bytes` with up to a few of its bytes replaced, a piece cut out or the end cut off.
fn mutated(bytes: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    prop_oneof![
        prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map(move |edits| {
            let mut out = bytes.to_vec();
            for (at, value) in edits {
                out[at] = value;
            }
            out
        }),
        (0..len).prop_map(move |end| bytes[..end].to_vec()),
        (0..len, 1..64usize).prop_map(move |(at, n)| {
            let mut out = bytes.to_vec();
            out.drain(at..(at + n).min(len));
            out
        }),
    ]
}

/// `PROPTEST_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    #[test]
    fn preprocessing_any_words_keeps_its_invariants(rows in rows()) {
        let words: Vec<Option<Vec<&str>>> = rows
            .iter()
            .map(|row| row.as_ref().map(|w| w.iter().map(String::as_str).collect()))
            .collect();
        let inputs: Vec<Option<SentenceInput<'_>>> = words
            .iter()
            .map(|w| w.as_deref().map(SentenceInput::Words))
            .collect();
        let encoded = match preprocessor().encode(&inputs) {
            Ok(encoded) => encoded,
            // An error is fine (a word longer than the model input); a panic is not.
            Err(_) => return Ok(()),
        };
        let settings = preprocessor().settings();
        prop_assert_eq!(encoded.sentences.len(), rows.len());
        for window in &encoded.windows {
            let words = rows[window.row].as_ref().map_or(0, Vec::len) as u32;
            prop_assert!(window.input_ids.len() <= settings.total_length());
            for span in &window.spans {
                prop_assert!(span.start < span.end && span.end <= words);
            }
        }
        for sample in &encoded.samples {
            prop_assert!(sample.window < encoded.windows.len());
            prop_assert!(sample.spans.end <= encoded.windows[sample.window].spans.len());
        }
    }

    #[test]
    fn preprocessing_any_text_never_panics(texts in prop::collection::vec(any::<String>(), 0..4)) {
        let inputs: Vec<Option<SentenceInput<'_>>> =
            texts.iter().map(|t| Some(SentenceInput::Text(t))).collect();
        let _ = preprocessor().encode(&inputs);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn prediction_on_any_text_returns_entities_inside_it(text in "\\PC{0,120}") {
        static MODEL: OnceLock<std::sync::Mutex<SpanMarkerModel>> = OnceLock::new();
        let model = MODEL
            .get_or_init(|| std::sync::Mutex::new(SpanMarkerModel::bundled().unwrap()))
            .lock()
            .unwrap();
        let input = [SentenceInput::Text(&text)];
        if let Ok(predictions) = model.predict(&input, &Default::default()) {
            let chars = text.chars().count();
            for entity in &predictions[0] {
                let (start, end) = (entity.char_start.unwrap(), entity.char_end.unwrap());
                prop_assert!(start < end && end <= chars);
                let slice: String = text.chars().skip(start).take(end - start).collect();
                prop_assert_eq!(&entity.text, &slice);
            }
        }
    }

    #[test]
    fn mutated_safetensors_load_or_fail_cleanly(bytes in mutated(leak(
        std::fs::read(common::conll_tiny().join("model.safetensors")).unwrap()
    ))) {
        let _ = StateDict::from_safetensors_bytes(&bytes, Path::new("fuzz.safetensors"));
        let dir = model_with(&common::conll_tiny(), "model.safetensors", &bytes);
        let _ = SpanMarkerModel::from_pretrained(dir.path().to_str().unwrap());
    }

    #[test]
    fn mutated_configs_load_or_fail_cleanly(bytes in mutated(leak(
        std::fs::read(common::conll_tiny().join("config.json")).unwrap()
    ))) {
        let dir = model_with(&common::conll_tiny(), "config.json", &bytes);
        let _ = SpanMarkerModel::from_pretrained(dir.path().to_str().unwrap());
    }

    #[test]
    fn configs_with_any_value_for_a_key_load_or_fail_cleanly(
        key in prop::sample::select(vec![
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "vocab_size", "pad_token_id",
            "layer_norm_eps", "hidden_act",
        ]),
        top in prop::sample::select(vec![
            "model_max_length", "marker_max_length", "entity_max_length", "max_prev_context",
            "vocab_size", "id2label", "model_max_length_default",
        ]),
        value in prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            Just(serde_json::Value::Null),
            "\\PC{0,6}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({})),
            Just(serde_json::json!([1, 2])),
        ],
    ) {
        let text = std::fs::read_to_string(common::conll_tiny().join("config.json")).unwrap();
        let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut encoder_edit = config.clone();
        encoder_edit["encoder"][key] = value.clone();
        config[top] = value;
        for edited in [encoder_edit, config] {
            let dir = model_with(&common::conll_tiny(), "config.json", edited.to_string().as_bytes());
            let _ = SpanMarkerModel::from_pretrained(dir.path().to_str().unwrap());
        }
    }

    #[test]
    fn mutated_pickle_checkpoints_load_or_fail_cleanly(bytes in mutated(leak(
        std::fs::read(common::fixtures().join("trained/tiny-roberta/pytorch_model.bin")).unwrap()
    ))) {
        let source = common::fixtures().join("trained/tiny-roberta");
        let dir = model_with(&source, "pytorch_model.bin", &bytes);
        let _ = SpanMarkerModel::from_pretrained(dir.path().to_str().unwrap());
    }
}
