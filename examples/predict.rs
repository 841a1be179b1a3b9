//! Load a SpanMarker checkpoint and print the entities of a few sentences.
//!
//! Run with `cargo run --release --example predict [MODEL]`, where MODEL is a saved SpanMarker
//! model directory (from Python `span_marker` or from this crate) or a Hugging Face model id in
//! the local cache; the default is the tiny fine-tuned BERT test fixture.

use span_marker::{PredictOptions, SentenceInput, SpanMarkerModel};

fn main() -> Result<(), span_marker::Error> {
    let model_id = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/trained/tiny-bert".to_owned());
    let model = SpanMarkerModel::from_pretrained(&model_id)?;

    let texts = [
        "Peter Blackburn met Clinton in Washington on Monday.",
        "Germany beat England 2-1 in the World Cup final at Wembley.",
    ];
    let words = [
        "EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", ".",
    ];
    let mut inputs: Vec<SentenceInput<'_>> = texts.iter().map(|t| SentenceInput::Text(t)).collect();
    inputs.push(SentenceInput::Words(&words));

    let options = PredictOptions::default();
    for (input, entities) in inputs.iter().zip(model.predict(&inputs, &options)?) {
        match input {
            SentenceInput::Text(text) => println!("{text}"),
            SentenceInput::Words(words) => println!("{}", words.join(" ")),
        }
        for entity in entities {
            println!(
                "    {:<5} {:.3}  {:?}  words {}..{}",
                entity.label, entity.score, entity.text, entity.word_start, entity.word_end
            );
        }
    }
    Ok(())
}
