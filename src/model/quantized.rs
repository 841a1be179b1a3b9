//! Dynamic int8 linear layers for CPU inference (`Precision::Int8`): each of an encoder layer's
//! four matrix products (query, key and value as one) runs with int8 weights (symmetric, one
//! scale per output channel) and activations quantised per call, through libtorch's fbgemm
//! kernels (`csrc/quantized.cpp`), as `torch.ao.quantization.quantize_dynamic` does for
//! `nn.Linear`. Embeddings, layer norms,
//! attention and the classifier stay float32.
//!
//! The encoder packs them on first use and again whenever a weight changed since (see
//! [`Encoder::int8`](super::encoder::Encoder::int8)).

use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::{Error, Result};

extern "C" {
    fn span_marker_int8_supported() -> i32;
    fn span_marker_int8_pack(
        weight: *const C_tensor,
        bias: *const C_tensor,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn span_marker_int8_linear(
        packed: *mut c_void,
        input: *const C_tensor,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
    fn span_marker_int8_free(packed: *mut c_void);
    fn span_marker_free_error(error: *mut c_char);
}

/// Whether this libtorch and CPU can run int8 linear layers (an fbgemm quantisation engine,
/// which needs AVX2).
pub fn supported() -> bool {
    // SAFETY: no arguments; libtorch errors are caught in the shim.
    unsafe { span_marker_int8_supported() == 1 }
}

/// Takes the shim's error message, if any.
pub(crate) fn take_error(error: *mut c_char) -> String {
    if error.is_null() {
        return "unknown libtorch error".into();
    }
    // SAFETY: the shim hands over a NUL-terminated string from `strdup`, freed here once.
    let message = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .into_owned();
    unsafe { span_marker_free_error(error) };
    message
}

/// One linear map's prepacked int8 weights.
struct PackedLinear {
    handle: NonNull<c_void>,
}

// SAFETY: the packed parameters are immutable after packing; fbgemm's `apply_dynamic` only reads
// them (PyTorch calls it from many threads at once).
unsafe impl Send for PackedLinear {}
unsafe impl Sync for PackedLinear {}

impl Drop for PackedLinear {
    fn drop(&mut self) {
        // SAFETY: the handle came from `span_marker_int8_pack` and is dropped once.
        unsafe { span_marker_int8_free(self.handle.as_ptr()) }
    }
}

impl PackedLinear {
    fn pack(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let mut error = std::ptr::null_mut();
        let bias = bias.map_or(std::ptr::null(), |b| b.as_ptr());
        // SAFETY: both tensors outlive the call; the shim copies what it keeps.
        let handle = unsafe { span_marker_int8_pack(weight.as_ptr(), bias, &mut error) };
        let handle = NonNull::new(handle).ok_or_else(|| {
            Error::Device(format!(
                "could not quantise a linear layer to int8: {}",
                take_error(error)
            ))
        })?;
        Ok(Self { handle })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut error = std::ptr::null_mut();
        // SAFETY: the handle is alive while `self` is; the shim returns a new owned tensor.
        let out = unsafe { span_marker_int8_linear(self.handle.as_ptr(), x.as_ptr(), &mut error) };
        if out.is_null() {
            // As tch's own operations do when libtorch throws: the shapes come from the encoder
            // itself, so this is a bug, not bad input.
            panic!("int8 linear layer failed: {}", take_error(error));
        }
        // SAFETY: `out` is a fresh `at::Tensor*` owned by nobody else.
        unsafe { Tensor::from_ptr(out) }
    }
}

/// The int8 form of a set of linear maps.
pub struct Int8Linears {
    layers: Vec<PackedLinear>,
}

impl Int8Linears {
    /// Packs every `(weight, bias)` of `maps`.
    pub(crate) fn pack(maps: &[(Tensor, Option<Tensor>)]) -> Result<Self> {
        let layers = maps
            .iter()
            .map(|(w, b)| PackedLinear::pack(w, b.as_ref()))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// `x` through map `index`.
    pub(crate) fn forward(&self, index: usize, x: &Tensor) -> Tensor {
        self.layers[index].forward(x)
    }
}
