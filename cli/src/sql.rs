//! `span-marker sql`: DataFusion with the SpanMarker functions; files are tables by path.
//! With `--cluster`, the statements run on a Ballista cluster.

use clap::Args;
use std::io::Write;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use span_marker_udfs::cluster::{describe, Cluster};
use span_marker_udfs::sql::SpanMarkerOptions;

use crate::args::{set_session, ModelArgs, StallArgs};
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
    #[command(flatten)]
    stall: StallArgs,
    /// Let `COPY ... TO` replace a file that exists (refused otherwise; with --cluster, the
    /// client's file system is the one checked).
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
            .map(|cluster| args.stall.apply(cluster));
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
            let plan = ctx.state().create_logical_plan(statement).await?;
            if let LogicalPlan::Copy(copy) = &plan {
                if !args.overwrite {
                    refuse_existing_file(&copy.output_url)?;
                }
            }
            let batches = match &cluster {
                // Settings change this session: they run here, not as a job.
                Some(cluster) if !matches!(plan, LogicalPlan::Statement(_)) => {
                    let model = || {
                        let settings =
                            SpanMarkerOptions::from_config(ctx.state().config().options());
                        (settings.model, settings.device)
                    };
                    if checked.as_ref() != Some(&model()) {
                        cluster.check_model(&ctx).await.map_err(|e| describe(&e))?;
                        // As the check left it (a relative model made absolute).
                        checked = Some(model());
                    }
                    cluster
                        .run_watched(&ctx, |ctx| async move {
                            Ok(ctx.execute_logical_plan(plan).await?.collect().await?)
                        })
                        .await
                        .map_err(|e| describe(&e))?
                }
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
