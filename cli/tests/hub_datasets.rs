//! Hugging Face Hub datasets as table sources, end to end against the stand-in Hub: a
//! CoNLL-2003-shaped dataset made by Python `datasets` itself (`tests/fixtures/
//! make_hub_dataset.py`, `ClassLabel` tags) is served as a repository's own Parquet files and
//! as the Hub's `refs/convert/parquet` conversion; the command line trains, evaluates and
//! queries it by id with the labels taken from the data, offline mode reads the cache alone,
//! and what cannot be read fails naming the dataset, split and what there is. The tutorial
//! pipeline (`pipelines/tutorial.toml`) runs as committed, pushing to the stand-in.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/datasets.rs"]
mod datasets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datasets::{hub, walk, CONLL_LABELS, TOY, TUTORIAL, WRITER};
use span_marker_hub_standin::StandInHub;

fn span_marker(hub: &StandInHub, hf_home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_span-marker"));
    command
        .current_dir(common::repo())
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HF_HUB_OFFLINE");
    command
}

fn succeeded(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn saved_labels(model: &Path) -> Vec<String> {
    let model = span_marker::SpanMarkerModel::from_pretrained(model.to_str().unwrap()).unwrap();
    model.labels().original().to_vec()
}

#[test]
fn train_and_evaluate_read_a_dataset_by_id_with_its_labels_and_offline_from_the_cache() {
    let work = tempfile::tempdir().unwrap();
    let hub = hub(work.path());
    let hf_home = work.path().join("hf-home");
    let model = work.path().join("model");
    let out = span_marker(&hub, &hf_home)
        .args(["train", "--dataset", TOY, "--eval-split", "test"])
        .args([
            "--train-rows",
            "64",
            "--eval-rows",
            "32",
            "--max-steps",
            "4",
        ])
        .args(["--model", "tests/fixtures/encoders/tiny-bert"])
        .arg("--output-dir")
        .arg(&model)
        .output()
        .unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert!(metrics["eval_overall_f1"].is_number(), "{metrics}");
    // The ids' names come from the ClassLabel feature, in its order (not inferred).
    assert_eq!(saved_labels(&model), CONLL_LABELS);
    let cached = hf_home.join("hub/datasets--user--toy-ner");
    assert!(cached.join("refs/main").is_file());

    // Labels given that differ from the stored ones are refused, naming both.
    let out = span_marker(&hub, &hf_home)
        .args(["train", "--dataset", TOY, "--max-steps", "1"])
        .args(["--model", "tests/fixtures/encoders/tiny-bert"])
        .args(["--labels", "O,B-PER,I-PER"])
        .arg("--output-dir")
        .arg(work.path().join("refused"))
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(
        stderr.contains(r#"["O", "B-PER", "I-PER"]"#) && stderr.contains(r#""B-MISC", "I-MISC"]"#),
        "{stderr}"
    );

    // Offline: the test split comes from the cache alone (the Hub is gone), found through
    // HF_HUB_CACHE, which names the cache itself.
    drop(hub);
    let offline_hub = StandInHub::start().unwrap();
    let out = span_marker(&offline_hub, &work.path().join("elsewhere"))
        .env("HF_HUB_CACHE", hf_home.join("hub"))
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "evaluate",
            "--dataset",
            TOY,
            "--split",
            "test",
            "--rows",
            "16",
        ])
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    let evaluation: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert!(evaluation["test_overall_f1"].is_number(), "{evaluation}");
    // A split never downloaded is not there offline, and the message says so.
    let out = span_marker(&offline_hub, &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .args(["evaluate", "--dataset", "user/other", "--split", "test"])
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(
        stderr.contains("user/other") && stderr.contains("offline"),
        "{stderr}"
    );
}

#[test]
fn what_cannot_be_read_fails_naming_the_dataset_split_and_what_there_is() {
    let work = tempfile::tempdir().unwrap();
    let hub = hub(work.path());
    let hf_home = work.path().join("hf-home");
    let evaluate = |args: &[&str]| {
        span_marker(&hub, &hf_home)
            .arg("evaluate")
            .args(args)
            .args(["--model", "bundled"])
            .output()
            .unwrap()
    };
    let stderr = failed(&evaluate(&["--dataset", TOY, "--split", "other"]));
    assert!(
        stderr.contains("user/toy-ner")
            && stderr.contains("the splits are: test, train, validation"),
        "{stderr}"
    );
    let stderr = failed(&evaluate(&[
        "--dataset",
        "user/script-only",
        "--split",
        "test",
    ]));
    assert!(
        stderr.contains("user/script-only") && stderr.contains("no Parquet files"),
        "{stderr}"
    );
    let stderr = failed(&evaluate(&["--dataset", "user/absent", "--split", "test"]));
    assert!(
        stderr.contains("user/absent") && stderr.contains("does not exist, or is private"),
        "{stderr}"
    );
    let stderr = failed(&evaluate(&[
        "--dataset",
        TUTORIAL,
        "--config",
        "other",
        "--split",
        "test",
    ]));
    assert!(stderr.contains("the configs are: conll2003"), "{stderr}");
    // A column that is not a list of words.
    let stderr = failed(&evaluate(&[
        "--dataset",
        TOY,
        "--split",
        "test",
        "--tokens-column",
        "id",
    ]));
    assert!(stderr.contains("`id`"), "{stderr}");
    // A bad token is refused by the Hub, and the message names the dataset.
    let out = span_marker(&hub, &hf_home)
        .env("HF_TOKEN", "hf_not_a_token")
        .args([
            "evaluate",
            "--dataset",
            TOY,
            "--split",
            "test",
            "--model",
            "bundled",
        ])
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(stderr.contains("user/toy-ner"), "{stderr}");
    assert!(!stderr.contains("hf_not_a_token"), "{stderr}");
}

#[test]
fn annotate_reads_a_one_file_split_by_id() {
    let work = tempfile::tempdir().unwrap();
    let hub = hub(work.path());
    let hf_home = work.path().join("hf-home");
    let output = work.path().join("entities.parquet");
    let out = span_marker(&hub, &hf_home)
        .args([
            "annotate",
            "--dataset",
            TOY,
            "--split",
            "test",
            "--model",
            "bundled",
        ])
        .args(["--show", "0", "--output"])
        .arg(&output)
        .output()
        .unwrap();
    succeeded(&out);
    let out = span_marker(&hub, &hf_home)
        .arg("sql")
        .arg(format!(
            "SELECT count(*) AS n, count(entities) AS annotated FROM '{}'",
            output.display()
        ))
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("| 150 | 150"), "{stdout}");
}

#[test]
fn sql_reads_a_dataset_split_as_a_table_and_trains_on_it_with_its_labels() {
    let work = tempfile::tempdir().unwrap();
    let hub = hub(work.path());
    let hf_home = work.path().join("hf-home");
    let out = span_marker(&hub, &hf_home)
        .args([
            "sql",
            "SELECT count(*) AS n FROM hf_dataset('user/toy-ner', 'train')",
        ])
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("| 600"), "{stdout}");
    let model = work.path().join("sql-model");
    let options = serde_json::json!({
        "model": {"encoder": "tests/fixtures/encoders/tiny-bert"},
        "training": {"output_dir": model, "max_steps": 2},
    });
    let query = format!(
        "SELECT * FROM span_marker_train('SELECT tokens, ner_tags FROM hf_dataset(''{TUTORIAL}'', ''train'') LIMIT 32', '{options}')"
    );
    let out = span_marker(&hub, &hf_home)
        .args(["sql", &query])
        .output()
        .unwrap();
    succeeded(&out);
    assert_eq!(saved_labels(&model), CONLL_LABELS);
}

#[test]
fn the_tutorial_pipeline_trains_from_the_dataset_id_logs_pushes_and_tests() {
    let work = tempfile::tempdir().unwrap();
    let hub = hub(work.path());
    let hf_home = work.path().join("hf-home");
    let output: PathBuf = work.path().join("tutorial-model");
    let out = span_marker(&hub, &hf_home)
        .env("HF_USER", "tutor")
        .env("HF_TOKEN", WRITER)
        .args(["train", "pipelines/tutorial.toml", "--output-dir"])
        .arg(&output)
        .output()
        .unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert!(metrics["test_overall_f1"].is_number(), "{metrics}");
    assert!(metrics["eval_overall_f1"].is_number(), "{metrics}");
    assert_eq!(saved_labels(&output), CONLL_LABELS);
    let pushed = hub
        .files("tutor/span-marker-roberta-base-conll03", "main")
        .expect("the model was pushed");
    assert!(pushed.contains_key("model.safetensors") && pushed.contains_key("config.json"));
    let runs = output.join("runs");
    let events = walk(&runs)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("events.out.tfevents"))
        .count();
    assert!(
        events >= 1,
        "no TensorBoard event file under {}",
        runs.display()
    );
}
