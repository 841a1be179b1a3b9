//! Argument handling shared by the SQL functions.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};

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
