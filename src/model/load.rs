//! Loading a model: from a saved SpanMarker directory, a Hugging Face id, the bundled model,
//! or a plain encoder with a new head; and the checks of config, weights and tokenizer against
//! each other before anything is allocated.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use serde_json::Value;
use tch::{nn, Device};

use super::encoder::{Encoder, EncoderSettings};
use super::SpanMarkerModel;
use crate::checkpoint::{self, StateDict, SAFETENSORS_FILE};
use crate::config::{EncoderConfig, ModelSettings, SpanMarkerConfig};
use crate::error::{Error, Result};
use crate::hub::{self, HubOptions, ModelSource};
use crate::labels::Labels;
use crate::preprocess::{bundled_config, Preprocessor, BUNDLED_SOURCE};
use crate::tokenizer::SpanMarkerTokenizer;

pub(super) const WORD_EMBEDDINGS: &str = "encoder.embeddings.word_embeddings.weight";

/// How [`SpanMarkerModel::from_pretrained_with`] finds and builds a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where the weights go; see [`crate::device::parse_device`].
    pub device: Option<Device>,
    /// Cache, revision and offline mode for model ids.
    pub hub: HubOptions,
    /// The label list, required when loading a plain encoder (ignored for a SpanMarker model).
    pub labels: Option<Vec<String>>,
    /// Settings for a new model made from a plain encoder.
    pub settings: ModelSettings,
}

/// The sizes `config.json` gives the encoder against the weights, before any variable is
/// allocated: a config that asks for more layers, wider ones or a wider embedding than the
/// checkpoint holds is an error naming the setting, not an attempt to allocate them (and a
/// crash when that fails). Every size is also bounded by `EncoderSettings::from_config`.
fn check_sizes(settings: &EncoderSettings, state: &StateDict) -> Result<()> {
    let layer_of = |key: &str| {
        let parts: Vec<&str> = key.split('.').collect();
        parts
            .windows(2)
            .find(|pair| pair[0] == "layer")
            .and_then(|pair| pair[1].parse::<i64>().ok())
    };
    let layers = state
        .tensors
        .keys()
        .filter_map(|key| layer_of(key))
        .max()
        .map_or(0, |last| last + 1);
    if settings.num_hidden_layers > layers {
        return Err(state.error(format!(
            "config.json asks for {} layers (`num_hidden_layers`) but the weights hold {layers}",
            settings.num_hidden_layers
        )));
    }
    let shape_of = |suffix: &str| {
        state
            .tensors
            .iter()
            .find(|(key, _)| key.ends_with(suffix))
            .map(|(_, tensor)| tensor.size())
    };
    let checks = [
        (
            "hidden_size",
            settings.hidden_size,
            "layer.0.attention.self.query.weight",
        ),
        (
            "intermediate_size",
            settings.intermediate_size,
            "layer.0.intermediate.dense.weight",
        ),
        (
            "max_position_embeddings",
            settings.max_position_embeddings,
            "embeddings.position_embeddings.weight",
        ),
        (
            "type_vocab_size",
            settings.type_vocab_size,
            "embeddings.token_type_embeddings.weight",
        ),
    ];
    // Each size is the first dimension of its weight; the token type embeddings may be
    // absent (the model then has none), the others must be there.
    for (key, wanted, suffix) in checks {
        let Some(shape) = shape_of(suffix) else {
            if key == "type_vocab_size" {
                continue;
            }
            return Err(state.error(format!(
                "missing weight `…{suffix}` (the encoder needs it to have `{key}` = {wanted})"
            )));
        };
        if shape.first() != Some(&wanted) {
            return Err(state.error(format!(
                "config.json says `{key}` = {wanted} but the weight `…{suffix}` has shape {shape:?}"
            )));
        }
    }
    let width = settings.embedding_size.unwrap_or(settings.hidden_size);
    let suffix = "embeddings.word_embeddings.weight";
    match shape_of(suffix) {
        Some(shape) if shape.get(1) == Some(&width) => Ok(()),
        Some(shape) => Err(state.error(format!(
            "config.json gives the word embeddings a width of {width} (`embedding_size`, else \
             `hidden_size`) but the weight `…{suffix}` has shape {shape:?}"
        ))),
        None => Err(state.error(format!("missing weight `…{suffix}`"))),
    }
}

/// The most rows the word embeddings may have beyond the tokenizer's highest id: embedding
/// matrices are padded to a multiple of 8 (SpanMarker) or of up to 128 (some encoders).
const MAX_EMBEDDING_PADDING: i64 = 128;

/// The tokenizer and the word embeddings must agree both ways: every token id has a row, and
/// there are no more rows than padding explains. Either mismatch means tokenizer files from
/// another model, whose ids would silently pick the wrong embeddings.
fn check_vocabulary(tokenizer: &SpanMarkerTokenizer, rows: i64, state: &StateDict) -> Result<()> {
    let highest_id = tokenizer
        .inner()
        .get_vocab(true)
        .into_values()
        .max()
        .map_or(-1, i64::from);
    if highest_id >= rows {
        return Err(state.error(format!(
            "the word embeddings have {rows} rows but the tokenizer has token id {highest_id}: \
             the tokenizer files do not belong to these weights"
        )));
    }
    if rows > highest_id + 1 + MAX_EMBEDDING_PADDING {
        return Err(state.error(format!(
            "the word embeddings have {rows} rows but the tokenizer's highest token id is \
             {highest_id}: the tokenizer files do not belong to these weights"
        )));
    }
    Ok(())
}

/// Labels given for a model that has its own are ignored, with a warning.
fn warn_ignored_labels(name_or_path: &str, options: &LoadOptions) {
    if options.labels.is_some() {
        tracing::warn!(
            "ignoring `labels`: {name_or_path} is a SpanMarker model with its own labels"
        );
    }
}

/// The bundled model's float16 weights, compiled in with the `embedded-model` feature.
#[cfg(feature = "embedded-model")]
fn bundled_weights() -> Result<&'static [u8]> {
    Ok(include_bytes!(
        "../../assets/bundled-model/model.safetensors"
    ))
}

#[cfg(not(feature = "embedded-model"))]
fn bundled_weights() -> Result<&'static [u8]> {
    Err(Error::Config(
        "this build leaves out the bundled model's weights (cargo feature `embedded-model` is off): \
         pass a model directory or a Hugging Face id instead of `bundled`"
            .into(),
    ))
}

impl SpanMarkerModel {
    /// Loads a saved SpanMarker model on the CPU: a directory, a Hugging Face model id, or
    /// `bundled` (see [`hub`](crate::hub) for how names are resolved).
    ///
    /// ```
    /// let model = span_marker::SpanMarkerModel::from_pretrained("bundled")?;
    /// assert_eq!(model.labels().reduced(), ["O", "LOC", "MISC", "ORG", "PER"]);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn from_pretrained(name_or_path: &str) -> Result<Self> {
        Self::from_pretrained_with(name_or_path, &LoadOptions::default())
    }

    /// Loads a saved SpanMarker model, or builds a new one from a plain encoder (BERT, RoBERTa,
    /// XLM-R, ELECTRA) and `options.labels`: the marker tokens are added to its tokenizer, the
    /// embedding matrix is resized to a multiple of 8 and the head is initialised.
    pub fn from_pretrained_with(name_or_path: &str, options: &LoadOptions) -> Result<Self> {
        let device = options.device.unwrap_or(Device::Cpu);
        let dir = match hub::locate(name_or_path, &options.hub)? {
            ModelSource::Bundled => {
                warn_ignored_labels(name_or_path, options);
                let mut model = Self::bundled()?;
                model.to_device(device);
                return Ok(model);
            }
            ModelSource::Dir(dir) => dir,
        };
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| Error::json(&config_path, e))?;
        if raw.get("model_type").and_then(Value::as_str) == Some("span-marker") {
            warn_ignored_labels(name_or_path, options);
            let config = SpanMarkerConfig::from_json_str_at(&text, &config_path)?;
            Self::load_dir_with_config(&dir, config, device)
        } else {
            let labels = options.labels.as_deref().ok_or_else(|| {
                Error::Config(format!(
                    "{name_or_path} is a plain encoder: pass the label list (e.g. [\"O\", \"B-PER\", \"I-PER\", ...]) to build a SpanMarker model from it"
                ))
            })?;
            Self::from_encoder_dir(name_or_path, &dir, raw, labels, &options.settings, device)
        }
    }

    /// Loads a saved SpanMarker model directory: `config.json`, the weights, and the tokenizer
    /// files with the marker tokens saved beside them.
    pub fn load_dir(dir: &Path, device: Device) -> Result<Self> {
        let config = SpanMarkerConfig::from_file(dir.join("config.json"))?;
        Self::load_dir_with_config(dir, config, device)
    }

    /// [`load_dir`](Self::load_dir) with `config.json` already read.
    fn load_dir_with_config(dir: &Path, config: SpanMarkerConfig, device: Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let settings = EncoderSettings::from_config(&config.encoder).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", config_path.display())),
            other => other,
        })?;
        let preprocessor = Preprocessor::from_config(dir, &config)?;
        let state = StateDict::read(&checkpoint::find_weights(dir)?)?;
        Self::from_parts(config, preprocessor, settings, &state, device)
    }

    /// The model compiled into the library, for trying things without any files:
    /// sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384 wide, uncased) fine-tuned on
    /// CoNLL-2003 by `pipelines/bundled.toml`, stored as float16 and loaded into float32 (see
    /// `assets/bundled-model/README.md` for its scores).
    ///
    /// ```
    /// let model = span_marker::SpanMarkerModel::bundled()?;
    /// assert_eq!(model.labels().reduced(), ["O", "LOC", "MISC", "ORG", "PER"]);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    ///
    /// A build without the `embedded-model` feature (default on) leaves the weights out, 45 MB
    /// less, and answers with an error naming the feature.
    pub fn bundled() -> Result<Self> {
        let config = bundled_config()?;
        let settings = EncoderSettings::from_config(&config.encoder)?;
        let state = StateDict::from_safetensors_bytes(
            bundled_weights()?,
            &Path::new(BUNDLED_SOURCE).join(SAFETENSORS_FILE),
        )?;
        Self::from_parts(
            config,
            Preprocessor::bundled()?,
            settings,
            &state,
            Device::Cpu,
        )
    }

    /// A saved model from its read parts.
    fn from_parts(
        config: SpanMarkerConfig,
        preprocessor: Preprocessor,
        settings: EncoderSettings,
        state: &StateDict,
        device: Device,
    ) -> Result<Self> {
        let rows = state.shape(WORD_EMBEDDINGS)?[0];
        let model = Self::build(config, preprocessor, settings, rows, state, device, false)?;
        state.load_into(&model.vs, |name| Some(vec![name.to_owned()]), &[])?;
        Ok(model)
    }

    fn from_encoder_dir(
        name_or_path: &str,
        dir: &Path,
        raw: Value,
        labels: &[String],
        settings: &ModelSettings,
        device: Device,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        let mut encoder_config: EncoderConfig = crate::error::json_value_into(raw, &config_path)?;
        let encoder_settings = EncoderSettings::from_config(&encoder_config)?;
        encoder_config
            .extra
            .insert("_name_or_path".into(), Value::from(name_or_path));
        let labels = Labels::new(labels)?;
        let mut config = SpanMarkerConfig::for_encoder(encoder_config, &labels, settings)?;
        let tokenizer = SpanMarkerTokenizer::from_dir(
            dir,
            &config.encoder.model_type,
            config.encoder.pad_token_id,
        )?;
        // As `resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8)`.
        let rows = tokenizer.len().div_ceil(8) * 8;
        config.vocab_size = Some(rows);
        config.encoder.vocab_size = Some(rows);
        let preprocessor = Preprocessor::new(tokenizer, labels, &config)?;
        let state = StateDict::read(&checkpoint::find_weights(dir)?)?;
        let prefix = format!("{}.", encoder_settings.base_model_prefix());
        let model = Self::build(
            config,
            preprocessor,
            encoder_settings,
            rows as i64,
            &state,
            device,
            true,
        )?;
        state.load_into(
            &model.vs,
            |name| {
                let inner = name.strip_prefix("encoder.")?;
                let mut names = vec![inner.to_owned(), format!("{prefix}{inner}")];
                // Checkpoints from old TensorFlow conversions name LayerNorm weights gamma/beta.
                for (new, old) in [(".weight", ".gamma"), (".bias", ".beta")] {
                    if inner.contains("LayerNorm") && inner.ends_with(new) {
                        let legacy = format!("{}{old}", inner.strip_suffix(new)?);
                        names.push(format!("{prefix}{legacy}"));
                        names.push(legacy);
                    }
                }
                Some(names)
            },
            &[WORD_EMBEDDINGS],
        )?;
        Ok(model)
    }

    /// Creates the variables (randomly initialised when `fresh`) and checks the head and the
    /// vocabulary against the checkpoint.
    fn build(
        config: SpanMarkerConfig,
        preprocessor: Preprocessor,
        settings: EncoderSettings,
        rows: i64,
        state: &StateDict,
        device: Device,
        fresh: bool,
    ) -> Result<Self> {
        let num_labels = preprocessor.labels().num_reduced() as i64;
        let hidden = settings.hidden_size;
        if !fresh {
            let head = state.shape("classifier.weight")?;
            if head != [num_labels, 2 * hidden] {
                return Err(state.error(format!(
                    "the head `classifier.weight` has shape {head:?}, but config.json lists {num_labels} labels {:?} \
                     and a hidden size of {hidden}: expected [{num_labels}, {}]",
                    preprocessor.labels().reduced(),
                    2 * hidden
                )));
            }
        }
        check_vocabulary(preprocessor.tokenizer(), rows, state)?;
        check_sizes(&settings, state)?;
        let dropout = settings.hidden_dropout_prob;
        let vs = nn::VarStore::new(device);
        let encoder = Encoder::new(&vs.root() / "encoder", settings, rows, fresh);
        let init = if fresh {
            nn::Init::Randn {
                mean: 0.,
                stdev: encoder.settings().initializer_range,
            }
        } else {
            nn::Init::Const(0.)
        };
        let classifier = nn::linear(
            &vs.root() / "classifier",
            2 * hidden,
            num_labels,
            nn::LinearConfig {
                ws_init: init,
                bs_init: Some(nn::Init::Const(0.)),
                bias: true,
            },
        );
        Ok(Self {
            config,
            preprocessor,
            vs,
            encoder,
            classifier,
            dropout,
            flops: AtomicU64::new(0),
        })
    }
}
