//! Reduced precisions on the CPU: `int8` (dynamically quantised linear maps) and `bf16`
//! (bfloat16 maps and activations, where the CPU has the instructions) give nearly the float32
//! entities; every precision's copy of the weights follows them when they change, and bf16
//! trains.

mod common;

use common::{conll_tiny, conll_words, predict_words, repo};
use span_marker::device::{cpu_has_bf16, Precision};
use span_marker::train::{IntervalStrategy, NerDataset, Trainer, TrainingArguments};
use span_marker::{PredictedEntity, SpanMarkerModel};

fn model() -> SpanMarkerModel {
    SpanMarkerModel::from_pretrained(conll_tiny().to_str().unwrap()).unwrap()
}

fn sentences(model: &SpanMarkerModel) -> Vec<Vec<String>> {
    conll_words(&repo().join("examples/data/test.txt"), model.labels())
}

/// Per float32 entity, the reduced-precision entity at the same span and label, if any.
fn matched<'a>(
    float32: &'a [Vec<PredictedEntity>],
    reduced: &'a [Vec<PredictedEntity>],
) -> Vec<(&'a PredictedEntity, Option<&'a PredictedEntity>)> {
    float32
        .iter()
        .zip(reduced)
        .flat_map(|(f, q)| {
            f.iter().map(move |e| {
                let same = q.iter().find(|o| {
                    (o.word_start, o.word_end, &o.label) == (e.word_start, e.word_end, &e.label)
                });
                (e, same)
            })
        })
        .collect()
}

/// Asserts that `precision` keeps at least 95% of the float32 entities, loses only unconfident
/// ones, and changes the scores (so that it ran) by less than 0.1.
fn assert_close_to_float32(precision: Precision) {
    let model = model();
    let sentences = sentences(&model);
    let float32 = predict_words(&model, &sentences, Precision::Float32);
    let reduced = predict_words(&model, &sentences, precision);
    let pairs = matched(&float32, &reduced);
    assert!(pairs.len() > 50, "only {} entities", pairs.len());
    let kept = pairs.iter().filter(|(_, q)| q.is_some()).count();
    assert!(
        kept * 100 >= pairs.len() * 95,
        "{precision}: {kept} of {} kept",
        pairs.len()
    );
    let mut largest = 0f32;
    for (f, q) in &pairs {
        match q {
            Some(q) => largest = largest.max((f.score - q.score).abs()),
            None => assert!(f.score < 0.8, "confident {f:?} lost in {precision}"),
        }
    }
    // Rounded, so not bit-identical, but close.
    assert!(
        largest > 0.0,
        "{precision} scores equal float32's: the {precision} path did not run"
    );
    assert!(
        largest < 0.1,
        "{precision}: scores differ by up to {largest}"
    );
}

#[test]
fn int8_entities_stay_close_to_float32() {
    assert_close_to_float32(Precision::Int8);
}

#[test]
fn bf16_entities_stay_close_to_float32_where_the_cpu_has_bfloat16() {
    if cpu_has_bf16() {
        assert_close_to_float32(Precision::BFloat16);
    } else {
        let model = model();
        let err = predict_words_error(&model, Precision::BFloat16);
        assert!(err.contains("bf16") && err.contains("AVX512-BF16"), "{err}");
    }
}

fn predict_words_error(model: &SpanMarkerModel, precision: Precision) -> String {
    let options = span_marker::PredictOptions {
        precision,
        ..Default::default()
    };
    model
        .predict(&[span_marker::SentenceInput::Text("Paris")], &options)
        .unwrap_err()
        .to_string()
}

/// Trains the tiny model 40 steps (seed 42) in float32 or bfloat16; the logged losses and the
/// trained model, or the trainer's refusal.
fn train_tiny(bf16: bool) -> span_marker::Result<(Vec<f64>, SpanMarkerModel)> {
    let mut model = model();
    let labels = model.labels().clone();
    let train = NerDataset::from_conll(repo().join("examples/data/train.txt"), &labels)?;
    let out = tempfile::tempdir().unwrap();
    let args = TrainingArguments {
        output_dir: out.path().to_owned(),
        bf16,
        per_device_train_batch_size: 8,
        learning_rate: 5e-3,
        max_steps: Some(40),
        logging_steps: 10,
        seed: 42,
        save_strategy: IntervalStrategy::No,
        device: "cpu".into(),
        ..Default::default()
    };
    let output = Trainer::new(&mut model, args)?.train(&train, None, None)?;
    assert_eq!(output.global_step, 40);
    let losses = std::fs::read_to_string(out.path().join("log_history.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect();
    Ok((losses, model))
}

#[test]
fn bf16_training_on_the_cpu_lowers_the_loss_and_keeps_float32_weights() {
    if !cpu_has_bf16() {
        let Err(err) = train_tiny(true) else {
            panic!("bf16 training accepted on a CPU without bfloat16 instructions");
        };
        let err = err.to_string();
        assert!(err.contains("bf16") && err.contains("AVX512-BF16"), "{err}");
        return;
    }
    let (losses, model) = train_tiny(true).unwrap();
    assert_eq!(losses.len(), 4, "{losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[3] < losses[0],
        "bf16 training did not learn: {losses:?}"
    );
    for (name, weight) in model.var_store().variables() {
        assert_eq!(weight.kind(), tch::Kind::Float, "{name}");
    }
    // The same run in float32 logs other losses: bf16 took effect.
    let (float32, _) = train_tiny(false).unwrap();
    assert_ne!(losses, float32, "bf16 training ran in float32");
}

/// Halves layer 0's query weight in place, as an optimizer step changes weights: part of the
/// query-key-value map that the fused and int8 forms hold a copy of.
fn halve_a_query_weight(model: &mut SpanMarkerModel) {
    tch::no_grad(|| {
        let vars = model.var_store_mut().variables();
        let name = "encoder.encoder.layer.0.attention.self.query.weight";
        let mut weight = vars
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .shallow_clone();
        let _ = weight.g_mul_scalar_(0.5);
    });
}

#[test]
fn every_precision_follows_weights_that_change() {
    let mut precisions = vec![Precision::Float32, Precision::Int8];
    if cpu_has_bf16() {
        precisions.push(Precision::BFloat16);
    }
    let sentences = sentences(&model());
    let scores = |rows: &[Vec<PredictedEntity>]| -> Vec<f32> {
        rows.iter().flatten().map(|e| e.score).collect()
    };
    for precision in precisions {
        let mut model = model();
        let before = predict_words(&model, &sentences, precision);
        halve_a_query_weight(&mut model);
        let after = predict_words(&model, &sentences, precision);
        // A model that never predicted with the old weights.
        let mut fresh = self::model();
        halve_a_query_weight(&mut fresh);
        let want = predict_words(&fresh, &sentences, precision);
        assert_ne!(
            scores(&before),
            scores(&after),
            "{precision} kept the old weights"
        );
        assert_eq!(after, want, "{precision} predicts other than a fresh model");
    }
}
