// The fused AdamW step of libtorch (`at::_fused_adamw_`, what `torch.optim.AdamW(fused=True)`
// and transformers' default `adamw_torch_fused` run), which tch 0.24 does not expose: one pass
// over the weights, gradients and both moments per step, on the CPU and on CUDA.
//
// Tensors cross as tch's `at::Tensor*`; libtorch errors come back as a message (guard.h), never as
// an exception across the C boundary.
#include <ATen/ATen.h>

#include <optional>

#include "guard.h"

using span_marker::guarded_status_message;

// One AdamW step (non-amsgrad) of `param` from `grad` divided by `grad_scale` (null: 1), with
// the moments `exp_avg` and `exp_avg_sq` and `step` (a float scalar tensor holding the number of
// this step, counted from 1): 0, or 1 with libtorch's message in `*error`.
extern "C" int span_marker_fused_adamw(const at::Tensor* param, const at::Tensor* grad,
                                       const at::Tensor* exp_avg, const at::Tensor* exp_avg_sq,
                                       const at::Tensor* step, double lr, double beta1,
                                       double beta2, double weight_decay, double eps,
                                       const at::Tensor* grad_scale, char** error) {
  return guarded_status_message(error, [&] {
    std::optional<at::Tensor> scale;
    if (grad_scale != nullptr) {
      scale = *grad_scale;
    }
    at::_fused_adamw_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, {}, {*step}, lr, beta1, beta2,
                      weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false, scale,
                      /*found_inf=*/std::nullopt);
    return 0;
  });
}
