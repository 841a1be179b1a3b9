//! A training run killed with SIGKILL, again and again, and resumed from its last checkpoint
//! ends exactly where an uninterrupted run ends: same steps, same logged losses, same weights.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{max_abs_diff, repo, Ended};
use serde_json::Value;
use span_marker::checkpoint::StateDict;
use span_marker::train::trainer::list_checkpoints;

const MAX_STEPS: usize = 600;

fn train(output_dir: &Path, args: &Path, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_span-marker"));
    command
        .current_dir(repo())
        .args(["train", "--train", "examples/data/train.txt"])
        .args(["--model", "tests/fixtures/encoders/tiny-bert"])
        .args(["--model-max-length", "64", "--marker-max-length", "32"])
        .args(["--entity-max-length", "6", "--args"])
        .arg(args)
        .arg("--output-dir")
        .arg(output_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // MKL's matrix products may round differently with the alignment of their buffers,
        // which differs from process to process; Adam turns such noise on weights whose true
        // gradient is zero (the attention key biases) into visible differences. Conditional
        // numerical reproducibility makes the products depend on the values alone.
        .env("MKL_CBWR", "COMPATIBLE");
    if resume {
        command.args(["--resume", "latest"]);
    }
    command
}

fn finish(mut command: Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(step, loss)` of every loss record in the run's log.
fn logged_losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("log_history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

/// Twenty SIGKILLs at random points of training runs, each followed by a restart that
/// resumes from the latest checkpoint: half at a random instant from the start (loading,
/// encoding, the first steps), half a random moment after a random number of further
/// checkpoints (between steps, while a checkpoint or the final model is written). Every
/// finished run ends exactly where an uninterrupted one ends; then the next starts over.
#[test]
fn repeated_kills_resume_without_losing_or_repeating_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let args = tmp.path().join("args.json");
    // Shuffling and dropout on, so that the batch order and the random state both matter.
    std::fs::write(
        &args,
        format!(
            r#"{{"learning_rate": 0.005, "max_steps": {MAX_STEPS}, "warmup_ratio": 0.1, "logging_steps": 5,
                "save_steps": 25, "save_total_limit": 2, "per_device_train_batch_size": 8, "seed": 3,
                "shuffle": true, "device": "cpu"}}"#
        ),
    )
    .unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    finish(train(&whole, &args, false));
    let latest = |dir: &Path| {
        list_checkpoints(dir)
            .unwrap_or_default()
            .last()
            .map(|(step, _)| *step)
    };

    let mut schedule = common::FaultSchedule::new();
    let (mut kills, mut resumed_from, mut runs) = (0, Vec::new(), 0);
    while kills < 20 {
        let from = latest(&killed);
        resumed_from.extend(from);
        let mut command = train(&killed, &args, from.is_some());
        command.stderr(Stdio::null());
        let ended = if schedule.below(2) == 0 {
            let delay = schedule.delay(Duration::ZERO, Duration::from_millis(3000));
            let started = Instant::now();
            common::run_until_killed(&mut command, || started.elapsed() >= delay, Duration::ZERO)
        } else {
            let target = from.unwrap_or(0) + 25 * (1 + schedule.below(3) as usize);
            let extra = schedule.delay(Duration::ZERO, Duration::from_millis(300));
            common::run_until_killed(
                &mut command,
                || latest(&killed).is_some_and(|step| step >= target),
                extra,
            )
        };
        match ended {
            Ended::Killed => kills += 1,
            Ended::Finished => {
                assert_same_run(&whole, &killed, &resumed_from);
                std::fs::remove_dir_all(&killed).unwrap();
                resumed_from.clear();
                runs += 1;
            }
        }
    }
    let between = resumed_from
        .iter()
        .filter(|&&step| step > 0 && step < MAX_STEPS)
        .count();
    finish(train(&killed, &args, latest(&killed).is_some()));
    assert_same_run(&whole, &killed, &resumed_from);
    assert!(
        runs > 0 || between >= 5,
        "too few kills fell between checkpoints: resumed from {resumed_from:?}"
    );
}

/// The run in `resumed` logged every step once and ended with the weights of `whole`.
fn assert_same_run(whole: &Path, resumed: &Path, resumed_from: &[usize]) {
    let (a, b) = (logged_losses(whole), logged_losses(resumed));
    let steps: Vec<u64> = b.iter().map(|(s, _)| *s).collect();
    let expected: Vec<u64> = (1..=(MAX_STEPS / 5) as u64).map(|i| i * 5).collect();
    assert_eq!(steps, expected, "every step logged once, in order");
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() < 2e-4,
            "step {step}: loss {x} uninterrupted vs {y} resumed"
        );
    }
    let weights = |dir: &Path| StateDict::read(&dir.join("model.safetensors")).unwrap();
    let (wa, wb) = (weights(whole), weights(resumed));
    for (name, tensor) in &wa.tensors {
        let diff = max_abs_diff(tensor, wb.get(name).unwrap());
        assert!(
            diff < 1e-4,
            "{name} differs by {diff} (resumed from {resumed_from:?})"
        );
    }
}
