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

/// Top level of a SpanMarker `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanMarkerConfig {
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// The complete configuration of the underlying encoder.
    pub encoder: EncoderConfig,
    /// Text-token budget `M` requested by the user; `None` means the tokenizer's own limit.
    #[serde(default)]
    pub model_max_length: Option<usize>,
    #[serde(default = "default_model_max_length")]
    pub model_max_length_default: usize,
    /// Marker pairs per sample `K`.
    #[serde(default = "default_marker_max_length")]
    pub marker_max_length: usize,
    /// Longest entity in words `E`.
    #[serde(default = "default_entity_max_length")]
    pub entity_max_length: usize,
    #[serde(default)]
    pub max_prev_context: Option<usize>,
    #[serde(default)]
    pub max_next_context: Option<usize>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub model_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
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
fn default_marker_max_length() -> usize {
    128
}
fn default_entity_max_length() -> usize {
    8
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
        let config = Self::from_json_str(text).map_err(|e| match e {
            Error::Json { source, .. } => Error::json(path, source),
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates a `config.json` document.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let mut config: Self =
            serde_json::from_str(text).map_err(|e| Error::json("config.json", e))?;
        config.strip_remote_code_keys();
        config.validate()?;
        Ok(config)
    }

    /// The configuration of a new SpanMarker model around `encoder`, as Python's
    /// `SpanMarkerConfig(encoder_config=...)` builds it: the original labels go into the encoder
    /// config; schemed labels also get the reduced `id2label`/`label2id` and `id2reduced_id`
    /// at the top level.
    pub fn for_encoder(
        mut encoder: EncoderConfig,
        labels: &crate::labels::Labels,
        settings: &crate::model::ModelSettings,
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
            model_max_length: settings.model_max_length,
            model_max_length_default: DEFAULT_MODEL_MAX_LENGTH,
            marker_max_length: settings.marker_max_length,
            entity_max_length: settings.entity_max_length,
            max_prev_context: settings.max_prev_context,
            max_next_context: settings.max_next_context,
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
        if self.entity_max_length == 0 {
            return Err(Error::Config(
                "`entity_max_length` must be at least 1".into(),
            ));
        }
        if self.marker_max_length == 0 {
            return Err(Error::Config(
                "`marker_max_length` must be at least 1".into(),
            ));
        }
        if self.model_max_length == Some(0) || self.model_max_length_default == 0 {
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
            .model_max_length
            .unwrap_or(self.model_max_length_default);
        tokenizer_model_max_length.map_or(requested, |t| t.min(requested))
    }
}
