//! The training loop: batches, AdamW with a warmup schedule, logging, evaluation, atomic
//! checkpoints and exact resumption.
//!
//! Every source of randomness is derived from `seed` and the position in the run: the sample
//! order of epoch `e` from `(seed, e)`, the dropout masks of a micro-batch from its index. A run
//! resumed from a checkpoint therefore sees exactly the batches an uninterrupted run would have
//! seen after that point, none lost and none repeated.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, StateDict};
use crate::collate::{collate, CollateSpec};
use crate::device::parse_device;
use crate::encoding::SampleRef;
use crate::error::{Error, Result};
use crate::model::{ModelCard, SpanMarkerModel};
use crate::train::args::{IntervalStrategy, TrainingArguments};
use crate::train::data::NerDataset;
use crate::train::evaluate::{evaluate_prepared, prepare, Evaluation, Prepared};
use crate::train::optim::{AdamW, Schedule};
use crate::train::plot::plot_history;

/// File names inside a checkpoint and the output directory.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const ARGS_FILE: &str = "training_args.json";
pub const LOG_FILE: &str = "log_history.jsonl";
pub const PLOT_FILE: &str = "training_curves.svg";
const CHECKPOINT_PREFIX: &str = "checkpoint-";

/// Where a run stands; saved in every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub global_step: usize,
    /// The epoch in progress (from 0).
    pub epoch: usize,
    /// Micro-batches of that epoch already consumed.
    pub batches_done: usize,
    /// Sum of the (accumulation-scaled) losses since the last log record, and its steps.
    pub loss_since_log: f64,
    pub steps_since_log: usize,
    /// Sum of all step losses (for `train_loss`).
    pub total_loss: f64,
    pub best_metric: Option<f64>,
    pub best_checkpoint: Option<PathBuf>,
    /// Every log and evaluation record so far.
    pub log_history: Vec<Map<String, Value>>,
}

/// The outcome of [`Trainer::train`].
#[derive(Debug, Clone)]
pub struct TrainOutput {
    pub global_step: usize,
    /// Mean training loss over all steps.
    pub train_loss: f64,
    /// `train_runtime`, `train_samples_per_second`, `train_steps_per_second`, `train_loss`, `epoch`.
    pub metrics: Map<String, Value>,
    /// The last evaluation, if any.
    pub last_evaluation: Option<Evaluation>,
}

/// Trains a [`SpanMarkerModel`] in place.
pub struct Trainer<'m> {
    model: &'m mut SpanMarkerModel,
    args: TrainingArguments,
    device: Device,
}

impl<'m> Trainer<'m> {
    /// Checks the arguments against the machine (device, mixed precision, output directory)
    /// and moves the model to the device.
    pub fn new(model: &'m mut SpanMarkerModel, args: TrainingArguments) -> Result<Self> {
        args.validate().map_err(Error::Config)?;
        let device = parse_device(&args.device)?;
        args.precision().check(device)?;
        if args.output_dir.exists() && !args.output_dir.is_dir() {
            return Err(Error::Config(format!(
                "`output_dir` {} exists and is not a directory",
                args.output_dir.display()
            )));
        }
        model.to_device(device);
        Ok(Self {
            model,
            args,
            device,
        })
    }

    pub fn args(&self) -> &TrainingArguments {
        &self.args
    }

    /// Evaluates the model; `prefix` names the metrics (`eval`, `test`).
    pub fn evaluate(&self, data: &NerDataset, prefix: &str) -> Result<Evaluation> {
        crate::train::evaluate::evaluate(
            self.model,
            data,
            prefix,
            self.args.per_device_eval_batch_size,
        )
    }

    /// Trains on `train`, evaluating on `eval` as the arguments say. `resume_from` is a
    /// checkpoint directory, or `"latest"` for the newest one in `output_dir`.
    pub fn train(
        &mut self,
        train: &NerDataset,
        eval: Option<&NerDataset>,
        resume_from: Option<&str>,
    ) -> Result<TrainOutput> {
        let started = Instant::now();
        let args = self.args.clone();
        let precision = args.precision();
        if args.eval_strategy != IntervalStrategy::No && eval.is_none() {
            return Err(Error::Config(
                "`eval_strategy` is set but no evaluation dataset was given".into(),
            ));
        }
        // Check and encode everything before the first step.
        let prepared = prepare(self.model, train, "train")?;
        let prepared_eval = eval
            .map(|e| prepare(self.model, e, "evaluation"))
            .transpose()?;
        std::fs::create_dir_all(&args.output_dir).map_err(|e| Error::io(&args.output_dir, e))?;

        let samples = prepared.encoded.samples.len();
        let batches_per_epoch = samples.div_ceil(args.per_device_train_batch_size);
        let updates_per_epoch = batches_per_epoch
            .div_ceil(args.gradient_accumulation_steps)
            .max(1);
        let total_steps = args
            .max_steps
            .unwrap_or_else(|| (args.num_train_epochs * updates_per_epoch as f64).ceil() as usize);
        let num_epochs = total_steps.div_ceil(updates_per_epoch);
        let warmup = if args.warmup_steps > 0 {
            args.warmup_steps
        } else {
            (args.warmup_ratio * total_steps as f64).ceil() as usize
        };
        let schedule = Schedule {
            base_lr: args.learning_rate,
            warmup_steps: warmup,
            total_steps,
            decay: args.lr_scheduler_type == "linear",
        };

        let checkpoint = resume_from
            .map(|from| self.resolve_checkpoint(from))
            .transpose()?;
        let mut state = TrainerState::default();
        if let Some(dir) = &checkpoint {
            tracing::info!(checkpoint = %dir.display(), "resuming");
            *self.model = SpanMarkerModel::load_dir(dir, self.device)?;
            state = read_state(dir)?;
        }
        let mut optimizer = AdamW::new(
            self.model.var_store().variables(),
            args.adam_beta1,
            args.adam_beta2,
            args.adam_epsilon,
            args.weight_decay,
        );
        if let Some(dir) = &checkpoint {
            let saved = StateDict::read(&dir.join(OPTIMIZER_FILE))?;
            optimizer.load_state(&saved.tensors.into_iter().collect())?;
        }
        rewrite_log(&args.output_dir, &state.log_history)?;
        write_args(&args, &args.output_dir)?;

        tracing::info!(
            samples,
            batches_per_epoch,
            total_steps,
            warmup,
            epochs = num_epochs,
            "training"
        );
        let progress = ProgressBar::new(total_steps as u64).with_position(state.global_step as u64);
        progress.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );

        // Batches trimmed to what their samples need: only masked padding goes.
        let spec = CollateSpec {
            trim_to_multiple_of: Some(8),
            ..self.model.preprocessor().collate_spec()
        };
        let accum = args.gradient_accumulation_steps;
        let steps_at_start = state.global_step;
        let mut scaler = args.fp16.then(LossScaler::new);
        // The running sum of `state.loss_since_log` lives on the device and is read back only
        // to log or save it: a read every step would make each step wait for the device.
        // Summed in float64 in step order, it is the very number a host sum would be.
        let mut loss_sum = Tensor::scalar_tensor(state.loss_since_log, (Kind::Double, self.device));
        let mut last_evaluation = None;
        'epochs: for epoch in state.epoch..num_epochs {
            let order = self.epoch_order(&prepared, epoch);
            let batches: Vec<&[usize]> = order.chunks(args.per_device_train_batch_size).collect();
            let skip = if epoch == state.epoch {
                state.batches_done
            } else {
                0
            };
            state.epoch = epoch;
            for (index, batch) in batches.iter().enumerate().skip(skip) {
                if state.global_step >= total_steps {
                    break 'epochs;
                }
                let micro = epoch * batches_per_epoch + index;
                tch::manual_seed(
                    (args.seed as i64)
                        .wrapping_mul(1_000_003)
                        .wrapping_add(micro as i64),
                );
                let picked: Vec<SampleRef> = batch
                    .iter()
                    .map(|&i| prepared.encoded.samples[i].clone())
                    .collect();
                let inputs = collate(&prepared.encoded.windows, &picked, &spec, self.device)?;
                let model = &*self.model;
                let loss = precision
                    .autocast(|| model.forward(&inputs, true).loss)?
                    .expect("training batches have labels")
                    / accum as f64;
                match &scaler {
                    Some(s) => (&loss * s.scale).backward(),
                    None => loss.backward(),
                }
                let _ = loss_sum.g_add_(&loss.detach().to_kind(Kind::Double));
                state.batches_done = index + 1;

                let last_of_epoch = index + 1 == batches.len();
                if (index + 1) % accum != 0 && !last_of_epoch {
                    continue;
                }
                let finite = match &mut scaler {
                    Some(s) => s.unscale(&mut optimizer),
                    None => true,
                };
                if finite {
                    if args.max_grad_norm > 0.0 {
                        let _ = optimizer.clip_grad_norm(args.max_grad_norm);
                    }
                    optimizer.step(schedule.lr(state.global_step));
                }
                optimizer.zero_grad();
                state.global_step += 1;
                state.steps_since_log += 1;
                let epoch_progress = epoch as f64 + (index + 1) as f64 / batches.len() as f64;
                progress.set_position(state.global_step as u64);

                let step = state.global_step;
                if due(
                    args.logging_strategy,
                    args.logging_steps,
                    step,
                    last_of_epoch,
                ) {
                    state.loss_since_log = f64::try_from(&loss_sum)?;
                    let loss = state.loss_since_log / state.steps_since_log.max(1) as f64;
                    state.total_loss += state.loss_since_log;
                    state.loss_since_log = 0.0;
                    let _ = loss_sum.zero_();
                    state.steps_since_log = 0;
                    // The rate of the step just taken, as transformers logs it.
                    let lr = schedule.lr(step - 1);
                    progress.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
                    let record = json!({"loss": round4(loss), "learning_rate": lr, "epoch": epoch_progress, "step": step});
                    self.log(&mut state, record)?;
                }
                if let Some(prepared_eval) = &prepared_eval {
                    if due(
                        args.eval_strategy,
                        args.eval_interval(),
                        step,
                        last_of_epoch,
                    ) {
                        let evaluation = self.evaluate_in_training(prepared_eval)?;
                        let mut record = evaluation.to_record();
                        record.insert("epoch".into(), json!(epoch_progress));
                        record.insert("step".into(), json!(step));
                        self.log(&mut state, Value::Object(record))?;
                        self.track_best(&mut state, &evaluation);
                        last_evaluation = Some(evaluation);
                    }
                }
                if due(args.save_strategy, args.save_steps, step, last_of_epoch) {
                    state.loss_since_log = f64::try_from(&loss_sum)?;
                    if last_of_epoch {
                        state.epoch = epoch + 1;
                        state.batches_done = 0;
                    }
                    self.save_checkpoint(&state, &optimizer)?;
                    state.epoch = epoch;
                    state.batches_done = index + 1;
                }
            }
        }
        progress.finish();
        state.loss_since_log = f64::try_from(&loss_sum)?;
        state.total_loss += state.loss_since_log;

        let runtime = started.elapsed().as_secs_f64();
        let train_loss = state.total_loss / state.global_step.max(1) as f64;
        let steps_here = (state.global_step - steps_at_start) as f64;
        let samples_here = steps_here * (args.per_device_train_batch_size * accum) as f64;
        let mut metrics = Map::new();
        metrics.insert("train_runtime".into(), json!(runtime));
        metrics.insert(
            "train_samples_per_second".into(),
            json!(samples_here / runtime.max(1e-9)),
        );
        metrics.insert(
            "train_steps_per_second".into(),
            json!(steps_here / runtime.max(1e-9)),
        );
        metrics.insert("train_loss".into(), json!(train_loss));
        metrics.insert(
            "epoch".into(),
            json!(state.global_step as f64 / updates_per_epoch as f64),
        );
        metrics.insert("step".into(), json!(state.global_step));
        self.log(&mut state, Value::Object(metrics.clone()))?;

        if args.load_best_model_at_end {
            if let Some(best) = &state.best_checkpoint {
                tracing::info!(checkpoint = %best.display(), "loading the best model");
                *self.model = SpanMarkerModel::load_dir(best, self.device)?;
            }
        }
        // The card reports the evaluation of the model being saved: the best one when it was
        // loaded back, else the last.
        let best_step = args
            .load_best_model_at_end
            .then(|| state.best_checkpoint.as_deref().and_then(checkpoint_step))
            .flatten();
        let card_record = state
            .log_history
            .iter()
            .rev()
            .filter(|r| r.contains_key("eval_loss"))
            .find(|r| {
                best_step.is_none_or(|s| r.get("step").and_then(Value::as_u64) == Some(s as u64))
            });
        let card = ModelCard {
            metrics: card_record
                .map(|r| {
                    r.iter()
                        .filter(|(k, _)| k.starts_with("eval_"))
                        .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        self.model
            .save_pretrained_with_card(&args.output_dir, &card)?;
        plot_history(&state.log_history, &args.output_dir.join(PLOT_FILE))?;
        Ok(TrainOutput {
            global_step: state.global_step,
            train_loss,
            metrics,
            last_evaluation,
        })
    }

    /// Sample indices of `epoch` in training order.
    fn epoch_order(&self, prepared: &Prepared, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..prepared.encoded.samples.len()).collect();
        if self.args.shuffle {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                self.args.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            order.shuffle(&mut rng);
        }
        if self.args.group_by_length {
            let length = |i: &usize| {
                let sample = &prepared.encoded.samples[*i];
                prepared.encoded.windows[sample.window].input_ids.len() + 2 * sample.spans.len()
            };
            for group in order.chunks_mut(50 * self.args.per_device_train_batch_size) {
                group.sort_by_key(|i| std::cmp::Reverse(length(i)));
            }
        }
        order
    }

    fn evaluate_in_training(&self, prepared: &Prepared) -> Result<Evaluation> {
        evaluate_prepared(
            self.model,
            prepared,
            "eval",
            self.args.per_device_eval_batch_size,
            Instant::now(),
        )
    }

    fn log(&self, state: &mut TrainerState, record: Value) -> Result<()> {
        let Value::Object(record) = record else {
            unreachable!("records are objects")
        };
        let line = serde_json::Value::Object(record.clone()).to_string();
        tracing::info!(target: "span_marker::train", "{line}");
        let path = self.args.output_dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(file, "{}", Value::Object(record.clone())).map_err(|e| Error::io(&path, e))?;
        state.log_history.push(record);
        Ok(())
    }

    fn track_best(&self, state: &mut TrainerState, evaluation: &Evaluation) {
        let key = self.args.best_metric_key();
        let Some(value) = evaluation.metric(&key) else {
            tracing::warn!(
                key,
                "the best-model metric is not among the evaluation metrics"
            );
            return;
        };
        let better = state.best_metric.is_none_or(|best| {
            if self.args.higher_is_better() {
                value > best
            } else {
                value < best
            }
        });
        if better {
            state.best_metric = Some(value);
            state.best_checkpoint = Some(self.checkpoint_dir(state.global_step));
        }
    }

    fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.args
            .output_dir
            .join(format!("{CHECKPOINT_PREFIX}{step}"))
    }

    /// Writes a complete checkpoint into a temporary directory and renames it into place, then
    /// enforces `save_total_limit`.
    fn save_checkpoint(&self, state: &TrainerState, optimizer: &AdamW) -> Result<()> {
        let target = self.checkpoint_dir(state.global_step);
        let tmp = self
            .args
            .output_dir
            .join(format!(".{CHECKPOINT_PREFIX}{}.tmp", state.global_step));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        self.model.save_pretrained(&tmp)?;
        checkpoint::write_safetensors(&tmp.join(OPTIMIZER_FILE), &optimizer.state())?;
        let json =
            serde_json::to_string_pretty(state).map_err(|e| Error::json(TRAINER_STATE_FILE, e))?;
        checkpoint::write_atomically(&tmp.join(TRAINER_STATE_FILE), json.as_bytes())?;
        write_args(&self.args, &tmp)?;
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        }
        std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        tracing::info!(checkpoint = %target.display(), "saved checkpoint");
        if let Some(limit) = self.args.save_total_limit {
            let mut checkpoints = list_checkpoints(&self.args.output_dir)?;
            checkpoints.retain(|(_, dir)| Some(dir) != state.best_checkpoint.as_ref());
            let keep = limit
                .saturating_sub(usize::from(state.best_checkpoint.is_some()))
                .max(1);
            let excess = checkpoints.len().saturating_sub(keep);
            for (_, dir) in checkpoints.into_iter().take(excess) {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
        }
        Ok(())
    }

    fn resolve_checkpoint(&self, from: &str) -> Result<PathBuf> {
        if from == "latest" {
            return list_checkpoints(&self.args.output_dir)?
                .pop()
                .map(|(_, dir)| dir)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "no checkpoint to resume from in {}",
                        self.args.output_dir.display()
                    ))
                });
        }
        let dir = PathBuf::from(from);
        if !dir.join(TRAINER_STATE_FILE).is_file() {
            return Err(Error::Config(format!(
                "{} is not a training checkpoint (no {TRAINER_STATE_FILE})",
                dir.display()
            )));
        }
        Ok(dir)
    }
}

/// Whether an event with this strategy happens after optimizer step `step`.
fn due(strategy: IntervalStrategy, every: usize, step: usize, end_of_epoch: bool) -> bool {
    match strategy {
        IntervalStrategy::No => false,
        IntervalStrategy::Steps => step % every.max(1) == 0,
        IntervalStrategy::Epoch => end_of_epoch,
    }
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The step of a `checkpoint-N` directory.
fn checkpoint_step(dir: &Path) -> Option<usize> {
    dir.file_name()?
        .to_str()?
        .strip_prefix(CHECKPOINT_PREFIX)?
        .parse()
        .ok()
}

/// Complete checkpoints in `dir`, oldest first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if let Some(step) = checkpoint_step(Path::new(&name)) {
            if entry.path().join(TRAINER_STATE_FILE).is_file() {
                found.push((step, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Writes the arguments of a run as `training_args.json` into `dir`.
fn write_args(args: &TrainingArguments, dir: &Path) -> Result<()> {
    let path = dir.join(ARGS_FILE);
    let json = serde_json::to_string_pretty(args).map_err(|e| Error::json(&path, e))?;
    checkpoint::write_atomically(&path, json.as_bytes())
}

fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(TRAINER_STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(&path, e))
}

/// Rewrites the log file to hold exactly `history` (on resume, records after the checkpoint
/// are dropped and will be written again).
fn rewrite_log(dir: &Path, history: &[Map<String, Value>]) -> Result<()> {
    let text: String = history
        .iter()
        .map(|r| format!("{}\n", Value::Object(r.clone())))
        .collect();
    checkpoint::write_atomically(&dir.join(LOG_FILE), text.as_bytes())
}

/// Dynamic loss scaling for float16 training, as `torch.cuda.amp.GradScaler`.
struct LossScaler {
    scale: f64,
    good_steps: usize,
}

impl LossScaler {
    fn new() -> Self {
        Self {
            scale: 65536.0,
            good_steps: 0,
        }
    }

    /// Unscales the gradients; false (and a smaller scale) when any is not finite.
    fn unscale(&mut self, optimizer: &mut AdamW) -> bool {
        let finite = optimizer.unscale_grads(1.0 / self.scale);
        if finite {
            self.good_steps += 1;
            if self.good_steps == 2000 {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale /= 2.0;
            self.good_steps = 0;
            tracing::warn!(scale = self.scale, "non-finite gradients: step skipped");
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_their_strategy() {
        assert!(due(IntervalStrategy::Steps, 10, 20, false));
        assert!(!due(IntervalStrategy::Steps, 10, 25, true));
        assert!(due(IntervalStrategy::Epoch, 10, 25, true));
        assert!(!due(IntervalStrategy::No, 1, 1, true));
        assert_eq!(checkpoint_step(Path::new("out/checkpoint-120")), Some(120));
        assert_eq!(checkpoint_step(Path::new("out/.checkpoint-120.tmp")), None);
    }
}
