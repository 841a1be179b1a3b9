// Dropout of the encoder's hidden states on the CPU, with the residual addition fused in, as one
// libtorch autograd function: `dropout(x) + residual` is one pass over `x` and `residual` forward
// and one over the gradient backward, where libtorch's ops take a mask tensor, a product and a
// sum (and draw the mask one element at a time from its Mersenne Twister).
//
// Element `i` is kept when the 16-bit lane `i % 4` of `split_mix64(seed + (i / 4) * GOLDEN_GAMMA)`
// is below `threshold` (the keep probability as a multiple of 2^-16); kept elements are scaled by
// `65536 / threshold`, so the mask's expectation is exactly 1. The mask is never stored: the
// backward pass draws it again from the seed. `src/model/dropout.rs` documents the generator.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "guard.h"

namespace {

constexpr uint64_t GOLDEN_GAMMA = 0x9E3779B97F4A7C15ull;

inline uint64_t split_mix64(uint64_t state) {
  uint64_t z = state + GOLDEN_GAMMA;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Draws (of four elements each) per parallel task at least.
constexpr int64_t GRAIN = 1 << 12;

struct Mask {
  uint64_t seed;
  uint64_t threshold;
  float scale;

  Mask(double p, int64_t seed_) : seed(static_cast<uint64_t>(seed_)) {
    threshold = static_cast<uint64_t>(std::max(1.0, std::round((1.0 - p) * 65536.0)));
    scale = static_cast<float>(65536.0 / static_cast<double>(threshold));
  }

  // Calls `f(i, factor)` for each of `numel` elements on libtorch's threads, `factor` being
  // the scale where element `i` is kept and 0 where it is dropped.
  template <typename F>
  void each(int64_t numel, F&& f) const {
    at::parallel_for(0, (numel + 3) / 4, GRAIN, [&](int64_t begin, int64_t end) {
      for (int64_t draw = begin; draw < end; ++draw) {
        const uint64_t bits = split_mix64(seed + static_cast<uint64_t>(draw) * GOLDEN_GAMMA);
        const int64_t lanes = std::min<int64_t>(4, numel - 4 * draw);
        for (int64_t lane = 0; lane < lanes; ++lane) {
          const bool keep = ((bits >> (16 * lane)) & 0xFFFF) < threshold;
          f(4 * draw + lane, keep ? scale : 0.0f);
        }
      }
    });
  }
};

// `x * mask (+ residual)` in `out`, element by element (all contiguous, of one type).
void forward_kernel(const at::Tensor& x, const at::Tensor& residual, at::Tensor& out,
                    const Mask& mask) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dropout", [&] {
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    const scalar_t* add = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.data_ptr<scalar_t>();
    mask.each(x.numel(), [&](int64_t i, float factor) {
      float value = static_cast<float>(in[i]) * factor;
      if (add != nullptr) {
        value += static_cast<float>(add[i]);
      }
      o[i] = static_cast<scalar_t>(value);
    });
  });
}

// What both autograd functions save: the mask's settings and the types to return gradients in.
void save(torch::autograd::AutogradContext* ctx, double p, int64_t seed, at::ScalarType x_kind,
          at::ScalarType residual_kind) {
  ctx->saved_data["p"] = p;
  ctx->saved_data["seed"] = seed;
  ctx->saved_data["x_kind"] = static_cast<int64_t>(x_kind);
  ctx->saved_data["residual_kind"] = static_cast<int64_t>(residual_kind);
}

// The input's gradient (masked and scaled, in the input's type) and the residual's (the
// gradient itself, in the residual's type).
std::pair<at::Tensor, at::Tensor> gradients(torch::autograd::AutogradContext* ctx,
                                            const at::Tensor& grad_in) {
  const at::Tensor grad = grad_in.contiguous();
  const Mask mask(ctx->saved_data["p"].toDouble(), ctx->saved_data["seed"].toInt());
  at::Tensor dx = at::empty_like(grad, at::MemoryFormat::Contiguous);
  forward_kernel(grad, at::Tensor(), dx, mask);
  const auto kind = [&](const char* key) {
    return static_cast<at::ScalarType>(ctx->saved_data[key].toInt());
  };
  return {dx.to(kind("x_kind")), grad.to(kind("residual_kind"))};
}

// `dropout(x)`.
struct Dropout : public torch::autograd::Function<Dropout> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                            double p, int64_t seed) {
    TORCH_CHECK(x_in.is_cpu(), "dropout: the input must be on the CPU");
    const at::Tensor x = x_in.contiguous();
    at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
    forward_kernel(x, at::Tensor(), out, Mask(p, seed));
    save(ctx, p, seed, x_in.scalar_type(), x_in.scalar_type());
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {gradients(ctx, grads[0]).first, at::Tensor(), at::Tensor()};
  }
};

// `dropout(x) + residual`, in the promoted type of the two.
struct DropoutAdd : public torch::autograd::Function<DropoutAdd> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                            const at::Tensor& residual_in, double p, int64_t seed) {
    TORCH_CHECK(x_in.is_cpu() && residual_in.is_cpu(),
                "dropout: the input and the residual must be on the CPU");
    TORCH_CHECK(residual_in.sizes() == x_in.sizes(), "dropout: the residual's shape ",
                residual_in.sizes(), " differs from the input's ", x_in.sizes());
    const auto kind = at::promote_types(x_in.scalar_type(), residual_in.scalar_type());
    const at::Tensor x = x_in.to(kind).contiguous();
    const at::Tensor residual = residual_in.to(kind).contiguous();
    at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
    forward_kernel(x, residual, out, Mask(p, seed));
    save(ctx, p, seed, x_in.scalar_type(), residual_in.scalar_type());
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto [dx, d_residual] = gradients(ctx, grads[0]);
    return {dx, d_residual, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// `dropout(x, p) + residual` (`residual` null: no addition) on the CPU, its mask a function of
// `seed` (see the top of this file), as a libtorch autograd function: gradients reach `x` (masked
// and scaled) and `residual`. The result has the promoted type of the two.
extern "C" at::Tensor* span_marker_dropout_add(const at::Tensor* x, const at::Tensor* residual,
                                               double p, int64_t seed, char** error) {
  return span_marker::guarded(error, [&] {
    return new at::Tensor(residual != nullptr ? DropoutAdd::apply(*x, *residual, p, seed)
                                              : Dropout::apply(*x, p, seed));
  });
}
