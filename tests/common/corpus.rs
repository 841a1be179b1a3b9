//! Test corpora as Parquet files and readers of annotated ones (shared by the engine crate's
//! and the command line's annotation tests; include next to `common`).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use span_marker::train::read_conll;

/// `rows` sentences of the toy corpus (cycled) with an `id`, a `tokens` and a `text` column,
/// in row groups of 500; `bad_rows` get a word longer than the model input.
pub fn write_corpus(path: &Path, rows: usize, bad_rows: &[usize]) -> Vec<Vec<String>> {
    let sentences = read_conll(crate::common::repo().join("examples/data/test.txt")).unwrap();
    let long_word = ".".repeat(300);
    let words: Vec<Vec<String>> = (0..rows)
        .map(|i| {
            let mut w = sentences[i % sentences.len()].words.clone();
            if bad_rows.contains(&i) {
                w.push(long_word.clone());
            }
            w
        })
        .collect();
    let mut tokens = ListBuilder::new(StringBuilder::new());
    for row in &words {
        row.iter().for_each(|w| tokens.values().append_value(w));
        tokens.append(true);
    }
    let texts: Vec<String> = words.iter().map(|w| w.join(" ")).collect();
    let tokens = tokens.finish();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("tokens", tokens.data_type().clone(), true),
        Field::new("text", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            Arc::new(tokens),
            Arc::new(StringArray::from(texts)),
        ],
    )
    .unwrap();
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(500))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema,
        Some(properties),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    words
}

pub fn read_all(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// (start, end, label) per entity, per row; `None` for a NULL row.
pub fn entities(batches: &[RecordBatch]) -> Vec<Option<Vec<(i64, i64, String)>>> {
    let mut rows = Vec::new();
    for batch in batches {
        let list = batch.column_by_name("entities").unwrap().as_list::<i32>();
        for row in 0..list.len() {
            rows.push(list.is_valid(row).then(|| {
                let value = list.value(row);
                let s = value.as_struct();
                let start = s
                    .column_by_name("start")
                    .unwrap()
                    .as_primitive::<Int64Type>();
                let end = s.column_by_name("end").unwrap().as_primitive::<Int64Type>();
                let label = s.column_by_name("label").unwrap().as_string::<i32>();
                (0..s.len())
                    .map(|i| (start.value(i), end.value(i), label.value(i).to_owned()))
                    .collect()
            }));
        }
    }
    rows
}

/// Asserts that the annotated file `name` (`got`) has every row of `want` once, in order, with
/// the same entities.
pub fn assert_same_rows(name: &str, got: &[RecordBatch], want: &[RecordBatch]) {
    assert_eq!(ids(got), ids(want), "{name}: every row once, in order");
    assert_eq!(entities(got), entities(want), "{name}: the local entities");
}

/// Complete part files of an unfinished annotation into `output`.
pub fn part_files(output: &Path) -> usize {
    std::fs::read_dir(span_marker_udfs::annotate::parts_dir(output))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("part-")
            })
            .count()
        })
        .unwrap_or(0)
}
