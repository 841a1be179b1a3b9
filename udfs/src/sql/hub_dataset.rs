//! `hf_dataset(id, split[, config[, revision]])`: a split of a Hugging Face Hub dataset as a
//! table.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::plan_err;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};

use super::train::string_argument;
use crate::sources::{open_parquet, TableSource};

/// `SELECT * FROM hf_dataset('conll2003', 'train')` reads a split of a Hub dataset: its Parquet
/// files (or the Hub's Parquet conversion), downloaded once into the Hugging Face cache
/// (`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` as for the Python tools) when the
/// query is planned. A third argument names the config, a fourth the revision (`main` when
/// left out).
///
/// The table's schema keeps the files' `huggingface` metadata, so that `span_marker_train`
/// over it takes the tags' label names from their `ClassLabel` feature.
#[derive(Debug, Default)]
pub struct HubDatasetFunction;

/// The name the function is registered under.
pub const HUB_DATASET_FUNCTION: &str = "hf_dataset";

impl TableFunctionImpl for HubDatasetFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=4).contains(&exprs.len()) {
            return plan_err!(
                "{HUB_DATASET_FUNCTION}(id, split[, config[, revision]]) takes 2 to 4 arguments, \
                 got {}",
                exprs.len()
            );
        }
        let argument =
            |index: usize, name: &str| string_argument(exprs, index, name, HUB_DATASET_FUNCTION);
        let id = argument(0, "id")?;
        let split = argument(1, "split")?;
        let config = (exprs.len() > 2)
            .then(|| argument(2, "config"))
            .transpose()?;
        let revision = (exprs.len() > 3)
            .then(|| argument(3, "revision"))
            .transpose()?;
        let source = TableSource {
            config,
            revision,
            ..TableSource::hub_dataset(id, split)
        };
        let found = source
            .hub_split()
            .map_err(external)?
            .expect("a dataset source");
        let first = found
            .files
            .first()
            .ok_or_else(|| DataFusionError::Plan(format!("{} has no files", source.name())))?;
        let schema = open_parquet(first).map_err(external)?.schema().clone();
        let urls = found
            .files
            .iter()
            .map(|file| ListingTableUrl::parse(file.to_string_lossy()))
            .collect::<Result<Vec<_>>>()?;
        // The cache's files are links to blobs named by content id, without an extension.
        let format = ParquetFormat::default().with_skip_metadata(false);
        let listing = ListingOptions::new(Arc::new(format)).with_file_extension("");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(listing)
            .with_schema(schema);
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}

fn external(error: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}
