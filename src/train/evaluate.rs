//! Evaluation: loss and entity scores of a model on annotated sentences.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::device::Precision;
use crate::error::{Error, Result};
use crate::labels::Entity;
use crate::metrics::{score_entities, EntityScores};
use crate::model::SpanMarkerModel;
use crate::predict::{decode, PredictOptions};
use crate::preprocess::{EncodeOptions, Encoded};
use crate::tokenizer::SentenceInput;
use crate::train::data::NerDataset;

/// A dataset encoded for a model, with its gold entities.
pub(crate) struct Prepared {
    pub encoded: Encoded,
    pub gold: Vec<Vec<Entity>>,
    pub num_words: Vec<usize>,
}

/// Encodes annotated sentences, checking them first: an empty dataset, tags of the wrong
/// length and tag ids outside the label list are errors naming the split and row. Logs the
/// entity coverage report.
pub(crate) fn prepare(model: &SpanMarkerModel, data: &NerDataset, split: &str) -> Result<Prepared> {
    if data.is_empty() {
        return Err(Error::Config(format!("the {split} dataset is empty")));
    }
    let preprocessor = model.preprocessor();
    let words: Vec<Vec<&str>> = data
        .examples
        .iter()
        .map(|e| e.tokens.iter().map(String::as_str).collect())
        .collect();
    let word_refs: Vec<&[&str]> = words.iter().map(Vec::as_slice).collect();
    let tags: Vec<Vec<i64>> = data.examples.iter().map(|e| e.tags.clone()).collect();
    let gold = preprocessor
        .entities_from_tags(&word_refs, &tags)
        .map_err(|e| Error::Config(format!("{split} dataset: {e}")))?;
    let documents: Option<Vec<_>> = data
        .examples
        .iter()
        .any(|e| e.document.is_some())
        .then(|| data.examples.iter().map(|e| e.document.clone()).collect());
    let rows: Vec<Option<SentenceInput<'_>>> = words
        .iter()
        .map(|w| Some(SentenceInput::Words(w)))
        .collect();
    let encoded = preprocessor.encode_with(
        &rows,
        EncodeOptions {
            entities: Some(&gold),
            documents: documents.as_deref(),
            split: Some(split),
            keep_going: false,
        },
    )?;
    Ok(Prepared {
        encoded,
        gold,
        num_words: words.iter().map(Vec::len).collect(),
    })
}

/// The scalar metrics of an evaluation, as named in its record without the prefix: the
/// values `metric_for_best_model` can name.
pub const METRICS: [&str; 11] = [
    "loss",
    "overall_precision",
    "overall_recall",
    "overall_f1",
    "overall_accuracy",
    "reference_overall_precision",
    "reference_overall_recall",
    "reference_overall_f1",
    "reference_overall_accuracy",
    "runtime",
    "samples_per_second",
];

/// Results of one evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `eval`, `test`, ...
    pub prefix: String,
    /// Sample-weighted mean cross-entropy.
    pub loss: f64,
    /// Against every gold entity.
    pub scores: EntityScores,
    /// As the reference scores: gold entities longer than `entity_max_length` left out.
    pub reference_scores: EntityScores,
    pub runtime_seconds: f64,
    pub samples_per_second: f64,
}

impl Evaluation {
    /// Flat record with the reference's keys: `{prefix}_loss`, `{prefix}_overall_f1`, per-label
    /// dicts `{prefix}_PER`, and `{prefix}_reference_overall_*` for the reference-compatible
    /// figures.
    pub fn to_record(&self) -> Map<String, Value> {
        let p = &self.prefix;
        let mut record = Map::new();
        record.insert(format!("{p}_loss"), json!(self.loss));
        for (name, scores) in [
            ("overall", &self.scores),
            ("reference_overall", &self.reference_scores),
        ] {
            record.insert(format!("{p}_{name}_precision"), json!(scores.precision));
            record.insert(format!("{p}_{name}_recall"), json!(scores.recall));
            record.insert(format!("{p}_{name}_f1"), json!(scores.f1));
            record.insert(format!("{p}_{name}_accuracy"), json!(scores.accuracy));
        }
        for (label, score) in &self.scores.per_label {
            record.insert(format!("{p}_{label}"), json!(score));
        }
        record.insert(format!("{p}_runtime"), json!(self.runtime_seconds));
        record.insert(
            format!("{p}_samples_per_second"),
            json!(self.samples_per_second),
        );
        record
    }

    /// A value of [`to_record`](Self::to_record) by key.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.to_record().get(key).and_then(Value::as_f64)
    }
}

/// Evaluates `model` on `data` in batches of `batch_size`, its forward passes in `precision`;
/// `prefix` names the metrics.
pub fn evaluate(
    model: &SpanMarkerModel,
    data: &NerDataset,
    prefix: &str,
    batch_size: usize,
    precision: Precision,
) -> Result<Evaluation> {
    crate::predict::check_batch_size(batch_size)?;
    let start = Instant::now();
    let split = if prefix == "eval" {
        "evaluation"
    } else {
        prefix
    };
    let prepared = prepare(model, data, split)?;
    evaluate_prepared(model, &prepared, prefix, batch_size, precision, start)
}

pub(crate) fn evaluate_prepared(
    model: &SpanMarkerModel,
    prepared: &Prepared,
    prefix: &str,
    batch_size: usize,
    precision: Precision,
    start: Instant,
) -> Result<Evaluation> {
    // Sample order, as the reference batches evaluation data (the loss depends on batching).
    let (per_row, loss) = model.score_samples(&prepared.encoded, batch_size, false, precision)?;
    let samples = prepared.encoded.samples.len();
    let labels = model.labels();
    let options = PredictOptions::default();
    let predicted: Vec<Vec<Entity>> = per_row
        .into_iter()
        .zip(&prepared.num_words)
        .map(|(spans, &n)| {
            decode(spans, n, labels.outside_id(), &options)
                .into_iter()
                .map(|s| Entity::new(s.label, s.span.start as usize, s.span.end as usize))
                .collect()
        })
        .collect();
    let e = model.config().settings.entity_max_length;
    let reachable: Vec<Vec<Entity>> = prepared
        .gold
        .iter()
        .map(|g| g.iter().copied().filter(|x| x.len() <= e).collect())
        .collect();
    let names = labels.reduced();
    let runtime = start.elapsed().as_secs_f64();
    Ok(Evaluation {
        prefix: prefix.to_owned(),
        loss: loss.unwrap_or(0.0),
        scores: score_entities(&prepared.gold, &predicted, &prepared.num_words, names),
        reference_scores: score_entities(&reachable, &predicted, &prepared.num_words, names),
        runtime_seconds: runtime,
        samples_per_second: samples as f64 / runtime.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_list_is_the_records_numbers() {
        let scores = EntityScores {
            precision: 0.5,
            recall: 0.5,
            f1: 0.5,
            accuracy: 0.9,
            per_label: Default::default(),
        };
        let evaluation = Evaluation {
            prefix: "eval".into(),
            loss: 0.1,
            scores: scores.clone(),
            reference_scores: scores,
            runtime_seconds: 1.0,
            samples_per_second: 10.0,
        };
        let mut numbers: Vec<String> = evaluation
            .to_record()
            .into_iter()
            .filter(|(_, value)| value.is_number())
            .map(|(key, _)| key.trim_start_matches("eval_").to_owned())
            .collect();
        numbers.sort();
        let mut listed: Vec<String> = METRICS.iter().map(|m| m.to_string()).collect();
        listed.sort();
        assert_eq!(numbers, listed);
    }
}
