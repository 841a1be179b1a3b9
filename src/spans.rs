//! Span candidates: every word span of up to `entity_max_length` words.
//!
//! Order is start-major with the end ascending, as in the reference; ends are exclusive.
//!
//! ```
//! use span_marker::spans::{candidate_spans, num_candidates, Span};
//!
//! let spans: Vec<Span> = candidate_spans(3, 2).collect();
//! assert_eq!(spans, [Span::new(0, 1), Span::new(0, 2), Span::new(1, 2), Span::new(1, 3), Span::new(2, 3)]);
//! assert_eq!(num_candidates(3, 2), 5);
//! ```

/// Words `start..end` of one sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: u32, end: u32) -> Self {
        Self { start, end }
    }

    /// Length in words.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Candidates starting in `starts` of a sentence of `num_words` words, ending at or before
/// `limit` (a window's last word) — the building block of [`candidate_spans`].
pub fn candidate_spans_in(
    starts: std::ops::Range<usize>,
    limit: usize,
    entity_max_length: usize,
) -> impl Iterator<Item = Span> {
    starts.flat_map(move |s| {
        let last = limit.min(s + entity_max_length);
        (s + 1..=last).map(move |e| Span::new(s as u32, e as u32))
    })
}

/// All candidates of a sentence of `num_words` words.
pub fn candidate_spans(num_words: usize, entity_max_length: usize) -> impl Iterator<Item = Span> {
    candidate_spans_in(0..num_words, num_words, entity_max_length)
}

/// `sum over s of min(E, n - s)`, without enumerating.
pub fn num_candidates(num_words: usize, entity_max_length: usize) -> usize {
    let full = num_words.saturating_sub(entity_max_length);
    let tail = num_words - full; // the last `min(n, E)` starts have 1..=tail candidates
    full * entity_max_length + tail * (tail + 1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_matches_enumeration() {
        for n in 0..30 {
            for e in 1..10 {
                assert_eq!(
                    candidate_spans(n, e).count(),
                    num_candidates(n, e),
                    "n={n} e={e}"
                );
            }
        }
    }

    #[test]
    fn order_is_start_major_end_ascending() {
        let spans: Vec<Span> = candidate_spans(5, 8).collect();
        let mut sorted = spans.clone();
        sorted.sort();
        assert_eq!(spans, sorted);
        assert_eq!(spans.len(), 15);
        assert!(spans.iter().all(|s| !s.is_empty() && s.end <= 5));
    }

    #[test]
    fn empty_sentence_has_no_candidates() {
        assert_eq!(candidate_spans(0, 8).count(), 0);
    }
}
