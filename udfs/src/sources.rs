//! Table sources for training and evaluation: Parquet, CSV and JSON-lines files, a split of a
//! Hugging Face Hub dataset, or a SQL query over them, read through DataFusion into
//! [`AnnotatedRows`].
//!
//! Token and tag columns are lists (`List<Utf8>`, `List<Int*>`); in CSV, which has no lists,
//! they are strings of whitespace-separated words and tags. Integer tags of Parquet files
//! written by Hugging Face `datasets` (Hub datasets among them) carry their label names in the
//! files' `huggingface` metadata (`ClassLabel` features), which the rows keep
//! ([`AnnotatedRows::labels`]).
//!
//! # Object stores
//!
//! A `path` may be a URL of an object store this build serves ([`crate::store`]):
//! `s3://bucket/key` with the `s3` feature (on in the command line), credentials and endpoint
//! from the standard AWS environment. Its format comes from the key's extension (or `format`),
//! and Parquet, CSV and JSON lines are read through the session's stores; CoNLL files are read
//! from local disks only, and a glob (`s3://bucket/data/*.parquet`) belongs in a `query`
//! (`SELECT * FROM 's3://bucket/data/*.parquet'`, in a session with URL tables). Validation
//! checks the scheme and the bucket, not that the object exists: reading does, and its errors
//! name the URL.
//!
//! ```toml
//! [sources.train]
//! path = "s3://my-bucket/conll/train.parquet"
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use serde::Deserialize;
use span_marker::context::DocumentPosition;
use span_marker::hub::dataset::{class_label_names, dataset_split, DatasetRef, DatasetSplit};
use span_marker::hub::HubOptions;

use crate::columns::{is_string, read_words, Strings};
use crate::dataset::{AnnotatedRows, Tags};
use crate::error::{Error, Result};

/// File formats a source can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
    /// JSON lines (one object per line).
    Json,
    /// `word TAG` per line, a blank line between sentences (tags as strings).
    Conll,
}

impl Format {
    /// The format a file name implies (`.parquet`, `.csv`, `.json`/`.jsonl`/`.ndjson`).
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            "conll" => Some(Self::Conll),
            _ => None,
        }
    }
}

/// Where annotated sentences come from (`[sources.train]` in a pipeline file): a file, a Hub
/// dataset's split, or a query (over either, or over files named in it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSource {
    /// A file, or an object-store URL (`s3://bucket/train.parquet`); registered as the table
    /// `data` for `query`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hugging Face Hub dataset id (`name` or `org/name`), read as Parquet through the local
    /// Hugging Face cache; registered as the table `data` for `query`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// The dataset's config (subset), when it has several.
    #[serde(default)]
    pub config: Option<String>,
    /// The dataset's split (`train`, `validation`, `test`, ...).
    #[serde(default)]
    pub split: Option<String>,
    /// The dataset's branch, tag or commit; `main` when unset.
    #[serde(default)]
    pub revision: Option<String>,
    /// Only the first `rows` rows of the file or split (before `query`), as
    /// `dataset.select(range(rows))`.
    #[serde(default)]
    pub rows: Option<usize>,
    /// The file's format when its extension does not say.
    #[serde(default)]
    pub format: Option<Format>,
    /// A SQL query giving the rows (over `data`, or over files by path: `FROM 'x.parquet'`).
    #[serde(default)]
    pub query: Option<String>,
    /// The list-of-words column.
    #[serde(default = "default_tokens")]
    pub tokens_column: String,
    /// The tags column: ids into the label list, or tag strings.
    #[serde(default = "default_tags")]
    pub tags_column: String,
    /// Document id column, for document-level context (with `sentence_id_column`).
    #[serde(default)]
    pub document_id_column: Option<String>,
    /// Position of the sentence in its document.
    #[serde(default)]
    pub sentence_id_column: Option<String>,
}

fn default_tokens() -> String {
    "tokens".into()
}

fn default_tags() -> String {
    "ner_tags".into()
}

impl TableSource {
    /// A source reading `path`, a file or an object-store URL, with the default columns
    /// (`tokens`, `ner_tags`).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::default()
        }
    }

    /// A source reading `split` of the Hub dataset `id` with the default columns.
    pub fn hub_dataset(id: impl Into<String>, split: impl Into<String>) -> Self {
        Self {
            dataset: Some(id.into()),
            split: Some(split.into()),
            ..Self::default()
        }
    }

    /// A source giving the rows of a SQL `query` (over files named in it, `FROM 'x.parquet'`,
    /// or tables of the session).
    pub fn query(query: impl Into<String>) -> Self {
        Self {
            query: Some(query.into()),
            ..Self::default()
        }
    }
}

/// No table yet: set `path`, `dataset` or `query`.
impl Default for TableSource {
    fn default() -> Self {
        Self {
            path: None,
            dataset: None,
            config: None,
            split: None,
            revision: None,
            rows: None,
            format: None,
            query: None,
            tokens_column: default_tokens(),
            tags_column: default_tags(),
            document_id_column: None,
            sentence_id_column: None,
        }
    }
}

impl TableSource {
    /// The Hub dataset split this source reads, when it reads one.
    pub fn dataset_ref(&self) -> Option<DatasetRef> {
        let id = self.dataset.as_ref()?;
        Some(DatasetRef::new(
            id.clone(),
            self.config.clone(),
            self.split.clone().unwrap_or_default(),
        ))
    }

    /// How errors name this source.
    pub fn name(&self) -> String {
        match (&self.path, self.dataset_ref(), &self.query) {
            (_, _, Some(query)) => format!("query `{query}`"),
            (Some(path), _, None) => path.display().to_string(),
            (None, Some(dataset), None) => format!("dataset {dataset}"),
            (None, None, None) => "<no source>".into(),
        }
    }

    /// Checks what can be checked without reading: a path, a dataset or a query, a known
    /// format, an existing file (for a URL, a scheme this build serves and a bucket), a
    /// dataset's split, both document columns or neither.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let dataset_only = [
            ("config", self.config.is_some()),
            ("split", self.split.is_some()),
            ("revision", self.revision.is_some()),
        ];
        if self.dataset.is_none() {
            if let Some((key, _)) = dataset_only.iter().find(|(_, set)| *set) {
                return Err(((*key).into(), "is a setting of a `dataset` source".into()));
            }
        }
        if self.rows == Some(0) {
            return Err(("rows".into(), "must be at least 1".into()));
        }
        match (&self.path, &self.dataset, &self.query) {
            (None, None, None) => {
                return Err(("path".into(), "give `path`, `dataset` or `query`".into()))
            }
            (Some(_), Some(_), _) => {
                return Err((
                    "dataset".into(),
                    "give `path` or `dataset`, not both".into(),
                ))
            }
            (None, Some(id), _) => {
                if self.format.is_some_and(|f| f != Format::Parquet) {
                    return Err(("format".into(), "a Hub dataset is read as Parquet".into()));
                }
                match &self.split {
                    None => {
                        return Err((
                            "split".into(),
                            format!(
                            "name the split of {id:?} to read (`train`, `validation`, `test`, ...)"
                        ),
                        ))
                    }
                    Some(split) if split.trim().is_empty() => {
                        return Err(("split".into(), "is empty".into()))
                    }
                    Some(_) => {}
                }
            }
            (Some(path), None, _) if self.url().is_some() => {
                let url = self.url().unwrap_or_default();
                crate::store::check_location(url).map_err(|message| ("path".into(), message))?;
                if self.file_format() == Some(Format::Conll) {
                    return Err((
                        "path".into(),
                        format!("{url}: a CoNLL file is read from a local disk: copy it there, or convert it to Parquet"),
                    ));
                }
                if url.contains(['*', '?', '[']) {
                    return Err((
                        "path".into(),
                        format!("{url}: a path names one object; read several with a `query` (`SELECT * FROM '{url}'`)"),
                    ));
                }
                if self.format.is_none() && Format::from_path(path).is_none() {
                    return Err((
                        "format".into(),
                        format!(
                            "cannot tell the format of {url} from its extension: set `format` to parquet, csv or json"
                        ),
                    ));
                }
            }
            (Some(path), None, _) => {
                if !path.is_file() {
                    return Err(("path".into(), format!("{} is not a file", path.display())));
                }
                if self.format.is_none() && Format::from_path(path).is_none() {
                    return Err((
                        "format".into(),
                        format!(
                            "cannot tell the format of {} from its extension: set `format` to parquet, csv, json or conll",
                            path.display()
                        ),
                    ));
                }
            }
            (None, None, Some(_)) => {
                if self.rows.is_some() {
                    return Err((
                        "rows".into(),
                        "limits a `path` or `dataset`; write `LIMIT` in the query".into(),
                    ));
                }
            }
        }
        if self.file_format() == Some(Format::Conll) && self.query.is_some() {
            return Err((
                "query".into(),
                "a CoNLL file is read as it is: convert it to Parquet to query it".into(),
            ));
        }
        if self.document_id_column.is_some() != self.sentence_id_column.is_some() {
            return Err((
                "document_id_column".into(),
                "document context needs both `document_id_column` and `sentence_id_column`".into(),
            ));
        }
        Ok(())
    }

    /// `path` when it is an object-store URL (`s3://...`; a `file://` URL is not one).
    fn url(&self) -> Option<&str> {
        self.path
            .as_deref()
            .and_then(Path::to_str)
            .filter(|path| crate::store::is_store_url(path))
    }

    fn file_format(&self) -> Option<Format> {
        self.format
            .or_else(|| self.path.as_deref().and_then(Format::from_path))
            .or(self.dataset.as_ref().map(|_| Format::Parquet))
    }

    /// Reads every row (the first `rows` when set).
    ///
    /// A dataset's files are downloaded first when the cache lacks them (a blocking call).
    pub async fn read(&self, ctx: &SessionContext) -> Result<AnnotatedRows> {
        self.checked()?;
        if let (Some(path), Some(Format::Conll)) = (&self.path, self.file_format()) {
            let sentences = span_marker::train::read_conll(path)?;
            let (mut tokens, mut tags): (Vec<_>, Vec<_>) =
                sentences.into_iter().map(|s| (s.words, s.tags)).unzip();
            if let Some(rows) = self.rows {
                tokens.truncate(rows);
                tags.truncate(rows);
            }
            return Ok(AnnotatedRows {
                source: self.name(),
                tokens,
                tags: Tags::Names(tags),
                documents: None,
                labels: None,
            });
        }
        let files = self.parquet_files()?;
        let batches = self
            .read_batches(ctx, files.as_deref())
            .await
            .map_err(|e| match (&self.path, e) {
                // DataFusion's errors about a file (a corrupt footer, a bad CSV line) do not
                // say which file.
                (Some(path), Error::DataFusion(e)) => {
                    Error::file(path, format!("cannot read: {}", e.strip_backtrace()))
                }
                (_, e) => e,
            })?;
        self.rows_from_batches(&batches, &self.name())
    }

    /// The split of a `dataset` source, its Parquet files downloaded into the Hugging Face
    /// cache when missing (a blocking call); `None` for other sources.
    pub fn hub_split(&self) -> Result<Option<DatasetSplit>> {
        let Some(dataset) = self.dataset_ref() else {
            return Ok(None);
        };
        let options = HubOptions {
            revision: self.revision.clone(),
            ..HubOptions::default()
        };
        Ok(Some(dataset_split(&dataset, &options)?))
    }

    /// [`validate`](Self::validate) as an error naming the source and the key.
    fn checked(&self) -> Result<()> {
        self.validate()
            .map_err(|(key, message)| Error::file(self.name(), format!("`{key}`: {message}")))
    }

    /// The rows of a `dataset` source (its first `rows`, in order) as record batches whose
    /// schema keeps the files' metadata; `query` is not applied.
    pub fn dataset_batches(&self) -> Result<Vec<RecordBatch>> {
        self.checked()?;
        match (self.dataset.is_some(), self.parquet_files()?) {
            (true, Some(files)) => read_parquet_rows(&files, self.rows),
            _ => Err(Error::file(self.name(), "is not a `dataset` source")),
        }
    }

    /// The Parquet files this source reads in order, when it reads Parquet: a dataset's split
    /// (downloaded when the cache lacks it) or the Parquet file at `path`.
    fn parquet_files(&self) -> Result<Option<Vec<PathBuf>>> {
        if let Some(split) = self.hub_split()? {
            return Ok(Some(split.files));
        }
        Ok(match (&self.path, self.file_format()) {
            (Some(path), Some(Format::Parquet)) if self.url().is_none() && path.is_file() => {
                Some(vec![path.clone()])
            }
            _ => None,
        })
    }

    /// The source's record batches: its file or dataset registered as the table `data`
    /// (its first `rows` rows, in order), then its query.
    async fn read_batches(
        &self,
        ctx: &SessionContext,
        parquet: Option<&[PathBuf]>,
    ) -> Result<Vec<RecordBatch>> {
        if let (Some(files), true) = (parquet, self.rows.is_some() || self.dataset.is_some()) {
            // Read in file order (DataFusion's scans may interleave files and row groups),
            // stopping after `rows`.
            let batches = read_parquet_rows(files, self.rows)?;
            if self.query.is_none() {
                return Ok(batches);
            }
            let schema = batches
                .first()
                .map(RecordBatch::schema)
                .ok_or_else(|| Error::file(self.name(), "has no rows"))?;
            let table = MemTable::try_new(schema, vec![batches])?;
            ctx.register_table("data", Arc::new(table))?;
        } else if let Some(path) = &self.path {
            if let Some(url) = self.url() {
                // DataFusion reads a missing object as an empty prefix.
                if !crate::store::exists(ctx, url).await? {
                    return Err(Error::file(url, "no such object"));
                }
            }
            let table = path.to_string_lossy();
            match self.file_format() {
                Some(Format::Parquet) => {
                    check_parquet_footer(path)?;
                    // The metadata may hold the tags' label names.
                    let options = ParquetReadOptions::default().skip_metadata(false);
                    ctx.register_parquet("data", table.as_ref(), options)
                        .await?
                }
                Some(Format::Csv) => {
                    ctx.register_csv("data", table.as_ref(), CsvReadOptions::new())
                        .await?
                }
                Some(Format::Json) => {
                    let extension = path
                        .extension()
                        .map(|e| format!(".{}", e.to_string_lossy()))
                        .unwrap_or_default();
                    let options = JsonReadOptions {
                        file_extension: &extension,
                        ..Default::default()
                    };
                    ctx.register_json("data", table.as_ref(), options).await?
                }
                Some(Format::Conll) | None => unreachable!("validate checked the format"),
            }
        }
        let query = self.query.as_deref().unwrap_or("SELECT * FROM data");
        let batches = ctx.sql(query).await?.collect().await;
        if self.path.is_some() || self.dataset.is_some() {
            ctx.deregister_table("data")?;
        }
        let mut batches = batches?;
        if let (Some(rows), None) = (self.rows, parquet) {
            batches = first_rows(batches, rows);
        }
        Ok(batches)
    }

    /// The annotated rows of `batches`, read from this source's columns; `source` names them
    /// in errors.
    pub fn rows_from_batches(
        &self,
        batches: &[RecordBatch],
        source: &str,
    ) -> Result<AnnotatedRows> {
        let source = source.to_owned();
        let column = |batch: &RecordBatch, name: &str| -> Result<ArrayRef> {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                let found: Vec<String> = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                Error::column(name, format!("not in {source}; its columns are {found:?}"))
            })
        };
        let mut tokens = Vec::new();
        let mut tag_ids: Vec<Vec<i64>> = Vec::new();
        let mut tag_names: Vec<Vec<String>> = Vec::new();
        let mut documents = self.document_id_column.as_ref().map(|_| Vec::new());
        let mut row = 0;
        for batch in batches {
            let token_array = column(batch, &self.tokens_column)?;
            let tag_array = column(batch, &self.tags_column)?;
            if self.dataset.is_some() && is_string(token_array.data_type()) {
                // Only CSV, which has no lists, holds words as one string.
                return Err(Error::column(
                    &self.tokens_column,
                    format!(
                        "in {source} holds strings ({}), not lists of words (List<Utf8>)",
                        token_array.data_type()
                    ),
                ));
            }
            let words = string_lists(&token_array, &self.tokens_column, &source, row)?;
            tokens.extend(words);
            if is_string(tag_array.data_type()) || is_string_list(tag_array.data_type()) {
                tag_names.extend(string_lists(&tag_array, &self.tags_column, &source, row)?);
            } else {
                tag_ids.extend(id_lists(&tag_array, &self.tags_column, &source, row)?);
            }
            if let (Some(docs), Some(doc_col), Some(sent_col)) = (
                documents.as_mut(),
                &self.document_id_column,
                &self.sentence_id_column,
            ) {
                let ids = cast(&column(batch, doc_col)?, &DataType::Utf8)?;
                let ids = ids.as_string::<i32>();
                let positions = cast(&column(batch, sent_col)?, &DataType::Int64)
                    .map_err(|e| Error::column(sent_col, format!("expected integers: {e}")))?;
                let positions = positions.as_primitive::<Int64Type>();
                for i in 0..batch.num_rows() {
                    if ids.is_null(i) || positions.is_null(i) {
                        return Err(Error::Row {
                            source_name: source.clone(),
                            row: row + i,
                            message: format!("`{doc_col}` or `{sent_col}` is null"),
                        });
                    }
                    docs.push(DocumentPosition::new(ids.value(i), positions.value(i)));
                }
            }
            row += batch.num_rows();
        }
        let labels = match batches.first() {
            Some(batch) if tag_names.is_empty() => {
                stored_labels(&batch.schema(), &self.tags_column)?
            }
            _ => None,
        };
        let tags = match (tag_ids.is_empty(), tag_names.is_empty()) {
            (_, false) if !tag_ids.is_empty() => {
                return Err(Error::column(
                    &self.tags_column,
                    "mixes integer and string tags across batches",
                ))
            }
            (_, false) => Tags::Names(tag_names),
            _ => Tags::Ids(tag_ids),
        };
        if tokens.is_empty() {
            return Err(Error::file(&source, "has no rows"));
        }
        Ok(AnnotatedRows {
            source,
            tokens,
            tags,
            documents,
            labels,
        })
    }
}

/// The first `rows` rows of `files`, read in order.
fn read_parquet_rows(files: &[PathBuf], rows: Option<usize>) -> Result<Vec<RecordBatch>> {
    let mut left = rows.unwrap_or(usize::MAX);
    let mut batches = Vec::new();
    for path in files {
        if left == 0 {
            break;
        }
        let builder = open_parquet(path)?;
        // The builder's schema has the file's metadata (the label names), the batches' not.
        let schema = builder.schema().clone();
        let reader = builder
            .build()
            .map_err(|e| Error::file(path, format!("not a readable Parquet file: {e}")))?;
        for batch in reader {
            let batch = batch
                .and_then(|b| b.with_schema(schema.clone()))
                .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
            let take = batch.num_rows().min(left);
            batches.push(batch.slice(0, take));
            left -= take;
            if left == 0 {
                break;
            }
        }
    }
    Ok(batches)
}

/// The first `rows` rows of `batches`.
fn first_rows(batches: Vec<RecordBatch>, rows: usize) -> Vec<RecordBatch> {
    let mut left = rows;
    let mut kept = Vec::new();
    for batch in batches {
        if left == 0 {
            break;
        }
        let take = batch.num_rows().min(left);
        kept.push(batch.slice(0, take));
        left -= take;
    }
    kept
}

/// The label names that a table's `huggingface` schema metadata (written by Hugging Face
/// `datasets`) stores for the tags `column` (its `ClassLabel` feature), when it does.
pub fn stored_labels(schema: &Schema, column: &str) -> Result<Option<Vec<String>>> {
    match schema.metadata().get(HF_METADATA_KEY) {
        Some(metadata) => {
            class_label_names(metadata, column).map_err(|message| Error::column(column, message))
        }
        None => Ok(None),
    }
}

fn is_string_list(data_type: &DataType) -> bool {
    crate::columns::is_string_list(data_type)
}

/// Rows of words from a list-of-strings column, or from a string column of
/// whitespace-separated words (CSV). Nulls are errors naming the row.
fn string_lists(
    array: &ArrayRef,
    column: &str,
    source: &str,
    first_row: usize,
) -> Result<Vec<Vec<String>>> {
    let null_row = |row: usize, what: &str| Error::Row {
        source_name: source.to_owned(),
        row: first_row + row,
        message: format!("`{column}` {what}"),
    };
    if is_string(array.data_type()) {
        let strings = Strings::try_new(array.as_ref(), column)?;
        return (0..array.len())
            .map(|i| {
                let text = strings.get(i).ok_or_else(|| null_row(i, "is null"))?;
                Ok(text.split_whitespace().map(str::to_owned).collect())
            })
            .collect();
    }
    read_words(array.as_ref(), column)?
        .into_iter()
        .enumerate()
        .map(|(i, words)| match words {
            None => Err(null_row(i, "is null")),
            Some(Err(reason)) => Err(null_row(i, &format!("has a null element: {reason}"))),
            Some(Ok(words)) => Ok(words.into_iter().map(str::to_owned).collect()),
        })
        .collect()
}

/// Rows of integer tag ids from a list-of-integers column.
fn id_lists(
    array: &ArrayRef,
    column: &str,
    source: &str,
    first_row: usize,
) -> Result<Vec<Vec<i64>>> {
    let as_i64 = match array.data_type() {
        DataType::List(f) if f.data_type().is_integer() => cast(
            array,
            &DataType::List(std::sync::Arc::new(
                f.as_ref().clone().with_data_type(DataType::Int64),
            )),
        )?,
        DataType::LargeList(f) if f.data_type().is_integer() => cast(
            array,
            &DataType::List(std::sync::Arc::new(
                f.as_ref().clone().with_data_type(DataType::Int64),
            )),
        )?,
        other => {
            return Err(Error::column(
                column,
                format!("expected tag ids (List<Int>) or tag strings (List<Utf8>), found {other}"),
            ))
        }
    };
    let list = as_i64.as_list::<i32>();
    (0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Err(Error::Row {
                    source_name: source.to_owned(),
                    row: first_row + i,
                    message: format!("`{column}` is null"),
                });
            }
            let values = list.value(i);
            let values = values.as_primitive::<Int64Type>();
            if values.null_count() > 0 {
                return Err(Error::Row {
                    source_name: source.to_owned(),
                    row: first_row + i,
                    message: format!("`{column}` has a null tag"),
                });
            }
            Ok(values.values().to_vec())
        })
        .collect()
}

/// The Parquet metadata key under which Hugging Face `datasets` stores a table's features.
const HF_METADATA_KEY: &str = "huggingface";

/// Reads a Parquet file's footer with the checked reader before DataFusion's reader sees the
/// file: parquet 59's metadata push decoder panics on a footer that claims more metadata than
/// the file holds (a subtraction without a check), where this one reports a corrupt file.
fn check_parquet_footer(path: &Path) -> Result<()> {
    // A directory of files: DataFusion lists and reads them. An object in a store: DataFusion
    // reads its footer (a footer check through the store is left to a later change).
    if !crate::store::is_store_url(&path.to_string_lossy()) && path.is_file() {
        open_parquet(path)?;
    }
    Ok(())
}

/// A reader of the Parquet file at `path`, its footer read and checked; an error names the
/// file.
pub(crate) fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::file(path, format!("not a readable Parquet file: {e}")))
}
