//! Which rows of a batch the encoder computes, as its [`ForwardPlan`](super::plan::ForwardPlan)
//! decided for the batch, and the gathers and scatters between them.
//!
//! A batch is `B` samples of `T` positions, flattened to `B x T` rows. The encoder's per-token
//! work (embeddings, linear maps, norms, activations, dropout) runs on
//! - every row, or only the rows that hold text or markers ([`Batch::tokens`]: padding then
//!   costs nothing outside attention);
//! - in the last layer, after its query-key-value product, only on the rows whose states are
//!   read ([`Batch::markers`]), when they are fewer.

use tch::{Kind, Tensor};

use crate::collate::{Batch, TOKEN_BUCKET};

/// The rows one batch runs on (see the module docs). Built by
/// [`ForwardPlan::for_batch`](super::plan::ForwardPlan::for_batch).
#[derive(Debug)]
pub struct Rows {
    b: i64,
    t: i64,
    /// `[N]` positions of the `B x T` rows that the layers run on; `None`: every position.
    tokens: Option<Tensor>,
    /// The last layer's read rows: `[M]` positions whose states are read, and `[R]` rows of the
    /// layers' input to keep (the read ones, the last repeated up to whole buckets).
    read: Option<(Tensor, Tensor)>,
    counts: RowCounts,
}

/// How many rows each part of a forward pass runs on: what its FLOPs follow from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCounts {
    /// Rows of the embeddings and the layers (`B x T` when padding is computed).
    pub tokens: i64,
    /// Rows of the last layer's attention output and feed-forward maps.
    pub last: i64,
}

impl Rows {
    /// The rows of `batch`: `skip_padding` runs on [`Batch::tokens`] where the batch has it,
    /// `read_markers` runs the last layer on [`Batch::markers`] where that is fewer rows.
    /// `layers` is the encoder's depth (reading needs a layer).
    pub(crate) fn new(
        batch: &Batch,
        skip_padding: bool,
        read_markers: bool,
        layers: usize,
    ) -> Self {
        let (b, t) = batch.input_ids.size2().expect("input_ids is [B, T]");
        let tokens = batch.tokens.as_ref().filter(|_| skip_padding);
        let row_count = tokens.map_or(b * t, |index| index.size()[0]);
        let bucket = TOKEN_BUCKET as i64;
        let markers = &batch.markers;
        let m = markers.size()[0];
        let keep = (m + bucket - 1) / bucket * bucket;
        let read = (read_markers && layers > 0 && keep < row_count).then(|| {
            let rows = match tokens {
                Some(index) => {
                    let device = index.device();
                    let mut row_of = Tensor::full([b * t], -1, (Kind::Int64, device));
                    let rows = Tensor::arange(row_count, (Kind::Int64, device));
                    let _ = row_of.index_copy_(0, index, &rows);
                    row_of.index_select(0, markers)
                }
                None => markers.shallow_clone(),
            };
            let rows = match m {
                0 => rows,
                _ => Tensor::cat(
                    &[&rows, &rows.narrow(0, m - 1, 1).expand([keep - m], false)],
                    0,
                ),
            };
            (markers.shallow_clone(), rows)
        });
        let last = if read.is_some() { keep } else { row_count };
        Self {
            b,
            t,
            tokens: tokens.map(Tensor::shallow_clone),
            read,
            counts: RowCounts {
                tokens: row_count,
                last,
            },
        }
    }

    /// How many rows each part runs on.
    pub fn counts(&self) -> RowCounts {
        self.counts
    }

    /// `[B, T]` inputs as the layers' rows.
    pub(crate) fn input(&self, y: &Tensor) -> Tensor {
        self.unpad(&y.reshape([self.b * self.t]))
    }

    /// Before the last layer's attention output: its context and residual rows narrowed to the
    /// read rows.
    pub(crate) fn keep_read(&self, context: Tensor, x: Tensor) -> (Tensor, Tensor) {
        match &self.read {
            Some((_, rows)) => (context.index_select(0, rows), x.index_select(0, rows)),
            None => (context, x),
        }
    }

    /// `[N, C]` rows of the layers into the padded `[B x T, C]` layout (zero elsewhere).
    pub(crate) fn pad(&self, y: &Tensor) -> Tensor {
        scatter(y, self.tokens.as_ref(), self.b * self.t)
    }

    /// `[B x T, C]` padded rows to the layers' `[N, C]`.
    pub(crate) fn unpad(&self, y: &Tensor) -> Tensor {
        match &self.tokens {
            Some(index) => y.index_select(0, index),
            None => y.shallow_clone(),
        }
    }

    /// The padded length `T` of the layers' rows, or 0 when they are unpadded (each sample's
    /// text, then its markers: what the direct attention reads).
    pub(crate) fn padded_length(&self) -> i64 {
        if self.tokens.is_some() {
            0
        } else {
            self.t
        }
    }

    /// `B`, `T`.
    pub(crate) fn shape(&self) -> (i64, i64) {
        (self.b, self.t)
    }

    /// The last layer's output rows as `[B, T, H]` states: zero where not computed or not read.
    pub(crate) fn output(&self, x: &Tensor) -> Tensor {
        let h = x.size()[1];
        let full = self.b * self.t;
        match &self.read {
            Some((positions, _)) => {
                scatter(&x.narrow(0, 0, positions.size()[0]), Some(positions), full)
            }
            None => self.pad(x),
        }
        .view([self.b, self.t, h])
    }
}

/// `y` `[R, C]` at `index` of `[rows, C]` zeros, or `y` itself without an index.
fn scatter(y: &Tensor, index: Option<&Tensor>, rows: i64) -> Tensor {
    match index {
        Some(index) => {
            let mut padded = y.new_zeros([rows, y.size()[1]], (y.kind(), y.device()));
            let _ = padded.index_copy_(0, index, y);
            padded
        }
        None => y.shallow_clone(),
    }
}
