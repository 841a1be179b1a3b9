//! The Trainer's TensorBoard logs (`report_to`, `logging_dir`) against those of a recorded Python
//! `span_marker` 1.8.1 run (`tests/fixtures/generate_tensorboard.py`), read back by
//! tensorboard's own reader through `.venv-python` (made by `scripts/setup.sh`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixtures, repo};
use serde::Deserialize;
use serde_json::{Map, Value};
use span_marker::train::{IntervalStrategy, NerDataset, NerExample, Trainer, TrainingArguments};
use span_marker::SpanMarkerModel;

/// Per tag, its `(step, value)` points in the order written.
type Scalars = BTreeMap<String, Vec<(usize, f64)>>;

#[derive(Deserialize)]
struct Fixture {
    args: Value,
    /// Data files relative to the repository root.
    train_file: PathBuf,
    eval_file: PathBuf,
    train_indices: Vec<usize>,
    eval_indices: Vec<usize>,
    global_step: usize,
    scalars: Scalars,
    text_tags: Vec<String>,
}

/// What tensorboard's `EventAccumulator` reads from an event file or a directory of them.
#[derive(Deserialize)]
struct Events {
    scalars: Scalars,
    texts: BTreeMap<String, Vec<(usize, String)>>,
}

/// Tags our evaluations have beyond the reference's: the scores without the gold entities
/// longer than `entity_max_length` (`Evaluation::reference_scores`).
const OUR_EXTRA_TAGS: [&str; 4] = [
    "eval/reference_overall_accuracy",
    "eval/reference_overall_f1",
    "eval/reference_overall_precision",
    "eval/reference_overall_recall",
];

fn read_events(path: &Path) -> Events {
    let python = common::reference_python();
    let output = Command::new(&python)
        .arg("tests/fixtures/generate_tensorboard.py")
        .arg("--read")
        .arg(path)
        .current_dir(repo())
        .output()
        .expect("the Python reader runs");
    assert!(
        output.status.success(),
        "tensorboard could not read {} (is it installed? `bash scripts/setup.sh`):\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the reader prints JSON")
}

/// Every event file under `dir`, by name.
fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn log_history(dir: &Path) -> Vec<Map<String, Value>> {
    std::fs::read_to_string(dir.join("log_history.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The scalars transformers' `TensorBoardCallback` writes for a log history: each number of a
/// record but its `step`, at its step, `eval_*` as `eval/*` and the others under `train/`, as
/// 32-bit floats.
fn expected_scalars(history: &[Map<String, Value>]) -> Scalars {
    let mut scalars = Scalars::new();
    for record in history {
        let step = record["step"].as_u64().unwrap() as usize;
        for (key, value) in record {
            let Some(value) = value.as_f64().filter(|_| key != "step") else {
                continue;
            };
            let tag = match key.strip_prefix("eval_") {
                Some(name) => format!("eval/{name}"),
                None => format!("train/{key}"),
            };
            scalars
                .entry(tag)
                .or_default()
                .push((step, value as f32 as f64));
        }
    }
    scalars
}

/// The same tags at the same steps, each value equal as a 32-bit float up to one unit in the
/// last place (the log's decimal text, read back as a 64-bit float, may round to a neighbour).
fn assert_same_scalars(got: &Scalars, want: &Scalars) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (tag, points) in want {
        assert_eq!(steps(&got[tag]), steps(points), "{tag}");
        for ((step, a), (_, b)) in got[tag].iter().zip(points) {
            let ulp = f64::from(f32::EPSILON) * a.abs().max(b.abs());
            assert!((a - b).abs() <= ulp, "{tag} at step {step}: {a} != {b}");
        }
    }
}

fn init_model() -> SpanMarkerModel {
    SpanMarkerModel::from_pretrained(fixtures().join("training/init").to_str().unwrap()).unwrap()
}

fn steps(points: &[(usize, f64)]) -> Vec<usize> {
    points.iter().map(|(step, _)| *step).collect()
}

#[test]
fn event_files_hold_the_python_trainers_scalars_at_its_steps() {
    let fixture: Fixture = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("training/tensorboard.json")).unwrap(),
    )
    .unwrap();
    let mut model = init_model();
    let labels = model.labels().clone();
    let train = NerDataset::from_conll(repo().join(&fixture.train_file), &labels)
        .unwrap()
        .select(&fixture.train_indices)
        .unwrap();
    let eval = NerDataset::from_conll(repo().join(&fixture.eval_file), &labels)
        .unwrap()
        .select(&fixture.eval_indices)
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = &fixture.args;
    let number = |key: &str| a[key].as_f64().unwrap();
    let count = |key: &str| a[key].as_u64().unwrap() as usize;
    assert_eq!(a["eval_strategy"], "steps");
    // `report_to` and `logging_dir` left at their defaults: TensorBoard, in `output_dir/runs/..`.
    let args = TrainingArguments {
        output_dir: out.path().to_owned(),
        per_device_train_batch_size: count("per_device_train_batch_size"),
        per_device_eval_batch_size: count("per_device_eval_batch_size"),
        learning_rate: number("learning_rate"),
        weight_decay: number("weight_decay"),
        warmup_ratio: number("warmup_ratio"),
        max_steps: Some(count("max_steps")),
        max_grad_norm: number("max_grad_norm"),
        logging_steps: count("logging_steps"),
        eval_strategy: IntervalStrategy::Steps,
        eval_steps: Some(count("eval_steps")),
        seed: a["seed"].as_u64().unwrap(),
        // As the reference run: batches in order (the model has dropout 0).
        shuffle: false,
        save_strategy: IntervalStrategy::No,
        device: "cpu".into(),
        ..Default::default()
    };
    let mut trainer = Trainer::new(&mut model, args).unwrap();
    let logging_dir = trainer.args().logging_dir.clone().unwrap();
    assert_eq!(
        logging_dir.parent(),
        Some(out.path().join("runs").as_path())
    );
    let output = trainer.train(&train, Some(&eval), None).unwrap();
    assert_eq!(output.global_step, fixture.global_step);
    drop(trainer);

    let files = event_files(out.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].parent(), Some(logging_dir.as_path()));
    // `events.out.tfevents.<unix time>.<host>.<pid>.<n>`, as Python names them.
    let name = files[0].file_name().unwrap().to_str().unwrap();
    let parts: Vec<&str> = name.split('.').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    assert!(
        parts[3].len() == 10
            && digits(parts[3])
            && parts[parts.len() - 2] == std::process::id().to_string()
            && digits(parts[parts.len() - 1]),
        "{name}"
    );
    let events = read_events(&logging_dir);

    // The reference's tags, at its steps; beyond them only our extra evaluation scores.
    let ours: BTreeSet<&str> = events.scalars.keys().map(String::as_str).collect();
    let theirs: BTreeSet<&str> = fixture.scalars.keys().map(String::as_str).collect();
    let missing: Vec<_> = theirs.difference(&ours).collect();
    assert!(
        missing.is_empty(),
        "tags the reference has and we lack: {missing:?}"
    );
    let extra: Vec<&str> = ours.difference(&theirs).copied().collect();
    assert_eq!(extra, OUR_EXTRA_TAGS);
    for (tag, points) in &fixture.scalars {
        assert_eq!(
            steps(&events.scalars[tag]),
            steps(points),
            "{tag}: our steps, the reference's"
        );
    }
    for tag in OUR_EXTRA_TAGS {
        assert_eq!(
            steps(&events.scalars[tag]),
            steps(&fixture.scalars["eval/loss"])
        );
    }
    // Every number of every log record, and nothing else.
    let history = log_history(out.path());
    assert_same_scalars(&events.scalars, &expected_scalars(&history));
    let losses = &events.scalars["train/loss"];
    assert!(losses.iter().all(|(_, loss)| loss.is_finite()));
    assert_eq!(
        losses.len(),
        history.iter().filter(|r| r.contains_key("loss")).count()
    );

    // Both runs start from the same weights and see the same batches: the values that do not
    // measure time agree (losses as closely as tests/training.rs holds them).
    let close = |tag: &str, tolerance: &dyn Fn(f64) -> f64| {
        let pairs: Vec<_> = events.scalars[tag]
            .iter()
            .zip(&fixture.scalars[tag])
            .collect();
        let worst = pairs
            .iter()
            .map(|((_, ours), (_, theirs))| (ours - theirs).abs())
            .fold(0.0, f64::max);
        eprintln!("{tag}: largest difference from the reference {worst:.3e}");
        for ((step, ours), (_, theirs)) in pairs {
            assert!(
                (ours - theirs).abs() <= tolerance(*theirs),
                "{tag} at step {step}: {ours} vs reference {theirs}"
            );
        }
    };
    for tag in ["train/learning_rate", "train/epoch", "train/total_flos"] {
        close(tag, &|theirs| 1e-6 * theirs.abs());
    }
    for tag in ["train/loss", "train/train_loss", "eval/loss"] {
        close(tag, &|theirs| 2e-3 + 0.02 * theirs);
    }
    close("train/grad_norm", &|theirs| 0.005 * theirs);
    for tag in [
        "eval/overall_precision",
        "eval/overall_recall",
        "eval/overall_f1",
        "eval/overall_accuracy",
    ] {
        close(tag, &|_| 0.02);
    }

    // The text summaries of the start: the arguments (as saved) and the model's configuration.
    assert_eq!(
        events.texts.keys().collect::<Vec<_>>(),
        fixture.text_tags.iter().collect::<Vec<_>>()
    );
    for points in events.texts.values() {
        assert_eq!(steps_of_texts(points), [0]);
    }
    let args: Value = serde_json::from_str(&events.texts["args"][0].1).unwrap();
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("training_args.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(args, saved);
    assert_eq!(args["report_to"], "all");
    assert_eq!(args["logging_dir"], logging_dir.to_str().unwrap());
    let config: Value = serde_json::from_str(&events.texts["model_config"][0].1).unwrap();
    assert_eq!(
        config,
        serde_json::from_str::<Value>(&model.config().to_json_string().unwrap()).unwrap()
    );
}

fn steps_of_texts(points: &[(usize, String)]) -> Vec<usize> {
    points.iter().map(|(step, _)| *step).collect()
}

fn tiny_dataset() -> NerDataset {
    NerDataset::new(
        [vec![1, 0, 1], vec![0, 0, 1], vec![1, 0, 0]]
            .into_iter()
            .map(|tags| NerExample {
                tokens: ["Tom", "met", "Ann"].map(String::from).to_vec(),
                tags,
                document: None,
            })
            .collect(),
    )
}

fn tiny_args(output_dir: PathBuf) -> TrainingArguments {
    TrainingArguments {
        output_dir,
        device: "cpu".into(),
        max_steps: Some(4),
        logging_steps: 1,
        save_strategy: IntervalStrategy::No,
        per_device_train_batch_size: 2,
        ..Default::default()
    }
}

#[test]
fn report_to_none_writes_no_event_file_and_unknown_names_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let args = TrainingArguments {
        report_to: "none".into(),
        ..tiny_args(out.path().join("run"))
    };
    Trainer::new(&mut init_model(), args)
        .unwrap()
        .train(&tiny_dataset(), None, None)
        .unwrap();
    assert_eq!(
        log_history(&out.path().join("run"))
            .iter()
            .filter(|r| r.contains_key("loss"))
            .count(),
        4
    );
    assert_eq!(event_files(out.path()), Vec::<PathBuf>::new());
    assert!(!out.path().join("run/runs").exists());

    // transformers' other integrations are not in this build: refused, naming the setting.
    for report_to in ["wandb", "mlflow"] {
        let args = TrainingArguments {
            report_to: report_to.into(),
            ..tiny_args(out.path().join("refused"))
        };
        let err = Trainer::new(&mut init_model(), args)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(&format!("`report_to` \"{report_to}\" is not supported"))
                && err.contains("\"tensorboard\""),
            "{err}"
        );
    }
    assert!(!out.path().join("refused").exists());

    // A file may name a list, as transformers' arguments do.
    let file = out.path().join("args.json");
    std::fs::write(
        &file,
        r#"{"report_to": ["tensorboard"], "logging_dir": "tb"}"#,
    )
    .unwrap();
    let args = TrainingArguments::from_file(&file).unwrap();
    assert!(args.report_to.tensorboard());
    assert_eq!(args.logging_dir, Some(PathBuf::from("tb")));
    std::fs::write(&file, r#"{"report_to": ["tensorboard", "wandb"]}"#).unwrap();
    let err = TrainingArguments::from_file(&file).unwrap_err().to_string();
    assert!(
        err.contains("args.json") && err.contains("`report_to` \"wandb\""),
        "{err}"
    );
}

/// As the Python Trainer, a resumed run writes a new event file (beside the first one when
/// `logging_dir` is the same) from the step it resumes at, and never rewrites the old one.
#[test]
fn a_resumed_run_adds_its_own_event_file_and_leaves_the_first_alone() {
    let out = tempfile::tempdir().unwrap();
    let logging_dir = out.path().join("tensorboard");
    let args = TrainingArguments {
        logging_dir: Some(logging_dir.clone()),
        save_strategy: IntervalStrategy::Steps,
        save_steps: 2,
        ..tiny_args(out.path().join("run"))
    };
    Trainer::new(&mut init_model(), args.clone())
        .unwrap()
        .train(&tiny_dataset(), None, None)
        .unwrap();
    let first = event_files(&logging_dir);
    assert_eq!(first.len(), 1);
    let first_bytes = std::fs::read(&first[0]).unwrap();

    let checkpoint = args.output_dir.join("checkpoint-2");
    Trainer::new(&mut init_model(), args.clone())
        .unwrap()
        .train(&tiny_dataset(), None, Some(checkpoint.to_str().unwrap()))
        .unwrap();
    let files = event_files(&logging_dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&first[0]));
    assert_eq!(std::fs::read(&first[0]).unwrap(), first_bytes);

    let second = files.iter().find(|f| **f != first[0]).unwrap();
    let (before, after) = (read_events(&first[0]), read_events(second));
    assert_eq!(steps(&before.scalars["train/loss"]), [1, 2, 3, 4]);
    // The resumed run takes the very steps the first one took after its checkpoint.
    assert_eq!(
        after.scalars["train/loss"],
        before.scalars["train/loss"][2..]
    );
    assert_eq!(steps(&after.scalars["train/train_runtime"]), [4]);
    assert_eq!(
        after.texts.keys().collect::<Vec<_>>(),
        ["args", "model_config"]
    );
}
