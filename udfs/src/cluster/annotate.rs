//! Annotation of many Parquet files, each into an output of its own: a directory of files (or
//! a prefix of objects) in, a directory (or prefix) out, one output per input under the same
//! name. Inputs and outputs are local paths or object-store URLs (`s3://bucket/corpus/`,
//! `az://container/corpus/`, see [`crate::store`]), in any mix.
//!
//! Each input file is one query (`SELECT *, span_marker_predict(column)` written with
//! `COPY ... TO`), one task reading the file whole, so its rows keep their order. On a
//! [cluster](Runner::Cluster) the executor that runs the task reads the input from its store
//! and writes the output itself: no row travels through the client, which only plans, tracks
//! and publishes. [In this process](Runner::Local) the same queries run on the local engine.
//!
//! An output is written under a staging name in the output's `.span-marker-staging/` and
//! published under its final name by a copy that never replaces anything
//! ([`copy_if_not_exists`](datafusion::object_store::ObjectStoreExt::copy_if_not_exists): a
//! hard link on a file system, a multipart copy completed with `If-None-Match: *` on S3, a blob
//! copy with `If-None-Match: *` on Azure), so each output appears complete or not at all, and an
//! object the job did not write is never replaced. A task that an executor loses is run again elsewhere and writes its staging
//! object again; nothing is visible until the client publishes.
//!
//! The output's manifest (`.span-marker-annotate.json`) records the job (the model's weights
//! by content, the input column and the settings that change what is written) and, per
//! finished file, its input's and its output's identity: the content digest of a local input,
//! the size and ETag of an object. A rerun after any failure (a lost executor, a killed client)
//! checks that it continues the same job, skips every file whose output is there and its own,
//! and refuses an input that changed since. A local output directory is locked while a run
//! works in it; in an object store two runs on one prefix are kept apart by conditional writes
//! of the manifest (`If-None-Match` / `If-Match`): the second one to write it stops.
//!
//! Local input files must be reachable at the same path by the client (which reads their
//! footers) and by every executor (which reads their rows), and so must a local output
//! directory: a shared file system. Objects need only the same store settings everywhere.
//!
//! Output objects are written by DataFusion's Parquet writer, as one `PUT` up to 10 MiB and as
//! a multipart upload above that, completed only when the file is; an upload that a killed
//! executor leaves unfinished is invisible and is removed by the bucket's
//! `AbortIncompleteMultipartUpload` lifecycle rule (object_store cannot list such uploads).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::FunctionRegistry;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{
    Error as StoreError, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    UpdateVersion,
};
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::prelude::{col, Expr, ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use span_marker::fingerprint::FileIdentity;
use span_marker::lock::DirLock;

use crate::cluster::{readable_error, Cluster};
use crate::columns::{entity_schema, InputColumn, InputKind};
use crate::error::{Error, Result};
use crate::job::{check_same_job, lock_dir, progress_bar, AnnotationJob};
use crate::sql::{ModelInfo, SpanMarkerOptions};
use crate::store;

/// The manifest's name in the output directory.
pub const MANIFEST_FILE: &str = ".span-marker-annotate.json";
/// Where outputs are written before they are published, in the output directory.
pub const STAGING_DIR: &str = ".span-marker-staging";

/// Rows per row group of the written files: the writer holds a row group in memory until it
/// is full, so this (not the file size) bounds the memory of a file being written.
const OUTPUT_ROW_GROUP_ROWS: usize = 16 * 1024;

/// Where the files are annotated.
#[derive(Debug, Clone, Copy)]
pub enum Runner<'a> {
    /// In this process, by the functions of the session given to [`annotate_files`].
    Local,
    /// On the cluster that the session given to [`annotate_files`] is a session of
    /// ([`Cluster::context`]).
    Cluster(&'a Cluster),
}

/// What to annotate and how; the prediction settings are the session's
/// (`SET span_marker.threshold = ...` on the context given to [`annotate_files`]).
#[derive(Debug, Clone)]
pub struct FilesAnnotateOptions {
    /// The input files, local paths or store URLs (see [`input_files`]); their names must
    /// differ.
    pub inputs: Vec<String>,
    /// The output directory or prefix (a local directory is created when missing).
    pub output_dir: String,
    pub column: InputColumn,
    /// Name of the added column.
    pub output_column: String,
    /// Files annotated at once (at least 1); on a cluster each is one task on one executor.
    pub files_at_once: usize,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesAnnotateReport {
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

/// What a file or an object was, by content: a local file's digest, an object's size and
/// ETag (which the store changes whenever the content does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Identity {
    File(FileIdentity),
    Object { bytes: u64, e_tag: String },
}

impl Identity {
    fn describe(&self) -> String {
        match self {
            Identity::File(file) => format!("{} bytes, SHA-256 {}", file.bytes, file.sha256),
            Identity::Object { bytes, e_tag } => format!("{bytes} bytes, ETag {e_tag}"),
        }
    }
}

/// Characters that names and local paths may not have here: object keys escape them and
/// DataFusion reads local paths with them as globs.
const UNSAFE: &[char] = &[
    '%', '#', '?', '[', ']', '*', '{', '}', '\\', '~', '^', '|', '<', '>', '"', '`',
];

/// `path` made absolute, its `.` and `..` parts resolved (by name, as the shell's `cd -L`).
fn absolute(path: &Path) -> Result<PathBuf> {
    let full = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut clean = PathBuf::new();
    for part in full.components() {
        match part {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    Ok(clean)
}

/// A finished file: the input it was made from and the output written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Finished {
    input: Identity,
    output: Identity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    /// What a rerun must share with the run that started the output directory; its
    /// prediction settings are the session's.
    job: AnnotationJob,
    /// By output file name.
    files: BTreeMap<String, Finished>,
    /// Files whose staging object was being published, by output file name: a run stopped
    /// between publishing and recording finds the output its own.
    #[serde(default)]
    publishing: BTreeMap<String, Publishing>,
}

/// A file being published: its input, and the staging object its output is copied from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Publishing {
    input: Identity,
    /// Its name in the staging directory.
    staging: String,
}

/// A file or directory named by a local path or a store URL, with the store that holds it.
#[derive(Debug, Clone)]
struct Place {
    /// The URL or the absolute path: what errors name, and what queries read and write.
    shown: String,
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    /// The local path of a local place.
    local: Option<PathBuf>,
}

impl Place {
    fn new(ctx: &SessionContext, location: &str) -> Result<Self> {
        store::check_location(location).map_err(|message| Error::file(location, message))?;
        let invalid = |e: &dyn std::fmt::Display| Error::file(location, e.to_string());
        if store::is_store_url(location) {
            let (store, key, root) = store::locate(ctx, location)?;
            return Ok(Self {
                shown: format!("{root}/{key}"),
                store,
                key,
                local: None,
            });
        }
        let path = store::local_path(location)
            .map_err(|message| Error::file(location, message))?
            .unwrap_or_else(|| location.into());
        let path = absolute(&path)?;
        if let Some(c) = path.to_string_lossy().chars().find(|c| UNSAFE.contains(c)) {
            return Err(invalid(&format!(
                "`{c}` in a local path is not supported here (DataFusion reads it as a glob or \
                 an escape): rename the file or directory"
            )));
        }
        let store = ctx
            .runtime_env()
            .object_store(ObjectStoreUrl::local_filesystem())?;
        let key = ObjectPath::from_absolute_path(&path).map_err(|e| invalid(&e))?;
        Ok(Self {
            shown: path.display().to_string(),
            store,
            key,
            local: Some(path),
        })
    }

    /// The place `name` inside this one (`name` may have several `/`-separated parts).
    fn child(&self, name: &str) -> Self {
        Self {
            shown: format!("{}/{name}", self.shown.trim_end_matches('/')),
            store: self.store.clone(),
            // The key's parts are kept as they are (`join` would escape an escaped name again).
            key: ObjectPath::from_iter(self.key.parts().chain(name.split('/').map(Into::into))),
            local: self.local.as_ref().map(|dir| dir.join(name)),
        }
    }

    /// The last part of the name.
    fn name(&self) -> Option<String> {
        self.key.filename().map(str::to_owned)
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::file(&self.shown, message)
    }

    /// What the store says of the object, `None` where there is none; refused credentials, a
    /// missing bucket and the like are errors naming the place.
    async fn head(&self) -> Result<Option<ObjectMeta>> {
        if self.local.is_none() {
            return store::head(self.store.as_ref(), &self.key, &self.shown).await;
        }
        match self.store.head(&self.key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e.to_string())),
        }
    }

    /// Its identity, `None` where there is nothing: a local file's content digest, an
    /// object's size and ETag.
    async fn identity(&self) -> Result<Option<Identity>> {
        match self.head().await? {
            Some(meta) => self.identity_of(meta).await.map(Some),
            None => Ok(None),
        }
    }

    /// [`identity`](Self::identity), with what the store said of it.
    async fn identity_of(&self, meta: ObjectMeta) -> Result<Identity> {
        if let Some(path) = self.local.clone() {
            let identity = tokio::task::spawn_blocking(move || FileIdentity::of(&path))
                .await
                .map_err(|e| self.error(e.to_string()))??;
            return Ok(Identity::File(identity));
        }
        let e_tag = meta
            .e_tag
            .ok_or_else(|| self.error("the store gives it no ETag to record it by"))?;
        Ok(Identity::Object {
            bytes: meta.size,
            e_tag,
        })
    }

    /// The SHA-256 of its content, streamed.
    async fn digest(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        let mut stream = self
            .store
            .get(&self.key)
            .await
            .map_err(|e| self.error(e.to_string()))?
            .into_stream();
        while let Some(chunk) = stream.next().await {
            hasher.update(chunk.map_err(|e| self.error(e.to_string()))?);
        }
        Ok(format!("{:x}", hasher.finalize()))
    }

    async fn delete(&self) -> Result<()> {
        match self.store.delete(&self.key).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("cannot remove: {e}"))),
        }
    }
}

/// The Parquet files `pattern` names: a directory or prefix (its `*.parquet` files), a glob
/// (`corpus/part-*.parquet`, `s3://bucket/corpus/part-*.parquet`) or one file; sorted, at
/// least one.
pub async fn input_files(ctx: &SessionContext, pattern: &str) -> Result<Vec<String>> {
    let files = if store::is_store_url(pattern) {
        store_files(ctx, pattern).await?
    } else {
        local_files(pattern)?
    };
    if files.is_empty() {
        return Err(Error::file(
            pattern,
            "names no Parquet file (give a directory of .parquet files, a glob or a file)",
        ));
    }
    Ok(files)
}

async fn store_files(ctx: &SessionContext, pattern: &str) -> Result<Vec<String>> {
    store::check_location(pattern).map_err(|message| Error::file(pattern, message))?;
    let url = store::table_url(pattern)?;
    let root = url.object_store();
    let object_store = ctx.runtime_env().object_store(&root)?;
    let state = ctx.state();
    let listed: Vec<ObjectMeta> = url
        .list_all_files(&state, object_store.as_ref(), ".parquet")
        .await?
        .try_collect()
        .await
        .map_err(|e| Error::file(pattern, format!("cannot be listed: {e}")))?;
    let root = root.as_str().trim_end_matches('/');
    let mut files: Vec<String> = listed
        .iter()
        .map(|meta| format!("{root}/{}", meta.location))
        .collect();
    files.sort();
    Ok(files)
}

fn local_files(pattern: &str) -> Result<Vec<String>> {
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
    Ok(files
        .iter()
        .map(|file| file.to_string_lossy().into_owned())
        .collect())
}

/// Annotates `options.inputs` through `ctx` (a session with the model and settings set: a
/// local one with the SpanMarker functions for [`Runner::Local`], [`Cluster::context`] for
/// [`Runner::Cluster`]), resuming an earlier run of the same job in the output directory.
pub async fn annotate_files(
    runner: Runner<'_>,
    ctx: &SessionContext,
    options: &FilesAnnotateOptions,
) -> Result<FilesAnnotateReport> {
    let started = Instant::now();
    if options.files_at_once == 0 {
        return Err(setting("files_at_once", "must be at least 1"));
    }
    let predict =
        SpanMarkerOptions::from_config(ctx.state().config().options()).predict_options()?;
    // One task per file, whatever the caller's session says: its rows stay in order.
    let mut state = ctx.state();
    let optimizer = &mut state.config_mut().options_mut().optimizer;
    optimizer.repartition_file_scans = false;
    // DataFusion would spread a file's batches over partitions in turn for the function to
    // run on each (Ballista never does), and the sink would then interleave them.
    optimizer.enable_round_robin_repartition = false;
    let ctx = &SessionContext::new_with_state(state);
    let output = Place::new(ctx, &options.output_dir)?;
    // A missing bucket or refused credentials show here, before any model is loaded.
    output.child(MANIFEST_FILE).head().await?;
    let inputs = check_inputs(ctx, options).await?;

    // A second job on an existing output directory is refused at once, not queued on the
    // cluster behind the first; a new directory is made only once the model check passed.
    let local_dir = output.local.as_deref();
    let early_lock = local_dir
        .filter(|dir| dir.is_dir())
        .map(lock_dir)
        .transpose()?;
    // Every executor loads the model (and the same weights) and can run the settings before
    // anything is written.
    let fingerprint = model_fingerprint(runner, ctx).await?;
    let _lock: Option<DirLock> = match (early_lock, local_dir) {
        (Some(lock), _) => Some(lock),
        (None, Some(dir)) => Some(lock_dir(dir)?),
        (None, None) => None,
    };
    let job = AnnotationJob::new(
        fingerprint,
        &options.column,
        &options.output_column,
        &predict,
    )?;

    let mut manifest = ManifestFile::open(&output, job).await?;
    manifest.recover(&output).await?;
    clear_staging(&output).await?;
    let mut pending = Vec::new();
    let mut skipped_files = 0;
    for input in inputs {
        if input.finished(&output, &manifest.manifest).await? {
            skipped_files += 1;
        } else {
            pending.push(input);
        }
    }

    let total_rows: usize = pending.iter().map(|input| input.rows).sum();
    let run = &run_id();
    let bar = progress_bar(options.progress, total_rows as u64, 0);
    let manifest = tokio::sync::Mutex::new(manifest);
    let done: Vec<(usize, usize)> = futures::stream::iter(pending.iter())
        .map(|input| {
            let (manifest, bar, output, run) = (&manifest, &bar, &output, run.as_str());
            let work = move |ctx: SessionContext| async move {
                let where_ = match runner {
                    Runner::Local => "in this process",
                    Runner::Cluster(_) => "on the cluster",
                };
                let done = input
                    .annotate(&ctx, options, output, manifest, run, where_)
                    .await?;
                bar.inc(done.0 as u64);
                Ok(done)
            };
            async move {
                match runner {
                    Runner::Local => work(ctx.clone()).await,
                    Runner::Cluster(cluster) => cluster.run_watched(ctx, work).await,
                }
            }
        })
        .buffer_unordered(options.files_at_once)
        .try_collect()
        .await?;
    bar.finish_and_clear();
    clear_staging(&output).await?;
    Ok(FilesAnnotateReport {
        files: done.len(),
        rows: done.iter().map(|(rows, _)| rows).sum(),
        skipped_files,
        failed_rows: done.iter().map(|(_, failed)| failed).sum(),
        elapsed: started.elapsed(),
    })
}

/// The fingerprint of the model that `ctx`'s functions load: on a cluster, checked to be the
/// same on every executor.
async fn model_fingerprint(runner: Runner<'_>, ctx: &SessionContext) -> Result<String> {
    let models = match runner {
        Runner::Cluster(cluster) => cluster.check_model(ctx).await?,
        Runner::Local => {
            let batches = ctx
                .sql("SELECT span_marker_model_info() AS info")
                .await?
                .collect()
                .await?;
            ModelInfo::from_batches(&batches)
                .map_err(|e| Error::column("span_marker_model_info", e))?
                .into_iter()
                .map(|info| (info.executor.clone(), info))
                .collect()
        }
    };
    models
        .into_values()
        .next()
        .map(|info| info.fingerprint)
        .filter(|fingerprint| !fingerprint.is_empty())
        .ok_or_else(|| Error::column("span_marker_model_info", "named no model fingerprint"))
}

/// An input file, checked.
struct Input {
    /// Its place among the inputs.
    index: usize,
    place: Place,
    /// The output file's name (the input's).
    name: String,
    identity: Identity,
    rows: usize,
}

/// Opens every input (its footer), checks its column and that no two share an output name.
async fn check_inputs(ctx: &SessionContext, options: &FilesAnnotateOptions) -> Result<Vec<Input>> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut inputs = Vec::with_capacity(options.inputs.len());
    for location in &options.inputs {
        let place = Place::new(ctx, location)?;
        let meta = place
            .head()
            .await?
            .ok_or_else(|| place.error("does not exist"))?;
        let unreadable =
            |e: &dyn std::fmt::Display| place.error(format!("cannot be read as Parquet: {e}"));
        let metadata = DFParquetMetadata::new(place.store.as_ref(), &meta)
            .fetch_metadata()
            .await
            .map_err(|e| unreadable(&e))?;
        let file = metadata.file_metadata();
        let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
            .map_err(|e| unreadable(&e))?;
        entity_schema(
            &Arc::new(schema),
            Path::new(&place.shown),
            &options.column,
            &options.output_column,
        )?;
        let name = place.name().ok_or_else(|| place.error("is not a file"))?;
        if let Some(other) = names.insert(name.clone(), place.shown.clone()) {
            return Err(place.error(format!(
                "has the same name as {other}: both would be written to `{name}`"
            )));
        }
        if let Some(c) = name.chars().find(|c| UNSAFE.contains(c)) {
            return Err(place.error(format!(
                "`{c}` in a file name is not supported here (an object key escapes it, DataFusion \
                 reads it as a glob): rename the file"
            )));
        }
        let identity = place.identity_of(meta).await?;
        inputs.push(Input {
            index: inputs.len(),
            rows: file.num_rows().max(0) as usize,
            identity,
            place,
            name,
        });
    }
    Ok(inputs)
}

/// The output directory's manifest and the version of it this run last read or wrote.
struct ManifestFile {
    place: Place,
    manifest: Manifest,
    /// Where the store has versions: the one to replace (`None`: nothing there yet).
    version: Option<UpdateVersion>,
}

impl ManifestFile {
    /// The output directory's manifest, checked to be `job`'s, or a new one for `job` (written
    /// with the first finished file).
    async fn open(output: &Place, job: AnnotationJob) -> Result<Self> {
        let place = output.child(MANIFEST_FILE);
        let fresh = Manifest {
            job: job.clone(),
            files: BTreeMap::new(),
            publishing: BTreeMap::new(),
        };
        let found = match place.store.get(&place.key).await {
            Ok(found) => found,
            // (A missing bucket was named by the probe in `annotate_files`.)
            Err(StoreError::NotFound { .. }) => {
                return Ok(Self {
                    place,
                    manifest: fresh,
                    version: None,
                });
            }
            Err(e) => return Err(place.error(e.to_string())),
        };
        let version = UpdateVersion {
            e_tag: found.meta.e_tag.clone(),
            version: found.meta.version.clone(),
        };
        let bytes = found
            .bytes()
            .await
            .map_err(|e| place.error(e.to_string()))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            place.error(format!(
                "not a manifest of this version of the tool ({e}); use another output directory"
            ))
        })?;
        check_same_job(
            Path::new(&output.shown),
            &manifest.job,
            &job,
            "the output of another annotation job",
            "rerun it with the same model and settings, or use another output directory",
        )?;
        Ok(Self {
            place,
            manifest,
            version: Some(version),
        })
    }

    /// Writes the manifest: whole or not at all, and in an object store only over the
    /// version this run last saw, so that a second run on the same prefix is stopped.
    async fn save(&mut self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| self.place.error(format!("cannot record the job: {e}")))?;
        // A local directory is locked; its store replaces files by renaming.
        let mode = match (&self.place.local, &self.version) {
            (Some(_), _) => PutMode::Overwrite,
            (None, None) => PutMode::Create,
            (None, Some(version)) => PutMode::Update(version.clone()),
        };
        let put = self
            .place
            .store
            .put_opts(&self.place.key, text.into(), PutOptions::from(mode))
            .await;
        match put {
            Ok(result) => {
                self.version = Some(UpdateVersion {
                    e_tag: result.e_tag,
                    version: result.version,
                });
                Ok(())
            }
            Err(StoreError::AlreadyExists { .. } | StoreError::Precondition { .. }) => {
                Err(self.place.error(
                    "was changed by another run while this one worked: run one annotation job \
                     on an output at a time (this run's finished files are kept)",
                ))
            }
            Err(e) => Err(self.place.error(format!("cannot be written: {e}"))),
        }
    }

    /// Finishes the records of files that a stopped run published but did not record: their
    /// output is this job's when it has the content of the staging object that it was copied
    /// from (which stays until the record is written).
    async fn recover(&mut self, output: &Place) -> Result<()> {
        let publishing = std::mem::take(&mut self.manifest.publishing);
        if publishing.is_empty() {
            return Ok(());
        }
        for (name, Publishing { input, staging }) in publishing {
            let target = output.child(&name);
            let staging = output.child(STAGING_DIR).child(&staging);
            let (Some(identity), Some(_)) = (target.identity().await?, staging.head().await?)
            else {
                continue;
            };
            if target.digest().await? == staging.digest().await? {
                self.manifest.files.insert(
                    name,
                    Finished {
                        input,
                        output: identity,
                    },
                );
            }
        }
        self.save().await
    }
}

/// Removes what earlier runs left in the staging directory.
async fn clear_staging(output: &Place) -> Result<()> {
    let staging = output.child(STAGING_DIR);
    if let Some(dir) = &staging.local {
        return match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
            _ => Ok(()),
        };
    }
    let left: Vec<ObjectMeta> = staging
        .store
        .list(Some(&staging.key))
        .try_collect()
        .await
        .map_err(|e| staging.error(format!("cannot be listed: {e}")))?;
    for meta in left {
        let place = Place {
            shown: format!("{}/{}", staging.shown, meta.location),
            key: meta.location,
            ..staging.clone()
        };
        place.delete().await?;
    }
    Ok(())
}

impl Input {
    /// Whether an earlier run finished this file; an error when its output is there but
    /// not this job's, or its input changed since.
    async fn finished(&self, output: &Place, manifest: &Manifest) -> Result<bool> {
        let target = output.child(&self.name);
        let Some(found) = target.identity().await? else {
            // Never written, removed, or published by a run stopped before recording it.
            return Ok(false);
        };
        let ours = manifest
            .files
            .get(&self.name)
            .is_some_and(|record| record.output == found);
        if !ours {
            return Err(target.error(
                "exists but was not written by this annotation job: it is not replaced; move it \
                 away or use another output directory",
            ));
        }
        let recorded = &manifest.files[&self.name].input;
        if *recorded != self.identity {
            return Err(self.place.error(format!(
                "changed since {} was written from it (it was {}, is now {}): remove that \
                 output to annotate the new content",
                target.shown,
                recorded.describe(),
                self.identity.describe()
            )));
        }
        Ok(true)
    }

    /// Runs the file's query (the output written where it runs), publishes the output and
    /// records it; returns its rows and how many of them could not be annotated.
    async fn annotate(
        &self,
        ctx: &SessionContext,
        options: &FilesAnnotateOptions,
        output: &Place,
        manifest: &tokio::sync::Mutex<ManifestFile>,
        run: &str,
        where_: &str,
    ) -> Result<(usize, usize)> {
        let target = output.child(&self.name);
        // A folder per run: a task of a stopped run that an executor still finishes writes
        // where this run does not read.
        let staged_name = format!("{run}/{:06}.parquet", self.index);
        let staging = output.child(STAGING_DIR).child(&staged_name);
        let failed_here = |e: DataFusionError| {
            self.place.error(format!(
                "annotation {where_} failed: {}",
                readable_error(&e)
            ))
        };
        let function = match options.column.kind() {
            InputKind::Words => "span_marker_predict",
            InputKind::Text => "span_marker_predict_text",
        };
        let input_column = || col(datafusion::common::Column::from_name(options.column.name()));
        let entities = ctx.udf(function)?.call(vec![input_column()]);
        // Any file name: the inputs were chosen already.
        let read = ParquetReadOptions::default().file_extension("");
        let frame = ctx
            .read_parquet(&self.place.shown, read)
            .await
            .map_err(failed_here)?;
        let mut columns: Vec<Expr> = frame
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        columns.push(entities.alias(&options.output_column));
        let mut parquet = TableParquetOptions::default();
        parquet.global.max_row_group_size = OUTPUT_ROW_GROUP_ROWS;
        let written = frame
            .select(columns)?
            .write_parquet(
                &staging.shown,
                DataFrameWriteOptions::new().with_single_file_output(true),
                Some(parquet),
            )
            .await
            .map_err(failed_here)?;
        let rows: u64 = written
            .iter()
            .filter_map(|batch| batch.column_by_name("count"))
            .filter_map(|count| count.as_primitive_opt::<UInt64Type>())
            .flat_map(|count| count.iter().flatten())
            .sum();
        if rows as usize != self.rows {
            return Err(self.place.error(format!(
                "{rows} rows were annotated, the file has {}",
                self.rows
            )));
        }
        let failed = ctx
            .read_parquet(&staging.shown, ParquetReadOptions::default())
            .await
            .map_err(failed_here)?
            .filter(
                col(datafusion::common::Column::from_name(
                    &options.output_column,
                ))
                .is_null()
                .and(input_column().is_not_null()),
            )?
            .count()
            .await
            .map_err(failed_here)?;

        // Recorded before it is published: a run stopped in between finds the output its own.
        {
            let mut manifest = manifest.lock().await;
            manifest.manifest.publishing.insert(
                self.name.clone(),
                Publishing {
                    input: self.identity.clone(),
                    staging: staged_name,
                },
            );
            manifest.save().await?;
        }
        match output
            .store
            .copy_if_not_exists(&staging.key, &target.key)
            .await
        {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(target.error(
                    "appeared while the annotation ran; it was not replaced (this run's result \
                     for it is discarded)",
                ))
            }
            Err(e @ StoreError::NotFound { .. }) if target.local.is_some() => {
                return Err(target.error(format!(
                    "cannot be published: {e}; the output was written where the query ran: with \
                     --cluster a local output directory must be on a file system that the \
                     executors share with the client"
                )))
            }
            Err(e) => return Err(target.error(format!("cannot be published: {e}"))),
        }
        let identity = target
            .identity()
            .await?
            .ok_or_else(|| target.error("is gone right after it was published"))?;
        {
            let mut manifest = manifest.lock().await;
            manifest.manifest.publishing.remove(&self.name);
            manifest.manifest.files.insert(
                self.name.clone(),
                Finished {
                    input: self.identity.clone(),
                    output: identity,
                },
            );
            manifest.save().await?;
        }
        staging.delete().await?;
        Ok((self.rows, failed))
    }
}

/// A name for this run's staging folder, different from every earlier run's.
fn run_id() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("run-{}-{}", since.as_micros(), std::process::id())
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
        let ctx = SessionContext::new();
        let list = |pattern: String| {
            let found = futures::executor::block_on(input_files(&ctx, &pattern));
            found.map(|files| {
                files
                    .iter()
                    .map(|f| {
                        Path::new(f)
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect::<Vec<_>>()
            })
        };
        let root = dir.path().to_string_lossy().into_owned();
        assert_eq!(list(root.clone()).unwrap(), ["a.parquet", "b.parquet"]);
        assert_eq!(list(format!("{root}/b*")).unwrap(), ["b.parquet"]);
        assert_eq!(list(format!("{root}/notes.txt")).unwrap(), ["notes.txt"]);
        let error = list(format!("{root}/*.csv")).unwrap_err().to_string();
        assert!(error.contains("names no Parquet file"), "{error}");
    }
}
