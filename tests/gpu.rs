//! Checks that need a CUDA device; ignored elsewhere. On a GPU machine:
//! `cargo test --release --test gpu -- --ignored --test-threads 1`, or the test binary carried
//! by `scripts/gpu/pack.sh` (see `scripts/gpu/README.md`), which sets `SPAN_MARKER_REPO` to the
//! bundle holding the fixtures and `CONLL2003_DIR` to its CoNLL-2003 copy.
//!
//! `SPAN_MARKER_TEST_DEVICE=cpu` runs the same checks against the CPU (mixed precision left out),
//! to rehearse a bundle on a machine without a GPU. Every check prints its figures (`--nocapture`
//! shows them).

mod common;

use std::path::PathBuf;

use common::{
    conll_words, fixtures, logits, max_abs_diff, predict_words, repo, Case, Inputs, LOGIT_TOLERANCE,
};
use serde::Deserialize;
use span_marker::device::{parse_device, Precision};
use span_marker::train::{IntervalStrategy, NerDataset, Trainer, TrainingArguments};
use span_marker::{PredictedEntity, SpanMarkerModel};
use tch::Device;

/// The device under test: `$SPAN_MARKER_TEST_DEVICE`, `cuda` by default.
fn device() -> Device {
    let name = std::env::var("SPAN_MARKER_TEST_DEVICE").unwrap_or_else(|_| "cuda".into());
    parse_device(&name).unwrap_or_else(|e| panic!("SPAN_MARKER_TEST_DEVICE={name}: {e}"))
}

/// The mixed precisions to check on `device` (none on the CPU: its bf16 is checked by
/// `tests/cpu_precision.rs`).
fn mixed_precisions(device: Device) -> &'static [Precision] {
    if device.is_cuda() {
        &[Precision::BFloat16, Precision::Float16]
    } else {
        eprintln!("mixed precision left out: the device under test is the CPU");
        &[]
    }
}

/// `$CONLL2003_DIR/<split>.txt`, or the development copy beside the repository.
fn conll(split: &str) -> PathBuf {
    let dir = std::env::var_os("CONLL2003_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/conll2003"));
    let path = dir.join(format!("{split}.txt"));
    assert!(
        path.is_file(),
        "{} is missing: set CONLL2003_DIR to the directory of the CoNLL-2003 splits",
        path.display()
    );
    path
}

fn load(path: PathBuf) -> SpanMarkerModel {
    SpanMarkerModel::from_pretrained(path.to_str().unwrap()).unwrap()
}

#[derive(Deserialize)]
struct Predictions {
    cases: Vec<Case>,
}

#[test]
#[ignore = "needs a CUDA device"]
fn float32_logits_on_the_device_equal_the_cpu() {
    let device = device();
    for name in ["tiny-bert", "tiny-roberta", "tiny-electra", "tiny-xlmr"] {
        let dir = fixtures().join("trained").join(name);
        let on_cpu = load(dir.clone());
        let mut on_device = load(dir);
        on_device.to_device(device);
        let text =
            std::fs::read_to_string(fixtures().join(format!("predictions/{name}.json"))).unwrap();
        let predictions: Predictions = serde_json::from_str(&text).unwrap();
        for case in &predictions.cases {
            Inputs::of(case).with(|inputs| {
                let cpu = logits(&on_cpu, inputs);
                let dev = logits(&on_device, inputs).to_device(Device::Cpu);
                let diff = max_abs_diff(&cpu, &dev);
                println!(
                    "{name}/{}: float32 logits on {device:?} differ from the CPU's by {diff:.2e}",
                    case.kind
                );
                assert!(
                    diff < LOGIT_TOLERANCE,
                    "{name}/{}: {diff} >= {LOGIT_TOLERANCE}",
                    case.kind
                );
            });
        }
    }
}

type Key = (usize, usize, String);

fn key(e: &PredictedEntity) -> Key {
    (e.word_start, e.word_end, e.label.clone())
}

/// The entities of `got` and `want` that the other lacks, as (sentence, entity, score) lines.
fn differences(
    got: &[Vec<PredictedEntity>],
    want: &[Vec<PredictedEntity>],
) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut total = 0;
    for (row, (g, w)) in got.iter().zip(want).enumerate() {
        total += w.len();
        let keys = |es: &[PredictedEntity]| es.iter().map(key).collect::<Vec<_>>();
        let (gk, wk) = (keys(g), keys(w));
        for e in w.iter().filter(|e| !gk.contains(&key(e))) {
            lines.push(format!(
                "  row {row}: float32 only {:?} {} (score {:.4})",
                e.text, e.label, e.score
            ));
        }
        for e in g.iter().filter(|e| !wk.contains(&key(e))) {
            lines.push(format!(
                "  row {row}: mixed only   {:?} {} (score {:.4})",
                e.text, e.label, e.score
            ));
        }
    }
    (lines, total)
}

/// The CoNLL-2003 test split with the model trained on CoNLL-2003 (`conll-tiny`): float32 on the
/// device gives the CPU's entities; bf16 and fp16 differ only on a few entities, which are
/// printed with their scores (those near the decision boundary).
#[test]
#[ignore = "needs a CUDA device"]
fn conll_test_entities_on_the_device_in_every_precision() {
    let device = device();
    let path = fixtures().join("span-marker/conll-tiny");
    let on_cpu = load(path.clone());
    let sentences = conll_words(&conll("test"), on_cpu.labels());
    let reference = predict_words(&on_cpu, &sentences, Precision::Float32);
    let mut model = load(path);
    model.to_device(device);
    let float32 = predict_words(&model, &sentences, Precision::Float32);
    let (lines, total) = differences(&float32, &reference);
    println!(
        "float32 on {device:?}: {} of {total} entities differ from the CPU's over {} sentences",
        lines.len(),
        sentences.len()
    );
    assert!(lines.is_empty(), "{}", lines.join("\n"));
    for &precision in mixed_precisions(device) {
        let got = predict_words(&model, &sentences, precision);
        let (lines, total) = differences(&got, &float32);
        println!(
            "{precision}: {} of {total} float32 entities differ:\n{}",
            lines.len(),
            lines.join("\n")
        );
        assert!(
            lines.len() * 100 <= total,
            "{precision}: {} of {total} entities differ (more than 1%)",
            lines.len()
        );
    }
}

/// Steps of the short training runs: enough for the toy task's F1 to leave zero (about 0.5 on
/// the CPU, seeds 0-2 within 0.07 of each other).
const STEPS: usize = 600;

/// Short runs from the untrained head of `span-marker/tiny-bert` on the toy corpus.
fn train_args(
    out: &std::path::Path,
    device: Device,
    precision: Precision,
    seed: u64,
) -> TrainingArguments {
    TrainingArguments {
        output_dir: out.to_owned(),
        max_steps: Some(STEPS),
        learning_rate: 5e-3,
        per_device_train_batch_size: 16,
        save_strategy: IntervalStrategy::No,
        logging_strategy: IntervalStrategy::Steps,
        logging_steps: 20,
        device: match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        },
        bf16: precision == Precision::BFloat16,
        fp16: precision == Precision::Float16,
        seed,
        ..Default::default()
    }
}

/// Trains from the untrained head and returns (eval loss before, after, F1 after).
fn short_run(args: TrainingArguments) -> (f64, f64, f64) {
    let mut model = load(fixtures().join("span-marker/tiny-bert"));
    let data =
        NerDataset::from_conll(repo().join("examples/data/train.txt"), model.labels()).unwrap();
    let eval =
        NerDataset::from_conll(repo().join("examples/data/test.txt"), model.labels()).unwrap();
    let mut trainer = Trainer::new(&mut model, args).unwrap();
    let before = trainer.evaluate(&eval, "eval").unwrap().loss;
    let output = trainer.train(&data, None, None).unwrap();
    assert!(output.train_loss.is_finite(), "loss {}", output.train_loss);
    let after = trainer.evaluate(&eval, "eval").unwrap();
    (before, after.loss, after.scores.f1)
}

/// fp32, bf16 and fp16 (with loss scaling) training on the device lowers the loss and lands
/// within the F1 spread of float32 CPU runs over seeds 0-2.
#[test]
#[ignore = "needs a CUDA device"]
fn training_on_the_device_learns_like_the_cpu() {
    let device = device();
    let out = tempfile::tempdir().unwrap();
    let cpu: Vec<f64> = (0..3)
        .map(|seed| {
            let dir = out.path().join(format!("cpu-{seed}"));
            short_run(train_args(&dir, Device::Cpu, Precision::Float32, seed)).2
        })
        .collect();
    let (lo, hi) = cpu
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &f| (lo.min(f), hi.max(f)));
    let margin = (hi - lo).max(0.02);
    println!("CPU float32, seeds 0-2: F1 {cpu:.3?}");
    for &precision in [Precision::Float32].iter().chain(mixed_precisions(device)) {
        let dir = out.path().join(precision.to_string());
        let (before, after, f1) = short_run(train_args(&dir, device, precision, 0));
        println!("{device:?} {precision}: eval loss {before:.4} -> {after:.4}, F1 {f1:.3}");
        assert!(
            after < before / 2.0,
            "{precision}: eval loss {before} -> {after}"
        );
        assert!(
            f1 >= lo - margin && f1 <= hi + margin,
            "{precision}: F1 {f1:.3} outside the CPU's {lo:.3}..{hi:.3} (margin {margin:.3})"
        );
    }
}

/// A run interrupted after its first checkpoint and resumed on the device ends where the
/// uninterrupted run ends: same step count and nearly the same weights (CUDA's backward passes
/// are not bitwise deterministic).
#[test]
#[ignore = "needs a CUDA device"]
fn resuming_on_the_device_continues_the_run() {
    let device = device();
    let out = tempfile::tempdir().unwrap();
    let args = TrainingArguments {
        save_strategy: IntervalStrategy::Steps,
        save_steps: STEPS / 2,
        ..train_args(&out.path().join("run"), device, Precision::Float32, 0)
    };
    let data = |model: &SpanMarkerModel| {
        NerDataset::from_conll(repo().join("examples/data/train.txt"), model.labels()).unwrap()
    };
    let mut whole = load(fixtures().join("span-marker/tiny-bert"));
    let train = data(&whole);
    Trainer::new(&mut whole, args.clone())
        .unwrap()
        .train(&train, None, None)
        .unwrap();

    // Interrupted after the first checkpoint: the final checkpoint and model are gone.
    std::fs::remove_dir_all(out.path().join(format!("run/checkpoint-{STEPS}"))).unwrap();
    let mut resumed = load(fixtures().join("span-marker/tiny-bert"));
    let output = Trainer::new(&mut resumed, args)
        .unwrap()
        .train(&train, None, Some("latest"))
        .unwrap();
    assert_eq!(output.global_step, STEPS);

    let case: Predictions = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("predictions/tiny-bert.json")).unwrap(),
    )
    .unwrap();
    Inputs::of(&case.cases[0]).with(|inputs| {
        let diff = max_abs_diff(
            &logits(&whole, inputs).to_device(Device::Cpu),
            &logits(&resumed, inputs).to_device(Device::Cpu),
        );
        println!("resumed on {device:?}: logits differ from the uninterrupted run's by {diff:.2e}");
        assert!(diff < 1e-2, "resumed run differs by {diff}");
    });
}
