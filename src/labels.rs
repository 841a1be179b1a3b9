//! Labels: scheme detection, reduction to entity types, and tags -> entity spans.
//!
//! A label list is *schemed* when every label is `O` or looks like `X-TYPE` with `X` one of
//! `B I E L S U`. Schemed labels are reduced to `["O"] + sorted(types)`; unschemed lists are
//! used as they are. See `docs/algorithm.md`, section 2.
//!
//! ```
//! use span_marker::labels::{Entity, LabelScheme, Labels};
//!
//! let labels = Labels::new(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])?;
//! assert_eq!(labels.scheme(), LabelScheme::Iob);
//! assert_eq!(labels.reduced(), ["O", "LOC", "PER"]);
//! // `B-PER I-PER O B-LOC` -> PER over words 0..2, LOC over 3..4 (ends exclusive).
//! let entities = labels.tags_to_entities(&[1, 2, 0, 3], 0)?;
//! assert_eq!(entities, [Entity::new(2, 0, 2), Entity::new(1, 3, 4)]);
//! # Ok::<(), span_marker::Error>(())
//! ```

use std::collections::BTreeSet;
use std::fmt;

use crate::error::{Error, Result};

/// The name of the outside label, required in every label list.
pub const OUTSIDE: &str = "O";

/// The tagging scheme of a label list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelScheme {
    /// IOB or IOB2 (`B`, `I`, `O`).
    Iob,
    /// BIOES (`B`, `I`, `O`, `E`, `S`).
    Bioes,
    /// BILOU or BILO (`B`, `I`, `L`, `O` and optionally `U`).
    Bilou,
    /// One label per entity type, no prefixes.
    Unschemed,
}

impl fmt::Display for LabelScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LabelScheme::Iob => "IOB/IOB2",
            LabelScheme::Bioes => "BIOES",
            LabelScheme::Bilou => "BILOU/BILO",
            LabelScheme::Unschemed => "unschemed",
        })
    }
}

/// An entity over words `start..end` (end exclusive) with a reduced label id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entity {
    pub label: usize,
    pub start: usize,
    pub end: usize,
}

impl Entity {
    pub fn new(label: usize, start: usize, end: usize) -> Self {
        Self { label, start, end }
    }

    /// Length in words.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True for a zero-length entity (never produced by tag conversion).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// A validated label list with its scheme and reduction.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    original: Vec<String>,
    reduced: Vec<String>,
    /// Original id -> reduced id (the identity for unschemed lists).
    id2reduced: Vec<usize>,
    scheme: LabelScheme,
    /// Reduced id of `O`.
    outside: usize,
    /// Per original id: does this tag open / close an entity (schemed lists only).
    opens: Vec<bool>,
    closes: Vec<bool>,
}

fn is_schemed_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    label == OUTSIDE
        || (label.chars().count() > 2 && b"BIELSU".contains(&bytes[0]) && bytes[1] == b'-')
}

impl Labels {
    /// Validates a label list, detects its scheme and computes the reduction.
    pub fn new<S: AsRef<str>>(labels: impl IntoIterator<Item = S>) -> Result<Self> {
        let original: Vec<String> = labels.into_iter().map(|l| l.as_ref().to_owned()).collect();
        if !original.iter().any(|l| l == OUTSIDE) {
            return Err(Error::Labels(format!(
                "there must be an {OUTSIDE:?} label in the label list, got {original:?}"
            )));
        }
        let mut seen = BTreeSet::new();
        if let Some(dup) = original.iter().find(|l| !seen.insert(l.as_str())) {
            return Err(Error::Labels(format!(
                "label {dup:?} appears twice in {original:?}"
            )));
        }

        if !original.iter().all(|l| is_schemed_label(l)) {
            let outside = original
                .iter()
                .position(|l| l == OUTSIDE)
                .unwrap_or_default();
            let n = original.len();
            return Ok(Self {
                reduced: original.clone(),
                original,
                id2reduced: (0..n).collect(),
                scheme: LabelScheme::Unschemed,
                outside,
                opens: vec![false; n],
                closes: vec![false; n],
            });
        }

        let prefixes: BTreeSet<char> = original.iter().filter_map(|l| l.chars().next()).collect();
        let has = |s: &str| prefixes == s.chars().collect::<BTreeSet<char>>();
        let (scheme, open, close) = if has("BIO") {
            (LabelScheme::Iob, "BI", "BO")
        } else if has("BIOES") {
            (LabelScheme::Bioes, "BS", "BOS")
        } else if has("BILOU") || has("BILO") {
            (LabelScheme::Bilou, "BU", "BOU")
        } else {
            let found: String = prefixes.iter().collect();
            return Err(Error::Labels(format!(
                "labeling scheme not recognised: prefixes {found:?} in {original:?}; expected IOB/IOB2 (B, I, O), \
                 BIOES (B, I, O, E, S), BILOU (B, I, L, O, U), BILO, or no scheme (one label per entity type)"
            )));
        };

        let types: BTreeSet<&str> = original
            .iter()
            .filter(|l| *l != OUTSIDE)
            .map(|l| &l[2..])
            .collect();
        let reduced: Vec<String> = std::iter::once(OUTSIDE)
            .chain(types)
            .map(str::to_owned)
            .collect();
        let id2reduced = original
            .iter()
            .map(|l| {
                let name = if l == OUTSIDE { OUTSIDE } else { &l[2..] };
                reduced.iter().position(|r| r == name).unwrap_or_default()
            })
            .collect();
        let prefix_in = |set: &str| -> Vec<bool> {
            original
                .iter()
                .map(|l| l.chars().next().is_some_and(|c| set.contains(c)))
                .collect()
        };
        Ok(Self {
            opens: prefix_in(open),
            closes: prefix_in(close),
            original,
            reduced,
            id2reduced,
            scheme,
            outside: 0,
        })
    }

    /// Uses a reduction stored in a checkpoint (`id2reduced_id` and the reduced `id2label`)
    /// after checking that it agrees with the one computed from the original labels.
    pub fn with_stored_reduction(
        self,
        reduced: &[String],
        id2reduced: Option<&[usize]>,
    ) -> Result<Self> {
        if reduced != self.reduced.as_slice() {
            return Err(Error::Labels(format!(
                "the stored reduced labels {reduced:?} do not match {:?}, the reduction of {:?}",
                self.reduced, self.original
            )));
        }
        if let Some(stored) = id2reduced {
            if stored != self.id2reduced.as_slice() {
                return Err(Error::Labels(format!(
                    "the stored `id2reduced_id` {stored:?} does not match {:?}, computed from {:?}",
                    self.id2reduced, self.original
                )));
            }
        }
        Ok(self)
    }

    /// The labels as given (tag ids index this list).
    pub fn original(&self) -> &[String] {
        &self.original
    }

    /// The entity types the model classifies into, `O` included.
    pub fn reduced(&self) -> &[String] {
        &self.reduced
    }

    /// Original id -> reduced id.
    pub fn id2reduced(&self) -> &[usize] {
        &self.id2reduced
    }

    pub fn scheme(&self) -> LabelScheme {
        self.scheme
    }

    /// Reduced id of the `O` label.
    pub fn outside_id(&self) -> usize {
        self.outside
    }

    /// Number of reduced labels (the classifier's output size).
    pub fn num_reduced(&self) -> usize {
        self.reduced.len()
    }

    /// Original id of a tag string such as `"B-PER"`.
    pub fn tag_id(&self, tag: &str) -> Option<usize> {
        self.original.iter().position(|l| l == tag)
    }

    /// Reduced id of an entity type such as `"PER"`.
    pub fn reduced_id(&self, label: &str) -> Option<usize> {
        self.reduced.iter().position(|l| l == label)
    }

    /// Converts one sentence's tag ids into entities, as the reference's label normalisers do.
    ///
    /// `row` only serves error messages. Ids outside the label list are an error.
    pub fn tags_to_entities(&self, tags: &[i64], row: usize) -> Result<Vec<Entity>> {
        let ids = tags
            .iter()
            .enumerate()
            .map(|(word, &tag)| {
                usize::try_from(tag)
                    .ok()
                    .filter(|&id| id < self.original.len())
                    .ok_or(Error::TagOutOfRange {
                        row,
                        word,
                        tag,
                        num_labels: self.original.len(),
                    })
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(match self.scheme {
            LabelScheme::Unschemed => self.unschemed_entities(&ids),
            _ => self.schemed_entities(&ids),
        })
    }

    fn schemed_entities(&self, ids: &[usize]) -> Vec<Entity> {
        let mut entities = Vec::new();
        let mut open: Option<(usize, usize)> = None; // (reduced label, start)
        for (idx, &id) in ids.iter().enumerate() {
            if let Some((label, start)) = open {
                if self.closes[id] {
                    entities.push(Entity::new(label, start, idx));
                    open = None;
                }
            }
            if open.is_none() && self.opens[id] {
                open = Some((self.id2reduced[id], idx));
            }
        }
        if let Some((label, start)) = open {
            entities.push(Entity::new(label, start, ids.len()));
        }
        entities
    }

    fn unschemed_entities(&self, ids: &[usize]) -> Vec<Entity> {
        let mut entities = Vec::new();
        let mut open: Option<(usize, usize)> = None;
        for (idx, &id) in ids.iter().enumerate() {
            if let Some((label, start)) = open {
                if id != label {
                    entities.push(Entity::new(label, start, idx));
                    open = None;
                }
            }
            if open.is_none() && id != self.outside {
                open = Some((id, idx));
            }
        }
        if let Some((label, start)) = open {
            entities.push(Entity::new(label, start, ids.len()));
        }
        entities
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conll() -> Labels {
        Labels::new([
            "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
        ])
        .unwrap()
    }

    #[test]
    fn conll_reduction_matches_the_spec() {
        let labels = conll();
        assert_eq!(labels.reduced(), ["O", "LOC", "MISC", "ORG", "PER"]);
        assert_eq!(labels.id2reduced(), [0, 4, 4, 3, 3, 1, 1, 2, 2]);
        assert_eq!(labels.outside_id(), 0);
    }

    #[test]
    fn iob_quirks_follow_the_reference() {
        let labels = conll();
        // B-PER I-LOC O: one PER over 0..2, the label comes from the opening tag.
        assert_eq!(
            labels.tags_to_entities(&[1, 6, 0], 0).unwrap(),
            [Entity::new(4, 0, 2)]
        );
        // I-PER I-PER O B-PER B-PER
        let e = labels.tags_to_entities(&[2, 2, 0, 1, 1], 0).unwrap();
        assert_eq!(
            e,
            [
                Entity::new(4, 0, 2),
                Entity::new(4, 3, 4),
                Entity::new(4, 4, 5)
            ]
        );
    }

    #[test]
    fn bioes_b_e_b_e_gives_two_entities() {
        let labels = Labels::new(["O", "B-X", "I-X", "E-X", "S-X"]).unwrap();
        assert_eq!(labels.scheme(), LabelScheme::Bioes);
        let e = labels.tags_to_entities(&[1, 3, 1, 3], 0).unwrap();
        assert_eq!(e, [Entity::new(1, 0, 2), Entity::new(1, 2, 4)]);
    }

    #[test]
    fn empty_sentence_has_no_entities() {
        assert!(conll().tags_to_entities(&[], 0).unwrap().is_empty());
    }

    #[test]
    fn out_of_range_tags_name_row_and_word() {
        let err = conll().tags_to_entities(&[0, 9], 7).unwrap_err();
        assert!(matches!(
            err,
            Error::TagOutOfRange {
                row: 7,
                word: 1,
                tag: 9,
                num_labels: 9
            }
        ));
        let err = conll().tags_to_entities(&[-100], 3).unwrap_err();
        assert!(err.to_string().contains("row 3"), "{err}");
    }

    #[test]
    fn missing_outside_and_duplicates_are_refused() {
        assert!(Labels::new(["B-PER", "I-PER"])
            .unwrap_err()
            .to_string()
            .contains("\"O\""));
        assert!(Labels::new(Vec::<String>::new()).is_err());
        assert!(Labels::new(["O", "PER", "PER"])
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn stored_reduction_must_agree() {
        let labels = conll();
        let reduced: Vec<String> = labels.reduced().to_vec();
        let ok = labels
            .clone()
            .with_stored_reduction(&reduced, Some(&[0, 4, 4, 3, 3, 1, 1, 2, 2]));
        assert!(ok.is_ok());
        let bad = labels.with_stored_reduction(&reduced, Some(&[0, 1, 1, 3, 3, 4, 4, 2, 2]));
        assert!(bad.is_err());
    }
}
