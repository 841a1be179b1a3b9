//! DataFusion integration: scalar UDFs for candidates and entities, a table function for
//! training, and the `span_marker.*` session settings.
//!
//! ```no_run
//! # async fn demo() -> datafusion::error::Result<()> {
//! use datafusion::prelude::*;
//! let ctx = SessionContext::new();
//! span_marker_udfs::sql::register_all(&ctx);
//! ctx.sql("SET span_marker.model = 'bundled'").await?;
//! ctx.sql("SELECT span_marker_predict(['Paris', 'is', 'in', 'France'])").await?.show().await?;
//! # Ok(()) }
//! ```

mod candidates;
mod common;
mod options;
mod predict;
mod train;

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use candidates::SpanMarkerCandidates;
pub use options::SpanMarkerOptions;
pub use predict::SpanMarkerPredict;
pub use train::SpanMarkerTrain;

use crate::columns::InputKind;
use crate::model::SharedModel;

/// Registers every SpanMarker function and the `span_marker.*` settings in `ctx`; the model
/// comes from `SET span_marker.model = '...'`.
pub fn register_all(ctx: &SessionContext) {
    register(ctx, None);
}

/// Like [`register_all`], with `model` used whenever `span_marker.model` is not set.
pub fn register_all_with_model(ctx: &SessionContext, model: SharedModel) {
    register(ctx, Some(model));
}

fn register(ctx: &SessionContext, model: Option<SharedModel>) {
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        let extensions = &mut state.config_mut().options_mut().extensions;
        if extensions.get::<options::SessionOptions>().is_none() {
            extensions.insert(options::SessionOptions::default());
        }
    }
    ctx.register_udf(ScalarUDF::new_from_impl(SpanMarkerCandidates::new()));
    for kind in [InputKind::Words, InputKind::Text] {
        ctx.register_udf(ScalarUDF::new_from_impl(SpanMarkerPredict::new(
            kind,
            model.clone(),
        )));
    }
    ctx.register_udtf("span_marker_train", Arc::new(SpanMarkerTrain));
}
