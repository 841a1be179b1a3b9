//! The extension module finds the libtorch of the `torch` wheel installed beside it
//! (`site-packages/torch/lib`, relative to `site-packages/span_marker_rs/`), never the
//! directory it was built against: a wheel carries no second libtorch and no build-machine path.

include!("../build-support/rpath.rs");

fn main() {
    if let Some(lib_dir) = libtorch_lib_dir() {
        println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../torch/lib");
        keep_torch_cuda(&lib_dir, "rustc-link-arg-cdylib");
    }
}
