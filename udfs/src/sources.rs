//! Table sources for training and evaluation: Parquet, CSV and JSON-lines files, or a SQL
//! query over them, read through DataFusion into [`AnnotatedRows`].
//!
//! Token and tag columns are lists (`List<Utf8>`, `List<Int*>`); in CSV, which has no lists,
//! they are strings of whitespace-separated words and tags.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use serde::Deserialize;
use span_marker::context::DocumentPosition;

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

/// Where annotated sentences come from (`[sources.train]` in a pipeline file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSource {
    /// A file; registered as the table `data` for `query`.
    #[serde(default)]
    pub path: Option<PathBuf>,
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
    /// A source reading `path` with the default columns (`tokens`, `ner_tags`).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            format: None,
            query: None,
            tokens_column: default_tokens(),
            tags_column: default_tags(),
            document_id_column: None,
            sentence_id_column: None,
        }
    }

    /// How errors name this source.
    pub fn name(&self) -> String {
        match (&self.path, &self.query) {
            (Some(path), None) => path.display().to_string(),
            (_, Some(query)) => format!("query `{query}`"),
            (None, None) => "<no source>".into(),
        }
    }

    /// Checks what can be checked without reading: a path or a query, a known format, an
    /// existing file, both document columns or neither.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        match (&self.path, &self.query) {
            (None, None) => return Err(("path".into(), "give `path` or `query`".into())),
            (Some(path), _) => {
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
            (None, Some(_)) => {}
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

    fn file_format(&self) -> Option<Format> {
        self.format
            .or_else(|| self.path.as_deref().and_then(Format::from_path))
    }

    /// Reads every row.
    pub async fn read(&self, ctx: &SessionContext) -> Result<AnnotatedRows> {
        self.validate()
            .map_err(|(key, message)| Error::file(self.name(), format!("`{key}`: {message}")))?;
        if let (Some(path), Some(Format::Conll)) = (&self.path, self.file_format()) {
            let sentences = span_marker::train::read_conll(path)?;
            let (tokens, tags) = sentences.into_iter().map(|s| (s.words, s.tags)).unzip();
            return Ok(AnnotatedRows {
                source: self.name(),
                tokens,
                tags: Tags::Names(tags),
                documents: None,
            });
        }
        let batches = self
            .read_batches(ctx)
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

    /// The source's record batches: its file registered as the table `data`, then its query.
    async fn read_batches(&self, ctx: &SessionContext) -> Result<Vec<RecordBatch>> {
        if let Some(path) = &self.path {
            let table = path.to_string_lossy();
            match self.file_format() {
                Some(Format::Parquet) => {
                    check_parquet_footer(path)?;
                    ctx.register_parquet("data", table.as_ref(), ParquetReadOptions::default())
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
        if self.path.is_some() {
            ctx.deregister_table("data")?;
        }
        Ok(batches?)
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
        })
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

/// Reads a Parquet file's footer with the checked reader before DataFusion's reader sees the
/// file: parquet 59's metadata push decoder panics on a footer that claims more metadata than
/// the file holds (a subtraction without a check), where this one reports a corrupt file.
fn check_parquet_footer(path: &Path) -> Result<()> {
    // A directory of files: DataFusion lists and reads them.
    if path.is_file() {
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
