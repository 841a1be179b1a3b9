//! `SET span_marker.<key> = <value>`: the session settings of the SpanMarker functions.

use datafusion::common::extensions_options;
use datafusion::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::error::DataFusionError;
use span_marker::device::Precision;
use span_marker::{ModelSettings, PredictOptions};

use crate::error::{Error, Result};
use crate::model::SharedModel;
use crate::sql::Worker;

extensions_options! {
    /// Settings of the SpanMarker SQL functions, changed with
    /// `SET span_marker.<key> = <value>`.
    pub struct SpanMarkerOptions {
        /// The model: a SpanMarker directory, a Hugging Face id, or `bundled` for the small
        /// embedded model. Empty means the model given to `register_all_with_model`.
        pub model: String, default = String::new()
        /// Where the model runs: `cpu`, `cuda`, `cuda:N` or `auto`.
        pub device: String, default = "cpu".to_owned()
        /// Encoder samples per forward pass.
        pub batch_size: usize, default = PredictOptions::DEFAULT_BATCH_SIZE
        /// Precision of the forward passes: `fp32`; `bf16` autocast on a CUDA device or a CPU
        /// with bfloat16 instructions; `fp16` autocast on a CUDA device; `int8` (dynamically
        /// quantised linear maps) on the CPU.
        pub precision: String, default = Precision::default().to_string()
        /// Minimum score of an entity (0 keeps every entity the model finds).
        pub threshold: f64, default = 0.0
        /// Whether entities may overlap.
        pub allow_overlapping: bool, default = false
        /// Fail the query on a row that cannot be annotated (a word longer than the model
        /// input, a null word) instead of returning NULL for it with a warning.
        pub strict: bool, default = false
        /// Default longest candidate span, in words, for `span_marker_candidates`.
        pub entity_max_length: usize, default = ModelSettings::DEFAULT_ENTITY_MAX_LENGTH
    }
}

/// The session's [`SpanMarkerOptions`] as a DataFusion config extension. It differs from the
/// generated one in its errors only: a value that does not parse names its setting
/// (`span_marker.batch_size`), where DataFusion's own message names neither.
#[derive(Debug, Default, Clone)]
pub(crate) struct SessionOptions(SpanMarkerOptions);

impl ConfigExtension for SessionOptions {
    const PREFIX: &'static str = crate::sql::SETTINGS_PREFIX;
}

impl ExtensionOptions for SessionOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> datafusion::error::Result<()> {
        let known = self.0.entries();
        if !known
            .iter()
            .any(|entry| entry.key.trim_start_matches('.') == key)
        {
            let names: Vec<String> = known
                .iter()
                .map(|entry| entry.key.trim_start_matches('.').to_owned())
                .collect();
            return Err(DataFusionError::Configuration(format!(
                "unknown setting `{}.{key}`; the settings are {}",
                Self::PREFIX,
                names.join(", ")
            )));
        }
        ExtensionOptions::set(&mut self.0, key, value).map_err(|e| {
            // DataFusion's message ("Error parsing 'abc' as usize") without its cause chain.
            let reason = e.strip_backtrace();
            let reason = reason.lines().next().unwrap_or_default();
            DataFusionError::Configuration(format!(
                "invalid value '{value}' for `{}.{key}`: {reason}",
                Self::PREFIX
            ))
        })
    }

    /// Full keys (`span_marker.model`): DataFusion's generated entries leave the prefix out,
    /// and Ballista sends a session's settings to the scheduler and executors as these
    /// entries, which they `set` again by key.
    fn entries(&self) -> Vec<ConfigEntry> {
        let mut entries = self.0.entries();
        for entry in &mut entries {
            entry.key = format!("{}.{}", Self::PREFIX, entry.key.trim_start_matches('.'));
        }
        entries
    }
}

impl SpanMarkerOptions {
    /// Every setting as (full key, value): `("span_marker.model", "")`, ...
    pub fn settings(&self) -> Vec<(String, String)> {
        SessionOptions(self.clone())
            .entries()
            .into_iter()
            .filter_map(|entry| Some((entry.key, entry.value?)))
            .collect()
    }

    /// The settings in force in `config` (the defaults when the extension is not registered).
    pub fn from_config(config: &ConfigOptions) -> Self {
        config
            .extensions
            .get::<SessionOptions>()
            .map(|options| options.0.clone())
            .unwrap_or_default()
    }

    /// Prediction options from these settings, each checked; an error names the setting.
    pub fn predict_options(&self) -> Result<PredictOptions> {
        let setting_error = |key: &str, message: String| Error::Pipeline {
            file: "session".into(),
            key: format!("span_marker.{key}"),
            message,
        };
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(setting_error(
                "threshold",
                format!("must be between 0 and 1, got {}", self.threshold),
            ));
        }
        let precision = self
            .precision
            .parse::<Precision>()
            .map_err(|e| setting_error("precision", e.to_string()))?;
        let options = PredictOptions {
            batch_size: self.batch_size,
            threshold: (self.threshold > 0.0).then_some(self.threshold as f32),
            allow_overlapping: self.allow_overlapping,
            precision,
        };
        options.validate().map_err(|e| match e {
            span_marker::Error::Setting { key, message } => setting_error(key, message),
            other => other.into(),
        })?;
        Ok(options)
    }

    /// The model these settings name, or `fallback` when they name none.
    pub fn model(&self, fallback: Option<&SharedModel>) -> Result<SharedModel> {
        self.model_on(fallback, None)
    }

    /// [`model`](Self::model) as loaded by `worker`: on its device.
    pub(crate) fn model_on(
        &self,
        fallback: Option<&SharedModel>,
        worker: Option<&Worker>,
    ) -> Result<SharedModel> {
        self.load(fallback, self.device_on(worker))
    }

    /// The device models run on for `worker`: its own, or else the session's.
    pub(crate) fn device_on<'a>(&'a self, worker: Option<&'a Worker>) -> &'a str {
        worker
            .and_then(|w| w.device.as_deref())
            .unwrap_or(&self.device)
    }

    fn load(&self, fallback: Option<&SharedModel>, device: &str) -> Result<SharedModel> {
        match (self.model.trim(), fallback) {
            ("", Some(model)) => Ok(model.clone()),
            ("", None) => Err(Error::Pipeline {
                file: "session".into(),
                key: "span_marker.model".into(),
                message: "no model chosen: run `SET span_marker.model = '<model dir or hub id>'` \
                          (or 'bundled'), or register the functions with a model"
                    .into(),
            }),
            (source, _) => SharedModel::load(source, device),
        }
    }
}
