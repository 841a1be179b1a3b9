// Shared by the build scripts of the workspace's crates (`include!`d): embeds the libtorch
// directory that torch-sys linked against as a DT_RPATH (unless `SPAN_MARKER_NO_RPATH` is set)
// and keeps libtorch_cuda linked.

/// Emits the link arguments and returns the (canonical) libtorch library directory.
fn embed_libtorch_rpath() -> Option<String> {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=torch-sys did not report its libtorch directory; no rpath embedded"
        );
        return None;
    };
    println!("cargo:rerun-if-changed={lib_dir}");
    // `.libtorch` is a per-checkout symlink: embed the directory it points at, shared by all clones.
    let lib_dir = std::fs::canonicalize(&lib_dir)
        .map(|p| p.display().to_string())
        .unwrap_or(lib_dir);
    // `SPAN_MARKER_NO_RPATH` (any value) leaves it out, for binaries carried to another machine
    // whose libtorch is found through `LD_LIBRARY_PATH` (`scripts/gpu/pack.sh`).
    println!("cargo:rerun-if-env-changed=SPAN_MARKER_NO_RPATH");
    if std::env::var_os("SPAN_MARKER_NO_RPATH").is_none() {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{lib_dir}");
    }
    if std::path::Path::new(&lib_dir)
        .join("libtorch_cuda.so")
        .exists()
    {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    Some(lib_dir)
}
