//! Prediction: sentences in, entities out.
//!
//! Every candidate span gets a softmax score and its best label; spans are then accepted
//! greedily by descending score (ties keep enumeration order) as long as they are not `O` and
//! none of their words is taken, and returned sorted by position. This is the reference's
//! decoding, with two additions: an optional score threshold and optional overlapping output.
//! Sentences longer than the model input are encoded in windows and decoded as one sentence.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::collate::{collate, CollateSpec};
use crate::context::DocumentPosition;
use crate::device::Precision;
use crate::encoding::{join_windows, SampleRef};
use crate::error::{Error, Result};
use crate::model::plan::{ForwardPlan, Mode};
use crate::model::SpanMarkerModel;
use crate::preprocess::{EncodeOptions, Encoded};
use crate::spans::Span;
use crate::tokenizer::{SentenceInput, TokenizedSentence};

/// What prediction made of one row: `Ok(None)` for a null row, or the error that kept this
/// row (and only this row) from being encoded.
pub type RowPrediction = Result<Option<Vec<PredictedEntity>>>;

/// Options for [`SpanMarkerModel::predict`]: the one definition of the prediction settings,
/// with their defaults ([`Default`]), descriptions and checks, read by every engine:
///
/// - SQL's `SET span_marker.<key> = '<value>'` in their string form ([`set`](Self::set),
///   [`settings`](Self::settings), [`from_settings`](Self::from_settings));
/// - the Polars plugin's keyword arguments through serde ([`read`](Self::read); missing keys
///   keep their defaults);
/// - the command line's `--batch-size`, `--threshold`, `--overlapping` and `--precision` (with
///   the `clap` feature; their defaults are [`Default`]'s).
///
/// Adding a setting: a field here with its doc, its default in [`Default`], and its entry (key,
/// description, string form) in the settings table below; every engine then takes it. The
/// descriptions are what `--help` and SQL's `information_schema.df_settings` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct PredictOptions {
    /// Samples per forward pass.
    #[cfg_attr(feature = "clap", arg(
        long,
        default_value_t = PredictOptions::default().batch_size,
        help = PredictOptions::description("batch_size")
    ))]
    pub batch_size: usize,
    /// Drop entities scoring below this probability.
    #[cfg_attr(feature = "clap", arg(long, help = PredictOptions::description("threshold")))]
    pub threshold: Option<f32>,
    /// Return every non-`O` span instead of the best non-overlapping ones.
    #[cfg_attr(feature = "clap", arg(
        long = "overlapping",
        help = PredictOptions::description("allow_overlapping")
    ))]
    pub allow_overlapping: bool,
    /// Precision of the forward passes (see [`Precision`]).
    #[cfg_attr(feature = "clap", arg(
        long,
        default_value_t = PredictOptions::default().precision,
        help = PredictOptions::description("precision")
    ))]
    pub precision: Precision,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self {
            batch_size: Self::DEFAULT_BATCH_SIZE,
            threshold: None,
            allow_overlapping: false,
            precision: Precision::Float32,
        }
    }
}

/// One prediction setting as the engines name it: its key (`span_marker.<key>` in SQL, a
/// keyword argument in Python), what it does, and its string form.
struct Setting {
    key: &'static str,
    /// What listings of settings show (SQL's `information_schema.df_settings`).
    description: &'static str,
    /// The value as a string, which `set` reads back to the same value.
    get: fn(&PredictOptions) -> String,
    /// Reads a value given as a string, or says why it does not parse.
    set: fn(&mut PredictOptions, &str) -> std::result::Result<(), String>,
}

/// The settings, in the order of [`PredictOptions::KEYS`].
const SETTINGS: [Setting; 4] = [
    Setting {
        key: "batch_size",
        description: "Encoder samples per forward pass.",
        get: |o| o.batch_size.to_string(),
        set: |o, value| {
            o.batch_size = parse(value, "a whole number")?;
            Ok(())
        },
    },
    Setting {
        key: "threshold",
        description: "Drop entities scoring below this probability (0 keeps every entity the \
                      model finds).",
        get: |o| o.threshold.map_or_else(|| "0".into(), |t| t.to_string()),
        set: |o, value| {
            let threshold: f32 = match value.trim() {
                "" => 0.0,
                value => parse(value, "a number")?,
            };
            o.threshold = (threshold != 0.0).then_some(threshold);
            Ok(())
        },
    },
    Setting {
        key: "allow_overlapping",
        description: "Whether entities may overlap: every non-`O` span instead of the best \
                      non-overlapping ones.",
        get: |o| o.allow_overlapping.to_string(),
        set: |o, value| {
            o.allow_overlapping = parse(&value.to_ascii_lowercase(), "`true` or `false`")?;
            Ok(())
        },
    },
    Setting {
        key: "precision",
        description: "Precision of the forward passes: `fp32`; `bf16` on a CUDA device \
                      (autocast) or a CPU with bfloat16 instructions (bfloat16 linear maps where \
                      libtorch has oneDNN, autocast elsewhere); `fp16` autocast on a CUDA device; \
                      `int8` (dynamically quantised linear maps) on the CPU.",
        get: |o| o.precision.to_string(),
        set: |o, value| {
            o.precision = value.parse().map_err(|e| match e {
                Error::Config(message) => message,
                other => other.to_string(),
            })?;
            Ok(())
        },
    },
];

/// `value` (trimmed) as a `T`, or why not: "expected {what}, got '{value}' ({reason})".
fn parse<T: std::str::FromStr>(value: &str, what: &str) -> std::result::Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| format!("expected {what}, got '{value}' ({e})"))
}

fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

impl PredictOptions {
    /// The default `batch_size`.
    pub const DEFAULT_BATCH_SIZE: usize = 32;
    /// The largest `batch_size` accepted: far beyond what fits any accelerator, small enough
    /// that a mistyped number is an error rather than an allocation of terabytes.
    pub const MAX_BATCH_SIZE: usize = 1 << 16;

    /// The settings' keys (the fields' names), in the order [`settings`](Self::settings) lists
    /// them.
    pub const KEYS: [&'static str; SETTINGS.len()] = {
        let mut keys = [""; SETTINGS.len()];
        let mut i = 0;
        while i < keys.len() {
            keys[i] = SETTINGS[i].key;
            i += 1;
        }
        keys
    };

    /// The settings that engines taking settings ahead of a run (SQL's `SET`, the Polars
    /// plugin's keyword arguments) accept as given and check when prediction runs, where the
    /// device decides which values run: `SET span_marker.precision = 'int4'` succeeds and the
    /// query that reads it fails, naming the setting, as does a Polars expression given
    /// `precision="int4"` when it runs. The others' values must parse when given.
    pub const CHECKED_WHEN_RUN: [&'static str; 1] = ["precision"];

    /// What the setting `key` does, for listings of settings; `None` for an unknown key.
    pub fn description(key: &str) -> Option<&'static str> {
        setting(key).map(|s| s.description)
    }

    /// Sets `key` from its string form, as SQL's `SET` gives it: `batch_size` a whole number,
    /// `threshold` a number (`0` or nothing for none), `allow_overlapping` `true` or `false`,
    /// `precision` a name (`fp32`, `bf16`, `fp16`, `int8`). Ranges are checked by
    /// [`validate`](Self::validate); an error names the setting.
    ///
    /// ```
    /// use span_marker::PredictOptions;
    /// let mut options = PredictOptions::default();
    /// options.set("threshold", "0.5")?;
    /// assert_eq!(options.threshold, Some(0.5));
    /// let error = options.set("batch_size", "many").unwrap_err().to_string();
    /// assert!(error.contains("`batch_size`") && error.contains("many"), "{error}");
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let Some(setting) = setting(key) else {
            return Err(Error::Config(format!(
                "unknown prediction setting `{key}`; the settings are {}",
                Self::KEYS.join(", ")
            )));
        };
        (setting.set)(self, value).map_err(|message| Error::Setting {
            key: setting.key,
            message,
        })
    }

    /// Every setting as (key, string form), in [`KEYS`](Self::KEYS) order: what
    /// [`set`](Self::set) reads back to these options (`threshold` is `0` when there is none).
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.key, (s.get)(self))).collect()
    }

    /// The options that settings in their string form give (unknown keys are an error, missing
    /// ones keep their defaults), checked: an error names the setting.
    pub fn from_settings<'a>(
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        let mut options = Self::default();
        for (key, value) in settings {
            options.set(key, value)?;
        }
        options.validate()?;
        Ok(options)
    }

    /// The options that a serde source of keyed values gives (the Polars plugin's keyword
    /// arguments: missing keys keep their defaults, unknown ones are an error), checked: an
    /// error names the setting.
    ///
    /// ```
    /// use span_marker::PredictOptions;
    /// let options = PredictOptions::read(serde_json::json!({"precision": "bf16"}))?;
    /// assert_eq!(options.batch_size, PredictOptions::default().batch_size);
    /// let error = PredictOptions::read(serde_json::json!({"batch_size": "8"})).unwrap_err();
    /// assert!(error.to_string().contains("`batch_size`: invalid type"), "{error}");
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn read<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self> {
        let options: Self = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            match setting(&e.path().to_string()) {
                Some(setting) => Error::Setting {
                    key: setting.key,
                    message: e.inner().to_string(),
                },
                None => Error::Config(format!("prediction options: {}", e.inner())),
            }
        })?;
        options.validate()?;
        Ok(options)
    }

    /// Checks every option, naming the first one out of range.
    ///
    /// ```
    /// use span_marker::PredictOptions;
    /// let options = PredictOptions { batch_size: 0, ..Default::default() };
    /// let error = options.validate().unwrap_err().to_string();
    /// assert!(error.contains("`batch_size`"), "{error}");
    /// ```
    pub fn validate(&self) -> Result<()> {
        check_batch_size(self.batch_size)?;
        if let Some(t) = self.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
            return Err(Error::Setting {
                key: "threshold",
                message: format!("must be a probability between 0 and 1, got {t}"),
            });
        }
        Ok(())
    }
}

/// `batch_size` within `1..=PredictOptions::MAX_BATCH_SIZE`, or an error naming it.
pub(crate) fn check_batch_size(batch_size: usize) -> Result<()> {
    if (1..=PredictOptions::MAX_BATCH_SIZE).contains(&batch_size) {
        return Ok(());
    }
    Err(Error::Setting {
        key: "batch_size",
        message: format!(
            "must be between 1 and {}, got {batch_size}",
            PredictOptions::MAX_BATCH_SIZE
        ),
    })
}

/// One predicted entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictedEntity {
    /// The entity's text: a slice of the input text, or its words joined by single spaces.
    pub text: String,
    /// The (reduced) label, e.g. `PER`.
    pub label: String,
    /// Softmax probability of the label.
    pub score: f32,
    /// First word (inclusive).
    pub word_start: usize,
    /// Last word (exclusive).
    pub word_end: usize,
    /// First character (inclusive, in Unicode scalar values), for text input.
    pub char_start: Option<usize>,
    /// Last character (exclusive), for text input.
    pub char_end: Option<usize>,
}

/// A candidate span with its best label and that label's probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredSpan {
    pub span: Span,
    pub label: usize,
    pub score: f32,
}

/// Picks entities from scored spans (given in enumeration order) as described in the module docs.
pub fn decode(
    mut spans: Vec<ScoredSpan>,
    num_words: usize,
    outside_id: usize,
    options: &PredictOptions,
) -> Vec<ScoredSpan> {
    spans.retain(|s| s.label != outside_id && options.threshold.is_none_or(|t| s.score >= t));
    // Stable: equal scores keep enumeration order, as Python's `sorted(..., reverse=True)`.
    spans.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut taken = vec![false; num_words];
    let mut accepted = Vec::new();
    for s in spans {
        let words = s.span.start as usize..s.span.end as usize;
        if options.allow_overlapping || !taken[words.clone()].iter().any(|&t| t) {
            taken[words].fill(true);
            accepted.push(s);
        }
    }
    accepted.sort_by_key(|s| (s.span.start, s.span.end));
    accepted
}

impl SpanMarkerModel {
    /// Entities of one sentence.
    pub fn predict_one(
        &self,
        input: SentenceInput<'_>,
        options: &PredictOptions,
    ) -> Result<Vec<PredictedEntity>> {
        Ok(self
            .predict(&[input], options)?
            .pop()
            .expect("one result per input"))
    }

    /// Entities of each sentence, in input order.
    pub fn predict(
        &self,
        inputs: &[SentenceInput<'_>],
        options: &PredictOptions,
    ) -> Result<Vec<Vec<PredictedEntity>>> {
        let rows: Vec<Option<SentenceInput<'_>>> = inputs.iter().copied().map(Some).collect();
        Ok(self
            .predict_rows(&rows, None, options)?
            .into_iter()
            .map(|r| r.expect("no null rows"))
            .collect())
    }

    /// Entities per row for nullable rows (a null row gives `None`), optionally with document
    /// positions for document-level context. A row that cannot be encoded (a word longer than
    /// the model input) fails the whole call; see [`Self::predict_rows_each`] to keep going.
    pub fn predict_rows(
        &self,
        rows: &[Option<SentenceInput<'_>>],
        documents: Option<&[Option<DocumentPosition>]>,
        options: &PredictOptions,
    ) -> Result<Vec<Option<Vec<PredictedEntity>>>> {
        self.predict_batch(rows, documents, options, false)?
            .into_iter()
            .collect()
    }

    /// Like [`Self::predict_rows`], but a row that cannot be encoded gets its own error and
    /// the other rows still get their entities. Errors that concern the whole call (options,
    /// the model) are still returned as the outer error.
    pub fn predict_rows_each(
        &self,
        rows: &[Option<SentenceInput<'_>>],
        documents: Option<&[Option<DocumentPosition>]>,
        options: &PredictOptions,
    ) -> Result<Vec<RowPrediction>> {
        self.predict_batch(rows, documents, options, true)
    }

    fn predict_batch(
        &self,
        rows: &[Option<SentenceInput<'_>>],
        documents: Option<&[Option<DocumentPosition>]>,
        options: &PredictOptions,
        keep_going: bool,
    ) -> Result<Vec<RowPrediction>> {
        options.validate()?;
        if self.config().trained_with_document_context && documents.is_none() {
            tracing::warn!("this model was trained with document-level context: predictions without it may be worse");
        }
        let mut encoded = self.preprocessor().encode_with(
            rows,
            EncodeOptions {
                documents,
                keep_going,
                ..Default::default()
            },
        )?;
        let scored = self.score_spans(&encoded, options.batch_size, options.precision)?;
        let labels = self.labels();
        let mut predictions: Vec<RowPrediction> = rows
            .iter()
            .zip(&encoded.sentences)
            .zip(scored)
            .map(|((input, sentence), spans)| {
                let (Some(input), Some(sentence)) = (input.as_ref(), sentence.as_ref()) else {
                    return Ok(None);
                };
                let entities = decode(spans, sentence.num_words(), labels.outside_id(), options);
                Ok(Some(
                    entities
                        .into_iter()
                        .map(|s| entity(input, sentence, s, &labels.reduced()[s.label]))
                        .collect(),
                ))
            })
            .collect();
        for (row, error) in encoded.failed.drain(..) {
            predictions[row] = Err(error);
        }
        Ok(predictions)
    }

    /// The best label and its probability for every candidate span, per row, in enumeration
    /// order. Runs without gradients and without dropout, `batch_size` samples at a time,
    /// longest samples first so that every batch is trimmed to little more than it needs.
    pub fn score_spans(
        &self,
        encoded: &Encoded,
        batch_size: usize,
        precision: Precision,
    ) -> Result<Vec<Vec<ScoredSpan>>> {
        Ok(self.score_samples(encoded, batch_size, true, precision)?.0)
    }

    /// Scores every sample of `encoded` (in length order when `sort_by_length`, else in sample
    /// order) and returns the spans per row, with the sample-weighted mean loss when the
    /// samples carry labels.
    pub(crate) fn score_samples(
        &self,
        encoded: &Encoded,
        batch_size: usize,
        sort_by_length: bool,
        precision: Precision,
    ) -> Result<(Vec<Vec<ScoredSpan>>, Option<f64>)> {
        // Labels keep the reference's batches: the loss is its mean of batch means.
        let labelled = encoded.windows.iter().any(|w| w.labels.is_some());
        let mode = if labelled {
            Mode::Evaluate
        } else {
            Mode::Predict
        };
        let plan = ForwardPlan::new(self.device(), precision, mode)?;
        // Joined, each window's samples are scored as one (its text encoded once), at most a
        // batch of them; a sample then weighs as many as it joined.
        let samples: Vec<(SampleRef, usize)> = if plan.join_windows {
            join_windows(&encoded.samples, batch_size.max(1))
        } else {
            encoded.samples.iter().map(|s| (s.clone(), 1)).collect()
        };
        let windows = &encoded.windows;
        let mut spec = CollateSpec {
            trim_to_multiple_of: Some(8),
            ..self.preprocessor().collate_spec()
        };
        let longest = samples.iter().map(|(s, _)| s.encoder_length(windows));
        spec.total_length = longest.fold(spec.total_length, usize::max);
        // Each sample's spans get a slot range in one flat buffer, in sample order.
        let mut offsets = Vec::with_capacity(samples.len() + 1);
        offsets.push(0);
        for (sample, _) in &samples {
            offsets.push(offsets.last().copied().unwrap_or(0) + sample.spans.len());
        }
        let mut best = vec![(0usize, 0f32); offsets.last().copied().unwrap_or(0)];
        let mut order: Vec<usize> = (0..samples.len()).collect();
        if sort_by_length {
            order.sort_by_key(|&i| std::cmp::Reverse(samples[i].0.encoder_length(windows)));
        }
        // Batches of `batch_size` samples as spread: joining leaves their sizes as they were.
        let mut chunks = Vec::new();
        let mut rest = &order[..];
        while !rest.is_empty() {
            let mut weight = 0;
            let end = rest
                .iter()
                .position(|&i| {
                    weight += samples[i].1;
                    weight > batch_size
                })
                .unwrap_or(rest.len())
                .max(1);
            let (chunk, tail) = rest.split_at(end);
            chunks.push(chunk);
            rest = tail;
        }
        let (mut loss_sum, mut with_loss) = (0.0, false);
        let _no_grad = tch::no_grad_guard();
        let mut picked = Vec::new();
        for chunk in chunks {
            picked.clear();
            picked.extend(chunk.iter().map(|&i| samples[i].0.clone()));
            let batch = collate(windows, &picked, &spec, self.device())?;
            let output = self.forward_with(&batch, &plan)?;
            if let Some(loss) = &output.loss {
                let weight: usize = chunk.iter().map(|&i| samples[i].1).sum();
                loss_sum += f64::try_from(loss)? * weight as f64;
                with_loss = true;
            }
            let slots = output.logits.size()[1] as usize;
            let (scores, labels) = output.logits.softmax(-1, Kind::Float).max_dim(-1, false);
            let scores: Vec<f32> = scores.to_device(Device::Cpu).flatten(0, -1).try_into()?;
            let labels: Vec<i64> = labels.to_device(Device::Cpu).flatten(0, -1).try_into()?;
            for (k, &i) in chunk.iter().enumerate() {
                let cells = &mut best[offsets[i]..offsets[i + 1]];
                for (j, cell) in cells.iter_mut().enumerate() {
                    *cell = (labels[k * slots + j] as usize, scores[k * slots + j]);
                }
            }
        }
        let mut per_row: Vec<Vec<ScoredSpan>> = vec![Vec::new(); encoded.sentences.len()];
        for (i, (sample, _)) in samples.iter().enumerate() {
            let window = &windows[sample.window];
            let cells = &best[offsets[i]..offsets[i + 1]];
            per_row[window.row].extend(sample.spans.clone().zip(cells).map(
                |(s, &(label, score))| ScoredSpan {
                    span: window.spans[s],
                    label,
                    score,
                },
            ));
        }
        let loss = with_loss.then(|| loss_sum / encoded.samples.len().max(1) as f64);
        Ok((per_row, loss))
    }
}

fn entity(
    input: &SentenceInput<'_>,
    sentence: &TokenizedSentence,
    scored: ScoredSpan,
    label: &str,
) -> PredictedEntity {
    let (start, end) = (scored.span.start as usize, scored.span.end as usize);
    let (text, chars) = match (input, &sentence.word_chars) {
        (SentenceInput::Text(text), Some(word_chars)) => {
            let (char_start, char_end) = (word_chars[start].0, word_chars[end - 1].1);
            let slice: String = text
                .chars()
                .skip(char_start)
                .take(char_end - char_start)
                .collect();
            (slice, Some((char_start, char_end)))
        }
        (SentenceInput::Words(words), _) => (words[start..end].join(" "), None),
        (SentenceInput::Text(_), None) => unreachable!("text input always has character offsets"),
    };
    PredictedEntity {
        text,
        label: label.to_owned(),
        score: scored.score,
        word_start: start,
        word_end: end,
        char_start: chars.map(|c| c.0),
        char_end: chars.map(|c| c.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(start: u32, end: u32, label: usize, score: f32) -> ScoredSpan {
        ScoredSpan {
            span: Span::new(start, end),
            label,
            score,
        }
    }

    #[test]
    fn every_setting_reads_back_its_string_form_and_serde_agrees_with_default() {
        let options = PredictOptions {
            batch_size: 7,
            threshold: Some(0.9),
            allow_overlapping: true,
            precision: Precision::Int8,
        };
        let settings = options.settings();
        let keys: Vec<&str> = settings.iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, PredictOptions::KEYS);
        let again =
            PredictOptions::from_settings(settings.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(again, options);
        for key in PredictOptions::KEYS {
            assert!(PredictOptions::description(key).is_some_and(|d| !d.is_empty()));
        }
        // Serde: the same keys, missing ones at their defaults, values as the string forms.
        let json = serde_json::to_value(&options).unwrap();
        assert_eq!(json["precision"], "int8");
        assert_eq!(PredictOptions::read(&json).unwrap(), options);
        let empty = serde_json::json!({});
        assert_eq!(
            PredictOptions::read(&empty).unwrap(),
            PredictOptions::default()
        );
        assert_eq!(
            PredictOptions::from_settings(
                PredictOptions::default()
                    .settings()
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
            )
            .unwrap(),
            PredictOptions::default()
        );
        // `0` or nothing is no threshold, as SQL writes it.
        let mut options = PredictOptions::default();
        options.set("threshold", "0.5").unwrap();
        assert_eq!(options.threshold, Some(0.5));
        options.set("threshold", "0").unwrap();
        assert_eq!(options.threshold, None);
        options.set("allow_overlapping", "TRUE").unwrap();
        assert!(options.allow_overlapping);
    }

    #[test]
    fn errors_name_the_setting() {
        let mut options = PredictOptions::default();
        for (key, value, expected) in [
            ("batch_size", "many", "expected a whole number, got 'many'"),
            ("threshold", "high", "expected a number"),
            ("allow_overlapping", "maybe", "`true` or `false`"),
            ("precision", "int4", "unknown precision \"int4\""),
        ] {
            let error = options.set(key, value).unwrap_err().to_string();
            assert!(
                error.contains(&format!("invalid setting `{key}`")) && error.contains(expected),
                "{error}"
            );
        }
        let error = options.set("nope", "1").unwrap_err().to_string();
        assert!(
            error.contains("`nope`") && error.contains("batch_size, threshold"),
            "{error}"
        );
        // Ranges are checked by `validate`, which `from_settings` and `read` run.
        let error = PredictOptions::from_settings([("threshold", "2")]).unwrap_err();
        assert!(error.to_string().contains("`threshold`"), "{error}");
        for (json, expected) in [
            (
                serde_json::json!({"batch_size": 0}),
                "`batch_size`: must be between 1 and",
            ),
            (
                serde_json::json!({"batch_size": -1}),
                "`batch_size`: invalid value",
            ),
            (
                serde_json::json!({"threshold": "high"}),
                "`threshold`: invalid type",
            ),
            (
                serde_json::json!({"precision": "fp64"}),
                "`precision`: unknown precision",
            ),
        ] {
            let error = PredictOptions::read(&json).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        let error = PredictOptions::read(serde_json::json!({"batch": 8})).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `batch`"),
            "{error}"
        );
    }

    #[test]
    fn decoding_is_greedy_by_score_and_sorted_by_position() {
        let spans = vec![
            scored(0, 1, 1, 0.6),
            scored(0, 2, 2, 0.9),
            scored(1, 2, 1, 0.95),
            scored(2, 3, 0, 0.99), // O
            scored(3, 4, 3, 0.5),
        ];
        let got = decode(spans.clone(), 4, 0, &PredictOptions::default());
        // (1,2) wins word 1, which blocks (0,2); (0,1) is then free.
        assert_eq!(got, [spans[0], spans[2], spans[4]]);

        let thresholded = PredictOptions {
            threshold: Some(0.55),
            ..Default::default()
        };
        assert_eq!(
            decode(spans.clone(), 4, 0, &thresholded),
            [spans[0], spans[2]]
        );

        let overlapping = PredictOptions {
            allow_overlapping: true,
            ..Default::default()
        };
        assert_eq!(
            decode(spans.clone(), 4, 0, &overlapping),
            [spans[0], spans[1], spans[2], spans[4]]
        );
    }

    #[test]
    fn a_window_scored_as_one_sample_scores_as_its_samples() {
        let model = SpanMarkerModel::bundled().unwrap();
        let text = "Peter Blackburn , who joined the European Commission in Brussels after years \
                    at the Bank of England in London , said on Thursday that German and French \
                    officials had met their British counterparts in Paris and Berlin to discuss \
                    the dispute over beef exports from Scotland and Wales .";
        let words: Vec<&str> = text.split(' ').collect();
        let rows = [Some(SentenceInput::Words(&words))];
        let unlabelled = model.preprocessor().encode(&rows).unwrap();
        // The same sentence with (any) labels: those are scored sample by sample.
        let entities = [vec![crate::labels::Entity::new(1, 0, 2)]];
        let labelled = model
            .preprocessor()
            .encode_with(
                &rows,
                EncodeOptions {
                    entities: Some(&entities),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(unlabelled.samples.len() >= 2, "{:?}", unlabelled.samples);
        assert_eq!(join_windows(&unlabelled.samples, 32).len(), 1);
        let score = |encoded| {
            model
                .score_samples(encoded, 32, true, Precision::Float32)
                .unwrap()
                .0
                .remove(0)
        };
        let (joined, apart) = (score(&unlabelled), score(&labelled));
        assert_eq!(joined.len(), apart.len());
        for (a, b) in joined.iter().zip(&apart) {
            assert_eq!((a.span, a.label), (b.span, b.label));
            assert!((a.score - b.score).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn equal_scores_keep_enumeration_order() {
        let spans = vec![scored(0, 2, 1, 0.5), scored(1, 2, 2, 0.5)];
        assert_eq!(
            decode(spans.clone(), 2, 0, &PredictOptions::default()),
            [spans[0]]
        );
    }
}
