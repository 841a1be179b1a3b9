//! Bulk annotation: one output row per input row, in order, with the entities of the direct
//! API; resumption of an interrupted job; bad input named. (Resumption after SIGKILL of the
//! command line is in the `cli` crate's tests.)

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/corpus.rs"]
mod corpus;

use std::path::Path;

use corpus::{entities, ids, part_files, read_all, write_corpus};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use span_marker::{PredictOptions, SentenceInput, SpanMarkerModel};
use span_marker_udfs::annotate::{annotate, parts_dir, AnnotateOptions, InputColumn};
use span_marker_udfs::SharedModel;

fn options(input: &Path, output: &Path, column: InputColumn) -> AnnotateOptions {
    let mut options = AnnotateOptions::new(input, output, column);
    options.chunk_rows = 128;
    options.progress = false;
    options
}

#[test]
fn one_output_row_per_input_row_with_the_direct_api_entities() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.parquet");
    let words = write_corpus(&input, 1000, &[7, 640]);
    let output = dir.path().join("out.parquet");
    let model = SharedModel::load("bundled", "cpu").unwrap();
    let report = annotate(
        &model,
        &options(&input, &output, InputColumn::Tokens("tokens".into())),
    )
    .unwrap();
    assert_eq!(report.rows, 1000);
    assert_eq!(
        report.failed.iter().map(|f| f.0).collect::<Vec<_>>(),
        [7, 640],
        "rows named by their place in the file"
    );
    // The reason does not contradict the row with a number counted within its chunk.
    let reason = &report.failed[1].1;
    assert!(
        reason.starts_with("word ") && !reason.contains("row "),
        "{reason}"
    );
    assert!(!parts_dir(&output).exists(), "parts are merged and removed");
    let batches = read_all(&output);
    assert_eq!(ids(&batches), (0..1000).collect::<Vec<_>>());
    let got = entities(&batches);
    let direct = SpanMarkerModel::bundled().unwrap();
    let sample: Vec<usize> = (0..1000)
        .step_by(37)
        .filter(|r| ![7, 640].contains(r))
        .collect();
    let inputs: Vec<Vec<&str>> = sample
        .iter()
        .map(|&r| words[r].iter().map(String::as_str).collect())
        .collect();
    let inputs: Vec<SentenceInput<'_>> = inputs.iter().map(|w| SentenceInput::Words(w)).collect();
    let expected = direct.predict(&inputs, &PredictOptions::default()).unwrap();
    for (&row, want) in sample.iter().zip(expected) {
        let want: Vec<(i64, i64, String)> = want
            .iter()
            .map(|e| (e.word_start as i64, e.word_end as i64, e.label.clone()))
            .collect();
        assert_eq!(got[row].as_ref(), Some(&want), "row {row}");
    }
    assert_eq!(got[7], None);
    assert_eq!(got[640], None);
    assert!(
        got.iter().flatten().map(Vec::len).sum::<usize>() > 100,
        "the model finds entities"
    );

    // Strict mode stops at the first bad row, naming it.
    let mut strict = options(
        &input,
        &dir.path().join("strict.parquet"),
        InputColumn::Tokens("tokens".into()),
    );
    strict.strict = true;
    let error = annotate(&model, &strict).unwrap_err().to_string();
    assert!(
        error.contains("row 7") && error.contains("corpus.parquet"),
        "{error}"
    );
}

#[test]
fn text_columns_get_character_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.parquet");
    write_corpus(&input, 50, &[]);
    let output = dir.path().join("out.parquet");
    let model = SharedModel::load("bundled", "cpu").unwrap();
    annotate(
        &model,
        &options(&input, &output, InputColumn::Text("text".into())),
    )
    .unwrap();
    let batches = read_all(&output);
    let list = batches[0]
        .column_by_name("entities")
        .unwrap()
        .as_list::<i32>();
    let texts = batches[0]
        .column_by_name("text")
        .unwrap()
        .as_string::<i32>();
    let mut checked = 0;
    for row in 0..list.len() {
        let value = list.value(row);
        let s = value.as_struct();
        let start = s
            .column_by_name("char_start")
            .unwrap()
            .as_primitive::<Int64Type>();
        let end = s
            .column_by_name("char_end")
            .unwrap()
            .as_primitive::<Int64Type>();
        let text = s.column_by_name("text").unwrap().as_string::<i32>();
        for i in 0..s.len() {
            let sentence: Vec<char> = texts.value(row).chars().collect();
            let span: String = sentence[start.value(i) as usize..end.value(i) as usize]
                .iter()
                .collect();
            assert_eq!(span, text.value(i));
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.parquet");
    write_corpus(&input, 20, &[]);
    let model = SharedModel::load("bundled", "cpu").unwrap();
    let out = |name: &str| dir.path().join(name);
    let cases = [
        (
            options(
                &input,
                &out("a.parquet"),
                InputColumn::Tokens("text".into()),
            ),
            "text column option",
        ),
        (
            options(
                &input,
                &out("b.parquet"),
                InputColumn::Text("tokens".into()),
            ),
            "tokens column option",
        ),
        (
            options(
                &input,
                &out("c.parquet"),
                InputColumn::Tokens("words".into()),
            ),
            "`words`",
        ),
        (
            options(
                &out("missing.parquet"),
                &out("d.parquet"),
                InputColumn::Tokens("tokens".into()),
            ),
            "missing.parquet",
        ),
        (
            options(
                &common::repo().join("examples/sample.txt"),
                &out("e.parquet"),
                InputColumn::Tokens("tokens".into()),
            ),
            "not a readable Parquet file",
        ),
    ];
    for (options, expected) in cases {
        let error = annotate(&model, &options).unwrap_err().to_string();
        assert!(error.contains(expected), "{expected}: {error}");
        assert!(!options.output.exists());
    }
    let mut same_column = options(
        &input,
        &out("f.parquet"),
        InputColumn::Tokens("tokens".into()),
    );
    same_column.output_column = "id".into();
    let error = annotate(&model, &same_column).unwrap_err().to_string();
    assert!(
        error.contains("`id`") && error.contains("already has"),
        "{error}"
    );
    // An existing output is never overwritten.
    std::fs::write(out("g.parquet"), "keep me").unwrap();
    let error = annotate(
        &model,
        &options(
            &input,
            &out("g.parquet"),
            InputColumn::Tokens("tokens".into()),
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("already exists"), "{error}");
    assert_eq!(
        std::fs::read_to_string(out("g.parquet")).unwrap(),
        "keep me"
    );
}

#[test]
fn a_parts_directory_of_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.parquet");
    write_corpus(&input, 20, &[]);
    let output = dir.path().join("out.parquet");
    std::fs::create_dir_all(parts_dir(&output)).unwrap();
    std::fs::write(parts_dir(&output).join("manifest.json"), r#"{"input": "other.parquet", "input_bytes": 1, "column": {"tokens": "tokens"}, "output_column": "entities", "model": "bundled", "chunk_rows": 128}"#).unwrap();
    let model = SharedModel::load("bundled", "cpu").unwrap();
    let error = annotate(
        &model,
        &options(&input, &output, InputColumn::Tokens("tokens".into())),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("manifest.json") && error.contains("not a manifest"),
        "{error}"
    );
}

/// An interrupted job: a strict annotation of 100 rows stopped by a bad row (row 70), with
/// parts written for the chunks before it, and the options that resume it.
struct Interrupted {
    dir: tempfile::TempDir,
    input: std::path::PathBuf,
    output: std::path::PathBuf,
    model: SharedModel,
    settings: AnnotateOptions,
}

fn interrupted() -> Interrupted {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (
        dir.path().join("corpus.parquet"),
        dir.path().join("out.parquet"),
    );
    let model = SharedModel::load("bundled", "cpu").unwrap();
    write_corpus(&input, 100, &[70]);
    let mut settings = options(&input, &output, InputColumn::Tokens("tokens".into()));
    settings.chunk_rows = 16;
    settings.strict = true;
    annotate(&model, &settings).unwrap_err();
    assert_eq!(part_files(&output), 4, "the chunks before the bad row");
    settings.strict = false;
    Interrupted {
        dir,
        input,
        output,
        model,
        settings,
    }
}

/// A resumed run is the same job by content: another input at the same path, or other
/// weights under the same model name, are refused, naming what changed.
#[test]
fn a_resumed_run_checks_its_input_and_model_by_content() {
    let Interrupted {
        dir: _dir,
        input,
        model,
        settings,
        ..
    } = interrupted();

    // The same path, other bytes (one row fewer).
    let saved = std::fs::read(&input).unwrap();
    write_corpus(&input, 99, &[70]);
    let error = annotate(&model, &settings).unwrap_err().to_string();
    assert!(
        error.contains("the input file's content changed") && error.contains("sha256"),
        "{error}"
    );
    std::fs::write(&input, &saved).unwrap();

    // The same name, other weights.
    let other = SharedModel::load("bundled", "cpu").unwrap();
    let changed = SharedModel::new("bundled", span_marker::SpanMarkerModel::bundled().unwrap());
    {
        let guard = changed.lock();
        let mut variables = guard.var_store().variables();
        let bias = variables.get_mut("classifier.bias").unwrap();
        let _ = tch::no_grad(|| bias.g_add_scalar_(0.5));
    }
    let error = annotate(&changed, &settings).unwrap_err().to_string();
    assert!(error.contains("the model's weights changed"), "{error}");
    // The original content under any path and name resumes.
    let report = annotate(&other, &settings).unwrap();
    assert_eq!((report.rows, report.resumed_rows), (100, 64));
}

/// A file put at the output path while a run was interrupted is not the run's: it is never
/// replaced. Two runs on one output at once: the second is refused by the lock.
#[test]
fn the_output_is_never_replaced_and_one_run_works_at_a_time() {
    let Interrupted {
        dir: _dir,
        output,
        model,
        settings,
        ..
    } = interrupted();

    let lock = span_marker::lock::DirLock::acquire(&parts_dir(&output), "test").unwrap();
    let error = annotate(&model, &settings).unwrap_err().to_string();
    assert!(error.contains("another annotation run"), "{error}");
    drop(lock);

    std::fs::write(&output, "keep me").unwrap();
    let error = annotate(&model, &settings).unwrap_err().to_string();
    assert!(
        error.contains("was not written by the unfinished run"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "keep me");
    std::fs::remove_file(&output).unwrap();
    let report = annotate(&model, &settings).unwrap();
    assert_eq!(report.resumed_rows, 64);
    assert!(!parts_dir(&output).exists());
}

/// Settings that change the entities are part of the job: resuming with another threshold
/// would write rows of two settings into one output. Strict mode is not: a strict run that
/// stopped at a bad row resumes without it.
#[test]
fn a_resumed_run_keeps_the_prediction_settings() {
    let Interrupted {
        dir,
        input,
        output,
        model,
        settings,
    } = interrupted();

    let mut other = settings.clone();
    other.predict.threshold = Some(0.9);
    let error = annotate(&model, &other).unwrap_err().to_string();
    assert!(
        error.contains("`threshold` was null, is now 0.9"),
        "{error}"
    );
    other.predict.threshold = None;
    other.predict.allow_overlapping = true;
    let error = annotate(&model, &other).unwrap_err().to_string();
    assert!(
        error.contains("`allow_overlapping` was false, is now true"),
        "{error}"
    );

    let report = annotate(&model, &settings).unwrap();
    assert_eq!((report.rows, report.resumed_rows), (100, 64));
    let fresh = dir.path().join("fresh.parquet");
    annotate(
        &model,
        &options(&input, &fresh, InputColumn::Tokens("tokens".into())),
    )
    .unwrap();
    assert_eq!(entities(&read_all(&output)), entities(&read_all(&fresh)));
}

/// The many-files job in this process keeps each file's rows in order even where DataFusion
/// would spread a file's batches over partitions (small batches, several target partitions),
/// takes any file name, and names what it refuses.
#[test]
fn many_files_in_this_process_keep_each_files_rows_in_order() {
    use span_marker_udfs::cluster::annotate::{annotate_files, FilesAnnotateOptions, Runner};

    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    write_corpus(&corpus.join("a.parquet"), 700, &[]);
    write_corpus(&corpus.join("b.data"), 300, &[]);
    let config = datafusion::prelude::SessionConfig::new()
        .with_batch_size(64)
        .with_target_partitions(4);
    let ctx = span_marker_udfs::store::session_context_with(config);
    let model = SharedModel::load(&common::conll_tiny().to_string_lossy(), "cpu").unwrap();
    span_marker_udfs::sql::register_all_with_model(&ctx, model.clone());
    let output = dir
        .path()
        .join("..")
        .join(dir.path().file_name().unwrap())
        .join("out");
    let options = FilesAnnotateOptions {
        inputs: vec![
            corpus.join("a.parquet").to_string_lossy().into_owned(),
            corpus.join("b.data").to_string_lossy().into_owned(),
        ],
        output_dir: output.to_string_lossy().into_owned(),
        column: InputColumn::Tokens("tokens".into()),
        output_column: "entities".into(),
        files_at_once: 2,
        progress: false,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(annotate_files(Runner::Local, &ctx, &options))
        .unwrap();
    assert_eq!((report.files, report.rows), (2, 1000));
    for (name, rows) in [("a.parquet", 700), ("b.data", 300)] {
        let got = read_all(&dir.path().join("out").join(name));
        assert_eq!(
            ids(&got),
            (0..rows).collect::<Vec<i64>>(),
            "{name}: rows in order"
        );
        let local = dir.path().join(format!("local-{name}"));
        annotate(&model, &options_for(&corpus.join(name), &local)).unwrap();
        assert_eq!(entities(&got), entities(&read_all(&local)), "{name}");
    }
    assert!(
        !dir.path().join("out/.span-marker-staging").exists(),
        "nothing staged is left"
    );

    // A name that object keys would escape is refused, naming the character.
    let odd = corpus.join("odd#1.parquet");
    std::fs::copy(corpus.join("a.parquet"), &odd).unwrap();
    let refused = FilesAnnotateOptions {
        inputs: vec![odd.to_string_lossy().into_owned()],
        ..options.clone()
    };
    let error = runtime
        .block_on(annotate_files(Runner::Local, &ctx, &refused))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`#` in a") && error.contains("odd#1.parquet"),
        "{error}"
    );
}

fn options_for(input: &Path, output: &Path) -> AnnotateOptions {
    options(input, output, InputColumn::Tokens("tokens".into()))
}
