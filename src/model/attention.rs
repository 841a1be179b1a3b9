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
//!
//! Inference and training on the CPU (float32, int8, bfloat16) take a third, direct form
//! ([`MarkerAttention::direct`]): one C++ task per sample and head (`csrc/attention.cpp`) scores
//! each query against its own sample's text keys, itself and its partner, straight from the
//! query-key-value product's rows, with neither a bias tensor nor the transposition into heads
//! and back. In training its own backward pass (a libtorch autograd function) gives those rows
//! their gradient, with dropout on the attention weights drawn as the hidden states' is
//! ([`dropout`](super::dropout)); it saves each row's weights, the sign of each marking what
//! dropout dropped. Against the structured form, which padded the rows, gathered the partners'
//! keys and values, and ran a dozen tensor operations forward and back, it made MiniLM's
//! training on 400 CoNLL-2003 sentences 1.26x faster as a whole process (2-core Xeon).

use tch::{Device, Kind, Tensor};

use super::dropout::{draw_seed, dropout};
use super::rows::Rows;
use crate::collate::MarkerLayout;
use crate::error::Result;
use crate::ffi::{self, AttentionDropout};

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
    /// Every query scores its own sample's text keys, its own key and its partner's, read
    /// straight from the query-key-value rows by one task per sample and head
    /// (`csrc/attention.cpp`): inference on the CPU. See [`MarkerAttention::direct`].
    Direct {
        /// `[B]` int64: text tokens, first start marker and marker pairs per sample.
        num_tokens: Tensor,
        start: Tensor,
        pairs: Tensor,
        /// The longest text of the batch, in tokens.
        text_keys: i64,
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
    pub(crate) fn new(layout: &MarkerLayout<'_>, kind: Kind, dropout: bool) -> Self {
        let t = layout.total_length;
        let long_and_mostly_markers =
            t >= STRUCTURED_MIN_LENGTH && 8 * (layout.text_length + 2) <= t;
        let unfused = dropout && layout.num_tokens.device() == Device::Cpu;
        if long_and_mostly_markers || unfused {
            return Self::structured(layout, kind);
        }
        Self::dense(layout, kind)
    }

    /// The dense form, whatever the lengths: the reference's computation.
    pub(crate) fn dense(layout: &MarkerLayout<'_>, kind: Kind) -> Self {
        Self::Dense {
            bias: Self::dense_bias(layout, kind),
        }
    }

    /// The direct form, for inference on the CPU (it computes in float32): no mask or bias at all, and no
    /// transposition of the queries, keys and values into heads and back. Each query scores
    /// only the keys it may see (its sample's text, itself and its partner), so a batch of
    /// CoNLL-2003 sentences scores about a sixth of the dense form's cells. On a 2-core AMD
    /// EPYC, `span-marker predict` over 500 CoNLL-2003 test sentences with MiniLM took 9.8 s
    /// instead of 10.6-10.8 s in float32 and 4.8-5.0 s instead of 5.7-5.9 s in int8, where
    /// float32 attention is a larger share of the time (`docs/benchmarks.md`).
    pub(crate) fn direct(layout: &MarkerLayout<'_>) -> Self {
        Self::Direct {
            num_tokens: layout.num_tokens.shallow_clone(),
            start: layout.start_marker_indices.shallow_clone(),
            pairs: layout.num_marker_pairs.shallow_clone(),
            text_keys: layout.text_length,
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
    pub(crate) fn keys_per_query(&self, total_length: i64) -> i64 {
        match self {
            Self::Dense { .. } => total_length,
            Self::Structured { text_keys, .. } | Self::Direct { text_keys, .. } => text_keys + 2,
        }
    }

    /// The `[R, H]` context rows of the `[R, 3H]` query-key-value rows of a batch laid out as
    /// `rows` (see [`Rows`]), with dropout `p` on the attention probabilities when `train`.
    /// The direct form reads the rows as they are; the others pad them into `[B, heads, T, d]`
    /// and [`attend`](Self::attend). Context rows of padding are zero or never read.
    pub(crate) fn context(
        &self,
        qkv: &Tensor,
        heads: i64,
        rows: &Rows,
        p: f64,
        train: bool,
    ) -> Result<Tensor> {
        let p = if train { p } else { 0.0 };
        if let Some(context) = self.attend_rows(qkv, heads, rows.padded_length(), p) {
            return context;
        }
        let (b, t) = rows.shape();
        let hidden = qkv.size()[1] / 3;
        let split = |y: &Tensor| {
            rows.pad(y)
                .view([b, t, heads, hidden / heads])
                .transpose(1, 2)
        };
        let qkv = qkv.split(hidden, 1);
        let context = self
            .attend(&split(&qkv[0]), &split(&qkv[1]), &split(&qkv[2]), p, train)?
            .transpose(1, 2)
            .reshape([b * t, hidden]);
        Ok(rows.unpad(&context))
    }

    /// The `[R, H]` context rows of the direct form from the `[R, 3H]` query-key-value rows, in
    /// their type (CPU; bfloat16 is computed in float32), with dropout `p` on the attention
    /// weights, or `None` for the other forms (they [`attend`](Self::attend) over
    /// `[B, heads, T, d]`). `padded_length` is the batch's `T` when the rows are the padded
    /// `[B * T]` positions, and 0 when they are the encoder's unpadded tokens (each sample's
    /// text, then its markers; see [`Batch::tokens`](crate::collate::Batch::tokens)). Context
    /// rows of padding are zero. Where `qkv` wants a gradient or `p` is positive, the training
    /// form of the kernel runs: it saves the weights and gives `qkv` its gradient.
    pub(crate) fn attend_rows(
        &self,
        qkv: &Tensor,
        heads: i64,
        padded_length: i64,
        p: f64,
    ) -> Option<Result<Tensor>> {
        let Self::Direct {
            num_tokens,
            start,
            pairs,
            ..
        } = self
        else {
            return None;
        };
        let kind = qkv.kind();
        let training = (p > 0.0 || qkv.requires_grad()).then(|| AttentionDropout {
            p,
            seed: if p > 0.0 { draw_seed() } else { 0 },
        });
        let context = ffi::marker_attention(
            &qkv.to_kind(Kind::Float),
            num_tokens,
            start,
            pairs,
            heads,
            padded_length,
            training,
        );
        Some(context.map(|c| c.to_kind(kind)))
    }

    /// The structured form, whatever the lengths.
    pub(crate) fn structured(layout: &MarkerLayout<'_>, kind: Kind) -> Self {
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
    pub(crate) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: f64,
        train: bool,
    ) -> Result<Tensor> {
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
            Self::Direct { .. } => {
                // The same rows, laid out `[B, heads, T, d]` and back.
                let (b, heads, t, d) = q.size4().expect("queries are [B, heads, T, d]");
                let rows = |x: &Tensor| x.transpose(1, 2).reshape([b * t, heads * d]);
                let qkv = Tensor::cat(&[rows(q), rows(k), rows(v)], 1);
                let context = self
                    .attend_rows(&qkv, heads, t, p)
                    .expect("the direct form")?;
                return Ok(context.view([b, t, heads, d]).transpose(1, 2));
            }
            Self::Dense { bias } => {
                return Ok(Tensor::scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    Some(bias),
                    p,
                    false,
                    None,
                    false,
                ));
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
        let probs = dropout(&scores.softmax(-1, scores.kind()), p, true)?;
        Ok(probs.narrow(-1, 0, text_keys).matmul(&text_v)
            + probs.narrow(-1, text_keys, 1) * v
            + probs.narrow(-1, text_keys + 1, 1) * partner_v)
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

    /// The direct form's result (float32, returned as double) for double queries, keys and
    /// values, and its largest difference from `want` on the rows that are read (`used`).
    fn direct_against(
        layout: &MarkerLayout<'_>,
        qkv: &[Tensor],
        want: &Tensor,
        used: &Tensor,
    ) -> (Tensor, f64) {
        let float = |x: &Tensor| x.to_kind(Kind::Float);
        let got = MarkerAttention::direct(layout)
            .attend(
                &float(&qkv[0]),
                &float(&qkv[1]),
                &float(&qkv[2]),
                0.0,
                false,
            )
            .unwrap()
            .to_kind(Kind::Double);
        let diff = ((&got - want).abs() * used).max();
        (got, f64::try_from(diff).unwrap())
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
            let got = attention
                .attend(&qkv[0], &qkv[1], &qkv[2], 0.1, false)
                .unwrap();
            let diff = (got - &want).abs() * &used;
            assert!(f64::try_from(diff.max()).unwrap() < 1e-12, "{attention:?}");
        }
        // The direct form runs in float32 (its exp is a polynomial, relative error ~1e-7).
        let (got, diff) = direct_against(&layout, &qkv, &want, &used);
        assert!(diff < 1e-5, "max difference {diff}");
        // Padding rows come out zero.
        let zero = got * (used.ones_like() - &used);
        assert_eq!(f64::try_from(zero.abs().max()).unwrap(), 0.0);
    }

    #[test]
    fn the_direct_form_equals_the_dense_mask_at_encoder_sizes() {
        // Head sizes of whole vectors (16) and with a remainder (40 = 2 x 16 + 8); texts of one
        // key, exactly one key block, just over it and over two; a sample without markers;
        // scores spread wide enough that the softmax is far from uniform.
        let texts = [1i64, 16, 17, 33, 6];
        let pairs = [5i64, 3, 9, 2, 0];
        let starts: Vec<i64> = texts.iter().map(|n| n + n % 2).collect();
        let (b, heads, t) = (5, 3, 56);
        let samples = Samples::new(&texts, &starts, &pairs, t);
        let layout = samples.layout();
        let mask = layout.attention_mask();
        let used = mask
            .any_dim(-1, false)
            .view([b, 1, t, 1])
            .to_kind(Kind::Double);
        for d in [16i64, 40] {
            tch::manual_seed(d);
            let qkv: Vec<Tensor> = (0..3)
                .map(|_| Tensor::randn([b, heads, t, d], (Kind::Double, Device::Cpu)) * 3.0)
                .collect();
            let want = dense(&qkv[0], &qkv[1], &qkv[2], &mask);
            let (_, diff) = direct_against(&layout, &qkv, &want, &used);
            assert!(diff < 1e-4, "head size {d}: max difference {diff}");
        }
    }

    /// `[B * T, 3 H]` query-key-value rows from `[B, heads, T, d]` queries, keys and values.
    fn qkv_rows(qkv: &[Tensor]) -> Tensor {
        let (b, heads, t, d) = qkv[0].size4().unwrap();
        let rows = |x: &Tensor| x.transpose(1, 2).reshape([b * t, heads * d]);
        Tensor::cat(&[rows(&qkv[0]), rows(&qkv[1]), rows(&qkv[2])], 1)
    }

    #[test]
    fn the_direct_form_trains_as_the_dense_mask_does() {
        // The gradient of a random projection of the read rows' context, against autograd
        // through the dense form in double precision: queries, keys and values of text,
        // markers and padding (which gets none), head sizes of whole vectors and not.
        let texts = [1i64, 16, 17, 5, 6];
        let pairs = [5i64, 3, 9, 2, 0];
        let starts: Vec<i64> = texts.iter().map(|n| n + n % 2).collect();
        let (b, heads, t) = (5, 3, 40);
        let samples = Samples::new(&texts, &starts, &pairs, t);
        let layout = samples.layout();
        let mask = layout.attention_mask();
        let used = mask
            .any_dim(-1, false)
            .view([b * t, 1])
            .to_kind(Kind::Double);
        for d in [16i64, 20] {
            tch::manual_seed(d);
            let rows = qkv_rows(
                &(0..3)
                    .map(|_| Tensor::randn([b, heads, t, d], (Kind::Double, Device::Cpu)) * 2.0)
                    .collect::<Vec<_>>(),
            )
            .set_requires_grad(true);
            let projection = Tensor::randn([b * t, heads * d], (Kind::Double, Device::Cpu));
            let hidden = heads * d;
            let split = |x: &Tensor| x.view([b, t, heads, d]).transpose(1, 2);
            let parts = rows.split(hidden, 1);
            let want = dense(
                &split(&parts[0]),
                &split(&parts[1]),
                &split(&parts[2]),
                &mask,
            )
            .transpose(1, 2)
            .reshape([b * t, hidden]);
            (want * &projection * &used).sum(Kind::Double).backward();
            let want = rows.grad();
            let float_rows = rows.detach().to_kind(Kind::Float).set_requires_grad(true);
            let got = MarkerAttention::direct(&layout)
                .attend_rows(&float_rows, heads, t, 0.0)
                .unwrap()
                .unwrap();
            (got.to_kind(Kind::Double) * &projection * &used)
                .sum(Kind::Double)
                .backward();
            let got = float_rows.grad().to_kind(Kind::Double);
            let diff = f64::try_from((&got - &want).abs().max()).unwrap();
            let scale = f64::try_from(want.abs().max()).unwrap();
            assert!(
                diff < 1e-5 * scale.max(1.0),
                "head size {d}: {diff} of {scale}"
            );
        }
    }

    #[test]
    fn attention_dropout_keeps_the_expected_weights_and_its_gradient_is_exact() {
        let (heads, t, d) = (4, 48, 8);
        let samples = Samples::new(&[20, 7], &[20, 8], &[6, 10], t);
        let layout = samples.layout();
        let attention = MarkerAttention::direct(&layout);
        let MarkerAttention::Direct {
            num_tokens,
            start,
            pairs,
            ..
        } = &attention
        else {
            unreachable!()
        };
        let run = |rows: &Tensor, p: f64, seed: u64| {
            let training = Some(AttentionDropout { p, seed });
            ffi::marker_attention(rows, num_tokens, start, pairs, heads, t, training).unwrap()
        };
        // Zero queries weigh every key of a text row alike; values of one make each context
        // entry the sum of the kept weights, scaled: 1 on average over many rows and heads.
        let opts = (Kind::Float, Device::Cpu);
        let ones = Tensor::cat(
            &[
                Tensor::zeros([2 * t, 2 * heads * d], opts),
                Tensor::ones([2 * t, heads * d], opts),
            ],
            1,
        );
        let text_rows = Tensor::cat(
            &[
                run(&ones, 0.3, 5).narrow(0, 0, 20),
                run(&ones, 0.3, 5).narrow(0, t, 7),
            ],
            0,
        );
        let mean = f64::try_from(text_rows.mean(Kind::Double)).unwrap();
        assert!((mean - 1.0).abs() < 0.05, "mean kept weight {mean}");
        assert!(
            f64::try_from(text_rows.min()).unwrap() < 0.9,
            "nothing was dropped"
        );
        assert!(
            run(&ones, 0.3, 5).equal(&run(&ones, 0.3, 5)),
            "not a function of the seed"
        );
        assert!(
            !run(&ones, 0.3, 5).equal(&run(&ones, 0.3, 6)),
            "the seed is ignored"
        );
        // The gradient under dropout against central differences of the same masks.
        tch::manual_seed(9);
        let rows = Tensor::randn([2 * t, 3 * heads * d], opts);
        let projection = Tensor::randn([2 * t, heads * d], opts);
        let loss = |rows: &Tensor| {
            f64::try_from((run(rows, 0.4, 11) * &projection).sum(Kind::Double)).unwrap()
        };
        let with_grad = rows.copy().set_requires_grad(true);
        (run(&with_grad, 0.4, 11) * &projection)
            .sum(Kind::Float)
            .backward();
        let grad = with_grad.grad();
        let h = 1e-2;
        for (row, column) in [
            (0, 0),
            (3, 40),
            (19, 70),
            (20, 5),
            (31, 33),
            (60, 90),
            (48, 64),
        ] {
            let nudged = |by: f64| {
                let x = rows.copy();
                let _ = x
                    .get(row)
                    .get(column)
                    .fill_(rows.double_value(&[row, column]) + by);
                loss(&x)
            };
            let numeric = (nudged(h) - nudged(-h)) / (2.0 * h);
            let analytic = grad.double_value(&[row, column]);
            assert!(
                (numeric - analytic).abs() < 2e-3 * (1.0 + analytic.abs()),
                "({row}, {column}): {analytic} against {numeric}"
            );
        }
    }

    #[test]
    fn the_direct_form_reads_unpadded_rows() {
        // The encoder's unpadded layout: each sample's text, then its markers, then spare rows.
        let (heads, t, d) = (2, 18, 4);
        let samples = Samples::new(&[5, 4, 9], &[6, 4, 10], &[3, 7, 2], t);
        let layout = samples.layout();
        tch::manual_seed(1);
        let qkv = Tensor::randn([3 * t, 3 * heads * d], (Kind::Float, Device::Cpu));
        let direct = MarkerAttention::direct(&layout);
        let padded = direct.attend_rows(&qkv, heads, t, 0.0).unwrap().unwrap();
        let mut kept = Vec::new();
        for (b, (n, (a, p))) in [(5, (6, 3)), (4, (4, 7)), (9, (10, 2))].iter().enumerate() {
            let base = (b as i64) * t;
            kept.extend((0..*n).map(|i| base + i));
            kept.extend((*a..a + 2 * p).map(|i| base + i));
        }
        let spare = 8;
        kept.extend(std::iter::repeat_n(1, spare)); // padding positions, never read
        let index = Tensor::from_slice(&kept);
        let unpadded = direct
            .attend_rows(&qkv.index_select(0, &index), heads, 0, 0.0)
            .unwrap()
            .unwrap();
        let used = kept.len() as i64 - spare as i64;
        let want = padded.index_select(0, &index).narrow(0, 0, used);
        let diff = (unpadded.narrow(0, 0, used) - want).abs().max();
        assert!(f64::try_from(diff).unwrap() < 1e-6);
        let rest = unpadded.narrow(0, used, spare as i64).abs().max();
        assert_eq!(f64::try_from(rest).unwrap(), 0.0, "spare rows stay zero");
        assert!(MarkerAttention::new(&layout, Kind::Float, false)
            .attend_rows(&qkv, heads, t, 0.0)
            .is_none());
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
