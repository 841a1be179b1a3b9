//! `span_marker_model_info()`: which model the functions use where they run.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use serde::{Deserialize, Serialize};

use crate::model::SharedModel;
use crate::sql::options::SpanMarkerOptions;
use crate::sql::Worker;

/// `span_marker_model_info()`: loads the session's model where the query runs and describes
/// it as JSON (see [`ModelInfo`]), the same string on every row. On a cluster each executor
/// answers for itself, so a query over many partitions shows whether every executor can load
/// the model and loads the same weights.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SpanMarkerModelInfo {
    signature: Signature,
    model: Option<SharedModel>,
    worker: Option<Arc<Worker>>,
}

/// What `span_marker_model_info()` says, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The executor that answered; `local` in the client's own process.
    pub executor: String,
    /// Where the model came from (`span_marker.model`, or the registered model's source).
    pub model: String,
    /// The device it runs on there.
    pub device: String,
    /// The weights' content digest ([`SharedModel::fingerprint`]).
    pub fingerprint: String,
}

impl ModelInfo {
    /// The answers in the first column of `batches` (a query's `span_marker_model_info()`
    /// rows); an error quotes a row that is not one.
    pub fn from_batches(batches: &[RecordBatch]) -> std::result::Result<Vec<Self>, String> {
        let mut answers = Vec::new();
        for batch in batches {
            for text in batch.column(0).as_string::<i32>().iter().flatten() {
                answers.push(serde_json::from_str(text).map_err(|e| format!("`{text}`: {e}"))?);
            }
        }
        Ok(answers)
    }
}

impl SpanMarkerModelInfo {
    /// The function, with `model` used when `span_marker.model` is not set, running on
    /// `worker` when it runs for others.
    pub fn new(model: Option<SharedModel>, worker: Option<Arc<Worker>>) -> Self {
        Self {
            // Volatile: never folded into a constant by the planner, so it runs where the
            // rows are.
            signature: Signature::exact(vec![], Volatility::Volatile),
            model,
            worker,
        }
    }

    fn describe(&self, settings: &SpanMarkerOptions) -> crate::Result<String> {
        let model = settings.model_on(self.model.as_ref(), self.worker.as_deref())?;
        // The session's prediction settings must run here (a precision this device lacks is
        // refused by the model check, before a job writes anything).
        settings
            .predict_options()?
            .precision
            .check(model.device())?;
        let worker = self.worker.as_deref();
        let info = ModelInfo {
            executor: worker.map_or_else(|| "local".to_owned(), |w| w.name.clone()),
            model: model.source().to_owned(),
            device: settings.device_on(worker).to_owned(),
            fingerprint: model.fingerprint()?,
        };
        Ok(serde_json::to_string(&info).expect("plain strings serialise"))
    }
}

static DOCS: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DocSection::default(),
        "Loads the model of `span_marker.model` where the query runs and describes it as JSON: \
         the executor (`local` outside a cluster), the model, the device and the weights' \
         content digest. Fails where the session's prediction settings cannot run (a \
         precision the device lacks).",
        "span_marker_model_info()",
    )
    .build()
});

impl ScalarUDFImpl for SpanMarkerModelInfo {
    fn name(&self) -> &str {
        "span_marker_model_info"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        if !types.is_empty() {
            return plan_err!("span_marker_model_info takes no arguments");
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let settings = SpanMarkerOptions::from_config(&args.config_options);
        let info = Worker::answer(
            self.worker.as_deref(),
            self.describe(&settings).map_err(Into::into),
        )?;
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(vec![
            info.as_str();
            args.number_rows
        ]))))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCS)
    }
}
