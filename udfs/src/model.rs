//! Models shared by every engine function: loaded once per (source, device) and handed out as
//! [`SharedModel`] handles, so that all partitions of a query and all expressions of a lazy
//! pipeline use one copy of the weights.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use span_marker::device::parse_device;
use span_marker::model::LoadOptions;
use span_marker::{PredictOptions, PredictedEntity, RowPrediction, SentenceInput, SpanMarkerModel};

use crate::error::Result;

/// The model source that names the small model embedded in the core crate
/// ([`SpanMarkerModel::bundled`], a small BERT trained on CoNLL-2003): no files, no network.
pub const BUNDLED_MODEL: &str = "bundled";

/// A loaded model that engine functions can share across threads.
///
/// libtorch tensors may move between threads but tch does not let them be shared, so the
/// model sits behind a mutex: partitions take turns for the forward pass, each of which uses
/// all intra-op threads.
#[derive(Clone)]
pub struct SharedModel {
    source: Arc<str>,
    model: Arc<Mutex<SpanMarkerModel>>,
}

impl std::fmt::Debug for SharedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedModel")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Two handles are equal when they share one model.
impl PartialEq for SharedModel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.model, &other.model)
    }
}

impl Eq for SharedModel {}

impl std::hash::Hash for SharedModel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.model).hash(state);
    }
}

type Cache = Mutex<HashMap<(String, String), SharedModel>>;
static LOADED: LazyLock<Cache> = LazyLock::new(Default::default);

impl SharedModel {
    /// Wraps a model loaded by the caller; `source` names it in messages.
    pub fn new(source: impl Into<String>, model: SpanMarkerModel) -> Self {
        Self {
            source: source.into().into(),
            model: Arc::new(Mutex::new(model)),
        }
    }

    /// The model at `source` (a SpanMarker directory, a Hugging Face id, or [`BUNDLED_MODEL`])
    /// on `device` (`cpu`, `cuda`, `cuda:N`, `auto`). Each (source, device) pair is loaded
    /// once per process; later calls return the same model.
    ///
    /// ```no_run
    /// use span_marker_udfs::SharedModel;
    /// let model = SharedModel::load("bundled", "cpu")?;
    /// # Ok::<(), span_marker_udfs::Error>(())
    /// ```
    pub fn load(source: &str, device: &str) -> Result<Self> {
        let key = (source.to_owned(), device.trim().to_ascii_lowercase());
        let mut loaded = LOADED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(model) = loaded.get(&key) {
            return Ok(model.clone());
        }
        let device = parse_device(device)?;
        let model = if source == BUNDLED_MODEL {
            let mut model = SpanMarkerModel::bundled()?;
            model.to_device(device);
            model
        } else {
            let options = LoadOptions {
                device: Some(device),
                ..Default::default()
            };
            SpanMarkerModel::from_pretrained_with(source, &options)?
        };
        tracing::info!(source, ?device, "loaded SpanMarker model");
        let model = Self::new(source, model);
        loaded.insert(key, model.clone());
        Ok(model)
    }

    /// Where the model came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Exclusive access to the model (for configuration, saving or direct calls).
    pub fn lock(&self) -> MutexGuard<'_, SpanMarkerModel> {
        self.model
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Entities per row, one forward pass per batch of samples across all rows; a row that
    /// cannot be encoded gets its own error (see [`SpanMarkerModel::predict_rows_each`]).
    pub fn predict_rows(
        &self,
        rows: &[Option<SentenceInput<'_>>],
        options: &PredictOptions,
    ) -> Result<Vec<RowPrediction>> {
        Ok(self.lock().predict_rows_each(rows, None, options)?)
    }

    /// Entities per row, with the rows that got none because they failed, here or before
    /// (`failed`: rows the caller could not read, given as `None` in `rows`).
    pub fn annotate_rows(
        &self,
        rows: &[Option<SentenceInput<'_>>],
        options: &PredictOptions,
        failed: Vec<(usize, String)>,
    ) -> Result<Annotated> {
        let mut annotated = Annotated {
            entities: Vec::with_capacity(rows.len()),
            failed,
        };
        for (row, prediction) in self.predict_rows(rows, options)?.into_iter().enumerate() {
            match prediction {
                Ok(entities) => annotated.entities.push(entities),
                Err(error) => {
                    annotated.failed.push((row, error.to_string()));
                    annotated.entities.push(None);
                }
            }
        }
        annotated.failed.sort();
        Ok(annotated)
    }
}

/// What [`SharedModel::annotate_rows`] made of a batch of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotated {
    /// Per row, its entities; `None` for a null row or a failed one.
    pub entities: Vec<Option<Vec<PredictedEntity>>>,
    /// The rows that failed, in row order, with the reason.
    pub failed: Vec<(usize, String)>,
}
