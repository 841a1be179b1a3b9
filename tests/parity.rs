//! Exact parity with Python `span_marker` 1.8.1 on the committed fixtures
//! (regenerate them with `tests/fixtures/generate.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use span_marker::context::DocumentPosition;
use span_marker::labels::{Entity, LabelScheme, Labels};
use span_marker::{EncodeOptions, Preprocessor, SentenceInput, SpanMarkerTokenizer};
use tch::{Device, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

// ------------------------------------------------------------------------------------------
// Labels

#[derive(Deserialize)]
struct LabelFixtures {
    cases: Vec<LabelCase>,
}

#[derive(Deserialize)]
struct LabelCase {
    name: String,
    labels: Vec<String>,
    reduced_labels: Option<Vec<String>>,
    id2reduced_id: Option<Vec<usize>>,
    outside_id: Option<usize>,
    normalizer: Option<String>,
    conversions: Option<Vec<Conversion>>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Conversion {
    tags: Vec<i64>,
    entities: Vec<[usize; 3]>,
}

#[test]
fn label_maps_and_tag_conversion_match_the_reference() {
    let text = std::fs::read_to_string(fixtures().join("labels.json")).unwrap();
    let fixtures: LabelFixtures = serde_json::from_str(&text).unwrap();
    assert!(fixtures.cases.len() >= 10);
    for case in fixtures.cases {
        let result = Labels::new(&case.labels);
        if let Some(expected) = case.error {
            let err = result.expect_err(&case.name).to_string();
            // Same failure as the reference: a missing `O` or an unknown scheme.
            let kind = if expected.contains("'O'") {
                "\"O\""
            } else {
                "scheme not recognised"
            };
            assert!(
                err.contains(kind),
                "{}: {err} vs reference {expected}",
                case.name
            );
            continue;
        }
        let labels = result.unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(
            labels.reduced(),
            case.reduced_labels.unwrap().as_slice(),
            "{}",
            case.name
        );
        if let Some(id2reduced) = case.id2reduced_id {
            assert_eq!(labels.id2reduced(), id2reduced.as_slice(), "{}", case.name);
        } else {
            assert_eq!(labels.scheme(), LabelScheme::Unschemed, "{}", case.name);
        }
        assert_eq!(
            labels.outside_id(),
            case.outside_id.unwrap(),
            "{}",
            case.name
        );
        let scheme = match case.normalizer.as_deref().unwrap() {
            "LabelNormalizerIOB" => LabelScheme::Iob,
            "LabelNormalizerBIOES" => LabelScheme::Bioes,
            "LabelNormalizerBILOU" => LabelScheme::Bilou,
            "LabelNormalizerNoScheme" => LabelScheme::Unschemed,
            other => panic!("unknown normalizer {other}"),
        };
        assert_eq!(labels.scheme(), scheme, "{}", case.name);
        for conversion in case.conversions.unwrap() {
            let expected: Vec<Entity> = conversion
                .entities
                .iter()
                .map(|&[l, s, e]| Entity::new(l, s, e))
                .collect();
            let got = labels.tags_to_entities(&conversion.tags, 0).unwrap();
            assert_eq!(got, expected, "{}: tags {:?}", case.name, conversion.tags);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Preprocessing

#[derive(Deserialize)]
struct PreprocessingFixture {
    model: String,
    model_max_length: usize,
    marker_max_length: usize,
    entity_max_length: usize,
    start_marker_id: u32,
    end_marker_id: u32,
    pad_token_id: u32,
    cases: Vec<PreprocessingCase>,
}

#[derive(Deserialize)]
struct PreprocessingCase {
    name: String,
    kind: String,
    rows: Vec<serde_json::Value>,
    per_row: Vec<RowExpectation>,
    sample_rows: Vec<usize>,
    ner_tags: Option<Vec<Vec<String>>>,
    document_id: Option<Vec<i64>>,
    sentence_id: Option<Vec<i64>>,
    coverage: Option<CoverageExpectation>,
}

#[derive(Deserialize)]
struct RowExpectation {
    input_ids: Vec<u32>,
    num_words: usize,
    start_position_ids: Vec<u32>,
    end_position_ids: Vec<u32>,
    labels: Option<Vec<i64>>,
}

#[derive(Deserialize)]
struct CoverageExpectation {
    total: usize,
    missed_by_length: HashMap<String, usize>,
}

fn load_fixture(name: &str) -> (PreprocessingFixture, HashMap<String, Tensor>) {
    let dir = fixtures().join("preprocessing");
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
    let fixture: PreprocessingFixture = serde_json::from_str(&text).unwrap();
    let tensors = Tensor::read_safetensors(dir.join(format!("{name}.safetensors")))
        .unwrap()
        .into_iter()
        .collect();
    (fixture, tensors)
}

/// First difference between two integer tensors, as `(index, got, expected)`.
fn first_difference(got: &Tensor, expected: &Tensor) -> Option<(Vec<i64>, i64, i64)> {
    if got.size() != expected.size() {
        return Some((got.size(), -1, -1));
    }
    let got = got.to_kind(tch::Kind::Int64).contiguous();
    let expected = expected.to_kind(tch::Kind::Int64).contiguous();
    let diff = got.ne_tensor(&expected).nonzero();
    if diff.size()[0] == 0 {
        return None;
    }
    let index: Vec<i64> = Vec::try_from(diff.get(0)).unwrap();
    let at = |t: &Tensor| {
        index
            .iter()
            .fold(t.shallow_clone(), |t, &i| t.get(i))
            .int64_value(&[])
    };
    Some((index.clone(), at(&got), at(&expected)))
}

fn run_case(preprocessor: &Preprocessor, case: &PreprocessingCase) -> span_marker::Encoded {
    let words: Vec<Vec<&str>> = case
        .rows
        .iter()
        .map(|r| match r {
            serde_json::Value::Array(words) => words.iter().map(|w| w.as_str().unwrap()).collect(),
            _ => Vec::new(),
        })
        .collect();
    let inputs: Vec<Option<SentenceInput<'_>>> = case
        .rows
        .iter()
        .zip(&words)
        .map(|(row, words)| {
            Some(match case.kind.as_str() {
                "text" => SentenceInput::Text(row.as_str().unwrap()),
                _ => SentenceInput::Words(words),
            })
        })
        .collect();
    let entities = case.ner_tags.as_ref().map(|tags| {
        let labels = preprocessor.labels();
        let ids: Vec<Vec<i64>> = tags
            .iter()
            .map(|row| {
                row.iter()
                    .map(|t| labels.tag_id(t).unwrap() as i64)
                    .collect()
            })
            .collect();
        let rows: Vec<&[&str]> = words.iter().map(Vec::as_slice).collect();
        preprocessor.entities_from_tags(&rows, &ids).unwrap()
    });
    let documents: Option<Vec<Option<DocumentPosition>>> = case.document_id.as_ref().map(|docs| {
        let sentences = case.sentence_id.as_ref().unwrap();
        docs.iter()
            .zip(sentences)
            .map(|(&d, &s)| Some(DocumentPosition::new(d, s)))
            .collect()
    });
    let options = EncodeOptions {
        entities: entities.as_deref(),
        documents: documents.as_deref(),
        split: Some("train"),
        keep_going: false,
    };
    preprocessor.encode_with(&inputs, options).unwrap()
}

const TENSORS: [&str; 6] = [
    "input_ids",
    "position_ids",
    "attention_mask",
    "labels",
    "start_marker_indices",
    "num_marker_pairs",
];

fn check_model(name: &str) {
    let (fixture, expected) = load_fixture(name);
    let preprocessor = Preprocessor::from_dir(fixtures().join(&fixture.model)).unwrap();
    let settings = preprocessor.settings();
    assert_eq!(settings.model_max_length, fixture.model_max_length);
    assert_eq!(settings.marker_max_length, fixture.marker_max_length);
    assert_eq!(settings.entity_max_length, fixture.entity_max_length);
    let tokenizer = preprocessor.tokenizer();
    assert_eq!(tokenizer.start_marker_id(), fixture.start_marker_id);
    assert_eq!(tokenizer.end_marker_id(), fixture.end_marker_id);
    assert_eq!(tokenizer.pad_token_id(), fixture.pad_token_id);

    for case in &fixture.cases {
        let encoded = run_case(&preprocessor, case);
        // Per row: the text ids, word count, marker positions and labels the tokenizer produced.
        for (row, expect) in case.per_row.iter().enumerate() {
            let at = format!("{name}/{} row {row}", case.name);
            let windows: Vec<_> = encoded.windows.iter().filter(|w| w.row == row).collect();
            assert_eq!(windows.len(), 1, "{at}");
            let window = windows[0];
            let sentence = encoded.sentences[row].as_ref().unwrap();
            assert_eq!(sentence.num_words(), expect.num_words, "{at}");
            assert_eq!(window.input_ids, expect.input_ids, "{at}");
            assert_eq!(window.start_positions, expect.start_position_ids, "{at}");
            assert_eq!(window.end_positions, expect.end_position_ids, "{at}");
            assert_eq!(window.labels, expect.labels, "{at}");
        }
        let sample_rows: Vec<usize> = encoded
            .samples
            .iter()
            .map(|s| encoded.windows[s.window].row)
            .collect();
        assert_eq!(sample_rows, case.sample_rows, "{}/{}", name, case.name);
        if let Some(coverage) = &case.coverage {
            let got = encoded.coverage.as_ref().unwrap();
            assert_eq!(got.total, coverage.total);
            let missed: HashMap<String, usize> = got
                .missed_by_length
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            assert_eq!(missed, coverage.missed_by_length);
        }
        // Collated tensors, cell for cell.
        let batch = encoded
            .collate(
                0..encoded.samples.len(),
                &preprocessor.collate_spec(),
                Device::Cpu,
            )
            .unwrap();
        let attention_mask = batch.attention_mask();
        let got: HashMap<&str, &Tensor> = [
            ("input_ids", &batch.input_ids),
            ("position_ids", &batch.position_ids),
            ("attention_mask", &attention_mask),
            ("start_marker_indices", &batch.start_marker_indices),
            ("num_marker_pairs", &batch.num_marker_pairs),
        ]
        .into_iter()
        .chain(batch.labels.as_ref().map(|l| ("labels", l)))
        .collect();
        for key in TENSORS {
            let full = format!("{}.{key}", case.name);
            match (got.get(key), expected.get(&full)) {
                (Some(g), Some(e)) => {
                    if let Some((index, g, e)) = first_difference(g, e) {
                        panic!("{name}/{full}: differs at {index:?}: got {g}, reference {e}");
                    }
                }
                (None, None) => {}
                (g, e) => panic!(
                    "{name}/{full}: present here {}, in the reference {}",
                    g.is_some(),
                    e.is_some()
                ),
            }
        }
    }
}

#[test]
fn bert_preprocessing_matches_the_reference_tensor_for_tensor() {
    check_model("tiny-bert");
}

#[test]
fn roberta_preprocessing_matches_the_reference_tensor_for_tensor() {
    check_model("tiny-roberta");
}

/// The comparison itself must notice a single changed position id or mask cell.
#[test]
fn the_comparison_catches_a_single_changed_cell() {
    let (_, expected) = load_fixture("tiny-bert");
    for key in [
        "spread.position_ids",
        "spread.attention_mask",
        "document_context.input_ids",
    ] {
        let reference = &expected[key];
        assert_eq!(first_difference(reference, reference), None);
        let mutated = reference.copy();
        let index = [1i64, 7, 3];
        let mut cell = index[..reference.dim()]
            .iter()
            .fold(mutated.shallow_clone(), |t, &i| t.get(i));
        let _ = cell.fill_(cell.int64_value(&[]) ^ 1);
        let (at, _, _) = first_difference(&mutated, reference).expect("mutation not detected");
        assert_eq!(at, index[..reference.dim()].to_vec(), "{key}");
    }
}

/// A plain encoder directory gets the markers appended at the ids the reference gives them.
#[test]
fn markers_are_added_to_a_plain_encoder_tokenizer() {
    for (name, start) in [("tiny-bert", 4000), ("tiny-roberta", 4000)] {
        let dir = fixtures().join("encoders").join(name);
        let tokenizer = SpanMarkerTokenizer::from_dir(&dir, "bert", None).unwrap();
        assert_eq!(
            (tokenizer.start_marker_id(), tokenizer.end_marker_id()),
            (start, start + 1),
            "{name}"
        );
        assert_eq!(tokenizer.model_max_length(), Some(512), "{name}");
    }
}
