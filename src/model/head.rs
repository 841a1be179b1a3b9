//! The SpanMarker head: marker states in, span logits out.

use tch::{Kind, Tensor};

/// The `[B, T/2, 2H]` span features: for pair `j < P` of each sample, the hidden state of its
/// `<start>` marker (at `start + j`) followed by that of its `<end>` marker (at
/// `start + P + j`); zero rows past `P`. One gather for the whole batch, no loop over samples.
pub(crate) fn marker_features(
    hidden: &Tensor,
    start_marker_indices: &Tensor,
    num_marker_pairs: &Tensor,
) -> Tensor {
    let (b, t, h) = hidden.size3().expect("hidden states are [B, T, H]");
    let slots = t / 2;
    let pair = Tensor::arange(slots, (Kind::Int64, hidden.device())).view([1, slots]);
    let pairs = num_marker_pairs.view([b, 1]);
    let valid = pair.lt_tensor(&pairs);
    let start = start_marker_indices.view([b, 1]) + &pair;
    let zero = Tensor::zeros_like(&start);
    let start = start.where_self(&valid, &zero);
    let end = (&start + &pairs).where_self(&valid, &zero);
    // Start and end interleaved, so that the gathered `[B, 2 x slots, H]` is already the
    // `[B, slots, 2H]` of concatenated pairs.
    let index = Tensor::stack(&[start, end], 2)
        .view([b, 2 * slots, 1])
        .expand([b, 2 * slots, h], false);
    let features = hidden.gather(1, &index, false).view([b, slots, 2 * h]);
    features * valid.unsqueeze(-1).to_kind(hidden.kind())
}

/// Mean cross-entropy over all spans, ignoring label [`IGNORE_INDEX`](crate::collate::IGNORE_INDEX).
pub(crate) fn span_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let classes = *logits.size().last().expect("logits have a class dimension");
    logits.view([-1, classes]).cross_entropy_loss::<Tensor>(
        &labels.view([-1]),
        None,
        tch::Reduction::Mean,
        crate::collate::IGNORE_INDEX,
        0.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_pair_each_start_marker_with_its_end_marker() {
        // Two samples, T = 8, H = 2: the state of position p of sample s is
        // [8s + p + 2s, -(8s + p + 2s)].
        let first = Tensor::arange(16, (Kind::Float, tch::Device::Cpu)).view([2, 8, 1])
            + Tensor::from_slice(&[0f32, 2.]).view([2, 1, 1]);
        let hidden = Tensor::cat(&[&first, &-&first], 2);
        let start = Tensor::from_slice(&[2i64, 4]);
        let pairs = Tensor::from_slice(&[3i64, 1]);
        let features = marker_features(&hidden, &start, &pairs);
        assert_eq!(features.size(), [2, 4, 4]);
        let got: Vec<f32> = features.flatten(0, -1).try_into().unwrap();
        // Sample 0: starts at 2,3,4 and ends at 5,6,7; sample 1 (offset 8 + 2): start 12, end 13.
        let pair = |s: f32, e: f32| [s, -s, e, -e];
        let want: Vec<f32> = [
            pair(2., 5.),
            pair(3., 6.),
            pair(4., 7.),
            [0.; 4],
            pair(14., 15.),
            [0.; 4],
            [0.; 4],
            [0.; 4],
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[test]
    fn loss_ignores_padding_labels() {
        let logits = Tensor::from_slice(&[2f32, 0., 0., 2., 5., -5.]).view([1, 3, 2]);
        let with_padding = span_loss(&logits, &Tensor::from_slice(&[0i64, 1, -100]).view([1, 3]));
        let without = span_loss(
            &logits.narrow(1, 0, 2),
            &Tensor::from_slice(&[0i64, 1]).view([1, 2]),
        );
        assert!(
            (f64::try_from(with_padding).unwrap() - f64::try_from(without).unwrap()).abs() < 1e-7
        );
    }
}
