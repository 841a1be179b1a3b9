//! `span_marker_predict(tokens)` and `span_marker_predict_text(text)`: one implementation,
//! parameterised by what the argument holds.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::columns::{predict_column, ColumnJob, InputKind};
use crate::error::Error;
use crate::model::SharedModel;
use crate::sql::common::{arrays, check_arity};
use crate::sql::options::SpanMarkerOptions;
use crate::sql::Worker;

/// `span_marker_predict(tokens)`: the entities of a list of words as
/// `List<Struct{start, end, label, score}>` (word indices, `end` exclusive).
///
/// `span_marker_predict_text(text)`: the entities of raw text, split into words by the model's
/// pre-tokenizer, as `List<Struct{start, end, label, score, char_start, char_end, text}>`
/// (`char_*` are character offsets into `text`, end exclusive).
///
/// NULL in, NULL out; all rows of a record batch go through the model together.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SpanMarkerPredict {
    kind: InputKind,
    signature: Signature,
    model: Option<SharedModel>,
    worker: Option<Arc<Worker>>,
}

impl SpanMarkerPredict {
    /// `span_marker_predict` (words) or `span_marker_predict_text` (text), using `model` when
    /// `span_marker.model` is not set, running on `worker` when it runs for others.
    pub fn new(kind: InputKind, model: Option<SharedModel>, worker: Option<Arc<Worker>>) -> Self {
        Self {
            kind,
            signature: Signature::user_defined(Volatility::Stable),
            model,
            worker,
        }
    }

    fn function_name(kind: InputKind) -> &'static str {
        match kind {
            InputKind::Words => "span_marker_predict",
            InputKind::Text => "span_marker_predict_text",
        }
    }

    fn argument(&self) -> &'static str {
        match self.kind {
            InputKind::Words => "tokens",
            InputKind::Text => "text",
        }
    }
}

static WORDS_DOCS: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DocSection::default(),
        "Named entities in a sentence given as words, found by the model in `span_marker.model`. \
         All rows of a record batch go through the model together.",
        "span_marker_predict(tokens)",
    )
    .with_argument("tokens", "A list of words (List of Utf8, LargeUtf8 or Utf8View).")
    .with_sql_example(
        r#"```sql
> SET span_marker.model = 'bundled';
> SELECT span_marker_predict(['Paris', 'is', 'in', 'France']) AS entities;
+-------------------------------------------------------------------------------------------------------+
| entities                                                                                              |
+-------------------------------------------------------------------------------------------------------+
| [{start: 0, end: 1, label: LOC, score: 0.94555515}, {start: 3, end: 4, label: LOC, score: 0.9964294}] |
+-------------------------------------------------------------------------------------------------------+
```"#,
    )
    .build()
});

static TEXT_DOCS: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DocSection::default(),
        "Named entities in raw text, with word and character offsets and the entity text.",
        "span_marker_predict_text(text)",
    )
    .with_argument("text", "A sentence (Utf8, LargeUtf8 or Utf8View).")
    .with_sql_example(
        r#"```sql
> SET span_marker.model = 'bundled';
> SELECT span_marker_predict_text('The European Central Bank met in Frankfurt.') AS entities;
+-----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
| entities                                                                                                                                                                                                        |
+-----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
| [{start: 1, end: 4, label: MISC, score: 0.47211674, char_start: 4, char_end: 25, text: European Central Bank}, {start: 6, end: 7, label: LOC, score: 0.9923766, char_start: 33, char_end: 42, text: Frankfurt}] |
+-----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
```"#,
    )
    .build()
});

impl ScalarUDFImpl for SpanMarkerPredict {
    fn name(&self) -> &str {
        Self::function_name(self.kind)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), types, 1..=1)?;
        if !self.kind.accepts(&types[0]) {
            let other = self.kind.other();
            let hint = other.accepts(&types[0]).then(|| Self::function_name(other));
            return plan_err!(
                "{}: {}",
                self.name(),
                self.kind.mismatch(self.argument(), &types[0], hint)
            );
        }
        Ok(types.to_vec())
    }

    fn return_type(&self, _types: &[DataType]) -> Result<DataType> {
        Ok(self.kind.output_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Worker::answer(self.worker.as_deref(), self.predict(args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(match self.kind {
            InputKind::Words => &WORDS_DOCS,
            InputKind::Text => &TEXT_DOCS,
        })
    }
}

impl SpanMarkerPredict {
    fn predict(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let settings = SpanMarkerOptions::from_config(&args.config_options);
        let options = settings.predict_options()?;
        let model = settings.model_on(self.model.as_ref(), self.worker.as_deref())?;
        let source = format!("{}: record batch", self.name());
        let job = ColumnJob {
            kind: self.kind,
            options: &options,
            strict: settings.strict,
            source: &source,
            column: self.argument(),
            first_row: 0,
        };
        let (column, _failed) =
            predict_column(&model, arrays[0].as_ref(), &job).map_err(|e| match e {
                row @ Error::Row { .. } => DataFusionError::Execution(format!(
                    "{row} (SET span_marker.strict = false to get NULL for such rows)"
                )),
                other => other.into(),
            })?;
        Ok(ColumnarValue::Array(column))
    }
}
