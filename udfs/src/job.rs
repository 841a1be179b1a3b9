//! Resumable jobs of the engine: what local bulk annotation ([`crate::annotate`]) and
//! annotation of many files (`crate::cluster::annotate`) share, so that both keep the same
//! promises in the same way. Training keeps them too (its checkpoints are its parts), through
//! the same core pieces: [`DirLock`] and [`span_marker::fingerprint`].
//!
//! A resumable job works in a directory of its own (local annotation: the part directory
//! beside the output; cluster annotation: the output directory), and
//!
//! - **one run works in it at a time**: a run [locks](lock_dir) the directory before it reads
//!   or writes anything there, and a second run is refused while the first lives;
//! - **a run continues the same job or none**: the directory's manifest records the job by
//!   content (an [`AnnotationJob`], plus what the job adds: local annotation its input file
//!   and chunk size), and a run that is not that job is [refused](check_same_job) with an
//!   error naming each difference, by the rule training's resume check uses
//!   ([`differences`]);
//! - **nothing is half-written**: every file (a part, an output, a manifest) is written under
//!   a temporary name (starting with [`TEMP_PREFIX`](span_marker::atomic::TEMP_PREFIX), ending in `.tmp`) beside its
//!   destination, synced, and renamed into place, so that it is absent or complete; what
//!   killed runs left under such names goes when the next run takes the lock;
//! - **nothing is replaced**: an output is [published](publish) under its final name only
//!   where nothing is there.
//!
//! The many-files job keeps these promises in object stores too, by the stores' means (its
//! module says how): conditional writes of its manifest where a directory would be locked, and
//! staging objects published by a copy that never replaces where files would be renamed and
//! linked.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use span_marker::fingerprint::{as_recorded, differences};
use span_marker::lock::DirLock;
use span_marker::PredictOptions;

use crate::columns::InputColumn;
use crate::error::{Error, Result};

/// What every annotation job records of itself, and a resumed or rerun job must share: the
/// model by content, the columns read and written, and the prediction settings that change
/// which entities are written. (Batch size and device do not; strict mode only decides
/// whether a bad row stops the run.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AnnotationJob {
    /// [`span_marker::SpanMarkerModel::fingerprint`]; on a cluster, as every executor
    /// reported it.
    model: String,
    column: InputColumn,
    output_column: String,
    /// [`as_recorded`]: as written in decimal (`0.9`, not float32's `0.8999999761581421`).
    threshold: Option<f64>,
    allow_overlapping: bool,
    precision: String,
}

impl AnnotationJob {
    /// The job that writes `output_column` from `column` with the model of fingerprint `model`
    /// and the (checked) prediction settings `predict`.
    pub(crate) fn new(
        model: String,
        column: &InputColumn,
        output_column: &str,
        predict: &PredictOptions,
    ) -> Result<Self> {
        let threshold = as_recorded(&predict.threshold).map_err(|e| Error::Pipeline {
            file: "annotate".into(),
            key: "threshold".into(),
            message: format!("cannot be recorded: {e}"),
        })?;
        Ok(Self {
            model,
            column: column.clone(),
            output_column: output_column.to_owned(),
            threshold,
            allow_overlapping: predict.allow_overlapping,
            precision: predict.precision.to_string(),
        })
    }
}

/// Creates the job's directory `dir` when missing and locks it for this run (an error when
/// another run holds it), then removes what killed runs left in it under temporary names.
/// The lock is held while the returned value lives.
pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock> {
    let lock = DirLock::create(dir, "annotation")?;
    remove_unfinished(dir)?;
    Ok(lock)
}

/// Removes the files in `dir` (locked by this run) that killed runs were writing: outputs,
/// parts and manifests under their temporary names.
fn remove_unfinished(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(span_marker::atomic::TEMP_PREFIX)
            && name.ends_with(".tmp")
            && path.is_file()
        {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// `Ok` when `found` (the job recorded in `dir`'s manifest) is `wanted` (this run's);
/// otherwise an error on `dir`: it holds `what` (what the directory holds of the other job),
/// then each difference, then `otherwise` (what to do instead).
pub(crate) fn check_same_job<T: Serialize + PartialEq>(
    dir: &Path,
    found: &T,
    wanted: &T,
    what: &str,
    otherwise: &str,
) -> Result<()> {
    if found == wanted {
        return Ok(());
    }
    const NOTES: [(&str, &str); 2] = [
        ("input", "the input file's content changed: "),
        ("model", "the model's weights changed: "),
    ];
    Err(Error::file(
        dir,
        format!(
            "holds {what} ({}); {otherwise}",
            differences(found, wanted, &NOTES).join("; ")
        ),
    ))
}

/// Writes a job's manifest to `path` atomically, under a temporary name in `path`'s directory
/// until it is complete.
pub(crate) fn write_manifest(path: &Path, manifest: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| Error::file(path, format!("cannot record the job: {e}")))?;
    Ok(span_marker::atomic::write(path, text.as_bytes())?)
}

/// Reads a manifest [`write_manifest`] wrote; `otherwise` says what to do when the file is not
/// one of this version's.
pub(crate) fn read_manifest<T: DeserializeOwned>(path: &Path, otherwise: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::file(
            path,
            format!("not a manifest of this version of the tool ({e}); {otherwise}"),
        )
    })
}

/// Rows per row group of the written files. The Parquet writer holds a row group in memory
/// until it is full, so this (not the corpus size) bounds the memory of a file being written.
const OUTPUT_ROW_GROUP_ROWS: usize = 16 * 1024;

/// Writes `batches` to `path` through a temporary file and a rename, so that `path` is either
/// absent or complete. A failure (a full disk among them) names `path`.
pub(crate) fn write_parquet_atomically(
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

/// A Parquet file being written under a temporary name beside its destination.
pub(crate) struct ParquetOut {
    path: PathBuf,
    temp: tempfile::NamedTempFile,
    writer: ArrowWriter<File>,
}

impl ParquetOut {
    /// Starts a file meant for `path` (in `path`'s directory).
    pub(crate) fn create(path: &Path, schema: &SchemaRef) -> Result<Self> {
        let temp = span_marker::atomic::temp_beside(path)?;
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

/// A progress bar over `total` rows, `done` of them by an earlier run; hidden unless `show`
/// (and stderr is a terminal).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest being written when its run was killed is a temporary file that the next
    /// run removes when it takes the lock; finished files stay.
    #[test]
    fn the_next_run_removes_what_killed_runs_were_writing() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.json");
        write_manifest(&manifest, &serde_json::json!({"job": 1})).unwrap();
        let half_written = span_marker::atomic::temp_beside(&manifest)
            .unwrap()
            .keep()
            .unwrap()
            .1;
        let name = half_written.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with(span_marker::atomic::TEMP_PREFIX) && name.ends_with(".tmp"));
        let other = dir.path().join("notes.tmp");
        std::fs::write(&other, b"not ours").unwrap();

        let lock = lock_dir(dir.path()).unwrap();
        assert!(!half_written.exists());
        assert!(other.exists());
        let found: serde_json::Value = read_manifest(&manifest, "start over").unwrap();
        assert_eq!(found, serde_json::json!({"job": 1}));
        drop(lock);
    }

    #[test]
    fn another_job_is_refused_naming_each_difference() {
        let dir = Path::new("parts");
        let job = |threshold: Option<f32>| {
            let predict = PredictOptions {
                threshold,
                ..PredictOptions::default()
            };
            AnnotationJob::new(
                "abc".into(),
                &InputColumn::Text("text".into()),
                "e",
                &predict,
            )
            .unwrap()
        };
        check_same_job(dir, &job(Some(0.9)), &job(Some(0.9)), "x", "y").unwrap();
        let error = check_same_job(
            dir,
            &job(None),
            &job(Some(0.9)),
            "another job",
            "start over",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("holds another job (`threshold` was null, is now 0.9); start over"),
            "{error}"
        );
    }
}
