//! `span_marker_candidates(tokens [, entity_max_length])`.

use std::sync::LazyLock;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use span_marker::spans::candidate_spans;

use crate::columns::{candidate_fields, is_string_list, list_of, read_words};
use crate::sql::common::{arrays, check_arity};
use crate::sql::options::SpanMarkerOptions;

/// `span_marker_candidates(tokens [, entity_max_length])`: every span of up to
/// `entity_max_length` words (default `span_marker.entity_max_length`, 8) as
/// `List<Struct{start, end}>`, word indices with `end` exclusive, in SpanMarker's order.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SpanMarkerCandidates {
    signature: Signature,
}

impl SpanMarkerCandidates {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Stable),
        }
    }
}

impl Default for SpanMarkerCandidates {
    fn default() -> Self {
        Self::new()
    }
}

static DOCS: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DocSection::default(),
        "The candidate spans SpanMarker classifies: every run of 1 to `entity_max_length` words, \
         as word indices with an exclusive end.",
        "span_marker_candidates(tokens [, entity_max_length])",
    )
    .with_argument("tokens", "A list of words (List of Utf8, LargeUtf8 or Utf8View).")
    .with_argument(
        "entity_max_length",
        "Longest span in words (default: `span_marker.entity_max_length`, 8).",
    )
    .with_sql_example(
        r#"```sql
> SELECT span_marker_candidates(['Paris', 'is', 'nice'], 2) AS spans;
+------------------------------------------------------------------------------------------------------+
| spans                                                                                                |
+------------------------------------------------------------------------------------------------------+
| [{start: 0, end: 1}, {start: 0, end: 2}, {start: 1, end: 2}, {start: 1, end: 3}, {start: 2, end: 3}] |
+------------------------------------------------------------------------------------------------------+
```"#,
    )
    .build()
});

impl ScalarUDFImpl for SpanMarkerCandidates {
    fn name(&self) -> &str {
        "span_marker_candidates"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), types, 1..=2)?;
        if !is_string_list(&types[0]) {
            return plan_err!(
                "{}: `tokens` must be a list of strings, got {}",
                self.name(),
                types[0]
            );
        }
        let mut coerced = vec![types[0].clone()];
        if let Some(max) = types.get(1) {
            if !max.is_integer() && !max.is_null() {
                return plan_err!(
                    "{}: `entity_max_length` must be an integer, got {max}",
                    self.name()
                );
            }
            coerced.push(DataType::Int64);
        }
        Ok(coerced)
    }

    fn return_type(&self, _types: &[DataType]) -> Result<DataType> {
        Ok(list_of(candidate_fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let default_max = SpanMarkerOptions::from_config(&args.config_options).entity_max_length;
        let arrays = arrays(&args)?;
        let words = read_words(arrays[0].as_ref(), "tokens")?;
        let max_lengths = arrays.get(1).map(|a| a.as_primitive::<Int64Type>());
        let mut rows = Vec::with_capacity(words.len());
        for (row, words) in words.into_iter().enumerate() {
            let max = match max_lengths {
                Some(m) if m.is_null(row) => None,
                Some(m) => Some(m.value(row)),
                None => Some(default_max as i64),
            };
            rows.push(match (words, max) {
                (Some(Ok(words)), Some(max)) if max >= 1 => {
                    Some(candidate_spans(words.len(), max as usize).collect())
                }
                (Some(Ok(_)), Some(max)) => {
                    return exec_err!(
                        "{}: row {row}: `entity_max_length` must be at least 1, got {max}",
                        self.name()
                    )
                }
                (Some(Err(reason)), _) => return exec_err!("{}: row {row}: {reason}", self.name()),
                _ => None,
            });
        }
        Ok(ColumnarValue::Array(crate::columns::candidates_column(
            &rows,
        )))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCS)
    }
}
