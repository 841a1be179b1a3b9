//! `span-marker sql`: DataFusion with the SpanMarker functions; files are tables by path, and
//! objects by URL (`FROM 's3://bucket/data/*.parquet'`, `COPY ... TO 's3://bucket/out.parquet'`,
//! `az://container/...` too; credentials from the AWS or Azure environment:
//! `span_marker_udfs::store`). With `--cluster`, the statements run on a Ballista cluster.

use clap::Args;
use std::io::Write;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use span_marker_udfs::cluster::{describe, Cluster};
use span_marker_udfs::sql::SpanMarkerOptions;
use span_marker_udfs::store;

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
    /// Let `COPY ... TO` replace a file or an object (`s3://...`) that exists (refused
    /// otherwise; with --cluster, the client's file system and stores are the ones checked).
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
                let ctx = store::session_context();
                span_marker_udfs::sql::register_all(&ctx);
                ctx
            }
        };
        let ctx = store::enable_url_table(ctx);
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
                    refuse_existing_output(&ctx, &copy.output_url).await?;
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

/// `COPY ... TO` a local file or a store object that exists is refused: DataFusion would
/// replace it. (Into a directory or a prefix ending in `/`, it adds files under new names.)
async fn refuse_existing_output(ctx: &SessionContext, url: &str) -> CliResult {
    let exists = if store::is_store_url(url) {
        !url.ends_with('/') && store::exists(ctx, url).await?
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        std::path::Path::new(path).is_file()
    };
    if exists {
        let what = if store::is_store_url(url) {
            "the object"
        } else {
            "the file"
        };
        return Err(
            format!("COPY ... TO '{url}': {what} exists; pass --overwrite to replace it").into(),
        );
    }
    Ok(())
}
