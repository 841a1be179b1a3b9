//! Words and tokens: the Hugging Face tokenizer set up as SpanMarker uses it.
//!
//! Loading applies what Python `span_marker` does through `transformers`:
//! `add_prefix_space=True` on a byte-level pre-tokenizer (and the RoBERTa post-processor), a
//! `Punctuation` pre-tokenizer in front of XLM-R's, and the `<start>`/`<end>` marker tokens added
//! as special tokens. Nothing is truncated here: long sentences are split into windows later
//! (see [`crate::encoding`]).

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};
use tokenizers::{AddedToken, Encoding, InputSequence, Tokenizer};

use crate::error::{Error, Result};

/// Text of the start marker token.
pub const START_MARKER: &str = "<start>";
/// Text of the end marker token.
pub const END_MARKER: &str = "<end>";

/// One input row: pre-split words or raw text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentenceInput<'a> {
    /// The user's words; each becomes one word, even an empty string (which has no tokens).
    Words(&'a [&'a str]),
    /// Raw text; words come from the tokenizer's pre-tokenizer.
    Text(&'a str),
}

/// A tokenized sentence, never truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedSentence {
    /// Token ids including the special tokens (`[CLS] ... [SEP]`, `<s> ... </s>`).
    pub input_ids: Vec<u32>,
    /// Per word, its token range `start..end` in `input_ids`; `None` for a word without tokens.
    pub word_tokens: Vec<Option<(usize, usize)>>,
    /// Per word, its character range in the text (text input only).
    pub word_chars: Option<Vec<(usize, usize)>>,
    /// Number of special tokens before the first word token.
    pub num_prefix: usize,
    /// Number of special tokens after the last word token.
    pub num_suffix: usize,
}

impl TokenizedSentence {
    pub fn num_words(&self) -> usize {
        self.word_tokens.len()
    }

    /// Token ids between the leading and trailing special tokens.
    pub fn inner_ids(&self) -> &[u32] {
        &self.input_ids[self.num_prefix..self.input_ids.len() - self.num_suffix]
    }

    /// Tokens of word `w` (0 for a word without tokens).
    pub fn word_len(&self, w: usize) -> usize {
        self.word_tokens[w].map_or(0, |(s, e)| e - s)
    }
}

/// The tokenizer of a SpanMarker model with its marker and padding ids.
#[derive(Debug, Clone)]
pub struct SpanMarkerTokenizer {
    tokenizer: Tokenizer,
    start_marker_id: u32,
    end_marker_id: u32,
    pad_token_id: u32,
    /// `model_max_length` from `tokenizer_config.json`, if it sets one.
    model_max_length: Option<usize>,
    /// `tokenizer_config.json` as read, written back on save.
    config_json: Option<Value>,
}

/// What `tokenizer_config.json` contributes.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    model_max_length: Option<f64>,
    #[serde(default)]
    tokenizer_class: Option<String>,
    #[serde(default)]
    pad_token: Option<Value>,
}

impl SpanMarkerTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present) from a model directory.
    ///
    /// `encoder_model_type` (`bert`, `xlm-roberta`, ...) picks XLM-R's punctuation handling when
    /// the tokenizer config does not name its class; `fallback_pad_id` is the encoder's
    /// `pad_token_id`, used when the tokenizer files name no pad token.
    pub fn from_dir(
        dir: impl AsRef<Path>,
        encoder_model_type: &str,
        fallback_pad_id: Option<i64>,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let tokenizer_json = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let config_path = dir.join("tokenizer_config.json");
        let config_json = match std::fs::read_to_string(&config_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&config_path, e)),
        };
        Self::from_json(
            &tokenizer_json,
            config_json.as_deref(),
            encoder_model_type,
            fallback_pad_id,
            dir,
        )
    }

    /// Like [`from_dir`](Self::from_dir) with the files' contents given; `source` names them in errors.
    pub fn from_json(
        tokenizer_json: &str,
        tokenizer_config_json: Option<&str>,
        encoder_model_type: &str,
        fallback_pad_id: Option<i64>,
        source: &Path,
    ) -> Result<Self> {
        let path = source.join("tokenizer.json");
        let config_path = source.join("tokenizer_config.json");
        let json: Value =
            serde_json::from_str(tokenizer_json).map_err(|e| Error::json(&path, e))?;
        let config_json: Option<Value> = tokenizer_config_json
            .map(|text| serde_json::from_str(text).map_err(|e| Error::json(&config_path, e)))
            .transpose()?;
        let config: TokenizerConfig = match &config_json {
            Some(value) => {
                TokenizerConfig::deserialize(value).map_err(|e| Error::json(&config_path, e))?
            }
            None => TokenizerConfig::default(),
        };
        let is_xlmr = match config.tokenizer_class.as_deref() {
            Some(class) => class.starts_with("XLMRobertaTokenizer"),
            None => encoder_model_type == "xlm-roberta",
        };
        let tokenizer =
            Tokenizer::from_bytes(prepare_tokenizer_json(json, is_xlmr).to_string().as_bytes())
                .map_err(|e| {
                    Error::Config(format!("{}: not a valid tokenizer: {e}", path.display()))
                })?;

        // Transformers treats absurdly large values (1e30) as "no limit".
        let model_max_length = config
            .model_max_length
            .filter(|&m| (1.0..1e29).contains(&m))
            .map(|m| m as usize);
        let pad_token_id = match config.pad_token.as_ref().and_then(token_content) {
            Some(content) => tokenizer.token_to_id(content).ok_or_else(|| {
                Error::Config(format!(
                    "{}: pad token {content:?} is not in the vocabulary",
                    config_path.display()
                ))
            })?,
            None => fallback_pad_id
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}: no pad token and no encoder `pad_token_id`",
                        source.display()
                    ))
                })?,
        };
        let mut this = Self::new(tokenizer, pad_token_id, model_max_length)?;
        this.config_json = config_json;
        Ok(this)
    }

    /// Wraps a ready tokenizer: adds the marker tokens (a no-op when they exist) and clears any
    /// truncation or padding stored in it.
    pub fn new(
        mut tokenizer: Tokenizer,
        pad_token_id: u32,
        model_max_length: Option<usize>,
    ) -> Result<Self> {
        tokenizer
            .with_truncation(None)
            .map_err(Error::Tokenizer)?
            .with_padding(None);
        tokenizer.add_special_tokens(&[
            AddedToken::from(START_MARKER, true),
            AddedToken::from(END_MARKER, true),
        ]);
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                Error::Config(format!(
                    "could not add the marker token {t:?} to the tokenizer"
                ))
            })
        };
        Ok(Self {
            start_marker_id: id(START_MARKER)?,
            end_marker_id: id(END_MARKER)?,
            pad_token_id,
            model_max_length,
            tokenizer,
            config_json: None,
        })
    }

    /// Writes `tokenizer.json` (with the marker tokens) and `tokenizer_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer.json");
        let json = self.tokenizer.to_string(false).map_err(Error::Tokenizer)?;
        crate::atomic::write(&path, json.as_bytes())?;
        let config = match &self.config_json {
            Some(config) => config.clone(),
            None => {
                let pad = self.tokenizer.id_to_token(self.pad_token_id);
                json!({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad})
            }
        };
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| Error::json(dir.join("tokenizer_config.json"), e))?;
        crate::atomic::write(&dir.join("tokenizer_config.json"), text.as_bytes())
    }

    pub fn start_marker_id(&self) -> u32 {
        self.start_marker_id
    }
    pub fn end_marker_id(&self) -> u32 {
        self.end_marker_id
    }
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }
    /// The tokenizer's own length limit, if its config sets one.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }
    /// Vocabulary size including added tokens (the markers among them).
    pub fn len(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes one sentence.
    pub fn tokenize(&self, input: SentenceInput<'_>) -> Result<TokenizedSentence> {
        Ok(self.tokenize_batch(&[input])?.remove(0))
    }

    /// Tokenizes a batch of sentences in parallel.
    #[tracing::instrument(level = "debug", skip_all, fields(rows = inputs.len()))]
    pub fn tokenize_batch(&self, inputs: &[SentenceInput<'_>]) -> Result<Vec<TokenizedSentence>> {
        let sequences: Vec<tokenizers::EncodeInput> = inputs
            .iter()
            .map(|input| match *input {
                SentenceInput::Words(words) => InputSequence::from(words.to_vec()).into(),
                SentenceInput::Text(text) => InputSequence::from(text).into(),
            })
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch_char_offsets(sequences, true)
            .map_err(Error::Tokenizer)?;
        Ok(encodings
            .iter()
            .zip(inputs)
            .map(|(encoding, input)| match input {
                SentenceInput::Words(words) => from_encoding(encoding, Some(words.len()), false),
                SentenceInput::Text(_) => from_encoding(encoding, None, true),
            })
            .collect())
    }
}

/// A pad token in `tokenizer_config.json` is a string or an `AddedToken` object.
fn token_content(value: &Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value.get("content").and_then(Value::as_str))
}

/// Applies `add_prefix_space=True` and XLM-R's punctuation splitting to a `tokenizer.json`.
fn prepare_tokenizer_json(mut json: Value, is_xlmr: bool) -> Value {
    // transformers sets the flag only where the top-level component has it.
    if let Some(pre) = json.get_mut("pre_tokenizer").and_then(Value::as_object_mut) {
        if pre.contains_key("add_prefix_space") {
            pre.insert("add_prefix_space".into(), Value::Bool(true));
        }
    }
    if let Some(post) = json
        .get_mut("post_processor")
        .and_then(Value::as_object_mut)
    {
        if post.contains_key("add_prefix_space") {
            post.insert("add_prefix_space".into(), Value::Bool(true));
        }
    }
    if is_xlmr {
        let pre = json.get("pre_tokenizer").cloned().unwrap_or(Value::Null);
        let already = pre.get("type").and_then(Value::as_str) == Some("Sequence")
            && pre.pointer("/pretokenizers/0/type").and_then(Value::as_str) == Some("Punctuation");
        if !already {
            let punctuation = json!({"type": "Punctuation", "behavior": "Isolated"});
            let sequence = if pre.is_null() {
                vec![punctuation]
            } else {
                vec![punctuation, pre]
            };
            json["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": sequence});
        }
    }
    json
}

fn from_encoding(
    encoding: &Encoding,
    num_words: Option<usize>,
    with_chars: bool,
) -> TokenizedSentence {
    let word_ids = encoding.get_word_ids();
    let offsets = encoding.get_offsets();
    let num_words = num_words.unwrap_or_else(|| {
        word_ids
            .iter()
            .flatten()
            .max()
            .map_or(0, |&w| w as usize + 1)
    });
    let mut word_tokens: Vec<Option<(usize, usize)>> = vec![None; num_words];
    let mut word_chars = with_chars.then(|| vec![(0usize, 0usize); num_words]);
    for (t, word) in word_ids.iter().enumerate() {
        let Some(w) = word.map(|w| w as usize) else {
            continue;
        };
        let range = word_tokens[w].get_or_insert((t, t));
        range.1 = t + 1;
        if let Some(chars) = word_chars.as_mut() {
            let (start, end) = offsets[t];
            let c = &mut chars[w];
            if range.0 == t {
                *c = (start, end);
            } else {
                c.1 = end;
            }
        }
    }
    let first = word_tokens.iter().flatten().map(|r| r.0).min();
    let last = word_tokens.iter().flatten().map(|r| r.1).max();
    let len = word_ids.len();
    let (num_prefix, num_suffix) = match (first, last) {
        (Some(first), Some(last)) => (first, len - last),
        // No word has tokens: count the leading run of special tokens as prefix.
        _ => {
            let special = encoding.get_special_tokens_mask();
            let prefix = special
                .iter()
                .take_while(|&&s| s == 1)
                .count()
                .min(len / 2 + len % 2);
            (prefix, len - prefix)
        }
    };
    TokenizedSentence {
        input_ids: encoding.get_ids().to_vec(),
        word_tokens,
        word_chars,
        num_prefix,
        num_suffix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer with a Metaspace pre-tokenizer, shaped like XLM-R's.
    fn metaspace_tokenizer_json() -> String {
        json!({
            "version": "1.0",
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                                               "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
            "decoder": null,
            "model": {"type": "WordLevel", "unk_token": "<unk>",
                      "vocab": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁Hello": 4, "▁,": 5, "world": 6, "▁world": 7}}
        })
        .to_string()
    }

    fn load(is_xlmr_class: bool) -> SpanMarkerTokenizer {
        let config = if is_xlmr_class {
            r#"{"tokenizer_class": "XLMRobertaTokenizer", "pad_token": "<pad>", "model_max_length": 512}"#
        } else {
            r#"{"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>"}"#
        };
        SpanMarkerTokenizer::from_json(
            &metaspace_tokenizer_json(),
            Some(config),
            "xlm-roberta",
            None,
            Path::new("t"),
        )
        .unwrap()
    }

    #[test]
    fn xlmr_splits_punctuation_into_words() {
        let with = load(true)
            .tokenize(SentenceInput::Text("Hello,world"))
            .unwrap();
        assert_eq!(with.num_words(), 3);
        assert_eq!(with.input_ids, [0, 4, 5, 7, 2]);
        assert_eq!(
            with.word_chars.as_deref(),
            Some(&[(0, 5), (5, 6), (6, 11)][..])
        );
        let without = load(false)
            .tokenize(SentenceInput::Text("Hello,world"))
            .unwrap();
        assert_eq!(without.num_words(), 1);
    }

    #[test]
    fn punctuation_is_prepended_once() {
        let json: Value = serde_json::from_str(&metaspace_tokenizer_json()).unwrap();
        let once = prepare_tokenizer_json(json, true);
        let twice = prepare_tokenizer_json(once.clone(), true);
        assert_eq!(once, twice);
        assert_eq!(
            once.pointer("/pre_tokenizer/pretokenizers/1/type"),
            Some(&json!("Metaspace"))
        );
    }

    #[test]
    fn byte_level_gets_a_prefix_space() {
        let json = json!({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true},
                          "post_processor": {"type": "RobertaProcessing", "add_prefix_space": false},
                          "normalizer": {"type": "NFC"}});
        let out = prepare_tokenizer_json(json, false);
        assert_eq!(
            out.pointer("/pre_tokenizer/add_prefix_space"),
            Some(&json!(true))
        );
        assert_eq!(
            out.pointer("/post_processor/add_prefix_space"),
            Some(&json!(true))
        );
        assert_eq!(out.pointer("/normalizer/add_prefix_space"), None);
    }

    #[test]
    fn markers_and_pad_come_from_the_tokenizer_files() {
        let t = load(true);
        assert_eq!(
            (t.start_marker_id(), t.end_marker_id(), t.pad_token_id()),
            (8, 9, 1)
        );
        assert_eq!(t.model_max_length(), Some(512));
        assert_eq!(load(false).model_max_length(), None);
    }
}
