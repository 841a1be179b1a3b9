//! `span-marker sql`: DataFusion with the SpanMarker functions; files are tables by path.

use clap::Args;
use datafusion::arrow::util::pretty::print_batches;
use datafusion::prelude::SessionContext;

use crate::args::ModelArgs;
use crate::CliResult;

#[derive(Args)]
pub struct SqlArgs {
    /// SQL statements, run in order (e.g. `SET span_marker.batch_size = 64` then a query).
    #[arg(required = true)]
    statements: Vec<String>,
    /// The model of the SpanMarker functions and where it runs (`SET span_marker.model` and
    /// `SET span_marker.device` override them).
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: SqlArgs) -> CliResult {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ctx = SessionContext::new().enable_url_table();
        span_marker_udfs::sql::register_all(&ctx);
        ctx.sql(&format!(
            "SET span_marker.model = '{}'",
            args.model.model.replace('\'', "''")
        ))
        .await?;
        ctx.sql(&format!(
            "SET span_marker.device = '{}'",
            args.model.device.replace('\'', "''")
        ))
        .await?;
        for statement in &args.statements {
            let batches = ctx.sql(statement).await?.collect().await?;
            if !batches.is_empty() {
                print_batches(&batches)?;
            }
        }
        Ok(())
    })
}
