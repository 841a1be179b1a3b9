//! `span_marker_predict_text(text)`.

use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use span_marker::SentenceInput;

use crate::columns::{entity_fields, is_string, list_of, Strings};
use crate::model::SharedModel;
use crate::sql::common::{arrays, check_arity, predict_column};

/// `span_marker_predict_text(text)`: the entities of raw text, split into words by the model's
/// pre-tokenizer, as `List<Struct{start, end, label, score, char_start, char_end, text}>`
/// (`char_*` are character offsets into `text`, end exclusive). NULL in, NULL out.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SpanMarkerPredictText {
    signature: Signature,
    model: Option<SharedModel>,
}

impl SpanMarkerPredictText {
    /// The function, using `model` when `span_marker.model` is not set.
    pub fn new(model: Option<SharedModel>) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Stable),
            model,
        }
    }
}

static DOCS: LazyLock<Documentation> = LazyLock::new(|| {
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
+---------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
| entities                                                                                                                                                                                                      |
+---------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
| [{start: 1, end: 4, label: ORG, score: 0.70555305, char_start: 4, char_end: 25, text: European Central Bank}, {start: 6, end: 7, label: LOC, score: 0.831672, char_start: 33, char_end: 42, text: Frankfurt}] |
+---------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
```"#,
    )
    .build()
});

impl ScalarUDFImpl for SpanMarkerPredictText {
    fn name(&self) -> &str {
        "span_marker_predict_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), types, 1..=1)?;
        if !is_string(&types[0]) && !types[0].is_null() {
            let hint = if crate::columns::is_string_list(&types[0]) {
                " (for a list of words use span_marker_predict)"
            } else {
                ""
            };
            return plan_err!(
                "{}: `text` must be a string, got {}{hint}",
                self.name(),
                types[0]
            );
        }
        Ok(types.to_vec())
    }

    fn return_type(&self, _types: &[DataType]) -> Result<DataType> {
        Ok(list_of(entity_fields(true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let rows: Vec<Option<SentenceInput<'_>>> = if arrays[0].data_type().is_null() {
            vec![None; arrays[0].len()]
        } else {
            let texts = Strings::try_new(arrays[0].as_ref(), "text")?;
            (0..arrays[0].len())
                .map(|i| texts.get(i).map(SentenceInput::Text))
                .collect()
        };
        let column = predict_column(
            self.name(),
            &rows,
            Vec::new(),
            &args,
            self.model.as_ref(),
            true,
        )?;
        Ok(ColumnarValue::Array(column))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCS)
    }
}
