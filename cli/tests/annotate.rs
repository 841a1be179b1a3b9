//! `span-marker annotate` killed with SIGKILL and run again: every row once, in order, with
//! the entities of an uninterrupted run.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/corpus.rs"]
mod corpus;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corpus::{entities, ids, part_files, read_all, write_corpus};

fn cli_annotate(input: &Path, output: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_span-marker"));
    command.args([
        "annotate",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--chunk-rows",
        "64",
        "--show",
        "0",
    ]);
    command
}

#[test]
fn sigkill_then_resume_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.parquet");
    write_corpus(&input, 3000, &[100]);
    let reference: PathBuf = dir.path().join("reference.parquet");
    let status = cli_annotate(&input, &reference)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let output = dir.path().join("out.parquet");
    let mut child = cli_annotate(&input, &output)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while part_files(&output) < 5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        assert!(started.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!output.exists(), "no partial output");
    let done = part_files(&output);
    assert!(
        (5..3000 / 64).contains(&done),
        "interrupted midway: {done} parts"
    );

    let resumed = cli_annotate(&input, &output).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("done by an earlier run"), "{stderr}");
    let (got, want) = (read_all(&output), read_all(&reference));
    assert_eq!(
        ids(&got),
        (0..3000).collect::<Vec<_>>(),
        "each row once, in order"
    );
    assert_eq!(entities(&got), entities(&want));
    assert_eq!(entities(&got)[100], None);
}
