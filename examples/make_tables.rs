//! Writes the toy corpus as Parquet tables for `pipelines/parquet-example.toml`: `tokens`
//! (List<Utf8>), `ner_tags` (List<Int64>, ids into the CoNLL label list) and, for document
//! context, `document_id`/`sentence_id` (ten sentences per made-up document).
//!
//! ```sh
//! cargo run --release --example make_tables [OUT_DIR]   # default: target/example-tables
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, Int64Builder, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use span_marker::train::read_conll;
use span_marker::Labels;

const LABELS: [&str; 9] = [
    "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/example-tables".into());
    std::fs::create_dir_all(&out)?;
    let labels = Labels::new(LABELS)?;
    for split in ["train", "test"] {
        let sentences = read_conll(format!("examples/data/{split}.txt"))?;
        let mut tokens = ListBuilder::new(StringBuilder::new());
        let mut tags = ListBuilder::new(Int64Builder::new());
        for sentence in &sentences {
            for word in &sentence.words {
                tokens.values().append_value(word);
            }
            tokens.append(true);
            for tag in &sentence.tags {
                let id = labels
                    .tag_id(tag)
                    .ok_or_else(|| format!("unknown tag {tag}"))?;
                tags.values().append_value(id as i64);
            }
            tags.append(true);
        }
        let documents: Vec<String> = (0..sentences.len())
            .map(|i| format!("doc-{}", i / 10))
            .collect();
        let positions: Vec<i64> = (0..sentences.len()).map(|i| (i % 10) as i64).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(tokens.finish()),
            Arc::new(tags.finish()),
            Arc::new(StringArray::from(documents)),
            Arc::new(Int64Array::from(positions)),
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("tokens", columns[0].data_type().clone(), false),
            Field::new("ner_tags", columns[1].data_type().clone(), false),
            Field::new("document_id", DataType::Utf8, false),
            Field::new("sentence_id", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let path = format!("{out}/{split}.parquet");
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&path)?, schema, None)?;
        writer.write(&batch)?;
        writer.close()?;
        println!("{path}: {} rows", sentences.len());
    }
    Ok(())
}
