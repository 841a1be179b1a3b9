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

pub mod attention;
mod card;
pub mod dropout;
pub mod encoder;
pub mod fused;
pub mod head;
pub mod quantized;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use attention::MarkerAttention;
pub use card::ModelCard;
use encoder::{Encoder, EncoderSettings, Kernels, Rows};

use crate::checkpoint::{self, StateDict, SAFETENSORS_FILE};
use crate::collate::Batch;
use crate::config::{EncoderConfig, ModelSettings, SpanMarkerConfig};
use crate::error::{Error, Result};
use crate::hub::{self, HubOptions, ModelSource};
use crate::labels::Labels;
use crate::preprocess::{bundled_config, Preprocessor, BUNDLED_SOURCE};
use crate::tokenizer::SpanMarkerTokenizer;

const WORD_EMBEDDINGS: &str = "encoder.embeddings.word_embeddings.weight";

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

/// Logits and, when the batch has labels, the loss.
#[derive(Debug)]
pub struct ModelOutput {
    /// `[B, T/2, C]` span logits (rows past each sample's marker pairs hold the bias only).
    pub logits: Tensor,
    /// Mean cross-entropy over labelled spans.
    pub loss: Option<Tensor>,
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

    /// Runs the encoder and the head on a collated batch; dropout is active when `train` is set.
    pub fn forward(&self, batch: &Batch, train: bool) -> ModelOutput {
        self.forward_with(batch, train, Kernels::Standard)
    }

    /// [`forward`](Self::forward), with the encoder's linear maps run by `kernels`.
    pub(crate) fn forward_with(
        &self,
        batch: &Batch,
        train: bool,
        kernels: Kernels<'_>,
    ) -> ModelOutput {
        let attention_dropout = train && self.encoder.settings().attention_probs_dropout_prob > 0.0;
        let layout = batch.layout();
        let attention = if kernels.attend_directly(train) {
            MarkerAttention::direct(&layout)
        } else {
            MarkerAttention::new(&layout, Kind::Float, attention_dropout)
        };
        let positions = batch.input_ids.numel() as i64;
        // The direct form reads unpadded rows as they are: skipping padding costs it nothing.
        let direct = matches!(attention, MarkerAttention::Direct { .. });
        let tokens = batch
            .tokens
            .as_ref()
            .filter(|index| direct || self.encoder.skips_padding(index.size()[0], positions));
        // Only the markers' last states are read, but training computes every row: dropout then
        // draws its masks over the reference's shapes in the reference's order, so that a seed
        // gives the reference's masks.
        let read = (!train).then_some(&batch.markers);
        let rows = Rows {
            tokens,
            distinct: batch.distinct.as_ref(),
            read,
        };
        let hidden = self.encoder.forward(
            &batch.input_ids,
            &batch.position_ids,
            &attention,
            rows,
            train,
            kernels,
        );
        let hidden = dropout::dropout(&hidden, self.dropout, train);
        let features = head::marker_features(
            &hidden,
            &batch.start_marker_indices,
            &batch.num_marker_pairs,
        );
        let features = dropout::dropout(&features, self.dropout, train);
        let logits = self.classifier.forward(&features);
        self.count_flops(batch, rows, train, &attention, &logits);
        let loss = batch
            .labels
            .as_ref()
            .map(|labels| head::span_loss(&logits, labels));
        ModelOutput { logits, loss }
    }

    /// Model FLOPs of every forward pass run so far: the encoder's matrix products as executed
    /// (see [`Encoder::forward_flops`]) and the classifier's, for the shapes actually run
    /// (text plus marker tokens; padding only where attention computes it). Backward passes
    /// are not counted; they take about twice a forward's. Benchmarks divide the difference
    /// over a run by its time.
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

    fn count_flops(
        &self,
        batch: &Batch,
        rows: Rows<'_>,
        train: bool,
        attention: &MarkerAttention,
        logits: &Tensor,
    ) {
        let (b, t) = batch.input_ids.size2().unwrap_or((0, 0));
        let size = logits.size();
        let (pairs, labels) = (size[1], size[2]);
        let features = self.classifier.ws.size()[1];
        let head = (2 * b * pairs * features * labels).max(0) as u64;
        let tokens = rows.tokens.map_or(b * t, |index| index.size()[0]);
        let first = self
            .encoder
            .first_layer_groups(&rows, train)
            .map_or(tokens, |groups| groups.positions.size()[0]);
        let read = self.encoder.last_layer_rows(tokens, rows.read);
        let keys = attention.keys_per_query(t);
        let encoder = self.encoder.forward_flops(tokens, first, b * t, keys, read);
        self.flops.fetch_add(encoder + head, Ordering::Relaxed);
    }

    /// Saves `config.json`, `model.safetensors`, the tokenizer files (with the marker tokens)
    /// and a model card, in the layout Python `span_marker` loads.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.save_pretrained_with_card(dir, &ModelCard::default())
    }

    /// Publishes the model to the Hugging Face Hub repository `repo_id` (`user/name`), created
    /// when missing: saved as by [`save_pretrained`](Self::save_pretrained) (its card becomes
    /// the repository's README) and committed in one commit. The token comes from
    /// `options.hub.token`, `HF_TOKEN` or the Hugging Face CLI's token file, the Hub's address
    /// from `options.hub.endpoint` or `HF_ENDPOINT`.
    ///
    /// ```no_run
    /// use span_marker::hub::publish::PushOptions;
    /// let model = span_marker::SpanMarkerModel::bundled()?;
    /// let commit = model.push_to_hub("me/my-ner", &PushOptions::default())?;
    /// println!("published {}", commit.commit_url);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    #[cfg(feature = "hub")]
    pub fn push_to_hub(
        &self,
        repo_id: &str,
        options: &crate::hub::publish::PushOptions,
    ) -> Result<crate::hub::publish::CommitInfo> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        self.save_pretrained(dir.path())?;
        crate::hub::publish::upload_folder(dir.path(), repo_id, options)
    }

    /// [`save_pretrained`](Self::save_pretrained) with metrics and a description for the card.
    pub fn save_pretrained_with_card(&self, dir: impl AsRef<Path>, card: &ModelCard) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut config = self.config.clone();
        let rows = self.encoder.vocab_rows() as usize;
        config.vocab_size = Some(rows);
        config.encoder.vocab_size = Some(rows);
        let json = config.to_json_string()? + "\n";
        checkpoint::write_atomically(&dir.join("config.json"), json.as_bytes())?;

        let mut tensors: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        checkpoint::write_safetensors(&dir.join(SAFETENSORS_FILE), &tensors)?;
        // A stale pickle beside the new weights would shadow nothing (safetensors is read
        // first) but would confuse readers: remove it.
        let stale = dir.join(checkpoint::PICKLE_FILE);
        if stale.is_file() {
            std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
        self.preprocessor.tokenizer().save(dir)?;
        let readme = card.render(&config, self.labels(), self.preprocessor.settings());
        checkpoint::write_atomically(&dir.join("README.md"), readme.as_bytes())?;
        tracing::info!(dir = %dir.display(), "saved SpanMarker model");
        Ok(())
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

    /// A digest of everything that decides this model's predictions: every weight (by name,
    /// dtype, shape and value), the tokenizer, the labels and the model settings. Equal for
    /// two copies of one model wherever they were loaded from; resumable jobs record it.
    ///
    /// ```
    /// let a = span_marker::SpanMarkerModel::bundled()?;
    /// let b = span_marker::SpanMarkerModel::from_pretrained("bundled")?;
    /// assert_eq!(a.fingerprint()?, b.fingerprint()?);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn fingerprint(&self) -> Result<String> {
        self.digest(false)
    }

    /// [`fingerprint`](Self::fingerprint) without the weights a new model draws at random:
    /// the head and the embedding rows from the first marker token on. What a training run
    /// records of the model it started from, so that a resumed run can check that it was
    /// given the same encoder, tokenizer, labels and settings, however it was seeded.
    pub fn encoder_fingerprint(&self) -> Result<String> {
        self.digest(true)
    }

    fn digest(&self, pretrained_only: bool) -> Result<String> {
        let tokenizer = self.preprocessor.tokenizer();
        let json = tokenizer
            .inner()
            .to_string(false)
            .map_err(Error::Tokenizer)?;
        let settings = serde_json::to_string(&self.config.settings).unwrap_or_default();
        let mut digest = crate::fingerprint::Fingerprint::new()
            .str(&json)
            .str(&self.labels().original().join("\n"))
            .str(&settings);
        let first_marker = i64::from(tokenizer.start_marker_id().min(tokenizer.end_marker_id()));
        let mut variables: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, tensor) in variables {
            let tensor = match name.as_str() {
                _ if pretrained_only && name.starts_with("classifier.") => continue,
                WORD_EMBEDDINGS if pretrained_only => tensor.narrow(0, 0, first_marker),
                _ => tensor,
            };
            digest = digest
                .str(&name)
                .str(&format!("{:?}{:?}", tensor.kind(), tensor.size()))
                .bytes(&checkpoint::tensor_bytes(&tensor)?);
        }
        Ok(digest.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collate::DistinctTokens;
    use crate::labels::Entity;
    use crate::preprocess::EncodeOptions;
    use crate::tokenizer::SentenceInput;

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
        assert!(
            kept < b * t && model.encoder().skips_padding(kept, b * t),
            "{kept} of {b} x {t}"
        );
        let mut padded = encoded.collate(all, &spec, Device::Cpu).unwrap();
        padded.tokens = None;

        let pairs = unpadded.num_marker_pairs.view([b, 1, 1]);
        let slot = Tensor::arange(t / 2, (Kind::Int64, Device::Cpu)).view([1, t / 2, 1]);
        let read = slot.lt_tensor(&pairs).to_kind(Kind::Float);
        // The logits of every read slot, and the gradient they send to the first layer.
        let run = |batch: &Batch| {
            let logits = model.forward(batch, false).logits * &read;
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
        let structured = MarkerAttention::structured(&unpadded.layout(), Kind::Float);
        let states = |index: Option<&Tensor>| {
            let hidden = tch::no_grad(|| {
                let (ids, pos) = (&unpadded.input_ids, &unpadded.position_ids);
                let rows = Rows {
                    tokens: index,
                    ..Rows::default()
                };
                model
                    .encoder()
                    .forward(ids, pos, &structured, rows, false, Kernels::Standard)
            });
            hidden.view([b * t, -1]).index_select(0, tokens)
        };
        assert!(max_diff(&states(Some(tokens)), &states(None)) < 1e-4);
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
        let encoded = model.preprocessor().encode(&rows).unwrap();
        let spec = model.preprocessor().collate_spec();
        let batch = encoded
            .collate(0..encoded.samples.len(), &spec, Device::Cpu)
            .unwrap();
        let (b, t) = batch.input_ids.size2().unwrap();
        let tokens = batch.tokens.as_ref().expect("the batch has padding");
        let markers = &batch.markers;
        let pairs: Vec<i64> = Vec::try_from(&batch.num_marker_pairs).unwrap();
        assert_eq!(markers.size(), [2 * pairs.iter().sum::<i64>()]);
        let unpadded_rows = tokens.size()[0];
        let last_rows = model
            .encoder()
            .last_layer_rows(unpadded_rows, Some(markers));
        assert!(
            last_rows < unpadded_rows,
            "{last_rows} of {unpadded_rows} rows"
        );
        let layout = batch.layout();
        let fused = model.encoder().fused(Kind::Float).unwrap();
        let forms = [
            (
                MarkerAttention::structured(&layout, Kind::Float),
                Kernels::Standard,
            ),
            (MarkerAttention::direct(&layout), Kernels::Fused(&fused)),
        ];
        for (attention, kernels) in &forms {
            for index in [Some(tokens), None] {
                if index.is_none() && matches!(attention, MarkerAttention::Direct { .. }) {
                    continue; // the direct form reads the padded layout only without padding
                }
                let run = |read: Option<&Tensor>| {
                    let (ids, pos) = (&batch.input_ids, &batch.position_ids);
                    let encoder = model.encoder();
                    tch::no_grad(|| {
                        let rows = Rows {
                            tokens: index,
                            distinct: None,
                            read,
                        };
                        encoder.forward(ids, pos, attention, rows, false, *kernels)
                    })
                    .view([b * t, -1])
                };
                let (all, read) = (run(None), run(Some(markers)));
                let diff = f64::try_from(
                    (all.index_select(0, markers) - read.index_select(0, markers))
                        .abs()
                        .max(),
                )
                .unwrap();
                assert!(diff < 1e-5, "{attention:?}: {diff}");
                let mut unread = Tensor::ones([b * t], (Kind::Bool, Device::Cpu));
                let _ = unread.index_fill_(0, markers, 0);
                let rest = read.index_select(0, &unread.nonzero().view([-1]));
                assert_eq!(f64::try_from(rest.abs().sum(Kind::Double)).unwrap(), 0.0);
            }
        }
    }

    #[test]
    fn distinct_first_rows_give_every_row_its_states() {
        let model = SpanMarkerModel::bundled().unwrap();
        let long: Vec<&str> = "Peter Blackburn of the European Commission met Werner Zwingmann \
                               in Brussels on Thursday ."
            .split(' ')
            .collect();
        let rows: Vec<_> = std::iter::repeat_n(Some(SentenceInput::Words(&long)), 4)
            .chain([Some(SentenceInput::Words(&WORDS[..3]))])
            .collect();
        let encoded = model.preprocessor().encode(&rows).unwrap();
        let spec = model.preprocessor().collate_spec();
        let batch = encoded
            .collate(0..encoded.samples.len(), &spec, Device::Cpu)
            .unwrap();
        let tokens = batch.tokens.as_ref().expect("the batch has padding");
        let groups = batch.distinct.as_ref().expect("markers share their pairs");
        let (u, n) = (groups.positions.size()[0], tokens.size()[0]);
        assert!(u < n, "{u} of {n} rows");
        // Every row's pair is its group's, and no two groups share one.
        let pair = |index: &Tensor| {
            let ids = batch.input_ids.view([-1]).index_select(0, index);
            let pos = batch.position_ids.view([-1]).index_select(0, index);
            ids * 1_000_000 + pos
        };
        let group_pairs = pair(&groups.positions);
        assert!(pair(tokens).equal(&group_pairs.index_select(0, &groups.of_row)));
        let used = i64::try_from(groups.of_row.max()).unwrap() + 1;
        let (unique, _, _) = group_pairs
            .narrow(0, 0, used)
            .unique_dim(0, true, false, false);
        assert_eq!(unique.size()[0], used);

        let (b, t) = batch.input_ids.size2().unwrap();
        let layout = batch.layout();
        let fused = model.encoder().fused(Kind::Float).unwrap();
        let int8 = model.encoder().int8().unwrap();
        let forms = [
            (
                MarkerAttention::structured(&layout, Kind::Float),
                Kernels::Standard,
            ),
            (MarkerAttention::direct(&layout), Kernels::Fused(&fused)),
            (MarkerAttention::direct(&layout), Kernels::Int8(&int8)),
        ];
        for (attention, kernels) in &forms {
            for read in [None, Some(&batch.markers)] {
                let run = |distinct: Option<&DistinctTokens>| {
                    let rows = Rows {
                        tokens: Some(tokens),
                        distinct,
                        read,
                    };
                    let (ids, pos) = (&batch.input_ids, &batch.position_ids);
                    let encoder = model.encoder();
                    tch::no_grad(|| encoder.forward(ids, pos, attention, rows, false, *kernels))
                        .view([b * t, -1])
                        .index_select(0, tokens)
                };
                let (each, grouped) = (run(None), run(Some(groups)));
                let diff = f64::try_from((&each - &grouped).abs().max()).unwrap();
                assert!(
                    diff < 1e-5,
                    "{attention:?}, read {}: {diff}",
                    read.is_some()
                );
                assert!(f64::try_from(each.abs().sum(Kind::Double)).unwrap() > 0.0);
            }
        }

        // The model takes the groups in inference and counts the first layer's products as run.
        let mut ungrouped = encoded
            .collate(0..encoded.samples.len(), &spec, Device::Cpu)
            .unwrap();
        ungrouped.distinct = None;
        let run = |batch: &Batch, train: bool| {
            let before = model.flops_executed();
            let logits = tch::no_grad(|| {
                let kernels = if train {
                    Kernels::Standard
                } else {
                    Kernels::Fused(&fused)
                };
                model.forward_with(batch, train, kernels).logits
            });
            (model.flops_executed() - before, logits)
        };
        let h = model.encoder().settings().hidden_size;
        let ((grouped_flops, grouped), (flops, logits)) =
            (run(&batch, false), run(&ungrouped, false));
        assert_eq!(flops - grouped_flops, (2 * (n - u) * 3 * h * h) as u64);
        assert!(f64::try_from((grouped - logits).abs().max()).unwrap() < 1e-5);
        // Training computes every row (dropout draws a mask per row).
        assert_eq!(run(&batch, true).0, run(&ungrouped, true).0);
    }

    #[test]
    fn dropout_is_active_only_in_training() {
        let model = SpanMarkerModel::bundled().unwrap();
        let batch = labelled_batch(&model);
        let eval = |_| tch::no_grad(|| model.forward(&batch, false).logits);
        let train = |_| tch::no_grad(|| model.forward(&batch, true).logits);
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

    #[test]
    fn the_model_card_lists_labels_settings_and_metrics() {
        let model = SpanMarkerModel::bundled().unwrap();
        let card = ModelCard {
            dataset: Some("conll2003".into()),
            metrics: [("test_overall_f1".to_owned(), 0.91)].into(),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        model.save_pretrained_with_card(dir.path(), &card).unwrap();
        let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
        for needle in [
            "library_name: span-marker",
            "| PER | B-PER, I-PER |",
            "| MISC | B-MISC, I-MISC |",
            "**Maximum entity length:** 6 words",
            "| test_overall_f1 | 0.9100 |",
            "- conll2003",
        ] {
            assert!(readme.contains(needle), "{needle:?} missing from\n{readme}");
        }
    }
}
