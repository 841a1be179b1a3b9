//! The SpanMarker SQL functions for Python's `datafusion` package, through the DataFusion FFI.
//!
//! Settings: a session made with `span_marker_rs.session_config()` carries [`Settings`], an FFI
//! config extension holding the `span_marker.*` keys as strings (Python's DataFusion stores any
//! namespaced key there, so `SET span_marker.model = '...'` works). Each call hands those
//! strings to the function ([`WithFfiSettings`]), which parses and checks them as the engine's
//! own sessions do: an invalid value is an error naming its setting. `SET` checks the key and
//! that the value parses already, as the Rust engine's sessions do (unless another library's
//! FFI settings were added to the session after these: Python's DataFusion then keeps that
//! library's object, and a bad value is caught when a function runs).

use std::collections::HashMap;
use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err};
use datafusion::config::{ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion_ffi::config::extension_options::FFI_ExtensionOptions;
use datafusion_ffi::ffi_option::FFI_Result;
use datafusion_ffi::udf::FFI_ScalarUDF;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use span_marker_udfs::sql::{scalar_udfs, set_settings, SpanMarkerOptions, SETTINGS_PREFIX};
use span_marker_udfs::SharedModel;
use stabby::str::Str as SStr;

use crate::py_error;

/// Names of the scalar functions, in registration order.
#[pyfunction]
pub fn scalar_function_names() -> Vec<String> {
    scalar_udfs(None)
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
}

/// One SpanMarker scalar function, exported to Python's DataFusion with
/// `datafusion.udf(ScalarFunction(name))`.
#[pyclass(frozen, module = "span_marker_rs._native")]
pub struct ScalarFunction {
    udf: ScalarUDF,
}

#[pymethods]
impl ScalarFunction {
    /// The function `name`; with `model`, it uses that model (loaded now, on `device`) whenever
    /// `span_marker.model` is not set.
    #[new]
    #[pyo3(signature = (name, model=None, device=None))]
    fn new(
        py: Python<'_>,
        name: &str,
        model: Option<String>,
        device: Option<String>,
    ) -> PyResult<Self> {
        let has_model = model.is_some();
        let model = match model {
            Some(source) => {
                let device = device.unwrap_or_else(|| SpanMarkerOptions::default().device);
                Some(
                    py.detach(|| SharedModel::load(&source, &device))
                        .map_err(py_error)?,
                )
            }
            None => None,
        };
        let udf = scalar_udfs(model)
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "no SpanMarker function named `{name}`; the functions are {}",
                    scalar_function_names().join(", ")
                ))
            })?;
        Ok(Self {
            udf: ScalarUDF::new_from_impl(WithFfiSettings { udf, has_model }),
        })
    }

    fn __datafusion_scalar_udf__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let udf = FFI_ScalarUDF::from(std::sync::Arc::new(self.udf.clone()));
        PyCapsule::new_with_value(py, udf, c"datafusion_scalar_udf")
    }

    fn __repr__(&self) -> String {
        format!("ScalarFunction({:?})", self.udf.name())
    }
}

/// The `span_marker.*` settings as a DataFusion config extension for Python sessions:
/// `SessionConfig().with_extension(Settings())`.
#[pyclass(frozen, module = "span_marker_rs._native")]
pub struct Settings;

#[pymethods]
impl Settings {
    #[new]
    fn new() -> Self {
        Self
    }

    /// Every setting at its default, under its full key.
    fn __datafusion_extension_options__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let defaults: HashMap<String, String> = SpanMarkerOptions::default()
            .settings()
            .into_iter()
            .collect();
        PyCapsule::new_with_value(
            py,
            checked(FFI_ExtensionOptions::from(defaults)),
            c"datafusion_extension_options",
        )
    }
}

type SetFn = unsafe extern "C" fn(&mut FFI_ExtensionOptions, SStr, SStr) -> FFI_Result<()>;
type ClonedFn = unsafe extern "C" fn(&FFI_ExtensionOptions) -> FFI_ExtensionOptions;

/// datafusion-ffi's own `set` and `cloned`, which store any key (read off an instance).
static PLAIN: LazyLock<(SetFn, ClonedFn)> = LazyLock::new(|| {
    let options = FFI_ExtensionOptions::default();
    (options.set, options.cloned)
});

/// `options` with a `set` that checks `span_marker.*` keys and values as the Rust engine's
/// `SET` does (an unknown key or a value that does not parse is an error naming it, and the
/// session keeps its settings), and a `cloned` that keeps this `set` in every copy the session
/// makes.
fn checked(mut options: FFI_ExtensionOptions) -> FFI_ExtensionOptions {
    options.set = checked_set;
    options.cloned = checked_cloned;
    options
}

unsafe extern "C" fn checked_set(
    options: &mut FFI_ExtensionOptions,
    key: SStr,
    value: SStr,
) -> FFI_Result<()> {
    if key.as_str().starts_with(&format!("{SETTINGS_PREFIX}.")) {
        let check = || {
            let mut config = ConfigOptions::default();
            set_settings(&mut config, [(key.as_str(), value.as_str())])
        };
        if let Err(e) = without_panics(check) {
            return FFI_Result::Err(e.strip_backtrace().as_str().into());
        }
    }
    // SAFETY: the library's own function on an instance of its own making.
    unsafe { (PLAIN.0)(options, key, value) }
}

unsafe extern "C" fn checked_cloned(options: &FFI_ExtensionOptions) -> FFI_ExtensionOptions {
    // SAFETY: as in `checked_set`.
    checked(unsafe { (PLAIN.1)(options) })
}

/// A SpanMarker function that takes its settings from the FFI config extension of the calling
/// session (keys `span_marker.*`, as set by `SET`; the FFI may put its own namespace in front).
#[derive(Debug, PartialEq, Eq, Hash)]
struct WithFfiSettings {
    udf: ScalarUDF,
    /// Whether it was registered with a model, used when `span_marker.model` is not set.
    has_model: bool,
}

impl ScalarUDFImpl for WithFfiSettings {
    fn name(&self) -> &str {
        self.udf.name()
    }

    fn signature(&self) -> &Signature {
        self.udf.signature()
    }

    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        without_panics(|| self.udf.coerce_types(types))
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        without_panics(|| self.udf.return_type(types))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        without_panics(|| self.invoke(args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.udf.documentation()
    }
}

/// `f`'s result, with a panic as an error: a panic must not unwind into the FFI caller (Rust
/// aborts the process there).
fn without_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        exec_err!("span_marker: internal error (a bug, please report it): {message}")
    })
}

impl WithFfiSettings {
    fn invoke(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let namespace = format!("{}.", FFI_ExtensionOptions::PREFIX);
        let settings = format!("{SETTINGS_PREFIX}.");
        let entries: Vec<(String, String)> = args
            .config_options
            .extensions
            .get::<FFI_ExtensionOptions>()
            .map(ExtensionOptions::entries)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| {
                let key = entry.key.strip_prefix(&namespace).unwrap_or(&entry.key);
                Some((key.to_owned(), entry.value?)).filter(|(key, _)| key.starts_with(&settings))
            })
            .collect();
        if entries.is_empty() {
            // A session made without `session_config()`: `SET span_marker.*` cannot work there.
            if !self.has_model && self.name() != "span_marker_candidates" {
                return plan_err!(
                    "{}: no model: this session has no span_marker settings; make it with \
                     SessionContext(span_marker_rs.session_config()) and run \
                     SET span_marker.model = '<model>', or pass model= to span_marker_rs.register",
                    self.name()
                );
            }
        } else {
            let mut options = (*args.config_options).clone();
            set_settings(
                &mut options,
                entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )?;
            args.config_options = std::sync::Arc::new(options);
        }
        self.udf.invoke_with_args(args)
    }
}
