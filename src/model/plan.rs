//! The forward plan: the one place that decides how a forward pass runs.
//!
//! [`ForwardPlan::new`] chooses, from the device, the precision and what the pass is for
//! ([`Mode`]), the form of the linear maps, the attention form, the row switches, autocast and
//! window joining; [`ForwardPlan::for_batch`] applies it to one batch (whose shape decides the
//! rest) and [`BatchPlan::flops`] counts what that batch runs. Prediction, evaluation, training
//! and the benchmarks' FLOP counts all ask it; nothing else decides which forms run (the
//! batch-shape rules it applies live beside the forms they choose: the attention's by-shape rule
//! in `MarkerAttention::new`, the read rows' bucketing in [`Rows`]).
//!
//! Which plan runs when:
//!
//! | mode | device, precision | linear maps | attention | skip padding | last layer on markers | autocast | windows joined |
//! |---|---|---|---|---|---|---|---|
//! | predict | CPU with oneDNN, `fp32` | `Fused` | direct | always | yes | no | yes |
//! | predict | CPU with oneDNN, `bf16` | `FusedBf16` | direct | always | yes | no | yes |
//! | predict | CPU, `int8` | `Int8` | direct | always | yes | no | yes |
//! | evaluate (labelled) | as predict | as predict | direct | always | yes | no | no (the loss is the reference's mean of batch means) |
//! | predict, evaluate | CUDA, or CPU without oneDNN | `Standard` | by shape | when worth it | yes | `bf16`, `fp16` | no |
//! | train | CPU | `Standard` | direct | always | no | `bf16` | no |
//! | train | CUDA | `Standard` | by shape | when worth it | no | `bf16`, `fp16` | no |
//!
//! - *direct*: one C++ task per sample and head scores each query against only the keys it may
//!   see ([`MarkerAttention::Direct`]); in training its own backward pass gives the
//!   query-key-value rows their gradient, with dropout on the attention weights.
//! - *by shape*: the structured form for batches of at least 256 positions whose text is at
//!   most an eighth of them, and whenever dropout runs on the CPU; the dense form otherwise
//!   ([`MarkerAttention::new`]).
//! - *when worth it*: where the padded positions are at least `64 / hidden_size` of the
//!   batch ([`worth_skipping_padding`]).
//! - The last layer on the markers is inference only (in training dropout draws its masks over
//!   every row in the reference's order), and applies where the marker rows, in whole buckets,
//!   are fewer than the rows.
//!
//! A contributor adding a precision or an attention form adds its rule to
//! [`ForwardPlan::new`] (and a row to this table), its form to [`MapForm`] and
//! [`Linear`](super::linear::Linear), or to [`AttentionRule`] and [`MarkerAttention`].

use tch::{Device, Kind};

use super::attention::MarkerAttention;
use super::encoder::EncoderSettings;
use super::linear::MapForm;
use super::rows::Rows;
use crate::collate::Batch;
use crate::device::Precision;
use crate::error::Result;
use crate::ffi;

/// What a forward pass is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Gradients and dropout.
    Train,
    /// Inference on labelled samples, with the reference's loss.
    Evaluate,
    /// Inference without labels.
    Predict,
}

/// Which attention form a plan takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionRule {
    /// Chosen per batch by its shape ([`MarkerAttention::new`]).
    ByShape,
    /// Always the dense masked form (the reference's computation).
    Dense,
    /// Always the structured form.
    Structured,
    /// The direct CPU kernel (with its own backward pass in training).
    Direct,
}

/// When a plan runs the layers without a batch's padding rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingRule {
    Never,
    /// Where [`worth_skipping_padding`] says so.
    WhenWorthIt,
    /// Whenever the batch has padding (the direct attention reads unpadded rows as they are).
    Always,
}

/// How forward passes run (see the module docs for which plan runs when).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardPlan {
    /// Dropout on, gradients wanted.
    pub train: bool,
    pub maps: MapForm,
    pub attention: AttentionRule,
    /// The 16-bit precision the standard maps run in under autocast, if any.
    pub autocast: Option<Precision>,
    pub skip_padding: PaddingRule,
    /// The last layer's attention output and feed-forward maps on the marker rows only.
    pub last_layer_on_markers: bool,
    /// Each window's samples scored as one sample (its text encoded once); needs the direct
    /// attention, whose markers see no other span's.
    pub join_windows: bool,
}

impl ForwardPlan {
    /// The plan for `mode` in `precision` on `device`; an error where the precision cannot run
    /// there ([`Precision::check`]).
    ///
    /// ```
    /// use span_marker::device::Precision;
    /// use span_marker::model::plan::{AttentionRule, ForwardPlan, Mode};
    /// let plan = ForwardPlan::new(tch::Device::Cpu, Precision::Int8, Mode::Predict)?;
    /// assert_eq!(plan.attention, AttentionRule::Direct);
    /// assert!(ForwardPlan::new(tch::Device::Cpu, Precision::Int8, Mode::Train).is_err());
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn new(device: Device, precision: Precision, mode: Mode) -> Result<Self> {
        precision.check(device)?;
        let train = mode == Mode::Train;
        if train && precision == Precision::Int8 {
            return Err(crate::Error::Device(
                "`int8` is for inference only: train in `fp32`, or `bf16`/`fp16` mixed precision"
                    .into(),
            ));
        }
        let onednn = device == Device::Cpu && ffi::fused_supported();
        let maps = match precision {
            _ if train => MapForm::Standard,
            Precision::Int8 => MapForm::Int8,
            Precision::Float32 if onednn => MapForm::Fused,
            Precision::BFloat16 if onednn => MapForm::FusedBf16,
            _ => MapForm::Standard,
        };
        if maps == MapForm::Standard {
            let autocast =
                matches!(precision, Precision::BFloat16 | Precision::Float16).then_some(precision);
            if train && device == Device::Cpu {
                return Ok(Self {
                    attention: AttentionRule::Direct,
                    skip_padding: PaddingRule::Always,
                    autocast,
                    ..Self::standard(train)
                });
            }
            return Ok(Self {
                autocast,
                ..Self::standard(train)
            });
        }
        Ok(Self {
            train: false,
            maps,
            attention: AttentionRule::Direct,
            autocast: None,
            skip_padding: PaddingRule::Always,
            last_layer_on_markers: true,
            join_windows: mode == Mode::Predict,
        })
    }

    /// The standard maps in float32, attention by shape, padding skipped where worth it, and in
    /// inference the last layer on the markers: what training and
    /// inference without the CPU kernels run ([`SpanMarkerModel::forward`](super::SpanMarkerModel::forward)).
    pub fn standard(train: bool) -> Self {
        Self {
            train,
            maps: MapForm::Standard,
            attention: AttentionRule::ByShape,
            autocast: None,
            skip_padding: PaddingRule::WhenWorthIt,
            last_layer_on_markers: !train,
            join_windows: false,
        }
    }

    /// The reference's computation: the standard maps in float32 on every row under the
    /// dense mask, without dropout. What the other plans are tested against.
    pub fn reference() -> Self {
        Self {
            attention: AttentionRule::Dense,
            skip_padding: PaddingRule::Never,
            last_layer_on_markers: false,
            ..Self::standard(false)
        }
    }

    /// The plan applied to `batch`: its attention pattern and the rows each part runs on.
    pub fn for_batch(&self, batch: &Batch, encoder: &EncoderSettings) -> BatchPlan {
        let layout = batch.layout();
        let attention = match self.attention {
            AttentionRule::ByShape => {
                let dropout = self.train && encoder.attention_probs_dropout_prob > 0.0;
                MarkerAttention::new(&layout, Kind::Float, dropout)
            }
            AttentionRule::Dense => MarkerAttention::dense(&layout, Kind::Float),
            AttentionRule::Structured => MarkerAttention::structured(&layout, Kind::Float),
            AttentionRule::Direct => MarkerAttention::direct(&layout),
        };
        let skip_padding = match (self.skip_padding, &batch.tokens) {
            (PaddingRule::Never, _) | (_, None) => false,
            (PaddingRule::Always, Some(_)) => true,
            (PaddingRule::WhenWorthIt, Some(tokens)) => worth_skipping_padding(
                encoder.hidden_size,
                tokens.size()[0],
                batch.input_ids.numel() as i64,
            ),
        };
        let layers = encoder.num_hidden_layers as usize;
        let rows = Rows::new(batch, skip_padding, self.last_layer_on_markers, layers);
        BatchPlan { attention, rows }
    }
}

/// Whether a batch of `positions` positions of which `tokens` hold text or markers is worth
/// running without its padding, for an encoder `hidden_size` wide: when the padded positions
/// are at least `64 / hidden_size` of all. Skipping padding copies every layer's queries, keys
/// and values into the padded layout and the attention output out of it, which costs per
/// position about what the products cost per `hidden_size`-th position. Measured on CPU:
/// MiniLM (384 wide) trained 1.33x faster on shuffled CoNLL-2003 batches, which are 55%
/// padding; the 32-wide test model trained 13% slower on toy batches, so it never skips.
///
/// ```
/// use span_marker::model::plan::worth_skipping_padding;
/// // 384 wide (MiniLM): worth it from a sixth of padding on.
/// assert!(worth_skipping_padding(384, 800, 1000));
/// assert!(!worth_skipping_padding(384, 900, 1000));
/// ```
pub fn worth_skipping_padding(hidden_size: i64, tokens: i64, positions: i64) -> bool {
    const MIN_PADDED_WIDTH: i64 = 64;
    (positions - tokens) * hidden_size >= MIN_PADDED_WIDTH * positions
}

/// A [`ForwardPlan`] applied to one batch.
#[derive(Debug)]
pub struct BatchPlan {
    pub attention: MarkerAttention,
    pub rows: Rows,
}

impl BatchPlan {
    /// Model FLOPs of this batch's forward pass through an encoder of `settings` and a head of
    /// `labels` outputs: the matrix products (two FLOPs per multiply-add) of the embedding
    /// projection, the query, key, value and output projections, the feed-forward maps,
    /// attention's scores and weighted sums as executed (padding only where attention computes
    /// it), and the head. Element-wise work (norms, softmax, activations) is left out, as
    /// model-FLOPs-utilisation counts do; backward passes are not counted (about twice a
    /// forward's).
    pub fn flops(&self, settings: &EncoderSettings, labels: i64) -> u64 {
        let (b, t) = self.rows.shape();
        let counts = self.rows.counts();
        let (h, i) = (settings.hidden_size, settings.intermediate_size);
        let e = settings.embedding_size();
        let keys = self.attention.keys_per_query(t);
        let query_key_value = |rows: i64| 2 * rows * 3 * h * h;
        let rest = |rows: i64| 2 * rows * (h * h + 2 * h * i);
        let attention = 2 * 2 * (b * t) * keys * h;
        let layers = settings.num_hidden_layers;
        let projection = if e != h { 2 * counts.tokens * e * h } else { 0 };
        let encoder = if layers > 0 {
            projection
                + layers * (query_key_value(counts.tokens) + attention + rest(counts.tokens))
                + rest(counts.last)
                - rest(counts.tokens)
        } else {
            projection
        };
        let head = 2 * b * (t / 2) * (2 * h) * labels;
        (encoder + head).max(0) as u64
    }
}
