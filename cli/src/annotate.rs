//! `span-marker annotate`: an entity column added to a Parquet corpus, streaming and
//! resumable (see [`span_marker_udfs::annotate`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use span_marker::PredictOptions;
use span_marker_udfs::annotate::{annotate, AnnotateOptions, InputColumn};
use span_marker_udfs::cluster::annotate::{annotate_files, input_files, ClusterAnnotateOptions};
use span_marker_udfs::cluster::Cluster;
use span_marker_udfs::sources::TableSource;
use span_marker_udfs::SharedModel;

use crate::args::{set_session, DatasetArgs, ModelArgs, StallArgs};
use crate::CliResult;

/// The one Parquet file of a dataset split, downloaded into the Hugging Face cache if missing.
fn dataset_file(source: &TableSource) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dataset = source.dataset_ref().expect("a dataset source");
    let split = source.hub_split()?.expect("a dataset source");
    match <[PathBuf; 1]>::try_from(split.files) {
        Ok([file]) => Ok(file),
        Err(files) => Err(format!(
            "dataset {dataset}: the split has {} Parquet files ({}); annotate them one by one \
             with --input (they are in the Hugging Face cache)",
            files.len(),
            split.paths.join(", ")
        )
        .into()),
    }
}

/// Sentences of the bundled sample corpus, one per line.
const SAMPLE_CORPUS: &str = include_str!("../../examples/data/sample-corpus.txt");

#[derive(Args)]
pub struct AnnotateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The Parquet corpus (with --cluster: a directory of Parquet files, a glob such as
    /// 'corpus/part-*.parquet', or one file).
    #[arg(long, required_unless_present_any = ["sample", "dataset"], conflicts_with = "dataset")]
    input: Option<PathBuf>,
    /// Annotate a split of a Hub dataset (one Parquet file; not with --cluster).
    #[command(flatten)]
    dataset: DatasetArgs,
    /// With --dataset: the split.
    #[arg(long, requires = "dataset", default_value = "test")]
    split: String,
    /// Where the annotated corpus goes (all input columns plus the entity column); with
    /// --cluster, a directory that gets one file per input file, under the same name.
    #[arg(long, required_unless_present = "sample")]
    output: Option<PathBuf>,
    /// Annotate on the Ballista cluster whose scheduler is at df://HOST:PORT (see `span-marker
    /// cluster`): each input file is one task; the files must be at the same path on every
    /// executor, and every executor must be able to load the model (checked first). A rerun
    /// skips the files an earlier run finished.
    #[arg(long, value_name = "df://HOST:PORT", conflicts_with_all = ["sample", "dataset"])]
    cluster: Option<String>,
    #[command(flatten)]
    stall: StallArgs,
    /// With --cluster: files annotated at once (default: two per executor).
    #[arg(long, requires = "cluster")]
    files_at_once: Option<usize>,
    /// The column of raw text.
    #[arg(long, conflicts_with = "tokens_column")]
    text_column: Option<String>,
    /// The column of words (List<Utf8>); the default when neither is given is `tokens`.
    #[arg(long)]
    tokens_column: Option<String>,
    /// Name of the added column.
    #[arg(long, default_value = "entities")]
    output_column: String,
    /// Rows per chunk: the unit of progress and of resumption [default: 1024] (with
    /// --cluster, a file is that unit).
    #[arg(long, conflicts_with = "cluster")]
    chunk_rows: Option<usize>,
    #[command(flatten)]
    predict: PredictOptions,
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

pub fn run(args: AnnotateArgs) -> CliResult {
    let column = match (&args.text_column, &args.tokens_column) {
        (Some(text), _) => InputColumn::Text(text.clone()),
        (None, tokens) => InputColumn::Tokens(tokens.clone().unwrap_or_else(|| "tokens".into())),
    };
    if let Some(url) = &args.cluster {
        return run_on_cluster(url, &args, column);
    }
    let (input, column) = match (
        args.sample,
        args.input,
        args.dataset.source(&args.split, None),
    ) {
        (true, _, _) => (write_sample_corpus()?, InputColumn::Text("text".into())),
        (false, Some(input), _) => (input, column),
        (false, None, Some(source)) => (dataset_file(&source)?, column),
        (false, None, None) => return Err("--input is required (or --dataset, or --sample)".into()),
    };
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from("sample-entities.parquet"));
    let mut options = AnnotateOptions::new(&input, &output, column);
    options.output_column = args.output_column;
    options.chunk_rows = args.chunk_rows.unwrap_or(options.chunk_rows);
    options.strict = args.strict;
    options.predict = args.predict;
    options.validate()?;
    let model = SharedModel::load(&args.model.model, &args.model.device)?;
    let report = annotate(&model, &options)?;
    span_marker_cli::note!(
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

/// `annotate --cluster`: the input files on the cluster, into the output directory.
fn run_on_cluster(url: &str, args: &AnnotateArgs, column: InputColumn) -> CliResult {
    span_marker_cli::ignore_sigpipe();
    let (Some(input), Some(output_dir)) = (&args.input, &args.output) else {
        return Err("--input and --output are required with --cluster".into());
    };
    args.predict.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (report, first) = runtime.block_on(async {
        let cluster = args.stall.apply(Cluster::connect(url)?);
        let inputs = input_files(&input.to_string_lossy())?;
        let executors = cluster.executors()?.len();
        let ctx = cluster.context().await?;
        let mut settings = vec![
            ("model", args.model.model.clone()),
            ("device", args.model.device.clone()),
            ("strict", args.strict.to_string()),
        ];
        settings.extend(args.predict.settings());
        set_session(&ctx, &settings)?;
        let first = inputs.first().cloned();
        let options = ClusterAnnotateOptions {
            inputs,
            output_dir: output_dir.clone(),
            column: column.clone(),
            output_column: args.output_column.clone(),
            files_at_once: args.files_at_once.unwrap_or(2 * executors.max(1)),
            progress: true,
        };
        let report = annotate_files(&cluster, &ctx, &options).await?;
        Ok::<_, Box<dyn std::error::Error>>((report, first))
    })?;
    span_marker_cli::note!(
        "annotated {} files ({} rows) into {} in {:.1}s{}{}",
        report.files,
        report.rows,
        output_dir.display(),
        report.elapsed.as_secs_f64(),
        if report.skipped_files > 0 {
            format!(" ({} files done by an earlier run)", report.skipped_files)
        } else {
            String::new()
        },
        if report.failed_rows > 0 {
            format!(
                "; {} rows could not be annotated (NULL; the executors' logs say why)",
                report.failed_rows
            )
        } else {
            String::new()
        }
    );
    let Some(first) = first.and_then(|f| f.file_name().map(|n| output_dir.join(n))) else {
        return Ok(());
    };
    let shown = AnnotateOptions {
        output_column: args.output_column.clone(),
        ..AnnotateOptions::new(&first, &first, column)
    };
    show_entities(&first, &shown, args.show)
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
    let temp = span_marker::atomic::temp_beside(&path)?;
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
    // Written, not printed: with --cluster SIGPIPE is ignored, and a closed standard output is
    // an error that ends the command quietly (see `span_marker_cli::run`), not a panic.
    let mut out = span_marker_cli::stdout();
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
            writeln!(out, "{}", words.join(" "))?;
            if entities.is_null(row) {
                writeln!(out, "    (not annotated)")?;
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
                writeln!(
                    out,
                    "    {:<6} {:.3}  {span}",
                    labels.value(i),
                    scores.value(i)
                )?;
            }
            if found.is_empty() {
                writeln!(out, "    (no entities)")?;
            }
        }
    }
    Ok(())
}
