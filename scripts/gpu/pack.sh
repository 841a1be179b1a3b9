#!/usr/bin/env bash
# Packs what the GPU machine needs into .gpu-bundle/ (ignored by git), small enough to travel
# with the working tree (see scripts/gpu/README.md):
#
#   CONLL2003_DIR=/data/conll2003 bash scripts/gpu/pack.sh
#
# - bin/span-marker.xz: the release CLI without the embedded model's weights (feature
#   `embedded-model` off) and without an rpath, so that LD_LIBRARY_PATH alone points it at the
#   machine's torch/lib;
# - bin/gpu-tests.xz: the test binary of tests/gpu.rs, built the same way;
# - the fixtures those read, the toy corpus, CoNLL-2003 (text, words, JSON, Parquet), and the
#   scripts run.sh calls.
#
# Then rehearse on the CPU from a plain copy: `bash .gpu-bundle/run.sh cpu`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

conll="${CONLL2003_DIR:?set CONLL2003_DIR to the directory of the CoNLL-2003 train.txt, dev.txt and test.txt}"
for split in train test; do
  [ -f "$conll/$split.txt" ] || { echo "pack.sh: $conll/$split.txt is missing" >&2; exit 1; }
done
cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
# The everyday target directory: the bundle's crates build with other features, so cargo keeps
# them apart from the everyday ones (and SPAN_MARKER_NO_RPATH reaches only them).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
bash scripts/setup.sh
python=./.venv-python

export SPAN_MARKER_NO_RPATH=1
cargo build --release -p span-marker-cli --no-default-features
tests_bin="$(cargo test --release -p span-marker --no-default-features --features hub,progress \
  --test gpu --no-run --message-format=json |
  "$python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')"

bundle=.gpu-bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/data" "$bundle/scripts/gpu" "$bundle/tests/fixtures/span-marker" \
  "$bundle/tests/fixtures/encoders" "$bundle/examples/data"
pack_binary() {
  strip -o "$bundle/bin/$2" "$1"
  xz -9 -T0 "$bundle/bin/$2"
}
pack_binary "$CARGO_TARGET_DIR/release/span-marker" span-marker
pack_binary "$tests_bin" gpu-tests

cp -r tests/fixtures/trained tests/fixtures/predictions "$bundle/tests/fixtures/"
cp -r tests/fixtures/span-marker/conll-tiny tests/fixtures/span-marker/tiny-bert "$bundle/tests/fixtures/span-marker/"
cp -r tests/fixtures/encoders/tiny-bert "$bundle/tests/fixtures/encoders/"
cp examples/data/train.txt examples/data/test.txt "$bundle/examples/data/"
cp "$conll/train.txt" "$conll/test.txt" "$bundle/data/"
"$python" scripts/gpu/data.py words "$conll/test.txt" "$bundle/data/test-words.txt"
"$python" scripts/gpu/data.py json "$conll/test.txt" "$bundle/data/test.json"
"$python" scripts/gpu/data.py parquet "$conll/test.txt" "$bundle/data/test.parquet"
cp scripts/gpu/run.sh "$bundle/"
cp scripts/gpu/random_encoder.py scripts/gpu/data.py "$bundle/scripts/gpu/"
cp scripts/bench_reference.py "$bundle/scripts/"

# What travels to the device machine: the bundle plus the working tree (tracked and untracked,
# not ignored, files), 64 MiB in all.
limit=$((64 * 1024 * 1024))
bundle_bytes=$(du -sb "$bundle" | cut -f1)
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
total=$((bundle_bytes + tree_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "bundle $(mib "$bundle_bytes") + working tree $(mib "$tree_bytes") = $(mib "$total") of $(mib "$limit")"
if [ "$total" -gt "$limit" ]; then
  big=assets/bundled-model/model.safetensors
  echo "pack.sh: too much would travel; the largest tracked file is $big ($(mib "$(stat -c %s "$big")")," >&2
  echo "which the bundle does not need: move it aside for the run (see scripts/gpu/README.md)" >&2
  exit 3
fi
