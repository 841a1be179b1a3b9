//! Named entities in a Polars lazy pipeline: candidates and entities as struct-list columns,
//! then exploded into one row per entity and counted by label.
//!
//! ```sh
//! cargo run --release --example polars_lazy
//! ```

use polars::prelude::*;
use span_marker_udfs::polars_expr::SpanMarkerExt;
use span_marker_udfs::SharedModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The small embedded model; a directory or Hugging Face id works the same way.
    let model = SharedModel::load("bundled", "cpu")?;
    let texts: Vec<&str> = include_str!("data/sample-corpus.txt").lines().collect();
    let corpus = DataFrame::new(texts.len(), vec![Column::new("text".into(), texts)])?.lazy();

    let annotated = corpus
        .with_column(
            col("text")
                .span_marker()
                .predict_text(&model)
                .alias("entities"),
        )
        .collect()?;
    println!("{}", annotated.head(Some(5)));

    let per_label = annotated
        .lazy()
        .select([col("entities").explode(ExplodeOptions {
            empty_as_null: false,
            keep_nulls: false,
        })])
        .filter(col("entities").is_not_null())
        .select([
            col("entities")
                .struct_()
                .field_by_name("label")
                .alias("label"),
            col("entities")
                .struct_()
                .field_by_name("text")
                .alias("entity"),
        ])
        .group_by([col("label")])
        .agg([
            len().alias("count"),
            col("entity").unique().alias("entities"),
        ])
        .sort(
            ["count"],
            SortMultipleOptions::default().with_order_descending(true),
        )
        .collect()?;
    println!("{per_label}");
    Ok(())
}
