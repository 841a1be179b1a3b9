//! Flags shared by several subcommands.

use std::time::Duration;

use clap::Args;
use span_marker::device::parse_device;
use span_marker_udfs::cluster::{Cluster, DEFAULT_STALL_TIMEOUT};
use span_marker_udfs::sources::TableSource;
use tch::Device;

/// Which model runs where.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A SpanMarker model: a directory, a Hugging Face id (from the local cache), or `bundled`
    /// for the small model compiled into the binary.
    #[arg(long, default_value = span_marker::BUNDLED)]
    pub model: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// The device, checked.
    pub fn device(&self) -> span_marker::Result<Device> {
        parse_device(&self.device)
    }

    /// The model, loaded on its device.
    pub fn load(&self) -> span_marker::Result<span_marker::SpanMarkerModel> {
        let options = span_marker::LoadOptions {
            device: Some(self.device()?),
            ..Default::default()
        };
        span_marker::SpanMarkerModel::from_pretrained_with(&self.model, &options)
    }
}

/// How long a cluster job may go without progress.
#[derive(Args, Debug, Clone)]
pub struct StallArgs {
    /// With --cluster: seconds a job may go without progress anywhere on the cluster (no task,
    /// stage or job ending) before it is cancelled and the command fails, naming its stage and
    /// the executors' reasons. A task shows progress only when it ends: this must exceed the
    /// longest task (with `annotate`, one file).
    #[arg(
        long,
        value_name = "SECONDS",
        requires = "cluster",
        default_value_t = DEFAULT_STALL_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=604_800)
    )]
    pub stall_timeout: u64,
}

impl StallArgs {
    /// `cluster` with this stall timeout.
    pub fn apply(&self, cluster: Cluster) -> Cluster {
        cluster.with_stall_timeout(Duration::from_secs(self.stall_timeout))
    }
}

/// Sets `span_marker.<key> = value` for each pair on `ctx`, as `SET` does (values unquoted;
/// a value that does not parse is an error naming its setting).
pub fn set_session(
    ctx: &datafusion::prelude::SessionContext,
    settings: &[(&str, String)],
) -> datafusion::error::Result<()> {
    let state = ctx.state_ref();
    let mut state = state.write();
    for (key, value) in settings {
        state
            .config_mut()
            .options_mut()
            .set(&format!("span_marker.{key}"), value)?;
    }
    Ok(())
}

/// A Hugging Face Hub dataset to read from: its id, config and revision (the splits are named
/// by each command).
#[derive(Args, Debug, Clone)]
pub struct DatasetArgs {
    /// A Hugging Face Hub dataset id (`name` or `org/name`), read as Parquet (its own files or
    /// the Hub's `refs/convert/parquet` conversion) through the Hugging Face cache: `HF_HOME`,
    /// `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE=1` as for the Python tools.
    #[arg(long, value_name = "ID")]
    pub dataset: Option<String>,
    /// The dataset's config (subset), when it has several.
    #[arg(long, requires = "dataset")]
    pub config: Option<String>,
    /// The dataset's branch, tag or commit.
    #[arg(long, requires = "dataset", default_value = "main")]
    pub revision: String,
}

impl DatasetArgs {
    /// The source of `split` (its first `rows` when set), when a dataset is named.
    pub fn source(&self, split: &str, rows: Option<usize>) -> Option<TableSource> {
        let id = self.dataset.as_ref()?;
        let mut source = TableSource::hub_dataset(id.clone(), split);
        source.config = self.config.clone();
        source.revision = Some(self.revision.clone());
        source.rows = rows;
        Some(source)
    }
}
