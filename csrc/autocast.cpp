// Autocast controls that tch 0.24 does not expose: the CUDA autocast dtype (tch's `autocast`
// alone means float16), and bfloat16 autocast on the CPU, as `torch.autocast("cpu")` sets it.
// libtorch errors come back as a status (guard.h), never as an exception across the C boundary.
#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>

#include "guard.h"

using span_marker::guarded_status;

extern "C" int span_marker_set_cuda_autocast_bf16(int bf16) {
  return guarded_status(1, [&] {
    at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
    return 0;
  });
}

// Enters bfloat16 CPU autocast on the calling thread: 1 or 0 for whether it was enabled before
// (to hand back to `span_marker_cpu_autocast_exit`), -1 on error.
extern "C" int span_marker_cpu_autocast_enter() {
  return guarded_status(-1, [] {
    const bool was_enabled = at::autocast::is_autocast_enabled(at::kCPU);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::increment_nesting();
    return was_enabled ? 1 : 0;
  });
}

// Leaves CPU autocast: the cast-weight cache is cleared at the outermost exit, and the enabled
// state is what `span_marker_cpu_autocast_enter` returned.
extern "C" int span_marker_cpu_autocast_exit(int was_enabled) {
  return guarded_status(1, [&] {
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(at::kCPU, was_enabled != 0);
    return 0;
  });
}

// 1 when the CPU has AMX tiles that this process may use (libtorch's oneDNN then runs bfloat16
// matrix products on them), else 0.
extern "C" int span_marker_cpu_has_amx() {
  return guarded_status(0, [] { return at::cpu::init_amx() ? 1 : 0; });
}
