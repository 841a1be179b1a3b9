#!/usr/bin/env bash
# The Python package's Polars plugin against the Rust Polars API (docs/benchmarks.md,
# "Python package"): builds the release wheel, installs it into the venv of setup.sh and runs
# scripts/bench_python.py on the toy test split and, when CONLL2003_DIR is set, on the
# CoNLL-2003 test split, with the given model (default: the bundled MiniLM); BENCH_ARGS adds
# flags of bench_python.py (e.g. "--sentences 400 --repeats 5").
#
#   CONLL2003_DIR=/data/conll2003 bash scripts/bench_python.sh [MODEL]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

model="${1:-bundled}"
# The release build lives in the cache, as for scripts/bench.sh.
cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
bash scripts/setup.sh
python="$(./.venv-python -c 'import sys; print(sys.executable)')"
wheels="$CARGO_TARGET_DIR/wheels-release"
rm -f "$wheels"/span_marker_rs-*.whl
"$python" -m maturin build --release --manifest-path python/Cargo.toml --interpreter "$python" --out "$wheels"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheels"/span_marker_rs-*.whl

echo "== toy test split (examples/data/test.txt)"
read -r -a extra <<<"${BENCH_ARGS:-}"
"$python" scripts/bench_python.py --data examples/data/test.txt --model "$model" "${extra[@]}"
if [ -n "${CONLL2003_DIR:-}" ]; then
  echo
  echo "== CoNLL-2003 test split"
  "$python" scripts/bench_python.py --data "$CONLL2003_DIR/test.txt" --model "$model" "${extra[@]}"
fi
