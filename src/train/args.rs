//! Training arguments, named and defaulted as in Hugging Face `TrainingArguments`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::Precision;
use crate::error::{Error, Result};

/// When something happens during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IntervalStrategy {
    /// Never.
    No,
    /// Every `*_steps` optimizer steps.
    #[default]
    Steps,
    /// At the end of every epoch.
    Epoch,
}

/// When the trainer publishes to the Hub (with `push_to_hub`), as in transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HubStrategy {
    /// Once, the final model, when training ends.
    #[default]
    End,
    /// Also the model of every checkpoint, as it is saved (`Training in progress, step N`).
    EverySave,
    /// As `every_save`, and the whole latest checkpoint in `last-checkpoint/`, to resume from.
    Checkpoint,
    /// As `every_save`, and every checkpoint whole in its own `checkpoint-N/`.
    AllCheckpoints,
}

/// Where the trainer reports its logs besides `log_history.jsonl` and the checkpoints'
/// `trainer_state.json`: transformers' `report_to`, one name or a list of names.
///
/// `"tensorboard"` writes TensorBoard event files into `logging_dir`; `"all"` (the default, as
/// in transformers 4.57) reports to every integration this build has, which is TensorBoard;
/// `"none"` (or an empty list) to none. Other integrations of transformers (`wandb`, `mlflow`,
/// ...) are refused by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a name such as \"tensorboard\", \"all\" or \"none\", or a list of names"
)]
pub enum ReportTo {
    One(String),
    Many(Vec<String>),
}

/// A place training logs can be reported to (see [`ReportTo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integration {
    /// TensorBoard event files (`events.out.tfevents.*`) in `logging_dir`.
    TensorBoard,
}

impl Integration {
    /// Every integration of this build, by its `report_to` name.
    pub const ALL: [(&'static str, Integration); 1] = [("tensorboard", Integration::TensorBoard)];
}

impl Default for ReportTo {
    fn default() -> Self {
        Self::One("all".into())
    }
}

impl From<&str> for ReportTo {
    fn from(name: &str) -> Self {
        Self::One(name.to_owned())
    }
}

impl ReportTo {
    /// The integrations named, `all` being every one; an unknown name is an error naming it.
    pub fn integrations(&self) -> std::result::Result<Vec<Integration>, String> {
        let names: &[String] = match self {
            Self::One(name) => std::slice::from_ref(name),
            Self::Many(names) => names,
        };
        match names {
            [only] if only == "all" => return Ok(Integration::ALL.map(|(_, i)| i).to_vec()),
            [only] if only == "none" => return Ok(Vec::new()),
            _ => {}
        }
        let known: Vec<&str> = Integration::ALL.iter().map(|(name, _)| *name).collect();
        let mut found = Vec::new();
        for name in names {
            let Some((_, integration)) = Integration::ALL.iter().find(|(n, _)| n == name) else {
                let alone = if ["all", "none"].contains(&name.as_str()) {
                    " (alone, not in a list with other names)"
                } else {
                    ""
                };
                return Err(format!(
                    "`report_to` {name:?} is not supported: use {}, \"all\" or \"none\"{alone}",
                    known
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            if !found.contains(integration) {
                found.push(*integration);
            }
        }
        Ok(found)
    }

    /// Whether TensorBoard event files are written (for a valid `report_to`).
    pub fn tensorboard(&self) -> bool {
        self.integrations()
            .is_ok_and(|found| found.contains(&Integration::TensorBoard))
    }
}

/// What `hub_token` is written as wherever the arguments are saved, as in transformers.
pub const HUB_TOKEN_MASK: &str = "<HUB_TOKEN>";

/// Everything that shapes a training run. Unknown keys in a file are an error, so that a typo
/// does not silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingArguments {
    /// Where checkpoints, logs, plots and the final model go.
    pub output_dir: PathBuf,
    /// Train into an `output_dir` that holds a finished run (a model or checkpoints), removing
    /// its checkpoints first; without it (or a resumption) such a directory is refused.
    pub overwrite_output_dir: bool,
    pub learning_rate: f64,
    /// Decoupled weight decay (AdamW), not applied to biases and LayerNorm weights.
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Linear warmup over this fraction of the steps (ignored when `warmup_steps` > 0).
    pub warmup_ratio: f64,
    pub warmup_steps: usize,
    /// `linear` (warmup then linear decay to 0) or `constant` (warmup then constant).
    pub lr_scheduler_type: String,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub num_train_epochs: f64,
    /// Total optimizer steps; overrides `num_train_epochs` when set.
    pub max_steps: Option<usize>,
    pub eval_strategy: IntervalStrategy,
    pub eval_steps: Option<usize>,
    pub save_strategy: IntervalStrategy,
    pub save_steps: usize,
    /// Keep at most this many checkpoints (the best one is always kept).
    pub save_total_limit: Option<usize>,
    pub logging_strategy: IntervalStrategy,
    pub logging_steps: usize,
    /// Where the logs are reported besides `log_history.jsonl`: `"tensorboard"`, `"all"` (the
    /// default: every integration this build has, i.e. TensorBoard) or `"none"`, or a list such
    /// as `["tensorboard"]` (see [`ReportTo`]). TensorBoard shows the records of the log
    /// history under transformers' names (`train/loss`, `train/learning_rate`,
    /// `train/grad_norm`, `eval/overall_f1`, `train/train_runtime`, ...) at their steps.
    pub report_to: ReportTo,
    /// Where TensorBoard event files go. Unset, `output_dir/runs/<Mon><DD>_<HH>-<MM>-<SS>_<host>`
    /// (local time and host name), as transformers; the [`Trainer`](crate::train::Trainer) sets
    /// it when it is made, so its `training_args.json` names the directory. Each run (a resumed
    /// one too) adds its own event file there.
    pub logging_dir: Option<PathBuf>,
    pub seed: u64,
    /// Gradient clipping by global L2 norm; 0 disables it.
    pub max_grad_norm: f64,
    /// float16 autocast (CUDA only).
    pub fp16: bool,
    /// bfloat16 autocast (CUDA, or a CPU with bfloat16 instructions).
    pub bf16: bool,
    /// Shuffle the training samples every epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    /// Put samples of similar length into the same batch (within shuffled groups).
    pub group_by_length: bool,
    pub load_best_model_at_end: bool,
    /// An evaluation key such as `eval_overall_f1` or `eval_loss` (`eval_` may be left out).
    pub metric_for_best_model: Option<String>,
    /// Defaults to true for every metric but a loss.
    pub greater_is_better: Option<bool>,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// Publish the model to the Hugging Face Hub when training ends, and during training as
    /// `hub_strategy` says.
    pub push_to_hub: bool,
    /// The repository (`user/name` or `org/name`); the token's user and the name of
    /// `output_dir` when unset.
    pub hub_model_id: Option<String>,
    pub hub_strategy: HubStrategy,
    /// Create the repository as private.
    pub hub_private_repo: bool,
    /// The access token; `HF_TOKEN` or the Hugging Face CLI's token file when unset. Saved
    /// arguments hold [`HUB_TOKEN_MASK`] instead.
    #[serde(serialize_with = "mask_token", deserialize_with = "unmask_token")]
    pub hub_token: Option<crate::hub::Secret>,
    /// The Hub's URL (`HF_ENDPOINT`, else `https://huggingface.co`, when unset): a mirror, a
    /// private Hub. Saved arguments show it with any password replaced.
    #[serde(serialize_with = "redact_endpoint")]
    pub hub_endpoint: Option<String>,
}

fn mask_token<S: serde::Serializer>(
    token: &Option<crate::hub::Secret>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match token {
        Some(_) => serializer.serialize_some(HUB_TOKEN_MASK),
        None => serializer.serialize_none(),
    }
}

fn redact_endpoint<S: serde::Serializer>(
    endpoint: &Option<String>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match endpoint {
        Some(url) => serializer.serialize_some(&crate::hub::redact_url(url)),
        None => serializer.serialize_none(),
    }
}

/// A saved (masked) token reads back as none, so that the live one is looked up again.
fn unmask_token<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<crate::hub::Secret>, D::Error> {
    let token: Option<String> = Option::deserialize(deserializer)?;
    Ok(token.filter(|t| t != HUB_TOKEN_MASK).map(Into::into))
}

impl Default for TrainingArguments {
    fn default() -> Self {
        Self {
            output_dir: PathBuf::from("models/span-marker"),
            overwrite_output_dir: false,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            lr_scheduler_type: "linear".into(),
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            num_train_epochs: 3.0,
            max_steps: None,
            eval_strategy: IntervalStrategy::No,
            eval_steps: None,
            save_strategy: IntervalStrategy::Steps,
            save_steps: 500,
            save_total_limit: None,
            logging_strategy: IntervalStrategy::Steps,
            logging_steps: 500,
            report_to: ReportTo::default(),
            logging_dir: None,
            seed: 42,
            max_grad_norm: 1.0,
            fp16: false,
            bf16: false,
            shuffle: true,
            group_by_length: false,
            load_best_model_at_end: false,
            metric_for_best_model: None,
            greater_is_better: None,
            device: "auto".into(),
            push_to_hub: false,
            hub_model_id: None,
            hub_strategy: HubStrategy::End,
            hub_private_repo: false,
            hub_token: None,
            hub_endpoint: None,
        }
    }
}

impl TrainingArguments {
    /// Reads arguments from a JSON file; missing keys take their defaults.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let args: Self = crate::error::parse_json(&text, path)?;
        args.validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(args)
    }

    /// The precision of forward passes that `fp16` and `bf16` ask for.
    pub fn precision(&self) -> Precision {
        match (self.fp16, self.bf16) {
            (true, _) => Precision::Float16,
            (false, true) => Precision::BFloat16,
            (false, false) => Precision::Float32,
        }
    }

    /// Checks values that do not depend on the machine.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "per_device_eval_batch_size",
                self.per_device_eval_batch_size,
            ),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
            ),
            ("logging_steps", self.logging_steps),
            ("save_steps", self.save_steps),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{name}` must be at least 1"));
        }
        let max_batch = crate::PredictOptions::MAX_BATCH_SIZE;
        for (name, value) in [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "per_device_eval_batch_size",
                self.per_device_eval_batch_size,
            ),
        ] {
            if value > max_batch {
                return Err(format!("`{name}` must be at most {max_batch}, got {value}"));
            }
        }
        let finite_at_least_zero = [
            ("weight_decay", self.weight_decay),
            ("max_grad_norm", self.max_grad_norm),
        ];
        for (name, value) in finite_at_least_zero {
            if !value.is_finite() || value < 0.0 {
                return Err(format!(
                    "`{name}` must be a finite number >= 0, got {value}"
                ));
            }
        }
        for (name, value) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(format!("`{name}` must be in [0, 1), got {value}"));
            }
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return Err(format!(
                "`adam_epsilon` must be a finite number > 0, got {}",
                self.adam_epsilon
            ));
        }
        if self.push_to_hub {
            if cfg!(not(feature = "hub")) {
                return Err(
                    "`push_to_hub` needs the `hub` feature of span-marker, which this \
                            build leaves out"
                        .into(),
                );
            }
            if let Some(id) = &self.hub_model_id {
                crate::hub::check_repo_id(id).map_err(|e| format!("`hub_model_id` {id:?}: {e}"))?;
            }
            if self.hub_strategy != HubStrategy::End && self.save_strategy == IntervalStrategy::No {
                return Err(format!(
                    "`hub_strategy` {:?} publishes at every save, but `save_strategy` is \"no\"",
                    self.hub_strategy
                ));
            }
        }
        self.report_to.integrations()?;
        if self.save_total_limit == Some(0) {
            return Err(
                "`save_total_limit` must be at least 1 (or left out to keep every checkpoint)"
                    .into(),
            );
        }
        if let Some(metric) = &self.metric_for_best_model {
            let name = metric.strip_prefix("eval_").unwrap_or(metric);
            if !crate::train::evaluate::METRICS.contains(&name) {
                return Err(format!(
                    "`metric_for_best_model` {metric:?} is not an evaluation metric: use one of {}",
                    crate::train::evaluate::METRICS.join(", ")
                ));
            }
        }
        if !self.learning_rate.is_finite() || self.learning_rate <= 0.0 {
            return Err(format!(
                "`learning_rate` must be positive, got {}",
                self.learning_rate
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(format!(
                "`warmup_ratio` must be in [0, 1), got {}",
                self.warmup_ratio
            ));
        }
        let epochs = self.num_train_epochs;
        if self.max_steps.is_none() && (epochs.is_nan() || epochs <= 0.0) {
            return Err("`num_train_epochs` must be positive (or set `max_steps`)".into());
        }
        if epochs.is_nan() || epochs > 100_000.0 {
            return Err(format!(
                "`num_train_epochs` must be at most 100000, got {}",
                self.num_train_epochs
            ));
        }
        if self.max_steps == Some(0) {
            return Err("`max_steps` must be at least 1".into());
        }
        if !["linear", "constant"].contains(&self.lr_scheduler_type.as_str()) {
            return Err(format!(
                "`lr_scheduler_type` {:?} is not supported: use \"linear\" or \"constant\"",
                self.lr_scheduler_type
            ));
        }
        if self.fp16 && self.bf16 {
            return Err("`fp16` and `bf16` exclude each other".into());
        }
        if self.eval_steps == Some(0) {
            return Err("`eval_steps` must be at least 1".into());
        }
        if self.load_best_model_at_end {
            if self.eval_strategy == IntervalStrategy::No {
                return Err("`load_best_model_at_end` needs an `eval_strategy`".into());
            }
            if self.save_strategy != self.eval_strategy {
                return Err(
                    "`load_best_model_at_end` needs `save_strategy` equal to `eval_strategy`"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Steps between evaluations (`eval_steps`, else `logging_steps`, as in transformers).
    pub fn eval_interval(&self) -> usize {
        self.eval_steps.unwrap_or(self.logging_steps)
    }

    /// The metric that picks the best checkpoint, with its `eval_` prefix.
    pub fn best_metric_key(&self) -> String {
        let key = self.metric_for_best_model.as_deref().unwrap_or("loss");
        if key.starts_with("eval_") {
            key.to_owned()
        } else {
            format!("eval_{key}")
        }
    }

    /// Whether a higher value of the best-model metric is better.
    pub fn higher_is_better(&self) -> bool {
        self.greater_is_better
            .unwrap_or_else(|| !self.best_metric_key().ends_with("loss"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_take_defaults_and_refuse_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("args.json");
        std::fs::write(
            &path,
            r#"{"learning_rate": 1e-4, "eval_strategy": "epoch"}"#,
        )
        .unwrap();
        let args = TrainingArguments::from_file(&path).unwrap();
        assert_eq!(args.learning_rate, 1e-4);
        assert_eq!(args.eval_strategy, IntervalStrategy::Epoch);
        assert_eq!(args.per_device_train_batch_size, 8);

        std::fs::write(&path, r#"{"learnig_rate": 1e-4}"#).unwrap();
        let err = TrainingArguments::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("args.json") && err.contains("learnig_rate"),
            "{err}"
        );

        std::fs::write(&path, r#"{"per_device_train_batch_size": 0}"#).unwrap();
        let err = TrainingArguments::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("per_device_train_batch_size"), "{err}");
    }

    #[test]
    fn report_to_takes_a_name_or_a_list_as_transformers() {
        let parse = |json: &str| -> std::result::Result<Vec<Integration>, String> {
            let args: TrainingArguments =
                serde_json::from_str(&format!(r#"{{"report_to": {json}}}"#))
                    .map_err(|e| e.to_string())?;
            args.validate()?;
            args.report_to.integrations()
        };
        let tensorboard = Ok(vec![Integration::TensorBoard]);
        assert_eq!(parse(r#""all""#), tensorboard);
        assert_eq!(parse(r#"["all"]"#), tensorboard);
        assert_eq!(parse(r#""tensorboard""#), tensorboard);
        assert_eq!(parse(r#"["tensorboard", "tensorboard"]"#), tensorboard);
        assert_eq!(parse(r#""none""#), Ok(vec![]));
        assert_eq!(parse(r#"["none"]"#), Ok(vec![]));
        assert_eq!(parse("[]"), Ok(vec![]));
        assert!(TrainingArguments::default().report_to.tensorboard());
        assert!(!ReportTo::from("none").tensorboard());
        for bad in [
            r#""wandb""#,
            r#"["tensorboard", "mlflow"]"#,
            r#"["none", "tensorboard"]"#,
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.contains("`report_to`") && err.contains("\"tensorboard\""),
                "{bad}: {err}"
            );
        }
        let err = parse("5").unwrap_err();
        assert!(err.contains("\"tensorboard\""), "{err}");
    }

    #[test]
    fn best_metric_defaults_follow_transformers() {
        let mut args = TrainingArguments::default();
        assert_eq!(args.best_metric_key(), "eval_loss");
        assert!(!args.higher_is_better());
        args.metric_for_best_model = Some("overall_f1".into());
        assert_eq!(args.best_metric_key(), "eval_overall_f1");
        assert!(args.higher_is_better());
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_argument() {
        type Spoil = fn(&mut TrainingArguments);
        let cases: [(&str, Spoil); 7] = [
            ("metric_for_best_model", |a| {
                a.metric_for_best_model = Some("f2".into())
            }),
            ("adam_beta2", |a| a.adam_beta2 = 1.0),
            ("adam_epsilon", |a| a.adam_epsilon = f64::NAN),
            ("weight_decay", |a| a.weight_decay = -1.0),
            ("max_grad_norm", |a| a.max_grad_norm = f64::INFINITY),
            ("per_device_eval_batch_size", |a| {
                a.per_device_eval_batch_size = 99_999_999_999
            }),
            ("save_total_limit", |a| a.save_total_limit = Some(0)),
        ];
        for (name, spoil) in cases {
            let mut args = TrainingArguments::default();
            spoil(&mut args);
            let error = args.validate().unwrap_err();
            assert!(error.contains(&format!("`{name}`")), "{name}: {error}");
        }
        let args = TrainingArguments {
            metric_for_best_model: Some("eval_overall_f1".into()),
            ..Default::default()
        };
        args.validate().unwrap();
    }
}
