//! Annotated sentences for training and evaluation.

use std::path::Path;

use crate::context::DocumentPosition;
use crate::error::{Error, Result};
use crate::labels::Labels;

/// One annotated sentence: words, one tag id per word (ids into the model's original label
/// list, like `ner_tags` in Hugging Face datasets) and optionally its place in a document.
#[derive(Debug, Clone, PartialEq)]
pub struct NerExample {
    pub tokens: Vec<String>,
    pub tags: Vec<i64>,
    pub document: Option<DocumentPosition>,
}

/// Annotated sentences in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NerDataset {
    pub examples: Vec<NerExample>,
}

impl NerDataset {
    pub fn new(examples: Vec<NerExample>) -> Self {
        Self { examples }
    }

    /// Reads a CoNLL-style file: `word TAG` per line (the tag is the last column), a blank line
    /// between sentences. Tags must be in `labels`; an unknown tag is an error naming the line.
    pub fn from_conll(path: impl AsRef<Path>, labels: &Labels) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut examples = Vec::new();
        let (mut tokens, mut tags) = (Vec::new(), Vec::new());
        let mut flush = |tokens: &mut Vec<String>, tags: &mut Vec<i64>| {
            if !tokens.is_empty() {
                examples.push(NerExample {
                    tokens: std::mem::take(tokens),
                    tags: std::mem::take(tags),
                    document: None,
                });
            }
        };
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("-DOCSTART-") {
                flush(&mut tokens, &mut tags);
                continue;
            }
            let mut columns = line.split_whitespace();
            let (Some(word), Some(tag)) = (columns.next(), line.split_whitespace().last()) else {
                unreachable!("a non-empty trimmed line has a first and a last column")
            };
            if columns.next().is_none() {
                return Err(Error::Config(format!(
                    "{}:{}: expected `word TAG`, found {line:?}",
                    path.display(),
                    number + 1
                )));
            }
            let id = labels.tag_id(tag).ok_or_else(|| {
                Error::Labels(format!(
                    "{}:{}: tag {tag:?} is not in the label list {:?}",
                    path.display(),
                    number + 1,
                    labels.original()
                ))
            })?;
            tokens.push(word.to_owned());
            tags.push(id as i64);
        }
        flush(&mut tokens, &mut tags);
        Ok(Self { examples })
    }

    /// The label list of a CoNLL-style file: `O` first, then the other tags sorted, for making a
    /// new model when no label list is given.
    pub fn conll_labels(path: impl AsRef<Path>) -> Result<Vec<String>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let tags: std::collections::BTreeSet<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-DOCSTART-"))
            .filter_map(|l| l.split_whitespace().last())
            .filter(|&t| t != "O")
            .collect();
        Ok(std::iter::once("O")
            .chain(tags)
            .map(str::to_owned)
            .collect())
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        indices
            .iter()
            .map(|&i| {
                self.examples.get(i).cloned().ok_or_else(|| {
                    Error::Config(format!(
                        "index {i} is outside the dataset of {} rows",
                        self.len()
                    ))
                })
            })
            .collect::<Result<_>>()
            .map(Self::new)
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conll_files_are_read_and_bad_lines_named() {
        let labels = Labels::new(["O", "B-PER", "I-PER"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txt");
        std::fs::write(
            &path,
            "-DOCSTART- O\n\nTom B-PER\nruns O\n\n\nAnn B-PER\nLee I-PER\n",
        )
        .unwrap();
        let data = NerDataset::from_conll(&path, &labels).unwrap();
        assert_eq!(
            NerDataset::conll_labels(&path).unwrap(),
            ["O", "B-PER", "I-PER"]
        );
        assert_eq!(data.len(), 2);
        assert_eq!(data.examples[1].tokens, ["Ann", "Lee"]);
        assert_eq!(data.examples[1].tags, [1, 2]);

        std::fs::write(&path, "Tom B-PER\nParis B-LOC\n").unwrap();
        let err = NerDataset::from_conll(&path, &labels)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.txt:2") && err.contains("B-LOC"), "{err}");
        std::fs::write(&path, "Tom\n").unwrap();
        let err = NerDataset::from_conll(&path, &labels)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.txt:1") && err.contains("word TAG"), "{err}");
    }
}
