//! `span-marker-bench` against the Python reference, on the tiny fixture model.

use std::process::Command;

#[path = "../../tests/common/mod.rs"]
mod common;

/// The benchmark on the tiny fine-tuned fixture and the toy test split, run from the
/// workspace root.
fn bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_span-marker-bench"));
    command.current_dir(common::repo()).args([
        "--model",
        "tests/fixtures/trained/tiny-bert",
        "--data",
        "examples/data/test.txt",
    ]);
    command
}

#[test]
fn bench_measures_both_implementations_and_checks_the_entities() {
    let out = bench()
        .args(["--sentences", "60", "--repeat", "1", "--warmup", "0"])
        .args(["--threads", "1", "--python", ".venv-python"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "torch intra-op threads 1",
        "rust:",
        "sql:",
        "with 2 partition(s)",
        "python:",
        "ratio:",
        "entities identical: yes (60 sentences",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
    }
}

/// Joined sentences longer than one encoder input are encoded in windows here and truncated by
/// the reference: they are timed but left out of the entity comparison, and the run says so.
#[test]
fn bench_joins_sentences_and_compares_only_those_that_fit() {
    let run = |join: &str| {
        bench()
            .args(["--sentences", "12", "--repeat", "1", "--warmup", "0"])
            .args(["--join", join, "--threads", "1", "--python", ".venv-python"])
            .output()
            .unwrap()
    };
    let out = run("3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("12 sentences from examples/data/test.txt, each 3 of its sentences joined"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("entities identical: yes ("))
        .unwrap_or_else(|| panic!("no entity comparison in\n{stdout}"));
    let first_number = |text: &str| text.split(' ').next().unwrap().parse::<usize>().unwrap();
    let compared = first_number(line);
    let left_out = line.split("; ").nth(1).map_or(0, first_number);
    // The tiny model reads 64 tokens: some 3-sentence joins fit, others do not.
    assert!(compared > 0 && left_out > 0, "{stdout}");
    assert_eq!(compared + left_out, 12, "{stdout}");

    let out = run("0");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--join must be between 1 and"));
}

/// Out-of-range numbers are refused before any work, naming the flag: never a panic, an
/// abort on a huge allocation, or a libtorch error.
#[test]
fn out_of_range_options_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--threads", "0"),
        ("--threads", "99999999"),
        ("--sentences", "99999999999"),
        ("--join", "0"),
        ("--batch-size", "99999999999"),
        ("--repeat", "0"),
        ("--learning-rate", "nan"),
    ] {
        let out = bench().args([flag, value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("error: {flag} must be")) && !stderr.contains("panicked"),
            "{flag} {value}: {stderr}"
        );
    }
}
