//! SpanMarker's attention, computed from its structure instead of from a `T x T` mask.
//!
//! In a sample of `n` text tokens, text attends to text; each marker attends to the text, to
//! itself and to its partner (the other marker of its span); padding is never read (the dense
//! form lets a padding row see itself, the structured form nothing, and no read row sees it).
//! A dense mask makes every query score all `T = M + 2K` keys although at most
//! `n + 2` of them can receive weight, and with long sentences the markers fill most of `T`.
//! Here each query scores the batch's first `text_keys` keys (the longest text of the batch) and
//! its own and its partner's key: `T x (text_keys + 2)` scores per head instead of `T x T`. The
//! keys a dense mask allows get the same scores and the others get exactly zero weight in
//! both, so the probabilities of every read row are the same up to float summation order.
//!
//! The structured form takes a dozen small operations where the dense form, without dropout,
//! is one fused kernel; for inference it pays off once `T` is long and mostly markers.
//! Measured on CPU with a 4-layer, 256-wide BERT at `T` up to 512: 7% faster with 22-word
//! sentences (text a tenth of `T`), 8-18% with 44-word ones, 6% slower with 88-word ones (text a
//! quarter of `T`), and 20% slower with the tiny test model (`T <= 96`). With dropout on the
//! CPU (training) libtorch has no fused kernel: the dense form then materialises `B x heads x T
//! x T` probabilities, draws a dropout mask over them and multiplies, and the structured form
//! won by 1.35x at MiniLM size on CoNLL-2003 batches (`T = 256`, text keys about 60). See
//! [`MarkerAttention::new`].

use tch::{Device, Kind, Tensor};

use super::dropout::dropout;
use crate::collate::MarkerLayout;

/// The bias of a masked attention cell. `transformers` uses the dtype's minimum; that becomes
/// `-inf` when autocast casts the mask to float16, and fully masked rows then turn into NaN that
/// spreads through the values of the next layer. -1e4 is finite in every dtype and still makes
/// `exp` underflow to exactly 0, so float32 results are the same as the reference's.
const MASKED_BIAS: f64 = -1e4;

/// The attention pattern of one batch, shared by all layers.
#[derive(Debug)]
pub enum MarkerAttention {
    /// Every query scores every key under a `[B, 1, T, T]` additive bias (0 where attention is
    /// allowed, -1e4 elsewhere; padding rows see themselves).
    Dense { bias: Tensor },
    /// Every query scores the text keys, its own key and its partner's.
    Structured {
        /// Keys `[0, text_keys)` hold text in at least one sample of the batch.
        text_keys: i64,
        /// `[B, 1, T, text_keys + 2]` additive bias over (text keys, own key, partner's key).
        bias: Tensor,
        /// `[B, 1, T, 1]` int64: each position's partner marker (the position itself outside
        /// the markers).
        partner: Tensor,
    },
}

/// Batches at least this long use the structured form when their text keys are at most an
/// eighth of them.
const STRUCTURED_MIN_LENGTH: i64 = 256;

impl MarkerAttention {
    /// The pattern of a batch laid out as `layout`; the bias has `kind`. `dropout` says
    /// whether the attention probabilities get dropout (training). The structured form is
    /// chosen for batches of at least 256 tokens whose text (plus two keys) is at most an
    /// eighth of them, and whenever dropout runs on the CPU: there the dense form loses its
    /// fused kernel and materialises, draws a mask for and multiplies `B x heads x T x T`
    /// probabilities. The dense form serves the rest.
    pub fn new(layout: &MarkerLayout<'_>, kind: Kind, dropout: bool) -> Self {
        let t = layout.total_length;
        let long_and_mostly_markers =
            t >= STRUCTURED_MIN_LENGTH && 8 * (layout.text_length + 2) <= t;
        let unfused = dropout && layout.num_tokens.device() == Device::Cpu;
        if long_and_mostly_markers || unfused {
            return Self::structured(layout, kind);
        }
        Self::Dense {
            bias: Self::dense_bias(layout, kind),
        }
    }

    /// The `[B, 1, T, T]` bias of the dense form, in three passes over its cells instead of
    /// the ten that the boolean mask and a fill from it take: text and marker rows see the text
    /// keys, then each row gets its own key and its partner's. Padding rows thereby see
    /// themselves (not nothing, which would make NaN): their states are never read, and no row
    /// that is read sees them, so the result is the reference's.
    fn dense_bias(layout: &MarkerLayout<'_>, kind: Kind) -> Tensor {
        let roles = layout.roles();
        let t = layout.total_length;
        let b = layout.num_tokens.size1().unwrap_or(0);
        let sees_text = roles
            .is_text
            .logical_or(&roles.is_marker)
            .logical_and(&layout.key_is_text(t));
        let own_and_partner =
            Tensor::cat(&[roles.position.expand([b, t, 1], false), roles.partner], 2);
        let mut bias = Tensor::full([b, t, t], MASKED_BIAS, (kind, layout.num_tokens.device()));
        let _ = bias.masked_fill_(&sees_text, 0.0);
        let _ = bias.scatter_value_(2, &own_and_partner, 0.0);
        bias.unsqueeze(1)
    }

    /// Keys each query scores in a batch of `total_length` tokens: all of them in the dense
    /// form, the text keys and two more in the structured one.
    pub fn keys_per_query(&self, total_length: i64) -> i64 {
        match self {
            Self::Dense { .. } => total_length,
            Self::Structured { text_keys, .. } => text_keys + 2,
        }
    }

    /// The structured form, whatever the lengths.
    pub fn structured(layout: &MarkerLayout<'_>, kind: Kind) -> Self {
        let roles = layout.roles();
        let (b, t, text_keys) = (
            layout.num_tokens.size1().unwrap_or(0),
            layout.total_length,
            layout.text_length,
        );
        let allowed = Tensor::cat(
            &[
                roles
                    .is_text
                    .logical_or(&roles.is_marker)
                    .logical_and(&layout.key_is_text(text_keys)),
                roles.is_marker.expand([b, t, 2], false),
            ],
            2,
        );
        let bias = Tensor::zeros([b, 1, t, text_keys + 2], (kind, layout.num_tokens.device()))
            .masked_fill(&allowed.logical_not().unsqueeze(1), MASKED_BIAS);
        Self::Structured {
            text_keys,
            bias,
            partner: roles.partner.unsqueeze(1),
        }
    }

    /// Scaled dot-product attention of `[B, heads, T, d]` queries, keys and values under this
    /// pattern, with dropout `p` on the attention probabilities when `train` is set.
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, p: f64, train: bool) -> Tensor {
        let p = if train { p } else { 0.0 };
        let size = q.size();
        let head_dim = *size.last().expect("queries have a head dimension");
        let scale = 1.0 / (head_dim as f64).sqrt();
        let (text_keys, bias, partner) = match self {
            Self::Structured {
                text_keys,
                bias,
                partner,
            } => (*text_keys, bias, partner),
            Self::Dense { bias } => {
                return Tensor::scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    Some(bias),
                    p,
                    false,
                    None,
                    false,
                );
            }
        };
        let q = q * scale;
        let partner = partner.expand(&size, false);
        let (partner_k, partner_v) = (k.gather(2, &partner, false), v.gather(2, &partner, false));
        let (text_k, text_v) = (k.narrow(2, 0, text_keys), v.narrow(2, 0, text_keys));
        let kind = q.kind();
        let scores = Tensor::cat(
            &[
                q.matmul(&text_k.transpose(-2, -1)),
                (&q * k).sum_dim_intlist(-1, true, kind),
                (&q * &partner_k).sum_dim_intlist(-1, true, kind),
            ],
            -1,
        ) + bias;
        let probs = dropout(&scores.softmax(-1, scores.kind()), p, true);
        probs.narrow(-1, 0, text_keys).matmul(&text_v)
            + probs.narrow(-1, text_keys, 1) * v
            + probs.narrow(-1, text_keys + 1, 1) * partner_v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of `num_tokens` text tokens with markers from `start` and `pairs` pairs, in
    /// inputs of `total_length` tokens.
    struct Samples {
        num_tokens: Tensor,
        start: Tensor,
        pairs: Tensor,
        total_length: i64,
    }

    impl Samples {
        fn new(num_tokens: &[i64], start: &[i64], pairs: &[i64], total_length: i64) -> Self {
            Self {
                num_tokens: Tensor::from_slice(num_tokens),
                start: Tensor::from_slice(start),
                pairs: Tensor::from_slice(pairs),
                total_length,
            }
        }

        fn layout(&self) -> MarkerLayout<'_> {
            MarkerLayout {
                num_tokens: &self.num_tokens,
                start_marker_indices: &self.start,
                num_marker_pairs: &self.pairs,
                total_length: self.total_length,
                text_length: self.num_tokens.max().int64_value(&[]),
            }
        }
    }

    /// Dense attention under the full `[B, T, T]` SpanMarker mask, as the reference computes it.
    fn dense(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Tensor {
        let bias = Tensor::zeros(mask.size(), (Kind::Double, Device::Cpu))
            .masked_fill(&mask.logical_not(), MASKED_BIAS)
            .unsqueeze(1);
        let d = *q.size().last().unwrap() as f64;
        (q.matmul(&k.transpose(-2, -1)) / d.sqrt() + bias)
            .softmax(-1, Kind::Double)
            .matmul(v)
    }

    #[test]
    fn both_forms_equal_attention_under_the_dense_mask() {
        // Three samples of different text lengths (odd and even), marker counts and padding;
        // the last has the longest text, so the others have markers among the text keys.
        let (b, heads, t, d) = (3, 2, 18, 4);
        let samples = Samples::new(&[5, 4, 9], &[6, 4, 10], &[3, 7, 2], t);
        let layout = samples.layout();
        tch::manual_seed(0);
        let qkv: Vec<Tensor> = (0..3)
            .map(|_| Tensor::randn([b, heads, t, d], (Kind::Double, Device::Cpu)))
            .collect();
        let mask = layout.attention_mask();
        let want = dense(&qkv[0], &qkv[1], &qkv[2], &mask);
        // Padding rows see nothing: their states are never read, so only the others compare.
        let used = mask
            .any_dim(-1, false)
            .view([b, 1, t, 1])
            .to_kind(Kind::Double);
        let structured = MarkerAttention::structured(&layout, Kind::Double);
        let short = MarkerAttention::new(&layout, Kind::Double, false);
        assert!(
            matches!(short, MarkerAttention::Dense { .. }),
            "T = 18 is short"
        );
        for attention in [structured, short] {
            let got = attention.attend(&qkv[0], &qkv[1], &qkv[2], 0.1, false);
            let diff = (got - &want).abs() * &used;
            assert!(f64::try_from(diff.max()).unwrap() < 1e-12, "{attention:?}");
        }
    }

    #[test]
    fn long_batches_of_mostly_markers_take_the_structured_form() {
        let pattern = |text: i64| {
            let samples = Samples::new(&[text], &[text + text % 2], &[100], 512);
            MarkerAttention::new(&samples.layout(), Kind::Float, false)
        };
        assert!(matches!(pattern(60), MarkerAttention::Structured { .. }));
        assert!(matches!(pattern(120), MarkerAttention::Dense { .. }));
    }

    #[test]
    fn dropout_on_the_cpu_takes_the_structured_form() {
        let samples = Samples::new(&[5], &[6], &[3], 18);
        let layout = samples.layout();
        let with_dropout = MarkerAttention::new(&layout, Kind::Float, true);
        assert!(matches!(with_dropout, MarkerAttention::Structured { .. }));
        let without = MarkerAttention::new(&layout, Kind::Float, false);
        assert!(matches!(without, MarkerAttention::Dense { .. }));
    }

    #[test]
    fn only_markers_see_their_partners() {
        let samples = Samples::new(&[3], &[4], &[2], 8);
        let attention = MarkerAttention::structured(&samples.layout(), Kind::Float);
        let MarkerAttention::Structured { bias, partner, .. } = attention else {
            panic!("asked for the structured form");
        };
        let partner: Vec<i64> = partner.view([-1]).try_into().unwrap();
        assert_eq!(partner, [0, 1, 2, 3, 6, 7, 4, 5]);
        // Columns: 3 text keys, own key, partner's key.
        let allowed: Vec<f32> = bias
            .eq(0.0)
            .to_kind(Kind::Float)
            .view([-1])
            .try_into()
            .unwrap();
        let rows: Vec<&[f32]> = allowed.chunks(5).collect();
        assert_eq!(rows[0], [1., 1., 1., 0., 0.], "text sees text");
        assert_eq!(rows[3], [0.; 5], "the alignment slot sees nothing");
        assert_eq!(
            rows[4], [1.; 5],
            "a marker sees text, itself and its partner"
        );
        assert_eq!(rows[7], [1.; 5]);
    }
}
