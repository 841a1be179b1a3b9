//! `span-marker cluster scheduler|executor`: the Ballista programs with the SpanMarker
//! functions built in (see [`span_marker_udfs::cluster`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use span_marker_udfs::cluster::server::{
    run_executor, run_scheduler, ExecutorOptions, SchedulerOptions, SCHEDULER_PORT,
};

use crate::CliResult;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Run a scheduler: it plans the queries clients send and hands their tasks to executors.
    Scheduler(SchedulerArgs),
    /// Run an executor: it registers with a scheduler and runs its tasks, loading each model
    /// once. One executor per GPU (`--device cuda:N`).
    Executor(ExecutorArgs),
}

#[derive(Args)]
pub struct SchedulerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_host: String,
    /// Port of the scheduler's API (`--cluster df://HOST:PORT` of the clients).
    #[arg(long, short, visible_alias = "bind-port", default_value_t = SCHEDULER_PORT)]
    port: u16,
    /// The host name executors and clients reach this scheduler by.
    #[arg(long, default_value = "localhost")]
    external_host: String,
    /// Seconds without a heartbeat after which an executor is lost and its tasks run
    /// elsewhere.
    #[arg(long, default_value_t = 30)]
    executor_timeout_seconds: u64,
    /// Attempts of a task before its job fails.
    #[arg(long, default_value_t = 4)]
    task_max_failures: usize,
}

#[derive(Args)]
pub struct ExecutorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_host: String,
    /// The host name the scheduler and clients reach this executor by (default: the address
    /// the scheduler sees its connection come from).
    #[arg(long)]
    external_host: Option<String>,
    /// Port of the executor's Arrow Flight service (results).
    #[arg(long, short, visible_alias = "bind-port", default_value_t = 50051)]
    port: u16,
    /// Port of the executor's gRPC service (tasks).
    #[arg(long, visible_alias = "bind-grpc-port", default_value_t = 50052)]
    grpc_port: u16,
    /// The scheduler's host.
    #[arg(long, default_value = "localhost")]
    scheduler_host: String,
    /// The scheduler's port.
    #[arg(long, default_value_t = SCHEDULER_PORT)]
    scheduler_port: u16,
    /// Tasks run at once (the model serves them in turn, with the intra-op threads of `--threads`).
    #[arg(long, short = 'c', default_value_t = 2)]
    concurrent_tasks: usize,
    /// Directory for intermediate results (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Device of the models this executor runs (`cpu`, `cuda`, `cuda:N`), in place of the
    /// sessions' `span_marker.device` (default: theirs).
    #[arg(long)]
    device: Option<String>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 5)]
    heartbeat_interval_seconds: u64,
}

pub fn run(command: ClusterCommand) -> CliResult {
    span_marker_cli::ignore_sigpipe();
    let runtime = tokio::runtime::Runtime::new()?;
    match command {
        ClusterCommand::Scheduler(args) => {
            span_marker_cli::note!(
                "span-marker scheduler on {}:{} (clients: --cluster df://{}:{})",
                args.bind_host,
                args.port,
                args.external_host,
                args.port
            );
            runtime.block_on(run_scheduler(SchedulerOptions {
                bind_host: args.bind_host,
                port: args.port,
                external_host: args.external_host,
                executor_timeout_seconds: args.executor_timeout_seconds,
                task_max_failures: args.task_max_failures,
            }))?;
        }
        ClusterCommand::Executor(args) => {
            span_marker_cli::note!(
                "span-marker executor on {}:{} for the scheduler at {}:{}",
                args.bind_host,
                args.port,
                args.scheduler_host,
                args.scheduler_port
            );
            runtime.block_on(run_executor(ExecutorOptions {
                bind_host: args.bind_host,
                external_host: args.external_host,
                port: args.port,
                grpc_port: args.grpc_port,
                scheduler_host: args.scheduler_host,
                scheduler_port: args.scheduler_port,
                concurrent_tasks: args.concurrent_tasks,
                work_dir: args.work_dir,
                device: args.device,
                heartbeat_interval_seconds: args.heartbeat_interval_seconds,
            }))?;
        }
    }
    Ok(())
}
