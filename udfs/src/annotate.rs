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
//! file at the output path that the job did not write is never replaced. (These are the
//! promises of every resumable job of this crate, kept by its `job` module, which annotation
//! on a cluster shares.)

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use span_marker::fingerprint::FileIdentity;
use span_marker::lock::DirLock;
use span_marker::PredictOptions;

pub use crate::columns::InputColumn;
use crate::columns::{entity_schema, predict_column, ColumnJob};
use crate::error::{Error, Result};
use crate::job::{
    check_same_job, lock_dir, progress_bar, publish, read_manifest, write_manifest,
    write_parquet_atomically, AnnotationJob,
};
use crate::model::SharedModel;
use crate::sources::open_parquet;

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

/// What a resumed annotation must share with the run it continues: what every annotation job
/// records, and the input file and the chunking that number its parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct JobIdentity {
    input: FileIdentity,
    /// Its keys sit beside `input`'s (`model`, `column`, `threshold`, ...).
    #[serde(flatten)]
    annotation: AnnotationJob,
    chunk_rows: usize,
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
    // Settings the model's device cannot run fail here, before a part directory exists.
    options.predict.precision.check(model.device())?;
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
            annotation: AnnotationJob::new(
                model.fingerprint()?,
                &options.column,
                &options.output_column,
                &options.predict,
            )?,
            chunk_rows: options.chunk_rows,
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
    let lock = lock_dir(dir)?;
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
    check_same_job(
        dir,
        &found.job,
        &manifest.job,
        "an unfinished run of another job",
        "resume it with the same input, model and settings, or remove the directory to start over",
    )?;
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
