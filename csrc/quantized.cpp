// Dynamic int8 linear layers on the CPU (`--precision int8`), which tch 0.24 does not expose:
// weights quantised per output channel (symmetric int8) and prepacked once by libtorch's
// `quantized::linear_prepack` (fbgemm / x86 engine), activations quantised per call by
// `apply_dynamic`, as `torch.ao.quantization.quantize_dynamic` does.
//
// Tensors cross as tch's `at::Tensor*`; libtorch errors come back as a message (guard.h), never as
// an exception across the C boundary.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/cpu/Utils.h>
#include <ATen/native/quantized/PackedParams.h>

#include <algorithm>

#include "guard.h"

using Packed = c10::intrusive_ptr<LinearPackedParamsBase>;
using span_marker::guarded;

// 1 when this libtorch and CPU can run the int8 path (an fbgemm-based quantisation engine).
extern "C" int span_marker_int8_supported() {
  const auto& engines = at::globalContext().supportedQEngines();
  auto has = [&](at::QEngine e) { return std::find(engines.begin(), engines.end(), e) != engines.end(); };
  return (has(at::QEngine::FBGEMM) || has(at::QEngine::X86)) ? 1 : 0;
}

// A prepacked int8 copy of a float32 linear layer (weight [out, in], bias [out]), or null.
extern "C" void* span_marker_int8_pack(const at::Tensor* weight, const at::Tensor* bias, char** error) {
  return guarded(error, [&]() -> void* {
    at::NoGradGuard no_grad;
    auto w = weight->detach().to(at::kFloat).contiguous();
    auto scales = (w.abs().amax({1}) / 127.0).clamp_min(1e-8).to(at::kDouble);
    auto zero_points = at::zeros({w.size(0)}, at::kLong);
    auto q = at::quantize_per_channel(w, scales, zero_points, 0, at::kQInt8);
    static auto prepack = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("quantized::linear_prepack", "")
                              .typed<Packed(at::Tensor, std::optional<at::Tensor>)>();
    std::optional<at::Tensor> b;
    if (bias != nullptr) {
      b = bias->detach().to(at::kFloat).contiguous();
    }
    return new Packed(prepack.call(q, b));
  });
}

// `input` [..., in] float32 through a packed layer: [..., out] float32, or null. Activations use
// the full 8 bits where the CPU has VNNI (int32 accumulation), 7 bits elsewhere (the 16-bit
// intermediate sums of plain AVX2/AVX-512 would saturate), as PyTorch's dynamic modules do.
extern "C" at::Tensor* span_marker_int8_linear(void* packed, const at::Tensor* input, char** error) {
  return guarded(error, [&]() -> at::Tensor* {
    static const bool reduce_range = !at::cpu::is_avx512_vnni_supported();
    auto out = (*static_cast<Packed*>(packed))->apply_dynamic(input->contiguous(), reduce_range);
    return new at::Tensor(std::move(out));
  });
}

extern "C" void span_marker_int8_free(void* packed) { delete static_cast<Packed*>(packed); }
