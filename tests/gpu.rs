//! Checks that need a CUDA device; ignored elsewhere. On a GPU machine:
//! `cargo test --release --test gpu -- --ignored` (or the carried test binary with `--ignored`).

mod common;

use common::repo;
use span_marker::device::Precision;
use span_marker::train::{IntervalStrategy, NerDataset, Trainer, TrainingArguments};
use span_marker::{PredictOptions, SentenceInput, SpanMarkerModel};
use tch::Device;

/// Sentences of the toy test split.
fn sentences(model: &SpanMarkerModel) -> Vec<Vec<String>> {
    NerDataset::from_conll(repo().join("examples/data/test.txt"), model.labels())
        .unwrap()
        .examples
        .into_iter()
        .map(|e| e.tokens)
        .collect()
}

fn entities(
    model: &SpanMarkerModel,
    sentences: &[Vec<String>],
    precision: Precision,
) -> Vec<Vec<(usize, usize, String)>> {
    let words: Vec<Vec<&str>> = sentences
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect();
    let inputs: Vec<SentenceInput<'_>> = words.iter().map(|w| SentenceInput::Words(w)).collect();
    let options = PredictOptions {
        precision,
        ..Default::default()
    };
    model
        .predict(&inputs, &options)
        .unwrap()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|e| (e.word_start, e.word_end, e.label))
                .collect()
        })
        .collect()
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_predictions_match_the_cpu_and_mixed_precision_nearly_does() {
    let mut model = SpanMarkerModel::bundled().unwrap();
    let sentences = sentences(&model);
    let on_cpu = entities(&model, &sentences, Precision::Float32);
    model.to_device(Device::Cuda(0));
    assert_eq!(entities(&model, &sentences, Precision::Float32), on_cpu);
    for precision in [Precision::BFloat16, Precision::Float16] {
        let got = entities(&model, &sentences, precision);
        let same = got.iter().zip(&on_cpu).filter(|(a, b)| a == b).count();
        assert!(
            same * 100 >= on_cpu.len() * 98,
            "{precision}: {same} of {} sentences as in float32",
            on_cpu.len()
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn mixed_precision_training_learns_on_cuda() {
    for (bf16, fp16) in [(true, false), (false, true)] {
        let path = repo().join("tests/fixtures/span-marker/tiny-bert");
        let mut model = SpanMarkerModel::from_pretrained(path.to_str().unwrap()).unwrap();
        let data =
            NerDataset::from_conll(repo().join("examples/data/train.txt"), model.labels()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let args = TrainingArguments {
            output_dir: out.path().to_owned(),
            max_steps: Some(60),
            learning_rate: 5e-3,
            per_device_train_batch_size: 16,
            save_strategy: IntervalStrategy::No,
            logging_strategy: IntervalStrategy::Steps,
            logging_steps: 20,
            device: "cuda".into(),
            bf16,
            fp16,
            ..Default::default()
        };
        let eval =
            NerDataset::from_conll(repo().join("examples/data/test.txt"), model.labels()).unwrap();
        let mut trainer = Trainer::new(&mut model, args).unwrap();
        let before = trainer.evaluate(&eval, "eval").unwrap().loss;
        let output = trainer.train(&data, None, None).unwrap();
        let after = trainer.evaluate(&eval, "eval").unwrap().loss;
        assert!(
            output.train_loss.is_finite(),
            "bf16 {bf16}: loss {}",
            output.train_loss
        );
        assert!(
            after < before / 2.0,
            "bf16 {bf16}: eval loss {before} -> {after}"
        );
    }
}
