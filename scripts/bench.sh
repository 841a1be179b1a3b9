#!/usr/bin/env bash
# Every benchmark of docs/benchmarks.md, side by side with Python span_marker 1.8.1.
#
#   bash scripts/bench.sh            # everything (about an hour on 2 CPU cores)
#   bash scripts/bench.sh quick      # the tiny-model runs only (a few minutes)
#   bash scripts/bench.sh main       # inference and training, tiny and BERT-base-shaped
#   bash scripts/bench.sh scaling    # how inference time and memory grow with sentence
#                                    # length and corpus size
#   bash scripts/bench.sh conll      # real sentences: CoNLL-2003 from $CONLL2003_DIR, the
#                                    # tiny fixture, the bundled MiniLM model and a BERT-base
#                                    # shape in float32, int8 and (where the CPU has it) bf16,
#                                    # a 2 x 128 shape in float32, training pretrained
#                                    # MiniLM, and whole `span-marker train` processes of the
#                                    # three shapes with their phases (part of `all` when the
#                                    # data is there)
#
# Inference runs check that the entities equal Python's (int8 and bf16 runs count the
# sentences that agree), print the model FLOP rate against a float32 matmul peak measured in
# the same run, and
# time the SQL path against the direct API; training runs score both sides' trained models
# with one scorer and print their model FLOP rate the same way. Sets up the venv, builds the
# release binary and makes the random benchmark models (once, under the cache) first.
#
# Environment:
#   BENCH_ARGS   extra `span-marker-bench` flags for every run, e.g. "--threads 1"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

part="${1:-all}"
case "$part" in
  all | quick | main | scaling | conll) ;;
  *)
    echo "usage: bash scripts/bench.sh [all|quick|main|scaling|conll]" >&2
    exit 2
    ;;
esac

cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
bash scripts/setup.sh
cargo build --release -p span-marker-bench
bin="$CARGO_TARGET_DIR/release/span-marker-bench"
python=./.venv-python
read -r -a extra <<<"${BENCH_ARGS:-}"

# The tiny fine-tuned fixture and the toy test split: the default model and sentences.
tiny=(--model tests/fixtures/trained/tiny-bert --data examples/data/test.txt)

run() {
  echo
  echo "== $1"
  shift
  "$bin" --python "$python" "${tiny[@]}" "$@" "${extra[@]}"
}

# A random model of the given name and shape, made once under the cache.
model() {
  local dir="$cache_root/$1"
  shift
  [ -f "$dir/model/config.json" ] || "$python" scripts/make_bench_model.py "$dir" "$@" >&2
  echo "$dir/model"
}

if [ "$part" != scaling ]; then
  run "inference, tiny BERT" --sentences 2000
  # 20 seeds per side settle "at equal F1" (some seeds of both land at 0.80-0.91 on this toy
  # task); the quick run takes 5.
  seeds=20
  [ "$part" = quick ] && seeds=5
  run "training, tiny BERT from an untrained head (F1 on the toy test split)" \
    --model tests/fixtures/span-marker/tiny-bert --data examples/data/train.txt \
    --eval-data examples/data/test.txt --train-steps 2400 --sentences 38400 --batch-size 16 \
    --learning-rate 0.005 --repeat "$seeds"
fi
if [ "$part" = all ] || [ "$part" = main ]; then
  base="$(model bench-base)"
  run "inference, BERT-base shape (random weights)" --model "$base" --sentences 200 --repeat 2
  run "training, BERT-base shape (random weights)" --model "$base" --train-steps 10 \
    --sentences 400 --batch-size 8 --repeat 1
fi
if [ "$part" = all ] || [ "$part" = scaling ]; then
  # Sentence length: the same words (256 toy sentences, about 2,800 words) joined into longer
  # sentences. Up to 8 joined sentences (about 90 words) fit the encoder's 256 tokens; longer
  # ones are truncated by the reference and encoded in windows here, so only this crate's
  # figures compare from there on.
  small="$(model bench-small --hidden 256 --layers 4 --heads 4 --intermediate 1024)"
  for join in 1 2 4 8 16 32; do
    run "scaling: sentence length, $join toy sentence(s) joined" --model "$small" \
      --join "$join" --sentences $((256 / join)) --repeat 2
  done
  # Corpus size: the tiny model over more and more sentences.
  for sentences in 1000 10000 40000; do
    run "scaling: corpus size, $sentences sentences" --sentences "$sentences" --repeat 1
  done
fi
conll="${CONLL2003_DIR:-}"
if [ "$part" = conll ] && [ ! -f "$conll/train.txt" ]; then
  echo "bench.sh conll: set CONLL2003_DIR to the directory of train.txt, dev.txt and test.txt" >&2
  exit 2
fi
if { [ "$part" = all ] || [ "$part" = conll ]; } && [ -f "$conll/train.txt" ]; then
  # bf16 runs where the CPU has bfloat16 instructions (else `--precision bf16` is refused).
  precisions=(fp32 int8)
  grep -qwE 'avx512_bf16|bf16' /proc/cpuinfo 2>/dev/null && precisions+=(bf16)
  for precision in "${precisions[@]}"; do
    run "inference, tiny BERT, CoNLL-2003 test sentences, $precision" --data "$conll/test.txt" \
      --sentences 2000 --precision "$precision"
  done
  # The 2-layer, 128-wide shape with CoNLL-sized inputs (random weights).
  tiny128="$(model bench-tiny128 --hidden 128 --layers 2 --heads 2 --intermediate 512 \
    --model-max-length 128 --marker-max-length 64 --entity-max-length 6)"
  run "inference, 2 x 128 BERT shape (random weights), CoNLL-2003 test sentences" \
    --model "$tiny128" --data "$conll/test.txt" --sentences 3453
  # The same sentences through the whole `span-marker predict` process, start-up included, to
  # set against the in-process Python rate above.
  cargo build --release -p span-marker-cli
  words="$(mktemp)"
  awk 'NF == 0 { if (line != "") print line; line = ""; next }
       $1 != "-DOCSTART-" { line = line == "" ? $1 : line " " $1 }
       END { if (line != "") print line }' "$conll/test.txt" >"$words"
  start="$(date +%s.%N)"
  "$CARGO_TARGET_DIR/release/span-marker" predict --model "$tiny128" --words --file "$words" \
    --json >/dev/null
  end="$(date +%s.%N)"
  echo
  echo "== whole process, 2 x 128 BERT shape, CoNLL-2003 test sentences"
  awk -v s="$start" -v e="$end" -v n="$(wc -l <"$words")" \
    'BEGIN { printf "span-marker predict: %d sentences in %.2f s = %.1f sentences/s\n", n, e - s, n / (e - s) }'
  rm -f "$words"
  # Python span_marker reads the encoder's config and tokenizer from `encoder._name_or_path`,
  # which the bundled model gives as the Hub id `sentence-transformers/all-MiniLM-L6-v2`: both
  # sides run a copy that names the fetched encoder directory instead, so that no Hub is needed.
  bundled="$cache_root/bundled-model-local"
  rm -rf "$bundled" && cp -r assets/bundled-model "$bundled"
  "$python" - "$bundled/config.json" "$(bash scripts/fetch_encoder.sh minilm)" <<'PY'
import json, sys
path, encoder = sys.argv[1:]
with open(path) as f:
    config = json.load(f)
config["encoder"]["_name_or_path"] = encoder
with open(path, "w") as f:
    json.dump(config, f, indent=2)
PY
  for precision in "${precisions[@]}"; do
    run "inference, the bundled MiniLM model, CoNLL-2003 test sentences, $precision" \
      --model "$bundled" --data "$conll/test.txt" --sentences 500 --repeat 2 --precision "$precision"
  done
  base="$(model bench-base)"
  for precision in "${precisions[@]}"; do
    run "inference, BERT-base shape (random weights), CoNLL-2003 test sentences, $precision" \
      --model "$base" --data "$conll/test.txt" --sentences 200 --repeat 1 --precision "$precision"
  done
  # Training a pretrained encoder as a new user would: MiniLM with a head that Python made
  # (the same start for both sides), the first 2,000 training sentences, batch 16, lr 1e-4,
  # one pass over their 2,610 samples (164 steps), shuffled batches on both sides, two seeds
  # each, every trained model scored on the test split: speed at equal F1.
  init="$cache_root/minilm-init"
  if [ ! -f "$init/config.json" ]; then
    "$python" scripts/init_from_encoder.py "$(bash scripts/fetch_encoder.sh minilm)" "$init" \
      --model-max-length 128 --marker-max-length 64 --entity-max-length 6 >&2
  fi
  run "training, MiniLM, CoNLL-2003 train sentences, shuffled batches (F1 on the test split)" \
    --model "$init" --data "$conll/train.txt" --sentences 2000 --batch-size 16 \
    --learning-rate 1e-4 --train-steps 164 --repeat 2 --eval-data "$conll/test.txt"
  # Whole `span-marker train` processes against Python's trainer.train(), one epoch of the
  # first CoNLL-2003 training sentences, with where the Rust run's time went, per shape, and
  # every trained model's F1 on the first 1,000 validation sentences (three seeds a side for the
  # two smaller shapes; one for BERT-base, whose Python run alone takes minutes).
  cargo build --release -p span-marker-cli
  train_run() {
    echo
    "$python" scripts/bench_train.py --bin "$CARGO_TARGET_DIR/release/span-marker" \
      --data "$conll/train.txt" --batch-size 16 --eval "$conll/dev.txt" --eval-sentences 1000 "$@"
  }
  train_run --label "2 x 128 BERT shape (random weights)" --model "$tiny128" --sentences 4000 --seeds 3
  train_run --label "MiniLM (6 x 384)" --model "$init" --sentences 2000 --learning-rate 1e-4 --seeds 3
  train_run --label "BERT-base shape (random weights)" --model "$base" --sentences 200
fi
