//! One training run from annotated rows, shared by pipeline files, the SQL table function and
//! Polars: build the model from an encoder (or continue a SpanMarker model), train, evaluate,
//! save, and report the metrics.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{Map, Value};
use span_marker::model::LoadOptions;
use span_marker::train::{NerDataset, PhaseTimes, Trainer, TrainingArguments};
use span_marker::{Labels, ModelSettings, SpanMarkerModel};

use crate::dataset::{resolve_labels, AnnotatedRows};
use crate::error::{Error, Result};

/// The model to train: its encoder, labels and SpanMarker settings (`[model]` in a pipeline
/// file, `model` in `span_marker_train`'s options; the settings' keys sit beside `encoder`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A plain encoder (directory or Hugging Face id) or a SpanMarker model (or `bundled`) to
    /// fine-tune further.
    pub encoder: String,
    /// The label list; when absent, taken from the string tags of the data.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Settings of a new model (a SpanMarker model keeps its own).
    #[serde(flatten)]
    pub settings: ModelSettings,
}

/// What a training run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Where the model was saved.
    pub output_dir: std::path::PathBuf,
    /// Training metrics (`train_loss`, `train_runtime`, ...), the last `eval_*` and `test_*`.
    pub metrics: Map<String, Value>,
    /// Where the time went: `startup` is the checks and the model's loading here, `evaluation`
    /// includes the final evaluations.
    pub phases: PhaseTimes,
    /// The training steps' matrix-product operations (`TrainOutput::model_flops`).
    pub model_flops: f64,
}

/// Trains `spec` on `train`, evaluating on `eval` as the arguments say and at the end, and on
/// `test` at the end,
/// and saves the model to `args.output_dir`. `resume` is `latest` or a checkpoint directory.
/// Runs on the model thread (see [`crate::model`]), so that a process that trains and predicts
/// keeps one OpenMP team; predictions in the same process wait while it trains.
pub fn run(
    spec: ModelSpec,
    args: TrainingArguments,
    train: AnnotatedRows,
    eval: Option<AnnotatedRows>,
    test: Option<AnnotatedRows>,
    resume: Option<String>,
) -> Result<TrainReport> {
    crate::model::on_model_thread(move || {
        run_here(
            &spec,
            args,
            &train,
            eval.as_ref(),
            test.as_ref(),
            resume.as_deref(),
        )
    })?
}

/// [`run`] on the calling thread.
fn run_here(
    spec: &ModelSpec,
    args: TrainingArguments,
    train: &AnnotatedRows,
    eval: Option<&AnnotatedRows>,
    test: Option<&AnnotatedRows>,
    resume: Option<&str>,
) -> Result<TrainReport> {
    let started = Instant::now();
    let splits: Vec<&AnnotatedRows> = [Some(train), eval, test].into_iter().flatten().collect();
    let labels = resolve_labels(spec.labels.as_deref(), &splits)?;
    // Check every split against the labels before any weights are loaded.
    let train_set = train.to_dataset(&labels)?;
    let eval_set = eval.map(|e| e.to_dataset(&labels)).transpose()?;
    let test_set = test.map(|t| t.to_dataset(&labels)).transpose()?;
    args.validate().map_err(span_marker::Error::Config)?;
    if resume.is_none() {
        // Before the encoder is loaded (or downloaded) and the Hub repository made.
        span_marker::train::check_output_dir(&args)?;
    }

    let options = LoadOptions {
        labels: Some(labels.original().to_vec()),
        settings: spec.settings.clone(),
        ..Default::default()
    };
    // A new model's head and marker embeddings are random: seed them like the run.
    tch::manual_seed(args.seed as i64);
    let mut model = SpanMarkerModel::from_pretrained_with(&spec.encoder, &options)?;
    // A SpanMarker model keeps its own label list, in its own order (the one given is ignored):
    // the tags become ids into it, by name.
    let to_model = |set: NerDataset| to_labels(set, &labels, model.labels(), &spec.encoder);
    let train_set = to_model(train_set)?;
    let eval_set = eval_set.map(to_model).transpose()?;
    let test_set = test_set.map(to_model).transpose()?;
    let output_dir = args.output_dir.clone();
    let mut trainer = Trainer::new(&mut model, args)?;
    let startup = started.elapsed().as_secs_f64();
    let output = trainer.train(&train_set, eval_set.as_ref(), resume)?;
    let mut metrics = output.metrics;
    let model_flops = output.model_flops;
    let mut phases = PhaseTimes {
        startup,
        ..output.phases
    };
    // The final model on the evaluation data, whatever the evaluation schedule was.
    phases.time(
        |p| &mut p.evaluation,
        || -> Result<()> {
            if let Some(eval_set) = &eval_set {
                metrics.extend(trainer.evaluate(eval_set, "eval")?.to_record());
            }
            if let Some(test_set) = test_set {
                metrics.extend(trainer.evaluate(&test_set, "test")?.to_record());
            }
            Ok(())
        },
    )?;
    Ok(TrainReport {
        output_dir,
        metrics,
        phases,
        model_flops,
    })
}

/// `set`, whose tags are ids into `from`, with ids into `to` instead (the same tags by name).
fn to_labels(mut set: NerDataset, from: &Labels, to: &Labels, model: &str) -> Result<NerDataset> {
    if from.original() == to.original() {
        return Ok(set);
    }
    let ids: Vec<Option<i64>> = from
        .original()
        .iter()
        .map(|tag| to.tag_id(tag).map(|id| id as i64))
        .collect();
    for example in &mut set.examples {
        for tag in &mut example.tags {
            let name = &from.original()[*tag as usize];
            *tag = ids[*tag as usize].ok_or_else(|| {
                Error::file(
                    model,
                    format!(
                        "the data's tag {name:?} is not among the model's labels {:?}",
                        to.original()
                    ),
                )
            })?;
        }
    }
    Ok(set)
}
