//! The prediction API on a fine-tuned fixture model: long input, nulls, offsets, options.

mod common;

use common::fixtures;
use span_marker::device::Precision;
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
    // The model is on the CPU: float16 autocast is refused, naming what is needed.
    let err = model
        .predict(
            &inputs,
            &PredictOptions {
                precision: Precision::Float16,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("fp16") && err.contains("CUDA"), "{err}");
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

#[test]
fn the_fast_path_gives_the_entities_of_the_plain_path() {
    // Fast: samples sorted by length, batches trimmed to what they need. Plain: sample order,
    // every sample padded to T = M + 2K, exactly as the reference collates.
    use span_marker::predict::{decode, ScoredSpan};
    let model = model();
    let text = std::fs::read_to_string(common::repo().join("examples/data/test.txt")).unwrap();
    let sentences: Vec<Vec<&str>> = text
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.lines().map(|l| l.split(' ').next().unwrap()).collect())
        .collect();
    let inputs: Vec<SentenceInput<'_>> =
        sentences.iter().map(|w| SentenceInput::Words(w)).collect();
    let options = PredictOptions {
        batch_size: 16,
        ..Default::default()
    };
    let fast = model.predict(&inputs, &options).unwrap();

    let rows: Vec<_> = inputs.iter().copied().map(Some).collect();
    let encoded = model.preprocessor().encode(&rows).unwrap();
    let spec = model.preprocessor().collate_spec();
    assert_eq!(spec.trim_to_multiple_of, None);
    let mut per_row: Vec<Vec<ScoredSpan>> = vec![Vec::new(); rows.len()];
    for first in (0..encoded.samples.len()).step_by(16) {
        let range = first..(first + 16).min(encoded.samples.len());
        let batch = encoded
            .collate(range.clone(), &spec, tch::Device::Cpu)
            .unwrap();
        let logits = tch::no_grad(|| model.forward(&batch, false).unwrap().logits);
        let (scores, labels) = logits.softmax(-1, tch::Kind::Float).max_dim(-1, false);
        let slots = logits.size()[1] as usize;
        let scores: Vec<f32> = scores.flatten(0, -1).try_into().unwrap();
        let labels: Vec<i64> = labels.flatten(0, -1).try_into().unwrap();
        for (k, sample) in encoded.samples[range].iter().enumerate() {
            let window = &encoded.windows[sample.window];
            for (j, s) in sample.spans.clone().enumerate() {
                per_row[window.row].push(ScoredSpan {
                    span: window.spans[s],
                    label: labels[k * slots + j] as usize,
                    score: scores[k * slots + j],
                });
            }
        }
    }
    let mut found = 0;
    for ((spans, words), fast) in per_row.into_iter().zip(&sentences).zip(&fast) {
        let plain = decode(
            spans,
            words.len(),
            model.labels().outside_id(),
            &Default::default(),
        );
        assert_eq!(plain.len(), fast.len(), "{words:?}");
        for (p, f) in plain.iter().zip(fast) {
            assert_eq!(
                (p.span.start as usize, p.span.end as usize),
                (f.word_start, f.word_end)
            );
            assert_eq!(model.labels().reduced()[p.label], f.label);
            assert!(
                (p.score - f.score).abs() < 1e-5,
                "{} vs {}",
                p.score,
                f.score
            );
        }
        found += fast.len();
    }
    assert!(found > 0);
}
