//! `span-marker evaluate`: metrics of a model on annotated data, as JSON.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use span_marker::device::Precision;
use span_marker::train::evaluate;
use span_marker::PredictOptions;
use span_marker_udfs::sources::TableSource;

use crate::args::{DatasetArgs, ModelArgs};
use crate::CliResult;

#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Annotated data.
    #[arg(long, required_unless_present = "dataset", conflicts_with = "dataset")]
    data: Option<PathBuf>,
    /// Evaluate on a split of a Hub dataset.
    #[command(flatten)]
    dataset: DatasetArgs,
    /// With --dataset: the split.
    #[arg(long, requires = "dataset", default_value = "test")]
    split: String,
    /// Only the first N rows.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rows: Option<u64>,
    /// `parquet`, `csv`, `json` or `conll`; default: from the extension.
    #[arg(long)]
    format: Option<String>,
    /// The list-of-words column (tables).
    #[arg(long, default_value = "tokens")]
    tokens_column: String,
    /// The tags column: ids into the model's labels or tag strings (tables).
    #[arg(long, default_value = "ner_tags")]
    tags_column: String,
    // `predict`'s `--batch-size` and `--precision` (`PredictOptions`' defaults and descriptions):
    // evaluation decodes as training does, so the other prediction options do not apply.
    #[arg(
        long,
        default_value_t = PredictOptions::default().batch_size,
        help = PredictOptions::description("batch_size")
    )]
    batch_size: usize,
    #[arg(
        long,
        default_value_t = PredictOptions::default().precision,
        help = PredictOptions::description("precision")
    )]
    precision: Precision,
}

pub fn run(args: EvaluateArgs) -> CliResult {
    let rows = args.rows.map(|r| r as usize);
    let mut source = match (args.dataset.source(&args.split, rows), args.data) {
        (Some(source), _) => source,
        (None, Some(path)) => TableSource {
            rows,
            ..TableSource::file(path)
        },
        (None, None) => return Err("give --data or --dataset".into()),
    };
    source.format = args
        .format
        .map(|f| serde_json::from_value(serde_json::Value::String(f.to_lowercase())))
        .transpose()
        .map_err(|e| format!("--format: {e}"))?;
    source.tokens_column = args.tokens_column;
    source.tags_column = args.tags_column;
    let model = args.model.load()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let rows = runtime.block_on(source.read(&span_marker_udfs::store::session_context()))?;
    let dataset = rows.to_dataset(model.labels())?;
    let evaluation = evaluate(&model, &dataset, "test", args.batch_size, args.precision)?;
    writeln!(
        span_marker_cli::stdout(),
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(evaluation.to_record()))?
    )?;
    Ok(())
}
