//! The SpanMarker model: a BERT-family encoder plus a linear head over marker states, loaded
//! from and saved to checkpoints that Python `span_marker` reads and writes.
//!
//! ```no_run
//! use span_marker::SpanMarkerModel;
//!
//! let model = SpanMarkerModel::from_pretrained("tests/fixtures/trained/tiny-bert")?;
//! let entities = model.predict_one(
//!     span_marker::SentenceInput::Text("Peter Blackburn met Clinton in Washington."),
//!     &Default::default(),
//! )?;
//! for entity in entities {
//!     println!("{} {} {:.3}", entity.text, entity.label, entity.score);
//! }
//! # Ok::<(), span_marker::Error>(())
//! ```
//!
//! The model's modules by stage: [`encoder`] (embeddings and layers), [`linear`] (the linear
//! maps in each of their forms), [`attention`] (the marker attention's forms), [`rows`] (which
//! rows of a batch each part runs on), [`head`] (marker states to span logits); [`plan`]
//! decides, in one place, which of them a forward pass runs. Loading and its checks live in
//! `load.rs`, saving and fingerprints in `save.rs`.

pub mod attention;
mod card;
pub mod dropout;
pub mod encoder;
mod head;
pub mod linear;
mod load;
pub mod plan;
pub mod rows;
mod save;

use std::sync::atomic::{AtomicU64, Ordering};

use tch::nn::{self, Module};
use tch::{Device, Tensor};

pub use card::ModelCard;
use encoder::Encoder;
use linear::EncoderMaps;
pub use load::LoadOptions;
use plan::ForwardPlan;

use crate::collate::Batch;
use crate::config::SpanMarkerConfig;
use crate::error::Result;
use crate::labels::Labels;
use crate::preprocess::Preprocessor;

/// Logits and, when the batch has labels, the loss.
#[derive(Debug)]
pub struct ModelOutput {
    /// `[B, T/2, C]` span logits (rows past each sample's marker pairs hold the bias only).
    pub logits: Tensor,
    /// Mean cross-entropy over labelled spans.
    pub loss: Option<Tensor>,
}

/// A SpanMarker model with its preprocessing.
pub struct SpanMarkerModel {
    config: SpanMarkerConfig,
    preprocessor: Preprocessor,
    vs: nn::VarStore,
    encoder: Encoder,
    classifier: nn::Linear,
    dropout: f64,
    /// Model FLOPs of the forward passes run so far ([`SpanMarkerModel::flops_executed`]).
    flops: AtomicU64,
}

impl std::fmt::Debug for SpanMarkerModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanMarkerModel")
            .field("encoder", &self.encoder)
            .field("labels", &self.labels().reduced())
            .field("device", &self.device())
            .finish_non_exhaustive()
    }
}

impl SpanMarkerModel {
    /// Runs the encoder and the head on a collated batch in the standard plan
    /// ([`ForwardPlan::standard`]: float32, libtorch's maps, gradients); dropout is active
    /// when `train` is set.
    pub fn forward(&self, batch: &Batch, train: bool) -> Result<ModelOutput> {
        self.forward_with(batch, &ForwardPlan::standard(train))
    }

    /// [`forward`](Self::forward) as `plan` says (see [`plan`]): its linear maps, attention,
    /// rows and autocast.
    pub fn forward_with(&self, batch: &Batch, plan: &ForwardPlan) -> Result<ModelOutput> {
        let maps = self.encoder.maps(plan.maps)?;
        let run = || self.run(batch, plan, &maps);
        match plan.autocast {
            Some(precision) => precision.autocast(self.device(), run)?,
            None => run(),
        }
    }

    fn run(&self, batch: &Batch, plan: &ForwardPlan, maps: &EncoderMaps) -> Result<ModelOutput> {
        let train = plan.train;
        let settings = self.encoder.settings();
        let batch_plan = plan.for_batch(batch, settings);
        let (ids, positions) = (&batch.input_ids, &batch.position_ids);
        let hidden = self
            .encoder
            .forward(ids, positions, &batch_plan, maps, train)?;
        let hidden = dropout::dropout(&hidden, self.dropout, train)?;
        let features = head::marker_features(
            &hidden,
            &batch.start_marker_indices,
            &batch.num_marker_pairs,
        );
        let features = dropout::dropout(&features, self.dropout, train)?;
        let logits = self.classifier.forward(&features);
        let labels = self.labels().num_reduced() as i64;
        self.flops
            .fetch_add(batch_plan.flops(settings, labels), Ordering::Relaxed);
        let loss = batch
            .labels
            .as_ref()
            .map(|labels| head::span_loss(&logits, labels));
        Ok(ModelOutput { logits, loss })
    }

    /// Model FLOPs of every forward pass run so far, as [`BatchPlan::flops`](plan::BatchPlan::flops)
    /// counts them for the shapes actually run. Benchmarks divide the difference over a run by
    /// its time.
    ///
    /// ```
    /// let model = span_marker::SpanMarkerModel::from_pretrained("bundled")?;
    /// let before = model.flops_executed();
    /// model.predict(&[span_marker::SentenceInput::Text("Ada Lovelace lived in London.")], &Default::default())?;
    /// assert!(model.flops_executed() > before);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn flops_executed(&self) -> u64 {
        self.flops.load(Ordering::Relaxed)
    }

    /// Moves the weights to `device`.
    pub fn to_device(&mut self, device: Device) {
        self.vs.set_device(device);
        self.encoder.clear_derived();
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
    pub fn config(&self) -> &SpanMarkerConfig {
        &self.config
    }
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }
    pub fn labels(&self) -> &Labels {
        self.preprocessor.labels()
    }
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }
    /// The trainable variables (for optimisers and mixed precision).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Entity;
    use crate::preprocess::EncodeOptions;
    use crate::tokenizer::SentenceInput;
    use linear::MapForm;
    use plan::{AttentionRule, PaddingRule};
    use tch::Kind;

    const WORDS: [&str; 6] = ["Peter", "Blackburn", "visited", "Brussels", "today", "."];

    fn labelled_batch(model: &SpanMarkerModel) -> Batch {
        let entities = [vec![Entity::new(4, 0, 2), Entity::new(1, 3, 4)]];
        let encoded = model
            .preprocessor()
            .encode_with(
                &[Some(SentenceInput::Words(&WORDS))],
                EncodeOptions {
                    entities: Some(&entities),
                    ..Default::default()
                },
            )
            .unwrap();
        let spec = model.preprocessor().collate_spec();
        encoded
            .collate(0..encoded.samples.len(), &spec, Device::Cpu)
            .unwrap()
    }

    /// A batch of `rows` (all their samples).
    fn batch_of(model: &SpanMarkerModel, rows: &[Option<SentenceInput<'_>>]) -> Batch {
        let encoded = model.preprocessor().encode(rows).unwrap();
        let spec = model.preprocessor().collate_spec();
        encoded
            .collate(0..encoded.samples.len(), &spec, Device::Cpu)
            .unwrap()
    }

    /// The encoder's last states of `batch` under `plan`, as `[B x T, H]` rows.
    fn states(model: &SpanMarkerModel, batch: &Batch, plan: &ForwardPlan) -> Tensor {
        let encoder = model.encoder();
        let maps = encoder.maps(plan.maps).unwrap();
        let batch_plan = plan.for_batch(batch, encoder.settings());
        let (ids, pos) = (&batch.input_ids, &batch.position_ids);
        tch::no_grad(|| encoder.forward(ids, pos, &batch_plan, &maps, plan.train))
            .unwrap()
            .flatten(0, 1)
    }

    /// The plans with the CPU inference forms: (standard maps, structured attention) and the
    /// direct attention with the fused float32 and the int8 maps; row switches off.
    fn forms() -> [ForwardPlan; 3] {
        let bare = ForwardPlan {
            skip_padding: PaddingRule::Never,
            last_layer_on_markers: false,
            ..ForwardPlan::standard(false)
        };
        let direct = |maps| ForwardPlan {
            maps,
            attention: AttentionRule::Direct,
            ..bare
        };
        [
            ForwardPlan {
                attention: AttentionRule::Structured,
                ..bare
            },
            direct(MapForm::Fused),
            direct(MapForm::Int8),
        ]
    }

    #[test]
    fn padding_is_skipped_without_changing_a_score() {
        // A short and a long sentence in one batch: the short one's row is mostly padding.
        let model = SpanMarkerModel::bundled().unwrap();
        let long = [
            "The",
            "European",
            "Commission",
            "said",
            "on",
            "Thursday",
            "it",
            "disagreed",
            "with",
            "German",
            "advice",
            "to",
            "consumers",
            "to",
            "shun",
            "British",
            "lamb",
        ];
        let rows = [
            Some(SentenceInput::Words(&WORDS[..2])),
            Some(SentenceInput::Words(&long)),
        ];
        let encoded = model.preprocessor().encode(&rows).unwrap();
        let spec = model.preprocessor().collate_spec();
        let all = 0..encoded.samples.len();
        let unpadded = encoded.collate(all.clone(), &spec, Device::Cpu).unwrap();
        let tokens = unpadded.tokens.as_ref().expect("the batch has padding");
        let (b, t) = unpadded.input_ids.size2().unwrap();
        let kept = tokens.size()[0];
        assert_eq!(kept % crate::collate::TOKEN_BUCKET as i64, 0);
        let hidden = model.encoder().settings().hidden_size;
        assert!(
            kept < b * t && plan::worth_skipping_padding(hidden, kept, b * t),
            "{kept} of {b} x {t}"
        );
        let mut padded = encoded.collate(all, &spec, Device::Cpu).unwrap();
        padded.tokens = None;

        let pairs = unpadded.num_marker_pairs.view([b, 1, 1]);
        let slot = Tensor::arange(t / 2, (Kind::Int64, Device::Cpu)).view([1, t / 2, 1]);
        let read = slot.lt_tensor(&pairs).to_kind(Kind::Float);
        // The logits of every read slot, and the gradient they send to the first layer.
        let run = |batch: &Batch| {
            let logits = model.forward(batch, false).unwrap().logits * &read;
            let query = &model.var_store().variables()
                ["encoder.encoder.layer.0.attention.self.query.weight"];
            let grad =
                Tensor::run_backward(&[logits.sin().sum(Kind::Float)], &[query], false, false);
            (logits.detach(), grad[0].shallow_clone())
        };
        let (logits, grad) = run(&unpadded);
        let (want_logits, want_grad) = run(&padded);
        let max_diff = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
        // The structured attention (what training on the CPU takes): the same states at every
        // kept position.
        let [structured, ..] = forms();
        let skipping = ForwardPlan {
            skip_padding: PaddingRule::Always,
            ..structured
        };
        let at_tokens = |plan| states(&model, &unpadded, &plan).index_select(0, tokens);
        assert!(max_diff(&at_tokens(skipping), &at_tokens(structured)) < 1e-4);
        assert!(max_diff(&logits, &want_logits) < 1e-4);
        assert!(max_diff(&grad, &want_grad) < 1e-4 * f64::try_from(want_grad.abs().max()).unwrap());
        assert!(f64::try_from(want_grad.abs().sum(Kind::Float)).unwrap() > 0.0);
    }

    #[test]
    fn the_last_layer_gives_the_read_rows_their_states_and_nothing_else() {
        let model = SpanMarkerModel::bundled().unwrap();
        // Enough text (a tenth of the rows) that the markers fill fewer whole buckets of rows.
        let text = "The European Commission said on Thursday it disagreed with German advice \
                    to consumers to shun British lamb until scientists determine whether mad cow \
                    disease can be transmitted to sheep .";
        let long: Vec<&str> = text.split(' ').collect();
        let mut rows = vec![Some(SentenceInput::Words(&WORDS[..2]))];
        rows.extend(std::iter::repeat_n(Some(SentenceInput::Words(&long)), 6));
        let batch = batch_of(&model, &rows);
        let (b, t) = batch.input_ids.size2().unwrap();
        let markers = &batch.markers;
        let pairs: Vec<i64> = Vec::try_from(&batch.num_marker_pairs).unwrap();
        assert_eq!(markers.size(), [2 * pairs.iter().sum::<i64>()]);
        let [structured, fused, _] = forms();
        for plan in [structured, fused] {
            for skip_padding in [PaddingRule::Always, PaddingRule::Never] {
                if skip_padding == PaddingRule::Never && plan.attention == AttentionRule::Direct {
                    continue; // the direct form's padded layout is compared in tests/plans.rs
                }
                let all = ForwardPlan {
                    skip_padding,
                    ..plan
                };
                let read = ForwardPlan {
                    last_layer_on_markers: true,
                    ..all
                };
                let counts = read
                    .for_batch(&batch, model.encoder().settings())
                    .rows
                    .counts();
                assert!(counts.last < counts.tokens, "{counts:?}");
                let (all, read) = (states(&model, &batch, &all), states(&model, &batch, &read));
                let diff = f64::try_from(
                    (all.index_select(0, markers) - read.index_select(0, markers))
                        .abs()
                        .max(),
                )
                .unwrap();
                assert!(diff < 1e-5, "{plan:?}: {diff}");
                let mut unread = Tensor::ones([b * t], (Kind::Bool, Device::Cpu));
                let _ = unread.index_fill_(0, markers, 0);
                let rest = read.index_select(0, &unread.nonzero().view([-1]));
                assert_eq!(f64::try_from(rest.abs().sum(Kind::Double)).unwrap(), 0.0);
            }
        }
    }

    #[test]
    fn dropout_is_active_only_in_training() {
        let model = SpanMarkerModel::bundled().unwrap();
        let batch = labelled_batch(&model);
        let eval = |_| tch::no_grad(|| model.forward(&batch, false).unwrap().logits);
        let train = |_| tch::no_grad(|| model.forward(&batch, true).unwrap().logits);
        assert!(eval(0).equal(&eval(1)));
        assert!(!train(0).equal(&train(1)));
        assert!(!train(0).equal(&eval(0)));
    }

    #[test]
    fn the_loss_reaches_every_weight() {
        let model = SpanMarkerModel::bundled().unwrap();
        let batch = labelled_batch(&model);
        let loss = model
            .forward(&batch, false)
            .unwrap()
            .loss
            .expect("labels give a loss");
        assert!(f64::try_from(&loss).unwrap() > 0.0);
        loss.backward();
        for (name, var) in model.var_store().variables() {
            // The pooler is part of checkpoints but not of SpanMarker's computation.
            let grad = var.grad();
            if name.contains("pooler") {
                assert!(!grad.defined(), "{name} got a gradient");
            } else {
                assert!(
                    grad.defined()
                        && f64::try_from(grad.abs().sum(tch::Kind::Double)).unwrap() > 0.0,
                    "{name}: no gradient"
                );
            }
        }
    }
}
