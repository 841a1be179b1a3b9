//! `predict` and `candidates`: sentences from arguments, a file or stdin, printed for people
//! or as JSON lines.

use std::io::Read;
use std::path::PathBuf;

use span_marker::spans::Span;
use span_marker::{
    PredictOptions, Preprocessor, SentenceInput, SpanMarkerModel, TokenizedSentence,
};

/// The sample corpus used when no input is given.
pub const SAMPLE: &str = include_str!("../../../../examples/sample.txt");

pub fn predict(
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

/// Sentences from the command line (one per argument; a lone `-` reads stdin), else from
/// `file` (`-` for stdin), else the bundled sample.
pub fn read_input(
    texts: &[String],
    file: Option<PathBuf>,
) -> Result<String, Box<dyn std::error::Error>> {
    if texts == ["-"] {
        return read_input(&[], Some(PathBuf::from("-")));
    }
    if !texts.is_empty() {
        if file.is_some() {
            return Err("give sentences as arguments or with --file, not both".into());
        }
        return Ok(texts.join("\n"));
    }
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

pub fn candidates(
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
        batch.attention_mask().size()
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
