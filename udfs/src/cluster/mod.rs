//! SQL and bulk annotation on a [Ballista](https://datafusion.apache.org/ballista/) cluster:
//! a scheduler and executors with the SpanMarker functions built in ([`server`]), the client
//! side ([`Cluster`], whose [`Cluster::run_watched`] bounds a job's wait, and
//! [`remote_context`]) and annotation of many Parquet files, each into its own output, on the
//! cluster or in this process ([`annotate`]).
//!
//! Ballista ships a query plan to the executors with its functions named, not serialised, and
//! each process finds them in its own registry; the `span_marker.*` settings travel as
//! key-value pairs that a process keeps only when its session configuration has the
//! SpanMarker options. So the client, the scheduler and every executor all get the functions
//! and the options from here ([`session_config`], [`session_state`], [`function_registry`]).
//!
//! The model is named by `span_marker.model` and loaded by each executor, once per process,
//! on its model thread: it must be reachable from every executor (a path on a shared file
//! system, the same path on every machine, a Hugging Face id in each executor's cache, or
//! `bundled`). [`Cluster::check_model`] asks every executor to load it before any work.
//! Training (`span_marker_train`) does not run on a cluster.
//!
//! ```no_run
//! # async fn demo() -> span_marker_udfs::Result<()> {
//! let ctx = span_marker_udfs::cluster::remote_context("df://127.0.0.1:50050").await?;
//! ctx.sql("SET span_marker.model = 'bundled'").await?;
//! ctx.sql("SELECT span_marker_predict_text('Angela Merkel visited Paris')")
//!     .await?
//!     .show()
//!     .await?;
//! # Ok(()) }
//! ```

pub mod annotate;
mod client;
pub mod server;

use std::sync::Arc;

use ballista_core::config::BALLISTA_SCHEDULER_MAX_PARTITIONS_PER_TASK;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::SessionConfig;

pub use client::{
    describe, readable_error, remote_context, Cluster, ExecutorInfo, DEFAULT_STALL_TIMEOUT,
};

use crate::sql::{add_settings, scalar_functions, Worker};

/// Ballista's session configuration with the `span_marker.*` settings: what the client,
/// the scheduler and the executors start every session from.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new_with_ballista()
        // One partition per input file: a file's rows come back in their order.
        .set_bool("datafusion.optimizer.repartition_file_scans", false)
        // One partition per task, so that every task of a stage has the same plan: Ballista 55
        // fills the partitions a task leaves out with stubs that report metrics, and its
        // scheduler refuses the statuses of tasks whose metrics differ in number, after which
        // the job never ends (see ARCHITECTURE.md, "Ballista's sharp edges").
        .set_usize(BALLISTA_SCHEDULER_MAX_PARTITIONS_PER_TASK, 1);
    add_settings(&mut config);
    config
}

/// A session with DataFusion's functions and the SpanMarker ones, on `config` (the
/// scheduler's session builder, and the client's state).
pub fn session_state(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let mut config = config;
    add_settings(&mut config);
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        // This build's stores (s3:// URLs), as the executors' runtime has them
        // (`server::run_executor`).
        .with_runtime_env(crate::store::runtime_env())
        .with_default_features()
        .build();
    for udf in scalar_functions(None, None) {
        state.register_udf(Arc::new(udf))?;
    }
    Ok(state)
}

/// The functions an executor runs: every function the scheduler plans with (DataFusion's,
/// the array functions among them, which Ballista's default executor registry lacks), with the
/// SpanMarker ones as run by `worker`.
pub fn function_registry(worker: Worker) -> datafusion::error::Result<BallistaFunctionRegistry> {
    let mut registry = BallistaFunctionRegistry::from(&session_state(session_config())?);
    for udf in scalar_functions(None, Some(worker)) {
        registry
            .scalar_functions
            .insert(udf.name().to_owned(), Arc::new(udf));
    }
    Ok(registry)
}
