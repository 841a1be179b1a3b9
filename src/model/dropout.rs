//! Dropout whose masks are drawn in parallel by a counter-based generator.
//!
//! On CPU, libtorch draws a dropout mask one element at a time from its Mersenne Twister
//! (`bernoulli_` runs serially except through MKL on Intel CPUs). For a small encoder that is
//! a third of a training step, the attention probabilities being the largest tensor. Here the
//! keep-or-drop decision of element `i` is a hash of `(seed, i)` (the SplitMix64 output
//! function), so a mask is filled in parallel at about a nanosecond per element. The seed is
//! drawn from libtorch's default generator: `tch::manual_seed` still makes a run reproducible.
//! On other devices libtorch's own kernel is used; on CUDA it is parallel already.

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// Mask elements filled per parallel task (a multiple of [`LANES`]: a task never splits a draw).
const CHUNK: usize = 1 << 14;

/// Zeroes each element of `x` with probability `p` and scales the others by `1 / (1 - p)`
/// when `train` is set (as `torch.nn.functional.dropout`); returns `x` unchanged otherwise.
///
/// ```
/// use tch::{Device, Kind, Tensor};
///
/// let x = Tensor::ones([1000], (Kind::Float, Device::Cpu));
/// let y = span_marker::model::dropout::dropout(&x, 0.5, true);
/// let kept = f64::try_from(y.gt(0.0).sum(Kind::Int64))?;
/// assert!(kept > 400.0 && kept < 600.0);
/// assert_eq!(f64::try_from(y.max())?, 2.0);
/// # Ok::<(), tch::TchError>(())
/// ```
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    if p >= 1.0 || x.device() != Device::Cpu {
        return x.dropout(p, true);
    }
    let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
    let mask = scaled_keep_mask(&x.size(), p, seed as u64);
    let mask = if x.kind() == Kind::Float {
        mask
    } else {
        mask.to_kind(x.kind())
    };
    x * mask
}

/// A float tensor of shape `size` holding `scale` where an element is kept (with probability
/// `1 - p`, rounded to a multiple of 2^-16) and 0 where it is dropped, determined by `seed`;
/// `scale` is the inverse of the keep probability, so the mask's expectation is exactly 1.
fn scaled_keep_mask(size: &[i64], p: f64, seed: u64) -> Tensor {
    let mask = Tensor::empty(size, (Kind::Float, Device::Cpu));
    let numel = mask.numel();
    // One 64-bit draw decides four elements: element `i` is kept when its 16-bit lane is below
    // `threshold`.
    let threshold = ((1.0 - p) * 65536.0).round().max(1.0) as u64;
    let scale = (65536.0 / threshold as f64) as f32;
    // SAFETY: `mask` was just created by `Tensor::empty`: a contiguous, CPU-resident float
    // tensor of `numel` elements that nothing else references while the slice lives.
    let values = unsafe { std::slice::from_raw_parts_mut(mask.data_ptr() as *mut f32, numel) };
    values
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, values)| {
            let first_draw = (chunk * CHUNK / LANES) as u64;
            for (draw, values) in (first_draw..).zip(values.chunks_mut(LANES)) {
                let bits = split_mix64(seed.wrapping_add(draw.wrapping_mul(GOLDEN_GAMMA)));
                for (lane, value) in values.iter_mut().enumerate() {
                    let keep = (bits >> (16 * lane)) & 0xFFFF < threshold;
                    *value = if keep { scale } else { 0.0 };
                }
            }
        });
    mask
}

/// Elements decided by one 64-bit draw.
const LANES: usize = 4;

/// The increment of SplitMix64's state: consecutive pairs get well-separated inputs.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Steele, Lea and Flood 2014): a bijective mix of 64 bits.
fn split_mix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_fraction(mask: &Tensor) -> f64 {
        f64::try_from(mask.gt(0.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap()
    }

    #[test]
    fn masks_keep_the_expected_fraction_and_scale() {
        for p in [0.1, 0.5, 0.9] {
            let mask = scaled_keep_mask(&[64, 1000], p, 7);
            let kept = keep_fraction(&mask);
            assert!((kept - (1.0 - p)).abs() < 0.01, "p {p}: kept {kept}");
            let max = f64::try_from(mask.max()).unwrap();
            // The keep probability is rounded to a multiple of 2^-16, the scale follows it.
            assert!((max * (1.0 - p) - 1.0).abs() < 1e-4, "p {p}: scale {max}");
            // Unbiased: the mean of the scaled mask is 1.
            let mean = f64::try_from(mask.mean(Kind::Double)).unwrap();
            assert!((mean - 1.0).abs() < 0.03, "p {p}: mean {mean}");
        }
    }

    #[test]
    fn masks_depend_on_the_seed_only() {
        // Odd sizes and sizes over one chunk: every lane of a draw and every task are used.
        let size = [3, CHUNK as i64 + 5];
        let a = scaled_keep_mask(&size, 0.3, 11);
        assert!(a.equal(&scaled_keep_mask(&size, 0.3, 11)));
        assert!(!a.equal(&scaled_keep_mask(&size, 0.3, 12)));
        // No visible structure: neighbouring elements (lanes of one draw) and the two halves
        // of the tensor are independent.
        let flat = a.gt(0.0).to_kind(Kind::Double).view([-1]);
        let n = flat.size()[0];
        let both = (flat.narrow(0, 0, n - 1) * flat.narrow(0, 1, n - 1)).mean(Kind::Double);
        let both = f64::try_from(both).unwrap();
        assert!((both - 0.49).abs() < 0.01, "P(kept, next kept) = {both}");
        let half = n / 2;
        assert!((keep_fraction(&a.view([-1]).narrow(0, 0, half)) - 0.7).abs() < 0.01);
        assert!((keep_fraction(&a.view([-1]).narrow(0, half, half)) - 0.7).abs() < 0.01);
    }

    // That `tch::manual_seed` fixes the masks is tested in `tests/seeding.rs`: the generator is
    // global, and the other unit tests of this crate draw from it concurrently.
    #[test]
    fn dropout_keeps_gradients() {
        let x = Tensor::ones([8, 100], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let a = dropout(&x, 0.2, true);
        a.sum(Kind::Float).backward();
        // The gradient is the mask itself.
        assert!(x.grad().equal(&a.detach()));
        assert!(dropout(&x, 0.2, false).equal(&x));
        assert!(dropout(&x, 0.0, true).equal(&x));
        assert_eq!(
            f64::try_from(dropout(&x, 1.0, true).abs().sum(Kind::Float)).unwrap(),
            0.0
        );
    }

    #[test]
    fn half_precision_inputs_keep_their_kind() {
        let x = Tensor::ones([4, 4], (Kind::BFloat16, Device::Cpu));
        assert_eq!(dropout(&x, 0.5, true).kind(), Kind::BFloat16);
    }
}
