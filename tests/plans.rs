//! Every forward plan this CPU can run gives the reference's logits: the standard maps on every
//! row under the dense mask ([`ForwardPlan::reference`]) against each form of the linear maps and
//! the attention, with and without each row switch, on one batch of CoNLL-2003 test sentences
//! (the toy test split where CoNLL-2003 is absent). Float32 plans agree within
//! [`LOGIT_TOLERANCE`] and pick the same label for every candidate span; int8 and bf16 within
//! the tolerances stated below (their largest differences are reported, not bounded: a
//! quantised product moves a few logits by up to a tenth of the largest).

mod common;

use std::path::PathBuf;

use common::{conll_words, repo, with_words, LOGIT_TOLERANCE};
use span_marker::collate::{Batch, CollateSpec};
use span_marker::device::{cpu_has_bf16, Precision};
use span_marker::model::linear::MapForm;
use span_marker::model::plan::{AttentionRule, ForwardPlan, Mode, PaddingRule};
use span_marker::{SentenceInput, SpanMarkerModel};
use tch::{Device, Kind, Tensor};

/// Mean difference of an int8 logit from the reference's, relative to the largest logit; at
/// most 1% of the spans may change their label.
const INT8_TOLERANCE: f64 = 0.01;
/// The same for bfloat16 (8 bits of mantissa in the activations between the maps).
const BF16_TOLERANCE: f64 = 0.01;

/// The CoNLL-2003 test split (`$CONLL2003_DIR`, else the development copy beside the
/// repository), or the toy test split with a message.
fn sentences_file() -> PathBuf {
    let dir = std::env::var_os("CONLL2003_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/conll2003"));
    let conll = dir.join("test.txt");
    if conll.is_file() {
        return conll;
    }
    eprintln!(
        "CoNLL-2003 not found at {}: comparing the plans on the toy test split",
        conll.display()
    );
    repo().join("examples/data/test.txt")
}

/// One batch of the first 16 sentences, collated as prediction collates them (trimmed): long
/// and short sentences together, so that it has padding.
fn conll_batch(model: &SpanMarkerModel) -> Batch {
    let words: Vec<Vec<String>> = conll_words(&sentences_file(), model.labels())
        .into_iter()
        .take(16)
        .collect();
    with_words(&words, |inputs| {
        let rows: Vec<Option<SentenceInput<'_>>> = inputs.iter().copied().map(Some).collect();
        let encoded = model.preprocessor().encode(&rows).unwrap();
        let spec = CollateSpec {
            trim_to_multiple_of: Some(8),
            ..model.preprocessor().collate_spec()
        };
        encoded
            .collate(0..encoded.samples.len(), &spec, Device::Cpu)
            .unwrap()
    })
}

/// Every plan to compare: each form of the maps with each attention form it runs with, with
/// and without each row switch, and the plans [`ForwardPlan::new`] picks on this CPU.
fn plans() -> Vec<(ForwardPlan, f64)> {
    let mut forms = vec![
        (MapForm::Standard, AttentionRule::Dense, None, 0.0),
        (MapForm::Standard, AttentionRule::Structured, None, 0.0),
        (MapForm::Standard, AttentionRule::Direct, None, 0.0),
        (MapForm::Fused, AttentionRule::Direct, None, 0.0),
        (MapForm::Int8, AttentionRule::Direct, None, INT8_TOLERANCE),
    ];
    if cpu_has_bf16() {
        forms.push((
            MapForm::FusedBf16,
            AttentionRule::Direct,
            None,
            BF16_TOLERANCE,
        ));
        let autocast = Some(Precision::BFloat16);
        forms.push((
            MapForm::Standard,
            AttentionRule::Dense,
            autocast,
            BF16_TOLERANCE,
        ));
    } else {
        eprintln!("no bfloat16 instructions on this CPU: the bf16 plans are not compared");
    }
    let mut plans = Vec::new();
    for (maps, attention, autocast, tolerance) in forms {
        for skip_padding in [PaddingRule::Never, PaddingRule::Always] {
            for last_layer_on_markers in [false, true] {
                let plan = ForwardPlan {
                    maps,
                    attention,
                    autocast,
                    skip_padding,
                    last_layer_on_markers,
                    ..ForwardPlan::reference()
                };
                plans.push((plan, tolerance));
            }
        }
    }
    for precision in [Precision::Float32, Precision::Int8, Precision::BFloat16] {
        let tolerance = match precision {
            Precision::Int8 => INT8_TOLERANCE,
            Precision::BFloat16 if cpu_has_bf16() => BF16_TOLERANCE,
            Precision::BFloat16 => continue,
            _ => 0.0,
        };
        for mode in [Mode::Predict, Mode::Evaluate] {
            plans.push((
                ForwardPlan::new(Device::Cpu, precision, mode).unwrap(),
                tolerance,
            ));
        }
    }
    plans
}

#[test]
fn every_plan_gives_the_reference_logits() {
    let model = SpanMarkerModel::bundled().unwrap();
    let batch = conll_batch(&model);
    let tokens = batch.tokens.as_ref().expect("the batch has padding");
    assert!(tokens.size()[0] < batch.input_ids.numel() as i64);
    let (b, t) = batch.input_ids.size2().unwrap();
    // Only the slots of real spans are compared (the others hold the bias alone).
    let slot = Tensor::arange(t / 2, (Kind::Int64, Device::Cpu)).view([1, t / 2]);
    let valid = slot.lt_tensor(&batch.num_marker_pairs.view([b, 1]));
    let logits = |plan: &ForwardPlan| {
        let logits = tch::no_grad(|| model.forward_with(&batch, plan).unwrap().logits);
        logits.to_kind(Kind::Float).index(&[Some(&valid)])
    };
    let reference = logits(&ForwardPlan::reference());
    let labels = reference.argmax(-1, false);
    let scale = f64::try_from(reference.abs().max()).unwrap();
    assert!(reference.size()[0] > 100, "{} spans", reference.size()[0]);
    let mut failures = Vec::new();
    for (plan, tolerance) in plans() {
        let got = logits(&plan);
        let diff = f64::try_from((&got - &reference).abs().max()).unwrap();
        let mean = f64::try_from((&got - &reference).abs().mean(Kind::Double)).unwrap();
        let spans = labels.size()[0];
        let differing =
            i64::try_from(got.argmax(-1, false).ne_tensor(&labels).sum(Kind::Int64)).unwrap();
        eprintln!(
            "{plan:?}: max difference {diff:.2e}, mean {mean:.2e} (largest logit {scale:.2}), \
             {differing} of {spans} spans labelled otherwise"
        );
        let fine = if tolerance == 0.0 {
            diff < LOGIT_TOLERANCE && differing == 0
        } else {
            // It ran in its own precision (not the float32 logits), close to them.
            diff > 0.0 && mean < tolerance * scale && differing * 100 <= spans
        };
        if !fine {
            failures.push(format!("{plan:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "plans off the reference: {failures:#?}"
    );
}
