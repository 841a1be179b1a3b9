//! Distributed bulk annotation: a directory of Parquet files in, a directory of Parquet
//! files out, one output file per input file with the same name.
//!
//! Each input file is one query on the cluster (`SELECT *, span_marker_predict(column)`), one
//! task reading the file whole, so its rows come back in their order; several files run at
//! once, spread over the executors. The client streams each result into a temporary file in
//! the output directory and publishes it under its final name only when complete, never
//! replacing a file there.
//!
//! The output directory's manifest (`.span-marker-annotate.json`) records the job (the
//! model's weights by content, the input column and the settings that change what is
//! written) and, per finished file, the input's and the output's content digests. A rerun
//! after any failure (a lost executor, a killed client) checks that it continues the same job
//! and skips every file whose output is there and intact, so no row is lost or written twice.
//! An output file the manifest does not know of is never replaced. The directory is locked
//! while a run works in it. (These are the promises of every resumable job of this crate,
//! kept by its `job` module, which local annotation shares.)
//!
//! Input files must be reachable at the same path by the client (which reads their schema)
//! and by every executor (which reads their rows): a shared file system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::{Expr, ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use span_marker::fingerprint::FileIdentity;

use crate::cluster::{readable_error, Cluster};
use crate::columns::{entity_schema, InputColumn, InputKind};
use crate::error::{Error, Result};
use crate::job::{
    check_same_job, lock_dir, progress_bar, publish, read_manifest, write_manifest, AnnotationJob,
    ParquetOut,
};
use crate::sources::open_parquet;
use crate::sql::SpanMarkerOptions;

/// The manifest's name in the output directory.
pub const MANIFEST_FILE: &str = ".span-marker-annotate.json";

/// What to annotate on the cluster and how; the prediction settings are the session's
/// (`SET span_marker.threshold = ...` on the context given to [`annotate_files`]).
#[derive(Debug, Clone)]
pub struct ClusterAnnotateOptions {
    /// The input files (see [`input_files`]); their names must differ.
    pub inputs: Vec<PathBuf>,
    /// The output directory (created when missing).
    pub output_dir: PathBuf,
    pub column: InputColumn,
    /// Name of the added column.
    pub output_column: String,
    /// Files annotated at once (at least 1); each is one task on one executor.
    pub files_at_once: usize,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterAnnotateReport {
    /// Files annotated by this run, and rows in them.
    pub files: usize,
    pub rows: usize,
    /// Files an earlier run had finished (skipped).
    pub skipped_files: usize,
    /// Rows of this run's files whose entity column is NULL though their input is not: rows
    /// that could not be annotated (the executors' logs say why).
    pub failed_rows: usize,
    pub elapsed: Duration,
}

/// A finished file: the contents it was made from and the contents written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Finished {
    input: FileIdentity,
    output: FileIdentity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    /// What a rerun must share with the run that started the output directory; its
    /// prediction settings are the session's.
    job: AnnotationJob,
    /// By output file name.
    files: BTreeMap<String, Finished>,
}

/// The Parquet files `pattern` names: a directory (its `*.parquet` files), a glob
/// (`corpus/part-*.parquet`) or one file; sorted, at least one.
pub fn input_files(pattern: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(pattern);
    let mut files: Vec<PathBuf> = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let file = entry.map_err(|e| Error::io(path, e))?.path();
            if file.is_file() && file.extension().is_some_and(|e| e == "parquet") {
                files.push(file);
            }
        }
        files
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        let mut files = Vec::new();
        let matches = glob::glob(pattern)
            .map_err(|e| Error::file(path, format!("not a file, directory or glob: {e}")))?;
        for entry in matches {
            // An entry that cannot be read is an error, not a file left out.
            let file = entry.map_err(|e| {
                let path = e.path().to_path_buf();
                Error::io(path, e.into())
            })?;
            if file.is_file() {
                files.push(file);
            }
        }
        files
    };
    files.sort();
    if files.is_empty() {
        return Err(Error::file(
            path,
            "names no Parquet file (give a directory of .parquet files, a glob or a file)",
        ));
    }
    Ok(files)
}

/// Annotates `options.inputs` on `cluster` through `ctx` (a session of
/// [`Cluster::context`] with the model and settings set), resuming an earlier run of the
/// same job in the output directory.
pub async fn annotate_files(
    cluster: &Cluster,
    ctx: &SessionContext,
    options: &ClusterAnnotateOptions,
) -> Result<ClusterAnnotateReport> {
    let started = Instant::now();
    if options.files_at_once == 0 {
        return Err(setting("files_at_once", "must be at least 1"));
    }
    let predict =
        SpanMarkerOptions::from_config(ctx.state().config().options()).predict_options()?;
    let inputs = check_inputs(options)?;
    // One task per file, whatever the caller's session says: its rows come back in order.
    let mut state = ctx.state();
    state
        .config_mut()
        .options_mut()
        .optimizer
        .repartition_file_scans = false;
    let ctx = &SessionContext::new_with_state(state);

    // A second job on an existing output directory is refused at once, not queued on the
    // cluster behind the first; a new directory is made only once the model check passed.
    let dir = &options.output_dir;
    let early_lock = dir.is_dir().then(|| lock_dir(dir)).transpose()?;
    // Every executor loads the model (and the same weights) and can run the settings before
    // anything is written.
    let models = cluster.check_model(ctx).await?;
    let _lock = match early_lock {
        Some(lock) => lock,
        None => lock_dir(dir)?,
    };
    let fingerprint = models
        .values()
        .next()
        .map(|info| info.fingerprint.clone())
        .unwrap_or_default();
    let job = AnnotationJob::new(
        fingerprint,
        &options.column,
        &options.output_column,
        &predict,
    )?;

    let manifest = open_manifest(dir, job)?;
    let mut pending = Vec::new();
    let mut skipped_files = 0;
    for input in inputs {
        if input.finished(dir, &manifest)? {
            skipped_files += 1;
        } else {
            pending.push(input);
        }
    }

    let total_rows: usize = pending.iter().map(|input| input.rows).sum();
    let bar = progress_bar(options.progress, total_rows as u64, 0);
    let manifest = Mutex::new(manifest);
    let done: Vec<(usize, usize)> = futures::stream::iter(pending.iter())
        .map(|input| {
            let (manifest, bar) = (&manifest, &bar);
            cluster.run_watched(ctx, move |ctx| async move {
                input.annotate(&ctx, options, dir, manifest, bar).await
            })
        })
        .buffer_unordered(options.files_at_once)
        .try_collect()
        .await?;
    bar.finish_and_clear();
    Ok(ClusterAnnotateReport {
        files: done.len(),
        rows: done.iter().map(|(rows, _)| rows).sum(),
        skipped_files,
        failed_rows: done.iter().map(|(_, failed)| failed).sum(),
        elapsed: started.elapsed(),
    })
}

/// An input file, checked.
struct Input {
    path: PathBuf,
    /// The output file's name (the input's).
    name: String,
    identity: FileIdentity,
    rows: usize,
}

/// Opens every input, checks its column and that no two share an output name.
fn check_inputs(options: &ClusterAnnotateOptions) -> Result<Vec<Input>> {
    let mut names: BTreeMap<String, &Path> = BTreeMap::new();
    let mut inputs = Vec::with_capacity(options.inputs.len());
    for path in &options.inputs {
        let builder = open_parquet(path)?;
        entity_schema(
            builder.schema(),
            path,
            &options.column,
            &options.output_column,
        )?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .ok_or_else(|| Error::file(path, "is not a file"))?;
        if let Some(other) = names.insert(name.clone(), path) {
            return Err(Error::file(
                path,
                format!(
                    "has the same name as {}: both would be written to `{name}`",
                    other.display()
                ),
            ));
        }
        inputs.push(Input {
            rows: builder.metadata().file_metadata().num_rows().max(0) as usize,
            identity: FileIdentity::of(path)?,
            path: path.clone(),
            name,
        });
    }
    Ok(inputs)
}

/// The output directory's manifest, checked to be `job`'s, or a new one for `job` (written
/// with the first finished file).
fn open_manifest(dir: &Path, job: AnnotationJob) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(Manifest {
            job,
            files: BTreeMap::new(),
        });
    }
    let found: Manifest = read_manifest(&path, "use another output directory")?;
    check_same_job(
        dir,
        &found.job,
        &job,
        "the output of another annotation job",
        "rerun it with the same model and settings, or use another output directory",
    )?;
    Ok(found)
}

impl Input {
    /// Whether an earlier run finished this file; an error when its output is there but
    /// not this job's, or its input changed since.
    fn finished(&self, dir: &Path, manifest: &Manifest) -> Result<bool> {
        let output = dir.join(&self.name);
        if std::fs::symlink_metadata(&output).is_err() {
            // Never written, removed, or recorded by a run stopped before publishing it.
            return Ok(false);
        }
        match manifest.files.get(&self.name) {
            Some(record) if FileIdentity::of(&output)? == record.output => {
                if record.input != self.identity {
                    return Err(Error::file(
                        &self.path,
                        format!(
                            "changed since {} was written from it: remove that output to annotate the new content",
                            output.display()
                        ),
                    ));
                }
                Ok(true)
            }
            _ => Err(Error::file(
                &output,
                "exists but was not written by this annotation job: it is not replaced; move it away or use another output directory",
            )),
        }
    }

    /// Runs the file's query on the cluster and publishes its output; returns its rows and
    /// how many of them could not be annotated.
    async fn annotate(
        &self,
        ctx: &SessionContext,
        options: &ClusterAnnotateOptions,
        dir: &Path,
        manifest: &Mutex<Manifest>,
        bar: &indicatif::ProgressBar,
    ) -> Result<(usize, usize)> {
        let output = dir.join(&self.name);
        let failed_here = |e: &DataFusionError| {
            Error::file(
                &self.path,
                format!("annotation on the cluster failed: {}", readable_error(e)),
            )
        };
        let function = match options.column.kind() {
            InputKind::Words => "span_marker_predict",
            InputKind::Text => "span_marker_predict_text",
        };
        let input_column =
            Expr::Column(datafusion::common::Column::from_name(options.column.name()));
        let entities = ctx.udf(function)?.call(vec![input_column.clone()]);
        let path = self.path.to_string_lossy();
        let frame = ctx
            .read_parquet(path.as_ref(), ParquetReadOptions::default())
            .await?;
        let mut columns: Vec<Expr> = frame
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        columns.push(entities.alias(&options.output_column));
        let frame = frame.select(columns)?;
        let stream = frame.execute_stream().await.map_err(|e| failed_here(&e))?;
        let mut stream = stream;
        let schema = stream.schema();
        let mut out = ParquetOut::create(&output, &schema)?;
        let (mut rows, mut failed) = (0, 0);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| failed_here(&e))?;
            failed += unannotated(&batch, options)?;
            rows += batch.num_rows();
            out.write(&batch)?;
            bar.inc(batch.num_rows() as u64);
        }
        if rows != self.rows {
            return Err(Error::file(
                &self.path,
                format!(
                    "{rows} rows came back from the cluster, the file has {}",
                    self.rows
                ),
            ));
        }
        let temp = out.finish()?;
        // Recorded before it is published: a run stopped in between finds an output that the
        // manifest knows.
        let finished = Finished {
            input: self.identity.clone(),
            output: FileIdentity::of(temp.path())?,
        };
        {
            let mut manifest = manifest.lock().unwrap_or_else(|p| p.into_inner());
            manifest.files.insert(self.name.clone(), finished);
            write_manifest(&dir.join(MANIFEST_FILE), &*manifest)?;
        }
        publish(
            temp.path(),
            &output,
            "this run's result for it is discarded",
        )?;
        Ok((rows, failed))
    }
}

/// Rows of `batch` whose entities are NULL though their input is not.
fn unannotated(batch: &RecordBatch, options: &ClusterAnnotateOptions) -> Result<usize> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::column(name, "missing from a result batch"))
    };
    let input = column(options.column.name())?;
    let entities = column(&options.output_column)?;
    Ok((0..batch.num_rows())
        .filter(|&row| entities.is_null(row) && !input.is_null(row))
        .count())
}

fn setting(key: &str, message: &str) -> Error {
    Error::Pipeline {
        file: "annotate".into(),
        key: key.into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_a_directory_a_glob_or_a_file_sorted_and_never_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.parquet", "a.parquet", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let root = dir.path().to_string_lossy().into_owned();
        assert_eq!(
            names(input_files(&root).unwrap()),
            ["a.parquet", "b.parquet"]
        );
        let glob = format!("{root}/b*");
        assert_eq!(names(input_files(&glob).unwrap()), ["b.parquet"]);
        let file = format!("{root}/notes.txt");
        assert_eq!(names(input_files(&file).unwrap()), ["notes.txt"]);
        let none = format!("{root}/*.csv");
        let error = input_files(&none).unwrap_err().to_string();
        assert!(error.contains("names no Parquet file"), "{error}");
    }
}
