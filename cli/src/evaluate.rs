//! `span-marker evaluate`: metrics of a model on annotated data, as JSON.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use datafusion::prelude::SessionContext;
use span_marker::device::Precision;
use span_marker::train::evaluate;
use span_marker::PredictOptions;
use span_marker_udfs::sources::TableSource;

use crate::args::ModelArgs;
use crate::CliResult;

#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Annotated data.
    #[arg(long)]
    data: PathBuf,
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
    let mut source = TableSource::file(args.data);
    source.format = args
        .format
        .map(|f| serde_json::from_value(serde_json::Value::String(f.to_lowercase())))
        .transpose()
        .map_err(|e| format!("--format: {e}"))?;
    source.tokens_column = args.tokens_column;
    source.tags_column = args.tags_column;
    let model = args.model.load()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let rows = runtime.block_on(source.read(&SessionContext::new()))?;
    let dataset = rows.to_dataset(model.labels())?;
    let evaluation = evaluate(&model, &dataset, "test", args.batch_size, args.precision)?;
    writeln!(
        span_marker_cli::stdout(),
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(evaluation.to_record()))?
    )?;
    Ok(())
}
