//! `span-marker-bench`: inference and training throughput of this project and, side by side,
//! of Python `span_marker` on the same checkpoint, sentences, batch size and thread count.
//! Inference runs also time the SQL path against the direct API and fail unless the entities
//! equal Python's; training runs score both sides' models with one scorer.
//!
//! `bash scripts/bench.sh` runs every benchmark of `docs/benchmarks.md`; one run by hand:
//!
//! ```text
//! cargo run --release -p span-marker-bench -- --model tests/fixtures/trained/tiny-bert \
//!     --data examples/data/test.txt --python .venv-python
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{SessionConfig, SessionContext};
use span_marker::device::{parse_device, Precision};
use span_marker::train::{NerDataset, NerExample};
use span_marker::{PredictOptions, PredictedEntity, SentenceInput, SpanMarkerModel};
use span_marker_udfs::sql::register_all_with_model;
use span_marker_udfs::SharedModel;
use tch::Device;

mod python;
mod system;
mod training;

use python::python_reference;
use span_marker::device::matmul_peak_gflops;
use system::{cpu_model, device_name, gpu_name, median, peak_rss_mb, roofline};
use training::bench_training;

/// What to measure.
#[derive(Parser)]
#[command(name = "span-marker-bench", version, about, args_override_self = true)]
pub struct BenchOptions {
    /// A SpanMarker model: a directory (Python must be able to load it too), a Hugging Face id
    /// or `bundled` (this side only).
    #[arg(long)]
    pub model: String,
    /// Sentences in CoNLL format (`word TAG`), cycled up to --sentences.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 2000)]
    pub sentences: usize,
    /// Join this many consecutive sentences of --data into each benchmark sentence (to
    /// measure how time and memory grow with sentence length).
    #[arg(long, default_value_t = 1)]
    pub join: usize,
    /// Samples per forward pass (and per training step); the default is `predict`'s.
    #[arg(long, default_value_t = PredictOptions::default().batch_size)]
    pub batch_size: usize,
    /// Intra-op threads for both implementations (default: all logical CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Also run the Python reference with this interpreter (e.g. `.venv-python`).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Measure training for this many steps instead of inference.
    #[arg(long, default_value_t = 0)]
    pub train_steps: usize,
    /// Training: the learning rate of both implementations.
    #[arg(long, default_value_t = 5e-5)]
    pub learning_rate: f64,
    /// Training: evaluate both trained models on these sentences (CoNLL) and print F1.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Training: both implementations see the samples in dataset order (no shuffling), so
    /// that the seeds only change the dropout masks.
    #[arg(long)]
    pub in_order: bool,
    /// Training: this crate batches samples of similar length together (`group_by_length`);
    /// the reference pads every batch to its full input length, so it is not asked to.
    #[arg(long)]
    pub group_by_length: bool,
    /// Where both implementations run: `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu", value_parser = device_argument)]
    pub device: Device,
    /// This crate's precision (training: both implementations' mixed precision; inference:
    /// `fp32`, `bf16` autocast (CUDA, or a CPU with bfloat16 instructions), `fp16` autocast (CUDA)
    /// or `int8` (CPU) for this crate, Python predicting in float32).
    #[arg(long, default_value_t = PredictOptions::default().precision)]
    pub precision: Precision,
}

impl BenchOptions {
    /// The prediction options of the inference runs: --batch-size and --precision, the
    /// others at their defaults (the Python reference has none of them).
    fn predict_options(&self) -> PredictOptions {
        PredictOptions {
            batch_size: self.batch_size,
            precision: self.precision,
            ..Default::default()
        }
    }

    /// Checks every numeric option against its range, naming the first one outside.
    fn validate(&self) -> Result<(), String> {
        // The setting's error, named by its flag as the other checks here name theirs.
        self.predict_options().validate().map_err(|e| match e {
            span_marker::Error::Setting { key, message } => {
                format!("--{} {message}", key.replace('_', "-"))
            }
            other => other.to_string(),
        })?;
        let counts = [
            ("--sentences", self.sentences, 1, 10_000_000),
            ("--join", self.join, 1, 10_000),
            ("--threads", self.threads(), 1, 4096),
            ("--warmup", self.warmup, 0, 1000),
            ("--repeat", self.repeat, 1, 1000),
            ("--train-steps", self.train_steps, 0, 10_000_000),
        ];
        for (flag, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                return Err(format!(
                    "{flag} must be between {min} and {max}, got {value}"
                ));
            }
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "--learning-rate must be a positive number, got {}",
                self.learning_rate
            ));
        }
        Ok(())
    }

    /// Intra-op threads of both sides.
    fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

fn device_argument(name: &str) -> Result<Device, String> {
    parse_device(name).map_err(|e| e.to_string())
}

span_marker_cli::record_closed_streams_at_start!();

fn main() -> std::process::ExitCode {
    span_marker_cli::init();
    let options = match span_marker_cli::parse_args::<BenchOptions>() {
        Ok(options) => options,
        Err(code) => return code,
    };
    span_marker_cli::run(|| run(&options))
}

/// Per sentence, its entities as (word start, word end, label).
pub(crate) type SentenceEntities = Vec<(usize, usize, String)>;
pub(crate) type Entities = Vec<SentenceEntities>;

fn run(options: &BenchOptions) -> Result<(), Box<dyn std::error::Error>> {
    options.validate()?;
    tch::set_num_threads(options.threads() as i32);
    // Inference goes through the engine layer's model thread, the direct API and SQL alike, so
    // that one thread of the process runs libtorch (see `span_marker_udfs::SharedModel`);
    // training runs here.
    let shared = (options.train_steps == 0)
        .then(|| SharedModel::load(&options.model, &device_name(options.device)))
        .transpose()?;
    let (labels, settings) = match &shared {
        Some(shared) => {
            let model = shared.lock();
            (model.labels().clone(), model.encoder().settings().clone())
        }
        None => {
            let model = SpanMarkerModel::from_pretrained(&options.model)?;
            (model.labels().clone(), model.encoder().settings().clone())
        }
    };
    let corpus = NerDataset::from_conll(&options.data, &labels)?;
    if corpus.is_empty() {
        return Err(format!("{}: no sentences", options.data.display()).into());
    }
    let examples = joined_examples(&corpus, options.sentences, options.join);
    let sentences: Vec<Vec<String>> = examples.iter().map(|e| e.tokens.clone()).collect();
    let words = borrowed_words(&sentences);
    let inputs: Vec<SentenceInput<'_>> = words.iter().map(|w| SentenceInput::Words(w)).collect();
    let predict = options.predict_options();

    let task = if options.train_steps > 0 {
        "training"
    } else {
        "inference"
    };
    writeln!(span_marker_cli::stdout(), "span-marker-bench: {task}")?;
    writeln!(
        span_marker_cli::stdout(),
        "machine: {}, {} logical CPUs; torch intra-op threads {}; device {}{}; precision {}",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        tch::get_num_threads(),
        device_name(options.device),
        gpu_name(options.device)
            .map(|name| format!(" ({name})"))
            .unwrap_or_default(),
        options.precision
    )?;
    writeln!(span_marker_cli::stdout(), "model: {} ({}, hidden {}, {} layers); {} sentences from {}{} ({} words); batch size {}; warm-up {}, repetitions {} (median)",
        options.model,
        settings.model_type,
        settings.hidden_size,
        settings.num_hidden_layers,
        sentences.len(),
        options.data.display(),
        if options.join > 1 {
            format!(", each {} of its sentences joined", options.join)
        } else {
            String::new()
        },
        sentences.iter().map(Vec::len).sum::<usize>(),
        options.batch_size,
        options.warmup,
        options.repeat)?;

    if options.train_steps > 0 {
        let data = NerDataset::new(examples);
        let eval = options
            .eval_data
            .as_ref()
            .map(|path| NerDataset::from_conll(path, &labels))
            .transpose()?;
        return bench_training(&labels, &data, eval.as_ref(), options);
    }
    let Some(shared) = shared else {
        return Err("inference needs the loaded model".into());
    };
    let rows: Vec<Option<SentenceInput<'_>>> = inputs.iter().copied().map(Some).collect();
    let predict_all = || -> Result<Vec<Vec<PredictedEntity>>, Box<dyn std::error::Error>> {
        shared
            .predict_rows(&rows, &predict)?
            .into_iter()
            .map(|row| Ok(row?.unwrap_or_default()))
            .collect()
    };
    for _ in 0..options.warmup {
        predict_all()?;
    }
    // Measured on the model thread: libtorch work on this thread would make a second OpenMP
    // team and slow every later prediction down (see `span_marker_udfs::on_model_thread`).
    let device = options.device;
    let peak = span_marker_udfs::on_model_thread(move || matmul_peak_gflops(device))??;
    let mut rates = Vec::with_capacity(options.repeat);
    let mut ours: Entities = Vec::new();
    let flops_before = shared.lock().flops_executed();
    for _ in 0..options.repeat.max(1) {
        let start = Instant::now();
        let predicted = predict_all()?;
        rates.push(sentences.len() as f64 / start.elapsed().as_secs_f64());
        ours = triples(predicted);
    }
    let flops_per_pass =
        (shared.lock().flops_executed() - flops_before) as f64 / options.repeat.max(1) as f64;
    let rust_rate = median(&mut rates);
    writeln!(
        span_marker_cli::stdout(),
        "rust:   {rust_rate:10.1} sentences/s, peak RSS {:.0} MB",
        peak_rss_mb().unwrap_or(f64::NAN)
    )?;
    writeln!(
        span_marker_cli::stdout(),
        "        {}",
        roofline(flops_per_pass, sentences.len() as f64 / rust_rate, peak)
    )?;
    for partitions in [1, 2] {
        let sql_rate = bench_sql(&shared, &words, options, partitions, &ours)?;
        writeln!(span_marker_cli::stdout(), "sql:    {sql_rate:10.1} sentences/s with {partitions} partition(s): {:.2}x the direct API (span_marker_predict over Parquet, entities identical)",
            sql_rate / rust_rate)?;
    }

    let Some(python) = &options.python else {
        return Ok(());
    };
    let reference = python_reference(python, options, &sentences)?;
    writeln!(
        span_marker_cli::stdout(),
        "python: {:10.1} sentences/s, peak RSS {:.0} MB (torch threads {})",
        reference.rate,
        reference.peak_rss_mb,
        reference.threads
    )?;
    writeln!(
        span_marker_cli::stdout(),
        "ratio:  {:10.2}x",
        rust_rate / reference.rate
    )?;
    // The reference truncates a sentence longer than one encoder input, this crate encodes it
    // in windows: only the sentences that fit can be compared.
    let fits = fits_one_input(&shared.lock(), &inputs)?;
    let compared: Vec<(&SentenceEntities, &SentenceEntities)> = ours
        .iter()
        .zip(&reference.entities)
        .zip(&fits)
        .filter_map(|(pair, fits)| fits.then_some(pair))
        .collect();
    let count: usize = compared.iter().map(|(a, _)| a.len()).sum();
    let theirs: usize = compared.iter().map(|(_, b)| b.len()).sum();
    let same = compared.iter().filter(|(a, b)| a == b).count();
    let left_out = match ours.len() - compared.len() {
        0 => String::new(),
        long => format!(
            "; {long} sentences longer than one encoder input left out: the reference truncates them, this crate encodes them in windows"
        ),
    };
    if compared.is_empty() {
        writeln!(
            span_marker_cli::stdout(),
            "entities: none compared{left_out}"
        )?;
        return Ok(());
    }
    if options.precision != Precision::Float32 {
        // 16-bit arithmetic may tip a close call: report the agreement instead of requiring it.
        writeln!(span_marker_cli::stdout(), "entities: {same} of {} sentences identical to Python's float32 ones ({count} entities here, {theirs} in Python){left_out}",
            compared.len())?;
        return Ok(());
    }
    let identical = same == compared.len();
    writeln!(span_marker_cli::stdout(), "entities identical: {} ({} sentences, {count} entities here, {theirs} in Python){left_out}",
        if identical { "yes" } else { "NO" },
        compared.len(),)?;
    if !identical {
        return Err(format!(
            "the entities differ from the Python reference in {} of {} sentences",
            compared.len() - same,
            compared.len()
        )
        .into());
    }
    Ok(())
}

/// `SELECT span_marker_predict(tokens)` over the sentences as a Parquet file (row groups of
/// 256 rows) with `partitions` target partitions; fails unless the entities equal `expected`.
fn bench_sql(
    model: &SharedModel,
    words: &[Vec<&str>],
    options: &BenchOptions,
    partitions: usize,
    expected: &Entities,
) -> Result<f64, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sentences.parquet");
    let mut tokens = ListBuilder::new(StringBuilder::new());
    for sentence in words {
        sentence
            .iter()
            .for_each(|w| tokens.values().append_value(w));
        tokens.append(true);
    }
    let ids = Int64Array::from_iter_values(0..words.len() as i64);
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("tokens", Arc::new(tokens.finish()) as ArrayRef),
    ])?;
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(256))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(&path)?,
        batch.schema(),
        Some(properties),
    )?;
    writer.write(&batch)?;
    writer.close()?;

    let runtime = tokio::runtime::Runtime::new()?;
    let ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    register_all_with_model(&ctx, model.clone());
    let query = format!(
        "SELECT id, span_marker_predict(tokens) AS e FROM '{}'",
        path.display()
    );
    let ctx = ctx.enable_url_table();
    for (key, value) in options.predict_options().settings() {
        runtime.block_on(ctx.sql(&format!("SET span_marker.{key} = '{value}'")))?;
    }
    let run = || -> Result<(f64, Entities), Box<dyn std::error::Error>> {
        let start = Instant::now();
        let batches = runtime.block_on(async { ctx.sql(&query).await?.collect().await })?;
        let rate = words.len() as f64 / start.elapsed().as_secs_f64();
        let mut rows: Vec<(i64, SentenceEntities)> = Vec::with_capacity(words.len());
        for batch in &batches {
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let lists = batch.column(1).as_list::<i32>();
            for row in 0..batch.num_rows() {
                let value = lists.value(row);
                let entities = value.as_struct();
                let int = |name: &str| {
                    entities
                        .column_by_name(name)
                        .expect("entity field")
                        .as_primitive::<Int64Type>()
                        .clone()
                };
                let (starts, ends) = (int("start"), int("end"));
                let labels = entities
                    .column_by_name("label")
                    .expect("label")
                    .as_string::<i32>()
                    .clone();
                let found = (0..entities.len())
                    .map(|i| {
                        (
                            starts.value(i) as usize,
                            ends.value(i) as usize,
                            labels.value(i).to_owned(),
                        )
                    })
                    .collect();
                rows.push((ids.value(row), found));
            }
        }
        rows.sort_by_key(|(id, _)| *id);
        Ok((rate, rows.into_iter().map(|(_, e)| e).collect()))
    };
    for _ in 0..options.warmup {
        run()?;
    }
    let mut rates = Vec::new();
    for _ in 0..options.repeat.max(1) {
        let (rate, entities) = run()?;
        // In 16 bits, other batch boundaries may tip a close call; float32 must agree exactly.
        if &entities != expected && options.precision == Precision::Float32 {
            return Err("the SQL path's entities differ from the direct API's".into());
        }
        rates.push(rate);
    }
    Ok(median(&mut rates))
}

/// `count` sentences, each joining `join` consecutive sentences of `corpus` (cycled), so that
/// sentence length can be varied with the same words.
pub(crate) fn joined_examples(corpus: &NerDataset, count: usize, join: usize) -> Vec<NerExample> {
    let mut source = corpus.examples.iter().cycle();
    (0..count)
        .map(|_| {
            let mut joined = NerExample {
                tokens: Vec::new(),
                tags: Vec::new(),
                document: None,
            };
            for part in source.by_ref().take(join) {
                joined.tokens.extend_from_slice(&part.tokens);
                joined.tags.extend_from_slice(&part.tags);
            }
            joined
        })
        .collect()
}

/// Per sentence, whether it fits one encoder input (one window of text tokens).
fn fits_one_input(
    model: &SpanMarkerModel,
    inputs: &[SentenceInput<'_>],
) -> Result<Vec<bool>, Box<dyn std::error::Error>> {
    let rows: Vec<Option<SentenceInput<'_>>> = inputs.iter().copied().map(Some).collect();
    let mut windows = vec![0usize; inputs.len()];
    for window in model.preprocessor().encode(&rows)?.windows {
        windows[window.row] += 1;
    }
    Ok(windows.into_iter().map(|n| n <= 1).collect())
}

/// The sentences as borrowed words, for [`SentenceInput::Words`].
pub(crate) fn borrowed_words(sentences: &[Vec<String>]) -> Vec<Vec<&str>> {
    sentences
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect()
}

/// Each sentence's entities as (word start, word end, label).
pub(crate) fn triples(predicted: Vec<Vec<PredictedEntity>>) -> Entities {
    predicted
        .into_iter()
        .map(|s| {
            s.into_iter()
                .map(|e| (e.word_start, e.word_end, e.label))
                .collect()
        })
        .collect()
}
