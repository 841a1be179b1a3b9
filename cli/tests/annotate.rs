//! `span-marker annotate` killed with SIGKILL and run again: every row once, in order, with
//! the entities of an uninterrupted run.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/corpus.rs"]
mod corpus;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Ended;

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
        "--model",
        common::conll_tiny().to_str().unwrap(),
    ]);
    command
}

/// Rows of the corpus the kill test annotates.
const ROWS: usize = 3000;

/// Twenty SIGKILLs at random points of annotation jobs, each followed by a restart with the
/// same arguments: half at a random instant from the start (loading, the first parts), half
/// a random moment after a random number of further parts (writing parts, merging, removing
/// the parts). Every finished job has every row once, in order, with the entities of an
/// uninterrupted run; then the next job starts over.
#[test]
fn repeated_sigkills_then_resume_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.parquet");
    write_corpus(&input, ROWS, &[100]);
    let reference: PathBuf = dir.path().join("reference.parquet");
    let status = cli_annotate(&input, &reference)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let want = entities(&read_all(&reference));
    let check = |output: &Path| {
        let got = read_all(output);
        assert_eq!(
            ids(&got),
            (0..ROWS as i64).collect::<Vec<_>>(),
            "each row once, in order"
        );
        assert_eq!(entities(&got), want);
        assert!(!span_marker_udfs::annotate::parts_dir(output).exists());
    };

    let output = dir.path().join("out.parquet");
    let mut schedule = common::FaultSchedule::new();
    let (mut kills, mut midway, mut jobs) = (0, 0, 0);
    while kills < 20 {
        let ended = if schedule.below(2) == 0 {
            let delay = schedule.delay(Duration::ZERO, Duration::from_millis(1500));
            let started = Instant::now();
            common::run_until_killed(
                cli_annotate(&input, &output).stderr(Stdio::null()),
                || started.elapsed() >= delay,
                Duration::ZERO,
            )
        } else {
            let target = part_files(&output) + 1 + schedule.below(4) as usize;
            let extra = schedule.delay(Duration::ZERO, Duration::from_millis(80));
            common::run_until_killed(
                cli_annotate(&input, &output).stderr(Stdio::null()),
                || part_files(&output) >= target,
                extra,
            )
        };
        match ended {
            Ended::Killed => {
                kills += 1;
                let parts = part_files(&output);
                midway += usize::from(parts > 0 && parts < ROWS.div_ceil(64));
                if output.exists() {
                    // Published before the kill: complete, whatever else was left to do.
                    assert_eq!(
                        ids(&read_all(&output)),
                        (0..ROWS as i64).collect::<Vec<_>>()
                    );
                    if !span_marker_udfs::annotate::parts_dir(&output).exists() {
                        // Killed after its last step, on its way out: the job is done (a
                        // rerun would rightly refuse to overwrite the output), so the next
                        // one starts over.
                        check(&output);
                        std::fs::remove_file(&output).unwrap();
                        jobs += 1;
                    }
                }
            }
            Ended::Finished => {
                check(&output);
                std::fs::remove_file(&output).unwrap();
                jobs += 1;
            }
        }
    }
    assert!(
        midway >= 5,
        "only {midway} of {kills} kills fell among the parts"
    );
    let resumed = cli_annotate(&input, &output).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    check(&output);
    eprintln!(
        "{kills} kills ({midway} among the parts) over {} jobs",
        jobs + 1
    );
}

/// A full disk in the middle of an annotation (a 96 KiB tmpfs in a private mount namespace):
/// the run stops with an error naming the file it could not write, leaves no partial output,
/// and once there is room again a restart completes the job with every row once.
#[test]
fn a_full_disk_stops_the_run_naming_the_file_and_a_restart_completes_it() {
    let can_mount = Command::new("unshare")
        .args(["-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can_mount {
        eprintln!(
            "skipping: this machine does not let the test mount a small tmpfs in a private \
             namespace (`unshare -Urm`); the full-disk test needs it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.parquet");
    write_corpus(&input, 3000, &[100]);
    let reference = dir.path().join("reference.parquet");
    assert!(cli_annotate(&input, &reference)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success());
    let mount = dir.path().join("small-disk");
    std::fs::create_dir(&mount).unwrap();
    let (first, second) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let copied = dir.path().join("copied.parquet");
    let script = r#"
        set -e
        mount -t tmpfs -o size=96k tmpfs "$MOUNT"
        run() { "$BIN" annotate --input "$INPUT" --output "$MOUNT/out.parquet" --chunk-rows 64 --show 0 --model "$MODEL"; }
        if run 2> "$FIRST"; then echo "the run fit on a 96 KiB disk" >&2; exit 3; fi
        test ! -e "$MOUNT/out.parquet"
        mount -o remount,size=64m "$MOUNT"
        run 2> "$SECOND"
        cp "$MOUNT/out.parquet" "$COPIED"
    "#;
    let out = Command::new("unshare")
        .args(["-Urm", "sh", "-c", script])
        .env("BIN", env!("CARGO_BIN_EXE_span-marker"))
        .env("MODEL", common::conll_tiny())
        .env("INPUT", &input)
        .env("MOUNT", &mount)
        .env("FIRST", &first)
        .env("SECOND", &second)
        .env("COPIED", &copied)
        .output()
        .unwrap();
    let log = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\nfirst run: {}\nsecond run: {}",
        String::from_utf8_lossy(&out.stderr),
        log(&first),
        log(&second)
    );
    let first = log(&first);
    assert!(
        first.contains("No space left on device")
            && first.contains("small-disk/out.parquet.parts")
            && !first.contains("panicked")
            && !first.contains("internal error"),
        "{first}"
    );
    assert!(
        log(&second).contains("done by an earlier run"),
        "{}",
        log(&second)
    );
    let (got, want) = (read_all(&copied), read_all(&reference));
    assert_eq!(ids(&got), (0..3000).collect::<Vec<_>>());
    assert_eq!(entities(&got), entities(&want));
}
