//! BERT-family encoders (BERT, RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA) in tch.
//!
//! All of them are the same post-LayerNorm transformer with learned absolute position
//! embeddings; they differ only in their vocabularies, their padding index and, for ELECTRA, an
//! embedding size below the hidden size followed by a projection. Variables are named as in
//! Hugging Face `transformers` (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, ...), so checkpoints load without renaming.
//!
//! SpanMarker always passes explicit `position_ids`, all-zero `token_type_ids` and its own
//! attention pattern (a 3-D mask in the reference), so the encoder takes exactly those; the
//! pattern is a [`MarkerAttention`], which scores only the keys the mask can allow.

use std::sync::{Arc, Mutex};

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::attention::MarkerAttention;
use super::dropout::dropout;
use super::fused::{FusedLinears, PostOp};
use super::quantized::Int8Linears;

use crate::collate::DistinctTokens;
use crate::config::EncoderConfig;
use crate::error::{Error, Result};

/// The hyper-parameters an encoder is built from, with the Hugging Face defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSettings {
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub hidden_act: String,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: i64,
    pub type_vocab_size: i64,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
    /// ELECTRA's embedding width (projected to `hidden_size` when they differ).
    pub embedding_size: Option<i64>,
    pub position_embedding_type: Option<String>,
}

/// Why an encoder type cannot be used, or `None` when it can.
fn unsupported_reason(model_type: &str) -> Option<&'static str> {
    match model_type {
        "bert" | "roberta" | "xlm-roberta" | "camembert" | "electra" => None,
        "distilbert" => Some(
            "DistilBERT's forward pass takes no `position_ids`, so span markers cannot share \
             the positions of their words",
        ),
        "deberta" | "deberta-v2" => Some(
            "DeBERTa uses relative positions, so span markers cannot share the absolute \
             positions of their words",
        ),
        "albert" => Some(
            "ALBERT (shared layers, factorised embeddings) is not implemented; use BERT, \
             RoBERTa, XLM-RoBERTa or ELECTRA",
        ),
        "t5" | "mt5" | "bart" | "mbart" | "gpt2" | "llama" => Some(
            "only bidirectional encoders with learned absolute position embeddings are \
             supported (BERT, RoBERTa, XLM-RoBERTa, ELECTRA)",
        ),
        _ => Some(
            "not a known BERT-family encoder; supported: bert, roberta, xlm-roberta, \
             camembert, electra",
        ),
    }
}

impl EncoderSettings {
    /// Reads and checks the settings of a Hugging Face encoder config.
    pub fn from_config(config: &EncoderConfig) -> Result<Self> {
        if let Some(reason) = unsupported_reason(&config.model_type) {
            return Err(Error::UnsupportedEncoder {
                model_type: config.model_type.clone(),
                reason: reason.to_owned(),
            });
        }
        // Every size within bounds far beyond any encoder: a mistyped or hostile number is an
        // error naming it, not an overflow or an allocation of terabytes.
        let bounded = |value: usize, key: &str, max: usize| {
            if (1..=max).contains(&value) {
                Ok(value as i64)
            } else {
                Err(Error::Config(format!(
                    "encoder config: `{key}` must be between 1 and {max}, got {value}"
                )))
            }
        };
        let required = |value: Option<usize>, key: &str| {
            let value = value.ok_or_else(|| {
                Error::Config(format!(
                    "encoder config: missing field `{key}` (needed by a {} encoder)",
                    config.model_type
                ))
            })?;
            let max = match key {
                "vocab_size" => 1 << 24,
                "intermediate_size" | "max_position_embeddings" => 1 << 20,
                "num_hidden_layers" | "num_attention_heads" => 1 << 10,
                _ => 1 << 16,
            };
            bounded(value, key, max)
        };
        for (key, value, range) in [
            (
                "layer_norm_eps",
                config.layer_norm_eps,
                f64::MIN_POSITIVE..1.0,
            ),
            ("hidden_dropout_prob", config.hidden_dropout_prob, 0.0..1.0),
            (
                "attention_probs_dropout_prob",
                config.attention_probs_dropout_prob,
                0.0..1.0,
            ),
            ("initializer_range", config.initializer_range, 0.0..10.0),
        ] {
            if let Some(value) = value.filter(|v| !range.contains(v)) {
                return Err(Error::Config(format!(
                    "encoder config: `{key}` must be in [{}, {}), got {value}",
                    range.start, range.end
                )));
            }
        }
        let settings = Self {
            model_type: config.model_type.clone(),
            vocab_size: required(config.vocab_size, "vocab_size")?,
            hidden_size: required(config.hidden_size, "hidden_size")?,
            num_hidden_layers: required(config.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: required(config.num_attention_heads, "num_attention_heads")?,
            intermediate_size: required(config.intermediate_size, "intermediate_size")?,
            hidden_act: config.hidden_act.clone().unwrap_or_else(|| "gelu".into()),
            hidden_dropout_prob: config.hidden_dropout_prob.unwrap_or(0.1),
            attention_probs_dropout_prob: config.attention_probs_dropout_prob.unwrap_or(0.1),
            max_position_embeddings: required(
                config.max_position_embeddings,
                "max_position_embeddings",
            )?,
            type_vocab_size: bounded(
                config.type_vocab_size.unwrap_or(2),
                "type_vocab_size",
                1 << 16,
            )?,
            layer_norm_eps: config.layer_norm_eps.unwrap_or(1e-12),
            initializer_range: config.initializer_range.unwrap_or(0.02),
            embedding_size: config
                .embedding_size
                .map(|e| bounded(e, "embedding_size", 1 << 16))
                .transpose()?,
            position_embedding_type: config.position_embedding_type.clone(),
        };
        if let Some(kind) = settings
            .position_embedding_type
            .as_deref()
            .filter(|&k| k != "absolute")
        {
            return Err(Error::UnsupportedEncoder {
                model_type: settings.model_type,
                reason: format!(
                    "position_embedding_type {kind:?}: span markers need absolute position embeddings"
                ),
            });
        }
        Activation::from_name(&settings.hidden_act).map_err(|reason| {
            Error::UnsupportedEncoder {
                model_type: settings.model_type.clone(),
                reason,
            }
        })?;
        if settings.num_attention_heads == 0
            || settings.hidden_size % settings.num_attention_heads != 0
        {
            return Err(Error::Config(format!(
                "encoder hidden_size {} is not a multiple of num_attention_heads {}",
                settings.hidden_size, settings.num_attention_heads
            )));
        }
        Ok(settings)
    }

    /// Whether the architecture has a pooler (unused by SpanMarker, but part of checkpoints).
    pub fn has_pooler(&self) -> bool {
        self.model_type != "electra"
    }

    /// Width of the token embeddings.
    pub fn embedding_size(&self) -> i64 {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// Prefix that task models (`BertForMaskedLM`, ...) put before the base model's weights.
    pub fn base_model_prefix(&self) -> &'static str {
        match self.model_type.as_str() {
            "bert" => "bert",
            "electra" => "electra",
            "camembert" | "roberta" | "xlm-roberta" => "roberta",
            _ => "",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Gelu,
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    fn from_name(name: &str) -> std::result::Result<Self, String> {
        Ok(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            other => return Err(format!("hidden_act {other:?} is not implemented")),
        })
    }

    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Self::Gelu => x.gelu("none"),
            Self::GeluTanh => x.gelu("tanh"),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }

    /// [`apply`](Self::apply) in place, for inference results that nothing else holds.
    fn apply_in_place(self, mut x: Tensor) -> Tensor {
        let _ = match self {
            Self::Gelu => x.gelu_("none"),
            Self::GeluTanh => x.gelu_("tanh"),
            Self::Relu => x.relu_(),
            Self::Silu => x.silu_(),
        };
        x
    }

    /// The oneDNN post-op computing this activation, if there is one.
    fn post_op(self) -> Option<PostOp> {
        match self {
            Self::Gelu => Some(PostOp::Gelu),
            Self::GeluTanh => Some(PostOp::GeluTanh),
            Self::Relu => Some(PostOp::Relu),
            Self::Silu => None,
        }
    }
}

/// How [`Encoder::forward`] runs the layers' linear maps.
#[derive(Clone, Copy)]
pub enum Kernels<'a> {
    /// libtorch's linear maps, with gradients, on any device and under autocast.
    Standard,
    /// CPU inference on oneDNN with the bias, activation and residual addition fused into the
    /// products, on the float32 or bfloat16 maps of [`Encoder::fused`] (no gradients; see
    /// [`fused::supported`](super::fused::supported)).
    Fused(&'a FusedLinears),
    /// The int8 maps of [`Encoder::int8`] (CPU inference).
    Int8(&'a Int8Linears),
}

/// Which rows of the flattened `[B * T]` batch [`Encoder::forward`] runs its per-token work on,
/// and which of their last states are wanted. The default is every position, all read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rows<'a> {
    /// `[N]` flat positions that hold text or markers (see
    /// [`Batch::tokens`](crate::collate::Batch::tokens)): every per-token step runs on these
    /// rows only, and only attention sees the padded `[B, T]` layout.
    pub tokens: Option<&'a Tensor>,
    /// The rows of `tokens` grouped by (token id, position id) (see
    /// [`Batch::distinct`](crate::collate::Batch::distinct)): the embeddings, their norm and the
    /// first layer's query-key-value product run once per group. Used with `tokens` in
    /// inference only (in training dropout draws a mask per row).
    pub distinct: Option<&'a DistinctTokens>,
    /// `[M]` flat positions, a subset of `tokens`, whose last states are wanted (the batch's
    /// [`markers`](crate::collate::Batch::markers)); the others come out zero.
    pub read: Option<&'a Tensor>,
}

impl Kernels<'_> {
    /// Whether attention takes the direct form ([`MarkerAttention::direct`]) with these
    /// kernels: the CPU inference ones, never in training (it carries no gradient).
    pub fn attend_directly(&self, train: bool) -> bool {
        !train && matches!(self, Self::Fused(_) | Self::Int8(_))
    }
}

/// A tensor's identity for staleness: its version counter (bumped by every in-place change, an
/// optimizer step or a checkpoint copy) and its storage.
type Identity = (i64, usize);

/// The identities of a linear map's weight and bias.
type Source = (Identity, Option<Identity>);

fn source(linear: &nn::Linear) -> Source {
    let identity = |t: &Tensor| (t.internal_version(), t.data_ptr() as usize);
    (identity(&linear.ws), linear.bs.as_ref().map(identity))
}

/// A form of the layers' linear maps made from their weights (int8-packed, or fused in float32
/// or bfloat16), and the identities of the weights it was made from. `T` clones cheaply (an
/// `Arc`, or tensors sharing their storage).
struct Derived<T> {
    maps: T,
    sources: Vec<Source>,
}

/// The slot of one derived form, empty until its first use.
type DerivedSlot<T> = Mutex<Option<Derived<T>>>;

impl Layer {
    /// The query, key and value maps as one `[3H, H]` weight and `[3H]` bias: one wide
    /// product instead of three thin ones (gradients flow back to the three maps).
    fn query_key_value(&self) -> (Tensor, Option<Tensor>) {
        let (q, k, v) = (&self.query, &self.key, &self.value);
        let weight = Tensor::cat(&[&q.ws, &k.ws, &v.ws], 0);
        let bias = match (&q.bs, &k.bs, &v.bs) {
            (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)),
            _ => None,
        };
        (weight, bias)
    }
}

struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attention_output: nn::Linear,
    attention_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    output_norm: nn::LayerNorm,
}

/// A BERT-family encoder whose variables live under the given var-store path.
pub struct Encoder {
    settings: EncoderSettings,
    activation: Activation,
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    embeddings_norm: nn::LayerNorm,
    embeddings_project: Option<nn::Linear>,
    layers: Vec<Layer>,
    pooler: Option<nn::Linear>,
    /// The int8 form of the layers' linear maps, made on first int8 use.
    int8: DerivedSlot<Arc<Int8Linears>>,
    /// The fused float32 and bfloat16 forms, made on first use.
    fused_float: DerivedSlot<FusedLinears>,
    fused_bfloat16: DerivedSlot<FusedLinears>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Creates the encoder's variables under `path`. With `random_init` they are initialised as
    /// `transformers` does (weights N(0, `initializer_range`), biases 0, LayerNorm 1 and 0);
    /// without, weights start at zero, to be overwritten by a checkpoint. `vocab_rows` is the
    /// number of rows of the word embedding matrix.
    pub fn new(
        path: nn::Path<'_>,
        settings: EncoderSettings,
        vocab_rows: i64,
        random_init: bool,
    ) -> Self {
        let activation =
            Activation::from_name(&settings.hidden_act).expect("checked in EncoderSettings");
        let init = if random_init {
            nn::Init::Randn {
                mean: 0.,
                stdev: settings.initializer_range,
            }
        } else {
            nn::Init::Const(0.)
        };
        let linear_config = nn::LinearConfig {
            ws_init: init,
            bs_init: Some(nn::Init::Const(0.)),
            bias: true,
        };
        let norm_config = nn::LayerNormConfig {
            eps: settings.layer_norm_eps,
            ..Default::default()
        };
        let embedding_config = nn::EmbeddingConfig {
            ws_init: init,
            ..Default::default()
        };
        let linear = |p: nn::Path<'_>, i: i64, o: i64| nn::linear(p, i, o, linear_config);
        let (h, e) = (settings.hidden_size, settings.embedding_size());

        let emb = &path / "embeddings";
        let word_embeddings =
            nn::embedding(&emb / "word_embeddings", vocab_rows, e, embedding_config);
        let position_embeddings = nn::embedding(
            &emb / "position_embeddings",
            settings.max_position_embeddings,
            e,
            embedding_config,
        );
        let token_type_embeddings = nn::embedding(
            &emb / "token_type_embeddings",
            settings.type_vocab_size,
            e,
            embedding_config,
        );
        let embeddings_norm = nn::layer_norm(&emb / "LayerNorm", vec![e], norm_config);
        let embeddings_project = (e != h).then(|| linear(&path / "embeddings_project", e, h));

        let layers = (0..settings.num_hidden_layers)
            .map(|i| {
                let layer = &path / "encoder" / "layer" / i;
                let attention = &layer / "attention";
                let self_attention = &attention / "self";
                Layer {
                    query: linear(&self_attention / "query", h, h),
                    key: linear(&self_attention / "key", h, h),
                    value: linear(&self_attention / "value", h, h),
                    attention_output: linear(&attention / "output" / "dense", h, h),
                    attention_norm: nn::layer_norm(
                        &attention / "output" / "LayerNorm",
                        vec![h],
                        norm_config,
                    ),
                    intermediate: linear(
                        &layer / "intermediate" / "dense",
                        h,
                        settings.intermediate_size,
                    ),
                    output: linear(&layer / "output" / "dense", settings.intermediate_size, h),
                    output_norm: nn::layer_norm(
                        &layer / "output" / "LayerNorm",
                        vec![h],
                        norm_config,
                    ),
                }
            })
            .collect();
        let pooler = settings
            .has_pooler()
            .then(|| linear(&path / "pooler" / "dense", h, h));
        Self {
            settings,
            activation,
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            embeddings_project,
            layers,
            pooler,
            int8: Mutex::new(None),
            fused_float: Mutex::new(None),
            fused_bfloat16: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    /// Whether the architecture has pooler weights (never used by SpanMarker).
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// Rows of the word embedding matrix.
    pub fn vocab_rows(&self) -> i64 {
        self.word_embeddings.ws.size()[0]
    }

    /// Model FLOPs of one forward pass whose per-token maps run on `tokens` rows (the embedding
    /// projection and the first layer's query-key-value product on `first` rows: the distinct
    /// ones, see [`first_layer_groups`](Self::first_layer_groups), or `tokens`), whose
    /// attention runs `queries` queries (`B x T`, padding included) each scoring `keys` keys,
    /// and whose last layer's attention output and feed-forward maps run on `read` rows (see
    /// [`forward`](Self::forward); `tokens` when all are read): the matrix products (two FLOPs
    /// per multiply-add) of the embedding projection, the query, key, value and output
    /// projections, the feed-forward maps, and attention's scores and weighted sums as
    /// executed. Element-wise work (norms, softmax, activations) is left out, as
    /// model-FLOPs-utilisation counts do.
    pub fn forward_flops(
        &self,
        tokens: i64,
        first: i64,
        queries: i64,
        keys: i64,
        read: i64,
    ) -> u64 {
        let s = &self.settings;
        let (h, i) = (s.hidden_size, s.intermediate_size);
        let query_key_value = |rows: i64| 2 * rows * 3 * h * h;
        let attention = query_key_value(tokens) + 2 * 2 * queries * keys * h;
        let rest = |rows: i64| 2 * rows * (h * h + 2 * h * i);
        let layers = s.num_hidden_layers;
        let projection = match self.embeddings_project {
            Some(_) => 2 * first * s.embedding_size() * h,
            None => 0,
        };
        let (first_layer, last) = if layers > 0 {
            (
                query_key_value(first) - query_key_value(tokens),
                rest(read) - rest(tokens),
            )
        } else {
            (0, 0)
        };
        (projection + layers * (attention + rest(tokens)) + first_layer + last).max(0) as u64
    }

    /// The groups of `rows` whose embeddings, norm and first query-key-value product
    /// [`forward`](Self::forward) computes once ([`Rows::distinct`]): given with `tokens`, in
    /// inference, with at least one layer; else `None` (every row computes its own).
    pub fn first_layer_groups<'a>(
        &self,
        rows: &Rows<'a>,
        train: bool,
    ) -> Option<&'a DistinctTokens> {
        let groups = rows
            .distinct
            .filter(|_| rows.tokens.is_some() && !train && !self.layers.is_empty())?;
        debug_assert_eq!(
            rows.tokens.map(|index| index.size()[0]),
            Some(groups.of_row.size()[0]),
            "the groups are of the rows of `tokens`"
        );
        Some(groups)
    }

    /// The rows the last layer's attention output and feed-forward maps run on when the layers
    /// run on `rows` rows and `read` positions are read (see [`forward`](Self::forward)): the
    /// read ones rounded up to whole buckets of
    /// [`TOKEN_BUCKET`](crate::collate::TOKEN_BUCKET) where that is fewer, else all.
    pub fn last_layer_rows(&self, rows: i64, read: Option<&Tensor>) -> i64 {
        let bucket = crate::collate::TOKEN_BUCKET as i64;
        match read {
            Some(positions) if !self.layers.is_empty() => {
                let keep = (positions.size()[0] + bucket - 1) / bucket * bucket;
                keep.min(rows)
            }
            _ => rows,
        }
    }

    /// Whether a batch of `positions` positions of which `tokens` hold text or markers is worth
    /// running without its padding (see [`forward`](Self::forward)): when the padded positions
    /// are at least `64 / hidden_size` of all. Skipping padding copies every layer's queries,
    /// keys and values into the padded layout and the attention output out of it, which costs
    /// per position about what the products cost per `hidden_size`-th position. Measured on
    /// CPU: MiniLM (384 wide) trained 1.33x faster on shuffled CoNLL-2003 batches, which are
    /// 55% padding; the 32-wide test model trained 13% slower on toy batches, so it never
    /// skips.
    ///
    /// ```
    /// # let model = span_marker::SpanMarkerModel::bundled()?;
    /// let encoder = model.encoder(); // 384 wide: worth it from a sixth of padding on
    /// assert!(encoder.skips_padding(800, 1000));
    /// assert!(!encoder.skips_padding(900, 1000));
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn skips_padding(&self, tokens: i64, positions: i64) -> bool {
        const MIN_PADDED_WIDTH: i64 = 64;
        (positions - tokens) * self.settings.hidden_size >= MIN_PADDED_WIDTH * positions
    }

    /// The six linear maps of every layer, whose identities decide whether a derived form of
    /// them is current.
    fn linears(&self) -> impl Iterator<Item = &nn::Linear> {
        self.layers.iter().flat_map(|l| {
            [
                &l.query,
                &l.key,
                &l.value,
                &l.attention_output,
                &l.intermediate,
                &l.output,
            ]
        })
    }

    /// The derived form in `slot`, made by `make` on first use and again whenever a weight
    /// changed since. `make` gets the maps per layer in the order `forward` indexes them: query,
    /// key and value as one map, the attention output, the intermediate and the output map.
    fn derived<T: Clone>(
        &self,
        slot: &DerivedSlot<T>,
        make: impl FnOnce(Vec<(Tensor, Option<Tensor>)>) -> Result<T>,
    ) -> Result<T> {
        let mut cached = slot.lock().unwrap_or_else(|e| e.into_inner());
        let current = |d: &&Derived<T>| d.sources.iter().copied().eq(self.linears().map(source));
        if let Some(derived) = cached.as_ref().filter(current) {
            return Ok(derived.maps.clone());
        }
        // A stale form goes before its successor is made: never two copies at once.
        *cached = None;
        let maps: Vec<_> = tch::no_grad(|| {
            self.layers
                .iter()
                .flat_map(|l| {
                    let plain = |m: &nn::Linear| {
                        (
                            m.ws.shallow_clone(),
                            m.bs.as_ref().map(Tensor::shallow_clone),
                        )
                    };
                    [
                        l.query_key_value(),
                        plain(&l.attention_output),
                        plain(&l.intermediate),
                        plain(&l.output),
                    ]
                })
                .collect()
        });
        let sources = self.linears().map(source).collect();
        let maps = tch::no_grad(|| make(maps))?;
        *cached = Some(Derived {
            maps: maps.clone(),
            sources,
        });
        Ok(maps)
    }

    /// Drops every derived form of the maps (they are remade on next use): after the weights
    /// moved to another device, whose old storage they would keep alive.
    pub(crate) fn clear_derived(&self) {
        for slot in [&self.fused_float, &self.fused_bfloat16] {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        *self.int8.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The layers' linear maps in int8 (CPU), packed on first use and again whenever a weight
    /// changed since.
    pub(crate) fn int8(&self) -> Result<Arc<Int8Linears>> {
        self.derived(&self.int8, |maps| Int8Linears::pack(&maps).map(Arc::new))
    }

    /// The layers' linear maps for the fused CPU kernels in `kind` (float32 or bfloat16), made
    /// on first use and again whenever a weight changed since.
    pub(crate) fn fused(&self, kind: Kind) -> Result<FusedLinears> {
        let slot = match kind {
            Kind::Float => &self.fused_float,
            Kind::BFloat16 => &self.fused_bfloat16,
            other => {
                return Err(Error::Device(format!(
                    "no fused linear maps in {other:?} (float32 and bfloat16 only)"
                )))
            }
        };
        self.derived(slot, |maps| Ok(FusedLinears::new(maps, kind)))
    }

    /// The last hidden states `[B, T, H]` for `input_ids` and `position_ids` `[B, T]` (int64)
    /// under the SpanMarker `attention` pattern. Token types are all zero. Dropout is active
    /// when `train` is set. `kernels` chooses how the layers' linear maps run; only
    /// [`Kernels::Standard`] carries gradients.
    ///
    /// With [`Rows::tokens`], every per-token step (embeddings, linear maps, norms,
    /// activations, dropout) runs on those `N` rows only, and only attention sees the padded
    /// `[B, T]` layout: padding costs nothing outside attention. The states of positions
    /// outside `tokens` are then zero; they are never read. With [`Rows::distinct`] as well (and
    /// not `train`), the embeddings, their norm and the first layer's query-key-value product
    /// run once per distinct (token id, position id) pair and are gathered to the rows.
    ///
    /// With [`Rows::read`], only those positions' last states are wanted: when they are fewer
    /// than the rows the layers run on, the last layer still computes every row's keys and
    /// values (the read rows attend to them), but its attention output, norms and feed-forward
    /// maps run on the read rows only, and every other state is zero.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention: &MarkerAttention,
        rows: Rows<'_>,
        train: bool,
        kernels: Kernels<'_>,
    ) -> Tensor {
        let s = &self.settings;
        let (b, t) = input_ids.size2().expect("input_ids is [B, T]");
        let hidden_dropout = s.hidden_dropout_prob;
        let distinct = self.first_layer_groups(&rows, train);
        let Rows { tokens, read, .. } = rows;
        // Between the padded `[B * T]` rows and the `N` rows that hold tokens.
        let unpad = |y: &Tensor| match tokens {
            Some(index) => y.index_select(0, index),
            None => y.shallow_clone(),
        };
        let pad_at = |y: &Tensor, index: Option<&Tensor>| match index {
            Some(index) => {
                let mut padded = y.new_zeros([b * t, y.size()[1]], (y.kind(), y.device()));
                let _ = padded.index_copy_(0, index, y);
                padded
            }
            None => y.shallow_clone(),
        };
        let pad = |y: &Tensor| pad_at(y, tokens);
        debug_assert!(
            !train || matches!(kernels, Kernels::Standard),
            "only the standard maps carry gradients"
        );
        let row_count = tokens.map_or(b * t, |index| index.size()[0]);
        let keep = self.last_layer_rows(row_count, read);
        let read = read.filter(|_| keep < row_count);
        // The read positions as rows of the layers' input (rows of `tokens` when it is given),
        // the last one repeated up to whole buckets (a few activation sizes let the allocator
        // reuse its blocks); the repeats are dropped after the last layer.
        let read_rows = read.map(|positions| {
            let read_rows = match tokens {
                Some(index) => {
                    let mut row_of = Tensor::full([b * t], -1, (Kind::Int64, index.device()));
                    let rows = Tensor::arange(index.size()[0], (Kind::Int64, index.device()));
                    let _ = row_of.index_copy_(0, index, &rows);
                    row_of.index_select(0, positions)
                }
                None => positions.shallow_clone(),
            };
            let m = positions.size()[0];
            match m {
                0 => read_rows,
                _ => Tensor::cat(
                    &[
                        &read_rows,
                        &read_rows.narrow(0, m - 1, 1).expand([keep - m], false),
                    ],
                    0,
                ),
            }
        });
        let last = self.layers.len().saturating_sub(1);

        // The first layer's input rows: one per token, or one per distinct pair.
        let first_layer_input = |y: &Tensor| match distinct {
            Some(groups) => y.reshape([b * t]).index_select(0, &groups.positions),
            None => unpad(&y.reshape([b * t])),
        };
        // Token type 0 for every token: add its embedding row by broadcasting.
        let mut x = self.word_embeddings.forward(&first_layer_input(input_ids))
            + self.token_type_embeddings.ws.get(0)
            + self
                .position_embeddings
                .forward(&first_layer_input(position_ids));
        x = dropout(&self.embeddings_norm.forward(&x), hidden_dropout, train);
        if let Some(project) = &self.embeddings_project {
            x = project.forward(&x);
        }
        if let Kernels::Fused(maps) = kernels {
            x = x.to_kind(maps.kind());
        }

        let heads = s.num_attention_heads;
        let head_dim = s.hidden_size / heads;
        let split = |y: &Tensor| pad(y).view([b, t, heads, head_dim]).transpose(1, 2);
        let attention_dropout = s.attention_probs_dropout_prob;
        let activation = self.activation;
        for (index, layer) in self.layers.iter().enumerate() {
            // `map` of `x` plus `residual`, with dropout on the map's output.
            let plus = |k: usize, map: &nn::Linear, x: &Tensor, residual: &Tensor| match kernels {
                Kernels::Standard => dropout(&map.forward(x), hidden_dropout, train) + residual,
                Kernels::Fused(maps) => maps.linear_add(index * 4 + k, x, residual),
                Kernels::Int8(packed) => {
                    let mut y = packed.forward(index * 4 + k, x);
                    let _ = y.g_add_(residual);
                    y
                }
            };
            let qkv = match kernels {
                Kernels::Standard => {
                    let (weight, bias) = layer.query_key_value();
                    x.linear(&weight, bias.as_ref())
                }
                Kernels::Fused(maps) => maps.linear(index * 4, &x, PostOp::None),
                Kernels::Int8(packed) => packed.forward(index * 4, &x),
            };
            let qkv = match distinct {
                Some(groups) if index == 0 => {
                    x = x.index_select(0, &groups.of_row);
                    qkv.index_select(0, &groups.of_row)
                }
                _ => qkv,
            };
            let padded_length = if tokens.is_some() { 0 } else { t };
            let context = attention
                .attend_rows(&qkv, heads, padded_length)
                .unwrap_or_else(|| {
                    let qkv = qkv.split(s.hidden_size, 1);
                    let context = attention
                        .attend(
                            &split(&qkv[0]),
                            &split(&qkv[1]),
                            &split(&qkv[2]),
                            attention_dropout,
                            train,
                        )
                        .transpose(1, 2)
                        .reshape([b * t, s.hidden_size]);
                    unpad(&context)
                });
            let (context, residual) = match &read_rows {
                Some(rows) if index == last => {
                    (context.index_select(0, rows), x.index_select(0, rows))
                }
                _ => (context, x),
            };
            x = layer.attention_norm.forward(&plus(
                1,
                &layer.attention_output,
                &context,
                &residual,
            ));
            let inner = match kernels {
                Kernels::Fused(maps) => {
                    // oneDNN applies the activation where it has it as a post-op.
                    let post = activation.post_op();
                    let y = maps.linear(index * 4 + 2, &x, post.unwrap_or(PostOp::None));
                    if post.is_some() {
                        y
                    } else {
                        activation.apply_in_place(y)
                    }
                }
                Kernels::Int8(packed) => {
                    activation.apply_in_place(packed.forward(index * 4 + 2, &x))
                }
                Kernels::Standard => activation.apply(&layer.intermediate.forward(&x)),
            };
            x = layer
                .output_norm
                .forward(&plus(3, &layer.output, &inner, &x));
        }
        // Float32 out whatever the maps' type (bfloat16 fused maps).
        let x = x.to_kind(Kind::Float);
        match read {
            Some(positions) => pad_at(&x.narrow(0, 0, positions.size()[0]), Some(positions)),
            None => pad(&x),
        }
        .view([b, t, s.hidden_size])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder_config(json: &str) -> EncoderConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unsupported_encoders_are_refused_with_their_reason() {
        for (model_type, needle) in [
            ("distilbert", "position_ids"),
            ("deberta-v2", "relative positions"),
            ("albert", "not implemented"),
            ("t5", "bidirectional"),
            ("made-up", "not a known"),
        ] {
            let config = encoder_config(&format!(r#"{{"model_type": "{model_type}"}}"#));
            let err = EncoderSettings::from_config(&config)
                .unwrap_err()
                .to_string();
            assert!(err.contains(model_type) && err.contains(needle), "{err}");
        }
        let relative = encoder_config(
            r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 16,
                "position_embedding_type": "relative_key"}"#,
        );
        let err = EncoderSettings::from_config(&relative)
            .unwrap_err()
            .to_string();
        assert!(err.contains("relative_key"), "{err}");
        let missing = encoder_config(r#"{"model_type": "bert", "vocab_size": 10}"#);
        let err = EncoderSettings::from_config(&missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hidden_size"), "{err}");
    }

    #[test]
    fn padding_rows_stay_finite() {
        let settings = EncoderSettings::from_config(&encoder_config(
            r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 16}"#,
        ))
        .unwrap();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let encoder = Encoder::new(vs.root(), settings, 10, true);
        let ids = Tensor::from_slice(&[2i64, 5, 3, 0]).view([1, 4]);
        let pos = Tensor::from_slice(&[2i64, 3, 4, 1]).view([1, 4]);
        // Three text tokens, no markers: the padding row sees nothing.
        let (num_tokens, start, pairs) = (
            Tensor::from_slice(&[3i64]),
            Tensor::from_slice(&[4i64]),
            Tensor::from_slice(&[0i64]),
        );
        let layout = crate::collate::MarkerLayout {
            num_tokens: &num_tokens,
            start_marker_indices: &start,
            num_marker_pairs: &pairs,
            total_length: 4,
            text_length: 3,
        };
        let attention = MarkerAttention::new(&layout, tch::Kind::Float, false);
        let rows = Rows::default();
        let out = encoder.forward(&ids, &pos, &attention, rows, false, Kernels::Standard);
        assert_eq!(out.size(), [1, 4, 4]);
        assert!(bool::try_from(out.isfinite().all()).unwrap());
    }
}
