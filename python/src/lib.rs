//! `span_marker_rs._native`: the extension module behind the Python package `span_marker_rs`.
//!
//! - [`plugin`]: the Polars expression plugin (`#[polars_expr]` functions that Python's
//!   `pl.col(...).span_marker` namespace registers);
//! - [`sql`]: the SQL functions as DataFusion FFI objects, and the `span_marker.*` settings as an
//!   FFI config extension;
//! - [`train`]: training from a Polars frame.
//!
//! Every function works on the engine crate (`span_marker_udfs`); this crate only converts.
//! The Python package imports `torch` before this module, so the process holds one libtorch:
//! the torch wheel's, which this module also finds through an `$ORIGIN`-relative rpath.

mod plugin;
mod sql;
mod train;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3_polars::PolarsAllocator;
use span_marker_udfs::span_marker::{ModelSettings, PredictOptions};
use span_marker_udfs::sql::SpanMarkerOptions;

// Buffers made here are freed by Polars and the other way round: one allocator for both.
#[global_allocator]
static ALLOC: PolarsAllocator = PolarsAllocator::new();

create_exception!(
    span_marker_rs,
    SpanMarkerError,
    PyException,
    "A SpanMarker operation failed: a model that cannot be loaded, invalid settings or data."
);

/// An engine error as a Python exception.
fn py_error(error: impl std::fmt::Display) -> PyErr {
    SpanMarkerError::new_err(error.to_string())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SpanMarkerError", m.py().get_type::<SpanMarkerError>())?;
    // Defaults for Python's signatures and scripts: the Rust types' own.
    let predict = PredictOptions::default();
    m.add("DEFAULT_BATCH_SIZE", predict.batch_size)?;
    m.add("MAX_BATCH_SIZE", PredictOptions::MAX_BATCH_SIZE)?;
    m.add("DEFAULT_DEVICE", SpanMarkerOptions::default().device)?;
    m.add("DEFAULT_PRECISION", predict.precision.to_string())?;
    m.add(
        "DEFAULT_ENTITY_MAX_LENGTH",
        ModelSettings::DEFAULT_ENTITY_MAX_LENGTH,
    )?;
    m.add_class::<sql::ScalarFunction>()?;
    m.add_class::<sql::Settings>()?;
    m.add_function(wrap_pyfunction!(sql::scalar_function_names, m)?)?;
    m.add_function(wrap_pyfunction!(train::train, m)?)?;
    m.add_function(wrap_pyfunction!(train::hub_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(plugin::rust_polars_predict, m)?)?;
    m.add_function(wrap_pyfunction!(plugin::check_predict_options, m)?)?;
    Ok(())
}
