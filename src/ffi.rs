//! The crate's one boundary to C++: every `extern "C"` declaration of the shims in `csrc/`
//! (compiled by `build.rs`), each wrapped in a safe function here. No exception crosses the
//! boundary (`csrc/guard.h`): a shim that makes a tensor or a handle returns it, or null with
//! libtorch's message, which [`tensor`] and [`Int8Linear::pack`] turn into an [`Error`]; a shim
//! that returns a status answers with a number.
//!
//! Tensors cross as tch's `at::Tensor*` (`C_tensor`); every tensor a shim returns is new and
//! owned by the caller.

use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::{Error, Result};

extern "C" {
    // guard.cpp
    fn span_marker_free_error(error: *mut c_char);

    // autocast.cpp
    fn span_marker_set_cuda_autocast_bf16(bf16: i32) -> i32;
    fn span_marker_cpu_autocast_enter() -> i32;
    fn span_marker_cpu_autocast_exit(was_enabled: i32) -> i32;
    fn span_marker_cpu_has_amx() -> i32;

    // fused.cpp
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

    // quantized.cpp
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

    // dropout.cpp
    fn span_marker_dropout_add(
        x: *const C_tensor,
        residual: *const C_tensor,
        p: f64,
        seed: i64,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;

    // optim.cpp
    fn span_marker_fused_adamw(
        param: *const C_tensor,
        grad: *const C_tensor,
        exp_avg: *const C_tensor,
        exp_avg_sq: *const C_tensor,
        step: *const C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        grad_scale: *const C_tensor,
        error: *mut *mut c_char,
    ) -> i32;

    // attention.cpp
    fn span_marker_marker_attention(
        qkv: *const C_tensor,
        num_tokens: *const C_tensor,
        start: *const C_tensor,
        pairs: *const C_tensor,
        heads: i64,
        padded_length: i64,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
    fn span_marker_marker_attention_train(
        qkv: *const C_tensor,
        num_tokens: *const C_tensor,
        start: *const C_tensor,
        pairs: *const C_tensor,
        heads: i64,
        padded_length: i64,
        p: f64,
        seed: i64,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
}

/// The error of a shim's call named `op`: libtorch's message (the shim's copy, freed here), as
/// [`Error::Torch`], which leaves out the C++ stack trace.
fn error(op: &str, message: *mut c_char) -> Error {
    let message = if message.is_null() {
        "unknown libtorch error".to_owned()
    } else {
        // SAFETY: the shim hands over a NUL-terminated string from `strdup`, freed here once.
        let text = unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        unsafe { span_marker_free_error(message) };
        text
    };
    Error::Torch(tch::TchError::Torch(format!("{op}: {message}")))
}

/// Runs a shim that returns a new tensor, or null with its error in the out-parameter.
fn tensor(op: &str, call: impl FnOnce(*mut *mut c_char) -> *mut C_tensor) -> Result<Tensor> {
    let mut message = std::ptr::null_mut();
    let out = call(&mut message);
    if out.is_null() {
        return Err(error(op, message));
    }
    // SAFETY: `out` is a fresh `at::Tensor*` owned by nobody else.
    Ok(unsafe { Tensor::from_ptr(out) })
}

fn optional(tensor: Option<&Tensor>) -> *const C_tensor {
    tensor.map_or(std::ptr::null(), Tensor::as_ptr)
}

/// The moments and hyperparameters of one [`fused_adamw`] step.
pub(crate) struct AdamWStep<'a> {
    pub exp_avg: &'a Tensor,
    pub exp_avg_sq: &'a Tensor,
    /// A float scalar tensor holding this step's number, counted from 1.
    pub step: &'a Tensor,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    /// What the gradients are divided by first (gradient clipping's inverse factor).
    pub grad_scale: Option<&'a Tensor>,
}

/// libtorch's fused AdamW step (`torch.optim.AdamW(fused=True)`) of `param` from `grad`, in
/// place on `param` and the moments.
pub(crate) fn fused_adamw(param: &Tensor, grad: &Tensor, step: &AdamWStep<'_>) -> Result<()> {
    let mut message = std::ptr::null_mut();
    // SAFETY: every tensor outlives the call; the shim writes through them in place.
    let status = unsafe {
        span_marker_fused_adamw(
            param.as_ptr(),
            grad.as_ptr(),
            step.exp_avg.as_ptr(),
            step.exp_avg_sq.as_ptr(),
            step.step.as_ptr(),
            step.lr,
            step.beta1,
            step.beta2,
            step.weight_decay,
            step.eps,
            optional(step.grad_scale),
            &mut message,
        )
    };
    match status {
        0 => Ok(()),
        _ => Err(error("fused AdamW step", message)),
    }
}

/// Picks bfloat16 (`true`) or float16 as CUDA autocast's type; `false` if libtorch refused.
pub(crate) fn set_cuda_autocast_bf16(bf16: bool) -> bool {
    // SAFETY: a plain C function without pointers.
    unsafe { span_marker_set_cuda_autocast_bf16(i32::from(bf16)) == 0 }
}

/// Enters bfloat16 CPU autocast on the calling thread: whether it was on before, or `None` if
/// libtorch refused.
pub(crate) fn cpu_autocast_enter() -> Option<bool> {
    // SAFETY: a plain C function without pointers.
    match unsafe { span_marker_cpu_autocast_enter() } {
        status if status < 0 => None,
        status => Some(status == 1),
    }
}

/// Leaves CPU autocast, restoring the state [`cpu_autocast_enter`] returned.
pub(crate) fn cpu_autocast_exit(was_enabled: bool) {
    // SAFETY: as above; the shim fails only if libtorch's own state is broken.
    unsafe { span_marker_cpu_autocast_exit(i32::from(was_enabled)) };
}

/// Whether the CPU has AMX tiles this process may use.
pub(crate) fn cpu_has_amx() -> bool {
    // SAFETY: a plain C function without pointers.
    unsafe { span_marker_cpu_has_amx() == 1 }
}

/// Whether this libtorch has the oneDNN kernels that the fused linear maps run on.
pub(crate) fn fused_supported() -> bool {
    // SAFETY: a plain C function without pointers.
    unsafe { span_marker_fused_supported() == 1 }
}

/// An activation oneDNN applies as a product's result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostOp {
    None = 0,
    Gelu = 1,
    GeluTanh = 2,
    Relu = 3,
}

/// `post(x W^T + b)` on oneDNN for `x` `[N, in]`, `weight` `[out, in]`, float32 or bfloat16
/// alike (CPU, no gradient).
pub(crate) fn fused_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    post: PostOp,
) -> Result<Tensor> {
    // SAFETY: every tensor outlives the call.
    tensor("fused linear map", |error| unsafe {
        span_marker_fused_linear(
            x.as_ptr(),
            weight.as_ptr(),
            optional(bias),
            post as i32,
            error,
        )
    })
}

/// `x W^T + b + residual` on oneDNN for `x` `[N, in]`, `weight` `[out, in]`, `residual`
/// `[N, out]`.
pub(crate) fn fused_linear_add(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    // SAFETY: every tensor outlives the call.
    tensor("fused linear map", |error| unsafe {
        span_marker_fused_linear_add(
            x.as_ptr(),
            residual.as_ptr(),
            weight.as_ptr(),
            optional(bias),
            error,
        )
    })
}

/// Whether this libtorch and CPU can run int8 linear maps (an fbgemm quantisation engine,
/// which needs AVX2).
pub(crate) fn int8_supported() -> bool {
    // SAFETY: a plain C function without pointers.
    unsafe { span_marker_int8_supported() == 1 }
}

/// One linear map's weights quantised to int8 (symmetric, one scale per output channel) and
/// prepacked by fbgemm; activations are quantised per call, as
/// `torch.ao.quantization.quantize_dynamic` does for `nn.Linear`.
pub(crate) struct Int8Linear {
    handle: NonNull<c_void>,
}

// SAFETY: the packed parameters are immutable after packing; fbgemm's `apply_dynamic` only reads
// them (PyTorch calls it from many threads at once).
unsafe impl Send for Int8Linear {}
unsafe impl Sync for Int8Linear {}

impl Drop for Int8Linear {
    fn drop(&mut self) {
        // SAFETY: the handle came from `span_marker_int8_pack` and is dropped once.
        unsafe { span_marker_int8_free(self.handle.as_ptr()) }
    }
}

impl Int8Linear {
    /// Quantises and packs `weight` `[out, in]` and `bias` `[out]` (float32; copied).
    pub(crate) fn pack(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let mut message = std::ptr::null_mut();
        // SAFETY: both tensors outlive the call; the shim copies what it keeps.
        let handle =
            unsafe { span_marker_int8_pack(weight.as_ptr(), optional(bias), &mut message) };
        NonNull::new(handle)
            .map(|handle| Self { handle })
            .ok_or_else(|| error("quantising a linear map to int8", message))
    }

    /// `x` `[..., in]` (float32) through the map.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // SAFETY: the handle is alive while `self` is; `x` outlives the call.
        tensor("int8 linear map", |error| unsafe {
            span_marker_int8_linear(self.handle.as_ptr(), x.as_ptr(), error)
        })
    }
}

/// The direct SpanMarker attention's `[R, H]` float32 context rows from `[R, 3H]` float32
/// query-key-value rows (see `csrc/attention.cpp` and
/// [`MarkerAttention`](crate::model::attention::MarkerAttention)). With `training`, the
/// training form: a libtorch autograd function whose gradient reaches `qkv`, with dropout on the
/// attention weights.
pub(crate) fn marker_attention(
    qkv: &Tensor,
    num_tokens: &Tensor,
    start: &Tensor,
    pairs: &Tensor,
    heads: i64,
    padded_length: i64,
    training: Option<AttentionDropout>,
) -> Result<Tensor> {
    // SAFETY: every tensor outlives the call.
    tensor("marker attention", |error| unsafe {
        match training {
            None => span_marker_marker_attention(
                qkv.as_ptr(),
                num_tokens.as_ptr(),
                start.as_ptr(),
                pairs.as_ptr(),
                heads,
                padded_length,
                error,
            ),
            Some(AttentionDropout { p, seed }) => span_marker_marker_attention_train(
                qkv.as_ptr(),
                num_tokens.as_ptr(),
                start.as_ptr(),
                pairs.as_ptr(),
                heads,
                padded_length,
                p,
                seed as i64,
                error,
            ),
        }
    })
}

/// `dropout(x, p) + residual` (none without `residual`) on the CPU, its mask a function of
/// `seed`, as a libtorch autograd function (`csrc/dropout.cpp`; see
/// [`dropout`](crate::model::dropout)).
pub(crate) fn dropout_add(
    x: &Tensor,
    residual: Option<&Tensor>,
    p: f64,
    seed: u64,
) -> Result<Tensor> {
    // SAFETY: both tensors outlive the call.
    tensor("dropout", |error| unsafe {
        span_marker_dropout_add(x.as_ptr(), optional(residual), p, seed as i64, error)
    })
}

/// The training form of [`marker_attention`]: dropout with probability `p` (0 for none) on
/// the attention weights, its mask a function of `seed`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionDropout {
    pub p: f64,
    pub seed: u64,
}
