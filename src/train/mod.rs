//! Training and evaluation of SpanMarker models.
//!
//! ```no_run
//! use span_marker::train::{NerDataset, Trainer, TrainingArguments};
//! use span_marker::SpanMarkerModel;
//!
//! let mut model = SpanMarkerModel::from_pretrained("tests/fixtures/span-marker/tiny-bert")?;
//! let labels = model.labels().clone();
//! let train = NerDataset::from_conll("examples/data/train.txt", &labels)?;
//! let test = NerDataset::from_conll("examples/data/test.txt", &labels)?;
//! let args = TrainingArguments { output_dir: "models/demo".into(), ..Default::default() };
//! let mut trainer = Trainer::new(&mut model, args)?;
//! trainer.train(&train, None, None)?;
//! println!("{:?}", trainer.evaluate(&test, "test")?.to_record());
//! # Ok::<(), span_marker::Error>(())
//! ```

pub mod args;
pub mod data;
pub mod evaluate;
pub mod optim;
mod phases;
#[cfg(feature = "plots")]
mod plot;
mod publish;
mod tensorboard;
pub mod trainer;

pub use args::{HubStrategy, Integration, IntervalStrategy, ReportTo, TrainingArguments};
pub use data::{read_conll, ConllSentence, NerDataset, NerExample};
pub use evaluate::{evaluate, Evaluation};
pub use phases::PhaseTimes;
pub use trainer::{check_output_dir, TrainOutput, Trainer, TrainerState};
