//! The commands backed by the engine layer: `annotate`, `sql`, `train` (pipelines and CoNLL
//! files) and `evaluate`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::print_batches;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::SessionContext;
use span_marker::device::{parse_device, Precision};
use span_marker::train::{evaluate as evaluate_model, TrainingArguments};
use span_marker::{LoadOptions, PredictOptions, SpanMarkerModel};
use span_marker_udfs::annotate::{annotate as annotate_corpus, AnnotateOptions, InputColumn};
use span_marker_udfs::dataset::AnnotatedRows;
use span_marker_udfs::pipeline::Pipeline;
use span_marker_udfs::sources::Format;
use span_marker_udfs::sources::TableSource;
use span_marker_udfs::training::{self, ModelSpec};
use span_marker_udfs::{SharedModel, BUNDLED_MODEL};

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Sentences of the bundled sample corpus, one per line.
const SAMPLE_CORPUS: &str = include_str!("../../../../examples/data/sample-corpus.txt");

#[derive(Args)]
pub struct AnnotateArgs {
    /// A SpanMarker model directory or Hugging Face id, or `bundled`.
    #[arg(long, default_value = BUNDLED_MODEL)]
    model: String,
    /// The Parquet corpus.
    #[arg(long, required_unless_present = "sample")]
    input: Option<PathBuf>,
    /// Where the annotated corpus goes (all input columns plus the entity column).
    #[arg(long, required_unless_present = "sample")]
    output: Option<PathBuf>,
    /// The column of raw text.
    #[arg(long, conflicts_with = "tokens_column")]
    text_column: Option<String>,
    /// The column of words (List<Utf8>); the default when neither is given is `tokens`.
    #[arg(long)]
    tokens_column: Option<String>,
    /// Name of the added column.
    #[arg(long, default_value = "entities")]
    output_column: String,
    /// Rows per chunk: the unit of progress and of resumption.
    #[arg(long, default_value_t = 1024)]
    chunk_rows: usize,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `fp32`, or `bf16`/`fp16` autocast on a CUDA device.
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Stop at the first row that cannot be annotated instead of writing NULL for it.
    #[arg(long)]
    strict: bool,
    /// Rows printed from the output when done.
    #[arg(long, default_value_t = 5)]
    show: usize,
    /// Annotate the bundled sample corpus (to `sample-entities.parquet` unless --output).
    #[arg(long, conflicts_with_all = ["input", "text_column", "tokens_column"])]
    sample: bool,
}

pub fn annotate(args: AnnotateArgs) -> CliResult {
    let (input, column) = if args.sample {
        (write_sample_corpus()?, InputColumn::Text("text".into()))
    } else {
        let column = match (args.text_column, args.tokens_column) {
            (Some(text), _) => InputColumn::Text(text),
            (None, tokens) => InputColumn::Tokens(tokens.unwrap_or_else(|| "tokens".into())),
        };
        (args.input.expect("clap requires --input"), column)
    };
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from("sample-entities.parquet"));
    let model = SharedModel::load(&args.model, &args.device)?;
    let mut options = AnnotateOptions::new(&input, &output, column);
    options.output_column = args.output_column.clone();
    options.chunk_rows = args.chunk_rows;
    options.strict = args.strict;
    options.predict = PredictOptions {
        batch_size: args.batch_size,
        precision: args.precision,
        ..Default::default()
    };
    let report = annotate_corpus(&model, &options)?;
    eprintln!(
        "annotated {} rows into {} in {:.1}s{}{}",
        report.rows,
        output.display(),
        report.elapsed.as_secs_f64(),
        if report.resumed_rows > 0 {
            format!(" ({} done by an earlier run)", report.resumed_rows)
        } else {
            String::new()
        },
        if report.failed.is_empty() {
            String::new()
        } else {
            format!(
                "; {} rows could not be annotated (NULL), first: row {}: {}",
                report.failed.len(),
                report.failed[0].0,
                report.failed[0].1
            )
        }
    );
    show_entities(&output, &options, args.show)
}

/// Writes the bundled sample corpus as Parquet (a `text` column) to the temp dir, once.
fn write_sample_corpus() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!(
        "span-marker-sample-corpus-{}.parquet",
        env!("CARGO_PKG_VERSION")
    ));
    if path.is_file() {
        return Ok(path);
    }
    let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
    let lines: Vec<&str> = SAMPLE_CORPUS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let texts = StringArray::from(lines);
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(texts)])?;
    let temp = tempfile::NamedTempFile::new_in(std::env::temp_dir())?;
    let mut writer = ArrowWriter::try_new(temp.reopen()?, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    temp.persist(&path)?;
    Ok(path)
}

/// Prints the first `rows` rows of an annotated file: the sentence, then its entities.
fn show_entities(output: &Path, options: &AnnotateOptions, rows: usize) -> CliResult {
    if rows == 0 {
        return Ok(());
    }
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(output)?)?
        .with_batch_size(rows)
        .with_limit(rows)
        .build()?;
    for batch in reader {
        let batch = batch?;
        let (name, is_text) = match &options.column {
            InputColumn::Text(name) => (name, true),
            InputColumn::Tokens(name) => (name, false),
        };
        let sentences = batch
            .column_by_name(name)
            .expect("the input column is kept");
        let entities = batch
            .column_by_name(&options.output_column)
            .expect("the entity column was written");
        let entities = entities.as_list::<i32>();
        for row in 0..batch.num_rows() {
            let words: Vec<String> = if is_text {
                let text = datafusion::arrow::compute::cast(sentences, &DataType::Utf8)?;
                vec![text.as_string::<i32>().value(row).to_owned()]
            } else {
                let list = datafusion::arrow::compute::cast(
                    sentences,
                    &DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                )?;
                let list = list.as_list::<i32>();
                let value = list.value(row);
                value
                    .as_string::<i32>()
                    .iter()
                    .map(|w| w.unwrap_or_default().to_owned())
                    .collect()
            };
            println!("{}", words.join(" "));
            if entities.is_null(row) {
                println!("    (not annotated)");
                continue;
            }
            let found = entities.value(row);
            let found = found.as_struct();
            let column = |n: &str| found.column_by_name(n).cloned();
            let labels = column("label").expect("label");
            let labels = labels.as_string::<i32>();
            let scores = column("score").expect("score");
            let scores = scores.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
            let starts = column("start").expect("start");
            let starts = starts.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let ends = column("end").expect("end");
            let ends = ends.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let texts = column("text");
            for i in 0..found.len() {
                let span = match &texts {
                    Some(t) => t.as_string::<i32>().value(i).to_owned(),
                    None => words[starts.value(i) as usize..ends.value(i) as usize].join(" "),
                };
                println!("    {:<6} {:.3}  {span}", labels.value(i), scores.value(i));
            }
            if found.is_empty() {
                println!("    (no entities)");
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct SqlArgs {
    /// SQL statements, run in order (e.g. `SET span_marker.batch_size = 64` then a query).
    #[arg(required = true)]
    statements: Vec<String>,
    /// The model of the SpanMarker functions (`SET span_marker.model` overrides it).
    #[arg(long, default_value = BUNDLED_MODEL)]
    model: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn sql(args: SqlArgs) -> CliResult {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ctx = SessionContext::new().enable_url_table();
        span_marker_udfs::sql::register_all(&ctx);
        ctx.sql(&format!(
            "SET span_marker.model = '{}'",
            args.model.replace('\'', "''")
        ))
        .await?;
        ctx.sql(&format!(
            "SET span_marker.device = '{}'",
            args.device.replace('\'', "''")
        ))
        .await?;
        for statement in &args.statements {
            let batches = ctx.sql(statement).await?.collect().await?;
            if !batches.is_empty() {
                print_batches(&batches)?;
            }
        }
        Ok(())
    })
}

pub fn train_pipeline(
    file: &Path,
    output_dir: Option<PathBuf>,
    max_steps: Option<usize>,
    num_train_epochs: Option<f64>,
    resume: Option<String>,
) -> CliResult {
    let mut pipeline = Pipeline::from_file(file)?;
    if let Some(dir) = output_dir {
        pipeline.training.output_dir = dir;
    }
    if max_steps.is_some() {
        pipeline.training.max_steps = max_steps;
    }
    if let Some(epochs) = num_train_epochs {
        pipeline.training.num_train_epochs = epochs;
    }
    pipeline.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(pipeline.run(resume.as_deref()))?;
    let metrics = serde_json::to_string_pretty(&report.metrics)?;
    span_marker::checkpoint::write_atomically(
        &report.output_dir.join("pipeline_metrics.json"),
        metrics.as_bytes(),
    )?;
    println!("{metrics}");
    eprintln!(
        "model, metrics and training curves saved to {}",
        report.output_dir.display()
    );
    Ok(())
}

/// `train` without a pipeline file: CoNLL files and flags.
pub struct ConllTraining {
    pub train: PathBuf,
    pub eval: Option<PathBuf>,
    pub test: Option<PathBuf>,
    pub model: String,
    pub labels: Option<Vec<String>>,
    pub args: Option<PathBuf>,
    pub output_dir: Option<PathBuf>,
    pub max_steps: Option<usize>,
    pub num_train_epochs: Option<f64>,
    pub resume: Option<String>,
    pub model_max_length: usize,
    pub marker_max_length: usize,
    pub entity_max_length: usize,
}

pub fn train_conll(run: ConllTraining) -> CliResult {
    let mut args = match run.args {
        Some(path) => TrainingArguments::from_file(path)?,
        None => TrainingArguments::default(),
    };
    if let Some(dir) = run.output_dir {
        args.output_dir = dir;
    }
    if run.max_steps.is_some() {
        args.max_steps = run.max_steps;
    }
    if let Some(epochs) = run.num_train_epochs {
        args.num_train_epochs = epochs;
    }
    let conll = |path: PathBuf| {
        let mut source = TableSource::file(path);
        source.format = Some(Format::Conll);
        source
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let ctx = SessionContext::new();
    let read = |path: Option<PathBuf>| -> Result<Option<AnnotatedRows>, span_marker_udfs::Error> {
        path.map(|p| runtime.block_on(conll(p).read(&ctx)))
            .transpose()
    };
    let train = read(Some(run.train))?.expect("a training file");
    let (eval, test) = (read(run.eval)?, read(run.test)?);
    let spec = ModelSpec {
        encoder: run.model,
        labels: run.labels,
        model_max_length: Some(run.model_max_length),
        marker_max_length: run.marker_max_length,
        entity_max_length: run.entity_max_length,
    };
    let report = training::run(spec, args, train, eval, test, run.resume)?;
    println!("{}", serde_json::Value::Object(report.metrics));
    eprintln!("model saved to {}", report.output_dir.display());
    Ok(())
}

pub fn evaluate(model: &str, device: &str, source: &TableSource, batch_size: usize) -> CliResult {
    let model = if model == BUNDLED_MODEL {
        let mut bundled = SpanMarkerModel::bundled()?;
        bundled.to_device(parse_device(device)?);
        bundled
    } else {
        SpanMarkerModel::from_pretrained_with(
            model,
            &LoadOptions {
                device: Some(parse_device(device)?),
                ..Default::default()
            },
        )?
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let rows = runtime.block_on(source.read(&SessionContext::new()))?;
    let dataset = rows.to_dataset(model.labels())?;
    let evaluation = evaluate_model(&model, &dataset, "test", batch_size)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(evaluation.to_record()))?
    );
    Ok(())
}
