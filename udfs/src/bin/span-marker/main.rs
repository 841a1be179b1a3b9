//! `span-marker`: SpanMarker named-entity recognition from the command line: predict, train
//! (from a pipeline file or CoNLL files), evaluate, annotate Parquet corpora, run SQL with the
//! SpanMarker functions, inspect span candidates, and benchmark against the Python reference.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use span_marker::device::{parse_device, Precision};
use span_marker::{LoadOptions, PredictOptions, Preprocessor, SpanMarkerModel};

mod bench;
mod engine;
mod text;

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
        /// A saved SpanMarker model directory; default: the bundled model.
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
    /// Train (or fine-tune) a model from a pipeline file, or from CoNLL-style files.
    ///
    /// With PIPELINE (a TOML file, see `pipelines/`), everything comes from the file, which is
    /// validated whole before any work starts. Without it, a new model is made from --model
    /// (default: the tiny test BERT) and trained on --train. Checkpoints, the log
    /// (`log_history.jsonl`), the training curves and the final model go to the output dir.
    Train {
        /// A pipeline file.
        #[arg(conflicts_with_all = ["train", "eval", "test", "model", "labels", "args"])]
        pipeline: Option<PathBuf>,
        /// Training data (CoNLL: `word TAG` per line).
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
    /// Evaluate a model on annotated data (Parquet, CSV, JSON lines or CoNLL) and print the
    /// metrics as JSON.
    Evaluate {
        /// A SpanMarker model directory or Hugging Face id, or `bundled`.
        #[arg(long, default_value = "bundled")]
        model: String,
        /// Annotated data.
        #[arg(long)]
        data: PathBuf,
        /// `parquet`, `csv`, `json` or `conll`; default: from the extension.
        #[arg(long)]
        format: Option<String>,
        /// The list-of-words column (tables).
        #[arg(long, default_value = "tokens")]
        tokens_column: String,
        /// The tags column: ids into the model's labels or tag strings (tables).
        #[arg(long, default_value = "ner_tags")]
        tags_column: String,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Predict entities, one sentence per argument (`-` for stdin) or per line of --file.
    ///
    /// Without sentences, a bundled sample.
    Predict {
        /// Sentences.
        texts: Vec<String>,
        /// Read sentences from this file, one per line (`-` for stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// A SpanMarker model directory or Hugging Face model id; default: the bundled model.
        #[arg(long)]
        model: Option<String>,
        /// Treat each sentence as words separated by single spaces instead of raw text.
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
        /// `fp32`, or `bf16`/`fp16` autocast on a CUDA device.
        #[arg(long, default_value = "fp32")]
        precision: Precision,
        /// Print one JSON object per sentence instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add an entity column to a Parquet corpus, streaming, with progress, resumable.
    ///
    /// An interrupted run (Ctrl-C, SIGKILL) continues where it stopped when started again
    /// with the same arguments: no row is lost or written twice. With --sample, annotates a
    /// bundled sample corpus with the bundled model.
    Annotate(engine::AnnotateArgs),
    /// Run SQL with the SpanMarker functions registered; files are tables by path
    /// (`FROM 'corpus.parquet'`). Several statements run in order.
    Sql(engine::SqlArgs),
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
        /// Join this many consecutive sentences of --data into each benchmark sentence (to
        /// measure how time and memory grow with sentence length).
        #[arg(long, default_value_t = 1)]
        join: usize,
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
        /// Training: the learning rate of both implementations.
        #[arg(long, default_value_t = 5e-5)]
        learning_rate: f64,
        /// Training: evaluate both trained models on these sentences (CoNLL) and print F1.
        #[arg(long)]
        eval_data: Option<PathBuf>,
        /// Where both implementations run: `cpu`, `cuda`, `cuda:N` or `auto`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Inference: `fp32`, or `bf16`/`fp16` autocast (CUDA) for this crate; Python runs float32.
        #[arg(long, default_value = "fp32")]
        precision: Precision,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    span_marker::device::tune_host_allocator();
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
            let text = text::read_input(&[], file)?;
            let preprocessor = match model {
                Some(dir) => Preprocessor::from_dir(dir)?,
                None => Preprocessor::bundled()?,
            }
            .strict(strict);
            text::candidates(&preprocessor, &text, words, show)
        }
        Command::Train {
            pipeline: Some(pipeline),
            output_dir,
            max_steps,
            num_train_epochs,
            resume,
            ..
        } => engine::train_pipeline(&pipeline, output_dir, max_steps, num_train_epochs, resume),
        Command::Train {
            pipeline: None,
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
        } => engine::train_conll(engine::ConllTraining {
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
        }),
        Command::Evaluate {
            model,
            data,
            format,
            tokens_column,
            tags_column,
            batch_size,
            device,
        } => {
            let mut source = span_marker_udfs::sources::TableSource::file(data);
            source.format = format
                .map(|f| serde_json::from_value(serde_json::Value::String(f.to_lowercase())))
                .transpose()
                .map_err(|e| format!("--format: {e}"))?;
            source.tokens_column = tokens_column;
            source.tags_column = tags_column;
            engine::evaluate(&model, &device, &source, batch_size)
        }
        Command::Annotate(args) => engine::annotate(args),
        Command::Sql(args) => engine::sql(args),
        Command::Bench {
            model,
            data,
            sentences,
            join,
            batch_size,
            threads,
            warmup,
            repeat,
            python,
            train_steps,
            learning_rate,
            eval_data,
            device,
            precision,
        } => bench::run(&bench::BenchOptions {
            model,
            data,
            sentences,
            join,
            batch_size,
            threads: threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            warmup,
            repeat,
            python,
            train_steps,
            learning_rate,
            eval_data,
            device: parse_device(&device)?,
            precision,
        }),
        Command::Predict {
            texts,
            file,
            model,
            words,
            batch_size,
            threshold,
            overlapping,
            device,
            precision,
            json,
        } => {
            let text = text::read_input(&texts, file)?;
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
                precision,
            };
            text::predict(&model, &text, words, &options, json)
        }
    }
}
