//! Batch collation: samples -> the `T`-length tensors the encoder reads.
//!
//! For a sample with `n` text tokens and `P` marker pairs, `start = n + n % 2`; `<start>`
//! markers fill `[start, start + P)` and `<end>` markers `[start + P, start + 2P)`. Position ids
//! are `i + 2` for text, the boundary token's position `+ 2` for markers and `1` elsewhere. The
//! `T x T` attention mask lets text see text, markers see text, and each marker see itself and
//! its partner; it is built on the target device from three numbers per sample rather than
//! copied over cell by cell. See `ALGORITHM.md` section 7.

use tch::{Device, Kind, Tensor};

use crate::encoding::{EncodedWindow, SampleRef};
use crate::error::{Error, Result};

/// Label value that the loss ignores.
pub const IGNORE_INDEX: i64 = -100;

/// Token ids and sizes that collation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollateSpec {
    /// Encoder input length `T = M + 2K`.
    pub total_length: usize,
    /// Trim each batch to the length its longest sample needs (text, alignment and markers),
    /// rounded up to a multiple of this, instead of padding to `T`. Only padding is removed,
    /// and padding is masked from every text and marker row, so results are the same up to
    /// float summation order. `None` pads to `T` as the reference does.
    pub trim_to_multiple_of: Option<usize>,
    pub pad_token_id: u32,
    pub start_marker_id: u32,
    pub end_marker_id: u32,
}

/// Model inputs for a batch of samples.
#[derive(Debug)]
pub struct Batch {
    /// `[B, T]` int64.
    pub input_ids: Tensor,
    /// `[B, T]` int64.
    pub position_ids: Tensor,
    /// `[B]` int64: text tokens per sample (the SpanMarker attention pattern follows from
    /// these, the marker indices and the pair counts; see [`Batch::attention_mask`]).
    pub num_tokens: Tensor,
    /// The longest text of the batch, in tokens.
    pub text_length: i64,
    /// `[B, T / 2]` int64, [`IGNORE_INDEX`] past each sample's spans; training data only.
    pub labels: Option<Tensor>,
    /// `[B]` int64: index of the first `<start>` marker.
    pub start_marker_indices: Tensor,
    /// `[B]` int64: marker pairs `P` per sample.
    pub num_marker_pairs: Tensor,
}

/// Collates samples into tensors on `device`.
#[tracing::instrument(level = "debug", skip_all, fields(samples = samples.len()))]
pub fn collate(
    windows: &[EncodedWindow],
    samples: &[SampleRef],
    spec: &CollateSpec,
    device: Device,
) -> Result<Batch> {
    let b = samples.len();
    let t = match spec.trim_to_multiple_of {
        Some(multiple) => {
            let needed = samples
                .iter()
                .map(|s| s.encoder_length(windows))
                .max()
                .unwrap_or(0);
            // An even length keeps `T / 2` label slots >= every sample's marker pairs.
            let multiple = multiple.max(2).next_multiple_of(2);
            needed.next_multiple_of(multiple).min(spec.total_length)
        }
        None => spec.total_length,
    };
    let mut input_ids = vec![spec.pad_token_id as i64; b * t];
    let mut position_ids = vec![1i64; b * t];
    let with_labels = samples
        .first()
        .is_some_and(|s| windows[s.window].labels.is_some());
    let mut labels = if with_labels {
        vec![IGNORE_INDEX; b * (t / 2)]
    } else {
        Vec::new()
    };
    let mut num_tokens = Vec::with_capacity(b);
    let mut start_indices = Vec::with_capacity(b);
    let mut num_pairs = Vec::with_capacity(b);

    for (i, sample) in samples.iter().enumerate() {
        let window = &windows[sample.window];
        let n = window.input_ids.len();
        let p = sample.spans.len();
        let start = n + n % 2;
        if start + 2 * p > t || sample.spans.end > window.spans.len() {
            return Err(Error::Config(format!(
                "sample {i} holds {n} tokens and {p} marker pairs, more than the encoder length {t} allows \
                 (or spans past its window): build samples with `encoding::spread`"
            )));
        }
        let ids = &mut input_ids[i * t..(i + 1) * t];
        let pos = &mut position_ids[i * t..(i + 1) * t];
        for (slot, &id) in ids.iter_mut().zip(&window.input_ids) {
            *slot = id as i64;
        }
        for (j, slot) in pos[..n].iter_mut().enumerate() {
            *slot = j as i64 + 2;
        }
        ids[start..start + p].fill(spec.start_marker_id as i64);
        ids[start + p..start + 2 * p].fill(spec.end_marker_id as i64);
        for (slot, &q) in pos[start..start + p]
            .iter_mut()
            .zip(&window.start_positions[sample.spans.clone()])
        {
            *slot = q as i64 + 2;
        }
        for (slot, &q) in pos[start + p..start + 2 * p]
            .iter_mut()
            .zip(&window.end_positions[sample.spans.clone()])
        {
            *slot = q as i64 + 2;
        }
        if with_labels {
            let row = &mut labels[i * (t / 2)..(i + 1) * (t / 2)];
            if let Some(window_labels) = &window.labels {
                row[..p].copy_from_slice(&window_labels[sample.spans.clone()]);
            }
        }
        num_tokens.push(n as i64);
        start_indices.push(start as i64);
        num_pairs.push(p as i64);
    }

    let shape = [b as i64, t as i64];
    let to_device = |v: &[i64]| Tensor::from_slice(v).to_device(device);
    let num_tokens_host = num_tokens;
    let num_tokens = to_device(&num_tokens_host);
    let start_marker_indices = to_device(&start_indices);
    let num_marker_pairs = to_device(&num_pairs);
    Ok(Batch {
        input_ids: to_device(&input_ids).view(shape),
        position_ids: to_device(&position_ids).view(shape),
        text_length: num_tokens_host.iter().copied().max().unwrap_or(0),
        num_tokens,
        labels: with_labels.then(|| to_device(&labels).view([b as i64, (t / 2) as i64])),
        start_marker_indices,
        num_marker_pairs,
    })
}

impl Batch {
    /// The dense `[B, T, T]` boolean SpanMarker attention mask (query row, key column), as the
    /// reference builds it. The model does not need it (see
    /// [`MarkerAttention`](crate::model::attention::MarkerAttention)); it serves inspection and
    /// comparison with the reference.
    pub fn attention_mask(&self) -> Tensor {
        marker_attention_mask(
            &self.num_tokens,
            &self.start_marker_indices,
            &self.num_marker_pairs,
            self.input_ids.size()[1],
        )
    }
}

/// The `[B, T, T]` SpanMarker attention mask from per-sample text length, first marker index and
/// marker pair count, computed with broadcasting on the tensors' device.
pub fn marker_attention_mask(
    num_tokens: &Tensor,
    start_marker_indices: &Tensor,
    num_marker_pairs: &Tensor,
    total_length: i64,
) -> Tensor {
    let device = num_tokens.device();
    let b = num_tokens.size1().unwrap_or(0);
    let position = Tensor::arange(total_length, (Kind::Int64, device));
    let query = position.view([1, total_length, 1]);
    let key = position.view([1, 1, total_length]);
    let n = num_tokens.view([b, 1, 1]);
    let start = start_marker_indices.view([b, 1, 1]);
    let pairs = num_marker_pairs.view([b, 1, 1]);

    let key_is_text = key.lt_tensor(&n);
    let query_is_text = query.lt_tensor(&n);
    let query_is_marker = query
        .ge_tensor(&start)
        .logical_and(&query.lt_tensor(&(&start + &pairs * 2)));
    let is_start_marker = query.lt_tensor(&(&start + &pairs));
    let partner = (&query + &pairs).where_self(&is_start_marker, &(&query - &pairs));
    let marker_sees = key_is_text
        .logical_or(&key.eq_tensor(&query))
        .logical_or(&key.eq_tensor(&partner));
    query_is_text
        .logical_and(&key_is_text)
        .logical_or(&query_is_marker.logical_and(&marker_sees))
}
