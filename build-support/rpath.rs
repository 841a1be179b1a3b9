// Shared by the build scripts of the workspace's crates (`include!`d): where libtorch is found at
// run time, and keeping libtorch_cuda linked.

/// The (canonical) libtorch library directory that torch-sys linked against.
fn libtorch_lib_dir() -> Option<String> {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=torch-sys did not report its libtorch directory; no rpath embedded"
        );
        return None;
    };
    println!("cargo:rerun-if-changed={lib_dir}");
    // `.libtorch` is a per-checkout symlink: embed the directory it points at, shared by all clones.
    Some(
        std::fs::canonicalize(&lib_dir)
            .map(|p| p.display().to_string())
            .unwrap_or(lib_dir),
    )
}

/// Keeps libtorch_cuda linked when libtorch has it, even though no symbol of ours references
/// it: otherwise the linker drops it and CUDA never registers with libtorch.
fn keep_torch_cuda(lib_dir: &str, link_arg: &str) {
    if std::path::Path::new(lib_dir)
        .join("libtorch_cuda.so")
        .exists()
    {
        println!("cargo:{link_arg}=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// Embeds the libtorch directory as a DT_RPATH of the crate's binaries and tests (unless
/// `SPAN_MARKER_NO_RPATH` is set), keeps libtorch_cuda linked, and returns the directory.
#[allow(dead_code)]
fn embed_libtorch_rpath() -> Option<String> {
    let lib_dir = libtorch_lib_dir()?;
    // `SPAN_MARKER_NO_RPATH` (any value) leaves it out, for binaries carried to another machine
    // whose libtorch is found through `LD_LIBRARY_PATH` (`scripts/gpu/pack.sh`).
    println!("cargo:rerun-if-env-changed=SPAN_MARKER_NO_RPATH");
    if std::env::var_os("SPAN_MARKER_NO_RPATH").is_none() {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{lib_dir}");
    }
    keep_torch_cuda(&lib_dir, "rustc-link-arg");
    Some(lib_dir)
}
