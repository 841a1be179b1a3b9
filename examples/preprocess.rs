//! Preprocess a few sentences with the bundled model and show the encoder inputs.
//!
//! Run with `cargo run --example preprocess`.

use span_marker::{EncodeOptions, Preprocessor, SentenceInput};

fn main() -> Result<(), span_marker::Error> {
    let preprocessor = Preprocessor::bundled()?;
    let words = ["Peter", "Blackburn", "visited", "Brussels", "."];
    let tags = [vec![1, 2, 0, 5, 0]]; // B-PER I-PER O B-LOC O
    let entities = preprocessor.entities_from_tags(&[&words], &tags)?;
    let rows = [Some(SentenceInput::Words(&words))];
    let options = EncodeOptions {
        entities: Some(&entities),
        split: Some("train"),
        ..Default::default()
    };
    let encoded = preprocessor.encode_with(&rows, options)?;

    let window = &encoded.windows[0];
    let labels = preprocessor.labels().reduced();
    for (i, span) in window.spans.iter().enumerate() {
        let label = window.labels.as_ref().map_or(0, |l| l[i]) as usize;
        if label != preprocessor.labels().outside_id() {
            println!(
                "{:?} -> {}",
                &words[span.start as usize..span.end as usize],
                labels[label]
            );
        }
    }
    let batch = encoded.collate(
        0..encoded.samples.len(),
        &preprocessor.collate_spec(),
        tch::Device::Cpu,
    )?;
    println!("input_ids      {:?}", batch.input_ids.size());
    println!("position_ids   {:?}", batch.position_ids.size());
    println!("attention_mask {:?}", batch.attention_mask().size());
    println!("labels         {:?}", batch.labels.map(|l| l.size()));
    Ok(())
}
