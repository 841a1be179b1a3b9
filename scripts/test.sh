#!/usr/bin/env bash
# The whole test suite (the README's test command): the Rust workspace's tests, then the Python
# package's: its wheel built with maturin (unoptimised `dev` profile, in the same target
# directory; Polars is built again there with its Python features), installed into the venv
# that scripts/setup.sh made, and its pytest suite run on the installed package.
#
# Arguments are passed to pytest (e.g. `-k polars -x`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
# The extension module links no libpython, so it has no Rust test binary: pytest tests it.
cargo test --workspace --exclude span-marker-python

python="$(./.venv-python -c 'import sys; print(sys.executable)')"
target_dir="$(cargo metadata --format-version 1 --no-deps |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
wheels="$target_dir/wheels"
rm -f "$wheels"/span_marker_rs-*.whl
"$python" -m maturin build --profile dev --manifest-path python/Cargo.toml \
  --interpreter "$python" --out "$wheels"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
  "$wheels"/span_marker_rs-*.whl
# The Rust side of the comparisons: the command line built by `cargo test` above.
# The stand-in Hub (hub-standin/) serves the Hub datasets of the dataset tests.
SPAN_MARKER_BIN="$target_dir/debug/span-marker" \
  SPAN_MARKER_HUB_STANDIN_BIN="$target_dir/debug/span-marker-hub-standin" \
  "$python" -m pytest python/tests "$@"
