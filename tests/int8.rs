//! `Precision::Int8`: dynamically quantised linear maps on the CPU give nearly the float32
//! entities, and follow the weights when they change.

mod common;

use common::{conll_tiny, conll_words, predict_words, repo};
use span_marker::device::Precision;
use span_marker::{PredictedEntity, SpanMarkerModel};

fn model() -> SpanMarkerModel {
    SpanMarkerModel::from_pretrained(conll_tiny().to_str().unwrap()).unwrap()
}

fn sentences(model: &SpanMarkerModel) -> Vec<Vec<String>> {
    conll_words(&repo().join("examples/data/test.txt"), model.labels())
}

/// Per float32 entity, the int8 entity at the same span and label, if any.
fn matched<'a>(
    float32: &'a [Vec<PredictedEntity>],
    int8: &'a [Vec<PredictedEntity>],
) -> Vec<(&'a PredictedEntity, Option<&'a PredictedEntity>)> {
    float32
        .iter()
        .zip(int8)
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

#[test]
fn int8_entities_stay_close_to_float32() {
    let model = model();
    let sentences = sentences(&model);
    let float32 = predict_words(&model, &sentences, Precision::Float32);
    let int8 = predict_words(&model, &sentences, Precision::Int8);
    let pairs = matched(&float32, &int8);
    assert!(pairs.len() > 50, "only {} entities", pairs.len());
    let kept = pairs.iter().filter(|(_, q)| q.is_some()).count();
    assert!(
        kept * 100 >= pairs.len() * 95,
        "{kept} of {} kept",
        pairs.len()
    );
    let mut largest = 0f32;
    for (f, q) in &pairs {
        match q {
            Some(q) => largest = largest.max((f.score - q.score).abs()),
            None => assert!(f.score < 0.8, "confident {f:?} lost in int8"),
        }
    }
    // Quantised, so not bit-identical, but close.
    assert!(
        largest > 0.0,
        "int8 scores equal float32's: the int8 path did not run"
    );
    assert!(largest < 0.1, "scores differ by up to {largest}");
}

#[test]
fn int8_follows_weights_that_change() {
    let mut model = model();
    let sentences = sentences(&model);
    let before = predict_words(&model, &sentences, Precision::Int8);
    // Halve one layer's feed-forward output: an in-place change, as an optimizer step makes.
    tch::no_grad(|| {
        let vars = model.var_store_mut().variables();
        let name = "encoder.encoder.layer.0.output.dense.weight";
        let mut weight = vars
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .shallow_clone();
        let _ = weight.g_mul_scalar_(0.5);
    });
    let float32 = predict_words(&model, &sentences, Precision::Float32);
    let after = predict_words(&model, &sentences, Precision::Int8);
    let scores = |rows: &[Vec<PredictedEntity>]| -> Vec<f32> {
        rows.iter().flatten().map(|e| e.score).collect()
    };
    assert_ne!(scores(&before), scores(&after), "int8 kept the old weights");
    let pairs = matched(&float32, &after);
    let kept = pairs.iter().filter(|(_, q)| q.is_some()).count();
    assert!(
        kept * 100 >= pairs.len() * 95,
        "{kept} of {} kept",
        pairs.len()
    );
}
