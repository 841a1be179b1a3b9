//! Polars integration: `col("tokens").span_marker().predict(&model)` and friends in lazy
//! pipelines, and training from a `LazyFrame`.
//!
//! Polars columns cross to Arrow and back through the Arrow C data interface (the values are
//! shared, not copied), so every expression runs the engine crate's one Arrow path
//! ([`crate::columns`]) and returns the SQL functions' schemas.
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

use std::sync::Arc;

use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use datafusion::arrow::array::{make_array, Array, ArrayRef, NullArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType as ArrowDataType, Field as ArrowField, Schema};
use polars::prelude::*;
use span_marker::spans::candidate_spans;
use span_marker::train::TrainingArguments;
use span_marker::PredictOptions;

use crate::columns::{candidate_fields, candidates_column, list_of, predict_column, read_words};
use crate::columns::{ColumnJob, InputKind};
use crate::dataset::AnnotatedRows;
use crate::error::{Error, Result};
use crate::model::SharedModel;
use crate::sources::TableSource;
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
        let output = candidates_dtype();
        self.0.map(
            move |column| candidates(&column, entity_max_length),
            move |_, field| Ok(Field::new(field.name().clone(), output.clone())),
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
        self.predict_kind(InputKind::Words, model, kwargs)
    }

    /// [`Self::predict_text`] with options.
    pub fn predict_text_with(self, model: &SharedModel, kwargs: PredictKwargs) -> Expr {
        self.predict_kind(InputKind::Text, model, kwargs)
    }

    fn predict_kind(self, kind: InputKind, model: &SharedModel, kwargs: PredictKwargs) -> Expr {
        let model = model.clone();
        let output = predict_dtype(kind);
        self.0.map(
            move |column| Ok(predict(&column, kind, &model, &kwargs)?.0),
            move |_, field| Ok(Field::new(field.name().clone(), output.clone())),
        )
    }
}

/// The candidate spans of a list-of-words column (`List<Struct{start, end}>`, named as the
/// input): what [`SpanMarkerNameSpace::candidates`] computes, for plugins that call it on a
/// column directly.
pub fn candidates(column: &Column, entity_max_length: usize) -> PolarsResult<Column> {
    if entity_max_length == 0 {
        polars_bail!(ComputeError: "span_marker.candidates: `entity_max_length` must be at least 1");
    }
    check_dtype(column, InputKind::Words, "candidates")?;
    if column.dtype() == &DataType::Null {
        return Ok(Column::full_null(
            column.name().clone(),
            column.len(),
            &candidates_dtype(),
        ));
    }
    let array = to_arrow(column)?;
    let spans: Vec<Option<Vec<_>>> = read_words(array.as_ref(), column.name())?
        .into_iter()
        .enumerate()
        .map(|(row, words)| match words {
            None => Ok(None),
            Some(Ok(words)) => Ok(Some(
                candidate_spans(words.len(), entity_max_length).collect(),
            )),
            Some(Err(reason)) => Err(polars_err!(ComputeError:
                "span_marker.candidates: batch of {} rows: `{}` row {row}: {reason}",
                column.len(), column.name())),
        })
        .collect::<PolarsResult<_>>()?;
    from_arrow(column.name().clone(), candidates_column(&spans))
}

/// The entities of a column of `kind` (named as the input), with the rows that could not be
/// annotated (row number, reason; NULL in the output, or an error in strict mode): what the
/// prediction expressions compute, for plugins that call it on a column directly.
pub fn predict(
    column: &Column,
    kind: InputKind,
    model: &SharedModel,
    kwargs: &PredictKwargs,
) -> PolarsResult<(Column, Vec<(usize, String)>)> {
    let name = expression_name(kind);
    check_dtype(column, kind, name)?;
    let array = to_arrow(column)?;
    // Polars hands an element-wise function its column in parts: rows count within this one.
    let source = format!("span_marker.{name}: batch of {} rows", column.len());
    let job = ColumnJob {
        kind,
        options: &kwargs.options,
        strict: kwargs.strict,
        source: &source,
        column: column.name(),
        first_row: 0,
    };
    let (entities, failed) = predict_column(model, array.as_ref(), &job)?;
    Ok((from_arrow(column.name().clone(), entities)?, failed))
}

/// The Polars type of [`candidates`]' output.
pub fn candidates_dtype() -> DataType {
    polars_dtype(&list_of(candidate_fields()))
}

/// The Polars type of [`predict`]'s output for input of `kind`.
pub fn predict_dtype(kind: InputKind) -> DataType {
    polars_dtype(&kind.output_type())
}

/// Options of the prediction expressions.
#[derive(Debug, Clone, Default)]
pub struct PredictKwargs {
    /// The prediction settings, as every engine takes them (their defaults and checks are
    /// [`PredictOptions`]'; the expressions check them when they run).
    pub options: PredictOptions,
    /// Fail on a row that cannot be annotated instead of returning null for it.
    pub strict: bool,
}

/// The expression that reads `kind`: `predict` or `predict_text`.
pub fn expression_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Words => "predict",
        InputKind::Text => "predict_text",
    }
}

/// Refuses a column that does not hold `kind`, naming the expression for the other kind.
fn check_dtype(column: &Column, kind: InputKind, expression: &str) -> PolarsResult<()> {
    let fits = |kind: InputKind| match kind {
        // A list of nulls only (`List(Null)`) is words that are all null.
        InputKind::Words => matches!(column.dtype(), DataType::List(inner)
            if matches!(inner.as_ref(), DataType::String | DataType::Null)),
        InputKind::Text => column.dtype() == &DataType::String,
    };
    if fits(kind) || column.dtype() == &DataType::Null {
        return Ok(());
    }
    let hint = fits(kind.other()).then(|| expression_name(kind.other()));
    polars_bail!(SchemaMismatch: "span_marker.{expression}: {}",
        kind.mismatch(column.name(), column.dtype(), hint))
}

/// A Polars column as an Arrow array, through the C data interface (the values are shared).
fn to_arrow(column: &Column) -> PolarsResult<ArrayRef> {
    // Polars exports a Null column with a buffer that the C data interface does not allow.
    if column.dtype() == &DataType::Null {
        return Ok(Arc::new(NullArray::new(column.len())));
    }
    let column = match column.dtype() {
        DataType::List(inner) if inner.as_ref() == &DataType::Null => {
            column.cast(&DataType::List(Box::new(DataType::String)))?
        }
        _ => column.clone(),
    };
    let name = column.name().clone();
    let array = column.rechunk_to_arrow(CompatLevel::newest());
    let field = polars_arrow::datatypes::Field::new(name.clone(), array.dtype().clone(), true);
    let schema = polars_arrow::ffi::export_field_to_c(&field);
    let array = polars_arrow::ffi::export_array_to_c(array);
    // SAFETY: both crates define these structs as the C data interface's `ArrowArray` and
    // `ArrowSchema` (`#[repr(C)]`, same fields); ownership, and with it the release callbacks,
    // passes to the arrow structs, which release them when dropped.
    let (array, schema) = unsafe {
        (
            std::mem::transmute::<polars_arrow::ffi::ArrowArray, FFI_ArrowArray>(array),
            std::mem::transmute::<polars_arrow::ffi::ArrowSchema, FFI_ArrowSchema>(schema),
        )
    };
    // SAFETY: a valid array and schema, just exported.
    let data = unsafe { arrow::ffi::from_ffi(array, &schema) }
        .map_err(|e| polars_err!(ComputeError: "span_marker: `{name}` to Arrow: {e}"))?;
    Ok(make_array(data))
}

/// An Arrow array as a Polars column named `name`, through the C data interface.
fn from_arrow(name: PlSmallStr, array: ArrayRef) -> PolarsResult<Column> {
    let (array, schema) = arrow::ffi::to_ffi(&array.to_data())
        .map_err(|e| polars_err!(ComputeError: "span_marker: `{name}` from Arrow: {e}"))?;
    // SAFETY: as in `to_arrow`, the other way round.
    let (array, schema) = unsafe {
        (
            std::mem::transmute::<FFI_ArrowArray, polars_arrow::ffi::ArrowArray>(array),
            std::mem::transmute::<FFI_ArrowSchema, polars_arrow::ffi::ArrowSchema>(schema),
        )
    };
    // SAFETY: a valid schema and array, just exported.
    let field = unsafe { polars_arrow::ffi::import_field_from_c(&schema) }?;
    let array = unsafe { polars_arrow::ffi::import_array_from_c(array, field.dtype().clone()) }?;
    Ok(Series::from_arrow(name, array)?.into_column())
}

/// The Polars type of an Arrow type (for the expressions' output types at plan time).
fn polars_dtype(data_type: &ArrowDataType) -> DataType {
    let field = ArrowField::new("", data_type.clone(), true);
    let schema = FFI_ArrowSchema::try_from(&field).expect("entity and candidate types export");
    // SAFETY: as in `from_arrow`.
    let schema =
        unsafe { std::mem::transmute::<FFI_ArrowSchema, polars_arrow::ffi::ArrowSchema>(schema) };
    let field = unsafe { polars_arrow::ffi::import_field_from_c(&schema) }
        .expect("entity and candidate types import");
    DataType::from_arrow_field(&field)
}

/// A table read into Polars, with the label names its tags column stores.
pub struct LabelledFrame {
    pub frame: LazyFrame,
    /// The names the integer tags index (the `ClassLabel` feature of a Hugging Face dataset),
    /// for [`ModelSpec::labels`].
    pub labels: Option<Vec<String>>,
}

/// The rows of a Hub dataset split (`source.dataset`, its `split`, `config`, `revision` and
/// first `rows`), in order, as a `LazyFrame`, downloading its Parquet files into the Hugging
/// Face cache when missing.
///
/// ```no_run
/// use span_marker_udfs::polars_expr::hub_dataset_frame;
/// use span_marker_udfs::sources::TableSource;
/// let mut source = TableSource::hub_dataset("conll2003", "train");
/// source.rows = Some(8000);
/// let train = hub_dataset_frame(&source)?;
/// println!("{:?} {}", train.labels, train.frame.collect()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn hub_dataset_frame(source: &TableSource) -> Result<LabelledFrame> {
    let batches = source.dataset_batches()?;
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Err(Error::file(source.name(), "has no rows"));
    };
    let labels = crate::sources::stored_labels(&schema, &source.tags_column)?;
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            let array = datafusion::arrow::compute::concat(&parts)?;
            Ok(from_arrow(field.name().as_str().into(), array)?)
        })
        .collect::<Result<Vec<Column>>>()?;
    let height = batches.iter().map(RecordBatch::num_rows).sum();
    let frame = DataFrame::new(height, columns)?.lazy();
    Ok(LabelledFrame { frame, labels })
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

/// The annotated rows of a lazy frame, read as a table source's rows are.
pub fn annotated_rows(
    frame: LazyFrame,
    columns: &TrainColumns,
    source: &str,
) -> Result<AnnotatedRows> {
    if columns.document_id.is_some() != columns.sentence_id.is_some() {
        return Err(Error::column(
            columns.document_id.as_deref().unwrap_or("sentence_id"),
            "document context needs both `document_id` and `sentence_id` columns",
        ));
    }
    let frame = frame.collect()?;
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for column in frame.columns() {
        let array = to_arrow(column)?;
        fields.push(ArrowField::new(
            column.name().as_str(),
            array.data_type().clone(),
            true,
        ));
        arrays.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    let table = TableSource {
        tokens_column: columns.tokens.clone(),
        tags_column: columns.tags.clone(),
        document_id_column: columns.document_id.clone(),
        sentence_id_column: columns.sentence_id.clone(),
        ..TableSource::default()
    };
    table.rows_from_batches(&[batch], &format!("the {source} frame"))
}

/// Trains a model on the rows of `train` (evaluating on `eval` as the arguments say and at
/// the end, and on `test` at the end with the `test` prefix), saving it to `args.output_dir`.
pub fn train(
    spec: &ModelSpec,
    args: TrainingArguments,
    columns: &TrainColumns,
    train: LazyFrame,
    eval: Option<LazyFrame>,
    test: Option<LazyFrame>,
) -> Result<TrainReport> {
    let train = annotated_rows(train, columns, "train")?;
    let read = |frame: Option<LazyFrame>, name: &str| {
        frame.map(|f| annotated_rows(f, columns, name)).transpose()
    };
    let (eval, test) = (read(eval, "eval")?, read(test, "test")?);
    training::run(spec.clone(), args, train, eval, test, None)
}
