//! `span-marker candidates`: the preprocessing of sentences, shown: words, tokens, span
//! candidates and encoder samples.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use span_marker::spans::Span;
use span_marker::{Preprocessor, SentenceInput, TokenizedSentence};

use crate::input::{read_sentences, sentence_inputs, split_words};
use crate::CliResult;

#[derive(Args)]
pub struct CandidatesArgs {
    /// Sentences, one per line (`-` for stdin).
    file: Option<PathBuf>,
    /// The model whose preprocessing is shown: a directory, a Hugging Face id or `bundled`.
    #[arg(long, default_value = span_marker::BUNDLED)]
    model: String,
    /// Treat each line as words separated by single spaces instead of raw text.
    #[arg(long)]
    words: bool,
    /// Candidates shown per sentence (the rest are counted).
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Refuse sentences longer than the model input instead of splitting them into windows.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: CandidatesArgs) -> CliResult {
    let lines = read_sentences(Vec::new(), args.file)?;
    let preprocessor =
        Preprocessor::from_pretrained(&args.model, &Default::default())?.strict(args.strict);
    let show = args.show;
    let split = split_words(&lines, args.words);
    let inputs: Vec<Option<SentenceInput<'_>>> = sentence_inputs(&lines, &split)
        .into_iter()
        .map(Some)
        .collect();
    let encoded = preprocessor.encode(&inputs)?;
    let settings = preprocessor.settings();
    let mut out = span_marker_cli::stdout();
    writeln!(out, "model_max_length M = {}, marker_max_length K = {}, entity_max_length E = {}, encoder length T = {}",
        settings.model_max_length,
        settings.marker_max_length,
        settings.entity_max_length,
        settings.total_length())?;
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
            print_row(
                &mut out,
                sentence,
                &row_spans[row],
                row_samples[row],
                row,
                line,
                show,
            )?;
        }
    }
    let batch = encoded.collate(
        0..encoded.samples.len(),
        &preprocessor.collate_spec(),
        tch::Device::Cpu,
    )?;
    writeln!(
        out,
        "\n{} sentences -> {} windows -> {} samples; input_ids {:?}, attention_mask {:?}",
        lines.len(),
        encoded.windows.len(),
        encoded.samples.len(),
        batch.input_ids.size(),
        batch.attention_mask().size()
    )?;
    Ok(())
}

fn print_row(
    out: &mut impl Write,
    sentence: &TokenizedSentence,
    spans: &[Span],
    samples: usize,
    row: usize,
    line: &str,
    show: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "\n[{row}] {line}\n    {} words, {} tokens, {} candidates, {} sample(s)",
        sentence.num_words(),
        sentence.input_ids.len(),
        spans.len(),
        samples
    )?;
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
    writeln!(out, "    {}", shown.join(" | "))?;
    if spans.len() > show {
        writeln!(
            out,
            "    ... and {} more (--show to list more)",
            spans.len() - show
        )?;
    }
    Ok(())
}
