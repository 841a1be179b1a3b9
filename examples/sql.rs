//! The SpanMarker SQL functions in DataFusion: settings, candidates, entities from words and
//! from text, over an in-memory table and a Parquet file.
//!
//! ```sh
//! cargo run --release --example sql
//! ```

use datafusion::prelude::*;
use span_marker_udfs::sql::register_all;

#[tokio::main]
async fn main() -> datafusion::error::Result<()> {
    let ctx = SessionContext::new().enable_url_table();
    register_all(&ctx);
    ctx.sql("SET span_marker.model = 'bundled'").await?;
    ctx.sql("SET span_marker.batch_size = 64").await?;

    ctx.sql(
        "CREATE TABLE corpus AS VALUES
           (1, ['Angela', 'Merkel', 'visited', 'Paris', '.']),
           (2, ['Germany', 'and', 'France', 'agreed', 'in', 'Brussels', '.']),
           (3, NULL)",
    )
    .await?;
    ctx.sql("SELECT column1 AS id, span_marker_candidates(column2, 2) AS spans FROM corpus")
        .await?
        .show()
        .await?;
    ctx.sql(
        "SELECT id, e.label, e.start, e.end, e.score FROM (
             SELECT column1 AS id, unnest(span_marker_predict(column2)) AS e FROM corpus)
         ORDER BY id, e.start",
    )
    .await?
    .show()
    .await?;

    // Files are tables by path; write one and query it.
    let out = std::env::temp_dir().join("span-marker-sql-example.parquet");
    ctx.sql("SELECT 'The European Central Bank met in Frankfurt.' AS text")
        .await?
        .write_parquet(out.to_str().unwrap(), Default::default(), None)
        .await?;
    ctx.sql(&format!(
        "SELECT text, span_marker_predict_text(text) AS entities FROM '{}'",
        out.display()
    ))
    .await?
    .show()
    .await?;
    Ok(())
}
