//! SpanMarker for dataflow engines: DataFusion UDFs, Polars expressions, training from
//! tables, pipeline files and bulk annotation of Parquet corpora.
//!
//! The model work lives in the [`span_marker`] core crate; this crate only reads columns,
//! calls the core on whole record batches and writes columns back.
//!
//! ```no_run
//! # async fn demo() -> datafusion::error::Result<()> {
//! // A session whose runtime serves s3:// URLs too (`store`), as `SessionContext::new()`.
//! let ctx = span_marker_udfs::store::session_context();
//! span_marker_udfs::sql::register_all(&ctx);
//! ctx.sql("SET span_marker.model = 'bundled'").await?;
//! ctx.sql("SELECT span_marker_predict_text('Angela Merkel visited Paris') AS entities")
//!     .await?
//!     .show()
//!     .await?;
//! # Ok(()) }
//! ```

pub mod annotate;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod columns;
pub mod dataset;
mod error;
mod job;
mod model;
pub mod pipeline;
#[cfg(feature = "polars")]
pub mod polars_expr;
pub mod sources;
pub mod sql;
pub mod store;
pub mod training;

pub use error::{Error, Result};
pub use model::{on_model_thread, SharedModel};
pub use span_marker;
