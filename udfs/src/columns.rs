//! Arrow columns in and out of the engine functions: token lists and texts of any string type
//! in, candidate and entity lists out. The schemas here are the ones every engine shows.
//!
//! [`predict_column`] is the one path from an input column to an entity column: the SQL
//! functions, bulk annotation and the Polars expressions (through the Arrow C data interface)
//! all go through it. An entity's fields are listed once, in [`entity_fields`] and
//! [`entities_column`]: a new field goes there (and into
//! [`PredictedEntity`](span_marker::PredictedEntity) when the core must compute it).
//!
//! Bulk annotation (local and on a cluster) names the column of a file it reads with an
//! [`InputColumn`], checked against the file's schema before any row is read.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, ListArray, StringArray, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use span_marker::spans::Span;
use span_marker::{PredictOptions, PredictedEntity, SentenceInput};

use crate::error::{Error, Result};
use crate::model::SharedModel;

/// What an input column holds, and so which entity fields come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// A list of words per row (`List<Utf8>`): entities with word offsets.
    Words,
    /// Raw text per row (`Utf8`): entities also carry character offsets and their text.
    Text,
}

impl InputKind {
    /// Whether a column of `data_type` can be read as this kind (a `Null` column always can).
    pub fn accepts(self, data_type: &DataType) -> bool {
        data_type.is_null()
            || match self {
                Self::Words => is_string_list(data_type),
                Self::Text => is_string(data_type),
            }
    }

    /// The other kind.
    pub fn other(self) -> Self {
        match self {
            Self::Words => Self::Text,
            Self::Text => Self::Words,
        }
    }

    /// Why column `column` of type `data_type` cannot be read as this kind; `other_function`
    /// is named as the one to use when the column holds the other kind.
    pub fn mismatch(
        self,
        column: &str,
        data_type: &impl std::fmt::Display,
        other_function: Option<&str>,
    ) -> String {
        let (expected, other) = match self {
            Self::Words => ("a list of words (list of strings)", "raw text"),
            Self::Text => ("String text", "a list of words"),
        };
        let hint = other_function
            .map(|function| format!(" (for {other} use {function})"))
            .unwrap_or_default();
        format!("`{column}` must be {expected}, got {data_type}{hint}")
    }

    /// The type of this kind's entity column.
    pub fn output_type(self) -> DataType {
        list_of(entity_fields(self == Self::Text))
    }
}

/// Which input column of a file holds the sentences.
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

/// How [`predict_column`] annotates a column and names its rows.
#[derive(Debug, Clone)]
pub struct ColumnJob<'a> {
    pub kind: InputKind,
    pub options: &'a PredictOptions,
    /// Fail on the first row that cannot be annotated instead of writing NULL for it.
    pub strict: bool,
    /// What the rows belong to, in messages: a function, a file.
    pub source: &'a str,
    /// The column's name, in messages.
    pub column: &'a str,
    /// The number of the column's first row in `source`.
    pub first_row: usize,
}

/// The entity column of an input column, with one call into the model for all its rows.
///
/// A row that cannot be annotated (a null word, a word longer than the model input) is NULL,
/// logged and returned with its number (counted from `job.first_row`) and the reason; in
/// strict mode the first such row is an [`Error::Row`] instead. A null row is NULL.
pub fn predict_column(
    model: &SharedModel,
    array: &dyn Array,
    job: &ColumnJob<'_>,
) -> Result<(ArrayRef, Vec<(usize, String)>)> {
    let (words, unreadable);
    let rows: Vec<Option<SentenceInput<'_>>> = if array.data_type().is_null() {
        unreadable = Vec::new();
        vec![None; array.len()]
    } else {
        match job.kind {
            InputKind::Words => {
                (words, unreadable) = read_word_rows(array, job.column)?;
                words
                    .iter()
                    .map(|w| w.as_deref().map(SentenceInput::Words))
                    .collect()
            }
            InputKind::Text => {
                unreadable = Vec::new();
                let texts = Strings::try_new(array, job.column)?;
                (0..array.len())
                    .map(|i| texts.get(i).map(SentenceInput::Text))
                    .collect()
            }
        }
    };
    let annotated = model.annotate_rows(&rows, job.options, unreadable)?;
    let failed: Vec<(usize, String)> = annotated
        .failed
        .into_iter()
        .map(|(row, reason)| (job.first_row + row, reason))
        .collect();
    if let Some((row, reason)) = failed.first().filter(|_| job.strict) {
        return Err(Error::Row {
            source_name: job.source.to_owned(),
            row: *row,
            message: format!("`{}` cannot be annotated: {reason}", job.column),
        });
    }
    for (row, reason) in &failed {
        tracing::warn!(
            source = job.source,
            row,
            reason,
            "row not annotated, NULL written"
        );
    }
    let column = entities_column(&annotated.entities, job.kind == InputKind::Text);
    Ok((column, failed))
}

/// Fields of one candidate span: word indices, end exclusive.
pub fn candidate_fields() -> Fields {
    Fields::from(vec![
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ])
}

/// Fields of one entity: word span, label and score, plus the character span and the text
/// for entities found in raw text.
pub fn entity_fields(with_text: bool) -> Fields {
    let mut fields = vec![
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ];
    if with_text {
        fields.extend([
            Field::new("char_start", DataType::Int64, false),
            Field::new("char_end", DataType::Int64, false),
            Field::new("text", DataType::Utf8, false),
        ]);
    }
    Fields::from(fields)
}

/// `List<Struct{fields}>`, the type of candidate and entity columns.
pub fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(fields),
        true,
    )))
}

/// Whether `data_type` is a string type the functions read.
pub fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Whether `data_type` is a list (of any offset size) of strings.
pub fn is_string_list(data_type: &DataType) -> bool {
    match data_type {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            is_string(f.data_type())
        }
        _ => false,
    }
}

/// Strings of any of Arrow's three string layouts.
pub enum Strings<'a> {
    Utf8(&'a StringArray),
    Large(&'a datafusion::arrow::array::LargeStringArray),
    View(&'a datafusion::arrow::array::StringViewArray),
}

impl<'a> Strings<'a> {
    /// `array` as strings, or an error naming `column` and the type found.
    pub fn try_new(array: &'a dyn Array, column: &str) -> Result<Self> {
        match array.data_type() {
            DataType::Utf8 => Ok(Self::Utf8(array.as_string::<i32>())),
            DataType::LargeUtf8 => Ok(Self::Large(array.as_string::<i64>())),
            DataType::Utf8View => Ok(Self::View(array.as_string_view())),
            other => Err(Error::column(
                column,
                format!("expected strings (Utf8, LargeUtf8 or Utf8View), found {other}"),
            )),
        }
    }

    /// The string at `i`, `None` when null.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Self::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Self::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Self::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// One row of a token column: null, words, or a reason the row cannot be read.
pub type WordsRow<'a> = Option<std::result::Result<Vec<&'a str>, String>>;

/// Reads a list-of-strings column row by row. A null row is `None`; a null word makes that
/// row an error (the other rows are unaffected).
pub fn read_words<'a>(array: &'a dyn Array, column: &str) -> Result<Vec<WordsRow<'a>>> {
    let (values, offsets): (&dyn Array, Vec<(usize, usize)>) = match array.data_type() {
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let o = list.offsets();
            (
                list.values().as_ref(),
                o.windows(2)
                    .map(|w| (w[0] as usize, w[1] as usize))
                    .collect(),
            )
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let o = list.offsets();
            (
                list.values().as_ref(),
                o.windows(2)
                    .map(|w| (w[0] as usize, w[1] as usize))
                    .collect(),
            )
        }
        DataType::FixedSizeList(_, size) => {
            let list = array.as_fixed_size_list();
            let size = *size as usize;
            (
                list.values().as_ref(),
                (0..list.len())
                    .map(|r| (r * size, (r + 1) * size))
                    .collect(),
            )
        }
        other => {
            return Err(Error::column(
                column,
                format!("expected a list of words (List<Utf8>), found {other}"),
            ))
        }
    };
    let strings = Strings::try_new(values, &format!("{column} (list elements)"))?;
    Ok(offsets
        .into_iter()
        .enumerate()
        .map(|(row, (start, end))| {
            array.is_valid(row).then(|| {
                (start..end)
                    .map(|i| {
                        strings
                            .get(i)
                            .ok_or_else(|| format!("word {} is null", i - start))
                    })
                    .collect()
            })
        })
        .collect())
}

/// Per row, the words of a list-of-strings column (`None` for a null row or a row that cannot
/// be read), and the rows that cannot be read (a null word) with the reason.
pub type ReadableWords<'a> = (Vec<Option<Vec<&'a str>>>, Vec<(usize, String)>);

/// [`read_words`] with unreadable rows set apart, so that they fail alone.
pub fn read_word_rows<'a>(array: &'a dyn Array, column: &str) -> Result<ReadableWords<'a>> {
    let mut unreadable = Vec::new();
    let rows = read_words(array, column)?
        .into_iter()
        .enumerate()
        .map(|(row, words)| match words {
            Some(Ok(words)) => Some(words),
            Some(Err(reason)) => {
                unreadable.push((row, reason));
                None
            }
            None => None,
        })
        .collect();
    Ok((rows, unreadable))
}

/// A `List<Struct>` column from per-row items: `None` rows are null.
fn list_column<T>(
    rows: &[Option<Vec<T>>],
    fields: Fields,
    columns: impl FnOnce(&[&T]) -> Vec<ArrayRef>,
) -> ArrayRef {
    let items: Vec<&T> = rows.iter().flatten().flatten().collect();
    let values = StructArray::new(fields.clone(), columns(&items), None);
    let offsets = OffsetBuffer::from_lengths(rows.iter().map(|r| r.as_ref().map_or(0, Vec::len)));
    let nulls = rows
        .iter()
        .any(Option::is_none)
        .then(|| NullBuffer::from_iter(rows.iter().map(Option::is_some)));
    let DataType::List(field) = list_of(fields) else {
        unreachable!("list_of builds a list type")
    };
    Arc::new(ListArray::new(field, offsets, Arc::new(values), nulls))
}

fn int64<T>(items: &[&T], f: impl Fn(&T) -> usize) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        items.iter().map(|&t| f(t) as i64),
    ))
}

/// The candidates column: `List<Struct{start, end}>`.
pub fn candidates_column(rows: &[Option<Vec<Span>>]) -> ArrayRef {
    list_column(rows, candidate_fields(), |items| {
        vec![
            int64(items, |s| s.start as usize),
            int64(items, |s| s.end as usize),
        ]
    })
}

/// The entity column: `List<Struct{start, end, label, score[, char_start, char_end, text]}>`.
pub fn entities_column(rows: &[Option<Vec<PredictedEntity>>], with_text: bool) -> ArrayRef {
    list_column(rows, entity_fields(with_text), |items| {
        let mut columns = vec![
            int64(items, |e| e.word_start),
            int64(items, |e| e.word_end),
            Arc::new(StringArray::from_iter_values(
                items.iter().map(|e| e.label.as_str()),
            )) as ArrayRef,
            Arc::new(Float32Array::from_iter_values(
                items.iter().map(|e| e.score),
            )),
        ];
        if with_text {
            columns.extend([
                int64(items, |e| e.char_start.unwrap_or_default()),
                int64(items, |e| e.char_end.unwrap_or_default()),
                Arc::new(StringArray::from_iter_values(
                    items.iter().map(|e| e.text.as_str()),
                )) as ArrayRef,
            ]);
        }
        columns
    })
}
