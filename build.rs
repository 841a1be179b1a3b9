//! Makes binaries and tests find libtorch at run time without environment variables.
//!
//! `torch-sys` passes the directory it linked against as `DEP_TCH_LIBTORCH_LIB` (its
//! `links = "tch"` key). We embed it as a DT_RPATH (not RUNPATH, so a stray
//! `LD_LIBRARY_PATH` pointing at another torch cannot take over) and, when the CUDA
//! library is present, keep it linked even though no symbol of ours references it:
//! otherwise the linker drops it and CUDA never registers with libtorch.
//!
//! It also compiles the C++ shims of `csrc/`: the autocast controls (`autocast.cpp`), the
//! dynamic int8 linear layers of `--precision int8` (`quantized.cpp`), the fused float32
//! maps of CPU inference (`fused.cpp`) and its SpanMarker attention (`attention.cpp`). They are
//! always optimised (a debug build's tests would otherwise crawl through the attention loops),
//! and built with OpenMP so that `at::parallel_for` runs on libtorch's threads: the binary then
//! needs `libgomp.so.1`, which resolves to the copy libtorch ships and loads (the same soname).

use std::path::Path;

include!("build-support/rpath.rs");

fn main() {
    if let Some(lib_dir) = embed_libtorch_rpath() {
        compile_shim(Path::new(&lib_dir));
    }
}

fn compile_shim(lib_dir: &Path) {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/quantized.cpp");
    println!("cargo:rerun-if-changed=csrc/fused.cpp");
    println!("cargo:rerun-if-changed=csrc/attention.cpp");
    let include = lib_dir.parent().unwrap_or(lib_dir).join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("csrc/autocast.cpp")
        .file("csrc/quantized.cpp")
        .file("csrc/fused.cpp")
        .file("csrc/attention.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-fopenmp")
        .flag("-Wno-psabi")
        .opt_level(3)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("span_marker_shim");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=gomp");
}
