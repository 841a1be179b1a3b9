//! The Polars expression plugin: `predict`, `predict_text` and `candidates`, registered by the
//! Python namespace `pl.col(...).span_marker` (`span_marker_rs/polars.py`).
//!
//! Each runs the engine crate's Polars functions on the column Polars hands over; the model is
//! loaded once per process (the engine's model cache) and shared by every expression.

use polars::prelude::{
    col, Column, DataFrame, DataType, Field, IntoColumn, IntoLazy, PolarsResult, Series,
};
use polars_error::{polars_bail, polars_err};
use pyo3::exceptions::{PyTypeError, PyUserWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use pyo3_polars::derive::polars_expr;
use pyo3_polars::PyDataFrame;
use serde::Deserialize;
use serde_json::{Map, Value};
use span_marker_udfs::columns::InputKind;
use span_marker_udfs::polars_expr::{self as engine, PredictKwargs, SpanMarkerExt};
use span_marker_udfs::span_marker::{Error, PredictOptions};
use span_marker_udfs::SharedModel;

/// The keyword arguments of `predict` and `predict_text`, as `_predict_kwargs` in
/// `span_marker_rs/polars.py` makes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PredictArgs {
    model: String,
    device: String,
    strict: bool,
    /// The prediction options the caller gave, by key: [`PredictOptions`] reads them (with its
    /// defaults for the others) when the expression runs.
    options: Value,
}

impl PredictArgs {
    fn kwargs(&self, expression: &str) -> PolarsResult<PredictKwargs> {
        let options = PredictOptions::read(&self.options)
            .map_err(|e| polars_err!(ComputeError: "span_marker.{expression}: {e}"))?;
        Ok(PredictKwargs {
            options,
            strict: self.strict,
        })
    }
}

/// Checks the prediction options given to `predict` or `predict_text` when the expression is
/// built, as [`PredictOptions`] reads them when it runs: a value of the wrong type (or an
/// unknown key) is a `TypeError`, one out of range a `ValueError`, each naming its key. The
/// settings of [`PredictOptions::CHECKED_WHEN_RUN`] (`precision`) are checked for their type
/// only: the expression checks their value when it runs, with the device.
#[pyfunction]
pub fn check_predict_options(options: &Bound<'_, PyDict>) -> PyResult<()> {
    let mut given = json_object(options)?;
    loop {
        match PredictOptions::read(Value::Object(given.clone())) {
            Ok(_) => return Ok(()),
            Err(Error::Setting { key, message })
                if PredictOptions::CHECKED_WHEN_RUN.contains(&key) && !is_type_error(&message) =>
            {
                given.remove(key);
            }
            Err(error) => return Err(option_error(error)),
        }
    }
}

/// An error of [`PredictOptions::read`] as Python's exception for it: a `ValueError` for a value
/// out of range, a `TypeError` for one of the wrong type or an unknown key (as Python's own error
/// for an unexpected keyword argument).
fn option_error(error: Error) -> PyErr {
    match &error {
        Error::Setting { message, .. } if !is_type_error(message) => {
            PyValueError::new_err(error.to_string())
        }
        _ => PyTypeError::new_err(error.to_string()),
    }
}

/// Whether serde refused a value for its type (`invalid type: string "8", expected usize`)
/// rather than for its value.
fn is_type_error(message: &str) -> bool {
    message.starts_with("invalid type")
}

/// A Python dict with string keys as a JSON object, for the engine's serde types.
fn json_object(dict: &Bound<'_, PyDict>) -> PyResult<Map<String, Value>> {
    dict.iter()
        .map(|(key, value)| {
            let key: String = key
                .extract()
                .map_err(|_| PyTypeError::new_err(format!("keys must be strings, got {key}")))?;
            let value = json(&value, &key)?;
            Ok((key, value))
        })
        .collect()
}

/// A plain Python value (None, a bool, an int, a float, a string or a dict of them) as JSON;
/// `key` names it in errors.
fn json(value: &Bound<'_, PyAny>, key: &str) -> PyResult<Value> {
    if value.is_none() {
        Ok(Value::Null)
    } else if let Ok(flag) = value.cast::<PyBool>() {
        Ok(Value::Bool(flag.is_true()))
    } else if value.is_instance_of::<PyInt>() {
        match (value.extract::<i64>(), value.extract::<u64>()) {
            (Ok(number), _) => Ok(number.into()),
            (_, Ok(number)) => Ok(number.into()),
            _ => Err(PyValueError::new_err(format!(
                "`{key}` is out of range, got {value}"
            ))),
        }
    } else if let Ok(number) = value.cast::<PyFloat>() {
        let number = number.value();
        serde_json::Number::from_f64(number)
            .map(Value::Number)
            .ok_or_else(|| {
                PyValueError::new_err(format!("`{key}` must be a finite number, got {number}"))
            })
    } else if value.is_instance_of::<PyString>() {
        Ok(Value::String(value.extract()?))
    } else if let Ok(dict) = value.cast::<PyDict>() {
        json_object(dict).map(Value::Object)
    } else {
        Err(PyTypeError::new_err(format!(
            "`{key}` must be a number, a string, a bool or None, got {}",
            value.get_type().name()?
        )))
    }
}

/// The keyword arguments of `candidates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateArgs {
    entity_max_length: usize,
}

/// The output field: the input's name with the expression's type.
fn output(fields: &[Field], dtype: DataType) -> PolarsResult<Field> {
    match fields {
        [field] => Ok(Field::new(field.name().clone(), dtype)),
        _ => {
            polars_bail!(ComputeError: "span_marker: expected one input column, got {}", fields.len())
        }
    }
}

fn predict_field(fields: &[Field], _: PredictArgs) -> PolarsResult<Field> {
    output(fields, engine::predict_dtype(InputKind::Words))
}

fn predict_text_field(fields: &[Field], _: PredictArgs) -> PolarsResult<Field> {
    output(fields, engine::predict_dtype(InputKind::Text))
}

fn candidates_field(fields: &[Field], _: CandidateArgs) -> PolarsResult<Field> {
    output(fields, engine::candidates_dtype())
}

#[polars_expr(output_type_func_with_kwargs = predict_field)]
fn predict(inputs: &[Series], kwargs: PredictArgs) -> PolarsResult<Series> {
    crate::plugin::nul_free(crate::plugin::run_predict(
        inputs,
        InputKind::Words,
        &kwargs,
    ))
}

#[polars_expr(output_type_func_with_kwargs = predict_text_field)]
fn predict_text(inputs: &[Series], kwargs: PredictArgs) -> PolarsResult<Series> {
    crate::plugin::nul_free(crate::plugin::run_predict(inputs, InputKind::Text, &kwargs))
}

#[polars_expr(output_type_func_with_kwargs = candidates_field)]
fn candidates(inputs: &[Series], kwargs: CandidateArgs) -> PolarsResult<Series> {
    let column = crate::plugin::single(inputs)?;
    crate::plugin::nul_free(
        engine::candidates(&column, kwargs.entity_max_length).map(|c| c.take_materialized_series()),
    )
}

/// `result` with NUL bytes in its error message escaped: pyo3-polars hands the message to
/// Python as a C string and reports a bare "PANIC" for one that holds a NUL (a word or path
/// from the user's data can).
fn nul_free(result: PolarsResult<Series>) -> PolarsResult<Series> {
    result.map_err(|e| {
        let message = e.to_string();
        if message.contains('\0') {
            polars_err!(ComputeError: "{}", message.replace('\0', "\\0"))
        } else {
            e
        }
    })
}

fn single(inputs: &[Series]) -> PolarsResult<Column> {
    match inputs {
        [series] => Ok(series.clone().into_column()),
        _ => {
            polars_bail!(ComputeError: "span_marker: expected one input column, got {}", inputs.len())
        }
    }
}

fn load(args: &PredictArgs, expression: &str) -> PolarsResult<SharedModel> {
    SharedModel::load(&args.model, &args.device)
        .map_err(|e| polars_err!(ComputeError: "span_marker.{expression}: {e}"))
}

fn run_predict(inputs: &[Series], kind: InputKind, args: &PredictArgs) -> PolarsResult<Series> {
    let expression = engine::expression_name(kind);
    let column = single(inputs)?;
    let kwargs = args.kwargs(expression)?;
    let model = load(args, expression)?;
    let (entities, failed) = engine::predict(&column, kind, &model, &kwargs)?;
    if !failed.is_empty() {
        warn_failed(expression, column.name(), column.len(), &failed)?;
    }
    Ok(entities.take_materialized_series())
}

/// A Python `UserWarning` for rows that could not be annotated (NULL in the output). Where
/// warnings are errors (`-W error`), it is the expression's error instead.
fn warn_failed(
    expression: &str,
    column: &str,
    rows_in_batch: usize,
    failed: &[(usize, String)],
) -> PolarsResult<()> {
    const SHOWN: usize = 3;
    let mut rows: Vec<String> = failed
        .iter()
        .take(SHOWN)
        .map(|(row, reason)| format!("row {row}: {reason}"))
        .collect();
    if failed.len() > SHOWN {
        rows.push(format!("and {} more", failed.len() - SHOWN));
    }
    let message = format!(
        "span_marker.{expression}: {} of the {rows_in_batch} rows of `{column}` in this batch \
         could not be annotated and are null (strict=True makes this an error); rows counted \
         within the batch: {}",
        failed.len(),
        rows.join("; ")
    );
    Python::attach(|py| {
        let message = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
        PyErr::warn(py, &py.get_type::<PyUserWarning>(), &message, 1)
    })
    .map_err(|e| polars_err!(ComputeError: "{e}"))
}

/// `frame` with `column` replaced by its entities, computed by the engine crate's Rust Polars
/// API (`col(column).span_marker().predict_with(...)` in a lazy plan) with the plugin's
/// arguments: the reference that the tests and the benchmark hold the plugin against.
#[pyfunction]
pub fn rust_polars_predict(
    py: Python<'_>,
    frame: PyDataFrame,
    column: &str,
    text: bool,
    kwargs: &Bound<'_, PyDict>,
) -> PyResult<PyDataFrame> {
    let kwargs: PredictArgs = serde_json::from_value(Value::Object(json_object(kwargs)?))
        .map_err(|e| PyTypeError::new_err(format!("rust_polars_predict: {e}")))?;
    let kind = if text {
        InputKind::Text
    } else {
        InputKind::Words
    };
    let expression = engine::expression_name(kind);
    let run = || -> PolarsResult<DataFrame> {
        let options = kwargs.kwargs(expression)?;
        let model = load(&kwargs, expression)?;
        let predict = col(column).span_marker();
        let predict = match kind {
            InputKind::Words => predict.predict_with(&model, options),
            InputKind::Text => predict.predict_text_with(&model, options),
        };
        frame.0.lazy().with_column(predict).collect()
    };
    py.detach(run).map(PyDataFrame).map_err(crate::py_error)
}
