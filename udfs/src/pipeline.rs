//! Pipeline files: a declarative training job (sources, encoder, labels, model settings,
//! training arguments, output) in TOML, validated whole before any work starts.
//!
//! ```toml
//! [sources.train]
//! path = "data/train.parquet"        # Parquet, CSV, JSON lines or CoNLL (`format = "conll"`)
//! [sources.eval]
//! path = "data/dev.parquet"
//! [sources.test]                      # a Hugging Face Hub dataset (Parquet, via the HF cache)
//! dataset = "conll2003"              # + config, split (default: the role's), rows, revision
//! [model]
//! encoder = "bert-base-cased"        # an encoder directory or Hugging Face id
//! labels = ["O", "B-PER", "I-PER"]   # optional with string tags or a dataset's ClassLabel
//! [training]                          # Hugging Face TrainingArguments names
//! output_dir = "models/my-ner"
//! num_train_epochs = 3
//! [hub]                               # optional: publish to the Hugging Face Hub
//! repo_id = "me/my-ner"
//! strategy = "every_save"            # end (default), every_save, checkpoint, all_checkpoints
//! ```
//!
//! The `[hub]` table publishes the model (token from `HF_TOKEN` or the Hugging Face CLI's token
//! file, never from the pipeline file): it sets the `push_to_hub`, `hub_model_id`,
//! `hub_strategy`, `hub_private_repo` and `hub_endpoint` training arguments, which the
//! `[training]` table then leaves out.
//!
//! Relative paths are relative to the pipeline file's directory; a source's `path` may be an
//! object-store URL (`s3://bucket/train.parquet`, see [`crate::sources`]), left as it is.
//! Paths, dataset ids, the encoder and the Hub repository may name environment variables as
//! `${NAME}` (for data and encoders kept outside the project, e.g.
//! `path = "${CONLL2003_DIR}/train.txt"`); an unset variable is an error naming the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use span_marker::train::{HubStrategy, TrainingArguments};

use crate::error::{Error, Result};
use crate::sources::TableSource;
use crate::training::{self, ModelSpec, TrainReport};

/// Where and when a pipeline publishes its model: the `[hub]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubTable {
    /// The repository, `user/name` or `org/name`; created when missing.
    pub repo_id: String,
    /// Create the repository as private.
    #[serde(default)]
    pub private: bool,
    /// When to publish during training; the final model is always published.
    #[serde(default)]
    pub strategy: HubStrategy,
    /// The Hub's URL; `HF_ENDPOINT`, else `https://huggingface.co`, when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// The data of a pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    pub train: TableSource,
    #[serde(default)]
    pub eval: Option<TableSource>,
    #[serde(default)]
    pub test: Option<TableSource>,
}

/// A pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
    pub sources: Sources,
    pub model: ModelSpec,
    #[serde(default)]
    pub training: TrainingArguments,
    /// Publishing to the Hub, when the model should go there.
    #[serde(default)]
    pub hub: Option<HubTable>,
    /// The file it was read from (not a key of the file).
    #[serde(skip)]
    pub file: PathBuf,
}

impl Pipeline {
    /// Reads and validates a pipeline file; `${NAME}` in paths is taken from the environment,
    /// and relative paths become relative to the file's directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file_with_vars(path, |name| std::env::var(name).ok())
    }

    /// [`from_file`](Self::from_file) with `${NAME}` in paths taken from `vars`.
    pub fn from_file_with_vars(
        path: impl AsRef<Path>,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut pipeline = Self::from_toml_str(&text, path)?;
        pipeline.expand_vars(&vars)?;
        let base = path.parent().unwrap_or(Path::new(""));
        pipeline.resolve_paths(base);
        pipeline.validate()?;
        Ok(pipeline)
    }

    /// Parses pipeline TOML; `file` names it in errors. Paths are kept as written.
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Self> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| Error::Pipeline {
            file: file.display().to_string(),
            key: "<syntax>".into(),
            message: e.to_string().trim().to_owned(),
        })?;
        let mut pipeline: Pipeline =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let message = describe_toml_error(&e.inner().to_string());
                let path = e.path().to_string();
                let key = match path.as_str() {
                    "model" => model_key(text, &message),
                    _ => path,
                };
                Error::Pipeline {
                    file: file.display().to_string(),
                    key,
                    message,
                }
            })?;
        pipeline.file = file.to_path_buf();
        pipeline.apply_hub()?;
        pipeline.default_splits();
        Ok(pipeline)
    }

    /// A dataset source without a `split` reads the split of its role: `train`, `validation`
    /// for `eval`, `test`.
    fn default_splits(&mut self) {
        for (role, source) in self.splits_mut() {
            if source.dataset.is_some() && source.split.is_none() {
                let split = if role == "eval" { "validation" } else { role };
                source.split = Some(split.to_owned());
            }
        }
    }

    /// Sets the training arguments that publish, from the `[hub]` table; the same settings in
    /// `[training]` too are an error, so that each is said in one place.
    fn apply_hub(&mut self) -> Result<()> {
        if self.training.hub_token.is_some() {
            return Err(Error::Pipeline {
                file: self.file.display().to_string(),
                key: "training.hub_token".into(),
                message: "a token does not belong in a pipeline file: set HF_TOKEN or log in \
                          with `huggingface-cli login`"
                    .into(),
            });
        }
        let Some(hub) = &self.hub else {
            return Ok(());
        };
        let args = &mut self.training;
        let defaults = TrainingArguments::default();
        let doubled = [
            ("push_to_hub", args.push_to_hub != defaults.push_to_hub),
            ("hub_model_id", args.hub_model_id.is_some()),
            ("hub_strategy", args.hub_strategy != defaults.hub_strategy),
            ("hub_private_repo", args.hub_private_repo),
            ("hub_endpoint", args.hub_endpoint.is_some()),
        ];
        if let Some((key, _)) = doubled.iter().find(|(_, set)| *set) {
            return Err(Error::Pipeline {
                file: self.file.display().to_string(),
                key: format!("training.{key}"),
                message: "publishing is set in the [hub] table; leave it out of [training] \
                          (the token comes from HF_TOKEN or the Hugging Face CLI's token file)"
                    .into(),
            });
        }
        args.push_to_hub = true;
        args.hub_model_id = Some(hub.repo_id.clone());
        args.hub_strategy = hub.strategy;
        args.hub_private_repo = hub.private;
        args.hub_endpoint = hub.endpoint.clone();
        Ok(())
    }

    /// Replaces `${NAME}` in the sources' paths and dataset ids, the encoder, the output
    /// directory and the Hub repository.
    fn expand_vars(&mut self, vars: &impl Fn(&str) -> Option<String>) -> Result<()> {
        let file = self.file.display().to_string();
        let expand = |key: String, text: &str| -> Result<String> {
            substitute_vars(text, vars).map_err(|message| Error::Pipeline {
                file: file.clone(),
                key,
                message,
            })
        };
        for (split, source) in self.splits_mut() {
            if let Some(path) = source.path.as_mut() {
                *path = expand(format!("sources.{split}.path"), &path.to_string_lossy())?.into();
            }
            if let Some(dataset) = source.dataset.as_mut() {
                *dataset = expand(format!("sources.{split}.dataset"), dataset)?;
            }
        }
        if let Some(hub) = self.hub.as_mut() {
            hub.repo_id = expand("hub.repo_id".into(), &hub.repo_id)?;
            self.training.hub_model_id = Some(hub.repo_id.clone());
        }
        self.model.encoder = expand("model.encoder".into(), &self.model.encoder)?;
        let output_dir = &mut self.training.output_dir;
        *output_dir = expand("training.output_dir".into(), &output_dir.to_string_lossy())?.into();
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            // `s3://bucket/key` is a relative path to `Path`.
            if p.is_relative() && !crate::store::is_url(&p.to_string_lossy()) {
                *p = base.join(&*p);
            }
        };
        for (_, source) in self.splits_mut() {
            if let Some(path) = source.path.as_mut() {
                resolve(path);
            }
        }
        resolve(&mut self.training.output_dir);
        let encoder = base.join(&self.model.encoder);
        if Path::new(&self.model.encoder).is_relative() && encoder.exists() {
            self.model.encoder = encoder.to_string_lossy().into_owned();
        }
    }

    fn splits_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut TableSource)> {
        std::iter::once(("train", &mut self.sources.train))
            .chain(self.sources.eval.as_mut().map(|s| ("eval", s)))
            .chain(self.sources.test.as_mut().map(|s| ("test", s)))
    }

    /// Checks everything that can be checked without training: sources, training arguments,
    /// the encoder's location, the output directory. Errors name the key.
    pub fn validate(&self) -> Result<()> {
        let error = |key: String, message: String| Error::Pipeline {
            file: self.file.display().to_string(),
            key,
            message,
        };
        if let Some(hub) = &self.hub {
            span_marker::hub::check_repo_id(&hub.repo_id)
                .map_err(|message| error("hub.repo_id".into(), message))?;
        }
        for (split, source) in [
            ("train", Some(&self.sources.train)),
            ("eval", self.sources.eval.as_ref()),
            ("test", self.sources.test.as_ref()),
        ] {
            if let Some(source) = source {
                source
                    .validate()
                    .map_err(|(key, message)| error(format!("sources.{split}.{key}"), message))?;
            }
        }
        self.training
            .validate()
            .map_err(|message| error("training".into(), message))?;
        if self.training.output_dir.as_os_str().is_empty() {
            return Err(error("training.output_dir".into(), "must be set".into()));
        }
        if crate::store::is_url(&self.training.output_dir.to_string_lossy()) {
            return Err(error(
                "training.output_dir".into(),
                format!(
                    "{} is a URL: a model is written to a local directory",
                    self.training.output_dir.display()
                ),
            ));
        }
        if self.training.output_dir.is_file() {
            return Err(error(
                "training.output_dir".into(),
                format!("{} is a file", self.training.output_dir.display()),
            ));
        }
        let encoder = &self.model.encoder;
        let looks_like_path = encoder.starts_with('.')
            || encoder.starts_with('/')
            || encoder.matches('/').count() > 1;
        if looks_like_path && !Path::new(encoder).is_dir() {
            return Err(error(
                "model.encoder".into(),
                format!("{encoder} is not a directory"),
            ));
        }
        if let Some(labels) = &self.model.labels {
            span_marker::Labels::new(labels)
                .map_err(|e| error("model.labels".into(), e.to_string()))?;
        }
        match self.model.settings.validate() {
            Err(span_marker::Error::Setting { key, message }) => {
                Err(error(format!("model.{key}"), message))
            }
            other => other.map_err(Into::into),
        }
    }

    /// Reads the sources, trains, evaluates and saves; `resume` is `latest` or a checkpoint.
    pub async fn run(&self, resume: Option<&str>) -> Result<TrainReport> {
        let ctx = crate::store::enable_url_table(crate::store::session_context());
        let train = self.sources.train.read(&ctx).await?;
        let eval = match &self.sources.eval {
            Some(source) => Some(source.read(&ctx).await?),
            None => None,
        };
        let test = match &self.sources.test {
            Some(source) => Some(source.read(&ctx).await?),
            None => None,
        };
        if let Some(name) = &self.name {
            tracing::info!(pipeline = name, "data read, training");
        }
        let (model, args, resume) = (
            self.model.clone(),
            self.training.clone(),
            resume.map(str::to_owned),
        );
        tokio::task::spawn_blocking(move || training::run(model, args, train, eval, test, resume))
            .await
            .map_err(|e| Error::file("<training>", e.to_string()))?
    }
}

/// `${NAME}` in `text` replaced by the variable's value; an unset variable is an error.
fn substitute_vars(
    text: &str,
    vars: &impl Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in {text:?}"))?;
        let name = &after[..end];
        let value = vars(name).ok_or_else(|| {
            format!("{text:?} names the environment variable `{name}`, which is not set")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The dotted key of an error in the `[model]` table. Serde's path stops at `model` for the
/// keys of the `ModelSettings` flattened there beside `encoder`: an unknown key is named in the
/// message, and one of the wrong type is found by reading the settings again on their own.
fn model_key(text: &str, message: &str) -> String {
    let unknown = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split('`').next());
    if let Some(field) = unknown {
        return format!("model.{field}");
    }
    settings_key(text).unwrap_or_else(|| "model".into())
}

/// The key of the `[model]` table's settings that does not deserialize, if one does not.
fn settings_key(text: &str) -> Option<String> {
    let mut table = text.parse::<toml::Table>().ok()?.remove("model")?;
    let table = table.as_table_mut()?;
    table.remove("encoder");
    table.remove("labels");
    let error = serde_path_to_error::deserialize::<_, span_marker::ModelSettings>(
        toml::Value::Table(table.clone()),
    )
    .err()?;
    Some(format!("model.{}", error.path()))
}

/// A TOML error in one line: the reason, then where (`toml` puts the location first and the
/// reason after a quote of the line).
fn describe_toml_error(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    match (
        first.strip_prefix("TOML parse error at "),
        lines.next_back(),
    ) {
        (Some(location), Some(reason)) => format!("{reason} ({location})"),
        _ => first.to_owned(),
    }
}
