//! Fused linear maps for CPU inference in float32 and bfloat16 (`csrc/fused.cpp`): libtorch's
//! oneDNN kernels compute `x W^T + b` and apply the activation or add the residual as they
//! write the result, instead of `addmm` copying the bias into the output first and the
//! activation and the residual addition each reading and writing it again. oneDNN's float32
//! products are also the faster of libtorch's two on some CPUs (see `docs/benchmarks.md`).
//! Inference only: these operations carry no gradient, so
//! [`Kernels::Fused`](super::encoder::Kernels) is chosen for float32 and bf16 prediction on the
//! CPU and never for training.

use std::ffi::c_char;

use tch::{Kind, Tensor};
use torch_sys::C_tensor;

use super::quantized::take_error;

extern "C" {
    fn span_marker_fused_supported() -> i32;
    fn span_marker_fused_linear(
        input: *const C_tensor,
        weight: *const C_tensor,
        bias: *const C_tensor,
        activation: i32,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
    fn span_marker_fused_linear_add(
        input: *const C_tensor,
        residual: *const C_tensor,
        weight: *const C_tensor,
        bias: *const C_tensor,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
}

/// Whether this libtorch has the oneDNN kernels the fused maps run on.
pub fn supported() -> bool {
    // SAFETY: no arguments; libtorch errors are caught in the shim.
    unsafe { span_marker_fused_supported() == 1 }
}

/// An activation oneDNN applies as the product's result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOp {
    None = 0,
    Gelu = 1,
    GeluTanh = 2,
    Relu = 3,
}

/// Takes the shim's result, panicking with libtorch's message where it threw: as tch's own
/// operations do, since the shapes come from the encoder itself (a bug, not bad input).
fn take(out: *mut C_tensor, error: *mut c_char) -> Tensor {
    if out.is_null() {
        panic!("fused linear map failed: {}", take_error(error));
    }
    // SAFETY: `out` is a fresh `at::Tensor*` owned by nobody else.
    unsafe { Tensor::from_ptr(out) }
}

fn bias_ptr(bias: Option<&Tensor>) -> *const C_tensor {
    bias.map_or(std::ptr::null(), |b| b.as_ptr())
}

/// `post(x W^T + b)` for `x` `[N, in]`, `weight` `[out, in]` (float32 or bfloat16 alike, CPU). Panics where
/// libtorch refuses the shapes or dtypes, as tch's own operations do; call it under
/// `tch::no_grad` (the result has no gradient).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, post: PostOp) -> Tensor {
    let mut error = std::ptr::null_mut();
    // SAFETY: every tensor outlives the call; the shim returns a new owned tensor or null.
    let out = unsafe {
        span_marker_fused_linear(
            x.as_ptr(),
            weight.as_ptr(),
            bias_ptr(bias),
            post as i32,
            &mut error,
        )
    };
    take(out, error)
}

/// `x W^T + b + residual` for `x` `[N, in]`, `weight` `[out, in]` and `residual` `[N, out]`.
pub fn linear_add(x: &Tensor, residual: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let mut error = std::ptr::null_mut();
    // SAFETY: every tensor outlives the call; the shim returns a new owned tensor or null.
    let out = unsafe {
        span_marker_fused_linear_add(
            x.as_ptr(),
            residual.as_ptr(),
            weight.as_ptr(),
            bias_ptr(bias),
            &mut error,
        )
    };
    take(out, error)
}

/// An encoder's linear maps for the fused kernels, in float32 or bfloat16: per layer the
/// query-key-value map (one `[3H, H]` weight), the attention output, the intermediate and the
/// output map. In bfloat16 the activations between them are bfloat16 too (oneDNN's bfloat16
/// products accumulate in float32; layer norms compute in float32 and round their output).
pub struct FusedLinears {
    maps: Vec<(Tensor, Option<Tensor>)>,
    kind: Kind,
}

impl Clone for FusedLinears {
    /// Another handle on the same maps (the tensors share their storage).
    fn clone(&self) -> Self {
        let maps = self
            .maps
            .iter()
            .map(|(w, b)| (w.shallow_clone(), b.as_ref().map(Tensor::shallow_clone)))
            .collect();
        Self {
            maps,
            kind: self.kind,
        }
    }
}

impl FusedLinears {
    /// `maps` (float32) in `kind`: float32 keeps them as they are, bfloat16 makes rounded copies.
    pub(crate) fn new(maps: Vec<(Tensor, Option<Tensor>)>, kind: Kind) -> Self {
        let maps = maps
            .into_iter()
            .map(|(w, b)| (w.to_kind(kind), b.map(|b| b.to_kind(kind))))
            .collect();
        Self { maps, kind }
    }

    /// The type of the maps and of the activations they take and give.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `post(x W^T + b)` through map `index`.
    pub(crate) fn linear(&self, index: usize, x: &Tensor, post: PostOp) -> Tensor {
        let (weight, bias) = &self.maps[index];
        linear(x, weight, bias.as_ref(), post)
    }

    /// `x W^T + b + residual` through map `index`.
    pub(crate) fn linear_add(&self, index: usize, x: &Tensor, residual: &Tensor) -> Tensor {
        let (weight, bias) = &self.maps[index];
        linear_add(x, residual, weight, bias.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn fused_maps_equal_the_separate_operations() {
        if !supported() {
            eprintln!("skipped: this libtorch has no oneDNN kernels");
            return;
        }
        tch::manual_seed(3);
        let opts = (Kind::Float, tch::Device::Cpu);
        let x = Tensor::randn([37, 24], opts);
        let residual = Tensor::randn([37, 16], opts);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let map = nn::linear(vs.root(), 24, 16, Default::default());
        let plain = x.linear(&map.ws, map.bs.as_ref());
        let close = |a: &Tensor, b: &Tensor| {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "max difference {diff}");
        };
        tch::no_grad(|| {
            let b = map.bs.as_ref();
            close(&linear(&x, &map.ws, b, PostOp::None), &plain);
            close(&linear(&x, &map.ws, b, PostOp::Gelu), &plain.gelu("none"));
            close(
                &linear(&x, &map.ws, b, PostOp::GeluTanh),
                &plain.gelu("tanh"),
            );
            close(&linear(&x, &map.ws, b, PostOp::Relu), &plain.relu());
            close(
                &linear(&x, &map.ws, None, PostOp::None),
                &x.matmul(&map.ws.tr()),
            );
            close(
                &linear_add(&x, &residual, &map.ws, b),
                &(&plain + &residual),
            );
            // A non-contiguous input (a column slice) is read correctly.
            let wide = Tensor::randn([37, 48], opts);
            let slice = wide.narrow(1, 24, 24);
            close(
                &linear(&slice, &map.ws, b, PostOp::None),
                &slice.linear(&map.ws, map.bs.as_ref()),
            );
        });
    }
}
