//! Entity-level scores as `seqeval` computes them (default mode) on IOB2 tags rebuilt from spans:
//! an entity counts when its label and both boundaries match exactly.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::labels::Entity;

/// Precision, recall and F1 of one label, and its number of gold entities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub number: usize,
}

/// Micro-averaged scores over all entities, word-level tag accuracy and per-label scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Fraction of words whose IOB2 tag (from the entities) is right.
    pub accuracy: f64,
    /// Scores per label name, for every label among the gold or predicted entities.
    pub per_label: BTreeMap<String, LabelScore>,
}

fn prf(correct: usize, predicted: usize, gold: usize) -> (f64, f64, f64) {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (p, r) = (ratio(correct, predicted), ratio(correct, gold));
    let f1 = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f1)
}

/// Tag of every word: 0 for outside, `2 * label + 1` for a first word, `2 * label + 2` inside.
fn iob2_codes(entities: &[Entity], num_words: usize) -> Vec<usize> {
    let mut codes = vec![0; num_words];
    for e in entities {
        for (w, code) in codes.iter_mut().enumerate().take(e.end).skip(e.start) {
            *code = 2 * e.label + if w == e.start { 1 } else { 2 };
        }
    }
    codes
}

/// Scores `predicted` against `gold` entities (per sentence, reduced label ids named by
/// `label_names`); `num_words` gives each sentence's length for the accuracy.
pub fn score_entities(
    gold: &[Vec<Entity>],
    predicted: &[Vec<Entity>],
    num_words: &[usize],
    label_names: &[String],
) -> EntityScores {
    let mut per_label: BTreeMap<usize, [usize; 3]> = BTreeMap::new(); // correct, predicted, gold
    let (mut words, mut right_words) = (0usize, 0usize);
    for ((gold, predicted), &n) in gold.iter().zip(predicted).zip(num_words) {
        let gold_set: HashSet<&Entity> = gold.iter().collect();
        for e in gold {
            per_label.entry(e.label).or_default()[2] += 1;
        }
        for e in predicted {
            let counts = per_label.entry(e.label).or_default();
            counts[1] += 1;
            counts[0] += usize::from(gold_set.contains(e));
        }
        let (g, p) = (iob2_codes(gold, n), iob2_codes(predicted, n));
        words += n;
        right_words += g.iter().zip(&p).filter(|(a, b)| a == b).count();
    }
    let total = per_label.values().fold([0; 3], |acc, c| {
        [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]]
    });
    let (precision, recall, f1) = prf(total[0], total[1], total[2]);
    let name = |id: usize| {
        label_names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    };
    EntityScores {
        precision,
        recall,
        f1,
        accuracy: if words == 0 {
            0.0
        } else {
            right_words as f64 / words as f64
        },
        per_label: per_label
            .into_iter()
            .map(|(label, [c, p, g])| {
                let (precision, recall, f1) = prf(c, p, g);
                (
                    name(label),
                    LabelScore {
                        precision,
                        recall,
                        f1,
                        number: g,
                    },
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["O", "LOC", "PER"].map(String::from).to_vec()
    }

    #[test]
    fn exact_boundaries_and_labels_are_required() {
        let gold = vec![
            vec![Entity::new(2, 0, 2), Entity::new(1, 3, 4)],
            vec![Entity::new(1, 0, 1)],
        ];
        // Right PER; LOC with a wrong boundary; an extra PER; the second sentence's LOC missed.
        let predicted = vec![
            vec![
                Entity::new(2, 0, 2),
                Entity::new(1, 3, 5),
                Entity::new(2, 5, 6),
            ],
            vec![],
        ];
        let scores = score_entities(&gold, &predicted, &[6, 2], &names());
        assert!((scores.precision - 1.0 / 3.0).abs() < 1e-12);
        assert!((scores.recall - 1.0 / 3.0).abs() < 1e-12);
        assert!((scores.f1 - 1.0 / 3.0).abs() < 1e-12);
        // Words: sentence 1 differs at words 4 and 5; sentence 2 at word 0 -> 5 of 8 right.
        assert!((scores.accuracy - 5.0 / 8.0).abs() < 1e-12);
        let per = &scores.per_label;
        assert_eq!(
            per["PER"],
            LabelScore {
                precision: 0.5,
                recall: 1.0,
                f1: 2.0 / 3.0,
                number: 1
            }
        );
        assert_eq!(
            per["LOC"],
            LabelScore {
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                number: 2
            }
        );
    }

    #[test]
    fn adjacent_entities_of_one_label_stay_apart() {
        // B-PER B-PER is two entities in IOB2; predicting one merged entity scores nothing.
        let gold = vec![vec![Entity::new(2, 0, 1), Entity::new(2, 1, 2)]];
        let merged = vec![vec![Entity::new(2, 0, 2)]];
        let scores = score_entities(&gold, &merged, &[2], &names());
        assert_eq!(scores.f1, 0.0);
        assert_eq!(scores.accuracy, 0.5);
    }

    #[test]
    fn nothing_to_score_gives_zeros() {
        let scores = score_entities(&[vec![]], &[vec![]], &[3], &names());
        assert_eq!(
            (scores.precision, scores.recall, scores.f1, scores.accuracy),
            (0.0, 0.0, 0.0, 1.0)
        );
        assert!(scores.per_label.is_empty());
    }
}
