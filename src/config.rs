//! `config.json` of a SpanMarker model, mirrored with serde.
//!
//! The file written by Python `span_marker` holds the complete encoder configuration under
//! `encoder` (with the original, schemed labels) and the SpanMarker settings plus the reduced
//! labels at the top level. Keys that older files lack get the reference's defaults, and keys we
//! do not model are kept so that a round trip loses nothing. Remote-code keys
//! (`trust_remote_code`, `auto_map`) are dropped on load and never acted upon.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Keys that would make other tools run code from the checkpoint; never kept, never honoured.
const REMOTE_CODE_KEYS: [&str; 2] = ["trust_remote_code", "auto_map"];

/// The Python SpanMarker version whose checkpoint format this crate reads and writes.
pub const REFERENCE_VERSION: &str = "1.8.1";

/// The reference's default for `model_max_length_default`.
pub const DEFAULT_MODEL_MAX_LENGTH: usize = 512;

/// The SpanMarker settings of a model: how long its inputs and entities may be and how much
/// document context it reads. The one definition of these settings and of their defaults (the
/// Python library's): `config.json` ([`SpanMarkerConfig`]), new models
/// ([`LoadOptions`](crate::LoadOptions)), pipeline files, SQL and the command line (with the
/// `clap` feature, as flags `--model-max-length` ...) all use it.
///
/// ```
/// let settings = span_marker::ModelSettings::default();
/// assert_eq!((settings.marker_max_length, settings.entity_max_length), (128, 8));
/// assert_eq!(settings.model_max_length, None); // the tokenizer's limit, at most 512
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct ModelSettings {
    /// Text-token budget `M` per sample; `None` uses the tokenizer's limit (at most 512).
    #[cfg_attr(feature = "clap", arg(long))]
    pub model_max_length: Option<usize>,
    /// Marker pairs per sample `K`.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = ModelSettings::DEFAULT_MARKER_MAX_LENGTH))]
    pub marker_max_length: usize,
    /// Longest entity in words `E`.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = ModelSettings::DEFAULT_ENTITY_MAX_LENGTH))]
    pub entity_max_length: usize,
    /// Sentences of document context before each sentence (`None`: as many as fit).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_prev_context: Option<usize>,
    /// Sentences of document context after each sentence (`None`: as many as fit).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_next_context: Option<usize>,
}

impl ModelSettings {
    /// Python `span_marker`'s default `marker_max_length`.
    pub const DEFAULT_MARKER_MAX_LENGTH: usize = 128;
    /// Python `span_marker`'s default `entity_max_length`.
    pub const DEFAULT_ENTITY_MAX_LENGTH: usize = 8;

    /// Checks the settings; the message names the setting.
    ///
    /// Each has an upper bound far beyond any model (a sample's attention grows with the
    /// square of its length), so that a mistyped number is an error, not an allocation of
    /// terabytes.
    pub fn validate(&self) -> Result<()> {
        for (key, value, max) in [
            ("marker_max_length", Some(self.marker_max_length), 8192),
            ("entity_max_length", Some(self.entity_max_length), 1024),
            ("model_max_length", self.model_max_length, 65_536),
        ] {
            match value {
                Some(value) if !(1..=max).contains(&value) => {
                    return Err(Error::Setting {
                        key,
                        message: format!("must be between 1 and {max}, got {value}"),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            model_max_length: None,
            marker_max_length: Self::DEFAULT_MARKER_MAX_LENGTH,
            entity_max_length: Self::DEFAULT_ENTITY_MAX_LENGTH,
            max_prev_context: None,
            max_next_context: None,
        }
    }
}

/// Top level of a SpanMarker `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanMarkerConfig {
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// The complete configuration of the underlying encoder.
    pub encoder: EncoderConfig,
    /// `model_max_length`, `marker_max_length`, `entity_max_length` and the context limits.
    #[serde(flatten)]
    pub settings: ModelSettings,
    /// The budget used when `model_max_length` is `None` (and the tokenizer sets none lower).
    #[serde(default = "default_model_max_length")]
    pub model_max_length_default: usize,
    #[serde(default)]
    pub trained_with_document_context: bool,
    /// Reduced (scheme-free) labels. Older files may only carry the encoder's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<usize, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    /// Original label id -> reduced label id; present only for schemed labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2reduced_id: Option<BTreeMap<usize, usize>>,
    #[serde(default)]
    pub span_marker_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// Every other key, kept verbatim (e.g. `transformers_version`, `dtype`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The encoder's Hugging Face configuration (BERT, RoBERTa, XLM-R, ELECTRA, ...).
///
/// The hyper-parameters the encoder is built from are typed fields (all optional here: which
/// ones an architecture needs is checked by
/// [`EncoderSettings::from_config`](crate::model::encoder::EncoderSettings::from_config));
/// every other key is kept verbatim in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub model_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_hidden_layers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_dropout_prob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_probs_dropout_prob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_vocab_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_norm_eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer_range: Option<f64>,
    /// ELECTRA's embedding width (projected to `hidden_size` when they differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_embedding_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<i64>,
    /// The original (possibly schemed) labels.
    #[serde(default)]
    pub id2label: BTreeMap<usize, String>,
    #[serde(default)]
    pub label2id: BTreeMap<String, usize>,
    /// Every other key, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_architectures() -> Vec<String> {
    vec!["SpanMarkerModel".to_owned()]
}
fn default_model_type() -> String {
    "span-marker".to_owned()
}
fn default_model_max_length() -> usize {
    DEFAULT_MODEL_MAX_LENGTH
}

impl SpanMarkerConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str_at(&text, path)
    }

    /// Parses and validates the text of the `config.json` at `path` (named in errors).
    pub fn from_json_str_at(text: &str, path: &Path) -> Result<Self> {
        let mut config: Self = crate::error::parse_json(text, path)?;
        config.strip_remote_code_keys();
        config.validate().map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates a `config.json` document.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json_str_at(text, Path::new("config.json"))
    }

    /// The configuration of a new SpanMarker model around `encoder`, as Python's
    /// `SpanMarkerConfig(encoder_config=...)` builds it: the original labels go into the encoder
    /// config; schemed labels also get the reduced `id2label`/`label2id` and `id2reduced_id`
    /// at the top level.
    pub fn for_encoder(
        mut encoder: EncoderConfig,
        labels: &crate::labels::Labels,
        settings: &ModelSettings,
    ) -> Result<Self> {
        encoder.id2label = labels.original().iter().cloned().enumerate().collect();
        encoder.label2id = labels
            .original()
            .iter()
            .enumerate()
            .map(|(id, label)| (label.clone(), id))
            .collect();
        let schemed = labels.scheme() != crate::labels::LabelScheme::Unschemed;
        let reduced = || labels.reduced().iter().cloned();
        let config = Self {
            architectures: default_architectures(),
            model_type: default_model_type(),
            encoder,
            settings: settings.clone(),
            model_max_length_default: DEFAULT_MODEL_MAX_LENGTH,
            trained_with_document_context: false,
            id2label: schemed.then(|| reduced().enumerate().collect()),
            label2id: schemed.then(|| reduced().enumerate().map(|(i, l)| (l, i)).collect()),
            id2reduced_id: schemed
                .then(|| labels.id2reduced().iter().copied().enumerate().collect()),
            span_marker_version: Some(REFERENCE_VERSION.to_owned()),
            vocab_size: None,
            extra: Map::new(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Writes the configuration as pretty JSON.
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::json("config.json", e))
    }

    fn strip_remote_code_keys(&mut self) {
        for key in REMOTE_CODE_KEYS {
            if self.extra.remove(key).is_some() || self.encoder.extra.remove(key).is_some() {
                tracing::warn!(key, "ignoring remote-code key in config.json");
            }
        }
    }

    fn validate(&self) -> Result<()> {
        if self.model_type != "span-marker" {
            return Err(Error::Config(format!(
                "`model_type` is {:?}, expected \"span-marker\"",
                self.model_type
            )));
        }
        self.settings.validate()?;
        if self.model_max_length_default == 0 {
            return Err(Error::Config(
                "`model_max_length` must be at least 1".into(),
            ));
        }
        let n = self.encoder.id2label.len();
        if let Some((&id, _)) = self.encoder.id2label.iter().find(|(&id, _)| id >= n) {
            return Err(Error::Config(format!(
                "`encoder.id2label` ids must be 0..{n}, found {id}"
            )));
        }
        Ok(())
    }

    /// The original label list, in id order.
    pub fn original_labels(&self) -> Vec<String> {
        self.encoder.id2label.values().cloned().collect()
    }

    /// `min(tokenizer limit, model_max_length or model_max_length_default)`, as the reference.
    pub fn effective_model_max_length(&self, tokenizer_model_max_length: Option<usize>) -> usize {
        let requested = self
            .settings
            .model_max_length
            .unwrap_or(self.model_max_length_default);
        tokenizer_model_max_length.map_or(requested, |t| t.min(requested))
    }
}
