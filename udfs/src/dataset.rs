//! Annotated rows from any engine (Arrow record batches, Polars frames) into the core's
//! [`NerDataset`]: tags as ids into a label list or as strings (`B-PER`, `I-LOC`, `O`) mapped
//! automatically, and optional document positions for document-level context.

use std::collections::BTreeSet;

use span_marker::context::DocumentPosition;
use span_marker::train::{NerDataset, NerExample};
use span_marker::Labels;

use crate::error::{Error, Result};

/// Tags of every row, as read from a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Tags {
    /// Ids into a label list (`ner_tags` in Hugging Face datasets).
    Ids(Vec<Vec<i64>>),
    /// Tag strings such as `B-PER`.
    Names(Vec<Vec<String>>),
}

/// Annotated sentences as read from a table, before they are checked against a label list.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotatedRows {
    /// Names the table in errors (a file path, `query`, `LazyFrame`).
    pub source: String,
    pub tokens: Vec<Vec<String>>,
    pub tags: Tags,
    /// Per row, its document and position, when the table has `document_id`/`sentence_id`.
    pub documents: Option<Vec<DocumentPosition>>,
    /// The label names that integer tags index into, when the table stores them (the
    /// `ClassLabel` feature of a Hugging Face dataset).
    pub labels: Option<Vec<String>>,
}

impl AnnotatedRows {
    /// Distinct tag strings, or `None` for id tags.
    fn tag_names(&self) -> Option<BTreeSet<&str>> {
        match &self.tags {
            Tags::Ids(_) => None,
            Tags::Names(rows) => Some(rows.iter().flatten().map(String::as_str).collect()),
        }
    }

    /// The rows as a dataset whose tags are ids into `labels`. Fails when the rows' ids index
    /// other stored labels, and on the first row whose tags and words differ in number, or
    /// whose tag is not in `labels`.
    pub fn to_dataset(&self, labels: &Labels) -> Result<NerDataset> {
        if let Some(stored) = self.labels.as_deref().filter(|l| *l != labels.original()) {
            return Err(Error::file(
                &self.source,
                format!(
                    "its tags are ids into the labels {stored:?}, not into the model's {:?}",
                    labels.original()
                ),
            ));
        }
        let row_error = |row: usize, message: String| Error::Row {
            source_name: self.source.clone(),
            row,
            message,
        };
        let num_tags = match &self.tags {
            Tags::Ids(rows) => rows.len(),
            Tags::Names(rows) => rows.len(),
        };
        if num_tags != self.tokens.len() {
            return Err(Error::file(
                &self.source,
                format!("{} token rows but {num_tags} tag rows", self.tokens.len()),
            ));
        }
        let mut examples = Vec::with_capacity(self.tokens.len());
        for (row, tokens) in self.tokens.iter().enumerate() {
            let tags: Vec<i64> = match &self.tags {
                Tags::Ids(rows) => {
                    let count = labels.original().len() as i64;
                    if let Some(&id) = rows[row].iter().find(|&&id| !(0..count).contains(&id)) {
                        return Err(row_error(
                            row,
                            format!("tag id {id} is not in the label list of {count} labels"),
                        ));
                    }
                    rows[row].clone()
                }
                Tags::Names(rows) => rows[row]
                    .iter()
                    .map(|tag| {
                        labels.tag_id(tag).map(|id| id as i64).ok_or_else(|| {
                            row_error(
                                row,
                                format!(
                                    "unknown tag {tag:?}; the labels are {:?}",
                                    labels.original()
                                ),
                            )
                        })
                    })
                    .collect::<Result<_>>()?,
            };
            if tags.len() != tokens.len() {
                return Err(row_error(
                    row,
                    format!("{} words but {} tags", tokens.len(), tags.len()),
                ));
            }
            examples.push(NerExample {
                tokens: tokens.clone(),
                tags,
                document: self.documents.as_ref().map(|d| d[row].clone()),
            });
        }
        Ok(NerDataset::new(examples))
    }
}

/// The label list for training: the names the data store for their integer tags (which
/// `given`, when set too, must equal), else `given`, else every tag string seen in `splits`,
/// `O` first, then by entity type with `B-` before `I-` (and `E-`, `S-`, `L-`, `U-`).
/// Integer tags without stored names need `given`.
pub fn resolve_labels(given: Option<&[String]>, splits: &[&AnnotatedRows]) -> Result<Labels> {
    let mut stored: Option<(&[String], &str)> = None;
    for split in splits {
        let Some(labels) = split.labels.as_deref() else {
            continue;
        };
        match stored {
            None => stored = Some((labels, &split.source)),
            Some((first, source)) if first != labels => {
                return Err(Error::file(
                    &split.source,
                    format!(
                        "its tags are ids into the labels {labels:?}, but those of {source} \
                         index {first:?}"
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    match (given, stored) {
        (Some(given), Some((labels, source))) if given != labels => {
            return Err(Error::file(
                source,
                format!(
                    "the labels given, {given:?}, differ from the labels its tags index, \
                     {labels:?}: leave the labels out or give these"
                ),
            ))
        }
        (_, Some((labels, _))) => return Ok(Labels::new(labels)?),
        (Some(given), None) => return Ok(Labels::new(given)?),
        (None, None) => {}
    }
    let mut names = BTreeSet::new();
    for split in splits {
        match split.tag_names() {
            Some(seen) => names.extend(seen),
            None => {
                return Err(Error::file(
                    &split.source,
                    "the tags are integer ids: give the label list (`labels`) they index into",
                ))
            }
        }
    }
    let order = |tag: &&str| -> (bool, String, usize) {
        let (prefix, kind) = tag.split_once('-').unwrap_or(("", tag));
        let rank = ["B", "I", "E", "S", "L", "U"]
            .iter()
            .position(|p| *p == prefix)
            .unwrap_or(usize::MAX);
        (*tag != "O", kind.to_owned(), rank)
    };
    let mut labels: Vec<&str> = names.into_iter().collect();
    labels.sort_by_key(order);
    Ok(Labels::new(labels)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(tags: Tags) -> AnnotatedRows {
        AnnotatedRows {
            source: "t".into(),
            tokens: vec![vec!["Paris".into(), "is".into()]],
            tags,
            documents: None,
            labels: None,
        }
    }

    #[test]
    fn string_tags_give_an_ordered_label_list() {
        let names = rows(Tags::Names(vec![vec![
            "I-LOC".into(),
            "O".into(),
            "B-LOC".into(),
            "B-PER".into(),
        ]]));
        let labels = resolve_labels(None, &[&names]).unwrap();
        assert_eq!(labels.original(), ["O", "B-LOC", "I-LOC", "B-PER"]);
    }

    #[test]
    fn integer_tags_need_a_label_list() {
        let ids = rows(Tags::Ids(vec![vec![1, 0]]));
        let error = resolve_labels(None, &[&ids]).unwrap_err().to_string();
        assert!(error.contains("label list"), "{error}");
        let labels =
            resolve_labels(Some(&["O".into(), "B-LOC".into(), "I-LOC".into()]), &[&ids]).unwrap();
        assert_eq!(ids.to_dataset(&labels).unwrap().examples[0].tags, [1, 0]);
        // Stored names serve, and must match given ones.
        let stored = AnnotatedRows {
            labels: Some(vec!["O".into(), "B-LOC".into(), "I-LOC".into()]),
            ..ids.clone()
        };
        let labels = resolve_labels(None, &[&stored]).unwrap();
        assert_eq!(labels.original(), ["O", "B-LOC", "I-LOC"]);
        let error = resolve_labels(
            Some(&["O".into(), "B-PER".into(), "I-PER".into()]),
            &[&stored],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(r#"["O", "B-PER", "I-PER"]"#)
                && error.contains(r#"["O", "B-LOC", "I-LOC"]"#),
            "{error}"
        );
        let other = AnnotatedRows {
            labels: Some(vec!["O".into(), "B-PER".into(), "I-PER".into()]),
            ..ids
        };
        assert!(resolve_labels(None, &[&stored, &other]).is_err());
    }

    #[test]
    fn bad_rows_are_named() {
        let labels = Labels::new(["O", "B-LOC", "I-LOC"]).unwrap();
        let unknown = rows(Tags::Names(vec![vec!["B-LOC".into(), "B-XYZ".into()]]));
        let error = unknown.to_dataset(&labels).unwrap_err().to_string();
        assert!(
            error.contains("row 0") && error.contains("B-XYZ"),
            "{error}"
        );
        let short = rows(Tags::Ids(vec![vec![1]]));
        let error = short.to_dataset(&labels).unwrap_err().to_string();
        assert!(error.contains("2 words but 1 tags"), "{error}");
        let out_of_range = rows(Tags::Ids(vec![vec![1, 7]]));
        let error = out_of_range.to_dataset(&labels).unwrap_err().to_string();
        assert!(error.contains("tag id 7"), "{error}");
    }
}
