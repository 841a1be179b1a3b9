//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the core library.
///
/// Variants say what was wrong and where (file, row, word); causes from other crates are kept
/// as sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file is malformed or does not have the expected shape; `key` is the dotted
    /// path of the value at fault (empty when the document itself is malformed).
    #[error("{path}: invalid JSON{}: {source}", if key.is_empty() { String::new() } else { format!(" at `{key}`") })]
    Json {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// A configuration value is missing or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A setting (named by its key) has a value it cannot take.
    #[error("invalid setting `{key}`: {message}")]
    Setting { key: &'static str, message: String },

    /// The label list cannot be used (no `O` label, unknown scheme, ...).
    #[error("invalid labels: {0}")]
    Labels(String),

    /// A tag id is outside the label list.
    #[error("row {row}: tag id {tag} at word {word} is not a valid label id (the label list has {num_labels} labels)")]
    TagOutOfRange {
        row: usize,
        word: usize,
        tag: i64,
        num_labels: usize,
    },

    /// A row's tokens and tags differ in length.
    #[error("row {row}: {num_tokens} tokens but {num_tags} tags")]
    LengthMismatch {
        row: usize,
        num_tokens: usize,
        num_tags: usize,
    },

    /// An entity refers to words outside its sentence.
    #[error("row {row}: entity ({start}, {end}) is outside the sentence of {num_words} words")]
    EntityOutOfRange {
        row: usize,
        start: usize,
        end: usize,
        num_words: usize,
    },

    /// A word is too long to fit the model's input even on its own.
    #[error(
        "row {row}: word {word} has {num_tokens} tokens, more than the {budget} text tokens a sample can hold (`model_max_length` less the special tokens)"
    )]
    WordTooLong {
        row: usize,
        word: usize,
        num_tokens: usize,
        budget: usize,
    },

    /// In strict mode, a sentence longer than the model's input.
    #[error(
        "row {row}: the sentence has {num_tokens} tokens, more than `model_max_length` = {budget} (strict mode refuses to split it into windows)"
    )]
    SentenceTooLong {
        row: usize,
        num_tokens: usize,
        budget: usize,
    },

    /// A weights file is missing, unreadable, corrupt, or does not fit the model.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    /// The encoder architecture cannot carry SpanMarker markers (or is not implemented).
    #[error("encoder `model_type` {model_type:?} is not supported: {reason}")]
    UnsupportedEncoder { model_type: String, reason: String },

    /// A model id could not be resolved to local files.
    #[error("model {id:?}: {message}")]
    Hub { id: String, message: String },

    /// A dataset split could not be resolved to local files.
    #[error("dataset {dataset}: {message}")]
    Dataset { dataset: String, message: String },

    /// Publishing to a Hub repository failed.
    #[error("publishing to {repo:?}: {message}")]
    Publish { repo: String, message: String },

    /// The requested device cannot be used.
    #[error("device: {0}")]
    Device(String),

    /// The Hugging Face tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[source] tokenizers::Error),

    /// libtorch failed. Shown without the C++ stack trace libtorch appends to its messages
    /// (and not offered as a source, whose display would bring the trace back).
    #[error("torch: {}", torch_message(.0))]
    Torch(tch::TchError),
}

impl From<tch::TchError> for Error {
    fn from(error: tch::TchError) -> Self {
        Self::Torch(error)
    }
}

/// The message of a libtorch error up to the C++ stack trace libtorch appends to it
/// ("Exception raised from ... frame #0: ..."), which says nothing to a user of this crate.
pub fn torch_message(error: &tch::TchError) -> String {
    let text = match error {
        tch::TchError::Torch(message) => message.clone(),
        other => other.to_string(),
    };
    let end = [
        "Exception raised from",
        "frame #0",
        "(no backtrace available)",
    ]
    .iter()
    .filter_map(|marker| text.find(marker))
    .min()
    .unwrap_or(text.len());
    text[..end].trim_end().to_owned()
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.into(),
            key: String::new(),
            source,
        }
    }

    /// A JSON error with the dotted path of the value at fault.
    pub(crate) fn json_at(
        path: impl Into<PathBuf>,
        error: serde_path_to_error::Error<serde_json::Error>,
    ) -> Self {
        let key = error.path().to_string();
        Error::Json {
            path: path.into(),
            key: if key == "." { String::new() } else { key },
            source: error.into_inner(),
        }
    }
}

/// Parses JSON `text` from `path` into `T`; an error names the file and the key at fault.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &std::path::Path,
) -> Result<T> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| Error::json_at(path, e))?;
    deserializer.end().map_err(|e| Error::json(path, e))?;
    Ok(value)
}

/// Converts a JSON value from `path` into `T`; an error names the file and the key at fault.
pub(crate) fn json_value_into<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    path: &std::path::Path,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| Error::json_at(path, e))
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_errors_read_without_the_cpp_stack_trace() {
        let error = tch::Tensor::from_slice(&[1f32, 2.0])
            .f_view([5])
            .expect_err("a view of 5 elements over 2 fails");
        let raw = error.to_string();
        let error = Error::from(error);
        assert!(std::error::Error::source(&error).is_none());
        let shown = error.to_string();
        assert!(raw.len() > shown.len(), "nothing was cut from {raw:?}");
        assert!(shown.contains("shape '[5]' is invalid"), "{shown}");
        assert!(
            !shown.contains("frame #") && !shown.contains("Exception raised from"),
            "{shown}"
        );
    }
}
