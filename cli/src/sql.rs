//! `span-marker sql`: DataFusion with the SpanMarker functions; files are tables by path.
//! With `--cluster`, the statements run on a Ballista cluster.

use clap::Args;
use std::io::Write;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use span_marker_udfs::cluster::{readable_error, Cluster, DEFAULT_STALL_TIMEOUT};
use span_marker_udfs::sql::SpanMarkerOptions;
use std::time::Duration;

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
    /// With --cluster: seconds a job may show no progress (no task ending) before it is
    /// cancelled and the command fails, naming the stage and the executors' reasons.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_STALL_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=604_800))]
    stall_timeout: u64,
    /// Let `COPY ... TO` replace a file that exists (refused otherwise).
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: SqlArgs) -> CliResult {
    if args.cluster.is_some() {
        span_marker_cli::ignore_sigpipe();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let cluster = args
            .cluster
            .as_deref()
            .map(Cluster::connect)
            .transpose()?
            .map(|cluster| cluster.with_stall_timeout(Duration::from_secs(args.stall_timeout)));
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
            let plan = ctx.state().create_logical_plan(statement).await?;
            if let LogicalPlan::Copy(copy) = &plan {
                if !args.overwrite {
                    refuse_existing_file(&copy.output_url)?;
                }
            }
            let batches = match &cluster {
                // Settings change this session: they run here, not as a job.
                Some(cluster) if !matches!(plan, LogicalPlan::Statement(_)) => cluster
                    .run_watched(&ctx, |ctx| async move {
                        Ok(ctx.execute_logical_plan(plan).await?.collect().await?)
                    })
                    .await
                    .map_err(|e| match e {
                        span_marker_udfs::Error::DataFusion(e) => readable_error(&e),
                        other => other.to_string(),
                    })?,
                _ => ctx.execute_logical_plan(plan).await?.collect().await?,
            };
            if !batches.is_empty() {
                // Written, not printed: see `show_entities` in annotate.rs.
                writeln!(
                    span_marker_cli::stdout(),
                    "{}",
                    pretty_format_batches(&batches)?
                )?;
            }
        }
        Ok(())
    })
}

/// `COPY ... TO` a local file that exists is refused: DataFusion would replace it.
/// (Into a directory, it adds files under new names.)
fn refuse_existing_file(url: &str) -> CliResult {
    let path = url.strip_prefix("file://").unwrap_or(url);
    if path.contains("://") {
        return Ok(());
    }
    if std::path::Path::new(path).is_file() {
        return Err(format!(
            "COPY ... TO '{url}': the file exists; pass --overwrite to replace it"
        )
        .into());
    }
    Ok(())
}
