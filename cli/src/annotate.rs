//! `span-marker annotate`: an entity column added to a Parquet corpus, streaming and
//! resumable (see [`span_marker_udfs::annotate`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use span_marker::PredictOptions;
use span_marker_udfs::annotate::{annotate, AnnotateOptions, InputColumn};
use span_marker_udfs::cluster::annotate::{
    annotate_files, input_files, FilesAnnotateOptions, Runner,
};
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
    /// The Parquet corpus: a local file, or (with --cluster, or where the input or the output
    /// is an object-store URL such as s3://bucket/corpus/ or az://container/corpus/) a
    /// directory or prefix of Parquet files, a glob such as 'corpus/part-*.parquet', or one
    /// file.
    #[arg(long, required_unless_present_any = ["sample", "dataset"], conflicts_with = "dataset")]
    input: Option<String>,
    /// Annotate a split of a Hub dataset (one Parquet file; not with --cluster).
    #[command(flatten)]
    dataset: DatasetArgs,
    /// With --dataset: the split.
    #[arg(long, requires = "dataset", default_value = "test")]
    split: String,
    /// Where the annotated corpus goes (all input columns plus the entity column); with
    /// --cluster, or where the input or the output is an object-store URL, a directory or
    /// prefix (s3://bucket/annotated/) that gets one file per input file, under the same name.
    #[arg(long, required_unless_present = "sample")]
    output: Option<String>,
    /// Annotate on the Ballista cluster whose scheduler is at df://HOST:PORT (see `span-marker
    /// cluster`): each input file is one task; the files must be at the same path on every
    /// executor, and every executor must be able to load the model (checked first). A rerun
    /// skips the files an earlier run finished.
    #[arg(long, value_name = "df://HOST:PORT", conflicts_with_all = ["sample", "dataset"])]
    cluster: Option<String>,
    #[command(flatten)]
    stall: StallArgs,
    /// Files annotated at once when annotating many (default: two per executor with
    /// --cluster, one in this process).
    #[arg(long)]
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

/// `file:///x` as the path `/x`; anything else as it is.
fn local_path(location: Option<String>) -> Result<Option<String>, String> {
    let Some(location) = location else {
        return Ok(None);
    };
    Ok(Some(
        match span_marker_udfs::store::local_path(&location)? {
            Some(path) => path.to_string_lossy().into_owned(),
            None => location,
        },
    ))
}

pub fn run(mut args: AnnotateArgs) -> CliResult {
    let column = match (&args.text_column, &args.tokens_column) {
        (Some(text), _) => InputColumn::Text(text.clone()),
        (None, tokens) => InputColumn::Tokens(tokens.clone().unwrap_or_else(|| "tokens".into())),
    };
    args.input = local_path(args.input.take())?;
    args.output = local_path(args.output.take())?;
    let is_store_url = |location: &Option<String>| {
        location
            .as_deref()
            .is_some_and(span_marker_udfs::store::is_store_url)
    };
    // Many files: on a cluster, from or to an object store, or from a directory or a glob.
    let many = args
        .input
        .as_deref()
        .is_some_and(|input| Path::new(input).is_dir() || input.contains(['*', '?', '[']));
    if args.cluster.is_some() || many || is_store_url(&args.input) || is_store_url(&args.output) {
        if args.sample || args.dataset.dataset.is_some() {
            return Err(
                "--sample and --dataset write one local file: give --output a local \
                        path (or copy the result with `span-marker sql \"COPY ...\"`)"
                    .into(),
            );
        }
        if let Some(output) = args
            .output
            .as_deref()
            .filter(|o| is_store_url(&Some(o.to_string())))
        {
            if output.ends_with(".parquet") {
                return Err(format!(
                    "--output {output}: with object-store URLs the output is a prefix that gets \
                     one object per input file under the input's name (e.g. {}/)",
                    output.trim_end_matches(".parquet")
                )
                .into());
            }
        }
        return run_files(&args, column);
    }
    if args.files_at_once.is_some() {
        return Err(
            "--files-at-once is for many files: with --cluster, or object-store URLs".into(),
        );
    }
    let (input, column) = match (
        args.sample,
        args.input,
        args.dataset.source(&args.split, None),
    ) {
        (true, _, _) => (write_sample_corpus()?, InputColumn::Text("text".into())),
        (false, Some(input), _) => (PathBuf::from(input), column),
        (false, None, Some(source)) => (dataset_file(&source)?, column),
        (false, None, None) => return Err("--input is required (or --dataset, or --sample)".into()),
    };
    let output = PathBuf::from(
        args.output
            .unwrap_or_else(|| "sample-entities.parquet".to_owned()),
    );
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
    if args.show == 0 {
        return Ok(());
    }
    let rows = tokio::runtime::Runtime::new()?
        .block_on(first_rows(&output.to_string_lossy(), args.show))?;
    show_entities(&rows, &options)
}

/// Many files, each into its own output in the output directory or prefix: on the cluster
/// with `--cluster`, else in this process.
fn run_files(args: &AnnotateArgs, column: InputColumn) -> CliResult {
    span_marker_cli::ignore_sigpipe();
    let (Some(input), Some(output_dir)) = (&args.input, &args.output) else {
        return Err("--input and --output are required with --cluster or object-store URLs".into());
    };
    if args.chunk_rows.is_some() {
        return Err(
            "--chunk-rows is for one local file: with --cluster or object-store URLs a file is \
             the unit of progress"
                .into(),
        );
    }
    args.predict.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (report, first) = runtime.block_on(async {
        let cluster = match &args.cluster {
            Some(url) => Some(args.stall.apply(Cluster::connect(url)?)),
            None => None,
        };
        let (ctx, files_at_once) = match &cluster {
            Some(cluster) => (
                cluster.context().await?,
                2 * cluster.executors()?.len().max(1),
            ),
            None => {
                let ctx = span_marker_udfs::store::session_context();
                span_marker_udfs::sql::register_all(&ctx);
                (ctx, 1)
            }
        };
        let inputs = input_files(&ctx, input).await?;
        let mut settings = vec![
            ("model", args.model.model.clone()),
            ("device", args.model.device.clone()),
            ("strict", args.strict.to_string()),
        ];
        settings.extend(args.predict.settings());
        set_session(&ctx, &settings)?;
        let first = inputs.first().cloned();
        let options = FilesAnnotateOptions {
            inputs,
            output_dir: output_dir.clone(),
            column: column.clone(),
            output_column: args.output_column.clone(),
            files_at_once: args.files_at_once.unwrap_or(files_at_once),
            progress: true,
        };
        let runner = match &cluster {
            Some(cluster) => Runner::Cluster(cluster),
            None => Runner::Local,
        };
        let report = annotate_files(runner, &ctx, &options).await?;
        let first = match first.as_deref().and_then(|f| f.rsplit(['/', '\\']).next()) {
            Some(name) if args.show > 0 => {
                let location = format!("{}/{name}", output_dir.trim_end_matches('/'));
                // The job is done: an output that cannot be shown is a warning, not a failure.
                match first_rows(&location, args.show).await {
                    Ok(rows) => Some(rows),
                    Err(e) => {
                        tracing::warn!("cannot show the first rows of {location}: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        Ok::<_, Box<dyn std::error::Error>>((report, first))
    })?;
    span_marker_cli::note!(
        "annotated {} files ({} rows) into {} in {:.1}s{}{}",
        report.files,
        report.rows,
        output_dir,
        report.elapsed.as_secs_f64(),
        if report.skipped_files > 0 {
            format!(" ({} files done by an earlier run)", report.skipped_files)
        } else {
            String::new()
        },
        if report.failed_rows > 0 {
            format!(
                "; {} rows could not be annotated (NULL; {} says why)",
                report.failed_rows,
                if args.cluster.is_some() {
                    "the executors' log"
                } else {
                    "the log"
                }
            )
        } else {
            String::new()
        }
    );
    let Some(first) = first else {
        return Ok(());
    };
    let shown = AnnotateOptions {
        output_column: args.output_column.clone(),
        ..AnnotateOptions::new("", "", column)
    };
    show_entities(&first, &shown)
}

/// The first `rows` rows of the output at `location` (a path or a store URL).
async fn first_rows(location: &str, rows: usize) -> datafusion::error::Result<Vec<RecordBatch>> {
    span_marker_udfs::store::session_context()
        .read_parquet(location, Default::default())
        .await?
        .limit(0, Some(rows))?
        .collect()
        .await
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

/// Prints annotated rows: the sentence, then its entities.
fn show_entities(batches: &[RecordBatch], options: &AnnotateOptions) -> CliResult {
    // Written, not printed: with --cluster SIGPIPE is ignored, and a closed standard output is
    // an error that ends the command quietly (see `span_marker_cli::run`), not a panic.
    let mut out = span_marker_cli::stdout();
    for batch in batches {
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
