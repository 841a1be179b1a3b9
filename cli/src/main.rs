//! `span-marker`: SpanMarker named-entity recognition from the command line: predict, annotate
//! Parquet corpora, run SQL with the SpanMarker functions, train (from a pipeline file or CoNLL
//! files), evaluate, publish to the Hugging Face Hub, and inspect span candidates. One file per
//! subcommand; each subcommand's arguments are its own `clap::Args` struct. The benchmark against Python is the separate
//! `span-marker-bench` binary.

use clap::{Parser, Subcommand};

mod annotate;
mod args;
mod candidates;
mod cluster;
mod evaluate;
mod input;
mod predict;
mod push;
mod sql;
mod train;

/// What a subcommand returns.
type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(
    name = "span-marker",
    version,
    about = "SpanMarker named-entity recognition"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// libtorch intra-op threads on the CPU (default: all cores, or `OMP_NUM_THREADS`).
    #[arg(long, global = true, value_parser = clap::value_parser!(i32).range(1..=4096))]
    threads: Option<i32>,
}

#[derive(Subcommand)]
enum Command {
    /// Add an entity column to a Parquet corpus, streaming, with progress, resumable.
    ///
    /// An interrupted run (Ctrl-C, SIGKILL) continues where it stopped when started again
    /// with the same arguments: no row is lost or written twice. With --sample, annotates a
    /// bundled sample corpus with the bundled model.
    Annotate(annotate::AnnotateArgs),
    /// Predict entities, one sentence per argument (`-` for stdin) or per line of --file.
    ///
    /// Without sentences, a bundled sample.
    Predict(predict::PredictArgs),
    /// Run SQL with the SpanMarker functions registered; files are tables by path
    /// (`FROM 'corpus.parquet'`). Several statements run in order.
    Sql(sql::SqlArgs),
    /// Train (or fine-tune) a model from a pipeline file, or from CoNLL-style files.
    ///
    /// With PIPELINE (a TOML file, see `pipelines/`), everything comes from the file, which is
    /// validated whole before any work starts. Without it, a new model is made from --model
    /// and trained on --train. Checkpoints, the log (`log_history.jsonl`), the training curves
    /// and the final model go to the output dir.
    Train(train::TrainArgs),
    /// Evaluate a model on annotated data (Parquet, CSV, JSON lines or CoNLL) and print the
    /// metrics as JSON.
    Evaluate(evaluate::EvaluateArgs),
    /// Publish a model directory to a Hugging Face Hub repository (created when missing).
    ///
    /// The token comes from --token, HF_TOKEN or the token file `huggingface-cli login`
    /// writes; the Hub's address from --endpoint or HF_ENDPOINT. The model card becomes the
    /// repository's README; weights go through Git LFS.
    Push(push::PushArgs),
    /// Tokenize sentences and print their span candidates and encoder samples.
    ///
    /// Reads one sentence per line from FILE (`-` for stdin); without FILE, a bundled sample.
    Candidates(candidates::CandidatesArgs),
    /// Run a Ballista scheduler or executor with the SpanMarker functions built in, for
    /// `sql --cluster` and `annotate --cluster`.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

span_marker_cli::record_closed_streams_at_start!();

fn main() -> std::process::ExitCode {
    span_marker_cli::init();
    let cli = match span_marker_cli::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    span_marker_cli::run(|| {
        if let Some(threads) = cli.threads {
            tch::set_num_threads(threads);
        }
        tracing::debug!("libtorch intra-op threads: {}", tch::get_num_threads());
        run(cli.command)
    })
}

fn run(command: Command) -> CliResult {
    match command {
        Command::Annotate(args) => annotate::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Sql(args) => sql::run(args),
        Command::Train(args) => train::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Candidates(args) => candidates::run(args),
        Command::Push(args) => push::run(args),
        Command::Cluster(command) => cluster::run(command),
    }
}
