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

/// One sentence of a CoNLL-style file, tags as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConllSentence {
    pub words: Vec<String>,
    pub tags: Vec<String>,
    /// Line number (1-based) of its first word.
    pub first_line: usize,
}

/// Reads a CoNLL-style file: `word TAG` per line (the tag is the last column, middle columns
/// are ignored), a blank line or `-DOCSTART-` between sentences. A line with one column is an
/// error naming the line.
pub fn read_conll(path: impl AsRef<Path>) -> Result<Vec<ConllSentence>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut sentences = Vec::new();
    let mut current: Option<ConllSentence> = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("-DOCSTART-") {
            sentences.extend(current.take());
            continue;
        }
        let columns: Vec<&str> = line.split_whitespace().collect();
        let [word, .., tag] = columns[..] else {
            return Err(Error::Config(format!(
                "{}:{}: expected `word TAG`, found {line:?}",
                path.display(),
                number + 1
            )));
        };
        let sentence = current.get_or_insert_with(|| ConllSentence {
            words: Vec::new(),
            tags: Vec::new(),
            first_line: number + 1,
        });
        sentence.words.push(word.to_owned());
        sentence.tags.push(tag.to_owned());
    }
    sentences.extend(current);
    Ok(sentences)
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
        let examples = read_conll(path)?
            .into_iter()
            .map(|sentence| {
                let tags = sentence
                    .tags
                    .iter()
                    .zip(sentence.first_line..)
                    .map(|(tag, line)| {
                        labels.tag_id(tag).map(|id| id as i64).ok_or_else(|| {
                            Error::Labels(format!(
                                "{}:{line}: tag {tag:?} is not in the label list {:?}",
                                path.display(),
                                labels.original()
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(NerExample {
                    tokens: sentence.words,
                    tags,
                    document: None,
                })
            })
            .collect::<Result<_>>()?;
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
