//! `span_marker_train(query, options)`: training as a table function.

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use serde::Deserialize;
use serde_json::{Map, Value};
use span_marker::train::TrainingArguments;

use crate::sources::TableSource;
use crate::training::{self, ModelSpec, TrainReport};

/// `SELECT * FROM span_marker_train('<query>', '<options>')` trains a model on the rows of
/// `query` (a `tokens` list column and a `ner_tags` column of ids or tag strings) and returns
/// one row per metric: `metric` (Utf8), `value` (Float64). The model is saved to
/// `training.output_dir`. Training runs when the query executes, not when it is planned.
///
/// `options` is JSON:
/// ```json
/// {"model": {"encoder": "<encoder dir or hub id>", "labels": ["O", "B-PER", "I-PER"]},
///  "training": {"output_dir": "models/sql", "num_train_epochs": 1},
///  "eval_query": "SELECT tokens, ner_tags FROM dev",
///  "tokens_column": "tokens", "tags_column": "ner_tags"}
/// ```
/// `model` takes the keys of `[model]` in a pipeline file and `training` the Hugging Face
/// `TrainingArguments` names.
#[derive(Debug, Default)]
pub struct SpanMarkerTrain;

/// The options argument of `span_marker_train`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainOptions {
    model: ModelSpec,
    #[serde(default)]
    training: TrainingArguments,
    #[serde(default)]
    eval_query: Option<String>,
    #[serde(default)]
    tokens_column: Option<String>,
    #[serde(default)]
    tags_column: Option<String>,
}

impl TrainOptions {
    fn source(&self, query: &str) -> TableSource {
        let mut source = TableSource::query(query);
        if let Some(tokens) = &self.tokens_column {
            source.tokens_column = tokens.clone();
        }
        if let Some(tags) = &self.tags_column {
            source.tags_column = tags.clone();
        }
        source
    }
}

/// Argument `index` of table function `function`, a string literal.
pub(super) fn string_argument(
    exprs: &[Expr],
    index: usize,
    name: &str,
    function: &str,
) -> Result<String> {
    match exprs.get(index) {
        Some(Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        )) => Ok(s.clone()),
        Some(other) => plan_err!("{function}: `{name}` must be a string literal, got {other}"),
        None => plan_err!("{function}: `{name}` is missing"),
    }
}

impl TableFunctionImpl for SpanMarkerTrain {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 2 {
            return plan_err!(
                "span_marker_train(query, options) takes 2 arguments, got {}",
                exprs.len()
            );
        }
        let query = string_argument(exprs, 0, "query", "span_marker_train")?;
        let options_text = string_argument(exprs, 1, "options", "span_marker_train")?;
        let deserializer = &mut serde_json::Deserializer::from_str(&options_text);
        let options: TrainOptions =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                DataFusionError::Plan(format!(
                    "span_marker_train: options: `{}`: {}",
                    e.path(),
                    e.inner()
                ))
            })?;
        options.training.validate().map_err(|e| {
            DataFusionError::Plan(format!("span_marker_train: options: training: {e}"))
        })?;
        let Some(state) = args.session().as_any().downcast_ref::<SessionState>() else {
            return plan_err!("span_marker_train needs a DataFusion SessionState");
        };
        let run = TrainRun {
            schema: metrics_schema(),
            state: state.clone(),
            query,
            options,
        };
        let table = StreamingTable::try_new(run.schema.clone(), vec![Arc::new(run)])?;
        Ok(Arc::new(table))
    }
}

fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]))
}

/// The training run behind one `span_marker_train` call.
struct TrainRun {
    schema: SchemaRef,
    state: SessionState,
    query: String,
    options: TrainOptions,
}

impl std::fmt::Debug for TrainRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainRun")
            .field("query", &self.query)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for TrainRun {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let ctx = SessionContext::new_with_state(self.state.clone());
        let (query, options, schema) = (
            self.query.clone(),
            self.options.clone(),
            self.schema.clone(),
        );
        let batch = async move {
            let train = options.source(&query).read(&ctx).await?;
            let eval = match &options.eval_query {
                Some(q) => Some(options.source(q).read(&ctx).await?),
                None => None,
            };
            let report = tokio::task::spawn_blocking(move || {
                training::run(options.model, options.training, train, eval, None, None)
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
            metrics_batch(&schema, &report)
        };
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(batch),
        ))
    }
}

/// One row per numeric metric; nested per-label metrics are flattened (`eval_PER_f1`).
fn metrics_batch(schema: &SchemaRef, report: &TrainReport) -> Result<RecordBatch> {
    fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, f64)>) {
        for (key, value) in map {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}_{key}")
            };
            match value {
                Value::Number(n) => out.extend(n.as_f64().map(|v| (name, v))),
                Value::Object(inner) => flatten(&name, inner, out),
                _ => {}
            }
        }
    }
    let mut rows = Vec::new();
    flatten("", &report.metrics, &mut rows);
    let names = StringArray::from_iter_values(rows.iter().map(|(n, _)| n.as_str()));
    let values = Float64Array::from_iter_values(rows.iter().map(|(_, v)| *v));
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(names), Arc::new(values)],
    )?)
}
