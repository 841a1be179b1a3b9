//! DataFusion integration: scalar UDFs for candidates and entities, table functions for
//! training and for Hugging Face Hub datasets (`hf_dataset`), and the `span_marker.*` session
//! settings.
//!
//! ```no_run
//! # async fn demo() -> datafusion::error::Result<()> {
//! let ctx = span_marker_udfs::store::session_context();
//! span_marker_udfs::sql::register_all(&ctx);
//! ctx.sql("SET span_marker.model = 'bundled'").await?;
//! ctx.sql("SELECT span_marker_predict(['Paris', 'is', 'in', 'France'])").await?.show().await?;
//! # Ok(()) }
//! ```

mod candidates;
mod common;
mod hub_dataset;
mod model_info;
mod options;
mod predict;
mod train;

use std::sync::Arc;

use datafusion::config::ConfigOptions;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use candidates::SpanMarkerCandidates;
pub use hub_dataset::{HubDatasetFunction, HUB_DATASET_FUNCTION};
pub use model_info::{ModelInfo, SpanMarkerModelInfo};
pub use options::SpanMarkerOptions;
pub use predict::SpanMarkerPredict;
pub use train::SpanMarkerTrain;

use crate::columns::InputKind;
use crate::model::SharedModel;

/// Registers every SpanMarker function and the `span_marker.*` settings in `ctx`; the model
/// comes from `SET span_marker.model = '...'`.
pub fn register_all(ctx: &SessionContext) {
    register(ctx, None);
}

/// Like [`register_all`], with `model` used whenever `span_marker.model` is not set.
pub fn register_all_with_model(ctx: &SessionContext, model: SharedModel) {
    register(ctx, Some(model));
}

fn register(ctx: &SessionContext, model: Option<SharedModel>) {
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        add_settings(state.config_mut());
    }
    for udf in scalar_udfs(model) {
        ctx.register_udf(udf);
    }
    ctx.register_udtf("span_marker_train", Arc::new(SpanMarkerTrain));
    ctx.register_udtf(HUB_DATASET_FUNCTION, Arc::new(HubDatasetFunction));
}

/// The namespace of the session settings: `span_marker.<key>`.
pub const SETTINGS_PREFIX: &str = "span_marker";

/// Adds the `span_marker.*` settings to `config` (once).
pub(crate) fn add_settings(config: &mut SessionConfig) {
    add_settings_to(config.options_mut());
}

fn add_settings_to(options: &mut ConfigOptions) {
    let extensions = &mut options.extensions;
    if extensions.get::<SpanMarkerOptions>().is_none() {
        extensions.insert(SpanMarkerOptions::default());
    }
}

/// Sets `span_marker.*` settings given as (full key, value) pairs in `options`, adding the
/// settings there if needed; keys of other namespaces are skipped. For settings that reach the
/// functions another way than through this crate's config extension, e.g. as plain strings
/// across the DataFusion FFI. An invalid value is an error naming its setting.
///
/// ```
/// use datafusion::config::ConfigOptions;
/// use span_marker_udfs::sql::{set_settings, SpanMarkerOptions};
///
/// let mut options = ConfigOptions::default();
/// set_settings(&mut options, [("span_marker.threshold", "0.5"), ("other.key", "x")])?;
/// let predict = SpanMarkerOptions::from_config(&options).predict_options()?;
/// assert_eq!(predict.threshold, Some(0.5));
/// assert!(set_settings(&mut options, [("span_marker.batch_size", "many")]).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn set_settings<'a>(
    options: &mut ConfigOptions,
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> datafusion::error::Result<()> {
    add_settings_to(options);
    let prefix = format!("{SETTINGS_PREFIX}.");
    for (key, value) in entries {
        if key.starts_with(&prefix) {
            options.set(key, value)?;
        }
    }
    Ok(())
}

/// A process that runs the SpanMarker functions for others: a cluster executor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Worker {
    /// How errors and `span_marker_model_info` name it (a Ballista executor's id).
    pub name: String,
    /// Its device, which replaces the session's `span_marker.device` (one executor per GPU);
    /// `None` keeps the session's.
    pub device: Option<String>,
}

impl Worker {
    /// `result` as the function's answer: on a worker, an error becomes one plain message
    /// naming it (Ballista hands errors back to the client in their debug form).
    pub(crate) fn answer<T>(
        worker: Option<&Worker>,
        result: datafusion::error::Result<T>,
    ) -> datafusion::error::Result<T> {
        match worker {
            None => result,
            Some(worker) => result.map_err(|e| {
                use datafusion::error::DataFusionError;
                let message = match e {
                    DataFusionError::External(inner) => inner.to_string(),
                    other => other.strip_backtrace(),
                };
                DataFusionError::Execution(format!("executor {}: {message}", worker.name))
            }),
        }
    }
}

/// The scalar functions (`span_marker_candidates`, `span_marker_predict`,
/// `span_marker_predict_text`, `span_marker_model_info`), with `model` used when
/// `span_marker.model` is not set: for engines that register them their own way.
pub fn scalar_udfs(model: Option<SharedModel>) -> Vec<ScalarUDF> {
    scalar_functions(model, None)
}

/// [`scalar_udfs`], running on `worker` when they run for others.
pub(crate) fn scalar_functions(
    model: Option<SharedModel>,
    worker: Option<Worker>,
) -> Vec<ScalarUDF> {
    let worker = worker.map(Arc::new);
    let mut functions = vec![
        ScalarUDF::new_from_impl(SpanMarkerCandidates::new()),
        ScalarUDF::new_from_impl(SpanMarkerModelInfo::new(model.clone(), worker.clone())),
    ];
    for kind in [InputKind::Words, InputKind::Text] {
        functions.push(ScalarUDF::new_from_impl(SpanMarkerPredict::new(
            kind,
            model.clone(),
            worker.clone(),
        )));
    }
    functions
}
