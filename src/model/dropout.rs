//! Dropout whose masks are drawn in parallel by a counter-based generator.
//!
//! On CPU, libtorch draws a dropout mask one element at a time from its Mersenne Twister
//! (`bernoulli_` runs serially except through MKL on Intel CPUs), then multiplies by it, and the
//! encoder adds the residual in a third pass. Here the keep-or-drop decision of element `i` is a
//! hash of `(seed, i)` (the SplitMix64 output function): element `i` is kept when the 16-bit lane
//! `i % 4` of `split_mix64(seed + (i / 4) * GOLDEN_GAMMA)` is below the keep probability as a
//! multiple of 2^-16, and kept elements are scaled by the inverse of that probability. One C++
//! pass on libtorch's threads (`csrc/dropout.cpp`, an autograd function) masks, scales and adds
//! the residual; the backward pass draws the mask again from the seed instead of storing it. The
//! seed is drawn from libtorch's default generator: `tch::manual_seed` still makes a run
//! reproducible. The attention weights' dropout in the direct attention's training form draws
//! from the same generator (`csrc/attention.cpp`). On other devices libtorch's own kernel is
//! used; on CUDA it is parallel already.

use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::ffi;

/// Zeroes each element of `x` with probability `p` and scales the others by `1 / (1 - p)`
/// when `train` is set (as `torch.nn.functional.dropout`); returns `x` unchanged otherwise.
///
/// ```
/// use tch::{Device, Kind, Tensor};
///
/// let x = Tensor::ones([1000], (Kind::Float, Device::Cpu));
/// let y = span_marker::model::dropout::dropout(&x, 0.5, true)?;
/// let kept = f64::try_from(y.gt(0.0).sum(Kind::Int64))?;
/// assert!(kept > 400.0 && kept < 600.0);
/// assert_eq!(f64::try_from(y.max())?, 2.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    dropout_add(x, None, p, train)
}

/// [`dropout`] of `x`, plus `residual` (of `x`'s shape) when given: one pass on the CPU. The
/// result has the promoted type of the two.
pub fn dropout_add(x: &Tensor, residual: Option<&Tensor>, p: f64, train: bool) -> Result<Tensor> {
    let add = |y: Tensor| match residual {
        Some(residual) => y + residual,
        None => y,
    };
    if !train || p <= 0.0 {
        return Ok(add(x.shallow_clone()));
    }
    if p >= 1.0 || x.device() != Device::Cpu {
        return Ok(add(x.dropout(p, true)));
    }
    ffi::dropout_add(x, residual, p, draw_seed())
}

/// A seed for a counter-based mask, drawn from libtorch's default generator (so that
/// `tch::manual_seed` fixes it).
pub(crate) fn draw_seed() -> u64 {
    Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_fraction(y: &Tensor) -> f64 {
        f64::try_from(y.gt(0.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap()
    }

    fn ones(size: &[i64]) -> Tensor {
        Tensor::ones(size, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn masks_keep_the_expected_fraction_and_scale() {
        for p in [0.1, 0.5, 0.9] {
            let y = dropout(&ones(&[64, 1000]), p, true).unwrap();
            let kept = keep_fraction(&y);
            assert!((kept - (1.0 - p)).abs() < 0.01, "p {p}: kept {kept}");
            let max = f64::try_from(y.max()).unwrap();
            // The keep probability is rounded to a multiple of 2^-16, the scale follows it.
            assert!((max * (1.0 - p) - 1.0).abs() < 1e-4, "p {p}: scale {max}");
            // Unbiased: the mean of the scaled mask is 1.
            let mean = f64::try_from(y.mean(Kind::Double)).unwrap();
            assert!((mean - 1.0).abs() < 0.03, "p {p}: mean {mean}");
        }
    }

    #[test]
    fn masks_have_no_visible_structure() {
        // Odd sizes over several parallel tasks: every lane of a draw and every task are used.
        let y = dropout(&ones(&[3, 70_001]), 0.3, true).unwrap();
        // Neighbouring elements (lanes of one draw) and the two halves are independent.
        let flat = y.gt(0.0).to_kind(Kind::Double).view([-1]);
        let n = flat.size()[0];
        let both = (flat.narrow(0, 0, n - 1) * flat.narrow(0, 1, n - 1)).mean(Kind::Double);
        let both = f64::try_from(both).unwrap();
        assert!((both - 0.49).abs() < 0.01, "P(kept, next kept) = {both}");
        let half = n / 2;
        assert!((keep_fraction(&y.view([-1]).narrow(0, 0, half)) - 0.7).abs() < 0.01);
        assert!((keep_fraction(&y.view([-1]).narrow(0, half, half)) - 0.7).abs() < 0.01);
    }

    // That `tch::manual_seed` fixes the masks is tested in `tests/seeding.rs`: the generator is
    // global, and the other unit tests of this crate draw from it concurrently.
    #[test]
    fn dropout_keeps_gradients() {
        let x = ones(&[8, 100]).set_requires_grad(true);
        let a = dropout(&x, 0.2, true).unwrap();
        a.sum(Kind::Float).backward();
        // The gradient is the mask itself.
        assert!(x.grad().equal(&a.detach()));
        assert!(dropout(&x, 0.2, false).unwrap().equal(&x));
        assert!(dropout(&x, 0.0, true).unwrap().equal(&x));
        let all = dropout(&x, 1.0, true).unwrap().abs().sum(Kind::Float);
        assert_eq!(f64::try_from(all).unwrap(), 0.0);
    }

    #[test]
    fn the_residual_is_added_and_gets_the_whole_gradient() {
        let x = (ones(&[5, 37]) * 3.0).set_requires_grad(true);
        let residual = Tensor::randn([5, 37], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = dropout_add(&x, Some(&residual), 0.25, true).unwrap();
        let masked = &y - &residual;
        // Kept elements are 3 / 0.75, dropped ones 0.
        let values = masked.detach();
        let kept = values.gt(0.0);
        assert!(values.masked_select(&kept).allclose(
            &(values.masked_select(&kept).ones_like() * 4.0),
            1e-5,
            1e-5,
            false
        ));
        assert!(
            values
                .masked_select(&kept.logical_not())
                .abs()
                .max()
                .double_value(&[])
                == 0.0
        );
        let weights = Tensor::randn([5, 37], (Kind::Float, Device::Cpu));
        (&y * &weights).sum(Kind::Float).backward();
        assert!(residual.grad().equal(&weights));
        let want = &weights * kept.to_kind(Kind::Float) * (4.0 / 3.0);
        assert!(x.grad().allclose(&want, 1e-6, 1e-6, false));
    }

    #[test]
    fn half_precision_inputs_keep_their_kind() {
        let x = Tensor::ones([4, 4], (Kind::BFloat16, Device::Cpu));
        assert_eq!(dropout(&x, 0.5, true).unwrap().kind(), Kind::BFloat16);
        let residual = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let y = dropout_add(&x, Some(&residual), 0.5, true).unwrap();
        assert_eq!(y.kind(), Kind::Float);
    }
}
