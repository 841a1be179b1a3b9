//! Marker encoding: from a tokenized sentence to encoder texts carrying span markers.
//!
//! A sentence whose tokens fit `model_max_length` (`M`) becomes one [`EncodedWindow`], exactly
//! as the reference encodes it. A longer one is never truncated: it is split into windows of
//! whole words, each owning a contiguous range of span starts and carrying some words of left
//! context; together the windows enumerate every candidate span once. Windows are then
//! *spread* over samples of at most `(T - n) / 2` marker pairs each ([`spread`]).

use std::collections::HashMap;
use std::ops::Range;

use crate::coverage::EntityCoverage;
use crate::error::{Error, Result};
use crate::labels::Entity;
use crate::spans::{candidate_spans_in, Span};
use crate::tokenizer::TokenizedSentence;

/// The sizes that shape encoder inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingSettings {
    /// Text-token budget `M`, special tokens included.
    pub model_max_length: usize,
    /// Marker pairs per sample `K`.
    pub marker_max_length: usize,
    /// Longest entity in words `E`.
    pub entity_max_length: usize,
    /// Refuse sentences longer than `M` instead of splitting them into windows.
    pub strict: bool,
}

impl EncodingSettings {
    /// Encoder input length `T = M + 2K`.
    pub fn total_length(&self) -> usize {
        self.model_max_length + 2 * self.marker_max_length
    }
}

/// One encoder text and the spans whose markers it carries, before spreading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedWindow {
    /// The input row this text comes from.
    pub row: usize,
    /// Text token ids, special tokens (and document context) included; at most `M` long.
    pub input_ids: Vec<u32>,
    /// Candidate spans in sentence word indices, in enumeration order.
    pub spans: Vec<Span>,
    /// Token index of each span's first token (0 for a word without tokens).
    pub start_positions: Vec<u32>,
    /// Token index of each span's last token (0 for a word without tokens).
    pub end_positions: Vec<u32>,
    /// Reduced label id of each span (training data only).
    pub labels: Option<Vec<i64>>,
}

/// A sample: a window and the range of its spans whose markers go into one encoder input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRef {
    pub window: usize,
    pub spans: Range<usize>,
}

impl SampleRef {
    /// Encoder positions the sample needs: its text tokens, padded to an even count, then
    /// one `<start>` and one `<end>` marker per span.
    pub fn encoder_length(&self, windows: &[EncodedWindow]) -> usize {
        let n = windows[self.window].input_ids.len();
        n + n % 2 + 2 * self.spans.len()
    }
}

/// Words of a window: `words` is the text it holds, `owned` the span starts it enumerates.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WindowPlan {
    words: Range<usize>,
    owned: Range<usize>,
}

/// Splits a sentence into windows of whole words whose tokens fit `budget`.
fn plan_windows(
    row: usize,
    sentence: &TokenizedSentence,
    budget: usize,
    entity_max_length: usize,
) -> Result<Vec<WindowPlan>> {
    let n = sentence.num_words();
    if sentence.inner_ids().len() <= budget {
        return Ok(vec![WindowPlan {
            words: 0..n,
            owned: 0..n,
        }]);
    }
    if let Some(word) = (0..n).find(|&w| sentence.word_len(w) > budget) {
        return Err(Error::WordTooLong {
            row,
            word,
            num_tokens: sentence.word_len(word),
            budget,
        });
    }
    let left_budget = budget / 4;
    let mut plans = Vec::new();
    let mut owned_start = 0;
    while owned_start < n {
        // Left context: whole words just before the owned range, up to a quarter of the budget.
        let mut start = owned_start;
        let mut used = 0;
        while start > 0 && used + sentence.word_len(start - 1) <= left_budget {
            start -= 1;
            used += sentence.word_len(start);
        }
        let extend = |mut used: usize| {
            let mut end = owned_start;
            while end < n && used + sentence.word_len(end) <= budget {
                used += sentence.word_len(end);
                end += 1;
            }
            end
        };
        let mut end = extend(used);
        if end < n && end < owned_start + entity_max_length {
            // The context crowds out spans of the first owned word: drop the context.
            start = owned_start;
            end = extend(0);
        }
        let owned_end = if end == n {
            n
        } else {
            (end + 1)
                .saturating_sub(entity_max_length)
                .max(owned_start + 1)
        };
        plans.push(WindowPlan {
            words: start..end,
            owned: owned_start..owned_end,
        });
        owned_start = owned_end;
    }
    Ok(plans)
}

/// Encodes one sentence into windows with their candidate spans, marker positions and labels.
///
/// `entities` are the row's annotations (reduced label ids, word spans); they turn into one
/// label per span (`outside_id` for spans that are no entity) and feed `coverage`.
pub fn encode_sentence(
    row: usize,
    sentence: &TokenizedSentence,
    entities: Option<&[Entity]>,
    outside_id: usize,
    settings: &EncodingSettings,
    coverage: Option<&mut EntityCoverage>,
) -> Result<Vec<EncodedWindow>> {
    let n = sentence.num_words();
    let specials = sentence.num_prefix + sentence.num_suffix;
    let budget = settings
        .model_max_length
        .checked_sub(specials)
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            Error::Config(format!(
                "`model_max_length` {} leaves no room for text next to {specials} special tokens",
                settings.model_max_length
            ))
        })?;
    if settings.strict && sentence.inner_ids().len() > budget {
        return Err(Error::SentenceTooLong {
            row,
            num_tokens: sentence.input_ids.len(),
            budget: settings.model_max_length,
        });
    }
    let mut span_labels: Option<HashMap<Span, usize>> = match entities {
        None => None,
        Some(entities) => {
            let mut map = HashMap::with_capacity(entities.len());
            for e in entities {
                if e.start >= e.end || e.end > n {
                    return Err(Error::EntityOutOfRange {
                        row,
                        start: e.start,
                        end: e.end,
                        num_words: n,
                    });
                }
                map.insert(Span::new(e.start as u32, e.end as u32), e.label);
            }
            Some(map)
        }
    };
    let num_entities = span_labels.as_ref().map_or(0, HashMap::len);

    let plans = plan_windows(row, sentence, budget, settings.entity_max_length)?;
    let mut lost_spans = 0usize;
    let windows = plans
        .into_iter()
        .map(|plan| {
            let first_token = plan
                .words
                .clone()
                .find_map(|w| sentence.word_tokens[w].map(|r| r.0));
            let last_token = plan
                .words
                .clone()
                .rev()
                .find_map(|w| sentence.word_tokens[w].map(|r| r.1));
            let (lo, hi) = first_token
                .zip(last_token)
                .unwrap_or((sentence.num_prefix, sentence.num_prefix));
            let mut input_ids = Vec::with_capacity(hi - lo + specials);
            input_ids.extend_from_slice(&sentence.input_ids[..sentence.num_prefix]);
            input_ids.extend_from_slice(&sentence.input_ids[lo..hi]);
            input_ids.extend_from_slice(
                &sentence.input_ids[sentence.input_ids.len() - sentence.num_suffix..],
            );
            // Token index in this window's text (or 0 for a word without tokens, as the reference).
            let shift = |t: usize| (t - lo + sentence.num_prefix) as u32;

            let owned = plan.owned.clone();
            let limit = plan.words.end;
            lost_spans += owned
                .clone()
                .map(|s| n.min(s + settings.entity_max_length).saturating_sub(limit))
                .sum::<usize>();
            let spans: Vec<Span> =
                candidate_spans_in(owned, limit, settings.entity_max_length).collect();
            let start_positions = spans
                .iter()
                .map(|s| sentence.word_tokens[s.start as usize].map_or(0, |r| shift(r.0)))
                .collect();
            let end_positions = spans
                .iter()
                .map(|s| sentence.word_tokens[s.end as usize - 1].map_or(0, |r| shift(r.1 - 1)))
                .collect();
            let labels = span_labels.as_mut().map(|map| {
                spans
                    .iter()
                    .map(|s| map.remove(s).unwrap_or(outside_id) as i64)
                    .collect()
            });
            EncodedWindow {
                row,
                input_ids,
                spans,
                start_positions,
                end_positions,
                labels,
            }
        })
        .collect();

    if lost_spans > 0 {
        tracing::warn!(
            row,
            lost_spans,
            "a few words of this sentence exceed the token budget together: {lost_spans} candidate spans cannot be encoded"
        );
    }
    if let (Some(coverage), Some(unreached)) = (coverage, span_labels) {
        coverage.total += num_entities;
        for span in unreached.keys() {
            coverage.missed(span.len());
        }
    }
    Ok(windows)
}

/// Splits windows into samples of at most `(T - n) / 2` marker pairs, in order.
pub fn spread(windows: &[EncodedWindow], total_length: usize) -> Vec<SampleRef> {
    let mut samples = Vec::new();
    for (index, window) in windows.iter().enumerate() {
        let capacity = ((total_length - window.input_ids.len()) / 2).max(1);
        let num_spans = window.spans.len();
        samples.extend((0..num_spans).step_by(capacity).map(|start| SampleRef {
            window: index,
            spans: start..(start + capacity).min(num_spans),
        }));
    }
    samples
}

/// Joins each window's consecutive samples, up to `most` at a time, into one sample holding
/// all their spans, with the number of samples joined: its text is then encoded once instead of
/// once per sample. Where attention keeps text blind to markers and each marker to all but its
/// partner (SpanMarker's pattern), every span gets the same states either way, up to float
/// summation order (and, in int8, the activation scales of the calls the rows share); the
/// joined sample may be longer than the encoder length `T` (its position ids are not).
pub fn join_windows(samples: &[SampleRef], most: usize) -> Vec<(SampleRef, usize)> {
    let mut joined: Vec<(SampleRef, usize)> = Vec::with_capacity(samples.len());
    for sample in samples {
        match joined.last_mut() {
            Some((last, count))
                if last.window == sample.window
                    && last.spans.end == sample.spans.start
                    && *count < most =>
            {
                last.spans.end = sample.spans.end;
                *count += 1;
            }
            _ => joined.push((sample.clone(), 1)),
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sentence of `lens.len()` words with the given token counts, `[CLS]`/`[SEP]` around.
    fn sentence(lens: &[usize]) -> TokenizedSentence {
        let mut input_ids = vec![101];
        let mut word_tokens = Vec::new();
        for (w, &len) in lens.iter().enumerate() {
            let start = input_ids.len();
            input_ids.extend(std::iter::repeat_n(1000 + w as u32, len));
            word_tokens.push((len > 0).then_some((start, input_ids.len())));
        }
        input_ids.push(102);
        TokenizedSentence {
            input_ids,
            word_tokens,
            word_chars: None,
            num_prefix: 1,
            num_suffix: 1,
        }
    }

    fn settings(m: usize, e: usize) -> EncodingSettings {
        EncodingSettings {
            model_max_length: m,
            marker_max_length: 4,
            entity_max_length: e,
            strict: false,
        }
    }

    #[test]
    fn short_sentence_is_one_window_with_reference_positions() {
        let s = sentence(&[1, 2, 1]);
        let w = encode_sentence(0, &s, None, 0, &settings(16, 2), None).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].input_ids, s.input_ids);
        assert_eq!(
            w[0].spans,
            [
                Span::new(0, 1),
                Span::new(0, 2),
                Span::new(1, 2),
                Span::new(1, 3),
                Span::new(2, 3)
            ]
        );
        assert_eq!(w[0].start_positions, [1, 1, 2, 2, 4]);
        assert_eq!(w[0].end_positions, [1, 3, 3, 4, 4]);
    }

    #[test]
    fn long_sentence_windows_cover_every_span_exactly_once() {
        for (lens, m, e) in [
            (vec![1; 50], 12, 3),
            (vec![1; 50], 12, 8),
            (
                vec![2, 1, 3, 1, 1, 2, 2, 1, 4, 1, 1, 1, 3, 2, 1, 1, 2],
                10,
                4,
            ),
            (vec![1, 0, 2, 0, 0, 3, 1, 1, 1, 2, 2, 2, 1, 0, 1], 8, 2),
        ] {
            let s = sentence(&lens);
            let windows = encode_sentence(3, &s, None, 0, &settings(m, e), None).unwrap();
            assert!(windows.len() > 1);
            let all: Vec<Span> = windows.iter().flat_map(|w| w.spans.clone()).collect();
            // Every span whose words fit the text budget together is enumerated, once.
            let fits =
                |s: &Span| (s.start..s.end).map(|w| lens[w as usize]).sum::<usize>() <= m - 2;
            let expected: Vec<Span> = crate::spans::candidate_spans(lens.len(), e)
                .filter(fits)
                .collect();
            let mut sorted = all.clone();
            sorted.sort();
            assert_eq!(sorted, expected, "lens={lens:?}");
            assert_eq!(all, sorted, "windows keep enumeration order");
            for w in &windows {
                assert!(w.input_ids.len() <= m);
                assert_eq!((w.input_ids[0], *w.input_ids.last().unwrap()), (101, 102));
                // Markers point at the tokens of the span's own boundary words.
                for (i, span) in w.spans.iter().enumerate() {
                    for (pos, word) in [
                        (w.start_positions[i], span.start),
                        (w.end_positions[i], span.end - 1),
                    ] {
                        if lens[word as usize] > 0 {
                            assert_eq!(w.input_ids[pos as usize], 1000 + word);
                        } else {
                            assert_eq!(pos, 0);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn strict_mode_names_the_row() {
        let s = sentence(&[1; 20]);
        let strict = EncodingSettings {
            strict: true,
            ..settings(10, 2)
        };
        let err = encode_sentence(4, &s, None, 0, &strict, None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SentenceTooLong {
                    row: 4,
                    num_tokens: 22,
                    budget: 10
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_word_longer_than_the_budget_is_an_error() {
        let s = sentence(&[1, 30, 1]);
        let err = encode_sentence(2, &s, None, 0, &settings(10, 2), None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WordTooLong {
                    row: 2,
                    word: 1,
                    num_tokens: 30,
                    budget: 8
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn labels_and_coverage() {
        let s = sentence(&[1, 1, 1, 1]);
        let entities = [Entity::new(2, 0, 1), Entity::new(1, 1, 4)];
        let mut coverage = EntityCoverage::new("train", 2, 16);
        let w = encode_sentence(
            0,
            &s,
            Some(&entities),
            0,
            &settings(16, 2),
            Some(&mut coverage),
        )
        .unwrap();
        let labels = w[0].labels.as_ref().unwrap();
        assert_eq!(labels[0], 2);
        assert_eq!(labels.iter().filter(|&&l| l != 0).count(), 1);
        assert_eq!(coverage.total, 2);
        assert_eq!(coverage.missed_by_length.get(&3), Some(&1));
    }

    #[test]
    fn entities_outside_the_sentence_are_refused() {
        let s = sentence(&[1, 1]);
        let err = encode_sentence(
            9,
            &s,
            Some(&[Entity::new(1, 1, 3)]),
            0,
            &settings(16, 2),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::EntityOutOfRange { row: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn spreading_uses_all_free_room() {
        let s = sentence(&[1; 10]);
        let w = encode_sentence(0, &s, None, 0, &settings(16, 4), None).unwrap();
        // T = 24, n = 12: 6 pairs per sample for 10 + 9 + ... = 55 spans at E = 8? here E = 4: 34 spans.
        let samples = spread(&w, 24);
        assert_eq!(w[0].spans.len(), 34);
        assert_eq!(samples.len(), 34usize.div_ceil(6));
        assert!(samples.iter().all(|s| s.spans.len() <= 6));
        assert_eq!(samples.last().unwrap().spans, 30..34);
    }

    #[test]
    fn joining_gives_each_window_one_sample() {
        let sample = |window, spans| SampleRef { window, spans };
        let samples = [
            sample(0, 0..6),
            sample(0, 6..12),
            sample(0, 12..14),
            sample(1, 0..3),
            sample(2, 0..6),
            sample(2, 6..7),
        ];
        let joined = join_windows(&samples, 8);
        assert_eq!(
            joined,
            [
                (sample(0, 0..14), 3),
                (sample(1, 0..3), 1),
                (sample(2, 0..7), 2)
            ]
        );
        // At most two at a time.
        assert_eq!(
            join_windows(&samples, 2),
            [
                (sample(0, 0..12), 2),
                (sample(0, 12..14), 1),
                (sample(1, 0..3), 1),
                (sample(2, 0..7), 2)
            ]
        );
    }
}
