//! Bulk annotation: a Parquet corpus in, the same rows with an entity column out.
//!
//! Rows stream through in chunks of `chunk_rows`; each chunk is annotated (one call into the
//! model for the whole chunk) and written atomically as a part file next to the output. An
//! interrupted run finds its parts and continues after the last complete one, so no row is
//! lost or written twice; when every row is done the parts are merged into the output (again
//! atomically) and removed. Memory stays bounded by the chunk size.
//!
//! A resumed run continues only the same job: the part directory's manifest records the
//! input file's size and SHA-256, the model's [fingerprint](SharedModel::fingerprint) and the
//! settings that change the output, and any difference is an error naming it. The part
//! directory is locked while a run works in it, so two runs on one output cannot race, and a
//! file at the output path that the job did not write is never replaced.

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
use span_marker::fingerprint::FileIdentity;
use span_marker::lock::DirLock;
use span_marker::PredictOptions;

use crate::columns::{predict_column, ColumnJob, InputKind};
use crate::error::{Error, Result};
use crate::model::SharedModel;
use crate::sources::open_parquet;

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

/// What an unfinished part directory records of its job. A resumed run continues only when
/// its [`JobIdentity`] is the same, by content: the input file's bytes, the model's weights,
/// and the settings that change what is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    /// Where the input and the model were found (for people: names are not compared).
    input_path: String,
    model_source: String,
    job: JobIdentity,
    /// Set once the merged output is complete: its identity, so that a run interrupted
    /// between publishing the output and removing the parts knows the output is its own.
    #[serde(default)]
    merged: Option<FileIdentity>,
}

/// What a resumed annotation must share with the run it continues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct JobIdentity {
    input: FileIdentity,
    /// [`span_marker::SpanMarkerModel::fingerprint`].
    model: String,
    column: InputColumn,
    output_column: String,
    chunk_rows: usize,
    /// The prediction settings that change which entities are written. (Batch size and
    /// device do not; strict mode only decides whether a bad row stops the run.)
    /// As written in decimal (`0.9`, not float32's `0.8999999761581421`).
    threshold: Option<f64>,
    allow_overlapping: bool,
    precision: String,
}

/// Where a part directory stands when a run starts.
enum Progress {
    /// This many parts are complete.
    Parts(usize),
    /// The output was published by an earlier run that stopped before removing the parts.
    Merged,
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

/// The complete parts in `dir`, in order: `part-000000.parquet` on, up to the first missing.
fn complete_parts(dir: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|index| part_path(dir, index))
        .take_while(|part| part.is_file())
        .collect()
}

/// Annotates `options.input` with `model`, resuming an interrupted run of the same job.
pub fn annotate(model: &SharedModel, options: &AnnotateOptions) -> Result<AnnotateReport> {
    let started = Instant::now();
    options.validate()?;
    let builder = open_parquet(&options.input)?;
    let total_rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    let input_schema = builder.schema().clone();
    let output_schema = output_schema(&input_schema, options)?;

    let dir = parts_dir(&options.output);
    let manifest = Manifest {
        input_path: options.input.to_string_lossy().into_owned(),
        model_source: model.source().to_owned(),
        job: JobIdentity {
            input: FileIdentity::of(&options.input)?,
            model: model.fingerprint()?,
            column: options.column.clone(),
            output_column: options.output_column.clone(),
            chunk_rows: options.chunk_rows,
            threshold: options
                .predict
                .threshold
                .map(|t| t.to_string().parse().unwrap_or(f64::from(t))),
            allow_overlapping: options.predict.allow_overlapping,
            precision: options.predict.precision.to_string(),
        },
        merged: None,
    };
    let (progress, _lock) = prepare_parts(&dir, &manifest, &options.output)?;
    let done_parts = match progress {
        Progress::Parts(parts) => parts,
        Progress::Merged => {
            remove_parts(&dir)?;
            return Ok(AnnotateReport {
                rows: total_rows,
                resumed_rows: total_rows,
                failed: Vec::new(),
                elapsed: started.elapsed(),
            });
        }
    };
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
        let batch = batch.map_err(|e| {
            Error::file(
                &options.input,
                format!("cannot read row {first_row} on: {e}"),
            )
        })?;
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
    merge_parts(&dir, &manifest, &options.output, &output_schema)?;
    Ok(AnnotateReport {
        rows: total_rows,
        resumed_rows,
        failed,
        elapsed: started.elapsed(),
    })
}

/// The input schema plus the entity column, after checking the input column's type.
fn output_schema(input: &SchemaRef, options: &AnnotateOptions) -> Result<SchemaRef> {
    entity_schema(
        input,
        &options.input,
        &options.column,
        &options.output_column,
    )
}

/// `input` (the schema of the file at `path`) plus the entity column `output_column`, after
/// checking that `column` is there with a type it can be read as.
pub(crate) fn entity_schema(
    input: &SchemaRef,
    path: &Path,
    column: &InputColumn,
    output_column: &str,
) -> Result<SchemaRef> {
    let name = column.name();
    let field = input.field_with_name(name).map_err(|_| {
        let found: Vec<&String> = input.fields().iter().map(|f| f.name()).collect();
        Error::column(
            name,
            format!("not in {}; its columns are {found:?}", path.display()),
        )
    })?;
    let kind = column.kind();
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
    if input.field_with_name(output_column).is_ok() {
        return Err(Error::column(
            output_column,
            format!(
                "{} already has this column: choose another output column name",
                path.display()
            ),
        ));
    }
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(output_column, kind.output_type(), true));
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

/// Creates the part directory, or checks that the one there belongs to this job, and locks
/// it for this run; returns how far the job got, and the lock (held while it lives).
fn prepare_parts(dir: &Path, manifest: &Manifest, output: &Path) -> Result<(Progress, DirLock)> {
    if !dir.exists() && output.exists() {
        return Err(Error::file(
            output,
            "already exists: remove it or choose another output",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock = DirLock::acquire(dir, "annotation")?;
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        // A new job (or one killed before its manifest was written, with no parts yet).
        if part_path(dir, 0).exists() || dir.join(MERGED_FILE).exists() {
            return Err(Error::file(
                dir,
                "holds parts but no manifest saying which job wrote them: remove the directory to start over",
            ));
        }
        if output.exists() {
            return Err(Error::file(
                output,
                "already exists: remove it or choose another output",
            ));
        }
        write_manifest(&dir.join(MANIFEST_FILE), manifest)?;
        return Ok((Progress::Parts(0), lock));
    }
    let found: Manifest = read_manifest(&manifest_path, "remove the directory to start over")?;
    if found.job != manifest.job {
        return Err(Error::file(
            dir,
            format!(
                "holds an unfinished run of another job ({}); resume it with the same input, model and settings, or remove the directory to start over",
                job_differences(&found.job, &manifest.job)
            ),
        ));
    }
    if output.exists() {
        let ours = match &found.merged {
            Some(merged) => FileIdentity::of(output)? == *merged,
            None => false,
        };
        if !ours {
            return Err(Error::file(
                output,
                format!(
                    "exists but was not written by the unfinished run in {}: move it away to let that run finish",
                    dir.display()
                ),
            ));
        }
        return Ok((Progress::Merged, lock));
    }
    Ok((Progress::Parts(complete_parts(dir).len()), lock))
}

/// The manifest's name in the part directory.
const MANIFEST_FILE: &str = "manifest.json";
/// The merged output's name in the part directory, until it is published.
const MERGED_FILE: &str = "merged.parquet";

/// Writes a job's manifest to `path` atomically (the part directory's here, the output
/// directory's for cluster annotation).
pub(crate) fn write_manifest(path: &Path, manifest: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| Error::file(path, format!("cannot record the job: {e}")))?;
    span_marker::checkpoint::write_atomically(path, text.as_bytes())?;
    Ok(())
}

/// Reads a manifest [`write_manifest`] wrote; `otherwise` says what to do when the file is not
/// one of this version's.
pub(crate) fn read_manifest<T: serde::de::DeserializeOwned>(
    path: &Path,
    otherwise: &str,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::file(
            path,
            format!("not a manifest of this version of the tool ({e}); {otherwise}"),
        )
    })
}

/// What differs between the job that wrote a part directory (or an output directory) and
/// this one, as "`key` was X, is now Y".
pub(crate) fn job_differences<T: Serialize>(found: &T, wanted: &T) -> String {
    let as_map = |job: &T| {
        serde_json::to_value(job)
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
            let what = match key.as_str() {
                "input" => "the input file's content changed: ",
                "model" => "the model's weights changed: ",
                _ => "",
            };
            format!("{what}`{key}` was {before}, is now {value}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes `batches` to `path` through a temporary file and a rename, so that `path` is either
/// absent or complete. A failure (a full disk among them) names `path`.
fn write_parquet_atomically(
    path: &Path,
    schema: &SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch>>,
) -> Result<()> {
    let mut out = ParquetOut::create(path, schema)?;
    for batch in batches {
        out.write(&batch?)?;
    }
    let temp = out.finish()?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// How the temporary names of [`ParquetOut`] files start (they end in `.tmp`).
pub(crate) const TEMP_PREFIX: &str = ".span-marker-";

/// A Parquet file being written under a temporary name beside its destination.
pub(crate) struct ParquetOut {
    path: PathBuf,
    temp: tempfile::NamedTempFile,
    writer: ArrowWriter<File>,
}

impl ParquetOut {
    /// Starts a file meant for `path` (in `path`'s directory).
    pub(crate) fn create(path: &Path, schema: &SchemaRef) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        let file = temp.reopen().map_err(|e| Error::io(temp.path(), e))?;
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(OUTPUT_ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))
            .map_err(|e| Self::cannot_write(path, &e))?;
        Ok(Self {
            path: path.to_path_buf(),
            temp,
            writer,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| Self::cannot_write(&self.path, &e))
    }

    /// Closes the file and syncs it to disk: complete, still under its temporary name (which
    /// goes when the returned handle is dropped).
    pub(crate) fn finish(self) -> Result<tempfile::NamedTempFile> {
        self.writer
            .close()
            .map_err(|e| Self::cannot_write(&self.path, &e))?;
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(self.temp)
    }

    fn cannot_write(path: &Path, e: &dyn std::fmt::Display) -> Error {
        Error::file(path, format!("cannot write: {e}"))
    }
}

/// Streams every part into a merged file, records it in the manifest, publishes it at
/// `output` (never replacing a file there), then removes the parts.
fn merge_parts(dir: &Path, manifest: &Manifest, output: &Path, schema: &SchemaRef) -> Result<()> {
    let parts = complete_parts(dir);
    let corrupt = |part: &Path, e: &dyn std::fmt::Display| {
        Error::file(
            part,
            format!("cannot read this part ({e}); remove the part directory to start over"),
        )
    };
    let batches = parts
        .iter()
        .flat_map(|part| -> Box<dyn Iterator<Item = Result<RecordBatch>>> {
            let reader = File::open(part)
                .map_err(|e| Error::io(part, e))
                .and_then(|f| {
                    ParquetRecordBatchReaderBuilder::try_new(f)
                        .and_then(|builder| builder.build())
                        .map_err(|e| corrupt(part, &e))
                });
            match reader {
                Ok(reader) => Box::new(reader.map(move |b| b.map_err(|e| corrupt(part, &e)))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        });
    let merged = dir.join(MERGED_FILE);
    write_parquet_atomically(&merged, schema, batches)?;
    write_manifest(
        &dir.join(MANIFEST_FILE),
        &Manifest {
            merged: Some(FileIdentity::of(&merged)?),
            ..manifest.clone()
        },
    )?;
    publish(&merged, output, "the result is kept in the part directory")?;
    remove_parts(dir)
}

/// Removes a finished job's part directory: first renamed away in one step, so that a kill
/// while its files go never leaves a directory without its manifest (which a later run could
/// take for a new job's).
fn remove_parts(dir: &Path) -> Result<()> {
    let mut name = std::ffi::OsString::from(".");
    name.push(dir.file_name().unwrap_or_default());
    name.push(format!(".done-{}", std::process::id()));
    let doomed = dir.with_file_name(name);
    std::fs::rename(dir, &doomed).map_err(|e| Error::io(dir, e))?;
    std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
}

/// Moves `file` to `output` unless something is there: a hard link fails rather than replace,
/// where a rename would not. File systems without hard links get a checked rename (a file
/// created at the output in the instant between the check and the rename would be replaced).
/// `kept` says where the result stays when the output is taken.
pub(crate) fn publish(file: &Path, output: &Path, kept: &str) -> Result<()> {
    let taken = || {
        Error::file(
            output,
            format!("appeared while the annotation ran; it was not replaced ({kept})"),
        )
    };
    match std::fs::hard_link(file, output) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(taken()),
        // `symlink_metadata`: a dangling link at the output is something there too.
        Err(_) if std::fs::symlink_metadata(output).is_ok() => Err(taken()),
        Err(_) => std::fs::rename(file, output).map_err(|e| Error::io(output, e)),
    }
}

pub(crate) fn progress_bar(show: bool, total: u64, done: u64) -> ProgressBar {
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
