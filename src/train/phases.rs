//! Where a training run's wall time goes, by phase: what `span-marker train` reports at its end
//! and the benchmark prints per model shape.
//!
//! Each phase is timed on the host around the work it names. On a CPU that is the work itself;
//! on CUDA a phase counts the time the host spends issuing its kernels plus any wait for the
//! device (reading the loss to log it, for one), so there the shares say where the host waits.
//!
//! ```
//! use span_marker::train::PhaseTimes;
//!
//! let mut phases = PhaseTimes::default();
//! let sum = phases.time(|p| &mut p.forward, || (1..=1000u64).sum::<u64>());
//! assert_eq!(sum, 500_500);
//! assert!(phases.forward >= 0.0);
//! assert!(phases.to_string().contains("forward"));
//! ```

use std::fmt;
use std::time::Instant;

use serde::Serialize;

/// Seconds of wall time by phase of one training run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PhaseTimes {
    /// Before the trainer: the process starting, the model and the data loading (set by the
    /// caller that knows: `span-marker train` counts all of the process's time that no other
    /// phase counts; 0 otherwise).
    pub startup: f64,
    /// Checking and encoding the data (tokenizing, building the spans), restoring a checkpoint,
    /// setting up the optimizer and the log.
    pub prepare: f64,
    /// Building each batch's tensors from encoded samples.
    pub collate: f64,
    pub forward: f64,
    pub backward: f64,
    /// Clipping, the optimizer step and zeroing the gradients.
    pub optimizer: f64,
    /// Reading the loss back and writing log records (TensorBoard, progress).
    pub logging: f64,
    pub evaluation: f64,
    /// Checkpoints during the run.
    pub checkpoints: f64,
    /// The final report and save of the model, its card and curves.
    pub finish: f64,
}

impl PhaseTimes {
    /// Runs `work`, adding its wall time to the phase `slot` picks.
    pub fn time<T>(
        &mut self,
        slot: impl FnOnce(&mut Self) -> &mut f64,
        work: impl FnOnce() -> T,
    ) -> T {
        let started = Instant::now();
        let result = work();
        *slot(self) += started.elapsed().as_secs_f64();
        result
    }

    /// The phases by name, in order.
    pub fn entries(&self) -> [(&'static str, f64); 10] {
        [
            ("startup", self.startup),
            ("prepare", self.prepare),
            ("collate", self.collate),
            ("forward", self.forward),
            ("backward", self.backward),
            ("optimizer", self.optimizer),
            ("logging", self.logging),
            ("evaluation", self.evaluation),
            ("checkpoints", self.checkpoints),
            ("finish", self.finish),
        ]
    }

    /// The sum of the phases.
    pub fn total(&self) -> f64 {
        self.entries().iter().map(|(_, s)| s).sum()
    }
}

/// `forward 12.3 s (45%), backward ...`: each phase that took time, with its share of the
/// total.
impl fmt::Display for PhaseTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total().max(1e-9);
        let mut first = true;
        for (name, seconds) in self.entries() {
            if seconds < 0.0005 && name != "forward" {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name} {seconds:.2} s ({:.0}%)", 100.0 * seconds / total)?;
        }
        Ok(())
    }
}
