//! The `span-marker` binary when its surroundings fail or hold earlier work: standard output
//! and standard error on a full disk or closed, files it writes (permissions as any Unix tool
//! gives them), log records in a pipe, a finished training run in the output directory, an
//! existing file at a `COPY ... TO` target, and settings that cannot run (refused before
//! anything is written). Each class ends in a clear error or a normal result, never an abort,
//! and nothing finished is replaced unless asked.

#![cfg(unix)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Text that must never reach a user: the marks of a panic, an abort or a C++ exception.
const FORBIDDEN: [&str; 6] = [
    "internal error",
    "panicked",
    "stack backtrace",
    "terminate called",
    "Exception raised from",
    "core dumped",
];

const TINY_ENCODER: &str = "tests/fixtures/encoders/tiny-bert";
const TRAIN: &str = "examples/data/train.txt";

/// Training arguments that save a checkpoint at every step, in `dir`.
fn checkpoint_every_step(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("args.json");
    std::fs::write(&path, r#"{"save_steps": 1, "max_steps": 2}"#).unwrap();
    path
}

fn span_marker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_span-marker"));
    command.current_dir(common::repo()).stdin(Stdio::null());
    command
}

/// Runs `command` under `umask` (the process-wide mask is not touched in the test).
fn with_umask(command: &mut Command, umask: u32) -> &mut Command {
    // SAFETY: umask is async-signal-safe; the closure runs in the child before exec.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        })
    }
}

fn succeeded(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn failed(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
    assert!(FORBIDDEN.iter().all(|f| !stderr.contains(f)), "{stderr}");
    stderr
}

/// Standard output or standard error on a full disk (`/dev/full`), or closed: the process ends
/// with a failure code and never aborts, and says why where it still can.
#[test]
fn failing_standard_streams_end_in_a_failure_code_never_an_abort() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("skipping: this system has no /dev/full");
        return;
    }
    let commands: [&[&str]; 6] = [
        &["predict", "Angela Merkel visited Paris"],
        &["predict", "--json", "Angela Merkel visited Paris"],
        &["candidates"],
        &["sql", "SELECT 1 AS one"],
        &["--help"],
        &["--version"],
    ];
    let mut failures = Vec::new();
    for args in commands {
        // Standard output full: the error is reported on standard error.
        let out = span_marker()
            .args(args)
            .stdout(std::fs::File::create(full).unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1)
            || !stderr.contains("No space left on device")
            || FORBIDDEN.iter().any(|f| stderr.contains(f))
        {
            failures.push(format!("{args:?} > /dev/full: {:?}\n{stderr}", out.status));
        }
        // Standard output closed.
        let mut command = span_marker();
        command.args(args).stderr(Stdio::piped());
        // SAFETY: close is async-signal-safe; the closure runs in the child before exec.
        unsafe {
            command.pre_exec(|| {
                libc::close(1);
                Ok(())
            });
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || FORBIDDEN.iter().any(|f| stderr.contains(f)) {
            failures.push(format!("{args:?} >&-: {:?}\n{stderr}", out.status));
        }
    }
    // Standard error full, on commands that log (RUST_LOG=info) and on one that fails.
    for (args, code) in [
        (&["predict", "Angela Merkel visited Paris"][..], 1),
        (&["predict", "--model", "/no/such/model", "x"][..], 1),
        (&["--help"][..], 0),
    ] {
        let out = span_marker()
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(full).unwrap())
            .output()
            .unwrap();
        if out.status.code() != Some(code) || out.status.signal().is_some() {
            failures.push(format!("{args:?} 2> /dev/full: {:?}", out.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The modes of every file under `dir` (relative path, mode bits).
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let mode = path.metadata().unwrap().permissions().mode() & 0o777;
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                found.push((name, mode));
            }
        }
    }
    found.sort();
    found
}

/// Models, checkpoints, logs, manifests and annotation outputs get `0666` less the umask,
/// like the files of any other Unix tool, not a temporary file's `0600`.
#[test]
fn written_files_are_readable_as_the_umask_allows() {
    let dir = tempfile::tempdir().unwrap();
    for umask in [0o022, 0o027] {
        let run = dir.path().join(format!("run-{umask:o}"));
        succeeded(
            with_umask(
                span_marker().args(["train", "--train", TRAIN, "--model", TINY_ENCODER]),
                umask,
            )
            .arg("--args")
            .arg(checkpoint_every_step(dir.path()))
            .arg("--output-dir")
            .arg(&run),
        );
        let annotated = run.join("annotated.parquet");
        succeeded(
            with_umask(
                span_marker().args(["annotate", "--sample", "--show", "0", "--output"]),
                umask,
            )
            .arg(&annotated),
        );
        let copied = run.join("copied.parquet");
        succeeded(with_umask(span_marker().arg("sql"), umask).arg(format!(
            "COPY (SELECT 'Paris' AS text) TO '{}'",
            copied.display()
        )));
        let files = modes(&run);
        for name in [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "README.md",
            "training_args.json",
            "log_history.jsonl",
            "checkpoint-2/optimizer.safetensors",
            "checkpoint-2/trainer_state.json",
            "annotated.parquet",
        ] {
            assert!(
                files.iter().any(|(file, _)| file == name),
                "{name} missing from {files:?}"
            );
        }
        let wrong: Vec<_> = files
            .iter()
            .filter(|(name, mode)| *mode != 0o666 & !umask && !name.ends_with(".lock"))
            .collect();
        assert!(wrong.is_empty(), "umask {umask:o}: {wrong:?}");
    }
}

/// Log records written to a pipe or a file carry no terminal colour codes.
#[test]
fn logs_in_a_pipe_have_no_colour_codes() {
    let out = succeeded(
        span_marker()
            .args(["predict", "Angela Merkel visited Paris"])
            .env("RUST_LOG", "debug"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEBUG"), "no log records: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}

/// `train` into a directory holding a finished run refuses, naming what is there and the ways
/// on; `--resume` continues it and `--overwrite-output-dir` replaces it.
#[test]
fn train_never_replaces_a_finished_run_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let train = |extra: &[&str]| {
        let mut command = span_marker();
        command
            .args(["train", "--train", TRAIN, "--model", TINY_ENCODER])
            .arg("--args")
            .arg(checkpoint_every_step(dir.path()))
            .arg("--output-dir")
            .arg(&run)
            .args(extra);
        command
    };
    succeeded(&mut train(&[]));
    let weights = std::fs::read(run.join("model.safetensors")).unwrap();
    let stderr = failed(&mut train(&[]));
    assert!(
        stderr.contains("holds a finished run")
            && stderr.contains("model.safetensors")
            && stderr.contains("--overwrite-output-dir")
            && stderr.contains("--resume latest"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(run.join("model.safetensors")).unwrap(),
        weights
    );
    succeeded(&mut train(&["--resume", "latest"]));
    succeeded(&mut train(&["--overwrite-output-dir"]));
}

/// `sql` with `COPY ... TO` an existing file refuses unless `--overwrite`.
#[test]
fn copy_to_an_existing_file_needs_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.csv");
    std::fs::write(&target, "precious\n").unwrap();
    let copy = format!("COPY (SELECT 1 AS one) TO '{}'", target.display());
    let stderr = failed(span_marker().args(["sql", &copy]));
    assert!(
        stderr.contains("out.csv") && stderr.contains("exists") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    succeeded(span_marker().args(["sql", "--overwrite", &copy]));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "one\n1\n");
}

/// Settings the device cannot run are refused before an annotation writes anything, so the
/// corrected run is not blocked by a part directory of the refused one.
#[test]
fn annotation_settings_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.parquet");
    let annotate = |precision: &str| {
        let mut command = span_marker();
        command
            .args([
                "annotate",
                "--sample",
                "--show",
                "0",
                "--precision",
                precision,
            ])
            .arg("--output")
            .arg(&output);
        command
    };
    if tch::Cuda::is_available() {
        eprintln!("skipping: fp16 runs here");
        return;
    }
    let stderr = failed(&mut annotate("fp16"));
    assert!(stderr.contains("fp16"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "the refused run left {left:?}");
    succeeded(&mut annotate("fp32"));
    assert!(output.is_file());
}

/// `push` never shows a token or the password of a Hub address, whatever is wrong with them
/// (a byte a header cannot carry, an empty token, credentials in the address, a Hub that
/// does not answer); the error says what was wrong instead.
#[test]
fn push_never_prints_a_token_or_a_password() {
    let model = common::conll_tiny();
    // Nothing listens here: every connection is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hub = format!("http://127.0.0.1:{closed}");
    let with_password = format!("http://me:pw-PLANTED-77@127.0.0.1:{closed}");
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (
            &["--token", "hf_PLANTED\n77", "--endpoint", &hub],
            None,
            "token",
        ),
        (
            &["--token", "hf_PLANTED-Ä77", "--endpoint", &hub],
            None,
            "token",
        ),
        (&["--endpoint", &hub], Some(""), "HF_TOKEN"),
        (
            &["--token", "hf_PLANTED-77", "--endpoint", &with_password],
            None,
            "<redacted>",
        ),
        (
            &[
                "--token",
                "hf_PLANTED-77",
                "--endpoint",
                &hub,
                "--timeout",
                "2",
            ],
            None,
            "127.0.0.1",
        ),
    ];
    for (args, env_token, expected) in cases {
        let mut command = span_marker();
        command.arg("push").arg(&model).arg("me/planted").args(args);
        command.env_remove("HF_TOKEN");
        if let Some(token) = env_token {
            command.env("HF_TOKEN", token);
        }
        let out = command.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(!text.contains("PLANTED"), "{args:?} shows a secret: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(FORBIDDEN.iter().all(|f| !text.contains(f)), "{text}");
    }
}
