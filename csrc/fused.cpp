// Fused float32 and bfloat16 linear maps for CPU inference, which tch 0.24 does not expose: libtorch's
// oneDNN kernels (`mkldnn::_linear_pointwise`) compute `x W^T + b` with the activation or the
// residual addition applied as the product's result is written, instead of in separate passes
// over it. Inference only: these operations have no gradient.
//
// Tensors cross as tch's `at::Tensor*`; libtorch errors come back as a message (guard.h), never as
// an exception across the C boundary.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <string>

#include "guard.h"

using span_marker::guarded;

// 1 when this libtorch has its oneDNN kernels for the CPU.
extern "C" int span_marker_fused_supported() { return at::hasMKLDNN() ? 1 : 0; }

// act(`input` W^T + b) for `input` [N, in], `weight` [out, in], `bias` [out] or null, all
// float32 or all bfloat16. `activation`: 0 none, 1 GELU (erf), 2 GELU (tanh), 3 ReLU.
extern "C" at::Tensor* span_marker_fused_linear(const at::Tensor* input, const at::Tensor* weight,
                                                const at::Tensor* bias, int activation,
                                                char** error) {
  return guarded(error, [&]() -> at::Tensor* {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const std::optional<at::Tensor>&, c10::string_view,
                                           c10::List<std::optional<at::Scalar>>,
                                           std::optional<c10::string_view>)>();
    std::optional<at::Tensor> b;
    if (bias != nullptr) {
      b = *bias;
    }
    const char* attr = activation == 1 || activation == 2 ? "gelu" : activation == 3 ? "relu" : "none";
    std::optional<c10::string_view> algorithm;
    if (activation == 1) {
      algorithm = "none";
    } else if (activation == 2) {
      algorithm = "tanh";
    }
    return new at::Tensor(op.call(input->contiguous(), *weight, b, attr,
                                  c10::List<std::optional<at::Scalar>>(), algorithm));
  });
}

// `input` W^T + b + `residual` for `input` [N, in], `residual` [N, out], float32 or bfloat16.
extern "C" at::Tensor* span_marker_fused_linear_add(const at::Tensor* input,
                                                    const at::Tensor* residual,
                                                    const at::Tensor* weight,
                                                    const at::Tensor* bias, char** error) {
  return guarded(error, [&]() -> at::Tensor* {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mkldnn::_linear_pointwise", "binary")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const std::optional<at::Tensor>&, c10::string_view)>();
    std::optional<at::Tensor> b;
    if (bias != nullptr) {
      b = *bias;
    }
    return new at::Tensor(op.call(input->contiguous(), residual->contiguous(), *weight, b, "add"));
  });
}
