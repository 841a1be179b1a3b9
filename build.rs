//! Makes binaries and tests find libtorch at run time without environment variables.
//!
//! `torch-sys` passes the directory it linked against as `DEP_TCH_LIBTORCH_LIB` (its
//! `links = "tch"` key). We embed it as a DT_RPATH (not RUNPATH, so a stray
//! `LD_LIBRARY_PATH` pointing at another torch cannot take over) and, when the CUDA
//! library is present, keep it linked even though no symbol of ours references it:
//! otherwise the linker drops it and CUDA never registers with libtorch.
//!
//! It also compiles the C++ shims of `csrc/` (each behind the one error guard of `guard.h`;
//! their Rust side is `src/ffi.rs`): the autocast controls (`autocast.cpp`), the
//! dynamic int8 linear layers of `--precision int8` (`quantized.cpp`), the fused float32
//! maps of CPU inference (`fused.cpp`), the SpanMarker attention of CPU inference and training
//! (`attention.cpp`, with its backward pass), the hidden states' dropout (`dropout.cpp`) and the
//! fused AdamW step (`optim.cpp`). They are
//! always optimised (a debug build's tests would otherwise crawl through the attention loops),
//! and built with OpenMP so that `at::parallel_for` runs on libtorch's threads. That needs the
//! very OpenMP runtime libtorch loads (a second one would bring a second thread team, blind to
//! `set_num_threads`): the GNU one that libtorch ships beside itself (`libgomp.so.1` in the
//! torch wheels, `libgomp-<hash>.so.1` in the libtorch archives), linked by its file name.
//! Where there is none, the shim is built without OpenMP and its kernel runs on one thread.

use std::path::Path;

include!("build-support/rpath.rs");

fn main() {
    if let Some(lib_dir) = embed_libtorch_rpath() {
        compile_shim(Path::new(&lib_dir));
    }
}

fn compile_shim(lib_dir: &Path) {
    const SOURCES: [&str; 7] = [
        "csrc/guard.cpp",
        "csrc/dropout.cpp",
        "csrc/autocast.cpp",
        "csrc/quantized.cpp",
        "csrc/fused.cpp",
        "csrc/attention.cpp",
        "csrc/optim.cpp",
    ];
    println!("cargo:rerun-if-changed=csrc/guard.h");
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    let include = lib_dir.parent().unwrap_or(lib_dir).join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let openmp = libtorch_openmp(lib_dir);
    let mut build = cc::Build::new();
    if openmp.is_some() {
        build.flag("-fopenmp");
    }
    build
        .cpp(true)
        .files(SOURCES)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-Wno-psabi")
        .opt_level(3)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("span_marker_shim");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    match openmp {
        Some(file) => println!("cargo:rustc-link-lib=dylib:+verbatim={file}"),
        None => println!(
            "cargo:warning=no GNU OpenMP runtime beside libtorch in {}: the CPU attention kernel \
             runs on one thread",
            lib_dir.display()
        ),
    }
}

/// The file name of the GNU OpenMP runtime that libtorch ships in `lib_dir`, if any.
fn libtorch_openmp(lib_dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(lib_dir)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("libgomp") && name.ends_with(".so.1"))
        .collect();
    names.sort();
    names.into_iter().next()
}
