//! The prediction API on a fine-tuned fixture model: long input, nulls, offsets, options.

mod common;

use common::fixtures;
use span_marker::{PredictOptions, PredictedEntity, SentenceInput, SpanMarkerModel};

fn model() -> SpanMarkerModel {
    SpanMarkerModel::from_pretrained(fixtures().join("trained/tiny-bert").to_str().unwrap())
        .unwrap()
}

const SENTENCE: &str =
    "Peter Blackburn met Clinton in Washington on Monday , and Germany beat England .";

fn assert_well_formed(entities: &[PredictedEntity], words: &[&str]) {
    for pair in entities.windows(2) {
        assert!(
            pair[0].word_end <= pair[1].word_start,
            "overlap or disorder: {pair:?}"
        );
    }
    for e in entities {
        assert!(e.word_start < e.word_end && e.word_end <= words.len());
        assert!(
            e.word_end - e.word_start <= 4,
            "longer than entity_max_length"
        );
        assert_eq!(e.text, words[e.word_start..e.word_end].join(" "));
        assert!((0.0..=1.0).contains(&e.score));
        assert_ne!(e.label, "O");
    }
}

#[test]
fn a_sentence_longer_than_the_model_input_is_predicted_in_full() {
    let model = model();
    let words: Vec<&str> = SENTENCE.split(' ').collect();
    let single = model
        .predict_one(SentenceInput::Words(&words), &Default::default())
        .unwrap();
    assert!(
        !single.is_empty(),
        "the fixture model finds entities in {SENTENCE:?}"
    );

    // Twelve copies: about four times the 64-token budget.
    let long: Vec<&str> = std::iter::repeat_n(words.iter().copied(), 12)
        .flatten()
        .collect();
    let entities = model
        .predict_one(SentenceInput::Words(&long), &Default::default())
        .unwrap();
    assert_well_formed(&entities, &long);
    // The first window holds at most 64 tokens (about 50 words); entities are found well past
    // it, in the second half of the sentence: later windows are predicted, nothing is dropped.
    assert!(
        entities.iter().any(|e| e.word_start >= long.len() / 2),
        "no entity in the second half: {entities:?}"
    );
}

#[test]
fn nulls_and_empty_sentences_are_kept_in_place() {
    let model = model();
    let words: Vec<&str> = SENTENCE.split(' ').collect();
    let empty: [&str; 0] = [];
    let rows = [
        None,
        Some(SentenceInput::Words(&empty)),
        Some(SentenceInput::Words(&words)),
        Some(SentenceInput::Text("")),
    ];
    let got = model
        .predict_rows(&rows, None, &Default::default())
        .unwrap();
    assert_eq!(got.len(), 4);
    assert!(got[0].is_none());
    assert_eq!(got[1].as_deref(), Some(&[][..]));
    assert_eq!(
        got[2].as_ref().unwrap(),
        &model
            .predict_one(SentenceInput::Words(&words), &Default::default())
            .unwrap()
    );
    assert_eq!(got[3].as_deref(), Some(&[][..]));
}

#[test]
fn text_input_gives_character_offsets_into_the_text() {
    let model = model();
    let text =
        "Zoë said Peter Blackburn met Clinton in Washington on Monday , and Germany beat England .";
    let entities = model
        .predict_one(SentenceInput::Text(text), &Default::default())
        .unwrap();
    assert!(!entities.is_empty());
    let chars: Vec<char> = text.chars().collect();
    for e in &entities {
        let (start, end) = (e.char_start.unwrap(), e.char_end.unwrap());
        assert_eq!(e.text, chars[start..end].iter().collect::<String>());
    }
}

#[test]
fn results_do_not_depend_on_the_batch_size() {
    let model = model();
    let sentences = [
        SENTENCE,
        "Germany beat England 2-1 in the World Cup final at Wembley .",
        "Moscow",
    ];
    let words: Vec<Vec<&str>> = sentences.iter().map(|s| s.split(' ').collect()).collect();
    let inputs: Vec<SentenceInput<'_>> = words.iter().map(|w| SentenceInput::Words(w)).collect();
    let predict = |batch_size| {
        model
            .predict(
                &inputs,
                &PredictOptions {
                    batch_size,
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let one = predict(1);
    assert_eq!(one.len(), 3);
    for (a, b) in one.iter().flatten().zip(predict(64).iter().flatten()) {
        assert_eq!(
            (a.word_start, a.word_end, &a.label),
            (b.word_start, b.word_end, &b.label)
        );
        assert!((a.score - b.score).abs() < 1e-5);
    }
    let err = model
        .predict(
            &inputs,
            &PredictOptions {
                batch_size: 0,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_size"), "{err}");
}

#[test]
fn threshold_and_overlapping_options() {
    let model = model();
    let words: Vec<&str> = SENTENCE.split(' ').collect();
    let input = SentenceInput::Words(&words);
    let all = model.predict_one(input, &Default::default()).unwrap();
    let cut = all.iter().map(|e| e.score).fold(f32::NAN, f32::min);
    let above = model
        .predict_one(
            input,
            &PredictOptions {
                threshold: Some(cut + 1e-6),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(above.iter().all(|e| e.score > cut));
    assert!(above.len() < all.len());

    let overlapping = model
        .predict_one(
            input,
            &PredictOptions {
                allow_overlapping: true,
                ..Default::default()
            },
        )
        .unwrap();
    // Every non-overlapping entity is among the overlapping ones.
    for e in &all {
        assert!(
            overlapping.contains(e),
            "{e:?} missing from {overlapping:?}"
        );
    }
}
