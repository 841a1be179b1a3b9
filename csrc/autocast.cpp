// The one libtorch call tch 0.24 does not expose: choosing the CUDA autocast dtype, so that
// `bf16` training can use bfloat16 autocast (tch's `autocast` alone means float16).
#include <ATen/autocast_mode.h>

extern "C" int span_marker_set_cuda_autocast_bf16(int bf16) {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
    return 0;
  } catch (...) {
    return 1;
  }
}
