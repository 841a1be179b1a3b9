#!/usr/bin/env bash
# Every benchmark of docs/benchmarks.md in one run, side by side with Python span_marker 1.8.1:
# inference (tiny and BERT-base-shaped models, with the SQL path against the direct API) and
# training (the tiny model from an untrained head with the F1 both reach, and the BERT-base
# shape). Sets up the venv, builds the release binary and makes the BERT-base-shaped model
# (once, under the cache) first. Takes about 25 minutes on 2 CPU cores.
#
# Environment:
#   BENCH_ARGS   extra `span-marker bench` flags for every run, e.g. "--threads 1"
#   BENCH_QUICK  set to 1 to run only the tiny-model benchmarks (a few minutes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
bash scripts/setup.sh
cargo build --release --bin span-marker
bin="$CARGO_TARGET_DIR/release/span-marker"
python=./.venv-python
read -r -a extra <<<"${BENCH_ARGS:-}"

run() {
  echo
  echo "== $1"
  shift
  "$bin" bench --python "$python" "$@" "${extra[@]}"
}

run "inference, tiny BERT" --sentences 2000
run "training, tiny BERT from an untrained head (F1 on the toy test split)" \
  --model tests/fixtures/span-marker/tiny-bert --data examples/data/train.txt \
  --eval-data examples/data/test.txt --train-steps 2400 --sentences 38400 --batch-size 16 \
  --learning-rate 0.005 --repeat 5
[ "${BENCH_QUICK:-0}" = 1 ] && exit 0

base="$cache_root/bench-base"
[ -f "$base/model/config.json" ] || "$python" scripts/make_bench_model.py "$base"
run "inference, BERT-base shape (random weights)" --model "$base/model" --sentences 200 --repeat 2
run "training, BERT-base shape (random weights)" --model "$base/model" --train-steps 10 \
  --sentences 400 --batch-size 8 --repeat 1
