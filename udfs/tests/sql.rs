//! The SQL functions: golden tables over every string layout, agreement with the direct API,
//! nulls, settings, plan-time and execution errors, multi-partition tables, and training.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, LargeStringArray, ListArray, RecordBatch, StringArray,
    StringViewArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::assert_batches_eq;
use datafusion::datasource::MemTable;
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::SessionContext;
use span_marker::{PredictOptions, SentenceInput, SpanMarkerModel};
use span_marker_udfs::sql::register_all;

/// Runs a query to completion.
async fn collect(ctx: &SessionContext, query: &str) -> Vec<RecordBatch> {
    ctx.sql(query).await.unwrap().collect().await.unwrap()
}

/// The error of a query that plans but fails when it runs.
async fn execution_error(ctx: &SessionContext, query: &str) -> String {
    ctx.sql(query)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string()
}

fn sentences() -> Vec<Vec<&'static str>> {
    vec![
        vec!["Angela", "Merkel", "visited", "Paris", "."],
        vec!["Germany", "and", "France", "agreed", "in", "Brussels", "."],
        vec![],
        vec!["The", "United", "Nations", "met", "in", "New", "York", "."],
    ]
}

/// A `tokens` column of `List<values>`, with a NULL row after the given sentences.
fn tokens_column(rows: &[Vec<&str>], values: impl Fn(Vec<&str>) -> ArrayRef) -> ArrayRef {
    let flat: Vec<&str> = rows.iter().flatten().copied().collect();
    let values = values(flat);
    let mut lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    lengths.push(0);
    let mut valid = vec![true; rows.len()];
    valid.push(false);
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::from_lengths(lengths),
        values,
        Some(valid.into()),
    ))
}

/// Builds a string array of one layout from values.
type Layout = Box<dyn Fn(Vec<&str>) -> ArrayRef>;

/// One entity as (start, end, label, score).
type EntityRow = (i64, i64, String, f32);

fn layouts() -> Vec<(&'static str, Layout)> {
    vec![
        (
            "Utf8",
            Box::new(|v| Arc::new(StringArray::from(v)) as ArrayRef),
        ),
        (
            "LargeUtf8",
            Box::new(|v| Arc::new(LargeStringArray::from(v)) as ArrayRef),
        ),
        (
            "Utf8View",
            Box::new(|v| Arc::new(StringViewArray::from(v)) as ArrayRef),
        ),
    ]
}

async fn context_with(tokens: ArrayRef) -> SessionContext {
    let ctx = SessionContext::new();
    register_all(&ctx);
    ctx.sql("SET span_marker.model = 'bundled'").await.unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "tokens",
        tokens.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![tokens]).unwrap();
    ctx.register_batch("corpus", batch).unwrap();
    ctx
}

#[tokio::test]
async fn candidates_over_every_string_layout() {
    for (name, layout) in layouts() {
        let rows = vec![vec!["Paris", "is", "nice"], vec!["Hi"]];
        let ctx = context_with(tokens_column(&rows, layout)).await;
        let batches = collect(
            &ctx,
            "SELECT span_marker_candidates(tokens, 2) AS spans FROM corpus",
        )
        .await;
        assert_batches_eq!(
            [
                "+------------------------------------------------------------------------------------------------------+",
                "| spans                                                                                                |",
                "+------------------------------------------------------------------------------------------------------+",
                "| [{start: 0, end: 1}, {start: 0, end: 2}, {start: 1, end: 2}, {start: 1, end: 3}, {start: 2, end: 3}] |",
                "| [{start: 0, end: 1}]                                                                                 |",
                "|                                                                                                      |",
                "+------------------------------------------------------------------------------------------------------+",
            ],
            &batches
        );
        // The default longest span comes from the settings.
        ctx.sql("SET span_marker.entity_max_length = 1")
            .await
            .unwrap();
        let batches = collect(
            &ctx,
            "SELECT span_marker_candidates(tokens) AS spans FROM corpus",
        )
        .await;
        let spans = batches[0].column(0).as_list::<i32>();
        assert_eq!(spans.value_length(0), 3, "{name}");
    }
}

#[tokio::test]
async fn predict_golden_table() {
    let ctx = context_with(tokens_column(
        &[vec!["Germany", "and", "France", "agreed", "."]],
        layouts().remove(0).1,
    ))
    .await;
    // Scores rounded: their last bits depend on the CPU's matrix kernels.
    let batches = collect(
        &ctx,
        "SELECT e['start'] AS start, e['end'] AS end, e['label'] AS label, round(e['score'], 3) AS score \
         FROM (SELECT unnest(span_marker_predict(tokens)) AS e FROM corpus)",
    )
    .await;
    assert_batches_eq!(
        [
            "+-------+-----+-------+-------+",
            "| start | end | label | score |",
            "+-------+-----+-------+-------+",
            "| 0     | 1   | LOC   | 0.995 |",
            "| 2     | 3   | LOC   | 0.997 |",
            "+-------+-----+-------+-------+",
        ],
        &batches
    );
}

/// Entities as (start, end, label, score) per row from an entity column.
fn entity_rows(column: &dyn Array) -> Vec<Option<Vec<EntityRow>>> {
    let list = column.as_list::<i32>();
    (0..list.len())
        .map(|row| {
            list.is_valid(row).then(|| {
                let value = list.value(row);
                let s = value.as_struct();
                let int = |n: &str| {
                    s.column_by_name(n)
                        .unwrap()
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .clone()
                };
                let (starts, ends) = (int("start"), int("end"));
                let labels = s
                    .column_by_name("label")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                let scores = s
                    .column_by_name("score")
                    .unwrap()
                    .as_primitive::<datafusion::arrow::datatypes::Float32Type>()
                    .clone();
                (0..s.len())
                    .map(|i| {
                        (
                            starts.value(i),
                            ends.value(i),
                            labels.value(i).to_owned(),
                            scores.value(i),
                        )
                    })
                    .collect()
            })
        })
        .collect()
}

#[tokio::test]
async fn predict_agrees_with_the_direct_api_on_every_layout_with_nulls() {
    let rows = sentences();
    let model = SpanMarkerModel::bundled().unwrap();
    let inputs: Vec<SentenceInput<'_>> = rows.iter().map(|w| SentenceInput::Words(w)).collect();
    let expected = model.predict(&inputs, &PredictOptions::default()).unwrap();
    assert!(
        expected.iter().map(Vec::len).sum::<usize>() >= 3,
        "the fixture finds entities"
    );
    for (name, layout) in layouts() {
        let ctx = context_with(tokens_column(&rows, layout)).await;
        let batches = collect(
            &ctx,
            "SELECT span_marker_predict(tokens) AS entities FROM corpus",
        )
        .await;
        let got = entity_rows(batches[0].column(0).as_ref());
        assert_eq!(got.len(), rows.len() + 1, "{name}");
        assert_eq!(got[rows.len()], None, "{name}: NULL in, NULL out");
        for (row, entities) in expected.iter().enumerate() {
            let want: Vec<EntityRow> = entities
                .iter()
                .map(|e| {
                    (
                        e.word_start as i64,
                        e.word_end as i64,
                        e.label.clone(),
                        e.score,
                    )
                })
                .collect();
            assert_eq!(got[row].as_ref(), Some(&want), "{name} row {row}");
        }
    }
}

#[tokio::test]
async fn predict_text_agrees_with_the_direct_api() {
    let texts = [
        "Angela Merkel visited Paris.",
        "Germany and France agreed in Brussels.",
    ];
    let model = SpanMarkerModel::bundled().unwrap();
    let inputs: Vec<SentenceInput<'_>> = texts.iter().map(|t| SentenceInput::Text(t)).collect();
    let expected = model.predict(&inputs, &PredictOptions::default()).unwrap();
    for cast in ["", "::varchar", "::text"] {
        let ctx = SessionContext::new();
        register_all(&ctx);
        ctx.sql("SET span_marker.model = 'bundled'").await.unwrap();
        let values: Vec<String> = texts.iter().map(|t| format!("('{t}')")).collect();
        let query = format!(
            "SELECT span_marker_predict_text(arrow_cast(column1, 'Utf8View'){cast}) AS e FROM (VALUES {}, (NULL))",
            values.join(", ")
        );
        let batches = collect(&ctx, &query).await;
        let list = batches[0].column(0).as_list::<i32>();
        assert!(list.is_null(texts.len()));
        for (row, entities) in expected.iter().enumerate() {
            let value = list.value(row);
            let s = value.as_struct();
            let text = s.column_by_name("text").unwrap().as_string::<i32>();
            let char_start = s
                .column_by_name("char_start")
                .unwrap()
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let got: Vec<(String, i64)> = (0..s.len())
                .map(|i| (text.value(i).to_owned(), char_start.value(i)))
                .collect();
            let want: Vec<(String, i64)> = entities
                .iter()
                .map(|e| (e.text.clone(), e.char_start.unwrap() as i64))
                .collect();
            assert_eq!(got, want, "row {row}");
        }
    }
}

#[tokio::test]
async fn settings_change_the_output() {
    let ctx = context_with(tokens_column(&sentences(), layouts().remove(0).1)).await;
    let count = |batches: &[RecordBatch]| -> usize {
        entity_rows(batches[0].column(0).as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.len())
            .sum()
    };
    let query = "SELECT span_marker_predict(tokens) FROM corpus";
    let all = count(&collect(&ctx, query).await);
    ctx.sql("SET span_marker.threshold = 0.999").await.unwrap();
    let confident = count(&collect(&ctx, query).await);
    assert!(confident < all, "{confident} < {all}");
    ctx.sql("SET span_marker.threshold = 0").await.unwrap();
    ctx.sql("SET span_marker.batch_size = 1").await.unwrap();
    assert_eq!(count(&collect(&ctx, query).await), all);
    ctx.sql("SET span_marker.batch_size = 0").await.unwrap();
    let error = execution_error(&ctx, query).await;
    assert!(error.contains("batch_size"), "{error}");
    ctx.sql("SET span_marker.batch_size = 32").await.unwrap();
    // float16 needs the model on a GPU (here it is on the CPU); an unknown precision names the
    // setting.
    ctx.sql("SET span_marker.precision = 'fp16'").await.unwrap();
    let error = execution_error(&ctx, query).await;
    assert!(error.contains("fp16") && error.contains("CUDA"), "{error}");
    ctx.sql("SET span_marker.precision = 'int4'").await.unwrap();
    let error = execution_error(&ctx, query).await;
    assert!(
        error.contains("span_marker.precision") && error.contains("int4"),
        "{error}"
    );
    // A value that does not parse is refused at `SET`, naming the setting.
    let error = ctx
        .sql("SET span_marker.batch_size = 'many'")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("'many'") && error.contains("`span_marker.batch_size`"),
        "{error}"
    );
    ctx.sql("SET span_marker.precision = 'fp32'").await.unwrap();
    ctx.sql("SET span_marker.batch_size = 99999999999")
        .await
        .unwrap();
    let error = execution_error(&ctx, query).await;
    assert!(
        error.contains("span_marker.batch_size") && error.contains("65536"),
        "{error}"
    );
}

#[tokio::test]
async fn a_row_that_cannot_be_annotated_is_null_unless_strict() {
    // A null word inside a list, and a word longer than the whole model input.
    // Punctuation splits into one token per character: 200 tokens for a 64-token model.
    let long_word = ".".repeat(200);
    let words = vec![
        Some("Paris"),
        None,
        Some("Germany"),
        Some(long_word.as_str()),
        Some("France"),
    ];
    let values: ArrayRef = Arc::new(StringArray::from(words));
    let field = Arc::new(Field::new_list_field(DataType::Utf8, true));
    let tokens: ArrayRef = Arc::new(ListArray::new(
        field,
        OffsetBuffer::from_lengths([2, 1, 1, 1]),
        values,
        None,
    ));
    let ctx = context_with(tokens).await;
    let query = "SELECT span_marker_predict(tokens) FROM corpus";
    let batches = collect(&ctx, query).await;
    let rows = entity_rows(batches[0].column(0).as_ref());
    assert_eq!(rows[0], None, "a null word");
    assert!(
        rows[1].is_some() && rows[3].is_some(),
        "the other rows keep their entities"
    );
    assert_eq!(rows[2], None, "a word longer than the model input");
    ctx.sql("SET span_marker.strict = true").await.unwrap();
    let error = execution_error(&ctx, query).await;
    assert!(error.contains("row 0") && error.contains("null"), "{error}");
}

#[tokio::test]
async fn type_and_arity_errors_come_at_plan_time() {
    let ctx = context_with(tokens_column(&sentences(), layouts().remove(0).1)).await;
    for (query, expected) in [
        (
            "SELECT span_marker_predict('Paris')",
            "span_marker_predict_text",
        ),
        (
            "SELECT span_marker_predict_text(tokens) FROM corpus",
            "span_marker_predict",
        ),
        ("SELECT span_marker_predict(1)", "list of strings"),
        (
            "SELECT span_marker_candidates(tokens, 'x') FROM corpus",
            "entity_max_length",
        ),
        ("SELECT span_marker_candidates()", "takes 1 or 2 argument"),
        (
            "SELECT span_marker_predict(tokens, tokens) FROM corpus",
            "takes 1 argument",
        ),
    ] {
        // `ctx.sql` plans the query: these fail before anything executes.
        let error = ctx.sql(query).await.unwrap_err().to_string();
        assert!(error.contains(expected), "{query}: {error}");
    }
}

#[tokio::test]
async fn model_errors_say_what_to_set() {
    let ctx = SessionContext::new();
    register_all(&ctx);
    let query = "SELECT span_marker_predict(['Paris'])";
    let error = execution_error(&ctx, query).await;
    assert!(error.contains("SET span_marker.model"), "{error}");
    ctx.sql("SET span_marker.model = '/no/such/model'")
        .await
        .unwrap();
    let error = execution_error(&ctx, query).await;
    assert!(error.contains("/no/such/model"), "{error}");
    ctx.sql("SET span_marker.model = 'bundled'").await.unwrap();
    ctx.sql("SET span_marker.device = 'cuda:7'").await.unwrap();
    let error = execution_error(&ctx, query).await;
    assert!(error.to_lowercase().contains("cuda"), "{error}");
}

#[tokio::test]
async fn partitions_share_one_model_and_give_the_single_partition_result() {
    let rows = sentences();
    let tokens = tokens_column(&rows, layouts().remove(0).1);
    let schema = Arc::new(Schema::new(vec![Field::new(
        "tokens",
        tokens.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![tokens]).unwrap();
    let (first, second) = (batch.slice(0, 2), batch.slice(2, batch.num_rows() - 2));
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(2),
    );
    register_all(&ctx);
    ctx.sql("SET span_marker.model = 'bundled'").await.unwrap();
    let table = MemTable::try_new(schema, vec![vec![first], vec![second]]).unwrap();
    ctx.register_table("corpus", Arc::new(table)).unwrap();
    let plan = collect(
        &ctx,
        "EXPLAIN SELECT span_marker_predict(tokens) FROM corpus",
    )
    .await;
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(plan.contains("partitions=2"), "{plan}");
    let batches = collect(&ctx, "SELECT span_marker_predict(tokens) FROM corpus").await;
    let got: Vec<_> = batches
        .iter()
        .flat_map(|b| entity_rows(b.column(0).as_ref()))
        .collect();
    let single = context_with(tokens_column(&rows, layouts().remove(0).1)).await;
    let want = collect(&single, "SELECT span_marker_predict(tokens) FROM corpus").await;
    let want = entity_rows(want[0].column(0).as_ref());
    // The same entities; scores agree up to the rounding of differently sized batches.
    let without_scores = |rows: &[Option<Vec<EntityRow>>]| -> Vec<Option<Vec<(i64, i64, String)>>> {
        rows.iter()
            .map(|row| {
                row.as_ref()
                    .map(|r| r.iter().map(|(s, e, l, _)| (*s, *e, l.clone())).collect())
            })
            .collect()
    };
    assert_eq!(without_scores(&got), without_scores(&want));
    let scores = |rows: &[Option<Vec<EntityRow>>]| -> Vec<f32> {
        rows.iter().flatten().flatten().map(|e| e.3).collect()
    };
    for (a, b) in scores(&got).into_iter().zip(scores(&want)) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[tokio::test]
async fn train_table_function_trains_and_returns_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data =
        span_marker::train::read_conll(common::repo().join("examples/data/train.txt")).unwrap();
    let rows: Vec<Vec<&str>> = data
        .iter()
        .take(64)
        .map(|s| s.words.iter().map(String::as_str).collect())
        .collect();
    let tags: Vec<Vec<&str>> = data
        .iter()
        .take(64)
        .map(|s| s.tags.iter().map(String::as_str).collect())
        .collect();
    let string_lists = |rows: &[Vec<&str>]| -> ArrayRef {
        let values: ArrayRef = Arc::new(StringArray::from(
            rows.iter().flatten().copied().collect::<Vec<_>>(),
        ));
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            OffsetBuffer::from_lengths(rows.iter().map(Vec::len)),
            values,
            None,
        ))
    };
    let (tokens, tags) = (string_lists(&rows), string_lists(&tags));
    let schema = Arc::new(Schema::new(vec![
        Field::new("tokens", tokens.data_type().clone(), false),
        Field::new("ner_tags", tags.data_type().clone(), false),
    ]));
    let ctx = SessionContext::new();
    register_all(&ctx);
    ctx.register_batch(
        "train",
        RecordBatch::try_new(schema, vec![tokens, tags]).unwrap(),
    )
    .unwrap();
    let encoder = common::repo().join("tests/fixtures/encoders/tiny-bert");
    let options = serde_json::json!({
        "model": {"encoder": encoder, "model_max_length": 64, "marker_max_length": 32, "entity_max_length": 4},
        "training": {"output_dir": dir.path(), "max_steps": 4, "per_device_train_batch_size": 8},
        "eval_query": "SELECT tokens, ner_tags FROM train LIMIT 16"
    });
    let query = format!(
        "SELECT metric, value FROM span_marker_train('SELECT tokens, ner_tags FROM train', '{options}') ORDER BY metric"
    );
    let df = ctx.sql(&query).await.unwrap();
    assert!(
        !dir.path().join("model.safetensors").exists(),
        "planning does not train"
    );
    let batches = df.collect().await.unwrap();
    let names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for metric in ["train_loss", "eval_overall_f1", "eval_loss"] {
        assert!(names.iter().any(|n| n == metric), "{metric} in {names:?}");
    }
    let model = SpanMarkerModel::from_pretrained(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(model.labels().original().len(), 9);

    for (options, expected) in [
        ("{\"model\": {}}", "missing field `encoder`"),
        (
            "{\"model\": {\"encoder\": \"x\"}, \"training\": {\"learning_rat\": 1}}",
            "learning_rat",
        ),
        ("not json", "options"),
    ] {
        let query = format!("SELECT * FROM span_marker_train('SELECT * FROM train', '{options}')");
        let error = ctx.sql(&query).await.unwrap_err().to_string();
        assert!(error.contains(expected), "{options}: {error}");
    }
}

/// Each function's documentation holds a SQL example and its printed result: running the
/// example prints exactly that.
#[tokio::test]
async fn documented_examples_print_what_they_say() {
    let ctx = SessionContext::new();
    register_all(&ctx);
    for name in [
        "span_marker_candidates",
        "span_marker_predict",
        "span_marker_predict_text",
    ] {
        let udf = ctx.udf(name).unwrap();
        let docs = udf.documentation().expect("documented");
        let example = docs.sql_example.as_deref().expect("an SQL example");
        let lines: Vec<&str> = example.lines().filter(|l| !l.starts_with("```")).collect();
        let statements: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("> ")).collect();
        let expected: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !l.starts_with("> "))
            .collect();
        let mut printed = String::new();
        for statement in statements {
            let batches = ctx
                .sql(statement.trim_end_matches(';'))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            if !batches.is_empty() {
                printed = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string();
            }
        }
        let printed: Vec<String> = printed.lines().map(layout_free).collect();
        let expected: Vec<String> = expected.into_iter().map(layout_free).collect();
        assert_eq!(printed, expected, "{name}");
    }
}

/// A printed table line with its floats rounded to 4 decimals and runs of spaces and dashes
/// collapsed: the last bits of a score depend on the CPU's matrix kernels (and the column
/// widths on how many digits a score prints with), not on what the functions return.
fn layout_free(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut number = String::from(c);
            while let Some(&next) = chars.peek() {
                if !(next.is_ascii_digit() || next == '.') {
                    break;
                }
                number.push(next);
                chars.next();
            }
            match number.parse::<f64>() {
                Ok(value) if number.contains('.') => out.push_str(&format!("{value:.4}")),
                _ => out.push_str(&number),
            }
        } else if (c == ' ' || c == '-') && out.ends_with(c) {
            continue;
        } else {
            out.push(c);
        }
    }
    out
}
