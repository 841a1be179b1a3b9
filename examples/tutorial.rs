//! The SpanMarker tutorial through the Rust API, step by step as span_marker's "Getting
//! started" does it in Python: CoNLL-2003 from the Hugging Face Hub, its label names from the
//! data, RoBERTa fine-tuned with the tutorial's `TrainingArguments` (curves to TensorBoard),
//! the model saved, pushed and evaluated on the test split. `pipelines/tutorial.toml` is the
//! same as a pipeline file.
//!
//! ```text
//! cargo run --release -p span-marker-udfs --example tutorial -- \
//!     [--dataset eriktks/conll2003] [--encoder FacebookAI/roberta-base] \
//!     [--output-dir models/span-marker-roberta-base-conll03] [--push USER/NAME] \
//!     [--train-rows 8000] [--eval-rows 2000] [--max-steps N]
//! ```
//!
//! Datasets and encoders resolve through the Hugging Face cache (`HF_HOME`, `HF_ENDPOINT`,
//! `HF_TOKEN`, `HF_HUB_OFFLINE=1`); `--push` publishes with the token of `HF_TOKEN` or
//! `huggingface-cli login`.

use datafusion::prelude::SessionContext;
use span_marker::train::{IntervalStrategy, ReportTo, TrainingArguments};
use span_marker::ModelSettings;
use span_marker_udfs::sources::TableSource;
use span_marker_udfs::training::{self, ModelSpec};

/// The command line: `--name value` pairs over the tutorial's defaults.
struct Options {
    dataset: String,
    encoder: String,
    output_dir: String,
    push: Option<String>,
    train_rows: usize,
    eval_rows: usize,
    max_steps: Option<usize>,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut options = Options {
            dataset: "eriktks/conll2003".into(),
            encoder: "FacebookAI/roberta-base".into(),
            output_dir: "models/span-marker-roberta-base-conll03".into(),
            push: None,
            train_rows: 8000,
            eval_rows: 2000,
            max_steps: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = |value: &str| {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{flag}: {value:?} is not a number"))
            };
            match flag.as_str() {
                "--dataset" => options.dataset = value,
                "--encoder" => options.encoder = value,
                "--output-dir" => options.output_dir = value,
                "--push" => options.push = Some(value),
                "--train-rows" => options.train_rows = number(&value)?,
                "--eval-rows" => options.eval_rows = number(&value)?,
                "--max-steps" => options.max_steps = Some(number(&value)?),
                _ => return Err(format!("unknown flag {flag} (see the example's doc)")),
            }
        }
        Ok(options)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("span_marker=info")
        .init();
    let options = Options::parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let ctx = SessionContext::new();

    // dataset = load_dataset("conll2003"); dataset["train"].select(range(8000)) ...
    let split = |name: &str, rows: Option<usize>| {
        let source = TableSource {
            rows,
            ..TableSource::hub_dataset(options.dataset.clone(), name)
        };
        runtime.block_on(source.read(&ctx))
    };
    let train = split("train", Some(options.train_rows))?;
    let eval = split("validation", Some(options.eval_rows))?;
    let test = split("test", None)?;

    // labels = dataset["train"].features["ner_tags"].feature.names
    let labels = train
        .labels
        .clone()
        .ok_or("the dataset stores no label names for `ner_tags`")?;
    println!("labels: {labels:?}");

    // model = SpanMarkerModel.from_pretrained("roberta-base", labels=labels,
    //     model_max_length=256, entity_max_length=6)
    let spec = ModelSpec {
        encoder: options.encoder.clone(),
        labels: Some(labels),
        settings: ModelSettings {
            model_max_length: Some(256),
            entity_max_length: 6,
            ..Default::default()
        },
    };

    // args = TrainingArguments(...)
    let args = TrainingArguments {
        output_dir: options.output_dir.clone().into(),
        learning_rate: 5e-5,
        gradient_accumulation_steps: 2,
        per_device_train_batch_size: 4,
        per_device_eval_batch_size: 4,
        num_train_epochs: 1.0,
        max_steps: options.max_steps,
        eval_strategy: IntervalStrategy::Steps,
        save_strategy: IntervalStrategy::Steps,
        eval_steps: Some(500),
        logging_steps: 50,
        warmup_ratio: 0.1,
        report_to: ReportTo::from("tensorboard"),
        // trainer.push_to_hub(): the final model (and model card) at the end of training.
        push_to_hub: options.push.is_some(),
        hub_model_id: options.push.clone(),
        ..Default::default()
    };

    // trainer = Trainer(...); trainer.train(); trainer.save_model(...);
    // trainer.evaluate(dataset["test"], metric_key_prefix="test")
    let report = training::run(spec, args, train, Some(eval), Some(test), None)?;
    println!("{}", serde_json::to_string_pretty(&report.metrics)?);
    println!(
        "model saved to {}; curves: tensorboard --logdir {}/runs",
        report.output_dir.display(),
        report.output_dir.display()
    );
    Ok(())
}
