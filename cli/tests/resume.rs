//! A training run killed with SIGKILL and resumed from its last checkpoint ends exactly where an
//! uninterrupted run ends: same steps, same logged losses, same weights.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{max_abs_diff, repo};
use serde_json::Value;
use span_marker::checkpoint::StateDict;
use span_marker::train::trainer::list_checkpoints;

const MAX_STEPS: usize = 600;

fn train(output_dir: &Path, args: &Path, resume: bool) -> Child {
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
        .stderr(Stdio::piped());
    if resume {
        command.args(["--resume", "latest"]);
    }
    command.spawn().expect("the span-marker binary runs")
}

fn finish(child: Child) {
    let out = child.wait_with_output().unwrap();
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

#[test]
fn a_killed_run_resumes_without_losing_or_repeating_batches() {
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

    let mut child = train(&killed, &args, false);
    let deadline = Instant::now() + Duration::from_secs(300);
    while list_checkpoints(&killed)
        .unwrap()
        .last()
        .is_none_or(|(step, _)| *step < 50)
    {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join("model.safetensors").exists(),
        "the run finished before the kill: raise MAX_STEPS"
    );
    let (resumed_from, _) = list_checkpoints(&killed).unwrap().pop().unwrap();
    assert!(resumed_from < MAX_STEPS);
    finish(train(&killed, &args, true));

    let (a, b) = (logged_losses(&whole), logged_losses(&killed));
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
    let (wa, wb) = (weights(&whole), weights(&killed));
    for (name, tensor) in &wa.tensors {
        let diff = max_abs_diff(tensor, wb.get(name).unwrap());
        assert!(
            diff < 1e-4,
            "{name} differs by {diff} (resumed from step {resumed_from})"
        );
    }
}
