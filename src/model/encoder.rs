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

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::attention::MarkerAttention;
use super::dropout::dropout;
use super::linear::{Activation, EncoderMaps, FormCache, LayerMaps, Linear, MapForm};
use super::plan::BatchPlan;
use super::rows::Rows;
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

/// The embeddings: word, position and (all-zero) token type, their norm, and ELECTRA's
/// projection to the hidden size.
struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    norm: nn::LayerNorm,
    project: Option<nn::Linear>,
}

impl Embeddings {
    /// The first layer's input rows for `input_ids` and `position_ids` rows, with dropout `p`
    /// when `train`.
    fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        p: f64,
        train: bool,
    ) -> Result<Tensor> {
        // Token type 0 for every token: add its embedding row by broadcasting.
        let x = self.word.forward(input_ids)
            + self.token_type.ws.get(0)
            + self.position.forward(position_ids);
        let x = dropout(&self.norm.forward(&x), p, train)?;
        Ok(match &self.project {
            Some(project) => project.forward(&x),
            None => x,
        })
    }
}

/// One post-LayerNorm transformer layer, its variables named as in `transformers`.
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

impl Layer {
    /// The layer's linear maps in `form`; query, key and value as one map.
    fn maps(&self, form: MapForm) -> Result<LayerMaps> {
        Ok(LayerMaps {
            query_key_value: Linear::new(form, &[&self.query, &self.key, &self.value])?,
            attention_output: Linear::new(form, &[&self.attention_output])?,
            intermediate: Linear::new(form, &[&self.intermediate])?,
            output: Linear::new(form, &[&self.output])?,
        })
    }

    /// The variables of [`maps`](Self::maps), whose identities decide whether a derived form
    /// of them is current.
    fn linears(&self) -> [&nn::Linear; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attention_output,
            &self.intermediate,
            &self.output,
        ]
    }

    /// The layer on rows `x`, its maps run as `maps`; `step` says what else the pass needs (and
    /// whether this is the last layer, whose rows narrow to the read ones after attention).
    fn forward(&self, x: Tensor, maps: &LayerMaps, step: &Step<'_>) -> Result<Tensor> {
        let (p, train) = (step.dropout, step.train);
        let qkv = maps.query_key_value.forward(&x)?;
        let context =
            step.attention
                .context(&qkv, step.heads, step.rows, step.attention_dropout, train)?;
        let (context, x) = if step.last {
            step.rows.keep_read(context, x)
        } else {
            (context, x)
        };
        let x = self
            .attention_norm
            .forward(&maps.attention_output.forward_add(&context, &x, p, train)?);
        let inner = maps.intermediate.forward_activation(&x, step.activation)?;
        Ok(self
            .output_norm
            .forward(&maps.output.forward_add(&inner, &x, p, train)?))
    }
}

/// What a layer needs of its pass beyond its input.
struct Step<'a> {
    attention: &'a MarkerAttention,
    rows: &'a Rows,
    heads: i64,
    activation: Activation,
    dropout: f64,
    attention_dropout: f64,
    train: bool,
    /// The last layer: its rows narrow to the read ones after attention.
    last: bool,
}

/// A BERT-family encoder whose variables live under the given var-store path.
pub struct Encoder {
    settings: EncoderSettings,
    activation: Activation,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<nn::Linear>,
    /// The derived forms of the layers' linear maps, made on first use.
    forms: FormCache,
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
    pub(crate) fn new(
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
        let embedding =
            |name: &str, rows: i64| nn::embedding(&emb / name, rows, e, embedding_config);
        let embeddings = Embeddings {
            word: embedding("word_embeddings", vocab_rows),
            position: embedding("position_embeddings", settings.max_position_embeddings),
            token_type: embedding("token_type_embeddings", settings.type_vocab_size),
            norm: nn::layer_norm(&emb / "LayerNorm", vec![e], norm_config),
            project: (e != h).then(|| linear(&path / "embeddings_project", e, h)),
        };

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
            embeddings,
            layers,
            pooler,
            forms: FormCache::default(),
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
        self.embeddings.word.ws.size()[0]
    }

    /// The layers' linear maps in `form`: the standard ones are the variables; a derived form
    /// is made on first use and again whenever a weight changed since.
    pub(crate) fn maps(&self, form: MapForm) -> Result<EncoderMaps> {
        let variables = self.layers.iter().flat_map(Layer::linears);
        self.forms.get(form, variables, || {
            self.layers.iter().map(|layer| layer.maps(form)).collect()
        })
    }

    /// Drops every derived form of the maps (they are remade on next use): after the weights
    /// moved to another device, whose old storage they would keep alive.
    pub(crate) fn clear_derived(&self) {
        self.forms.clear();
    }

    /// The last hidden states `[B, T, H]` (float32) for `input_ids` and `position_ids`
    /// `[B, T]` (int64), token types all zero, under `batch`'s attention pattern and on its
    /// rows (see [`Rows`]: states that are not computed or not read are zero), the linear
    /// maps run as `maps` (only the standard ones carry gradients). Dropout is active when
    /// `train` is set.
    pub(crate) fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        batch: &BatchPlan,
        maps: &EncoderMaps,
        train: bool,
    ) -> Result<Tensor> {
        let s = &self.settings;
        let rows = &batch.rows;
        let x = self.embeddings.forward(
            &rows.input(input_ids),
            &rows.input(position_ids),
            s.hidden_dropout_prob,
            train,
        )?;
        // The derived forms run in their own type (standard maps follow autocast, if any).
        let mut x = match maps.form {
            MapForm::Standard => x,
            form => x.to_kind(form.activation_kind()),
        };
        let last = self.layers.len().saturating_sub(1);
        for (index, (layer, maps)) in self.layers.iter().zip(&maps.layers).enumerate() {
            let step = Step {
                attention: &batch.attention,
                rows,
                heads: s.num_attention_heads,
                activation: self.activation,
                dropout: s.hidden_dropout_prob,
                attention_dropout: s.attention_probs_dropout_prob,
                train,
                last: index == last,
            };
            x = layer.forward(x, maps, &step)?;
        }
        Ok(rows.output(&x.to_kind(Kind::Float)))
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
        let batch = crate::collate::Batch {
            input_ids: ids.shallow_clone(),
            position_ids: pos.shallow_clone(),
            num_tokens: Tensor::from_slice(&[3i64]),
            text_length: 3,
            labels: None,
            start_marker_indices: Tensor::from_slice(&[4i64]),
            num_marker_pairs: Tensor::from_slice(&[0i64]),
            tokens: None,
            markers: Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)),
        };
        let plan = super::super::plan::ForwardPlan::standard(false);
        let batch_plan = plan.for_batch(&batch, encoder.settings());
        let maps = encoder.maps(MapForm::Standard).unwrap();
        let out = encoder
            .forward(&ids, &pos, &batch_plan, &maps, false)
            .unwrap();
        assert_eq!(out.size(), [1, 4, 4]);
        assert!(bool::try_from(out.isfinite().all()).unwrap());
    }
}
