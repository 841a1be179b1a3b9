//! Makes binaries and tests find libtorch at run time without environment variables.
//!
//! `torch-sys` passes the directory it linked against as `DEP_TCH_LIBTORCH_LIB` (its
//! `links = "tch"` key). We embed it as a DT_RPATH (not RUNPATH, so a stray
//! `LD_LIBRARY_PATH` pointing at another torch cannot take over) and, when the CUDA
//! library is present, keep it linked even though no symbol of ours references it:
//! otherwise the linker drops it and CUDA never registers with libtorch.
//!
//! It also compiles `csrc/autocast.cpp`, a one-function shim for the CUDA autocast dtype.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=torch-sys did not report its libtorch directory; no rpath embedded"
        );
        return;
    };
    println!("cargo:rerun-if-changed={lib_dir}");
    // `.libtorch` is a per-checkout symlink: embed the directory it points at, shared by all clones.
    let lib_dir = std::fs::canonicalize(&lib_dir)
        .map(|p| p.display().to_string())
        .unwrap_or(lib_dir);
    println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{lib_dir}");
    if Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    compile_shim(Path::new(&lib_dir));
}

fn compile_shim(lib_dir: &Path) {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    let include = lib_dir.parent().unwrap_or(lib_dir).join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("csrc/autocast.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("span_marker_shim");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
}
