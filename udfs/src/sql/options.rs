//! `SET span_marker.<key> = <value>`: the session settings of the SpanMarker functions.

use datafusion::config::{
    ConfigEntry, ConfigExtension, ConfigField, ConfigOptions, ExtensionOptions,
};
use datafusion::error::DataFusionError;
use span_marker::{ModelSettings, PredictOptions};

use crate::error::{Error, Result};
use crate::model::SharedModel;
use crate::sql::{Worker, SETTINGS_PREFIX};

/// Settings of the SpanMarker SQL functions, changed with `SET span_marker.<key> = <value>`:
/// the model and where it runs, strict mode and the candidates' default length, and the
/// prediction options of [`PredictOptions`] (`batch_size`, `threshold`, `allow_overlapping`,
/// `precision`), which define their defaults, descriptions and checks.
///
/// `SET` refuses an unknown key and a value that does not parse, naming the setting; ranges
/// and precisions are checked when a function runs ([`predict_options`](Self::predict_options)).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanMarkerOptions {
    /// The model: a SpanMarker directory, a Hugging Face id, or `bundled` for the small
    /// embedded model. Empty means the model given to `register_all_with_model`.
    pub model: String,
    /// Where the model runs: `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// Fail the query on a row that cannot be annotated (a word longer than the model
    /// input, a null word) instead of returning NULL for it with a warning.
    pub strict: bool,
    /// Default longest candidate span, in words, for `span_marker_candidates`.
    pub entity_max_length: usize,
    /// The prediction options as set: (key, value) in [`PredictOptions::KEYS`] order, the
    /// values as `SET` gave them, read by [`predict_options`](Self::predict_options).
    predict: Vec<(&'static str, String)>,
}

/// The descriptions of the settings that are not prediction options (those describe
/// themselves: [`PredictOptions::description`]), as `SHOW` and `information_schema` list them.
const MODEL: &str = "The model: a SpanMarker directory, a Hugging Face id, or `bundled` for the \
                     small embedded model. Empty means the model given to \
                     `register_all_with_model`.";
const DEVICE: &str = "Where the model runs: `cpu`, `cuda`, `cuda:N` or `auto`.";
const STRICT: &str = "Fail the query on a row that cannot be annotated (a word longer than the \
                      model input, a null word) instead of returning NULL for it with a warning.";
const ENTITY_MAX_LENGTH: &str =
    "Default longest candidate span, in words, for `span_marker_candidates`.";

impl Default for SpanMarkerOptions {
    fn default() -> Self {
        Self {
            model: String::new(),
            device: "cpu".to_owned(),
            strict: false,
            entity_max_length: ModelSettings::DEFAULT_ENTITY_MAX_LENGTH,
            predict: PredictOptions::default().settings(),
        }
    }
}

/// The session's settings as a DataFusion config extension. A value that does not parse is an
/// error naming its setting (`span_marker.batch_size`).
impl ConfigExtension for SpanMarkerOptions {
    const PREFIX: &'static str = SETTINGS_PREFIX;
}

impl ExtensionOptions for SpanMarkerOptions {
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
        let invalid = |reason: &str| {
            DataFusionError::Configuration(format!(
                "invalid value '{value}' for `{}.{key}`: {reason}",
                Self::PREFIX
            ))
        };
        // DataFusion's message ("Error parsing 'abc' as usize") without its cause chain.
        let parse_error = |e: DataFusionError| {
            let reason = e.strip_backtrace();
            invalid(reason.lines().next().unwrap_or_default())
        };
        match key {
            "model" => self.model = value.to_owned(),
            "device" => self.device = value.to_owned(),
            "strict" => ConfigField::set(&mut self.strict, key, value).map_err(parse_error)?,
            "entity_max_length" => {
                ConfigField::set(&mut self.entity_max_length, key, value).map_err(parse_error)?
            }
            _ => {
                let Some(index) = self.predict.iter().position(|(k, _)| *k == key) else {
                    let prefix = format!("{}.", Self::PREFIX);
                    let names: Vec<String> = self
                        .entries()
                        .into_iter()
                        .map(|entry| entry.key.trim_start_matches(&prefix).to_owned())
                        .collect();
                    return Err(DataFusionError::Configuration(format!(
                        "unknown setting `{prefix}{key}`; the settings are {}",
                        names.join(", ")
                    )));
                };
                // The value's form now (a number where one is due); its range, and the settings
                // checked with the device, when a function reads them.
                if !PredictOptions::CHECKED_WHEN_RUN.contains(&key) {
                    PredictOptions::default()
                        .set(key, value)
                        .map_err(|e| match e {
                            span_marker::Error::Setting { message, .. } => invalid(&message),
                            other => invalid(&other.to_string()),
                        })?;
                }
                self.predict[index].1 = value.to_owned();
            }
        }
        Ok(())
    }

    /// Full keys (`span_marker.model`) with the values as set: Ballista sends a session's
    /// settings to the scheduler and executors as these entries, which they `set` again by key.
    fn entries(&self) -> Vec<ConfigEntry> {
        let entry = |key: &str, value: String, description: &'static str| ConfigEntry {
            key: format!("{}.{key}", Self::PREFIX),
            value: Some(value),
            description,
        };
        let mut entries = vec![
            entry("model", self.model.clone(), MODEL),
            entry("device", self.device.clone(), DEVICE),
        ];
        entries.extend(self.predict.iter().map(|(key, value)| {
            entry(
                key,
                value.clone(),
                PredictOptions::description(key).unwrap_or_default(),
            )
        }));
        entries.push(entry("strict", self.strict.to_string(), STRICT));
        entries.push(entry(
            "entity_max_length",
            self.entity_max_length.to_string(),
            ENTITY_MAX_LENGTH,
        ));
        entries
    }
}

impl SpanMarkerOptions {
    /// Every setting as (full key, value): `("span_marker.model", "")`, ...
    pub fn settings(&self) -> Vec<(String, String)> {
        self.entries()
            .into_iter()
            .filter_map(|entry| Some((entry.key, entry.value?)))
            .collect()
    }

    /// The settings in force in `config` (the defaults when the extension is not registered).
    pub fn from_config(config: &ConfigOptions) -> Self {
        config.extensions.get::<Self>().cloned().unwrap_or_default()
    }

    /// The prediction options these settings give, each checked ([`PredictOptions`] reads and
    /// checks them); an error names the setting (`span_marker.batch_size`).
    pub fn predict_options(&self) -> Result<PredictOptions> {
        let settings = self
            .predict
            .iter()
            .map(|(key, value)| (*key, value.as_str()));
        PredictOptions::from_settings(settings).map_err(|e| match e {
            span_marker::Error::Setting { key, message } => Error::Pipeline {
                file: "session".into(),
                key: format!("{SETTINGS_PREFIX}.{key}"),
                message,
            },
            other => other.into(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_set_again_give_the_same_settings_and_checks_come_when_read() {
        let mut options = SpanMarkerOptions::default();
        for (key, value) in [
            ("model", "bundled"),
            ("threshold", "0.50"),
            ("precision", "int4"),
            ("allow_overlapping", "TRUE"),
            ("batch_size", "0"),
            ("strict", "true"),
        ] {
            ExtensionOptions::set(&mut options, key, value).unwrap();
        }
        // Ballista ships the entries and sets them again by key.
        let prefix = format!("{SETTINGS_PREFIX}.");
        let mut again = SpanMarkerOptions::default();
        for entry in options.entries() {
            assert!(!entry.description.is_empty(), "{}", entry.key);
            let key = entry.key.strip_prefix(&prefix).unwrap();
            ExtensionOptions::set(&mut again, key, &entry.value.unwrap()).unwrap();
        }
        assert_eq!(again, options);

        // Precisions and ranges are checked when a function reads them, naming the setting.
        let error = options.predict_options().unwrap_err().to_string();
        assert!(
            error.contains("`span_marker.precision`") && error.contains("int4"),
            "{error}"
        );
        ExtensionOptions::set(&mut options, "precision", "bf16").unwrap();
        let error = options.predict_options().unwrap_err().to_string();
        assert!(error.contains("`span_marker.batch_size`"), "{error}");
        ExtensionOptions::set(&mut options, "batch_size", "8").unwrap();
        let predict = options.predict_options().unwrap();
        assert_eq!(
            (
                predict.batch_size,
                predict.threshold,
                predict.allow_overlapping
            ),
            (8, Some(0.5), true)
        );

        // A value that does not parse, or an unknown key, is refused at `SET`.
        let error = ExtensionOptions::set(&mut options, "threshold", "high").unwrap_err();
        let error = error.to_string();
        assert!(
            error.contains("invalid value 'high' for `span_marker.threshold`"),
            "{error}"
        );
        let error = ExtensionOptions::set(&mut options, "strict", "maybe").unwrap_err();
        assert!(
            error.to_string().contains("`span_marker.strict`"),
            "{error}"
        );
        let error = ExtensionOptions::set(&mut options, "nope", "1").unwrap_err();
        assert!(
            error.to_string().contains(
                "the settings are model, device, batch_size, threshold, allow_overlapping, \
                 precision, strict, entity_max_length"
            ),
            "{error}"
        );
        assert_eq!(options.predict_options().unwrap(), predict);
    }
}
