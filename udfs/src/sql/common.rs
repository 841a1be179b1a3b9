//! Argument handling shared by the SQL functions.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};
use span_marker::SentenceInput;

use crate::model::SharedModel;
use crate::sql::options::SpanMarkerOptions;

/// The arguments as arrays of `args.number_rows` rows (scalars are repeated).
pub fn arrays(args: &ScalarFunctionArgs) -> Result<Vec<ArrayRef>> {
    ColumnarValue::values_to_arrays(&args.args)
}

/// A plan-time check of the argument count.
pub fn check_arity(
    name: &str,
    types: &[DataType],
    allowed: std::ops::RangeInclusive<usize>,
) -> Result<()> {
    if allowed.contains(&types.len()) {
        return Ok(());
    }
    let expected = if allowed.start() == allowed.end() {
        format!("{}", allowed.start())
    } else {
        format!("{} or {}", allowed.start(), allowed.end())
    };
    plan_err!("{name} takes {expected} argument(s), got {}", types.len())
}

/// Runs the session's model over `rows` (one forward pass per batch of samples across the
/// whole record batch) and returns the entity column. A row that cannot be annotated, whether
/// it was unreadable (`unreadable`) or failed in the model, is NULL with a warning, or fails the
/// query in strict mode.
pub fn predict_column(
    name: &str,
    rows: &[Option<SentenceInput<'_>>],
    unreadable: Vec<(usize, String)>,
    args: &ScalarFunctionArgs,
    fallback: Option<&SharedModel>,
    with_text: bool,
) -> Result<ArrayRef> {
    let settings = SpanMarkerOptions::from_config(&args.config_options);
    let options = settings.predict_options()?;
    let model = settings.model(fallback)?;
    let annotated = model.annotate_rows(rows, &options, unreadable)?;
    if let Some((row, reason)) = annotated.failed.first() {
        if settings.strict {
            return exec_err!(
                "{name}: row {row} of the batch cannot be annotated: {reason} \
                 (SET span_marker.strict = false to get NULL for such rows)"
            );
        }
        for (row, reason) in &annotated.failed {
            tracing::warn!(
                function = name,
                row,
                reason,
                "row not annotated, NULL returned"
            );
        }
    }
    Ok(crate::columns::entities_column(
        &annotated.entities,
        with_text,
    ))
}
