//! `span_marker_predict(tokens)`.

use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use span_marker::SentenceInput;

use crate::columns::{entity_fields, is_string_list, list_of, read_word_rows};
use crate::model::SharedModel;
use crate::sql::common::{arrays, check_arity, predict_column};

/// `span_marker_predict(tokens)`: the entities of a list of words as
/// `List<Struct{start, end, label, score}>` (word indices, `end` exclusive). NULL in, NULL out.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SpanMarkerPredict {
    signature: Signature,
    model: Option<SharedModel>,
}

impl SpanMarkerPredict {
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
| [{start: 0, end: 1, label: LOC, score: 0.9989196}, {start: 3, end: 4, label: LOC, score: 0.99921715}] |
+-------------------------------------------------------------------------------------------------------+
```"#,
    )
    .build()
});

impl ScalarUDFImpl for SpanMarkerPredict {
    fn name(&self) -> &str {
        "span_marker_predict"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), types, 1..=1)?;
        if !is_string_list(&types[0]) && !types[0].is_null() {
            let hint = if crate::columns::is_string(&types[0]) {
                " (for raw text use span_marker_predict_text)"
            } else {
                ""
            };
            return plan_err!(
                "{}: `tokens` must be a list of strings, got {}{hint}",
                self.name(),
                types[0]
            );
        }
        Ok(types.to_vec())
    }

    fn return_type(&self, _types: &[DataType]) -> Result<DataType> {
        Ok(list_of(entity_fields(false)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let (words, unreadable) = if arrays[0].data_type().is_null() {
            (vec![None; arrays[0].len()], Vec::new())
        } else {
            read_word_rows(arrays[0].as_ref(), "tokens")?
        };
        let rows: Vec<Option<SentenceInput<'_>>> = words
            .iter()
            .map(|w| w.as_deref().map(SentenceInput::Words))
            .collect();
        let column = predict_column(
            self.name(),
            &rows,
            unreadable,
            &args,
            self.model.as_ref(),
            false,
        )?;
        Ok(ColumnarValue::Array(column))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCS)
    }
}
