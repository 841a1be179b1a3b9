//! The training loop: batches, AdamW with a warmup schedule, logging, evaluation, atomic
//! checkpoints and exact resumption.
//!
//! Every log record (losses, evaluations, the run's final metrics) goes through one function,
//! [`Trainer::log`]: it appends the record to `log_history.jsonl` and the state's log history,
//! and writes its numbers to the run's TensorBoard event file when `report_to` asks for one.
//!
//! Every source of randomness is derived from `seed` and the position in the run: the sample
//! order of epoch `e` from `(seed, e)`, the dropout masks of a micro-batch from its index. A run
//! resumed from a checkpoint therefore sees exactly the batches an uninterrupted run would have
//! seen after that point, none lost and none repeated.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, StateDict};
use crate::collate::{collate, CollateSpec};
use crate::device::{parse_device, Precision};
use crate::encoding::SampleRef;
use crate::error::{Error, Result};
use crate::fingerprint;
use crate::lock::DirLock;
use crate::model::plan::{ForwardPlan, Mode};
use crate::model::{ModelCard, SpanMarkerModel};
use crate::train::args::{IntervalStrategy, TrainingArguments};
use crate::train::data::NerDataset;
use crate::train::evaluate::{evaluate_prepared, prepare as encode_split, Evaluation, Prepared};
use crate::train::optim::{AdamW, Schedule};
use crate::train::phases::PhaseTimes;
use crate::train::publish::HubPublisher;
use crate::train::tensorboard::{self, EventWriter};

/// File names inside a checkpoint and the output directory.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const ARGS_FILE: &str = "training_args.json";
pub const LOG_FILE: &str = "log_history.jsonl";
pub const PLOT_FILE: &str = "training_curves.svg";
pub(crate) const CHECKPOINT_PREFIX: &str = "checkpoint-";

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
    /// transformers' estimate of the floating-point operations so far (`total_flos`): 6 × the
    /// tokens of each training sample as the reference pads it (`M + 2K`) × the parameters
    /// outside the embedding tables.
    #[serde(default)]
    pub total_flos: f64,
    pub best_metric: Option<f64>,
    pub best_checkpoint: Option<PathBuf>,
    /// Every log and evaluation record so far.
    pub log_history: Vec<Map<String, Value>>,
    /// What the run started from; a resumed run must start from the same.
    #[serde(default)]
    pub run: Option<RunIdentity>,
}

/// What a training run is, by content: the model it started from, its data and the arguments
/// that shape its steps. Recorded in every checkpoint; resuming with anything else is an error
/// naming what changed, where it would otherwise continue silently with the checkpoint's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// [`SpanMarkerModel::encoder_fingerprint`] of the model given to the trainer.
    pub model: String,
    /// Digest of the training examples (words, tags, document positions), in order.
    pub train_data: String,
    /// Digest of the evaluation examples, when they pick the model the run ends with
    /// (`load_best_model_at_end`).
    pub eval_data: Option<String>,
    /// The training arguments that change the weights (see [`RunIdentity::ARGS`]).
    pub args: Map<String, Value>,
}

impl RunIdentity {
    /// The training arguments that change the weights a run ends with; the others (where and
    /// how often it logs, evaluates and saves, its device) may change between a run and its
    /// resumption.
    pub const ARGS: [&str; 19] = [
        "learning_rate",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "warmup_ratio",
        "warmup_steps",
        "lr_scheduler_type",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "max_steps",
        "seed",
        "max_grad_norm",
        "fp16",
        "bf16",
        "shuffle",
        "group_by_length",
        "load_best_model_at_end",
    ];

    fn new(
        model: &SpanMarkerModel,
        args: &TrainingArguments,
        train: &NerDataset,
        eval: Option<&NerDataset>,
    ) -> Result<Self> {
        // As a checkpoint records them, so that a float compares equal to its stored self.
        let all: Map<String, Value> =
            fingerprint::as_recorded(args).map_err(|e| Error::json(ARGS_FILE, e))?;
        let args = all
            .into_iter()
            .filter(|(key, _)| Self::ARGS.contains(&key.as_str()))
            .collect();
        Ok(Self {
            model: model.encoder_fingerprint()?,
            train_data: data_digest(train),
            eval_data: eval.filter(|_| args_load_best(&args)).map(data_digest),
            args,
        })
    }

    /// `Ok` when `self` (this run) may continue `found` (the checkpoint's run).
    fn check_resumes(&self, found: Option<&RunIdentity>, checkpoint: &Path) -> Result<()> {
        let Some(found) = found else {
            tracing::warn!(
                checkpoint = %checkpoint.display(),
                "the checkpoint does not record what its run started from (written by an older version): resuming unchecked"
            );
            return Ok(());
        };
        let mut changed = Vec::new();
        if found.model != self.model {
            changed.push(
                "the model (encoder weights, tokenizer, labels or model settings) differs"
                    .to_owned(),
            );
        }
        if found.train_data != self.train_data {
            changed.push("the training data differs".to_owned());
        }
        if found.eval_data != self.eval_data {
            changed.push("the evaluation data differs".to_owned());
        }
        // An argument the checkpoint does not record (added since) cannot be compared.
        changed.extend(fingerprint::differences(&found.args, &self.args, &[]));
        if changed.is_empty() {
            return Ok(());
        }
        Err(Error::Config(format!(
            "cannot resume from {}: this run is not the one that wrote it: {}. Resume with the \
             same model, data and arguments, or start a new run in another output directory",
            checkpoint.display(),
            changed.join("; ")
        )))
    }
}

fn args_load_best(args: &Map<String, Value>) -> bool {
    args.get("load_best_model_at_end") == Some(&Value::Bool(true))
}

/// Digest of a dataset's examples, in order.
fn data_digest(data: &NerDataset) -> String {
    let mut digest = crate::fingerprint::Fingerprint::new().u64(data.examples.len() as u64);
    for example in &data.examples {
        digest = digest.u64(example.tokens.len() as u64);
        for token in &example.tokens {
            digest = digest.str(token);
        }
        for &tag in &example.tags {
            digest = digest.u64(tag as u64);
        }
        digest = digest.str(&format!("{:?}", example.document));
    }
    digest.finish()
}

/// The outcome of [`Trainer::train`].
#[derive(Debug, Clone)]
pub struct TrainOutput {
    pub global_step: usize,
    /// Mean training loss over all steps.
    pub train_loss: f64,
    /// `train_runtime`, `train_samples_per_second`, `train_steps_per_second`, `total_flos`,
    /// `train_loss`, `epoch`.
    pub metrics: Map<String, Value>,
    /// The last evaluation, if any.
    pub last_evaluation: Option<Evaluation>,
    /// Where the run's wall time went (`startup` left at 0: the caller knows it).
    pub phases: PhaseTimes,
    /// The matrix products' floating-point operations of the training steps as run: the
    /// forward passes counted, each backward pass as twice its forward (evaluations during the
    /// run counted the same way).
    pub model_flops: f64,
}

/// Trains a [`SpanMarkerModel`] in place.
pub struct Trainer<'m> {
    model: &'m mut SpanMarkerModel,
    args: TrainingArguments,
    device: Device,
    publisher: Option<HubPublisher>,
}

impl<'m> Trainer<'m> {
    /// Checks the arguments against the machine (device, mixed precision, output directory),
    /// creates the Hub repository with `push_to_hub` and moves the model to the device.
    ///
    /// An unset `logging_dir` is set here, as transformers sets it when its arguments are made:
    /// `output_dir/runs/<date and time>_<host>`.
    pub fn new(model: &'m mut SpanMarkerModel, mut args: TrainingArguments) -> Result<Self> {
        args.validate().map_err(Error::Config)?;
        if args.logging_dir.is_none() {
            args.logging_dir = Some(tensorboard::default_logging_dir(&args.output_dir));
        }
        let device = parse_device(&args.device)?;
        args.precision().check(device)?;
        if args.output_dir.exists() && !args.output_dir.is_dir() {
            return Err(Error::Config(format!(
                "`output_dir` {} exists and is not a directory",
                args.output_dir.display()
            )));
        }
        let publisher = HubPublisher::new(&args)?;
        model.to_device(device);
        Ok(Self {
            model,
            args,
            device,
            publisher,
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
            Precision::Float32,
        )
    }

    /// Trains on `train`, evaluating on `eval` as the arguments say. `resume_from` is a
    /// checkpoint directory, or `"latest"` for the newest one in `output_dir`.
    ///
    /// The run reads as its steps: [`prepare`](Self::prepare) checks and encodes the data and
    /// restores a checkpoint, [`run_epochs`](Self::run_epochs) takes the optimizer steps (each
    /// [`accumulate`](Self::accumulate)s its micro-batches, [`update`](Self::update)s the
    /// weights, then logs, evaluates and saves when due), and [`finish`](Self::finish) reports
    /// and saves the model.
    pub fn train(
        &mut self,
        train: &NerDataset,
        eval: Option<&NerDataset>,
        resume_from: Option<&str>,
    ) -> Result<TrainOutput> {
        let started = Instant::now();
        let flops_before = self.model.flops_executed();
        let mut run = self.prepare(train, eval, resume_from)?;
        run.phases.prepare = started.elapsed().as_secs_f64();
        self.run_epochs(&mut run)?;
        let model_flops = 3.0 * (self.model.flops_executed() - flops_before) as f64;
        Ok(TrainOutput {
            model_flops,
            ..self.finish(run, started)?
        })
    }

    /// Checks and encodes the data, plans the steps, restores the checkpoint to resume from and
    /// starts the log: everything that can fail does so before the first step.
    fn prepare(
        &mut self,
        train: &NerDataset,
        eval: Option<&NerDataset>,
        resume_from: Option<&str>,
    ) -> Result<Run> {
        let args = &self.args;
        if args.eval_strategy != IntervalStrategy::No && eval.is_none() {
            return Err(Error::Config(
                "`eval_strategy` is set but no evaluation dataset was given".into(),
            ));
        }
        let (train_data, eval_data) = (train, eval);
        let train = encode_split(self.model, train, "train")?;
        let eval = eval
            .map(|e| encode_split(self.model, e, "evaluation"))
            .transpose()?;
        let lock = DirLock::create(&args.output_dir, "training")?;
        let plan = Plan::new(args, train.encoded.samples.len());

        let checkpoint = resume_from
            .map(|from| self.resolve_checkpoint(from))
            .transpose()?;
        if checkpoint.is_none() {
            clear_finished_run(args)?;
        }
        let identity = RunIdentity::new(self.model, args, train_data, eval_data)?;
        let mut state = TrainerState::default();
        if let Some(dir) = &checkpoint {
            tracing::info!(checkpoint = %dir.display(), "resuming");
            state = read_state(dir)?;
            identity.check_resumes(state.run.as_ref(), dir)?;
            *self.model = SpanMarkerModel::load_dir(dir, self.device)?;
        }
        state.run = Some(identity);
        let args = &self.args;
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
        write_args(args, &args.output_dir)?;
        let forward = ForwardPlan::new(self.device, args.precision(), Mode::Train)?;
        let board = self.open_board()?;
        tracing::info!(
            samples = plan.samples,
            batches_per_epoch = plan.batches_per_epoch,
            total_steps = plan.total_steps,
            warmup = plan.schedule.warmup_steps,
            epochs = plan.num_epochs,
            "training"
        );
        let spec = CollateSpec {
            // Batches trimmed to what their samples need: only masked padding goes.
            trim_to_multiple_of: Some(8),
            ..self.model.preprocessor().collate_spec()
        };
        Ok(Run {
            lock,
            progress: StepProgress::new(plan.total_steps, state.global_step),
            flos_per_sample: flos_per_sample(self.model, spec.total_length),
            spec,
            board,
            grad_norm: None,
            forward,
            scaler: args.fp16.then(LossScaler::new),
            loss_sum: Tensor::scalar_tensor(state.loss_since_log, (Kind::Double, self.device)),
            steps_at_start: state.global_step,
            last_evaluation: None,
            phases: PhaseTimes::default(),
            plan,
            train,
            eval,
            state,
            optimizer,
        })
    }

    /// Takes optimizer steps until the plan's last one, from where the state stands.
    fn run_epochs(&mut self, run: &mut Run) -> Result<()> {
        let (batch_size, accum) = (
            self.args.per_device_train_batch_size,
            self.args.gradient_accumulation_steps,
        );
        for epoch in run.state.epoch..run.plan.num_epochs {
            let order = self.epoch_order(&run.train, epoch);
            let batches: Vec<&[usize]> = order.chunks(batch_size).collect();
            let skip = if epoch == run.state.epoch {
                run.state.batches_done
            } else {
                0
            };
            run.state.epoch = epoch;
            for (index, batch) in batches.iter().enumerate().skip(skip) {
                if run.state.global_step >= run.plan.total_steps {
                    return Ok(());
                }
                self.accumulate(run, epoch * run.plan.batches_per_epoch + index, batch)?;
                run.state.batches_done = index + 1;
                let end_of_epoch = index + 1 == batches.len();
                if (index + 1) % accum != 0 && !end_of_epoch {
                    continue;
                }
                let started = Instant::now();
                self.update(run)?;
                run.phases.optimizer += started.elapsed().as_secs_f64();
                let position = StepPosition {
                    epoch,
                    batches_done: index + 1,
                    end_of_epoch,
                    epoch_progress: epoch as f64 + (index + 1) as f64 / batches.len() as f64,
                };
                let started = Instant::now();
                self.log_loss_if_due(run, &position)?;
                let logged = Instant::now();
                self.evaluate_if_due(run, &position)?;
                let evaluated = Instant::now();
                self.save_if_due(run, &position)?;
                run.phases.logging += (logged - started).as_secs_f64();
                run.phases.evaluation += (evaluated - logged).as_secs_f64();
                run.phases.checkpoints += evaluated.elapsed().as_secs_f64();
            }
        }
        Ok(())
    }

    /// Forward and backward over micro-batch `micro` (its samples `batch`), adding its
    /// gradients and loss to the step's.
    fn accumulate(&self, run: &mut Run, micro: usize, batch: &[usize]) -> Result<()> {
        // Dropout masks depend only on the seed and the micro-batch's position in the run.
        tch::manual_seed(
            (self.args.seed as i64)
                .wrapping_mul(1_000_003)
                .wrapping_add(micro as i64),
        );
        let picked: Vec<SampleRef> = batch
            .iter()
            .map(|&i| run.train.encoded.samples[i].clone())
            .collect();
        let inputs = run.phases.time(
            |p| &mut p.collate,
            || collate(&run.train.encoded.windows, &picked, &run.spec, self.device),
        )?;
        let model = &*self.model;
        let loss = run
            .phases
            .time(
                |p| &mut p.forward,
                || model.forward_with(&inputs, &run.forward),
            )?
            .loss
            .ok_or_else(|| Error::Config("a training batch without labels".into()))?
            / self.args.gradient_accumulation_steps as f64;
        run.phases.time(
            |p| &mut p.backward,
            || match &run.scaler {
                Some(s) => (&loss * s.scale).backward(),
                None => loss.backward(),
            },
        );
        // Summed on the device and read back only to log or save: a read every step would
        // make each step wait for the device. Summed in float64 in step order, it is the very
        // number a host sum would be.
        let _ = run.loss_sum.g_add_(&loss.detach().to_kind(Kind::Double));
        run.state.total_flos += batch.len() as f64 * run.flos_per_sample;
        Ok(())
    }

    /// One optimizer step from the accumulated gradients (skipped when float16 gradients
    /// overflowed), at the schedule's learning rate.
    fn update(&self, run: &mut Run) -> Result<()> {
        let finite = match &mut run.scaler {
            Some(s) => s.unscale(&mut run.optimizer),
            None => true,
        };
        // The norm is kept on the device, and read only when a record logs it.
        run.grad_norm = None;
        if finite {
            if self.args.max_grad_norm > 0.0 {
                run.grad_norm = Some(run.optimizer.clip_grad_norm(self.args.max_grad_norm));
            }
            run.optimizer
                .step(run.plan.schedule.lr(run.state.global_step))?;
            // The optimizer writes the weights through views of one flat buffer, which leaves
            // the variables' version counters as they were: the derived forms of the maps that
            // evaluation runs on (fused, int8) could not see the step, so they go.
            self.model.encoder().clear_derived();
        }
        run.optimizer.zero_grad();
        run.state.global_step += 1;
        run.state.steps_since_log += 1;
        run.progress.set_step(run.state.global_step);
        Ok(())
    }

    /// Logs the mean loss since the last record when the logging strategy says so.
    fn log_loss_if_due(&self, run: &mut Run, at: &StepPosition) -> Result<()> {
        let step = run.state.global_step;
        let args = &self.args;
        if !due(
            args.logging_strategy,
            args.logging_steps,
            step,
            at.end_of_epoch,
        ) {
            return Ok(());
        }
        let state = &mut run.state;
        state.loss_since_log = f64::try_from(&run.loss_sum)?;
        let loss = state.loss_since_log / state.steps_since_log.max(1) as f64;
        state.total_loss += state.loss_since_log;
        state.loss_since_log = 0.0;
        let _ = run.loss_sum.zero_();
        state.steps_since_log = 0;
        // The rate of the step just taken, as transformers logs it.
        let lr = run.plan.schedule.lr(step - 1);
        run.progress
            .set_message(format!("loss {loss:.4} lr {lr:.2e}"));
        let mut record = json!({"loss": round4(loss), "learning_rate": lr, "epoch": at.epoch_progress, "step": step});
        // The norm before clipping of the step just taken, as transformers logs it (only when
        // it clips).
        if let Some(norm) = &run.grad_norm {
            record["grad_norm"] = json!(f64::try_from(norm)?);
        }
        self.log(state, &mut run.board, record)
    }

    /// Evaluates on the evaluation data when the evaluation strategy says so, and tracks the
    /// best checkpoint.
    fn evaluate_if_due(&self, run: &mut Run, at: &StepPosition) -> Result<()> {
        let step = run.state.global_step;
        let Some(eval) = &run.eval else {
            return Ok(());
        };
        if !due(
            self.args.eval_strategy,
            self.args.eval_interval(),
            step,
            at.end_of_epoch,
        ) {
            return Ok(());
        }
        let evaluation = evaluate_prepared(
            self.model,
            eval,
            "eval",
            self.args.per_device_eval_batch_size,
            Precision::Float32,
            Instant::now(),
        )?;
        let mut record = evaluation.to_record();
        // Evaluation batches per second, as transformers' `speed_metrics`.
        let batches = eval
            .encoded
            .samples
            .len()
            .div_ceil(self.args.per_device_eval_batch_size);
        record.insert(
            "eval_steps_per_second".into(),
            json!(batches as f64 / evaluation.runtime_seconds.max(1e-9)),
        );
        record.insert("epoch".into(), json!(at.epoch_progress));
        record.insert("step".into(), json!(step));
        self.log(&mut run.state, &mut run.board, Value::Object(record))?;
        self.track_best(&mut run.state, &evaluation);
        run.last_evaluation = Some(evaluation);
        Ok(())
    }

    /// Saves a checkpoint when the save strategy says so. The saved state points after the
    /// last consumed micro-batch (the next epoch's start at an epoch's end), where a resumed
    /// run goes on.
    fn save_if_due(&self, run: &mut Run, at: &StepPosition) -> Result<()> {
        let args = &self.args;
        if !due(
            args.save_strategy,
            args.save_steps,
            run.state.global_step,
            at.end_of_epoch,
        ) {
            return Ok(());
        }
        run.state.loss_since_log = f64::try_from(&run.loss_sum)?;
        if at.end_of_epoch {
            run.state.epoch = at.epoch + 1;
            run.state.batches_done = 0;
        }
        self.save_checkpoint(&run.state, &run.optimizer)?;
        run.state.epoch = at.epoch;
        run.state.batches_done = at.batches_done;
        Ok(())
    }

    /// Logs the run's metrics, loads the best model back when asked, and saves the model with
    /// its card and the training curves.
    fn finish(&mut self, run: Run, started: Instant) -> Result<TrainOutput> {
        let finishing = Instant::now();
        let Run {
            lock,
            mut state,
            loss_sum,
            progress,
            plan,
            steps_at_start,
            last_evaluation,
            mut board,
            mut phases,
            ..
        } = run;
        progress.finish();
        state.loss_since_log = f64::try_from(&loss_sum)?;
        state.total_loss += state.loss_since_log;

        let args = self.args.clone();
        let runtime = started.elapsed().as_secs_f64();
        let train_loss = state.total_loss / state.global_step.max(1) as f64;
        let steps_here = (state.global_step - steps_at_start) as f64;
        let samples_here = steps_here
            * (args.per_device_train_batch_size * args.gradient_accumulation_steps) as f64;
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
        metrics.insert("total_flos".into(), json!(state.total_flos));
        metrics.insert("train_loss".into(), json!(train_loss));
        metrics.insert(
            "epoch".into(),
            json!(state.global_step as f64 / plan.updates_per_epoch as f64),
        );
        metrics.insert("step".into(), json!(state.global_step));
        self.log(&mut state, &mut board, Value::Object(metrics.clone()))?;
        drop(board);

        if args.load_best_model_at_end {
            if let Some(best) = &state.best_checkpoint {
                tracing::info!(checkpoint = %best.display(), "loading the best model");
                *self.model = SpanMarkerModel::load_dir(best, self.device)?;
            }
        }
        let card = self.card(&state);
        self.model
            .save_pretrained_with_card(&args.output_dir, &card)?;
        save_curves(&state.log_history, &args.output_dir)?;
        if let Some(publisher) = &self.publisher {
            publisher.training_ended(&args.output_dir)?;
        }
        drop(lock);
        phases.finish = finishing.elapsed().as_secs_f64();
        tracing::info!(%phases, "where the training time went");
        Ok(TrainOutput {
            global_step: state.global_step,
            train_loss,
            metrics,
            last_evaluation,
            phases,
            model_flops: 0.0,
        })
    }

    /// The card of the model being saved, with its evaluation: the best one's when it was
    /// loaded back, else the last.
    fn card(&self, state: &TrainerState) -> ModelCard {
        let best_step = self
            .args
            .load_best_model_at_end
            .then(|| state.best_checkpoint.as_deref().and_then(checkpoint_step))
            .flatten();
        let record = state
            .log_history
            .iter()
            .rev()
            .filter(|r| r.contains_key("eval_loss"))
            .find(|r| {
                best_step.is_none_or(|s| r.get("step").and_then(Value::as_u64) == Some(s as u64))
            });
        ModelCard {
            metrics: record
                .map(|r| {
                    r.iter()
                        .filter(|(k, _)| k.starts_with("eval_"))
                        .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }
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

    /// Opens a new TensorBoard event file in `logging_dir` when `report_to` asks for one, and
    /// writes the arguments and the model's configuration into it as text, as the Python
    /// callback does when training begins.
    fn open_board(&self) -> Result<Option<EventWriter>> {
        if !self.args.report_to.tensorboard() {
            return Ok(None);
        }
        let dir = self
            .args
            .logging_dir
            .clone()
            .unwrap_or_else(|| tensorboard::default_logging_dir(&self.args.output_dir));
        let mut board = EventWriter::create(&dir)?;
        let args =
            serde_json::to_string_pretty(&self.args).map_err(|e| Error::json(ARGS_FILE, e))?;
        board.text(0, "args", &args)?;
        board.text(0, "model_config", &self.model.config().to_json_string()?)?;
        tracing::info!(logging_dir = %dir.display(), "writing TensorBoard logs");
        Ok(Some(board))
    }

    /// The one place log records go: the tracing log, `log_history.jsonl`, the state's log
    /// history (saved with each checkpoint) and, when open, the TensorBoard event file (its
    /// numbers as scalars at the current step, named as transformers names them).
    fn log(
        &self,
        state: &mut TrainerState,
        board: &mut Option<EventWriter>,
        record: Value,
    ) -> Result<()> {
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
        if let Some(board) = board {
            board.scalars(state.global_step, &tensorboard::scalars_of(&record))?;
        }
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
        crate::atomic::write(&tmp.join(TRAINER_STATE_FILE), json.as_bytes())?;
        write_args(&self.args, &tmp)?;
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        }
        std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        tracing::info!(checkpoint = %target.display(), "saved checkpoint");
        if let Some(publisher) = &self.publisher {
            publisher.checkpoint_saved(&target, state.global_step);
        }
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

/// The step counts and learning-rate schedule of a run.
struct Plan {
    samples: usize,
    batches_per_epoch: usize,
    updates_per_epoch: usize,
    total_steps: usize,
    num_epochs: usize,
    schedule: Schedule,
}

impl Plan {
    fn new(args: &TrainingArguments, samples: usize) -> Self {
        let batches_per_epoch = samples.div_ceil(args.per_device_train_batch_size);
        let updates_per_epoch = batches_per_epoch
            .div_ceil(args.gradient_accumulation_steps)
            .max(1);
        let total_steps = args
            .max_steps
            .unwrap_or_else(|| (args.num_train_epochs * updates_per_epoch as f64).ceil() as usize);
        let warmup_steps = if args.warmup_steps > 0 {
            args.warmup_steps
        } else {
            (args.warmup_ratio * total_steps as f64).ceil() as usize
        };
        Self {
            samples,
            batches_per_epoch,
            updates_per_epoch,
            total_steps,
            num_epochs: total_steps.div_ceil(updates_per_epoch),
            schedule: Schedule {
                base_lr: args.learning_rate,
                warmup_steps,
                total_steps,
                decay: args.lr_scheduler_type == "linear",
            },
        }
    }
}

/// What a run carries from step to step.
struct Run {
    /// The output directory's lock, held for the whole run.
    lock: DirLock,
    plan: Plan,
    train: Prepared,
    eval: Option<Prepared>,
    state: TrainerState,
    optimizer: AdamW,
    /// Loss scaling, for float16.
    scaler: Option<LossScaler>,
    /// The running sum of `state.loss_since_log`, on the device.
    loss_sum: Tensor,
    spec: CollateSpec,
    /// How each training forward pass runs.
    forward: ForwardPlan,
    progress: StepProgress,
    steps_at_start: usize,
    last_evaluation: Option<Evaluation>,
    /// The run's TensorBoard event file, when `report_to` asks for one.
    board: Option<EventWriter>,
    /// The gradient norm before clipping of the last step (when it clipped), on the device.
    grad_norm: Option<Tensor>,
    /// What each training sample adds to `total_flos`.
    flos_per_sample: f64,
    /// Where the wall time went so far.
    phases: PhaseTimes,
}

/// Where an optimizer step fell in its epoch.
struct StepPosition {
    epoch: usize,
    /// Micro-batches of the epoch consumed.
    batches_done: usize,
    end_of_epoch: bool,
    /// The epoch as a fraction (`1.5`: halfway through the second), as logged.
    epoch_progress: f64,
}

/// The step counter on the terminal (with the `progress` feature).
struct StepProgress {
    #[cfg(feature = "progress")]
    bar: indicatif::ProgressBar,
}

impl StepProgress {
    fn new(total_steps: usize, done: usize) -> Self {
        #[cfg(not(feature = "progress"))]
        let _ = (total_steps, done);
        Self {
            #[cfg(feature = "progress")]
            bar: {
                let bar =
                    indicatif::ProgressBar::new(total_steps as u64).with_position(done as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
                    )
                    .expect("a valid template"),
                );
                bar
            },
        }
    }

    fn set_step(&self, step: usize) {
        #[cfg(feature = "progress")]
        self.bar.set_position(step as u64);
        #[cfg(not(feature = "progress"))]
        let _ = step;
    }

    fn set_message(&self, message: String) {
        #[cfg(feature = "progress")]
        self.bar.set_message(message);
        #[cfg(not(feature = "progress"))]
        let _ = message;
    }

    fn finish(&self) {
        #[cfg(feature = "progress")]
        self.bar.finish();
    }
}

/// Draws `training_curves.svg` (with the `plots` feature).
fn save_curves(history: &[Map<String, Value>], dir: &Path) -> Result<()> {
    #[cfg(feature = "plots")]
    return crate::train::plot::plot_history(history, &dir.join(PLOT_FILE));
    #[cfg(not(feature = "plots"))]
    {
        let _ = (history, dir);
        tracing::debug!("no training curves: built without the `plots` feature");
        Ok(())
    }
}

/// transformers' `floating_point_ops` for one training sample: 6 × its tokens as the reference
/// pads them (`total_length`, `M + 2K`) × the parameters outside the embedding tables.
fn flos_per_sample(model: &SpanMarkerModel, total_length: usize) -> f64 {
    let parameters: i64 = model
        .var_store()
        .variables()
        .iter()
        .filter(|(name, _)| !name.ends_with("_embeddings.weight"))
        .map(|(_, tensor)| tensor.numel() as i64)
        .sum();
    6.0 * total_length as f64 * parameters as f64
}

/// Whether an event with this strategy happens after optimizer step `step`.
fn due(strategy: IntervalStrategy, every: usize, step: usize, end_of_epoch: bool) -> bool {
    match strategy {
        IntervalStrategy::No => false,
        IntervalStrategy::Steps => step.is_multiple_of(every.max(1)),
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

/// Refuses a new run (not a resumption) in `args.output_dir` when it holds a finished one (a
/// saved model, or checkpoints) unless `args.overwrite_output_dir`: the check every entry
/// point makes before it loads a model or writes anything. The error names what is there and
/// the ways on.
pub fn check_output_dir(args: &TrainingArguments) -> Result<()> {
    checkpoints_to_replace(args).map(drop)
}

/// [`check_output_dir`]'s check; the checkpoints of the finished run it lets be replaced.
fn checkpoints_to_replace(args: &TrainingArguments) -> Result<Vec<(usize, PathBuf)>> {
    let dir = &args.output_dir;
    let checkpoints = list_checkpoints(dir)?;
    let mut found: Vec<String> = [checkpoint::SAFETENSORS_FILE, checkpoint::PICKLE_FILE]
        .iter()
        .filter(|name| dir.join(name).is_file())
        .map(|name| (*name).to_owned())
        .collect();
    found.extend(checkpoints.iter().filter_map(|(_, path)| {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    }));
    if found.is_empty() || args.overwrite_output_dir {
        return Ok(checkpoints);
    }
    let resume = if checkpoints.is_empty() {
        ""
    } else {
        "continue it from its latest checkpoint (`--resume latest`), "
    };
    Err(Error::Config(format!(
        "`output_dir` {} holds a finished run ({}): {resume}replace it with \
         `overwrite_output_dir = true` in the training arguments (`--overwrite-output-dir`), or \
         train into another directory",
        dir.display(),
        found.join(", ")
    )))
}

/// Starts a new run in `args.output_dir`: refused there when it holds a finished run (see
/// [`check_output_dir`]); with `overwrite_output_dir`, the old run's checkpoints go, so that
/// neither a resumption nor the checkpoint limit mixes them with the new run's. Nothing else
/// is removed; the new run's files replace the old ones as they are written.
fn clear_finished_run(args: &TrainingArguments) -> Result<()> {
    for (_, path) in checkpoints_to_replace(args)? {
        tracing::info!(checkpoint = %path.display(), "removing a checkpoint of the run being replaced");
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Writes the arguments of a run as `training_args.json` into `dir`.
fn write_args(args: &TrainingArguments, dir: &Path) -> Result<()> {
    let path = dir.join(ARGS_FILE);
    let json = serde_json::to_string_pretty(args).map_err(|e| Error::json(&path, e))?;
    crate::atomic::write(&path, json.as_bytes())
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
    crate::atomic::write(&dir.join(LOG_FILE), text.as_bytes())
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
