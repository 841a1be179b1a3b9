//! Document context: surrounding sentences of the same document added to each sentence's text.
//!
//! Rows are ordered by `(document_id, sentence_id)`. For each sentence, the next and the
//! previous sentences' inner tokens are added alternately (next first) until the token budget
//! is used or the optional `max_next`/`max_prev` caps are reached. Only the sentence's own words
//! carry markers, so marker positions shift by the prepended length. See
//! `docs/algorithm.md`, section 11.

use std::collections::HashMap;

use crate::encoding::EncodedWindow;
use crate::tokenizer::TokenizedSentence;

/// Where a row sits in its document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocumentPosition {
    pub document_id: String,
    pub sentence_id: i64,
}

impl DocumentPosition {
    pub fn new(document_id: impl ToString, sentence_id: i64) -> Self {
        Self {
            document_id: document_id.to_string(),
            sentence_id,
        }
    }
}

/// Caps on the number of context sentences (`None`: as many as fit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextLimits {
    pub max_prev: Option<usize>,
    pub max_next: Option<usize>,
}

/// Adds document context to every row that is encoded as a single window.
///
/// `positions[row]` is the row's place in its document (`None` rows take no part);
/// `sentences[row]` its tokenization; `windows` the encoded windows of all rows.
pub fn add_document_context(
    windows: &mut [EncodedWindow],
    sentences: &[Option<TokenizedSentence>],
    positions: &[Option<DocumentPosition>],
    model_max_length: usize,
    limits: ContextLimits,
) {
    let mut order: Vec<usize> = (0..positions.len())
        .filter(|&r| positions[r].is_some() && sentences.get(r).is_some_and(Option::is_some))
        .collect();
    order.sort_by(|&a, &b| positions[a].cmp(&positions[b]));

    let mut window_of_row: HashMap<usize, Option<usize>> = HashMap::new();
    for (i, w) in windows.iter().enumerate() {
        window_of_row
            .entry(w.row)
            .and_modify(|single| *single = None)
            .or_insert(Some(i));
    }
    let document = |i: usize| positions[order[i]].as_ref().map(|p| &p.document_id);
    let inner = |i: usize| {
        sentences[order[i]]
            .as_ref()
            .map_or(&[][..], |s| s.inner_ids())
    };

    for i in 0..order.len() {
        let row = order[i];
        let Some(Some(w)) = window_of_row.get(&row).copied() else {
            continue;
        };
        let Some(sentence) = sentences[row].as_ref() else {
            continue;
        };
        let (num_prefix, num_suffix) = (sentence.num_prefix, sentence.num_suffix);
        let specials = num_prefix + num_suffix;
        let window = &windows[w];
        let own = &window.input_ids[num_prefix..window.input_ids.len() - num_suffix];

        let mut prev: Vec<u32> = Vec::new(); // prepended context, in text order
        let mut next: Vec<u32> = Vec::new();
        let (mut prev_added, mut next_added) = (0usize, 0usize);
        let remaining = |prev: &Vec<u32>, next: &Vec<u32>| {
            model_max_length as isize - (prev.len() + own.len() + next.len() + specials) as isize
        };
        while remaining(&prev, &next) > 0 {
            let j = i + next_added + 1;
            let add_next = limits.max_next.is_none_or(|m| next_added < m)
                && j < order.len()
                && document(j) == document(i);
            if add_next {
                let take = remaining(&prev, &next) as usize;
                next.extend(inner(j).iter().take(take));
                next_added += 1;
            }
            let room = remaining(&prev, &next);
            if room <= 0 {
                break;
            }
            let add_prev = limits.max_prev.is_none_or(|m| prev_added < m)
                && i > prev_added
                && document(i - prev_added - 1) == document(i);
            if add_prev {
                let tokens = inner(i - prev_added - 1);
                let take = (room as usize).min(tokens.len());
                let mut joined = tokens[tokens.len() - take..].to_vec();
                joined.extend_from_slice(&prev);
                prev = joined;
                prev_added += 1;
            }
            if !add_next && !add_prev {
                break;
            }
        }
        if prev.is_empty() && next.is_empty() {
            continue;
        }
        let window = &mut windows[w];
        let mut input_ids = Vec::with_capacity(prev.len() + window.input_ids.len() + next.len());
        input_ids.extend_from_slice(&window.input_ids[..num_prefix]);
        input_ids.extend_from_slice(&prev);
        input_ids
            .extend_from_slice(&window.input_ids[num_prefix..window.input_ids.len() - num_suffix]);
        input_ids.extend_from_slice(&next);
        input_ids.extend_from_slice(&window.input_ids[window.input_ids.len() - num_suffix..]);
        window.input_ids = input_ids;
        let shift = prev.len() as u32;
        for p in window
            .start_positions
            .iter_mut()
            .chain(window.end_positions.iter_mut())
        {
            *p += shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{encode_sentence, EncodingSettings};

    /// Sentence `k` has `len` words of one token each, ids `100 * k + i`, between 1 and 2.
    fn sentence(k: u32, len: usize) -> TokenizedSentence {
        let mut input_ids = vec![1];
        input_ids.extend((0..len as u32).map(|i| 100 * k + i));
        input_ids.push(2);
        TokenizedSentence {
            word_tokens: (0..len).map(|i| Some((i + 1, i + 2))).collect(),
            input_ids,
            word_chars: None,
            num_prefix: 1,
            num_suffix: 1,
        }
    }

    fn run(limits: ContextLimits, m: usize) -> Vec<EncodedWindow> {
        let sentences: Vec<Option<TokenizedSentence>> =
            (1..=3).map(|k| Some(sentence(k, 3))).collect();
        let settings = EncodingSettings {
            model_max_length: m,
            marker_max_length: 4,
            entity_max_length: 2,
            strict: false,
        };
        let mut windows: Vec<EncodedWindow> = sentences
            .iter()
            .enumerate()
            .flat_map(|(row, s)| {
                encode_sentence(row, s.as_ref().unwrap(), None, 0, &settings, None).unwrap()
            })
            .collect();
        // Rows given out of order: row 0 is the second sentence of the document.
        let positions = vec![
            Some(DocumentPosition::new("d", 1)),
            Some(DocumentPosition::new("d", 0)),
            Some(DocumentPosition::new("d", 2)),
        ];
        add_document_context(&mut windows, &sentences, &positions, m, limits);
        windows
    }

    #[test]
    fn middle_sentence_gets_next_then_previous() {
        let w = run(ContextLimits::default(), 64);
        assert_eq!(
            w[0].input_ids,
            [1, 200, 201, 202, 100, 101, 102, 300, 301, 302, 2]
        );
        assert_eq!(
            w[0].start_positions[0], 4,
            "markers shift by the prepended length"
        );
    }

    #[test]
    fn caps_limit_each_side() {
        let limits = ContextLimits {
            max_prev: Some(1),
            max_next: Some(0),
        };
        let w = run(limits, 64);
        assert_eq!(w[0].input_ids, [1, 200, 201, 202, 100, 101, 102, 2]);
        assert_eq!(
            w[2].input_ids,
            [1, 100, 101, 102, 300, 301, 302, 2],
            "one previous sentence only"
        );
    }

    #[test]
    fn budget_cuts_context_tokens() {
        // M = 8: 3 own tokens + 2 specials leave 3; next takes 3 tokens, nothing left for previous.
        let w = run(ContextLimits::default(), 8);
        assert_eq!(w[0].input_ids, [1, 100, 101, 102, 300, 301, 302, 2]);
        // The first sentence has no previous; next gets all the room.
        assert_eq!(w[1].input_ids, [1, 200, 201, 202, 100, 101, 102, 2]);
    }
}
