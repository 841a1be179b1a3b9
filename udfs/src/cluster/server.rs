//! The scheduler and executor programs: Ballista's, with the SpanMarker functions and
//! settings built in.
//!
//! The command line's defaults suit a small annotation cluster: executors send a heartbeat
//! every 5 s and the scheduler gives up on a silent one after 30 s (Ballista's own defaults
//! are 60 s and 180 s), so that work of a lost executor is retried elsewhere within seconds;
//! tasks go to the executors in turn (round robin) rather than filling the first one.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use span_marker::device::parse_device;

use crate::cluster::{function_registry, session_config, session_state};
use crate::error::{Error, Result};
use crate::sql::Worker;

/// Ballista's default scheduler port.
pub const SCHEDULER_PORT: u16 = 50050;

/// How a scheduler listens and when it gives up on executors.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to listen on.
    pub bind_host: String,
    /// Port of the gRPC API and the REST API (`/api/executors`).
    pub port: u16,
    /// The host name clients and executors reach this scheduler by.
    pub external_host: String,
    /// An executor silent for this long is taken as lost and its tasks are run elsewhere.
    pub executor_timeout_seconds: u64,
    /// Attempts of a task before its job fails.
    pub task_max_failures: usize,
}

/// How an executor listens, which scheduler it serves, and where its model runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Address to listen on.
    pub bind_host: String,
    /// The host name the scheduler, other executors and clients reach this executor by
    /// (default: the address the scheduler sees its connection come from).
    pub external_host: Option<String>,
    /// Port of the Arrow Flight service that serves results.
    pub port: u16,
    /// Port of the gRPC service the scheduler sends tasks to.
    pub grpc_port: u16,
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// Tasks run at once. The model serves them one at a time with its intra-op threads, so
    /// two keep it busy while the next batch is read.
    pub concurrent_tasks: usize,
    /// Where intermediate results go (default: a temporary directory).
    pub work_dir: Option<PathBuf>,
    /// The device of the models this executor loads (`cpu`, `cuda`, `cuda:N`), replacing
    /// the sessions' `span_marker.device`; `None` keeps theirs. One executor per GPU.
    pub device: Option<String>,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_interval_seconds: u64,
}

/// The accepted range of each time and retry setting: zero would spin or never give up, and
/// values past these are mistakes (a day without a heartbeat is a lost executor).
const EXECUTOR_TIMEOUT_SECONDS: RangeInclusive<u64> = 2..=86_400;
const HEARTBEAT_INTERVAL_SECONDS: RangeInclusive<u64> = 1..=300;
const TASK_MAX_FAILURES: RangeInclusive<usize> = 1..=100;
const CONCURRENT_TASKS: RangeInclusive<usize> = 1..=1_024;

impl SchedulerOptions {
    /// Checks the settings, naming the first one out of range.
    pub fn validate(&self) -> Result<()> {
        in_range(
            "executor-timeout-seconds",
            self.executor_timeout_seconds,
            EXECUTOR_TIMEOUT_SECONDS,
        )?;
        in_range(
            "task-max-failures",
            self.task_max_failures,
            TASK_MAX_FAILURES,
        )
    }
}

impl ExecutorOptions {
    /// Checks the settings, naming the first one out of range, and that the two ports differ.
    pub fn validate(&self) -> Result<()> {
        if let Some(device) = &self.device {
            parse_device(device).map_err(|e| setting("device", e.to_string()))?;
        }
        in_range("concurrent-tasks", self.concurrent_tasks, CONCURRENT_TASKS)?;
        in_range(
            "heartbeat-interval-seconds",
            self.heartbeat_interval_seconds,
            HEARTBEAT_INTERVAL_SECONDS,
        )?;
        if self.port == self.grpc_port {
            return Err(setting(
                "grpc-port",
                format!(
                    "equals --port ({}): the Flight service and the task service need a port each",
                    self.port
                ),
            ));
        }
        Ok(())
    }
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<()> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(setting(
        key,
        format!(
            "must be between {} and {}, got {value}",
            range.start(),
            range.end()
        ),
    ))
}

/// Fails, naming the port and its service, when `port` cannot be listened on at `host` (taken
/// by another process, or not ours to take), so that the process ends with the reason instead
/// of serving half its services.
fn check_port(host: &str, port: u16, service: &str) -> Result<()> {
    if port == 0 {
        // The system would pick one, and nobody would know where to reach it.
        return Err(setting(service, "must be a port number, not 0".into()));
    }
    std::net::TcpListener::bind((host, port))
        .map(drop)
        .map_err(|e| setting(service, format!("cannot listen on {host}:{port}: {e}")))
}

/// Runs a scheduler until the process is stopped.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<()> {
    options.validate()?;
    let address: SocketAddr = format!("{}:{}", options.bind_host, options.port)
        .parse()
        .map_err(|e| setting("bind-host", format!("`{}`: {e}", options.bind_host)))?;
    check_port(&options.bind_host, options.port, "port")?;
    let config = SchedulerConfig {
        bind_host: options.bind_host.clone(),
        bind_port: options.port,
        external_host: options.external_host.clone(),
        task_distribution: TaskDistributionPolicy::RoundRobin,
        executor_timeout_seconds: options.executor_timeout_seconds,
        expire_dead_executor_interval_seconds: (options.executor_timeout_seconds / 4).max(1),
        no_executors_grace_period_seconds: options.executor_timeout_seconds,
        task_max_failures: options.task_max_failures,
        override_config_producer: Some(Arc::new(session_config)),
        override_session_builder: Some(Arc::new(session_state)),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ballista("cannot start the scheduler", e))?;
    tracing::info!(%address, "SpanMarker scheduler listening");
    start_server(cluster, address, Arc::new(config))
        .await
        .map_err(|e| ballista(&format!("scheduler on {address}"), e))
}

/// Runs an executor until the process is stopped (or its scheduler stops it).
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    options.validate()?;
    check_port(&options.bind_host, options.port, "port")?;
    check_port(&options.bind_host, options.grpc_port, "grpc-port")?;
    if let Some(dir) = &options.work_dir {
        check_work_dir(dir)?;
    }
    // The id names this executor in the scheduler's API and in errors: where it listens, and
    // a random part that tells apart executors on one address (a restarted one, containers).
    let host = options
        .external_host
        .as_deref()
        .unwrap_or(&options.bind_host);
    let random = ballista_core::ids::new_instance_id();
    let executor_id = format!("{host}:{}/{}", options.port, &random[..8]);
    let registry = function_registry(Worker {
        name: executor_id.clone(),
        device: options.device.clone(),
    })?;
    let work_dir = options
        .work_dir
        .as_ref()
        .map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.clone()));
    let temp_dir = work_dir.clone();
    let config = ExecutorProcessConfig {
        executor_id,
        bind_host: options.bind_host.clone(),
        external_host: options.external_host.clone(),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: 10,
        vcores: options.concurrent_tasks,
        work_dir: work_dir.map(|dir| dir.to_string_lossy().into_owned()),
        executor_heartbeat_interval_seconds: options.heartbeat_interval_seconds,
        override_function_registry: Some(Arc::new(registry)),
        override_config_producer: Some(Arc::new(session_config)),
        // Tasks read and write through this build's stores (`s3://`), as the client does.
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| {
            let mut runtime =
                RuntimeEnvBuilder::new().with_object_store_registry(crate::store::registry());
            if let Some(dir) = &temp_dir {
                runtime = runtime.with_temp_file_path(dir);
            }
            Ok(Arc::new(runtime.build()?))
        })),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ballista("executor", e))
}

/// The work directory must be a directory this process can write in: a task that cannot
/// write its results there fails on every attempt.
fn check_work_dir(dir: &std::path::Path) -> Result<()> {
    let bad = |message: String| setting("work-dir", format!("{}: {message}", dir.display()));
    if !dir.is_dir() {
        return Err(bad("not a directory".into()));
    }
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|e| bad(format!("cannot write there: {e}")))
}

fn setting(key: &str, message: String) -> Error {
    Error::Pipeline {
        file: "cluster".into(),
        key: key.into(),
        message,
    }
}

fn ballista(what: &str, error: ballista_core::error::BallistaError) -> Error {
    Error::Cluster {
        url: what.to_owned(),
        message: error.to_string(),
    }
}
