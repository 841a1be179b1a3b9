//! Polars integration: `col("tokens").span_marker().predict(&model)` and friends in lazy
//! pipelines, and training from a `LazyFrame`. Output columns have the schemas of the SQL
//! functions.
//!
//! ```no_run
//! use polars::prelude::*;
//! use span_marker_udfs::polars_expr::SpanMarkerExt;
//! use span_marker_udfs::SharedModel;
//!
//! let model = SharedModel::load("bundled", "cpu")?;
//! let text = Column::new("text".into(), ["Angela Merkel visited Paris."]);
//! let entities = DataFrame::new(1, vec![text])?
//!     .lazy()
//!     .with_column(col("text").span_marker().predict_text(&model).alias("entities"))
//!     .collect()?;
//! println!("{entities}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use polars::chunked_array::builder::get_list_builder;
use polars::prelude::*;
use span_marker::context::DocumentPosition;
use span_marker::spans::candidate_spans;
use span_marker::train::TrainingArguments;
use span_marker::{PredictOptions, PredictedEntity, SentenceInput};

use crate::dataset::{AnnotatedRows, Tags};
use crate::error::{Error, Result};
use crate::model::SharedModel;
use crate::training::{self, ModelSpec, TrainReport};

/// Adds `.span_marker()` to Polars expressions.
pub trait SpanMarkerExt {
    /// SpanMarker operations on this expression.
    fn span_marker(self) -> SpanMarkerNameSpace;
}

impl SpanMarkerExt for Expr {
    fn span_marker(self) -> SpanMarkerNameSpace {
        SpanMarkerNameSpace(self)
    }
}

/// SpanMarker operations on an expression (a `List<String>` of words or a `String` text).
pub struct SpanMarkerNameSpace(Expr);

impl SpanMarkerNameSpace {
    /// Every span of up to `entity_max_length` words: `List<Struct{start, end}>`.
    pub fn candidates(self, entity_max_length: usize) -> Expr {
        self.0.map(
            move |column| {
                if entity_max_length == 0 {
                    polars_bail!(ComputeError: "span_marker.candidates: `entity_max_length` must be at least 1");
                }
                let spans: Vec<Option<Vec<_>>> = with_word_rows(&column, |rows| {
                    Ok(rows
                        .iter()
                        .map(|r| r.as_ref().map(|w| candidate_spans(w.len(), entity_max_length).collect()))
                        .collect())
                })?;
                let starts: Vec<i64> = spans.iter().flatten().flatten().map(|s| s.start as i64).collect();
                let ends: Vec<i64> = spans.iter().flatten().flatten().map(|s| s.end as i64).collect();
                let lengths: Vec<Option<usize>> = spans.iter().map(|r| r.as_ref().map(Vec::len)).collect();
                let fields = [Series::new("start".into(), starts), Series::new("end".into(), ends)];
                list_of_structs(column.name().clone(), &fields, &lengths).map(Column::from)
            },
            |_, field| Ok(Field::new(field.name().clone(), candidate_dtype())),
        )
    }

    /// Entities of a list-of-words column: `List<Struct{start, end, label, score}>`.
    pub fn predict(self, model: &SharedModel) -> Expr {
        self.predict_with(model, PredictKwargs::default())
    }

    /// Entities of a text column: `List<Struct{start, end, label, score, char_start,
    /// char_end, text}>`.
    pub fn predict_text(self, model: &SharedModel) -> Expr {
        self.predict_text_with(model, PredictKwargs::default())
    }

    /// [`Self::predict`] with options.
    pub fn predict_with(self, model: &SharedModel, kwargs: PredictKwargs) -> Expr {
        let model = model.clone();
        self.0.map(
            move |column| {
                with_word_rows(&column, |words| {
                    let rows: Vec<Option<SentenceInput<'_>>> = words
                        .iter()
                        .map(|w| w.as_deref().map(SentenceInput::Words))
                        .collect();
                    predict_rows(&model, &rows, &kwargs, column.name().clone(), false)
                })
            },
            |_, field| Ok(Field::new(field.name().clone(), entity_dtype(false))),
        )
    }

    /// [`Self::predict_text`] with options.
    pub fn predict_text_with(self, model: &SharedModel, kwargs: PredictKwargs) -> Expr {
        let model = model.clone();
        self.0.map(
            move |column| {
                let texts = column.str().map_err(|_| {
                    polars_err!(SchemaMismatch: "span_marker.predict_text: `{}` must be String, got {}{}",
                        column.name(), column.dtype(),
                        if matches!(column.dtype(), DataType::List(_)) { " (for words use predict)" } else { "" })
                })?;
                let rows: Vec<Option<SentenceInput<'_>>> =
                    texts.iter().map(|t| t.map(SentenceInput::Text)).collect();
                predict_rows(&model, &rows, &kwargs, column.name().clone(), true)
            },
            |_, field| Ok(Field::new(field.name().clone(), entity_dtype(true))),
        )
    }
}

/// Options of the prediction expressions.
#[derive(Debug, Clone, Default)]
pub struct PredictKwargs {
    pub options: PredictOptions,
    /// Fail on a row that cannot be annotated instead of returning null for it.
    pub strict: bool,
}

fn candidate_dtype() -> DataType {
    DataType::List(Box::new(DataType::Struct(vec![
        Field::new("start".into(), DataType::Int64),
        Field::new("end".into(), DataType::Int64),
    ])))
}

fn entity_dtype(with_text: bool) -> DataType {
    let mut fields = vec![
        Field::new("start".into(), DataType::Int64),
        Field::new("end".into(), DataType::Int64),
        Field::new("label".into(), DataType::String),
        Field::new("score".into(), DataType::Float32),
    ];
    if with_text {
        fields.extend([
            Field::new("char_start".into(), DataType::Int64),
            Field::new("char_end".into(), DataType::Int64),
            Field::new("text".into(), DataType::String),
        ]);
    }
    DataType::List(Box::new(DataType::Struct(fields)))
}

/// The inner values of a list column and each row's range in them (`None` for a null row).
fn list_rows(
    column: &Column,
    what: &str,
) -> PolarsResult<(Series, Vec<Option<std::ops::Range<usize>>>)> {
    let list = column.list().map_err(|_| {
        polars_err!(SchemaMismatch: "span_marker: `{}` must be {what}, got {}{}",
            column.name(), column.dtype(),
            if column.dtype() == &DataType::String { " (for text use predict_text)" } else { "" })
    })?;
    let list = list.rechunk();
    let array = list.downcast_as_array();
    let offsets = array.offsets().as_slice();
    let ranges = list
        .is_not_null()
        .iter()
        .enumerate()
        .map(|(r, valid)| {
            (valid == Some(true)).then(|| offsets[r] as usize..offsets[r + 1] as usize)
        })
        .collect();
    Ok((list.get_inner(), ranges))
}

/// Calls `f` with the rows of a `List<String>` column: null rows are `None`; a null word is an
/// error naming its row.
fn with_word_rows<R>(
    column: &Column,
    f: impl FnOnce(&[Option<Vec<&str>>]) -> PolarsResult<R>,
) -> PolarsResult<R> {
    let (inner, ranges) = list_rows(column, "a list of words (List<String>)")?;
    let strings = inner.str().map_err(|_| {
        polars_err!(SchemaMismatch: "span_marker: `{}` must hold strings, got {}", column.name(), inner.dtype())
    })?;
    let words: Vec<Option<&str>> = strings.iter().collect();
    let rows = ranges
        .into_iter()
        .enumerate()
        .map(|(row, range)| {
            range
                .map(|range| {
                    words[range].iter().enumerate().map(|(i, w)| {
                        w.ok_or_else(|| polars_err!(ComputeError: "span_marker: `{}` row {row}: word {} is null", column.name(), i))
                    }).collect::<PolarsResult<Vec<&str>>>()
                })
                .transpose()
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    f(&rows)
}

/// A list column whose row `r` holds `lengths[r]` consecutive struct rows made of `fields`.
fn list_of_structs(
    name: PlSmallStr,
    fields: &[Series],
    lengths: &[Option<usize>],
) -> PolarsResult<Series> {
    let total = fields.first().map_or(0, |s| s.len());
    let values = StructChunked::from_series("".into(), total, fields.iter())?.into_series();
    let mut builder = get_list_builder(values.dtype(), total, lengths.len(), name);
    let mut offset = 0;
    for length in lengths {
        match length {
            Some(length) => {
                builder.append_series(&values.slice(offset as i64, *length))?;
                offset += length;
            }
            None => builder.append_null(),
        }
    }
    Ok(builder.finish().into_series())
}

fn predict_rows(
    model: &SharedModel,
    rows: &[Option<SentenceInput<'_>>],
    kwargs: &PredictKwargs,
    name: PlSmallStr,
    with_text: bool,
) -> PolarsResult<Column> {
    let annotated = model.annotate_rows(rows, &kwargs.options, Vec::new())?;
    for (row, reason) in &annotated.failed {
        if kwargs.strict {
            polars_bail!(ComputeError: "span_marker: `{name}` row {row} cannot be annotated: {reason}")
        }
        tracing::warn!(column = %name, row, reason, "row not annotated, null returned");
    }
    let entities = annotated.entities;
    let all: Vec<&PredictedEntity> = entities.iter().flatten().flatten().collect();
    let int = |n: &str, f: fn(&PredictedEntity) -> usize| {
        Series::new(
            n.into(),
            all.iter().map(|e| f(e) as i64).collect::<Vec<_>>(),
        )
    };
    let mut fields = vec![
        int("start", |e| e.word_start),
        int("end", |e| e.word_end),
        Series::new(
            "label".into(),
            all.iter().map(|e| e.label.as_str()).collect::<Vec<_>>(),
        ),
        Series::new(
            "score".into(),
            all.iter().map(|e| e.score).collect::<Vec<_>>(),
        ),
    ];
    if with_text {
        fields.extend([
            int("char_start", |e| e.char_start.unwrap_or_default()),
            int("char_end", |e| e.char_end.unwrap_or_default()),
            Series::new(
                "text".into(),
                all.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            ),
        ]);
    }
    let lengths: Vec<Option<usize>> = entities.iter().map(|r| r.as_ref().map(Vec::len)).collect();
    list_of_structs(name, &fields, &lengths).map(Column::from)
}

/// Column names of an annotated frame.
#[derive(Debug, Clone)]
pub struct TrainColumns {
    pub tokens: String,
    /// Tag ids (`List<Int>`, needs `ModelSpec::labels`) or tag strings (`List<String>`).
    pub tags: String,
    pub document_id: Option<String>,
    pub sentence_id: Option<String>,
}

impl Default for TrainColumns {
    fn default() -> Self {
        Self {
            tokens: "tokens".into(),
            tags: "ner_tags".into(),
            document_id: None,
            sentence_id: None,
        }
    }
}

/// The annotated rows of a lazy frame.
pub fn annotated_rows(
    frame: LazyFrame,
    columns: &TrainColumns,
    source: &str,
) -> Result<AnnotatedRows> {
    let frame = frame.collect()?;
    let get = |name: &str| {
        frame.column(name).map_err(|_| {
            Error::column(
                name,
                format!(
                    "not in the {source} frame; its columns are {:?}",
                    frame.get_column_names()
                ),
            )
        })
    };
    let row_error = |row: usize, message: String| Error::Row {
        source_name: source.to_owned(),
        row,
        message,
    };
    let owned_rows = |column: &Column, name: &str| -> Result<Vec<Vec<String>>> {
        let rows = with_word_rows(column, |rows| {
            Ok(rows
                .iter()
                .map(|r| {
                    r.as_ref()
                        .map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                })
                .collect::<Vec<_>>())
        })?;
        rows.into_iter()
            .enumerate()
            .map(|(row, words)| words.ok_or_else(|| row_error(row, format!("`{name}` is null"))))
            .collect()
    };
    let tokens = owned_rows(get(&columns.tokens)?, &columns.tokens)?;
    let tags_column = get(&columns.tags)?;
    let tags = match tags_column.dtype() {
        DataType::List(inner) if inner.as_ref() == &DataType::String => {
            Tags::Names(owned_rows(tags_column, &columns.tags)?)
        }
        DataType::List(inner) if inner.is_integer() => {
            let ids = tags_column.cast(&DataType::List(Box::new(DataType::Int64)))?;
            let (inner, ranges) = list_rows(&ids, "a list of tag ids")?;
            let values: Vec<Option<i64>> = inner.i64()?.iter().collect();
            Tags::Ids(
                ranges
                    .into_iter()
                    .enumerate()
                    .map(|(row, range)| {
                        let range = range
                            .ok_or_else(|| row_error(row, format!("`{}` is null", columns.tags)))?;
                        values[range]
                            .iter()
                            .copied()
                            .collect::<Option<Vec<i64>>>()
                            .ok_or_else(|| {
                                row_error(row, format!("`{}` has a null tag", columns.tags))
                            })
                    })
                    .collect::<Result<_>>()?,
            )
        }
        other => {
            return Err(Error::column(
                &columns.tags,
                format!(
                    "expected tag ids (List<Int>) or tag strings (List<String>), found {other}"
                ),
            ))
        }
    };
    let documents = match (&columns.document_id, &columns.sentence_id) {
        (Some(doc), Some(sentence)) => {
            let ids = get(doc)?.cast(&DataType::String)?;
            let positions = get(sentence)?.cast(&DataType::Int64)?;
            let ids = ids.str()?;
            let positions = positions.i64()?;
            Some(
                ids.iter()
                    .zip(positions.iter())
                    .enumerate()
                    .map(|(row, pair)| match pair {
                        (Some(id), Some(position)) => Ok(DocumentPosition::new(id, position)),
                        _ => Err(row_error(row, format!("`{doc}` or `{sentence}` is null"))),
                    })
                    .collect::<Result<_>>()?,
            )
        }
        (None, None) => None,
        _ => {
            return Err(Error::column(
                columns.document_id.as_deref().unwrap_or("sentence_id"),
                "document context needs both `document_id` and `sentence_id` columns",
            ))
        }
    };
    Ok(AnnotatedRows {
        source: source.to_owned(),
        tokens,
        tags,
        documents,
    })
}

/// Trains a model on the rows of `train` (and evaluates on `eval`), saving it to
/// `args.output_dir`.
pub fn train(
    spec: &ModelSpec,
    args: TrainingArguments,
    columns: &TrainColumns,
    train: LazyFrame,
    eval: Option<LazyFrame>,
) -> Result<TrainReport> {
    let train = annotated_rows(train, columns, "train")?;
    let eval = eval
        .map(|e| annotated_rows(e, columns, "eval"))
        .transpose()?;
    training::run(spec.clone(), args, train, eval, None, None)
}
