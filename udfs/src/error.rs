//! The error type of the engine layer. Core, Arrow, DataFusion, Parquet and Polars errors keep
//! their source; they become `DataFusionError`/`PolarsError` only at the engine boundary.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the engine layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] span_marker::Error),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[cfg(feature = "polars")]
    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A pipeline file or a training option that is missing, of the wrong type or invalid;
    /// `key` is its dotted path (`training.learning_rate`).
    #[error("{file}: `{key}`: {message}")]
    Pipeline {
        file: String,
        key: String,
        message: String,
    },
    /// A column that is missing or of a type the operation cannot read.
    #[error("column `{column}`: {message}")]
    Column { column: String, message: String },
    /// A value in one row that the operation cannot use.
    #[error("{source_name}: row {row}: {message}")]
    Row {
        source_name: String,
        row: usize,
        message: String,
    },
    /// The thread that runs the engine functions' libtorch work could not take or finish a job.
    #[error("the model thread {0}")]
    ModelThread(&'static str),
    /// A cluster that cannot be reached or used as asked.
    #[error("cluster {url}: {message}")]
    Cluster { url: String, message: String },
    /// An input or output file that cannot be used as asked.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn column(column: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Column {
            column: column.into(),
            message: message.into(),
        }
    }

    pub(crate) fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::File {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

/// `Result` with the engine layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for datafusion::error::DataFusionError {
    fn from(error: Error) -> Self {
        match error {
            Error::DataFusion(e) => e,
            other => Self::External(Box::new(other)),
        }
    }
}

#[cfg(feature = "polars")]
impl From<Error> for polars::error::PolarsError {
    fn from(error: Error) -> Self {
        match error {
            Error::Polars(e) => e,
            other => Self::ComputeError(other.to_string().into()),
        }
    }
}
