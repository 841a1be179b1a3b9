//! Prediction: sentences in, entities out.
//!
//! Every candidate span gets a softmax score and its best label; spans are then accepted
//! greedily by descending score (ties keep enumeration order) as long as they are not `O` and
//! none of their words is taken, and returned sorted by position. This is the reference's
//! decoding, with two additions: an optional score threshold and optional overlapping output.
//! Sentences longer than the model input are encoded in windows and decoded as one sentence.

use serde::Serialize;
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

/// Options for [`SpanMarkerModel::predict`]: the one definition of the prediction settings and
/// their defaults, used by the engine functions' settings and (with the `clap` feature) as the
/// command line's `--batch-size`, `--threshold`, `--overlapping` and `--precision`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct PredictOptions {
    /// Samples per forward pass.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PredictOptions::DEFAULT_BATCH_SIZE))]
    pub batch_size: usize,
    /// Drop entities scoring below this probability.
    #[cfg_attr(feature = "clap", arg(long))]
    pub threshold: Option<f32>,
    /// Return every non-`O` span instead of the best non-overlapping ones.
    #[cfg_attr(feature = "clap", arg(long = "overlapping"))]
    pub allow_overlapping: bool,
    /// Precision of the forward passes: `fp32`; `bf16` on a CUDA device (autocast) or a CPU
    /// with bfloat16 instructions (bfloat16 linear maps where libtorch has oneDNN, autocast
    /// elsewhere); `fp16` autocast on a CUDA device;
    /// `int8` (dynamically quantised linear maps) on the CPU.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Precision::Float32))]
    pub precision: Precision,
}

impl PredictOptions {
    /// The default `batch_size`.
    pub const DEFAULT_BATCH_SIZE: usize = 32;
    /// The largest `batch_size` accepted: far beyond what fits any accelerator, small enough
    /// that a mistyped number is an error rather than an allocation of terabytes.
    pub const MAX_BATCH_SIZE: usize = 1 << 16;

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
            group_first_layer: plan.distinct_first_layer,
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
