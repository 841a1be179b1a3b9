//! # SpanMarker in Rust
//!
//! Span-based named-entity recognition after PL-Marker, compatible with Python
//! [`span_marker`](https://github.com/tomaarsen/SpanMarkerNER) checkpoints.
//!
//! Every candidate span of up to `entity_max_length` words gets a start and an end marker token
//! that share position ids with the span's boundary tokens; the encoder reads the text plus the
//! markers under an attention mask that keeps the text blind to the markers, and a linear head
//! classifies each span from its two marker states.
//!
//! The preprocessing flow, stage by stage (each stage is one module):
//!
//! 1. [`labels`]: detect the tagging scheme, reduce `B-PER`/`I-PER` to `PER`, turn tags into entities;
//! 2. [`tokenizer`]: words (pre-split or from text) to token ids with word boundaries;
//! 3. [`spans`]: the candidate spans;
//! 4. [`encoding`]: marker positions, windows for long sentences, spreading over samples;
//! 5. [`context`]: optional document context from neighbouring sentences;
//! 6. [`collate`]: the `T`-length `input_ids`, `position_ids` and labels, with what the
//!    attention pattern follows from (the dense 3-D mask on demand: `Batch::attention_mask`).
//!
//! [`Preprocessor`] runs them all:
//!
//! ```no_run
//! use span_marker::{Preprocessor, SentenceInput};
//!
//! let preprocessor = Preprocessor::from_dir("tests/fixtures/span-marker/tiny-bert")?;
//! let words = ["Tom", "lives", "in", "Berlin", "."];
//! let encoded = preprocessor.encode(&[Some(SentenceInput::Words(&words))])?;
//! let batch = encoded.collate(0..encoded.samples.len(), &preprocessor.collate_spec(), tch::Device::Cpu)?;
//! assert_eq!(batch.input_ids.size()[1], preprocessor.settings().total_length() as i64);
//! # Ok::<(), span_marker::Error>(())
//! ```
//!
//! ## Threads
//!
//! Run all libtorch work of a process (loading, predicting, training) on one thread. libtorch
//! gives every calling thread its own OpenMP team, and once a process holds more team threads
//! than CPUs, libgomp sleeps and wakes its threads for every operation: on 2 cores a prediction
//! ran at 2,800 sentences/s on a second thread against 6,700 on the first. The engine crate
//! (`span-marker-udfs`) does this for its functions with one model thread.

pub mod atomic;
pub mod checkpoint;
pub mod collate;
pub mod config;
pub mod context;
pub mod coverage;
pub mod device;
pub mod encoding;
pub mod error;
mod ffi;
pub mod fingerprint;
pub mod hub;
pub mod labels;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod predict;
pub mod preprocess;
pub mod spans;
pub mod tokenizer;
pub mod train;

pub use config::{ModelSettings, SpanMarkerConfig};
pub use error::{Error, Result};
pub use hub::BUNDLED;
pub use labels::{Entity, Labels};
pub use model::{LoadOptions, SpanMarkerModel};
pub use predict::{PredictOptions, PredictedEntity, RowPrediction};
pub use preprocess::{EncodeOptions, Encoded, Preprocessor};
pub use tokenizer::{SentenceInput, SpanMarkerTokenizer, TokenizedSentence};
