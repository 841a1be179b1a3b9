//! Models shared by every engine function: loaded once per (source, device) and handed out as
//! [`SharedModel`] handles, so that all partitions of a query and all expressions of a lazy
//! pipeline use one copy of the weights.
//!
//! Their libtorch work (loading and predicting) runs on one thread of the process, whichever
//! thread asks for it. libtorch's CPU kernels run in OpenMP teams, one per calling thread, and
//! once the process holds more team threads than CPUs, libgomp stops spinning between parallel
//! regions and puts its threads to sleep and wakes them for every operation: on 2 cores the
//! same prediction ran at 6,700 sentences/s on the first thread that used libtorch and at 2,800
//! on a second one (100,000 context switches where there were 200), which made DataFusion's
//! partition threads, taking turns on a model, run at 40% of the direct API.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, LazyLock, Mutex, MutexGuard};
use std::thread::ThreadId;

use span_marker::device::parse_device;
use span_marker::model::LoadOptions;
use span_marker::{PredictOptions, PredictedEntity, RowPrediction, SentenceInput, SpanMarkerModel};

use crate::error::{Error, Result};

/// A loaded model that engine functions can share across threads.
///
/// libtorch tensors may move between threads but tch does not let them be shared, so the
/// model sits behind a mutex; predictions run on the model thread (see the module
/// documentation), one at a time, each using the process's intra-op threads.
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

/// Work for the model thread.
type Job = Box<dyn FnOnce() + Send>;

/// The one thread that runs the engine functions' libtorch work.
struct ModelThread {
    jobs: mpsc::Sender<Job>,
    id: ThreadId,
}

/// Started at first use; `None` if the thread could not be started (work then runs on the
/// calling threads).
static MODEL_THREAD: LazyLock<Option<ModelThread>> = LazyLock::new(|| {
    let (jobs, queue) = mpsc::channel::<Job>();
    let started = std::thread::Builder::new()
        .name("span-marker-model".into())
        .spawn(move || {
            for job in queue {
                // A job that panics drops its reply channel, which its caller reports; the
                // thread serves the next one.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        });
    match started {
        Ok(handle) => Some(ModelThread {
            jobs,
            id: handle.thread().id(),
        }),
        Err(error) => {
            tracing::warn!(%error, "no model thread: libtorch work runs on the calling threads");
            None
        }
    }
});

/// Runs `work` on the model thread and waits for its result (directly when called from that
/// thread, or when it could not be started). Other libtorch work of a process that uses the
/// engine functions belongs there too: a second thread running libtorch operations makes a
/// second OpenMP team, and with more team threads than cores every operation of both waits to
/// be woken (on 2 cores the tiny test model predicted CoNLL-2003 sentences at 1,100-1,850 per
/// second instead of 2,800-3,900 once the main thread had run one matrix product).
///
/// ```
/// let sum = span_marker_udfs::on_model_thread(|| {
///     tch::Tensor::from_slice(&[1.0f32, 2.0])
///         .sum(tch::Kind::Float)
///         .double_value(&[])
/// })?;
/// assert_eq!(sum, 3.0);
/// # Ok::<(), span_marker_udfs::Error>(())
/// ```
pub fn on_model_thread<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    let Some(thread) = &*MODEL_THREAD else {
        return Ok(work());
    };
    if std::thread::current().id() == thread.id {
        return Ok(work());
    }
    let (reply, answer) = mpsc::channel();
    thread
        .jobs
        .send(Box::new(move || {
            let _ = reply.send(work());
        }))
        .map_err(|_| Error::ModelThread("has stopped"))?;
    answer
        .recv()
        .map_err(|_| Error::ModelThread("failed (panicked) while working"))
}

/// A row's input, owned, to hand to the model thread.
enum OwnedInput {
    Words(Vec<String>),
    Text(String),
}

impl OwnedInput {
    fn new(input: SentenceInput<'_>) -> Self {
        match input {
            SentenceInput::Words(words) => {
                Self::Words(words.iter().map(|w| w.to_string()).collect())
            }
            SentenceInput::Text(text) => Self::Text(text.to_owned()),
        }
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

    /// The model at `source` (a SpanMarker directory, a Hugging Face id, or `bundled`: see
    /// [`span_marker::hub`]) on `device` (`cpu`, `cuda`, `cuda:N`, `auto`). Each (source,
    /// device) pair is loaded once per process; later calls return the same model.
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
        let owned_source = source.to_owned();
        let model = on_model_thread(move || {
            let options = LoadOptions {
                device: Some(device),
                ..Default::default()
            };
            SpanMarkerModel::from_pretrained_with(&owned_source, &options)
        })??;
        tracing::info!(source, ?device, "loaded SpanMarker model");
        let model = Self::new(source, model);
        loaded.insert(key, model.clone());
        Ok(model)
    }

    /// The device the model runs on.
    pub fn device(&self) -> tch::Device {
        self.lock().device()
    }

    /// Where the model came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The model's content digest ([`SpanMarkerModel::fingerprint`]): what resumable jobs
    /// record to know that they continue with the same weights, whatever the model's name.
    /// Computed anew at each call (it reads every weight), so that it follows changes made
    /// through [`lock`](Self::lock).
    pub fn fingerprint(&self) -> Result<String> {
        let model = Arc::clone(&self.model);
        Ok(on_model_thread(move || {
            model
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .fingerprint()
        })??)
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
        let owned: Vec<Option<OwnedInput>> =
            rows.iter().map(|row| row.map(OwnedInput::new)).collect();
        let options = options.clone();
        let model = Arc::clone(&self.model);
        on_model_thread(move || {
            let words: Vec<Option<Vec<&str>>> = owned
                .iter()
                .map(|row| match row {
                    Some(OwnedInput::Words(words)) => {
                        Some(words.iter().map(String::as_str).collect())
                    }
                    _ => None,
                })
                .collect();
            let rows: Vec<Option<SentenceInput<'_>>> = owned
                .iter()
                .zip(&words)
                .map(|(row, words)| match (row, words) {
                    (Some(OwnedInput::Text(text)), _) => Some(SentenceInput::Text(text)),
                    (Some(OwnedInput::Words(_)), Some(words)) => Some(SentenceInput::Words(words)),
                    _ => None,
                })
                .collect();
            let model = model
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            model.predict_rows_each(&rows, None, &options)
        })?
        .map_err(Into::into)
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
                    // The row goes beside the reason (callers renumber it within their
                    // input): the core's "row N: " prefix, counted within `rows`, would
                    // contradict it.
                    let text = error.to_string();
                    let reason = match text.strip_prefix(&format!("row {row}: ")) {
                        Some(reason) => reason.to_owned(),
                        None => text,
                    };
                    annotated.failed.push((row, reason));
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
