//! Training from Python: the rows of a Polars frame (the Python side turns lazy frames and
//! DataFusion DataFrames into one), trained as the engine's pipelines and SQL train.

use polars::prelude::IntoLazy;
use pyo3::prelude::*;
use pyo3_polars::PyDataFrame;
use serde::de::DeserializeOwned;
use span_marker_udfs::polars_expr::{self, TrainColumns};
use span_marker_udfs::sources::TableSource;
use span_marker_udfs::span_marker::train::TrainingArguments;
use span_marker_udfs::training::ModelSpec;

use crate::py_error;

/// `what` parsed from JSON; an error names the key (`args: `learning_rate`: invalid type...`).
fn parse<T: DeserializeOwned>(what: &str, json: &str) -> PyResult<T> {
    let deserializer = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            py_error(format!("{what}: {}", e.inner()))
        } else {
            py_error(format!("{what}: `{path}`: {}", e.inner()))
        }
    })
}

/// Trains the model `model` (JSON: `encoder`, `labels` and model settings) with `args` (JSON,
/// Hugging Face `TrainingArguments` names) on `train` (and evaluates on `eval` and `test`); returns where
/// the model was saved and the metrics as JSON.
#[pyfunction]
#[pyo3(signature = (train, eval, test, model, args, tokens, tags, document_id=None, sentence_id=None))]
#[allow(clippy::too_many_arguments)]
pub fn train(
    py: Python<'_>,
    train: PyDataFrame,
    eval: Option<PyDataFrame>,
    test: Option<PyDataFrame>,
    model: &str,
    args: &str,
    tokens: String,
    tags: String,
    document_id: Option<String>,
    sentence_id: Option<String>,
) -> PyResult<(String, String)> {
    let spec: ModelSpec = parse("model", model)?;
    let args: TrainingArguments = parse("args", args)?;
    args.validate()
        .map_err(|e| py_error(format!("args: {e}")))?;
    let columns = TrainColumns {
        tokens,
        tags,
        document_id,
        sentence_id,
    };
    let (train, eval, test) = (
        train.0.lazy(),
        eval.map(|e| e.0.lazy()),
        test.map(|t| t.0.lazy()),
    );
    let report = py
        .detach(|| polars_expr::train(&spec, args, &columns, train, eval, test))
        .map_err(py_error)?;
    let metrics = serde_json::to_string(&report.metrics).map_err(py_error)?;
    Ok((report.output_dir.display().to_string(), metrics))
}

/// The rows of a Hub dataset's split (its first `rows` when set), in order, and the label names
/// its `tags` column stores (`None` when it stores none).
#[pyfunction]
#[pyo3(signature = (id, split, config=None, revision=None, rows=None, tags="ner_tags".to_owned()))]
pub fn hub_dataset(
    py: Python<'_>,
    id: String,
    split: String,
    config: Option<String>,
    revision: Option<String>,
    rows: Option<usize>,
    tags: String,
) -> PyResult<(PyDataFrame, Option<Vec<String>>)> {
    let source = TableSource {
        config,
        revision,
        rows,
        tags_column: tags,
        ..TableSource::hub_dataset(id, split)
    };
    let read = py.detach(|| {
        let split = polars_expr::hub_dataset_frame(&source)?;
        Ok::<_, span_marker_udfs::Error>((split.frame.collect()?, split.labels))
    });
    let (frame, labels) = read.map_err(py_error)?;
    Ok((PyDataFrame(frame), labels))
}
