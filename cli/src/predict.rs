//! `span-marker predict`: entities of sentences from arguments, a file or stdin, printed for
//! people or as JSON lines.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use span_marker::PredictOptions;

use crate::args::ModelArgs;
use crate::input::{read_sentences, sentence_inputs, split_words};
use crate::CliResult;

#[derive(Args)]
pub struct PredictArgs {
    /// Sentences, one per argument (`-` reads them from stdin, one per line).
    texts: Vec<String>,
    /// Read sentences from this file, one per line (`-` for stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Treat each sentence as words separated by single spaces instead of raw text.
    #[arg(long)]
    words: bool,
    #[command(flatten)]
    options: PredictOptions,
    /// Print one JSON object per sentence instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PredictArgs) -> CliResult {
    args.options.validate()?;
    let lines = read_sentences(args.texts, args.file)?;
    let model = args.model.load()?;
    let split = split_words(&lines, args.words);
    let inputs = sentence_inputs(&lines, &split);
    let predictions = model.predict(&inputs, &args.options)?;
    let json = args.json;
    let mut out = span_marker_cli::stdout();
    for (row, (line, entities)) in lines.iter().zip(&predictions).enumerate() {
        if json {
            let record = serde_json::json!({"row": row, "text": line, "entities": entities});
            writeln!(out, "{record}")?;
            continue;
        }
        writeln!(out, "[{row}] {line}")?;
        for e in entities {
            let position = match (e.char_start, e.char_end) {
                (Some(start), Some(end)) => format!("chars {start}..{end}"),
                _ => format!("words {}..{}", e.word_start, e.word_end),
            };
            writeln!(
                out,
                "    {:<6} {:.3}  {}  ({position})",
                e.label, e.score, e.text
            )?;
        }
        if entities.is_empty() {
            writeln!(out, "    (no entities)")?;
        }
    }
    Ok(())
}
