//! `span-marker train`: a pipeline file end to end, or a model trained on CoNLL-style files or a
//! Hugging Face Hub dataset.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use span_marker::train::TrainingArguments;
use span_marker::ModelSettings;
use span_marker_udfs::dataset::AnnotatedRows;
use span_marker_udfs::pipeline::Pipeline;
use span_marker_udfs::sources::{Format, TableSource};
use span_marker_udfs::training::{self, ModelSpec};

use crate::args::DatasetArgs;
use crate::CliResult;

#[derive(Args)]
pub struct TrainArgs {
    /// A pipeline file (TOML; see `pipelines/README.md`).
    #[arg(conflicts_with_all = ["train", "eval", "test", "model", "labels", "args", "ModelSettings", "DatasetArgs"])]
    pipeline: Option<PathBuf>,
    /// Training data (CoNLL: `word TAG` per line).
    #[arg(long, required_unless_present_any = ["pipeline", "dataset"], conflicts_with = "dataset")]
    train: Option<PathBuf>,
    /// Evaluation data (evaluated as the arguments' `eval_strategy` says, and at the end).
    #[arg(long, conflicts_with = "dataset")]
    eval: Option<PathBuf>,
    /// Test data, evaluated after training with the `test` prefix.
    #[arg(long, conflicts_with = "dataset")]
    test: Option<PathBuf>,
    /// Train on a Hub dataset (its labels from its `ClassLabel` feature).
    #[command(flatten)]
    dataset: DatasetArgs,
    /// With --dataset: the split to train on.
    #[arg(long, requires = "dataset", default_value = "train")]
    train_split: String,
    /// With --dataset: the split to evaluate on (e.g. `validation`); none when left out.
    #[arg(long, requires = "dataset")]
    eval_split: Option<String>,
    /// With --dataset: the split to test on after training (e.g. `test`).
    #[arg(long, requires = "dataset")]
    test_split: Option<String>,
    /// With --dataset: train on the first N rows of the split only.
    #[arg(long, requires = "dataset", value_parser = clap::value_parser!(u64).range(1..))]
    train_rows: Option<u64>,
    /// With --dataset: evaluate on the first N rows of the split only.
    #[arg(long, requires = "eval_split", value_parser = clap::value_parser!(u64).range(1..))]
    eval_rows: Option<u64>,
    /// A plain encoder or a SpanMarker model to fine-tune further: a directory, a Hugging Face
    /// id (from the local cache), or `bundled`.
    #[arg(long, required_unless_present = "pipeline")]
    model: Option<String>,
    /// Comma-separated label list for a new model; default: the tags of the training data.
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    /// Training arguments (JSON, Hugging Face names); the flags below override it.
    #[arg(long)]
    args: Option<PathBuf>,
    #[arg(long)]
    output_dir: Option<PathBuf>,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    num_train_epochs: Option<f64>,
    /// Continue from a checkpoint directory, or `latest` in the output dir.
    #[arg(long, conflicts_with = "overwrite_output_dir")]
    resume: Option<String>,
    /// Train into an output dir that holds a finished run (a model or checkpoints), removing
    /// its checkpoints (refused otherwise).
    #[arg(long)]
    overwrite_output_dir: bool,
    /// Settings of a new model.
    #[command(flatten)]
    settings: ModelSettings,
}

pub fn run(args: TrainArgs) -> CliResult {
    match &args.pipeline {
        Some(file) => train_pipeline(file.clone(), args),
        None => train_conll(args),
    }
}

/// The command-line overrides of the training arguments.
fn override_arguments(training: &mut TrainingArguments, args: &TrainArgs) {
    if let Some(dir) = &args.output_dir {
        training.output_dir = dir.clone();
    }
    if args.max_steps.is_some() {
        training.max_steps = args.max_steps;
    }
    if let Some(epochs) = args.num_train_epochs {
        training.num_train_epochs = epochs;
    }
    if args.overwrite_output_dir {
        training.overwrite_output_dir = true;
    }
}

fn train_pipeline(file: PathBuf, args: TrainArgs) -> CliResult {
    let mut pipeline = Pipeline::from_file(&file)?;
    override_arguments(&mut pipeline.training, &args);
    pipeline.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = runtime.block_on(pipeline.run(args.resume.as_deref()))?;
    let metrics = serde_json::to_string_pretty(&report.metrics)?;
    span_marker::atomic::write(
        &report.output_dir.join("pipeline_metrics.json"),
        metrics.as_bytes(),
    )?;
    writeln!(span_marker_cli::stdout(), "{metrics}")?;
    span_marker_cli::note!(
        "model, metrics and training curves saved to {}",
        report.output_dir.display()
    );
    note_time(&mut report);
    Ok(())
}

/// `time: <phases>; <FLOPs> model FLOPs, <rate> GFLOP/s over the run` on standard error, the
/// start-up being all of the process's time until now that no other phase counts (starting,
/// reading the data, loading the model).
fn note_time(report: &mut training::TrainReport) {
    let others = report.phases.total() - report.phases.startup;
    report.phases.startup = (span_marker_cli::seconds_since_start() - others).max(0.0);
    let seconds = report.phases.total().max(1e-9);
    span_marker_cli::note!(
        "time: {}; {:.3e} model FLOPs (matrix products as run, backward as twice the forward), \
         {:.1} GFLOP/s over the run",
        report.phases,
        report.model_flops,
        report.model_flops / seconds / 1e9
    );
}

/// `train` without a pipeline file: CoNLL files and flags.
fn train_conll(args: TrainArgs) -> CliResult {
    let mut training = match &args.args {
        Some(path) => TrainingArguments::from_file(path)?,
        None => TrainingArguments::default(),
    };
    override_arguments(&mut training, &args);
    let runtime = tokio::runtime::Runtime::new()?;
    let ctx = span_marker_udfs::store::session_context();
    let read =
        |source: Option<TableSource>| -> Result<Option<AnnotatedRows>, span_marker_udfs::Error> {
            source
                .map(|source| runtime.block_on(source.read(&ctx)))
                .transpose()
        };
    let conll = |path: Option<PathBuf>| {
        path.map(|path| TableSource {
            format: Some(Format::Conll),
            ..TableSource::file(path)
        })
    };
    let rows = |rows: Option<u64>| rows.map(|r| r as usize);
    let (train, eval, test) = match &args.dataset.dataset {
        Some(_) => (
            args.dataset
                .source(&args.train_split, rows(args.train_rows)),
            args.eval_split
                .as_ref()
                .and_then(|split| args.dataset.source(split, rows(args.eval_rows))),
            args.test_split
                .as_ref()
                .and_then(|split| args.dataset.source(split, None)),
        ),
        None => (conll(args.train), conll(args.eval), conll(args.test)),
    };
    let (Some(train), Some(encoder)) = (read(train)?, args.model) else {
        return Err(
            "--train (or --dataset) and --model are required without a pipeline file".into(),
        );
    };
    let (eval, test) = (read(eval)?, read(test)?);
    let spec = ModelSpec {
        encoder,
        labels: args.labels,
        settings: args.settings,
    };
    let mut report = training::run(spec, training, train, eval, test, args.resume)?;
    writeln!(
        span_marker_cli::stdout(),
        "{}",
        serde_json::Value::Object(std::mem::take(&mut report.metrics))
    )?;
    span_marker_cli::note!("model saved to {}", report.output_dir.display());
    note_time(&mut report);
    Ok(())
}
