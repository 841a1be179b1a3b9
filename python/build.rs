//! The extension module finds the libtorch of the `torch` wheel installed beside it
//! (`site-packages/torch/lib`, relative to `site-packages/span_marker_rs/`), never the
//! directory it was built against: a wheel carries no second libtorch and no build-machine path.
//! It does not link libtorch_cuda (a CPU-only torch must load it too); `import torch`, which
//! the package does first, loads it where torch has it, and CUDA registers with libtorch then.

fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../torch/lib");
}
