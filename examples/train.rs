//! Train a small SpanMarker model on the bundled toy corpus, evaluate it on the test split,
//! save it, load it back and predict.
//!
//! Run with `cargo run --release --example train` (well under a minute on a laptop CPU). The
//! encoder is the tiny random BERT of the test fixtures; the data come from
//! `examples/data/generate.py`; the arguments from `examples/train-args.json`.

use span_marker::train::{NerDataset, Trainer, TrainingArguments};
use span_marker::{LoadOptions, ModelSettings, PredictOptions, SentenceInput, SpanMarkerModel};

fn main() -> Result<(), span_marker::Error> {
    tracing_subscriber::fmt()
        .with_env_filter("span_marker=info")
        .init();
    let args = TrainingArguments::from_file("examples/train-args.json")?;
    let train_file = "examples/data/train.txt";

    tch::manual_seed(args.seed as i64);
    let options = LoadOptions {
        labels: Some(NerDataset::conll_labels(train_file)?),
        settings: ModelSettings {
            model_max_length: Some(64),
            marker_max_length: 32,
            entity_max_length: 6,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut model =
        SpanMarkerModel::from_pretrained_with("tests/fixtures/encoders/tiny-bert", &options)?;
    let labels = model.labels().clone();
    let train = NerDataset::from_conll(train_file, &labels)?;
    let test = NerDataset::from_conll("examples/data/test.txt", &labels)?;

    let output_dir = args.output_dir.clone();
    let mut trainer = Trainer::new(&mut model, args)?;
    let output = trainer.train(&train, Some(&test), None)?;
    println!(
        "trained {} steps, mean loss {:.4}",
        output.global_step, output.train_loss
    );
    let evaluation = trainer.evaluate(&test, "test")?;
    println!(
        "test: precision {:.3} recall {:.3} F1 {:.3}",
        evaluation.scores.precision, evaluation.scores.recall, evaluation.scores.f1
    );

    // The trainer saved the (best) model to the output directory: load it as a user would.
    let reloaded = SpanMarkerModel::from_pretrained(output_dir.to_str().expect("UTF-8 path"))?;
    let sentences = [
        "Grace Hopper met Kenji Tanaka in Oslo on Monday .",
        "Shares of Globex rose after Amara Okafor spoke in Lima .",
    ];
    let inputs: Vec<SentenceInput<'_>> = sentences.iter().map(|s| SentenceInput::Text(s)).collect();
    for (sentence, entities) in sentences
        .iter()
        .zip(reloaded.predict(&inputs, &PredictOptions::default())?)
    {
        println!("{sentence}");
        for e in entities {
            println!("    {:<5} {:.3}  {}", e.label, e.score, e.text);
        }
    }
    println!(
        "model, checkpoints, log_history.jsonl and training_curves.svg are in {}",
        output_dir.display()
    );
    Ok(())
}
