//! Makes the `span-marker` binary and the tests find libtorch at run time without
//! environment variables (see the core crate's build script).

include!("../build-support/rpath.rs");

fn main() {
    embed_libtorch_rpath();
}
