//! Bad and unusual input: clear errors naming what and where, or documented results; no panics.

use std::path::Path;

use span_marker::context::DocumentPosition;
use span_marker::spans::{candidate_spans, Span};
use span_marker::{EncodeOptions, Error, Preprocessor, SentenceInput, SpanMarkerConfig};
use tch::Device;

fn preprocessor() -> Preprocessor {
    Preprocessor::bundled().unwrap()
}

fn fixture_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/span-marker/tiny-bert"
    ))
}

#[test]
fn empty_word_list_and_empty_text_give_no_spans() {
    let p = preprocessor();
    let rows = [
        Some(SentenceInput::Words(&[])),
        Some(SentenceInput::Text("")),
        Some(SentenceInput::Text("   ")),
    ];
    let encoded = p.encode(&rows).unwrap();
    for sentence in &encoded.sentences {
        assert_eq!(sentence.as_ref().unwrap().num_words(), 0);
    }
    assert!(encoded.windows.iter().all(|w| w.spans.is_empty()));
    assert!(encoded.samples.is_empty());
    let batch = encoded
        .collate(0..0, &p.collate_spec(), Device::Cpu)
        .unwrap();
    assert_eq!(
        batch.input_ids.size(),
        [0, p.settings().total_length() as i64]
    );
}

#[test]
fn null_rows_stay_null_and_leave_other_rows_alone() {
    let p = preprocessor();
    let words = ["Paris", "is", "nice"];
    let encoded = p
        .encode(&[None, Some(SentenceInput::Words(&words)), None])
        .unwrap();
    assert!(encoded.sentences[0].is_none() && encoded.sentences[2].is_none());
    assert!(encoded.windows.iter().all(|w| w.row == 1));
    assert_eq!(
        encoded.windows[0].spans,
        candidate_spans(3, 4).collect::<Vec<_>>()
    );
}

#[test]
fn an_empty_string_word_is_a_word_without_tokens() {
    let p = preprocessor();
    let words = ["Hello", "", "world"];
    let encoded = p.encode(&[Some(SentenceInput::Words(&words))]).unwrap();
    let sentence = encoded.sentences[0].as_ref().unwrap();
    assert_eq!(sentence.num_words(), 3);
    assert_eq!(sentence.word_tokens[1], None);
    let window = &encoded.windows[0];
    let i = window
        .spans
        .iter()
        .position(|s| *s == Span::new(1, 2))
        .unwrap();
    // As the reference does for words without tokens: the marker sits on position 0.
    assert_eq!((window.start_positions[i], window.end_positions[i]), (0, 0));
}

#[test]
fn mismatched_tokens_and_tags_name_the_row() {
    let p = preprocessor();
    let rows: [&[&str]; 2] = [&["EU", "rejects"], &["Peter", "Blackburn"]];
    let err = p
        .entities_from_tags(&rows, &[vec![3, 0], vec![1]])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LengthMismatch {
                row: 1,
                num_tokens: 2,
                num_tags: 1
            }
        ),
        "{err}"
    );
    let err = p.entities_from_tags(&rows, &[vec![3, 0]]).unwrap_err();
    assert!(
        err.to_string()
            .contains("2 rows of tokens but 1 rows of tags"),
        "{err}"
    );
}

#[test]
fn tag_ids_outside_the_label_list_name_row_and_word() {
    let p = preprocessor();
    let rows: [&[&str]; 1] = [&["EU", "rejects", "it"]];
    let err = p.entities_from_tags(&rows, &[vec![0, 0, 42]]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 0: tag id 42 at word 2 is not a valid label id (the label list has 9 labels)"
    );
}

#[test]
fn option_lengths_must_match_the_rows() {
    let p = preprocessor();
    let words = ["a"];
    let documents = vec![Some(DocumentPosition::new("d", 0)); 2];
    let options = EncodeOptions {
        documents: Some(&documents),
        ..Default::default()
    };
    let err = p
        .encode_with(&[Some(SentenceInput::Words(&words))], options)
        .unwrap_err();
    assert!(
        err.to_string().contains("1 rows but 2 document positions"),
        "{err}"
    );
}

#[test]
fn very_long_sentences_are_windowed_not_truncated() {
    let p = preprocessor();
    let words: Vec<String> = (0..600).map(|i| format!("word{i}")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let encoded = p.encode(&[Some(SentenceInput::Words(&words))]).unwrap();
    let e = p.settings().entity_max_length;
    assert!(encoded.windows.len() > 10);
    let all: Vec<Span> = encoded
        .windows
        .iter()
        .flat_map(|w| w.spans.iter().copied())
        .collect();
    assert_eq!(
        all,
        candidate_spans(600, e).collect::<Vec<_>>(),
        "every span once, in order"
    );
    let m = p.settings().model_max_length;
    assert!(encoded.windows.iter().all(|w| w.input_ids.len() <= m));
    // Collation of every sample works and stays within T.
    let batch = encoded
        .collate(0..encoded.samples.len(), &p.collate_spec(), Device::Cpu)
        .unwrap();
    assert_eq!(
        batch
            .num_marker_pairs
            .sum(tch::Kind::Int64)
            .int64_value(&[]),
        all.len() as i64
    );

    let err = p
        .clone()
        .strict(true)
        .encode(&[None, Some(SentenceInput::Words(&words))])
        .unwrap_err();
    assert!(
        matches!(err, Error::SentenceTooLong { row: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_word_longer_than_the_model_input_is_an_error() {
    let p = preprocessor();
    // BERT splits punctuation inside a word: 200 numbers and hyphens are far more than M tokens.
    let hyphenated: String = (0..200).map(|i| format!("{i}-")).collect();
    let words = ["ok", hyphenated.as_str()];
    let err = p
        .encode(&[None, Some(SentenceInput::Words(&words))])
        .unwrap_err();
    // The budget is M less the two special tokens.
    let budget = p.settings().model_max_length - 2;
    assert!(
        matches!(
            err,
            Error::WordTooLong {
                row: 1,
                word: 1,
                budget: b,
                ..
            } if b == budget
        ),
        "{err}"
    );

    // WordPiece maps a word over 100 characters to a single [UNK]: no problem at all.
    let giant = "x".repeat(2000);
    let words = ["ok", giant.as_str()];
    let encoded = p.encode(&[Some(SentenceInput::Words(&words))]).unwrap();
    assert_eq!(encoded.sentences[0].as_ref().unwrap().word_len(1), 1);
}

#[test]
fn text_input_keeps_character_offsets() {
    let p = preprocessor();
    let text = "Zoë visited São Paulo (Brazil).";
    let encoded = p.encode(&[Some(SentenceInput::Text(text))]).unwrap();
    let sentence = encoded.sentences[0].as_ref().unwrap();
    let chars: Vec<char> = text.chars().collect();
    let words: Vec<String> = sentence
        .word_chars
        .as_ref()
        .unwrap()
        .iter()
        .map(|&(s, e)| chars[s..e].iter().collect())
        .collect();
    assert_eq!(
        words,
        ["Zoë", "visited", "São", "Paulo", "(", "Brazil", ")", "."]
    );
}

#[test]
fn missing_and_corrupt_files_name_the_file() {
    let err = Preprocessor::from_dir("/nonexistent/model").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/model/config.json:"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("span-marker-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = Preprocessor::from_dir(&dir).unwrap_err();
    assert!(
        matches!(err, Error::Json { .. }) && err.to_string().contains("config.json"),
        "{err}"
    );

    let config = std::fs::read_to_string(fixture_dir().join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), &config).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{\"version\": \"1.0\"}").unwrap();
    let err = Preprocessor::from_dir(&dir).unwrap_err();
    assert!(
        err.to_string()
            .contains("tokenizer.json: not a valid tokenizer"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_defaults_remote_code_and_validation() {
    // A minimal, older file: missing keys take the reference's defaults.
    let minimal = r#"{"model_type": "span-marker", "encoder": {"model_type": "bert",
        "id2label": {"0": "O", "1": "B-PER", "2": "I-PER"}, "label2id": {"O": 0, "B-PER": 1, "I-PER": 2}},
        "trust_remote_code": true, "auto_map": {"AutoModel": "evil.Model"}}"#;
    let config = SpanMarkerConfig::from_json_str(minimal).unwrap();
    assert_eq!(
        (
            config.settings.marker_max_length,
            config.settings.entity_max_length,
            config.model_max_length_default
        ),
        (128, 8, 512)
    );
    assert_eq!(config.settings.model_max_length, None);
    assert!(!config.trained_with_document_context);
    assert!(
        !config.extra.contains_key("trust_remote_code") && !config.extra.contains_key("auto_map")
    );
    assert!(!config.to_json_string().unwrap().contains("remote"));

    let wrong_type = minimal.replace("\"span-marker\"", "\"bert\"");
    let err = SpanMarkerConfig::from_json_str(&wrong_type).unwrap_err();
    assert!(
        err.to_string().contains("expected \"span-marker\""),
        "{err}"
    );
    let zero = minimal.replace("\"encoder\"", "\"entity_max_length\": 0, \"encoder\"");
    assert!(SpanMarkerConfig::from_json_str(&zero).is_err());
}

#[test]
fn saved_configs_round_trip_without_loss() {
    let text = std::fs::read_to_string(fixture_dir().join("config.json")).unwrap();
    let config = SpanMarkerConfig::from_json_str(&text).unwrap();
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&config.to_json_string().unwrap()).unwrap();
    assert_eq!(original, written);
}

#[test]
fn inconsistent_stored_reduction_is_refused() {
    let text = std::fs::read_to_string(fixture_dir().join("config.json")).unwrap();
    let tampered = text.replacen("\"1\": \"LOC\"", "\"1\": \"PLACE\"", 1);
    assert_ne!(text, tampered);
    let config = SpanMarkerConfig::from_json_str(&tampered).unwrap();
    let err = span_marker::preprocess::labels_from_config(&config).unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
}
