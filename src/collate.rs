//! Batch collation: samples -> the `T`-length tensors the encoder reads.
//!
//! For a sample with `n` text tokens and `P` marker pairs, `start = n + n % 2`; `<start>`
//! markers fill `[start, start + P)` and `<end>` markers `[start + P, start + 2P)`. Position ids
//! are `i + 2` for text, the boundary token's position `+ 2` for markers and `1` elsewhere. The
//! `T x T` attention mask lets text see text, markers see text, and each marker see itself and
//! its partner; it is built on the target device from three numbers per sample rather than
//! copied over cell by cell. See `docs/algorithm.md`, section 7.

use tch::{Device, Kind, Tensor};

use crate::encoding::{EncodedWindow, SampleRef};
use crate::error::{Error, Result};

/// [`Batch::tokens`] holds a multiple of this many positions (or all of them).
pub const TOKEN_BUCKET: usize = 128;

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
    /// `[N]` int64: the positions of the flattened `[B * T]` batch that hold text or a
    /// marker, followed by as many padding positions as round `N` up to a multiple of
    /// [`TOKEN_BUCKET`]; `None` when that would be every position. The encoder runs its
    /// per-token work on these `N` positions only (see
    /// [`Encoder::forward`](crate::model::encoder::Encoder::forward)).
    pub tokens: Option<Tensor>,
    /// `[M]` int64: the positions of the flattened `[B * T]` batch that hold markers, each
    /// sample's `<start>` markers then its `<end>` markers. The head reads nothing else, so in
    /// inference the encoder's last layer runs on these rows only (see
    /// [`Encoder::forward`](crate::model::encoder::Encoder::forward)).
    pub markers: Tensor,
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
    let mut tokens = Vec::with_capacity(b * t);
    let mut markers = Vec::new();

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
        let offset = (i * t) as i64;
        tokens.extend((0..n as i64).map(|j| offset + j));
        let sample_markers = (start as i64..(start + 2 * p) as i64).map(|j| offset + j);
        tokens.extend(sample_markers.clone());
        markers.extend(sample_markers);
        num_tokens.push(n as i64);
        start_indices.push(start as i64);
        num_pairs.push(p as i64);
    }

    let shape = [b as i64, t as i64];
    let to_device = |v: &[i64]| Tensor::from_slice(v).to_device(device);
    // Whole buckets of positions: a handful of distinct activation sizes lets the allocator
    // reuse freed blocks (with a size per batch, glibc's heap grew by about 18 MB per MiniLM
    // training step); the extra positions are padding, never read.
    let keep = tokens.len().next_multiple_of(TOKEN_BUCKET);
    let tokens = (keep < b * t).then(|| {
        let padding = (0..b).flat_map(|i| {
            let (n, start, p) = (num_tokens[i], start_indices[i], num_pairs[i]);
            let offset = (i * t) as i64;
            (n..start)
                .chain(start + 2 * p..t as i64)
                .map(move |j| offset + j)
        });
        let missing = keep - tokens.len();
        tokens.extend(padding.take(missing));
        tokens
    });
    let tokens = tokens.map(|rows| to_device(&rows));
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
        tokens,
        markers: to_device(&markers),
    })
}

impl Batch {
    /// Where text and markers lie in each sample: what the attention pattern follows from.
    pub fn layout(&self) -> MarkerLayout<'_> {
        MarkerLayout {
            num_tokens: &self.num_tokens,
            start_marker_indices: &self.start_marker_indices,
            num_marker_pairs: &self.num_marker_pairs,
            total_length: self.input_ids.size()[1],
            text_length: self.text_length,
        }
    }

    /// The dense `[B, T, T]` boolean SpanMarker attention mask (query row, key column), as the
    /// reference builds it. The model does not need it (see
    /// [`MarkerAttention`](crate::model::attention::MarkerAttention)); it serves inspection and
    /// comparison with the reference.
    pub fn attention_mask(&self) -> Tensor {
        self.layout().attention_mask()
    }
}

/// Where text and markers lie in each sample of a batch.
#[derive(Debug, Clone, Copy)]
pub struct MarkerLayout<'a> {
    /// `[B]` int64: text tokens per sample.
    pub num_tokens: &'a Tensor,
    /// `[B]` int64: index of the first `<start>` marker.
    pub start_marker_indices: &'a Tensor,
    /// `[B]` int64: marker pairs `P` per sample.
    pub num_marker_pairs: &'a Tensor,
    /// Encoder input length `T` of the batch.
    pub total_length: i64,
    /// The longest text of the batch, in tokens.
    pub text_length: i64,
}

/// The role of every position of every sample, each `[B, T, 1]` (`position` is `[1, T, 1]`).
#[derive(Debug)]
pub struct PositionRoles {
    pub position: Tensor,
    /// Text tokens, `[0, n)`.
    pub is_text: Tensor,
    /// `<start>` and `<end>` markers.
    pub is_marker: Tensor,
    /// The other marker of the position's span (the position itself outside the markers).
    pub partner: Tensor,
}

impl MarkerLayout<'_> {
    /// Each position's role, computed with broadcasting on the tensors' device.
    pub fn roles(&self) -> PositionRoles {
        let t = self.total_length;
        let b = self.num_tokens.size1().unwrap_or(0);
        let position = Tensor::arange(t, (Kind::Int64, self.num_tokens.device())).view([1, t, 1]);
        let start = self.start_marker_indices.view([b, 1, 1]);
        let pairs = self.num_marker_pairs.view([b, 1, 1]);
        let is_marker = position
            .ge_tensor(&start)
            .logical_and(&position.lt_tensor(&(&start + &pairs * 2)));
        let is_start_marker = position.lt_tensor(&(&start + &pairs));
        let partner = (&position + &pairs)
            .where_self(&is_start_marker, &(&position - &pairs))
            .where_self(&is_marker, &position);
        PositionRoles {
            is_text: position.lt_tensor(&self.num_tokens.view([b, 1, 1])),
            position,
            is_marker,
            partner,
        }
    }

    /// Whether each of the first `keys` positions is text, `[B, 1, keys]`.
    pub fn key_is_text(&self, keys: i64) -> Tensor {
        let b = self.num_tokens.size1().unwrap_or(0);
        Tensor::arange(keys, (Kind::Int64, self.num_tokens.device()))
            .view([1, 1, keys])
            .lt_tensor(&self.num_tokens.view([b, 1, 1]))
    }

    /// The `[B, T, T]` SpanMarker attention mask: text sees text, a marker sees text, itself
    /// and its partner, padding sees nothing.
    pub fn attention_mask(&self) -> Tensor {
        let roles = self.roles();
        let key = roles.position.view([1, 1, self.total_length]);
        let key_is_text = self.key_is_text(self.total_length);
        let marker_sees = key_is_text
            .logical_or(&key.eq_tensor(&roles.position))
            .logical_or(&key.eq_tensor(&roles.partner));
        roles
            .is_text
            .logical_and(&key_is_text)
            .logical_or(&roles.is_marker.logical_and(&marker_sees))
    }
}
