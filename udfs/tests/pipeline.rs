//! Pipeline files and table sources: every bundled pipeline validates, a pipeline trains and
//! evaluates end to end, malformed files are refused naming the key, and Parquet, CSV, JSON
//! lines and queries read the same rows as the CoNLL file they were made from.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Builder, ListBuilder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::SessionContext;
use span_marker::train::{read_conll, TrainingArguments};
use span_marker::Labels;
use span_marker_udfs::dataset::{AnnotatedRows, Tags};
use span_marker_udfs::pipeline::Pipeline;
use span_marker_udfs::sources::TableSource;
use span_marker_udfs::training::{self, ModelSpec};

const LABELS: [&str; 9] = [
    "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
];

fn pipelines() -> PathBuf {
    common::repo().join("pipelines")
}

#[test]
fn bundled_pipelines_parse_and_validate() {
    let shared = common::repo().join("../shared/data/conll2003");
    let mut checked = 0;
    for entry in std::fs::read_dir(pipelines()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let pipeline = Pipeline::from_toml_str(&text, &path).unwrap();
        let conll = path.ends_with("conll03.toml") || path.ends_with("bundled.toml");
        if conll && !shared.is_dir() {
            eprintln!(
                "skipping the validation of {}: ../shared/data/conll2003 is absent",
                path.display()
            );
            continue;
        }
        if path.ends_with("parquet-example.toml") {
            // Its tables come from `make_tables`; the parse above is the check here.
            assert!(pipeline.sources.train.document_id_column.is_some());
            continue;
        }
        if path.ends_with("conll-tiny.toml") {
            // Its encoder is made by `scripts/make_bench_model.py` (see the file's header).
            assert_eq!(pipeline.model.settings.marker_max_length, 32);
            continue;
        }
        let minilm = if path.ends_with("bundled.toml") {
            match common::minilm() {
                Some(dir) => Some(dir.display().to_string()),
                None => continue,
            }
        } else {
            None
        };
        let data = shared.display().to_string();
        Pipeline::from_file_with_vars(&path, |name| match name {
            "CONLL2003_DIR" => Some(data.clone()),
            "MINILM_DIR" => minilm.clone(),
            "HF_USER" => Some("someone".into()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;
    }
    assert!(checked >= 1);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn malformed_pipelines_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let valid = common::toy_pipeline(dir.path(), "");
    let cases = [
        (
            valid.replace("learning_rate", "learning_rat"),
            "training.learning_rat",
        ),
        (
            valid.replace("learning_rate = 5e-3", "learning_rate = \"fast\""),
            "training.learning_rate",
        ),
        (
            valid.replace("entity_max_length = 6", "entity_max_length = 0"),
            "model.entity_max_length",
        ),
        (
            valid.replace("[sources.train]", "[sources.training]"),
            "sources",
        ),
        (
            valid.replace("examples/data/train.txt", "examples/data/nope.txt"),
            "sources.train.path",
        ),
        (
            valid.replace("format = \"conll\"\n[sources.test]", "[sources.test]"),
            "sources.train.format",
        ),
        (
            valid.replace(
                "tests/fixtures/encoders/tiny-bert",
                "tests/fixtures/encoders/nope",
            ),
            "model.encoder",
        ),
        (format!("{valid}\n[model.extra]"), "model.extra"),
        (
            valid.replace("marker_max_length = 32", "marker_max_length = \"x\""),
            "model.marker_max_length",
        ),
        (
            valid.replace("learning_rate = 5e-3", "learning_rate = = 5e-3"),
            "<syntax>",
        ),
        (
            valid.replace(
                "model_max_length = 64",
                "model_max_length = 64\nlabels = [\"B-PER\"]",
            ),
            "model.labels",
        ),
        (
            valid.replace(
                "per_device_train_batch_size = 16",
                "per_device_train_batch_size = 0",
            ),
            "training",
        ),
        (
            format!("{valid}\n[hub]\nrepo_id = \"no-namespace\""),
            "hub.repo_id",
        ),
        (
            format!("{valid}\n[hub]\nrepo_id = \"me/ner\"\ntoken = \"hf_x\""),
            "hub.token",
        ),
        (
            format!("{valid}\n[hub]\nrepo_id = \"me/ner\"\nstrategy = \"often\""),
            "hub.strategy",
        ),
        (
            format!("{valid}\n[hub]\nrepo_id = \"me/ner\"").replace(
                "learning_rate = 5e-3",
                "learning_rate = 5e-3\nhub_model_id = \"me/other\"",
            ),
            "training.hub_model_id",
        ),
        (
            valid.replace(
                "learning_rate = 5e-3",
                "learning_rate = 5e-3\nhub_token = \"hf_secret\"",
            ),
            "training.hub_token",
        ),
    ];
    for (text, key) in cases {
        let path = write(dir.path(), "p.toml", &text);
        let error = Pipeline::from_file(&path).unwrap_err().to_string();
        assert!(error.contains(&format!("`{key}")), "{key}: {error}");
        assert!(error.contains("p.toml"), "{error}");
    }
    assert!(!dir.path().join("model").exists(), "nothing was written");
}

#[test]
fn the_hub_table_sets_the_publishing_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[hub]\nrepo_id = \"me/toy-ner\"\nprivate = true\nstrategy = \"checkpoint\"\n",
        common::toy_pipeline(dir.path(), "")
    );
    let pipeline = Pipeline::from_toml_str(&text, Path::new("p.toml")).unwrap();
    let args = &pipeline.training;
    assert!(args.push_to_hub && args.hub_private_repo);
    assert_eq!(args.hub_model_id.as_deref(), Some("me/toy-ner"));
    assert_eq!(
        args.hub_strategy,
        span_marker::train::HubStrategy::Checkpoint
    );
    assert_eq!(args.hub_endpoint, None);
    let without =
        Pipeline::from_toml_str(&common::toy_pipeline(dir.path(), ""), Path::new("p.toml"))
            .unwrap();
    assert!(!without.training.push_to_hub);
}

/// The toy test split as Parquet (ids), CSV (space-separated strings) and JSON lines (lists of
/// strings), plus the words and tags they hold.
fn write_tables(dir: &Path) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let sentences = read_conll(common::repo().join("examples/data/test.txt")).unwrap();
    let labels = Labels::new(LABELS).unwrap();
    let mut tokens = ListBuilder::new(StringBuilder::new());
    let mut tags = ListBuilder::new(Int64Builder::new());
    let (mut csv, mut json) = (String::from("tokens,ner_tags\n"), String::new());
    for s in &sentences {
        s.words.iter().for_each(|w| tokens.values().append_value(w));
        tokens.append(true);
        s.tags
            .iter()
            .for_each(|t| tags.values().append_value(labels.tag_id(t).unwrap() as i64));
        tags.append(true);
        csv.push_str(&format!(
            "\"{}\",\"{}\"\n",
            s.words.join(" ").replace('"', "\"\""),
            s.tags.join(" ")
        ));
        json.push_str(&serde_json::json!({"tokens": s.words, "ner_tags": s.tags}).to_string());
        json.push('\n');
    }
    let columns: Vec<ArrayRef> = vec![Arc::new(tokens.finish()), Arc::new(tags.finish())];
    let schema = Arc::new(Schema::new(vec![
        Field::new("tokens", columns[0].data_type().clone(), false),
        Field::new("ner_tags", columns[1].data_type().clone(), false),
    ]));
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(dir.join("t.parquet")).unwrap(),
        schema.clone(),
        None,
    )
    .unwrap();
    writer
        .write(&RecordBatch::try_new(schema, columns).unwrap())
        .unwrap();
    writer.close().unwrap();
    std::fs::write(dir.join("t.csv"), csv).unwrap();
    std::fs::write(dir.join("t.jsonl"), json).unwrap();
    (
        sentences.iter().map(|s| s.words.clone()).collect(),
        sentences.iter().map(|s| s.tags.clone()).collect(),
    )
}

#[tokio::test]
async fn every_source_format_reads_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (words, tags) = write_tables(dir.path());
    let labels = Labels::new(LABELS).unwrap();
    let expected = span_marker::train::NerDataset::from_conll(
        common::repo().join("examples/data/test.txt"),
        &labels,
    )
    .unwrap();
    for file in ["t.parquet", "t.csv", "t.jsonl"] {
        let rows = TableSource::file(dir.path().join(file))
            .read(&SessionContext::new())
            .await
            .unwrap();
        assert_eq!(rows.tokens, words, "{file}");
        match &rows.tags {
            Tags::Names(names) => assert_eq!(names, &tags, "{file}"),
            Tags::Ids(_) => assert_eq!(file, "t.parquet"),
        }
        assert_eq!(rows.to_dataset(&labels).unwrap(), expected, "{file}");
    }
    let mut query = TableSource::file(dir.path().join("t.parquet"));
    query.query = Some("SELECT * FROM data WHERE cardinality(tokens) > 5".into());
    let rows = query.read(&SessionContext::new()).await.unwrap();
    assert_eq!(
        rows.tokens,
        words
            .iter()
            .filter(|w| w.len() > 5)
            .cloned()
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_sources_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path());
    let ctx = SessionContext::new();
    let mut missing_column = TableSource::file(dir.path().join("t.parquet"));
    missing_column.tokens_column = "words".into();
    let error = missing_column.read(&ctx).await.unwrap_err().to_string();
    assert!(
        error.contains("`words`") && error.contains("tokens"),
        "{error}"
    );
    let mut wrong_type = TableSource::file(dir.path().join("t.parquet"));
    wrong_type.tokens_column = "ner_tags".into();
    let error = wrong_type.read(&ctx).await.unwrap_err().to_string();
    assert!(error.contains("ner_tags"), "{error}");
    // Integer tags without a label list, unknown string tags.
    let rows = TableSource::file(dir.path().join("t.parquet"))
        .read(&ctx)
        .await
        .unwrap();
    let error = span_marker_udfs::dataset::resolve_labels(None, &[&rows])
        .unwrap_err()
        .to_string();
    assert!(error.contains("label list"), "{error}");
    let rows = TableSource::file(dir.path().join("t.jsonl"))
        .read(&ctx)
        .await
        .unwrap();
    let error = rows
        .to_dataset(&Labels::new(["O", "B-PER", "I-PER"]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("row") && error.contains("unknown tag"),
        "{error}"
    );
}

#[tokio::test]
async fn document_columns_give_document_positions() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"tokens": ["Paris", "wins"], "ner_tags": ["B-LOC", "O"], "doc": "a", "position": 1}"#,
        r#"{"tokens": ["Rome"], "ner_tags": ["B-LOC"], "doc": "a", "position": 0}"#,
        r#"{"tokens": ["Oslo"], "ner_tags": ["B-LOC"], "doc": null, "position": 0}"#,
    ];
    std::fs::write(dir.path().join("d.jsonl"), lines[..2].join("\n")).unwrap();
    let mut source = TableSource::file(dir.path().join("d.jsonl"));
    source.document_id_column = Some("doc".into());
    source.sentence_id_column = Some("position".into());
    let rows = source.read(&SessionContext::new()).await.unwrap();
    let positions = rows.documents.as_ref().unwrap();
    assert_eq!(
        positions[0],
        span_marker::context::DocumentPosition::new("a", 1)
    );
    assert_eq!(
        positions[1],
        span_marker::context::DocumentPosition::new("a", 0)
    );
    let labels = Labels::new(["O", "B-LOC", "I-LOC"]).unwrap();
    assert!(rows.to_dataset(&labels).unwrap().examples[0]
        .document
        .is_some());

    std::fs::write(dir.path().join("d.jsonl"), lines.join("\n")).unwrap();
    let error = source
        .read(&SessionContext::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("row 2") && error.contains("null"), "{error}");
    source.sentence_id_column = None;
    let error = source
        .read(&SessionContext::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("both"), "{error}");
}

/// A SpanMarker model keeps its own label list: data tagged against the same tags in another
/// order trains it exactly as data in its order does (the tags are mapped by name, never
/// taken as ids into the model's list).
#[test]
fn fine_tuning_a_span_marker_model_maps_the_tags_by_name() {
    let sentences = read_conll(common::repo().join("examples/data/train.txt")).unwrap();
    let rows = AnnotatedRows {
        source: "toy".into(),
        tokens: sentences.iter().take(32).map(|s| s.words.clone()).collect(),
        tags: Tags::Names(sentences.iter().take(32).map(|s| s.tags.clone()).collect()),
        documents: None,
        labels: None,
    };
    let model = common::conll_tiny().display().to_string();
    let run = |labels: Option<Vec<String>>, dir: &Path| {
        let spec = ModelSpec {
            encoder: model.clone(),
            labels,
            settings: Default::default(),
        };
        let args = TrainingArguments {
            output_dir: dir.to_owned(),
            max_steps: Some(3),
            per_device_train_batch_size: 8,
            learning_rate: 1e-3,
            report_to: "none".into(),
            ..Default::default()
        };
        training::run(spec, args, rows.clone(), Some(rows.clone()), None, None).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    // Labels inferred from the strings: O, B-LOC, I-LOC, ... (not the model's order).
    let inferred = run(None, &dir.path().join("inferred"));
    let ordered = run(
        Some(LABELS.map(String::from).to_vec()),
        &dir.path().join("ordered"),
    );
    assert_eq!(
        inferred.metrics["train_loss"],
        ordered.metrics["train_loss"]
    );
    assert_eq!(
        inferred.metrics["eval_overall_f1"],
        ordered.metrics["eval_overall_f1"]
    );
}
