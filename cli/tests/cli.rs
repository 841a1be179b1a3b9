//! The `span-marker` binary: the README's main job and its errors.

use std::io::Write;
use std::process::{Command, Stdio};

#[path = "../../tests/common/mod.rs"]
mod common;

/// The binary, run from the workspace root like the README's commands.
fn span_marker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_span-marker"));
    command.current_dir(common::repo());
    command
}

/// The binary run with `args`, `input` on its standard input.
fn with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = span_marker()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn candidates_runs_on_the_bundled_sample() {
    let out = span_marker().arg("candidates").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("[0] Angela Merkel met Emmanuel Macron in Paris on Tuesday."),
        "{stdout}"
    );
    assert!(stdout.contains("[0..2) Angela Merkel"), "{stdout}");
    assert!(
        stdout.contains("4 sentences -> 4 windows -> 4 samples; input_ids [4, 256]"),
        "{stdout}"
    );
}

#[test]
fn candidates_reads_words_from_stdin() {
    let out = with_stdin(
        &["candidates", "-", "--words", "--show", "100"],
        b"New York is big\n",
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("4 words, 6 tokens, 10 candidates, 1 sample(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("[0..4) New York is big"), "{stdout}");
    assert!(!stdout.contains("more (--show"), "{stdout}");
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let out = span_marker()
        .args(["candidates", "--model", "/no/such/model"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    // Named as every command names a model that is not there (see `span_marker::hub`).
    assert!(
        stderr.contains("error: model \"/no/such/model\": not a directory"),
        "{stderr}"
    );
}

#[test]
fn predict_runs_on_the_bundled_sample_and_agrees_with_the_library() {
    let out = span_marker().args(["predict", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sample: Vec<&str> = include_str!("../../examples/sample.txt").lines().collect();
    assert_eq!(records.len(), sample.len());

    let model = span_marker::SpanMarkerModel::bundled().unwrap();
    let inputs: Vec<_> = sample
        .iter()
        .map(|l| span_marker::SentenceInput::Text(l))
        .collect();
    let expected = model.predict(&inputs, &Default::default()).unwrap();
    for ((record, line), entities) in records.iter().zip(&sample).zip(&expected) {
        assert_eq!(record["text"], *line);
        // Through the same text round trip as the CLI's output (serde_json parses floats to
        // within one ulp).
        let expected: serde_json::Value =
            serde_json::from_str(&serde_json::to_value(entities).unwrap().to_string()).unwrap();
        assert_eq!(record["entities"], expected);
    }
    assert!(
        expected.iter().any(|e| !e.is_empty()),
        "the bundled model finds no entity"
    );
}

#[test]
fn predict_refuses_bad_options() {
    for (args, needle) in [
        (&["predict", "--device", "cuda:7"][..], "cuda:7"),
        (&["predict", "--threshold", "1.5"][..], "threshold"),
        (&["predict", "--batch-size", "0"][..], "batch_size"),
        (&["--threads", "0", "predict"][..], "--threads"),
        (&["predict", "--threads", "many"][..], "--threads"),
        (
            &["predict", "--model", "/no/such/model"][..],
            "/no/such/model",
        ),
    ] {
        let out = span_marker().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("error:") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn threads_before_or_after_the_subcommand_set_libtorch_and_keep_the_entities() {
    let sentence = "Ada Lovelace was born in London.";
    // (start, end, label) of each entity; scores may differ in the last bits between thread
    // counts.
    let entities = |args: &[&str]| {
        let out = succeeded(span_marker().args(args).env("RUST_LOG", "debug"));
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let spans: Vec<(u64, u64, String)> = record["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let field = |key: &str| e[key].as_u64().unwrap();
                (
                    field("word_start"),
                    field("word_end"),
                    e["label"].to_string(),
                )
            })
            .collect();
        (spans, String::from_utf8(out.stderr).unwrap())
    };
    let (default, _) = entities(&["predict", "--json", sentence]);
    let (one, log_one) = entities(&["--threads", "1", "predict", "--json", sentence]);
    let (two, log_two) = entities(&["predict", "--json", "--threads", "2", sentence]);
    assert!(!default.is_empty());
    assert_eq!(one, default);
    assert_eq!(two, default);
    assert!(
        log_one.contains("libtorch intra-op threads: 1"),
        "{log_one}"
    );
    assert!(
        log_two.contains("libtorch intra-op threads: 2"),
        "{log_two}"
    );
}

/// The command's output, asserting that it succeeded (its standard error in the message).
fn succeeded(command: &mut Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_ok(command: &mut Command) -> String {
    String::from_utf8(succeeded(command).stdout).unwrap()
}

#[test]
fn predict_takes_sentences_from_arguments_and_stdin() {
    let args = run_ok(span_marker().args([
        "predict",
        "--json",
        "Germany and France agreed.",
        "Angela Merkel visited Paris.",
    ]));
    let out = with_stdin(
        &["predict", "--json", "-"],
        b"Germany and France agreed.\nAngela Merkel visited Paris.\n",
    );
    let stdin = String::from_utf8(out.stdout).unwrap();
    assert_eq!(args, stdin);
    assert_eq!(args.lines().count(), 2);
    assert!(args.contains("\"label\":\"LOC\""), "{args}");
}

#[test]
fn sql_over_a_parquet_file_by_path_prints_entities() {
    let dir = tempfile::tempdir().unwrap();
    // Write the file with the CLI itself, then query it by path.
    run_ok(span_marker().current_dir(dir.path()).args([
        "sql",
        "COPY (SELECT ['Germany', 'and', 'France', 'agreed', '.'] AS tokens) TO 'sample.parquet'",
    ]));
    let stdout = run_ok(span_marker().current_dir(dir.path()).args([
        "sql",
        "SELECT span_marker_predict(tokens) AS entities FROM 'sample.parquet'",
    ]));
    assert!(stdout.contains("label: LOC"), "{stdout}");
    assert!(stdout.contains("start: 0, end: 1"), "{stdout}");
    let out = span_marker()
        .args(["sql", "SELECT span_marker_predict(1)"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("list of strings"));
}

#[test]
fn annotate_sample_is_the_main_job() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("entities.parquet");
    let stdout =
        run_ok(span_marker().args(["annotate", "--sample", "--output", output.to_str().unwrap()]));
    assert!(
        stdout.starts_with("Angela Merkel met Emmanuel Macron in Paris on Tuesday.\n"),
        "{stdout}"
    );
    assert!(stdout.contains("LOC"), "{stdout}");
    assert!(output.is_file());
    // Running it again refuses to overwrite the output.
    let out = span_marker()
        .args(["annotate", "--sample", "--output", output.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn evaluate_prints_metrics_for_annotated_files() {
    let stdout = run_ok(span_marker().args([
        "evaluate",
        "--model",
        "tests/fixtures/trained/tiny-bert",
        "--data",
        "examples/data/test.txt",
        "--format",
        "conll",
    ]));
    let metrics: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let f1 = metrics["test_overall_f1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&f1), "{metrics}");
    let out = span_marker()
        .args(["evaluate", "--data", "examples/data/nope.parquet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.parquet"));
}

#[test]
fn push_publishes_a_model_directory_and_refuses_what_is_not_one() {
    let hub = span_marker_hub_standin::StandInHub::start().unwrap();
    hub.add_token("hf_cli_token", "user", true);
    let model = common::conll_tiny();
    let home = tempfile::tempdir().unwrap();
    let push = |dir: &str| {
        let mut command = span_marker();
        command
            .args([
                "push",
                dir,
                "user/conll-tiny",
                "--private",
                "-m",
                "From the CLI",
            ])
            .args(["--endpoint", hub.endpoint()])
            .env("HF_HOME", home.path())
            .env_remove("HF_TOKEN_PATH");
        command
    };
    let out = push(model.to_str().unwrap())
        .env("HF_TOKEN", "hf_cli_token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("to {}/user/conll-tiny", hub.endpoint())),
        "{stdout}"
    );
    assert_eq!(hub.is_private("user/conll-tiny"), Some(true));
    let files = hub.files("user/conll-tiny", "main").unwrap();
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
    ] {
        assert_eq!(
            files[name],
            std::fs::read(model.join(name)).unwrap(),
            "{name}"
        );
    }

    // An encoder directory is not a SpanMarker model: refused before anything goes up.
    let commits = hub.commits_made();
    let out = push("tests/fixtures/encoders/tiny-bert")
        .env("HF_TOKEN", "hf_cli_token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is not a SpanMarker model directory to publish"),
        "{stderr}"
    );
    assert_eq!(hub.commits_made(), commits);

    // The token from the file `huggingface-cli login` writes, the Hub from HF_ENDPOINT.
    std::fs::write(home.path().join("token"), "hf_cli_token\n").unwrap();
    let push_from_env = || {
        span_marker()
            .args(["push", model.to_str().unwrap(), "user/from-env"])
            .env("HF_HOME", home.path())
            .env("HF_ENDPOINT", hub.endpoint())
            .env_remove("HF_TOKEN")
            .env_remove("HF_TOKEN_PATH")
            .output()
            .unwrap()
    };
    let out = push_from_env();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hub.is_private("user/from-env"), Some(false));
    let out = push_from_env();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("nothing changed"), "{stdout}");
    std::fs::remove_file(home.path().join("token")).unwrap();

    // No token anywhere: says where one comes from.
    let out = push(model.to_str().unwrap())
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no access token") && stderr.contains("HF_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
