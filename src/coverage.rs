//! The entity coverage report: how many annotated entities the model can never predict.
//!
//! An entity is out of reach when it is longer than `entity_max_length` words, or (only in the
//! rare case where a few words alone exceed the token budget) when its span does not fit one
//! window of the input. See `docs/algorithm.md`, section 9.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Counts of annotated and unreachable entities for one dataset split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityCoverage {
    /// `train`, `evaluation`, `test`, ...
    pub split: String,
    pub entity_max_length: usize,
    pub model_max_length: usize,
    /// Distinct annotated entities seen.
    pub total: usize,
    /// Entities longer than `entity_max_length`, by length in words.
    pub missed_by_length: BTreeMap<usize, usize>,
    /// Entities within the length limit whose words do not fit one input window.
    pub missed_by_input_length: usize,
}

impl EntityCoverage {
    pub fn new(
        split: impl Into<String>,
        entity_max_length: usize,
        model_max_length: usize,
    ) -> Self {
        Self {
            split: split.into(),
            entity_max_length,
            model_max_length,
            ..Self::default()
        }
    }

    /// Records one entity that cannot be predicted.
    pub fn missed(&mut self, length: usize) {
        if length > self.entity_max_length {
            *self.missed_by_length.entry(length).or_default() += 1;
        } else {
            self.missed_by_input_length += 1;
        }
    }

    /// All unreachable entities.
    pub fn total_missed(&self) -> usize {
        self.missed_by_length.values().sum::<usize>() + self.missed_by_input_length
    }

    /// Merges the counts of another part of the same split.
    pub fn merge(&mut self, other: &EntityCoverage) {
        self.total += other.total;
        self.missed_by_input_length += other.missed_by_input_length;
        for (&len, &n) in &other.missed_by_length {
            *self.missed_by_length.entry(len).or_default() += n;
        }
    }

    /// The report in the reference's words, or `None` when nothing is missed.
    pub fn report(&self) -> Option<String> {
        let missed = self.total_missed();
        if missed == 0 || self.total == 0 {
            return None;
        }
        let pct = |n: usize| format!("{:.6}%", 100.0 * n as f64 / self.total as f64);
        let plural = |n: usize| if n > 1 { "s" } else { "" };
        let verb = if self.split == "train" {
            "will ignore"
        } else {
            "won't be able to predict"
        };
        let mut msg = format!(
            "This SpanMarker model {verb} {} of all annotated entities in the {} dataset. This is caused by the SpanMarkerModel ",
            pct(missed),
            self.split
        );
        let by_length = !self.missed_by_length.is_empty();
        let by_input = self.missed_by_input_length > 0;
        if by_length {
            let e = self.entity_max_length;
            let _ = write!(msg, "maximum entity length of {e} word{}", plural(e));
            if by_input {
                msg.push_str(" and the ");
            }
        }
        if by_input {
            let m = self.model_max_length;
            let _ = write!(msg, "maximum model input length of {m} token{}", plural(m));
        }
        msg.push('.');
        if by_length {
            let _ = write!(
                msg,
                "\nThese are the frequencies of the missed entities due to maximum entity length out of {} total entities:",
                self.total
            );
            for (&len, &n) in &self.missed_by_length {
                let _ = write!(
                    msg,
                    "\n- {n} missed entities with {len} word{} ({})",
                    plural(len),
                    pct(n)
                );
            }
        }
        if by_input {
            let _ = write!(
                msg,
                "\n{} total of {} ({}) entities were missed due to the maximum input length.",
                if by_length { "Additionally, a" } else { "A" },
                self.missed_by_input_length,
                pct(self.missed_by_input_length)
            );
        }
        Some(msg)
    }

    /// Logs the report through `tracing` (a warning) when anything is missed.
    pub fn log(&self) {
        if let Some(report) = self.report() {
            tracing::warn!(split = %self.split, missed = self.total_missed(), total = self.total, "{report}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_matches_the_reference_wording() {
        let mut c = EntityCoverage::new("train", 6, 256);
        c.total = 23499;
        for _ in 0..18 {
            c.missed(7);
        }
        for _ in 0..5 {
            c.missed(8);
        }
        let report = c.report().unwrap();
        assert!(report.starts_with(
            "This SpanMarker model will ignore 0.097877% of all annotated entities in the train dataset. \
             This is caused by the SpanMarkerModel maximum entity length of 6 words."
        ), "{report}");
        assert!(
            report.contains("\n- 18 missed entities with 7 words (0.076599%)"),
            "{report}"
        );
    }

    #[test]
    fn nothing_missed_means_no_report() {
        let mut c = EntityCoverage::new("test", 8, 512);
        c.total = 10;
        assert_eq!(c.report(), None);
        c.missed(2);
        let report = c.report().unwrap();
        assert!(
            report.contains("won't be able to predict 10.000000%"),
            "{report}"
        );
        assert!(
            report.contains("maximum model input length of 512 tokens"),
            "{report}"
        );
    }
}
