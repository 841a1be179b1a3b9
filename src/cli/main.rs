//! `span-marker`: command-line access to the SpanMarker pipeline.

use std::io::Read;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use span_marker::device::parse_device;
use span_marker::spans::Span;
use span_marker::train::{NerDataset, Trainer, TrainingArguments};
use span_marker::{
    LoadOptions, ModelSettings, PredictOptions, Preprocessor, SentenceInput, SpanMarkerModel,
    TokenizedSentence,
};

mod bench;

/// The sample corpus used when no input is given.
const SAMPLE: &str = include_str!("../../examples/sample.txt");

#[derive(Parser)]
#[command(
    name = "span-marker",
    version,
    about = "SpanMarker named-entity recognition"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize sentences and print their span candidates and encoder samples.
    ///
    /// Reads one sentence per line from FILE (`-` for stdin); without FILE, a bundled sample.
    Candidates {
        /// Sentences, one per line.
        file: Option<PathBuf>,
        /// A saved SpanMarker model directory; default: the bundled tiny BERT.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Treat each line as words separated by single spaces instead of raw text.
        #[arg(long)]
        words: bool,
        /// Candidates shown per sentence (the rest are counted).
        #[arg(long, default_value_t = 10)]
        show: usize,
        /// Refuse sentences longer than the model input instead of splitting them into windows.
        #[arg(long)]
        strict: bool,
    },
    /// Train (or fine-tune) a model on CoNLL-style files (`word TAG` per line).
    ///
    /// Without --model, a new model is made from the tiny test BERT encoder. Checkpoints, the
    /// log (`log_history.jsonl`), the training curves and the final model go to the output dir.
    Train {
        /// Training data.
        #[arg(long, default_value = "examples/data/train.txt")]
        train: PathBuf,
        /// Evaluation data (evaluated as the arguments' `eval_strategy` says).
        #[arg(long)]
        eval: Option<PathBuf>,
        /// Test data, evaluated after training with the `test` prefix.
        #[arg(long)]
        test: Option<PathBuf>,
        /// A SpanMarker model or a plain encoder (directory or Hugging Face id).
        #[arg(long, default_value = "tests/fixtures/encoders/tiny-bert")]
        model: String,
        /// Comma-separated label list for a new model; default: the tags of the training data.
        #[arg(long, value_delimiter = ',')]
        labels: Option<Vec<String>>,
        /// Training arguments (JSON, Hugging Face names); flags below override it.
        #[arg(long)]
        args: Option<PathBuf>,
        #[arg(long)]
        output_dir: Option<PathBuf>,
        #[arg(long)]
        max_steps: Option<usize>,
        #[arg(long)]
        num_train_epochs: Option<f64>,
        /// Continue from a checkpoint directory, or `latest` in the output dir.
        #[arg(long)]
        resume: Option<String>,
        /// Settings for a new model.
        #[arg(long, default_value_t = 64)]
        model_max_length: usize,
        #[arg(long, default_value_t = 32)]
        marker_max_length: usize,
        #[arg(long, default_value_t = 6)]
        entity_max_length: usize,
    },
    /// Measure inference throughput, and with --python the Python reference's on the same
    /// checkpoint, sentences, batch size and threads; prints the ratio and checks the entities.
    Bench {
        /// A saved SpanMarker model directory (Python must be able to load it too).
        #[arg(long, default_value = "tests/fixtures/trained/tiny-bert")]
        model: String,
        /// Sentences in CoNLL format (`word TAG`), cycled up to --sentences.
        #[arg(long, default_value = "examples/data/test.txt")]
        data: PathBuf,
        #[arg(long, default_value_t = 2000)]
        sentences: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Intra-op threads for both implementations (default: all logical CPUs).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Also run the Python reference with this interpreter (e.g. `.venv-python`).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Measure training for this many steps instead of inference.
        #[arg(long, default_value_t = 0)]
        train_steps: usize,
    },
    /// Predict entities, one sentence per line.
    ///
    /// Reads one sentence per line from FILE (`-` for stdin); without FILE, a bundled sample.
    Predict {
        /// Sentences, one per line.
        file: Option<PathBuf>,
        /// A SpanMarker model directory or Hugging Face model id; default: the bundled tiny BERT.
        #[arg(long)]
        model: Option<String>,
        /// Treat each line as words separated by single spaces instead of raw text.
        #[arg(long)]
        words: bool,
        /// Samples per forward pass.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Drop entities scoring below this probability.
        #[arg(long)]
        threshold: Option<f32>,
        /// Return overlapping entities too.
        #[arg(long)]
        overlapping: bool,
        /// `cpu`, `cuda`, `cuda:N` or `auto`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print one JSON object per sentence instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&*err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Candidates {
            file,
            model,
            words,
            show,
            strict,
        } => {
            let text = read_input(file)?;
            let preprocessor = match model {
                Some(dir) => Preprocessor::from_dir(dir)?,
                None => Preprocessor::bundled()?,
            }
            .strict(strict);
            candidates(&preprocessor, &text, words, show)
        }
        Command::Train {
            train,
            eval,
            test,
            model,
            labels,
            args,
            output_dir,
            max_steps,
            num_train_epochs,
            resume,
            model_max_length,
            marker_max_length,
            entity_max_length,
        } => {
            let mut args = match args {
                Some(path) => TrainingArguments::from_file(path)?,
                None => TrainingArguments::default(),
            };
            if let Some(dir) = output_dir {
                args.output_dir = dir;
            }
            if max_steps.is_some() {
                args.max_steps = max_steps;
            }
            if let Some(epochs) = num_train_epochs {
                args.num_train_epochs = epochs;
            }
            let labels = match labels {
                Some(labels) => labels,
                None => NerDataset::conll_labels(&train)?,
            };
            let options = LoadOptions {
                labels: Some(labels),
                settings: ModelSettings {
                    model_max_length: Some(model_max_length),
                    marker_max_length,
                    entity_max_length,
                    ..Default::default()
                },
                ..Default::default()
            };
            // A new model's head and marker embeddings are random: seed them like the run.
            tch::manual_seed(args.seed as i64);
            let mut model = SpanMarkerModel::from_pretrained_with(&model, &options)?;
            let label_list = model.labels().clone();
            let train = NerDataset::from_conll(&train, &label_list)?;
            let eval = eval
                .map(|p| NerDataset::from_conll(p, &label_list))
                .transpose()?;
            let test = test
                .map(|p| NerDataset::from_conll(p, &label_list))
                .transpose()?;
            let output_dir = args.output_dir.clone();
            let mut trainer = Trainer::new(&mut model, args)?;
            let output = trainer.train(&train, eval.as_ref(), resume.as_deref())?;
            println!("{}", serde_json::Value::Object(output.metrics));
            if let Some(test) = test {
                let evaluation = trainer.evaluate(&test, "test")?;
                println!("{}", serde_json::Value::Object(evaluation.to_record()));
            }
            eprintln!("model saved to {}", output_dir.display());
            Ok(())
        }
        Command::Bench {
            model,
            data,
            sentences,
            batch_size,
            threads,
            warmup,
            repeat,
            python,
            train_steps,
        } => bench::run(&bench::BenchOptions {
            model,
            data,
            sentences,
            batch_size,
            threads: threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            warmup,
            repeat,
            python,
            train_steps,
        }),
        Command::Predict {
            file,
            model,
            words,
            batch_size,
            threshold,
            overlapping,
            device,
            json,
        } => {
            let text = read_input(file)?;
            let device = parse_device(&device)?;
            let mut model = match model {
                Some(id) => SpanMarkerModel::from_pretrained_with(
                    &id,
                    &LoadOptions {
                        device: Some(device),
                        ..Default::default()
                    },
                )?,
                None => SpanMarkerModel::bundled()?,
            };
            model.to_device(device);
            let options = PredictOptions {
                batch_size,
                threshold,
                allow_overlapping: overlapping,
            };
            predict(&model, &text, words, &options, json)
        }
    }
}

fn predict(
    model: &SpanMarkerModel,
    text: &str,
    words: bool,
    options: &PredictOptions,
    json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let lines: Vec<&str> = text.lines().collect();
    let split = split_words(&lines, words);
    let inputs = line_inputs(&lines, &split);
    let predictions = model.predict(&inputs, options)?;
    for (row, (line, entities)) in lines.iter().zip(&predictions).enumerate() {
        if json {
            let record = serde_json::json!({"row": row, "text": line, "entities": entities});
            println!("{record}");
            continue;
        }
        println!("[{row}] {line}");
        for e in entities {
            let position = match (e.char_start, e.char_end) {
                (Some(start), Some(end)) => format!("chars {start}..{end}"),
                _ => format!("words {}..{}", e.word_start, e.word_end),
            };
            println!(
                "    {:<6} {:.3}  {}  ({position})",
                e.label, e.score, e.text
            );
        }
        if entities.is_empty() {
            println!("    (no entities)");
        }
    }
    Ok(())
}

fn read_input(file: Option<PathBuf>) -> Result<String, Box<dyn std::error::Error>> {
    Ok(match file {
        None => SAMPLE.to_owned(),
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin().lock().read_to_string(&mut text)?;
            text
        }
        Some(path) => {
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?
        }
    })
}

/// Each line's words (split at single spaces) with `--words`; nothing otherwise, since text
/// input needs no split.
fn split_words<'a>(lines: &[&'a str], words: bool) -> Vec<Vec<&'a str>> {
    if words {
        lines.iter().map(|l| l.split(' ').collect()).collect()
    } else {
        Vec::new()
    }
}

/// One input per line: its words when they were split, else its text.
fn line_inputs<'a>(lines: &[&'a str], split: &'a [Vec<&'a str>]) -> Vec<SentenceInput<'a>> {
    if split.is_empty() {
        lines.iter().map(|l| SentenceInput::Text(l)).collect()
    } else {
        split.iter().map(|w| SentenceInput::Words(w)).collect()
    }
}

fn candidates(
    preprocessor: &Preprocessor,
    text: &str,
    words: bool,
    show: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let lines: Vec<&str> = text.lines().collect();
    let split = split_words(&lines, words);
    let inputs: Vec<Option<SentenceInput<'_>>> =
        line_inputs(&lines, &split).into_iter().map(Some).collect();
    let encoded = preprocessor.encode(&inputs)?;
    let settings = preprocessor.settings();
    println!(
        "model_max_length M = {}, marker_max_length K = {}, entity_max_length E = {}, encoder length T = {}",
        settings.model_max_length,
        settings.marker_max_length,
        settings.entity_max_length,
        settings.total_length()
    );
    // Group spans and sample counts by row in one pass (windows and samples are in row order).
    let mut row_spans: Vec<Vec<Span>> = vec![Vec::new(); lines.len()];
    let mut row_samples = vec![0usize; lines.len()];
    for window in &encoded.windows {
        row_spans[window.row].extend_from_slice(&window.spans);
    }
    for sample in &encoded.samples {
        row_samples[encoded.windows[sample.window].row] += 1;
    }
    for (row, line) in lines.iter().enumerate() {
        if let Some(sentence) = &encoded.sentences[row] {
            print_row(sentence, &row_spans[row], row_samples[row], row, line, show);
        }
    }
    let batch = encoded.collate(
        0..encoded.samples.len(),
        &preprocessor.collate_spec(),
        tch::Device::Cpu,
    )?;
    println!(
        "\n{} sentences -> {} windows -> {} samples; input_ids {:?}, attention_mask {:?}",
        lines.len(),
        encoded.windows.len(),
        encoded.samples.len(),
        batch.input_ids.size(),
        batch.attention_mask.size()
    );
    Ok(())
}

fn print_row(
    sentence: &TokenizedSentence,
    spans: &[Span],
    samples: usize,
    row: usize,
    line: &str,
    show: usize,
) {
    println!(
        "\n[{row}] {line}\n    {} words, {} tokens, {} candidates, {} sample(s)",
        sentence.num_words(),
        sentence.input_ids.len(),
        spans.len(),
        samples
    );
    let char_to_byte = |c: usize| line.char_indices().nth(c).map_or(line.len(), |(b, _)| b);
    let span_text = |s: &Span| -> String {
        match &sentence.word_chars {
            Some(chars) => line[char_to_byte(chars[s.start as usize].0)
                ..char_to_byte(chars[s.end as usize - 1].1)]
                .to_owned(),
            None => line
                .split(' ')
                .skip(s.start as usize)
                .take(s.len())
                .collect::<Vec<_>>()
                .join(" "),
        }
    };
    let shown: Vec<String> = spans
        .iter()
        .take(show)
        .map(|s| format!("[{}..{}) {}", s.start, s.end, span_text(s)))
        .collect();
    println!("    {}", shown.join(" | "));
    if spans.len() > show {
        println!(
            "    ... and {} more (--show to list more)",
            spans.len() - show
        );
    }
}
