//! Rows in, encoder-ready samples out: tokenization, labels, windows, context and spreading.

use std::path::Path;

use tch::Device;

use crate::collate::{collate, Batch, CollateSpec};
use crate::config::SpanMarkerConfig;
use crate::context::{add_document_context, ContextLimits, DocumentPosition};
use crate::coverage::EntityCoverage;
use crate::encoding::{encode_sentence, spread, EncodedWindow, EncodingSettings, SampleRef};
use crate::error::{Error, Result};
use crate::labels::{Entity, Labels};
use crate::tokenizer::{SentenceInput, SpanMarkerTokenizer, TokenizedSentence};

/// Turns sentences into SpanMarker encoder inputs.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    tokenizer: SpanMarkerTokenizer,
    labels: Labels,
    settings: EncodingSettings,
    context: ContextLimits,
}

/// Optional parts of a preprocessing request.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions<'a> {
    /// Annotations per row (training and evaluation data).
    pub entities: Option<&'a [Vec<Entity>]>,
    /// Document positions per row, for document context.
    pub documents: Option<&'a [Option<DocumentPosition>]>,
    /// Split name used in the coverage report (`train`, `evaluation`, `test`).
    pub split: Option<&'a str>,
    /// Keep going when a row cannot be encoded (a word longer than the model input): the row
    /// is left out and its error recorded in [`Encoded::failed`] instead of failing the call.
    pub keep_going: bool,
}

/// The result of preprocessing a set of rows.
#[derive(Debug)]
pub struct Encoded {
    /// Per row, its tokenization (`None` for a null row).
    pub sentences: Vec<Option<TokenizedSentence>>,
    /// Encoder texts, in row order; a row has none (null or no words), one, or several (long).
    pub windows: Vec<EncodedWindow>,
    /// Windows spread over samples, in order.
    pub samples: Vec<SampleRef>,
    /// Annotated entities the model cannot reach (when annotations were given).
    pub coverage: Option<EntityCoverage>,
    /// Rows that could not be encoded, with the reason (only with
    /// [`EncodeOptions::keep_going`]); their `sentences` entry is `None`.
    pub failed: Vec<(usize, Error)>,
}

impl Encoded {
    /// Collates `samples[range]` into tensors.
    pub fn collate(
        &self,
        range: std::ops::Range<usize>,
        spec: &CollateSpec,
        device: Device,
    ) -> Result<Batch> {
        collate(&self.windows, &self.samples[range], spec, device)
    }
}

impl Preprocessor {
    /// Builds a preprocessor from its parts; `M` is taken from the config and the tokenizer as
    /// the reference does, then clamped so that position ids (`i + 2`) stay inside the encoder's
    /// `max_position_embeddings`.
    pub fn new(
        tokenizer: SpanMarkerTokenizer,
        labels: Labels,
        config: &SpanMarkerConfig,
    ) -> Result<Self> {
        let mut m = config.effective_model_max_length(tokenizer.model_max_length());
        if let Some(max_positions) = config.encoder.max_position_embeddings {
            let limit = max_positions.saturating_sub(2);
            if m > limit {
                tracing::info!(
                    requested = m,
                    used = limit,
                    "clamping model_max_length: position ids start at 2 and must stay below max_position_embeddings = {max_positions}"
                );
                m = limit;
            }
        }
        if m < 3 {
            return Err(Error::Config(format!(
                "`model_max_length` {m} is too small to hold any text"
            )));
        }
        Ok(Self {
            tokenizer,
            labels,
            settings: EncodingSettings {
                model_max_length: m,
                marker_max_length: config.settings.marker_max_length,
                entity_max_length: config.settings.entity_max_length,
                strict: false,
            },
            context: ContextLimits {
                max_prev: config.settings.max_prev_context,
                max_next: config.settings.max_next_context,
            },
        })
    }

    /// The preprocessing of a saved SpanMarker model named as in
    /// [`SpanMarkerModel::from_pretrained`](crate::SpanMarkerModel::from_pretrained): a
    /// directory, a Hugging Face id or `bundled`. No weights are read.
    ///
    /// ```
    /// let preprocessor = span_marker::Preprocessor::from_pretrained("bundled", &Default::default())?;
    /// assert_eq!(preprocessor.settings().entity_max_length, 6);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn from_pretrained(name_or_path: &str, hub: &crate::hub::HubOptions) -> Result<Self> {
        match crate::hub::locate(name_or_path, hub)? {
            crate::hub::ModelSource::Bundled => Self::bundled(),
            crate::hub::ModelSource::Dir(dir) => Self::from_dir(dir),
        }
    }

    /// Loads `config.json` and the tokenizer files of a saved SpanMarker model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = SpanMarkerConfig::from_file(dir.join("config.json"))?;
        Self::from_config(dir, &config)
    }

    /// Loads the tokenizer files of a model directory whose `config.json` is already read.
    pub fn from_config(dir: &Path, config: &SpanMarkerConfig) -> Result<Self> {
        let tokenizer = SpanMarkerTokenizer::from_dir(
            dir,
            &config.encoder.model_type,
            config.encoder.pad_token_id,
        )?;
        Self::new(tokenizer, labels_from_config(config)?, config)
    }

    /// The bundled model's preprocessing (MiniLM's uncased WordPiece vocabulary), compiled
    /// into the library: useful for trying things out without any files.
    ///
    /// ```
    /// let preprocessor = span_marker::Preprocessor::bundled()?;
    /// assert_eq!(preprocessor.labels().reduced(), ["O", "LOC", "MISC", "ORG", "PER"]);
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn bundled() -> Result<Self> {
        let config = bundled_config()?;
        let tokenizer = SpanMarkerTokenizer::from_json(
            include_str!("../assets/bundled-model/tokenizer.json"),
            Some(include_str!(
                "../assets/bundled-model/tokenizer_config.json"
            )),
            &config.encoder.model_type,
            config.encoder.pad_token_id,
            Path::new(BUNDLED_SOURCE),
        )?;
        Self::new(tokenizer, labels_from_config(&config)?, &config)
    }

    /// Refuse sentences longer than `M` (an error naming the row) instead of windowing them.
    pub fn strict(mut self, strict: bool) -> Self {
        self.settings.strict = strict;
        self
    }

    pub fn tokenizer(&self) -> &SpanMarkerTokenizer {
        &self.tokenizer
    }
    pub fn labels(&self) -> &Labels {
        &self.labels
    }
    pub fn settings(&self) -> &EncodingSettings {
        &self.settings
    }

    /// Ids and sizes for [`collate`].
    pub fn collate_spec(&self) -> CollateSpec {
        CollateSpec {
            total_length: self.settings.total_length(),
            trim_to_multiple_of: None,
            pad_token_id: self.tokenizer.pad_token_id(),
            start_marker_id: self.tokenizer.start_marker_id(),
            end_marker_id: self.tokenizer.end_marker_id(),
        }
    }

    /// Converts per-row string tags (`"B-PER"`, ...) or tag ids into entities, checking lengths.
    pub fn entities_from_tags(
        &self,
        words: &[&[&str]],
        tags: &[Vec<i64>],
    ) -> Result<Vec<Vec<Entity>>> {
        if words.len() != tags.len() {
            return Err(Error::Config(format!(
                "{} rows of tokens but {} rows of tags",
                words.len(),
                tags.len()
            )));
        }
        words
            .iter()
            .zip(tags)
            .enumerate()
            .map(|(row, (w, t))| {
                if w.len() != t.len() {
                    return Err(Error::LengthMismatch {
                        row,
                        num_tokens: w.len(),
                        num_tags: t.len(),
                    });
                }
                self.labels.tags_to_entities(t, row)
            })
            .collect()
    }

    /// Preprocesses rows for inference.
    pub fn encode(&self, rows: &[Option<SentenceInput<'_>>]) -> Result<Encoded> {
        self.encode_with(rows, EncodeOptions::default())
    }

    /// Preprocesses rows with annotations and/or document positions.
    #[tracing::instrument(level = "debug", skip_all, fields(rows = rows.len()))]
    pub fn encode_with(
        &self,
        rows: &[Option<SentenceInput<'_>>],
        options: EncodeOptions<'_>,
    ) -> Result<Encoded> {
        for (name, len) in [
            ("entities", options.entities.map(<[_]>::len)),
            ("document positions", options.documents.map(<[_]>::len)),
        ] {
            if let Some(len) = len.filter(|&l| l != rows.len()) {
                return Err(Error::Config(format!(
                    "{} rows but {len} {name}",
                    rows.len()
                )));
            }
        }
        let present: Vec<(usize, SentenceInput<'_>)> = rows
            .iter()
            .enumerate()
            .filter_map(|(r, input)| input.map(|i| (r, i)))
            .collect();
        let inputs: Vec<SentenceInput<'_>> = present.iter().map(|(_, i)| *i).collect();
        let mut sentences: Vec<Option<TokenizedSentence>> = vec![None; rows.len()];
        for ((row, _), tokenized) in present.iter().zip(self.tokenizer.tokenize_batch(&inputs)?) {
            sentences[*row] = Some(tokenized);
        }

        let settings = &self.settings;
        let mut coverage = options.entities.map(|_| {
            EntityCoverage::new(
                options.split.unwrap_or("train"),
                settings.entity_max_length,
                settings.model_max_length,
            )
        });
        let mut windows = Vec::new();
        let mut failed = Vec::new();
        for (row, sentence) in sentences.iter().enumerate() {
            let Some(sentence) = sentence else { continue };
            let entities = options.entities.map(|e| e[row].as_slice());
            match encode_sentence(
                row,
                sentence,
                entities,
                self.labels.outside_id(),
                settings,
                coverage.as_mut(),
            ) {
                Ok(encoded) => windows.extend(encoded),
                Err(error) if options.keep_going => failed.push((row, error)),
                Err(error) => return Err(error),
            }
        }
        for (row, _) in &failed {
            sentences[*row] = None;
        }
        if let Some(documents) = options.documents {
            add_document_context(
                &mut windows,
                &sentences,
                documents,
                settings.model_max_length,
                self.context,
            );
        }
        if let Some(coverage) = &coverage {
            coverage.log();
        }
        let samples = spread(&windows, settings.total_length());
        tracing::debug!(
            rows = rows.len(),
            windows = windows.len(),
            samples = samples.len(),
            "spread sentences over samples"
        );
        Ok(Encoded {
            sentences,
            windows,
            samples,
            coverage,
            failed,
        })
    }
}

/// How errors name the files of the bundled model.
pub(crate) const BUNDLED_SOURCE: &str = "<bundled model>";

/// `config.json` of the bundled model (MiniLM fine-tuned on CoNLL-2003).
pub(crate) fn bundled_config() -> Result<SpanMarkerConfig> {
    SpanMarkerConfig::from_json_str(include_str!("../assets/bundled-model/config.json"))
}

/// The label list of a saved model, checked against the reduction stored beside it.
pub fn labels_from_config(config: &SpanMarkerConfig) -> Result<Labels> {
    let labels = Labels::new(config.original_labels())?;
    match &config.id2label {
        Some(reduced) => {
            let reduced: Vec<String> = reduced.values().cloned().collect();
            let id2reduced: Option<Vec<usize>> = config
                .id2reduced_id
                .as_ref()
                .map(|m| m.values().copied().collect());
            labels.with_stored_reduction(&reduced, id2reduced.as_deref())
        }
        None => Ok(labels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = include_str!("../tests/fixtures/span-marker/tiny-bert/config.json");
    const TOKENIZER: &str = include_str!("../tests/fixtures/span-marker/tiny-bert/tokenizer.json");

    fn with_lengths(
        model_max_length: &str,
        tokenizer_config: Option<&str>,
    ) -> Result<Preprocessor> {
        let config = SpanMarkerConfig::from_json_str(&CONFIG.replace(
            "\"model_max_length\": 64",
            &format!("\"model_max_length\": {model_max_length}"),
        ))?;
        let tokenizer = SpanMarkerTokenizer::from_json(
            TOKENIZER,
            tokenizer_config,
            "bert",
            Some(0),
            Path::new("t"),
        )?;
        Preprocessor::new(tokenizer, labels_from_config(&config)?, &config)
    }

    #[test]
    fn model_max_length_follows_the_reference_then_the_position_limit() {
        let m = |p: Result<Preprocessor>| p.unwrap().settings().model_max_length;
        // No tokenizer limit: the config's value; null: the 512 default, clamped to 512 - 2 for BERT.
        assert_eq!(m(with_lengths("100", None)), 100);
        assert_eq!(m(with_lengths("null", None)), 510);
        assert_eq!(m(with_lengths("1000", None)), 510);
        // A tokenizer limit wins when smaller; 1e30 means "no limit".
        assert_eq!(
            m(with_lengths("100", Some(r#"{"model_max_length": 40}"#))),
            40
        );
        assert_eq!(
            m(with_lengths("100", Some(r#"{"model_max_length": 1e30}"#))),
            100
        );
        assert!(with_lengths("2", None).is_err());
    }
}
