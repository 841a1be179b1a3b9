//! Polars expressions on lazy frames: the SQL functions' schemas, the direct API's entities,
//! nulls, dtype errors, and training from a `LazyFrame`.

#[path = "../../tests/common/mod.rs"]
mod common;

use polars::prelude::*;
use span_marker::spans::candidate_spans;
use span_marker::{PredictOptions, SentenceInput, SpanMarkerModel};
use span_marker_udfs::polars_expr::{self, SpanMarkerExt, TrainColumns};
use span_marker_udfs::training::ModelSpec;
use span_marker_udfs::SharedModel;

fn sentences() -> Vec<Vec<&'static str>> {
    vec![
        vec!["Angela", "Merkel", "visited", "Paris", "."],
        vec!["Germany", "and", "France", "agreed", "in", "Brussels", "."],
        vec![],
    ]
}

/// A frame with a `tokens` list column (plus a null row) and a `text` column.
fn frame() -> LazyFrame {
    let mut rows: Vec<Option<Series>> = sentences()
        .into_iter()
        .map(|w| Some(Series::new("".into(), w)))
        .collect();
    rows.push(None);
    let tokens: ListChunked = rows.into_iter().collect();
    let texts: Vec<Option<String>> = sentences()
        .iter()
        .map(|w| Some(w.join(" ")))
        .chain([None])
        .collect();
    DataFrame::new(
        4,
        vec![
            tokens.into_series().with_name("tokens".into()).into(),
            Column::new("text".into(), texts),
        ],
    )
    .unwrap()
    .lazy()
}

fn struct_rows(column: &Column, fields: &[&str]) -> Vec<Option<Vec<Vec<AnyValue<'static>>>>> {
    column
        .list()
        .unwrap()
        .amortized_iter()
        .map(|row| {
            row.map(|s| {
                let s = s.as_ref().struct_().unwrap();
                (0..s.len())
                    .map(|i| {
                        fields
                            .iter()
                            .map(|f| s.field_by_name(f).unwrap().get(i).unwrap().into_static())
                            .collect()
                    })
                    .collect()
            })
        })
        .collect()
}

#[test]
fn candidates_in_a_lazy_pipeline() {
    let out = frame()
        .select([col("tokens").span_marker().candidates(3).alias("spans")])
        .collect()
        .unwrap();
    let spans = out.column("spans").unwrap();
    assert_eq!(
        spans.dtype(),
        &DataType::List(Box::new(DataType::Struct(vec![
            Field::new("start".into(), DataType::Int64),
            Field::new("end".into(), DataType::Int64)
        ])))
    );
    let rows = struct_rows(spans, &["start", "end"]);
    for (row, words) in sentences().iter().enumerate() {
        let want: Vec<Vec<AnyValue>> = candidate_spans(words.len(), 3)
            .map(|s| {
                vec![
                    AnyValue::Int64(s.start as i64),
                    AnyValue::Int64(s.end as i64),
                ]
            })
            .collect();
        assert_eq!(rows[row].as_ref(), Some(&want), "row {row}");
    }
    assert_eq!(rows[3], None, "null in, null out");
}

#[test]
fn predict_and_predict_text_agree_with_the_direct_api() {
    let model = SharedModel::load("bundled", "cpu").unwrap();
    let out = frame()
        .with_columns([
            col("tokens")
                .span_marker()
                .predict(&model)
                .alias("entities"),
            col("text")
                .span_marker()
                .predict_text(&model)
                .alias("text_entities"),
        ])
        .filter(col("tokens").is_not_null().or(col("text").is_null()))
        .collect()
        .unwrap();
    let direct = SpanMarkerModel::bundled().unwrap();
    let inputs: Vec<SentenceInput<'_>> = sentences()
        .into_iter()
        .map(|w| SentenceInput::Words(Box::leak(w.into_boxed_slice())))
        .collect();
    let expected = direct.predict(&inputs, &PredictOptions::default()).unwrap();
    let rows = struct_rows(
        out.column("entities").unwrap(),
        &["start", "end", "label", "score"],
    );
    let text_rows = struct_rows(
        out.column("text_entities").unwrap(),
        &["start", "end", "label", "text"],
    );
    assert!(expected.iter().map(Vec::len).sum::<usize>() >= 3);
    for (row, entities) in expected.iter().enumerate() {
        let want: Vec<Vec<AnyValue>> = entities
            .iter()
            .map(|e| {
                vec![
                    AnyValue::Int64(e.word_start as i64),
                    AnyValue::Int64(e.word_end as i64),
                    AnyValue::StringOwned(e.label.clone().into()),
                    AnyValue::Float32(e.score),
                ]
            })
            .collect();
        assert_eq!(rows[row].as_ref(), Some(&want), "row {row}");
        // Text split by the pre-tokenizer gives the same words here (space-separated).
        let text_labels: Vec<AnyValue> = text_rows[row]
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e[2].clone())
            .collect();
        let want_labels: Vec<AnyValue> = want.iter().map(|e| e[2].clone()).collect();
        assert_eq!(text_labels, want_labels, "row {row}");
    }
    assert_eq!(rows[3], None);
    assert_eq!(text_rows[3], None);
}

#[test]
fn wrong_dtypes_are_clear_errors() {
    let model = SharedModel::load("bundled", "cpu").unwrap();
    let error = frame()
        .select([col("text").span_marker().predict(&model)])
        .collect()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("list of words") && error.contains("predict_text"),
        "{error}"
    );
    let error = frame()
        .select([col("tokens").span_marker().predict_text(&model)])
        .collect()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("must be String") && error.contains("use predict"),
        "{error}"
    );
    let error = frame()
        .select([col("tokens").span_marker().candidates(0)])
        .collect()
        .unwrap_err()
        .to_string();
    assert!(error.contains("entity_max_length"), "{error}");
}

#[test]
fn training_from_a_lazy_frame() {
    let data =
        span_marker::train::read_conll(common::repo().join("examples/data/train.txt")).unwrap();
    let lists = |f: &dyn Fn(&span_marker::train::ConllSentence) -> &Vec<String>| -> Series {
        let rows: ListChunked = data
            .iter()
            .take(64)
            .map(|s| Some(Series::new("".into(), f(s).clone())))
            .collect();
        rows.into_series()
    };
    let frame = DataFrame::new(
        64,
        vec![
            lists(&|s| &s.words).with_name("tokens".into()).into(),
            lists(&|s| &s.tags).with_name("ner_tags".into()).into(),
        ],
    )
    .unwrap()
    .lazy();
    let dir = tempfile::tempdir().unwrap();
    let spec = ModelSpec {
        encoder: common::repo()
            .join("tests/fixtures/encoders/tiny-bert")
            .display()
            .to_string(),
        labels: None,
        settings: span_marker::ModelSettings {
            model_max_length: Some(64),
            marker_max_length: 32,
            entity_max_length: 4,
            ..Default::default()
        },
    };
    let args = span_marker::train::TrainingArguments {
        output_dir: dir.path().to_path_buf(),
        max_steps: Some(3),
        per_device_train_batch_size: 8,
        ..Default::default()
    };
    let report = polars_expr::train(
        &spec,
        args,
        &TrainColumns::default(),
        frame.clone(),
        Some(frame.clone().limit(8)),
        None,
    )
    .unwrap();
    assert!(
        report.metrics.contains_key("eval_overall_f1"),
        "{:?}",
        report.metrics
    );
    assert!(dir.path().join("model.safetensors").is_file());

    let columns = TrainColumns {
        tags: "labels".into(),
        ..Default::default()
    };
    let error = polars_expr::annotated_rows(frame, &columns, "train")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`labels`") && error.contains("ner_tags"),
        "{error}"
    );
}
