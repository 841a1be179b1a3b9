//! Bulk annotation: a Parquet corpus in, the same rows with an entity column out.
//!
//! Rows stream through in chunks of `chunk_rows`; each chunk is annotated (one call into the
//! model for the whole chunk) and written atomically as a part file next to the output. An
//! interrupted run finds its parts and continues after the last complete one, so no row is
//! lost or written twice; when every row is done the parts are merged into the output (again
//! atomically) and removed. Memory stays bounded by the chunk size.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use span_marker::PredictOptions;

use crate::columns::{predict_column, ColumnJob, InputKind};
use crate::error::{Error, Result};
use crate::model::SharedModel;

/// Which input column holds the sentences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputColumn {
    /// A list-of-words column.
    Tokens(String),
    /// A raw-text column; entities then carry character offsets and their text.
    Text(String),
}

impl InputColumn {
    /// The column's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Tokens(name) | Self::Text(name) => name,
        }
    }

    /// What the column holds.
    pub fn kind(&self) -> InputKind {
        match self {
            Self::Tokens(_) => InputKind::Words,
            Self::Text(_) => InputKind::Text,
        }
    }
}

/// What to annotate and how.
#[derive(Debug, Clone)]
pub struct AnnotateOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub column: InputColumn,
    /// Name of the added column.
    pub output_column: String,
    /// Rows per chunk (and per part file): the unit of progress and of resumption.
    pub chunk_rows: usize,
    pub predict: PredictOptions,
    /// Stop at the first row that cannot be annotated instead of writing NULL for it.
    pub strict: bool,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

impl AnnotateOptions {
    /// Annotates the list-of-words column `tokens` of `input` into `output`.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>, column: InputColumn) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            column,
            output_column: "entities".into(),
            chunk_rows: 1024,
            predict: PredictOptions::default(),
            strict: false,
            progress: true,
        }
    }
}

impl AnnotateOptions {
    /// The largest `chunk_rows`: a chunk is held in memory whole, twice (input and entities).
    pub const MAX_CHUNK_ROWS: usize = 1 << 20;

    /// Checks the options, naming the first one out of range.
    pub fn validate(&self) -> Result<()> {
        if !(1..=Self::MAX_CHUNK_ROWS).contains(&self.chunk_rows) {
            return Err(Error::Pipeline {
                file: "annotate".into(),
                key: "chunk_rows".into(),
                message: format!(
                    "must be between 1 and {}, got {}",
                    Self::MAX_CHUNK_ROWS,
                    self.chunk_rows
                ),
            });
        }
        self.predict.validate()?;
        Ok(())
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotateReport {
    /// Rows in the output.
    pub rows: usize,
    /// Rows an earlier, interrupted run had already annotated.
    pub resumed_rows: usize,
    /// Rows this run could not annotate (NULL in the output), with the reason.
    pub failed: Vec<(usize, String)>,
    pub elapsed: Duration,
}

/// Identifies the job an unfinished part directory belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    input: PathBuf,
    input_bytes: u64,
    column: InputColumn,
    output_column: String,
    model: String,
    chunk_rows: usize,
    /// The prediction settings that change which entities are written: a resumed run must use
    /// the same ones, or the output would mix two settings. (Batch size and device do not
    /// change the entities; strict mode only decides whether a bad row stops the run.)
    /// As written in decimal (`0.9`, not float32's `0.8999999761581421`).
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    allow_overlapping: bool,
    #[serde(default = "float32_name")]
    precision: String,
}

fn float32_name() -> String {
    span_marker::device::Precision::Float32.to_string()
}

/// The part directory of `output`: `out.parquet` -> `out.parquet.parts/`.
pub fn parts_dir(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".parts");
    output.with_file_name(name)
}

/// Rows per row group of the written files. The Parquet writer holds a row group in memory
/// until it is full, so this (not the corpus size) bounds the memory of the final merge.
const OUTPUT_ROW_GROUP_ROWS: usize = 16 * 1024;

fn part_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("part-{index:06}.parquet"))
}

/// Annotates `options.input` with `model`, resuming an interrupted run of the same job.
pub fn annotate(model: &SharedModel, options: &AnnotateOptions) -> Result<AnnotateReport> {
    let started = Instant::now();
    options.validate()?;
    let input = File::open(&options.input).map_err(|e| Error::io(&options.input, e))?;
    let input_bytes = input
        .metadata()
        .map_err(|e| Error::io(&options.input, e))?
        .len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(input)
        .map_err(|e| Error::file(&options.input, format!("not a readable Parquet file: {e}")))?;
    let total_rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    let input_schema = builder.schema().clone();
    let output_schema = output_schema(&input_schema, options)?;

    let dir = parts_dir(&options.output);
    let manifest = Manifest {
        input: options.input.clone(),
        input_bytes,
        column: options.column.clone(),
        output_column: options.output_column.clone(),
        model: model.source().to_owned(),
        chunk_rows: options.chunk_rows,
        threshold: options
            .predict
            .threshold
            .map(|t| t.to_string().parse().unwrap_or(f64::from(t))),
        allow_overlapping: options.predict.allow_overlapping,
        precision: options.predict.precision.to_string(),
    };
    let done_parts = prepare_parts(&dir, &manifest, &options.output)?;
    let resumed_rows = (done_parts * options.chunk_rows).min(total_rows);
    if resumed_rows > 0 {
        tracing::info!(resumed_rows, "resuming an interrupted annotation");
    }

    let progress = progress_bar(options.progress, total_rows as u64, resumed_rows as u64);
    let reader = builder
        .with_batch_size(options.chunk_rows)
        .with_offset(resumed_rows)
        .build()?;
    let mut failed = Vec::new();
    let mut first_row = resumed_rows;
    for (index, batch) in (done_parts..).zip(reader) {
        let batch = batch?;
        let _span =
            tracing::debug_span!("annotate_chunk", index, rows = batch.num_rows()).entered();
        let entities = annotate_batch(model, &batch, options, first_row, &mut failed)?;
        let mut columns = batch.columns().to_vec();
        columns.push(entities);
        let out = RecordBatch::try_new(output_schema.clone(), columns)?;
        write_parquet_atomically(&part_path(&dir, index), &output_schema, [Ok(out)])?;
        first_row += batch.num_rows();
        progress.set_position(first_row as u64);
    }
    progress.finish_and_clear();
    if first_row != total_rows {
        return Err(Error::file(
            &options.input,
            format!("the file says {total_rows} rows but {first_row} were read"),
        ));
    }
    merge_parts(&dir, &options.output, &output_schema)?;
    Ok(AnnotateReport {
        rows: total_rows,
        resumed_rows,
        failed,
        elapsed: started.elapsed(),
    })
}

/// The input schema plus the entity column, after checking the input column's type.
fn output_schema(input: &SchemaRef, options: &AnnotateOptions) -> Result<SchemaRef> {
    let name = options.column.name();
    let field = input.field_with_name(name).map_err(|_| {
        let found: Vec<&String> = input.fields().iter().map(|f| f.name()).collect();
        Error::column(
            name,
            format!(
                "not in {}; its columns are {found:?}",
                options.input.display()
            ),
        )
    })?;
    let kind = options.column.kind();
    if !kind.accepts(field.data_type()) {
        let hint = kind
            .other()
            .accepts(field.data_type())
            .then_some(match kind {
                InputKind::Words => "the text column option",
                InputKind::Text => "the tokens column option",
            });
        return Err(Error::column(
            name,
            kind.mismatch(name, field.data_type(), hint),
        ));
    }
    if input.field_with_name(&options.output_column).is_ok() {
        return Err(Error::column(
            &options.output_column,
            format!(
                "{} already has this column: choose another output column name",
                options.input.display()
            ),
        ));
    }
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(&options.output_column, kind.output_type(), true));
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        input.metadata().clone(),
    )))
}

/// Entities for one chunk; rows that cannot be annotated become NULL (or stop the run in
/// strict mode), named by their row number in the input file.
fn annotate_batch(
    model: &SharedModel,
    batch: &RecordBatch,
    options: &AnnotateOptions,
    first_row: usize,
    failed: &mut Vec<(usize, String)>,
) -> Result<Arc<dyn Array>> {
    let name = options.column.name();
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| Error::column(name, "missing from a record batch"))?;
    let source = options.input.display().to_string();
    let job = ColumnJob {
        kind: options.column.kind(),
        options: &options.predict,
        strict: options.strict,
        source: &source,
        column: name,
        first_row,
    };
    let (entities, chunk_failed) = predict_column(model, array.as_ref(), &job)?;
    failed.extend(chunk_failed);
    Ok(entities)
}

/// Creates the part directory or checks that the one there belongs to this job; returns the
/// number of complete parts.
fn prepare_parts(dir: &Path, manifest: &Manifest, output: &Path) -> Result<usize> {
    let manifest_path = dir.join("manifest.json");
    if dir.exists() {
        let text =
            std::fs::read_to_string(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
        let found: Manifest = serde_json::from_str(&text).map_err(|e| {
            Error::file(&manifest_path, format!("not a manifest of this tool: {e}"))
        })?;
        if &found != manifest {
            return Err(Error::file(
                dir,
                format!(
                    "holds an unfinished run of another job ({}); resume it with the same settings, or remove the directory to start over",
                    manifest_differences(&found, manifest)
                ),
            ));
        }
        let mut parts = 0;
        while part_path(dir, parts).is_file() {
            parts += 1;
        }
        return Ok(parts);
    }
    if output.exists() {
        return Err(Error::file(
            output,
            "already exists: remove it or choose another output",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(manifest).expect("a manifest serializes");
    span_marker::checkpoint::write_atomically(&manifest_path, text.as_bytes())?;
    Ok(0)
}

/// The settings in which `found` differs from `wanted`, as "`key` was X, is now Y".
fn manifest_differences(found: &Manifest, wanted: &Manifest) -> String {
    let as_map = |manifest: &Manifest| {
        serde_json::to_value(manifest)
            .ok()
            .and_then(|value| value.as_object().cloned())
            .unwrap_or_default()
    };
    let (found, wanted) = (as_map(found), as_map(wanted));
    wanted
        .iter()
        .filter(|(key, value)| found.get(*key) != Some(value))
        .map(|(key, value)| {
            let before = found.get(key).cloned().unwrap_or_default();
            format!("`{key}` was {before}, is now {value}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes `batches` to `path` through a temporary file and a rename, so that `path` is either
/// absent or complete.
fn write_parquet_atomically(
    path: &Path,
    schema: &SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch>>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let file = temp.reopen().map_err(|e| Error::io(temp.path(), e))?;
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(OUTPUT_ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
    for batch in batches {
        writer.write(&batch?)?;
    }
    writer.close()?;
    temp.as_file()
        .sync_all()
        .map_err(|e| Error::io(temp.path(), e))?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Streams every part into `output`, then removes the parts.
fn merge_parts(dir: &Path, output: &Path, schema: &SchemaRef) -> Result<()> {
    let mut parts = Vec::new();
    while part_path(dir, parts.len()).is_file() {
        parts.push(part_path(dir, parts.len()));
    }
    let batches = parts
        .iter()
        .flat_map(|part| -> Box<dyn Iterator<Item = Result<RecordBatch>>> {
            let reader = File::open(part)
                .map_err(|e| Error::io(part, e))
                .and_then(|f| Ok(ParquetRecordBatchReaderBuilder::try_new(f)?.build()?));
            match reader {
                Ok(reader) => Box::new(reader.map(|b| b.map_err(Error::from))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        });
    write_parquet_atomically(output, schema, batches)?;
    std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Ok(())
}

fn progress_bar(show: bool, total: u64, done: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(done);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} annotate [{bar:30}] {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.reset_eta();
    bar
}
