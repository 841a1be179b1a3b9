//! Sentences for `predict` and `candidates`: from arguments, a file or stdin, as text or as
//! space-separated words.

use std::io::Read;
use std::path::PathBuf;

use span_marker::SentenceInput;

/// The sample sentences used when no input is given.
pub const SAMPLE: &str = include_str!("../../examples/sample.txt");

/// Sentences from the command line (one per argument; a lone `-` reads stdin), else from
/// `file` (`-` for stdin) one per line, else the bundled sample. Row `i` of the output is
/// argument or line `i`.
pub fn read_sentences(
    texts: Vec<String>,
    file: Option<PathBuf>,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    if texts == ["-"] {
        return read_sentences(Vec::new(), Some(PathBuf::from("-")));
    }
    if !texts.is_empty() {
        if file.is_some() {
            return Err("give sentences as arguments or with --file, not both".into());
        }
        return Ok(texts);
    }
    let text = match file {
        None => SAMPLE.to_owned(),
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading stdin: {e}"))?;
            text
        }
        Some(path) => {
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    Ok(text.lines().map(str::to_owned).collect())
}

/// Each sentence's words (split at single spaces) with `--words`; nothing otherwise, since text
/// input needs no split.
pub fn split_words(sentences: &[String], words: bool) -> Vec<Vec<&str>> {
    if words {
        sentences.iter().map(|l| l.split(' ').collect()).collect()
    } else {
        Vec::new()
    }
}

/// One input per sentence: its words when they were split, else its text.
pub fn sentence_inputs<'a>(
    sentences: &'a [String],
    split: &'a [Vec<&'a str>],
) -> Vec<SentenceInput<'a>> {
    if split.is_empty() {
        sentences.iter().map(|l| SentenceInput::Text(l)).collect()
    } else {
        split.iter().map(|w| SentenceInput::Words(w)).collect()
    }
}
