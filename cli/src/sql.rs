//! `span-marker sql`: DataFusion with the SpanMarker functions; files are tables by path.
//! With `--cluster`, the statements run on a Ballista cluster.

use clap::Args;
use std::io::Write;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use span_marker_udfs::cluster::{readable_error, Cluster};
use span_marker_udfs::sql::SpanMarkerOptions;

use crate::args::{set_session, ModelArgs};
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
    /// Run on the Ballista cluster whose scheduler is at df://HOST:PORT (see `span-marker
    /// cluster`). Files named in queries must be at the same path on every executor; every
    /// executor must be able to load the model, which is checked before the first query.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

pub fn run(args: SqlArgs) -> CliResult {
    if args.cluster.is_some() {
        span_marker_cli::ignore_sigpipe();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let cluster = args.cluster.as_deref().map(Cluster::connect).transpose()?;
        let ctx = match &cluster {
            Some(cluster) => cluster.context().await?,
            None => {
                let ctx = SessionContext::new();
                span_marker_udfs::sql::register_all(&ctx);
                ctx
            }
        }
        .enable_url_table();
        set_session(
            &ctx,
            &[
                ("model", args.model.model.clone()),
                ("device", args.model.device.clone()),
            ],
        )?;
        // The model (and device) the executors were last checked to load.
        let mut checked: Option<(String, String)> = None;
        for statement in &args.statements {
            if let Some(cluster) = &cluster {
                let is_set = statement
                    .trim_start()
                    .get(..4)
                    .is_some_and(|start| start.eq_ignore_ascii_case("set "));
                let settings = SpanMarkerOptions::from_config(ctx.state().config().options());
                let model = (settings.model, settings.device);
                if !is_set && checked.as_ref() != Some(&model) {
                    cluster.check_model(&ctx).await?;
                    checked = Some(model);
                }
            }
            let batches = match ctx.sql(statement).await?.collect().await {
                Ok(batches) => batches,
                Err(e) if cluster.is_some() => return Err(readable_error(&e).into()),
                Err(e) => return Err(e.into()),
            };
            if !batches.is_empty() {
                // Written, not printed: see `show_entities` in annotate.rs.
                writeln!(
                    std::io::stdout().lock(),
                    "{}",
                    pretty_format_batches(&batches)?
                )?;
            }
        }
        Ok(())
    })
}
